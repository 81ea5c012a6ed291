"""Named measures: each reads one host's probes (or the monitoring answers) and returns Measures.

A measure raises Unknown when it cannot judge: the probe is missing, timed out, was not found,
was skipped, failed without telling anything, or printed nothing usable. rules.yml refers to these
functions by name (MEASURES) and passes its `args`; probe names are taken from `args` so a renamed
probe is a one-line change in rules.yml.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Iterable
from typing import Any

from collector import times
from collector.core import Evidence, UsageError
from collector.triage import parsers as p
from collector.triage import patterns
from collector.triage.view import MONITORING_HOST, BundleView, Measure, Unknown

MeasureFn = Callable[..., list[Measure]]
MEASURES: dict[str, MeasureFn] = {}


def measure(fn: MeasureFn) -> MeasureFn:
    """Register a measure under its function name."""
    MEASURES[fn.__name__] = fn
    return fn


# ---------------------------------------------------------------- reading the bundle


class Output:
    """One probe's output on one host, ready to quote as evidence."""

    def __init__(self, host: str, probe: str, entry: dict[str, Any], text: str) -> None:
        self.host, self.probe, self.entry, self.text = host, probe, entry, text
        self.path = str(entry.get("path") or f"hosts/{host}/{probe}.txt")
        self.status = str(entry.get("status") or "")
        self.rc = entry.get("rc")

    def evidence(self, line: int | None, excerpt: str | None = None) -> Evidence:
        """Evidence pointing at one line (its text quoted unless `excerpt` is given)."""
        if excerpt is None:
            excerpt = (
                self.line(line) if line else self.text.strip().splitlines()[0] if self.text.strip() else ""
            )
        return Evidence(self.host, self.probe, self.path, line, excerpt.strip()[:300])

    def line(self, number: int | None) -> str:
        """The text of line `number` (1-based)."""
        all_lines = self.text.splitlines()
        return all_lines[number - 1] if number and 0 < number <= len(all_lines) else ""


def _names(probe: str | Iterable[str]) -> list[str]:
    return [probe] if isinstance(probe, str) else list(probe)


def read_probe(
    bundle: BundleView,
    host: str,
    probe: str | Iterable[str],
    *,
    allow_failed: bool = False,
    allow_empty: bool = False,
) -> Output:
    """The first probe among `probe` that ran fine on `host` (else the first recorded one), or Unknown
    saying why it cannot be used: a host without PostgreSQL's log file falls back to its journal."""
    names = _names(probe)
    host_entry = (bundle.manifest.get("hosts") or {}).get(host) or {}
    status = host_entry.get("status")
    recorded = [(c, e) for c in names if (e := bundle.probe(host, c)) is not None]
    name, entry = next(
        (ce for ce in recorded if ce[1].get("status") == "ok"), recorded[0] if recorded else (names[0], None)
    )
    if entry is None:
        if status in ("unreachable", "failed"):
            raise Unknown(f"host {host} is {status}: {host_entry.get('error') or 'no probe ran'}")
        raise Unknown(f"probe {name} was not collected on {host}")
    probe_status = entry.get("status")
    if probe_status == "timeout":
        raise Unknown(f"probe {name} timed out on {host} after {entry.get('duration_s', '?')} s")
    if probe_status == "not_found":
        raise Unknown(f"probe {name}: its tool is missing on {host} ({entry.get('error') or 'not found'})")
    if probe_status == "skipped":
        raise Unknown(f"probe {name} was skipped on {host} ({entry.get('error') or 'not applicable'})")
    data = bundle.read(host, name)
    if data is None:
        raise Unknown(f"probe {name} on {host}: output file missing from the bundle")
    text = p.decode(data)
    if probe_status == "failed" and not allow_failed:
        raise Unknown(
            (
                f"probe {name} failed on {host} (rc {entry.get('rc')}): "
                f"{_first(text) or entry.get('error') or ''}"
            ).strip()
        )
    if not text.strip() and not allow_empty and probe_status != "failed":
        raise Unknown(f"probe {name} printed nothing on {host}")
    return Output(host, name, entry, text)


def read_monitoring(
    bundle: BundleView, query: str | Iterable[str], pattern: str | None = None
) -> tuple[Output, Any]:
    """A monitoring answer by name (first of `query` found, else the first name matching `pattern`)."""
    monitoring = bundle.manifest.get("monitoring") or {}
    names = [n for n in _names(query) if n in monitoring]
    if not names and pattern:
        names = [n for n in sorted(monitoring) if re.search(pattern, n, re.IGNORECASE)]
    if not names:
        raise Unknown(f"monitoring answer {_names(query)[0]} was not collected")
    name = names[0]
    entry = monitoring[name]
    status = entry.get("status")
    if status in ("timeout", "not_found", "skipped", "failed"):
        raise Unknown(f"monitoring query {name} {status}: {entry.get('error') or ''}".strip())
    raw = _read_rel(bundle, entry.get("path"))
    if raw is None:
        raise Unknown(f"monitoring answer {name}: file missing from the bundle")
    text = p.decode(raw)
    data = p.parse_json(text)
    if data is None:
        raise Unknown(f"monitoring answer {name} is not JSON: {_first(text)}")
    if isinstance(data, dict) and data.get("status") == "error":
        raise Unknown(f"monitoring query {name} returned an error: {data.get('error', '')}")
    return Output(MONITORING_HOST, name, entry, text), data


def _read_rel(bundle: BundleView, rel: Any) -> bytes | None:
    if not isinstance(rel, str):
        return None
    try:
        return bundle.read_file(rel)
    except (OSError, UsageError):  # unreadable, or a path outside the bundle
        return None


def _first(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:200]


def _find_line(text: str, needle: str) -> int | None:
    return next((ln.number for ln in p.lines(text) if needle in ln.text), None)


def window_start(bundle: BundleView, default: str = "10m") -> _dt.datetime | None:
    """Start of the collection's --since window (a duration back from the run's start, or an ISO time)."""
    started = p.parse_time(str(bundle.manifest.get("started") or ""))
    since = str(bundle.manifest.get("since") or _since_from_command(bundle) or default)
    if started is None:
        return None
    try:
        return times.window_start(since, started)
    except ValueError:
        return None


def _since_from_command(bundle: BundleView) -> str | None:
    argv = [str(a) for a in bundle.manifest.get("command_line") or []]
    for i, arg in enumerate(argv):
        if arg == "--since" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--since="):
            return arg.split("=", 1)[1]
    return None


def _collected_at(bundle: BundleView) -> _dt.datetime | None:
    return p.parse_time(str(bundle.manifest.get("started") or ""))


# ---------------------------------------------------------------- availability


_CONNECT_ERROR = re.compile(
    r"could not connect|connection refused|failed to connect|couldn't connect|no such file or directory|"
    r"could not resolve|timed out|timeout was reached|empty reply|recv failure|connection reset|"
    r"the database system is (starting up|shutting down|in recovery mode)|server closed the connection",
    re.IGNORECASE,
)


@measure
def health_failing(bundle: BundleView, host: str, probe: Any = "app_health") -> list[Measure]:
    """True when /health is not healthy: unreachable, an error answer, or status != healthy."""
    out = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
    http = re.search(r"^HTTP (\d{3})", out.text, re.MULTILINE)
    code = http.group(1) if http else "?"
    health = p.parse_health(out.text)
    if health is not None:
        failing = ", ".join(health.failing) or "none"
        return [
            Measure(
                host,
                not health.healthy,
                [out.evidence(health.line)],
                {"status": health.status, "failing": failing, "http": code},
            )
        ]
    if out.status == "failed" or code in ("000",) or _CONNECT_ERROR.search(out.text):
        line = next((ln.number for ln in p.lines(out.text) if ln.text.strip()), None)
        excerpt = out.line(line) if line else f"{out.probe} failed with rc {out.rc} and no output"
        return [
            Measure(
                host,
                True,
                [out.evidence(line, excerpt)],
                {"status": f"no answer (rc {out.rc})", "failing": "the app itself", "http": code},
            )
        ]
    if http and code.startswith(("5", "4")):
        return [
            Measure(
                host,
                True,
                [out.evidence(_find_line(out.text, "HTTP "))],
                {"status": f"HTTP {code}", "failing": "?", "http": code},
            )
        ]
    raise Unknown(f"probe {out.probe} on {host}: no /health JSON in the output ({_first(out.text)})")


@measure
def service_inactive(bundle: BundleView, host: str, probe: Any = "service_status") -> list[Measure]:
    """True when the role's systemd unit is not active (inactive, failed, activating...)."""
    out = read_probe(bundle, host, probe, allow_failed=True)
    unit = p.parse_systemctl_status(out.text)
    if unit is None:
        if re.search(r"could not be found|not-found|no such unit", out.text, re.IGNORECASE):
            return [Measure(host, True, [out.evidence(1)], {"state": "not found"})]
        raise Unknown(f"probe {out.probe} on {host}: no 'Active:' line in the output")
    state = f"{unit.active} ({unit.sub})" if unit.sub else unit.active
    return [Measure(host, unit.active != "active", [out.evidence(unit.line)], {"state": state})]


@measure
def probe_cannot_connect(bundle: BundleView, host: str, probe: Any = "pg_connections") -> list[Measure]:
    """True when a client probe (psql, redis-cli) failed because the server did not answer."""
    out = read_probe(bundle, host, probe, allow_failed=True)
    if out.status != "failed":
        return [Measure(host, False)]
    hit = next((ln for ln in p.lines(out.text) if _CONNECT_ERROR.search(ln.text)), None)
    if hit is None:
        raise Unknown(
            f"probe {out.probe} failed on {host} (rc {out.rc}) for another reason: {_first(out.text)}"
        )
    return [Measure(host, True, [out.evidence(hit.number)], {"error": hit.text.strip()[:200]})]


@measure
def redis_not_pong(bundle: BundleView, host: str, probe: Any = "redis_ping") -> list[Measure]:
    """True when Redis does not answer PING with PONG."""
    out = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
    if re.search(r"^\s*PONG\s*$", out.text, re.MULTILINE):
        return [Measure(host, False)]
    line = next((ln.number for ln in p.lines(out.text) if ln.text.strip()), None)
    excerpt = out.line(line) if line else f"no answer (rc {out.rc})"
    return [Measure(host, True, [out.evidence(line, excerpt)], {"answer": excerpt.strip()[:200]})]


@measure
def host_unreachable(bundle: BundleView, host: str) -> list[Measure]:
    """True when collection could not reach the host at all."""
    entry = (bundle.manifest.get("hosts") or {}).get(host) or {}
    if (
        entry.get("status") != "unreachable"
    ):  # "failed" is our collection failing, not the host: rules go unknown
        return [Measure(host, False)]
    error = str(entry.get("error") or entry.get("status"))
    return [
        Measure(
            host,
            True,
            [Evidence(host, "-", "manifest.json", None, f"{host}: {entry.get('status')}: {error}"[:300])],
            {"error": error[:200], "status": entry.get("status")},
        )
    ]


# ---------------------------------------------------------------- monitoring


@measure
def prometheus_value(
    bundle: BundleView, host: str, query: Any = "error_ratio", pattern: str | None = None, scale: float = 1.0
) -> list[Measure]:
    """A Prometheus instant query's single value times `scale` (e.g. 100 for a percentage)."""
    out, data = read_monitoring(bundle, query, pattern)
    value = p.prom_scalar(data)
    if value is None:
        raise Unknown(f"Prometheus query {out.probe} has no value (no traffic in the window, or no series)")
    line = (
        next((ln.number for ln in p.lines(out.text) if ln.text.startswith('  "value"')), None)
        or _find_line(out.text, '"value"')
        or 1
    )  # the shaped answer's top-level "value", else the raw API's
    excerpt = f"{out.probe} = {value:.6g}"
    return [Measure(MONITORING_HOST, value * scale, [out.evidence(line, excerpt)], {"raw": round(value, 6)})]


@measure
def firing_alerts(
    bundle: BundleView,
    host: str,
    query: Any = "alerts",
    pattern: str | None = None,
    severity_map: dict[str, str] | None = None,
) -> list[Measure]:
    """One measure per active Alertmanager alert; its severity label maps to P0–P3."""
    out, data = read_monitoring(bundle, query, pattern)
    mapping = {str(k).lower(): str(v) for k, v in (severity_map or {}).items()}
    measures = []
    for alert in p.parse_alerts(data):
        line = _find_line(out.text, f'"{alert.name}"') or 1
        severity = mapping.get(alert.severity.lower(), mapping.get("*"))
        target = alert.labels.get("instance", "") or alert.labels.get("job", "")
        excerpt = f"{alert.name} ({alert.severity or 'no severity'}) since {alert.starts_at}: {alert.summary}"
        measures.append(
            Measure(
                MONITORING_HOST,
                True,
                [out.evidence(line, excerpt)],
                {
                    "alertname": alert.name,
                    "alert_severity": alert.severity or "none",
                    "summary": alert.summary or "no summary",
                    "target": target,
                },
                key=alert.name,
                severity=severity,
            )
        )
    return measures


# ---------------------------------------------------------------- resources


@measure
def disk_used_pct(bundle: BundleView, host: str, probe: Any = "df", inodes: bool = False) -> list[Measure]:
    """Use % of each filesystem (or of its inodes); one measure per filesystem."""
    out = read_probe(bundle, host, probe, allow_failed=True)
    rows = [r for r in p.parse_df(out.text) if r.inodes == inodes]
    if not rows:
        raise Unknown(f"probe {out.probe} on {host}: no filesystem lines")
    return [
        Measure(host, r.used_pct, [out.evidence(r.line)], {"mount": r.mount, "filesystem": r.filesystem})
        for r in rows
    ]


@measure
def memory_used_pct(bundle: BundleView, host: str, probe: Any = "free", swap: bool = False) -> list[Measure]:
    """Memory used % (total - available), or swap used % with swap=true."""
    out = read_probe(bundle, host, probe)
    mem = p.parse_free(out.text)
    if mem is None:
        raise Unknown(f"probe {out.probe} on {host}: no 'Mem:' line")
    if swap:
        if not mem.swap_total:
            return [Measure(host, 0.0)]
        return [Measure(host, mem.swap_used_pct, [out.evidence(mem.swap_line)], {})]
    return [Measure(host, mem.mem_used_pct, [out.evidence(mem.mem_line)], {})]


@measure
def oom_kills(bundle: BundleView, host: str, probe: Any = "oom_events") -> list[Measure]:
    """Kernel OOM kills on this host inside the collection window.

    dmesg in a container shows the whole machine's kernel log, so lines naming another host's
    memory cgroup are left out, and (when the line has a time) so are kills before the window.
    """
    out = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
    start = window_start(bundle)
    year = (_collected_at(bundle) or _dt.datetime.now(_dt.UTC)).year
    hits: list[p.Line] = []
    seen: set[str] = set()
    foreign: set[str] = set()  # pids the kernel killed in another host's (or the machine's) cgroup
    for ln in p.grep(out.text, patterns.OOM.regex.pattern):
        memcg = re.search(r"task_memcg=([^,\s]+)", ln.text)
        pid = re.search(r"\bpid=(\d+)", ln.text)
        if memcg and not _names_host(memcg.group(1), host):
            if pid:
                foreign.add(pid.group(1))
            continue
        killed = re.search(r"Killed process (\d+)", ln.text)
        if killed and killed.group(1) in foreign:
            continue
        when = p.parse_time(ln.text, year)
        if when is not None and start is not None and when < start:
            continue
        if not killed:
            # "invoked oom-killer" and the cgroup line describe the kill; "Killed process" is the kill
            continue
        key = ln.text[killed.start() :]  # dmesg and the kernel journal repeat the same kill
        if key in seen:
            continue
        seen.add(key)
        hits.append(ln)
    kills = hits
    victim = ""
    if kills:
        found = re.search(r"Killed process \d+ \(([^)]+)\)", kills[-1].text)
        victim = found.group(1) if found else ""
    return [
        Measure(
            host,
            len(kills),
            [out.evidence(ln.number) for ln in kills[-3:]],
            {"count": len(kills), "victim": victim or "?"},
        )
    ]


def _names_host(cgroup: str, host: str) -> bool:
    parts = [seg for seg in cgroup.split("/") if seg]
    return host in parts or any(seg.startswith(f"{host}.") or seg.endswith(f"-{host}") for seg in parts)


# ---------------------------------------------------------------- logs


def rule_regex(pattern: str) -> str:
    """A rule's pattern: a regular expression, or `@name` for triage.patterns' one definition of that line."""
    if not pattern.startswith("@"):
        return pattern
    named = patterns.BY_NAME.get(pattern[1:])
    if named is None:
        raise UsageError(
            f"pattern {pattern!r}: no such evidence pattern (known: {', '.join(patterns.BY_NAME)})"
        )
    return named.regex.pattern


def _journal_hits(out: p.Line | Any, pattern: str, exclude: str | None = None) -> list[p.Line]:
    hits = [ln for ln in p.grep(out.text, rule_regex(pattern)) if not p.is_journal_noise(ln.text)]
    if exclude:
        hits = [ln for ln in hits if not re.search(exclude, ln.text, re.IGNORECASE)]
    return hits


@measure
def log_lines(
    bundle: BundleView,
    host: str,
    probe: Any = "journal_errors",
    pattern: str = ".",
    exclude: str | None = None,
    show: int = 3,
) -> list[Measure]:
    """How many lines of a log probe match `pattern` (the runbook's greps); evidence: the last few."""
    out = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
    hits = _journal_hits(out, pattern, exclude)
    return [
        Measure(
            host,
            len(hits),
            [out.evidence(ln.number) for ln in hits[:1] + hits[1:][-(show - 1) :]] if hits else [],
            {"count": len(hits), "first": hits[0].text.strip()[:160] if hits else ""},
        )
    ]


@measure
def log_numbers(
    bundle: BundleView,
    host: str,
    probe: Any = "service_journal",
    pattern: str = r"duration: ([0-9.]+) ms",
    min_value: float = 0.0,
    show: int = 3,
) -> list[Measure]:
    """How many log lines carry a number (the pattern's first group) of at least min_value; the largest
    one."""
    out = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
    regex = re.compile(pattern, re.IGNORECASE)
    hits: list[tuple[float, p.Line]] = []
    for ln in p.lines(out.text):
        match = regex.search(ln.text)
        number = p.to_number(match.group(1)) if match and match.groups() else None
        if number is not None and number >= min_value:
            hits.append((number, ln))
    top = sorted(hits, key=lambda h: -h[0])[:show]
    return [
        Measure(
            host,
            len(hits),
            [out.evidence(ln.number) for _, ln in top],
            {"count": len(hits), "max": round(top[0][0], 1) if top else 0},
        )
    ]


@measure
def log_percentile(
    bundle: BundleView,
    host: str,
    probe: Any = "service_journal",
    pattern: str = r"path=/api/\S* status=\d+ .*duration_ms=([0-9.]+)",
    quantile: float = 0.95,
    min_count: int = 20,
) -> list[Measure]:
    """The quantile of a number logged per line (the app's request durations); None below min_count lines."""
    out = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
    regex = re.compile(pattern)
    values: list[tuple[float, p.Line]] = []
    for ln in p.lines(out.text):
        match = regex.search(ln.text)
        number = p.to_number(match.group(1)) if match and match.groups() else None
        if number is not None:
            values.append((number, ln))
    if len(values) < min_count:
        return [Measure(host, None, [], {"count": len(values)})]
    ranked = sorted(values, key=lambda v: v[0])
    at = ranked[min(len(ranked) - 1, int(quantile * len(ranked)))]
    return [
        Measure(
            host,
            at[0],
            [out.evidence(at[1].number), out.evidence(ranked[-1][1].number)],
            {"count": len(values), "max": round(ranked[-1][0], 1)},
        )
    ]


@measure
def counted_lines(
    bundle: BundleView, host: str, probe: Any = "error_summary", pattern: str = "."
) -> list[Measure]:
    """Sum of the counts of `uniq -c` summary lines matching `pattern` (top errors, 5xx by path)."""
    out = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
    total, hits = 0, []
    for ln in p.lines(out.text):
        match = re.match(r"\s*(\d+)\s+(.*)", ln.text)
        if match and re.search(pattern, match.group(2), re.IGNORECASE):
            total += int(match.group(1))
            hits.append(ln)
    return [Measure(host, total, [out.evidence(ln.number) for ln in hits[:3]], {"count": total})]


@measure
def log_ratio(
    bundle: BundleView,
    host: str,
    probe: Any = "service_journal",
    pattern: str = r"status=5\d\d",
    of: str = r"status=\d{3}",
    min_total: int = 20,
) -> list[Measure]:
    """% of lines matching `of` that also match `pattern` (5xx among access lines); None below min_total."""
    out = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
    total = _journal_hits(out, of)
    bad = [ln for ln in total if re.search(pattern, ln.text, re.IGNORECASE)]
    fields = {"bad": len(bad), "total": len(total)}
    if len(total) < min_total:
        return [Measure(host, None, [], fields)]  # too little traffic to call a ratio
    return [Measure(host, 100.0 * len(bad) / len(total), [out.evidence(ln.number) for ln in bad[:3]], fields)]


@measure
def log_top_group(
    bundle: BundleView,
    host: str,
    probe: Any = "service_journal",
    pattern: str = r"status=5\d\d",
    group: str = r"client=(\S+)",
    min_share: float = 80.0,
) -> list[Measure]:
    """Lines matching `pattern` from the most frequent `group` value (one client behind most 5xx); 0 below
    min_share."""
    out = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
    regex = re.compile(group)
    counts: dict[str, int] = {}
    first: dict[str, p.Line] = {}
    hits = _journal_hits(out, pattern)
    for ln in hits:
        match = regex.search(ln.text)
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
            first.setdefault(match.group(1), ln)
    if not counts:
        return [Measure(host, 0, [], {"client": "", "count": 0, "total": len(hits), "share": 0.0})]
    top = max(counts, key=lambda k: counts[k])
    share = round(100.0 * counts[top] / len(hits), 1)
    fields = {"client": top, "count": counts[top], "total": len(hits), "share": share}
    return [
        Measure(host, counts[top] if share >= min_share else 0, [out.evidence(first[top].number)], fields)
    ]


# ---------------------------------------------------------------- nginx


def _nginx_output(bundle: BundleView, host: str, probe: str) -> Output | None:
    """An nginx probe's output, or None on a host that runs no nginx: the probe was skipped (the inventory
    names no nginx there) or not found (nginx is not installed). Anything else reads as read_probe does."""
    entry = bundle.probe(host, probe)
    if entry is not None and entry.get("status") in ("skipped", "not_found"):
        return None
    return read_probe(bundle, host, probe, allow_empty=True)


def _shown(out: Output) -> list[p.Line]:
    """The log lines of an nginx log probe (its `# ...` count line left out)."""
    return [ln for ln in p.lines(out.text) if ln.text.strip() and not ln.text.startswith("# nginx ")]


_NGINX_COUNTS = re.compile(
    r"^# nginx access log since .*?: (?P<total>\d+) requests, \d+ with .*?\((?P<by>[^)]*)\)"
)
# The number after the quoted request line: the status nginx answered with (combined format and ours).
_NGINX_STATUS = re.compile(r'"[A-Z]+ (?P<path>[^ "?]*)[^"]*" (?P<status>[1-5]\d\d) ')


@measure
def nginx_inactive(bundle: BundleView, host: str, probe: Any = "nginx_status") -> list[Measure]:
    """True when the host's nginx unit is not active (users reach nothing); with what nginx -t says."""
    out = _nginx_output(bundle, host, probe)
    if out is None:
        return []
    unit = p.parse_systemctl_status(out.text)
    if unit is None:
        raise Unknown(f"probe {out.probe} on {host}: no 'Active:' line in the output")
    test = re.search(r"configuration file \S+ test (is successful|failed)", out.text)
    config = "?"
    if test:
        config = "configuration ok" if test.group(1) == "is successful" else "configuration test FAILED"
    state = f"{unit.active} ({unit.sub})" if unit.sub else unit.active
    fields = {"state": state, "config": config}
    return [Measure(host, unit.active != "active", [out.evidence(unit.line)], fields)]


@measure
def nginx_upstream_errors(
    bundle: BundleView, host: str, probe: Any = "nginx_access_errors", status: str = r"50[234]", show: int = 3
) -> list[Measure]:
    """Requests nginx answered with an upstream error (502 bad gateway, 503, 504 gateway timeout) in the
    window: counted from the probe's count line (every line in the window, not only those shown)."""
    out = _nginx_output(bundle, host, probe)
    if out is None:
        return []
    wanted = re.compile(status)
    hits: list[tuple[str, str, p.Line]] = []
    for ln in _shown(out):
        match = _NGINX_STATUS.search(ln.text)
        if match and wanted.fullmatch(match["status"]):
            hits.append((match["status"], match["path"], ln))
    by_status: dict[str, int] = {}
    counts = next((m for ln in p.lines(out.text) if (m := _NGINX_COUNTS.match(ln.text))), None)
    if counts:
        for key, number in re.findall(r"(\w+)=(\d+)", counts["by"]):
            if wanted.fullmatch(key):
                by_status[key] = int(number)
    else:  # an output without the count line (an older catalogue): the lines shown are all there is
        for code, _, _ in hits:
            by_status[code] = by_status.get(code, 0) + 1
    count = sum(by_status.values())
    paths: dict[str, int] = {}
    for _, path, _ in hits:
        paths[path] = paths.get(path, 0) + 1
    top = max(paths, key=lambda k: paths[k]) if paths else ""
    lines_ = [ln for _, _, ln in hits]
    return [
        Measure(
            host,
            count,
            [out.evidence(ln.number) for ln in lines_[:1] + lines_[1:][-(show - 1) :]] if lines_ else [],
            {
                "count": count,
                "total": int(counts["total"]) if counts else "?",
                "by_status": ", ".join(f"{n} × {code}" for code, n in sorted(by_status.items())) or "none",
                "top_path": top or "?",
                "first": lines_[0].text.strip()[:160] if lines_ else "",
            },
        )
    ]


@measure
def nginx_upstream_failures(
    bundle: BundleView, host: str, probe: Any = "nginx_error_log", show: int = 3
) -> list[Measure]:
    """Error-log lines of nginx failing to reach its upstream (triage.patterns.NGINX_UPSTREAM), by kind."""
    out = _nginx_output(bundle, host, probe)
    if out is None:
        return []
    hits = [ln for ln in _shown(out) if patterns.NGINX_UPSTREAM.search(ln.text)]
    kinds: dict[str, int] = {}
    for ln in hits:
        kind = next(
            (k for k, regex in patterns.NGINX_UPSTREAM_KINDS if re.search(regex, ln.text, re.IGNORECASE)), "?"
        )
        kinds[kind] = kinds.get(kind, 0) + 1
    return [
        Measure(
            host,
            len(hits),
            [out.evidence(ln.number) for ln in hits[:1] + hits[1:][-(show - 1) :]] if hits else [],
            {
                "count": len(hits),
                "kinds": ", ".join(f"{k} × {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])),
                "first": hits[0].text.strip()[:200] if hits else "",
            },
        )
    ]


# ---------------------------------------------------------------- PostgreSQL


def _rows(out: Output) -> list[p.Row]:
    return p.parse_psql(out.text)


@measure
def pg_connections_pct(bundle: BundleView, host: str, probe: Any = "pg_connections") -> list[Measure]:
    """Client connections in use (background workers left out) as % of max_connections."""
    out = read_probe(bundle, host, probe)
    total = max_conn = None
    line = None
    # Client sessions by state: background workers (state NULL, shown '<none>') do not take a slot.
    by_state = [r for r in _rows(out) if r.get("connections") is not None and r.get("max_connections")]
    clients = [r for r in by_state if (r.get("state") or "") not in ("", "<none>")]
    if clients:
        total = sum(p.to_number(r.get("connections")) or 0 for r in clients)
        max_conn, line = p.to_number(clients[0].get("max_connections")), clients[0].line
    else:
        for row in _rows(out):
            if row.get("total") is not None and row.get("max_connections") is not None:
                total, max_conn, line = (
                    p.to_number(row.get("total")),
                    p.to_number(row.get("max_connections")),
                    row.line,
                )
    if total is None or not max_conn:
        raise Unknown(f"probe {out.probe} on {host}: no total/max_connections in the output")
    states = {r.get("state"): r.get("connections") for r in clients}
    summary = ", ".join(f"{k}={v}" for k, v in states.items())
    evidence = [out.evidence(r.line) for r in clients[:3]] or [out.evidence(line)]
    return [
        Measure(
            host,
            100.0 * total / max_conn,
            evidence,
            {"connections": int(total), "max_connections": int(max_conn), "by_state": summary or "?"},
        )
    ]


@measure
def pg_row_count(
    bundle: BundleView,
    host: str,
    probe: Any = "pg_long_queries",
    age_column: str | None = None,
    min_age_s: float = 0.0,
    where_not: dict[str, Any] | None = None,
) -> list[Measure]:
    """Rows a psql probe returned: only those whose `age_column` ≥ min_age_s, none whose column equals
    `where_not`."""
    out = read_probe(bundle, host, probe)
    tables = p.parse_psql_tables(out.text)
    if not tables and "(0 rows)" not in out.text:
        raise Unknown(f"probe {out.probe} on {host}: no result table in the output")
    rows = [r for t in tables for r in t]
    if age_column:
        rows = [r for r in rows if (p.to_number(r.get(age_column)) or 0.0) >= min_age_s]
    for column, value in (where_not or {}).items():
        excluded = {str(v) for v in value} if isinstance(value, (list, tuple)) else {str(value)}
        rows = [r for r in rows if r.get(column) not in excluded]
    oldest = max((p.to_number(r.get(age_column)) or 0.0 for r in rows), default=0.0) if age_column else 0.0
    return [
        Measure(
            host,
            len(rows),
            [out.evidence(r.line) for r in rows[:3]],
            {"count": len(rows), "oldest_s": round(oldest, 1)},
        )
    ]


# ---------------------------------------------------------------- Redis


@measure
def redis_memory_pct(
    bundle: BundleView, host: str, probe: Any = "redis_info_memory", config_probe: Any = "redis_maxmemory"
) -> list[Measure]:
    """used_memory as % of maxmemory (0 when maxmemory is unlimited)."""
    out = read_probe(bundle, host, probe)
    info = p.parse_redis_info(out.text)
    if "used_memory" not in info:
        raise Unknown(f"probe {out.probe} on {host}: no used_memory in the output")
    used = p.to_number(info["used_memory"][0]) or 0.0
    limit_text = info.get("maxmemory")
    if limit_text is None:
        try:
            cfg = read_probe(bundle, host, config_probe)
            limit_text = p.parse_redis_info(cfg.text).get("maxmemory")
        except Unknown:
            limit_text = None
    if limit_text is None:
        raise Unknown(f"probe {out.probe} on {host}: maxmemory unknown")
    limit = p.to_number(limit_text[0]) or 0.0
    evidence = [out.evidence(info["used_memory"][1])]
    if info.get("maxmemory") and info["maxmemory"][1] != info["used_memory"][1]:
        evidence.append(out.evidence(info["maxmemory"][1]))
    pct = 100.0 * used / limit if limit else 0.0
    return [
        Measure(
            host,
            pct,
            evidence,
            {
                "used_memory": int(used),
                "maxmemory": int(limit),
                "policy": (info.get("maxmemory_policy") or ("?", 0))[0],
            },
        )
    ]


# ---------------------------------------------------------------- the app


@measure
def circuit_open(
    bundle: BundleView, host: str, probe: Any = "circuit_breaker", metrics_probe: Any = "app_metrics"
) -> list[Measure]:
    """True when a circuit breaker is open (admin status JSON, else the app's metric == 1)."""
    try:
        out = read_probe(bundle, host, probe)
        data = p.parse_json(out.text)
        if data is not None:
            opened = _open_breakers(data)
            line = _find_line(out.text, "open") if opened else None
            return [
                Measure(
                    host, bool(opened), [out.evidence(line or 1)], {"breakers": ", ".join(opened) or "none"}
                )
            ]
    except Unknown:
        pass
    metrics = read_probe(bundle, host, metrics_probe)
    samples = [s for s in p.parse_metrics(metrics.text) if s.name.endswith("circuit_breaker_state")]
    if not samples:
        raise Unknown(
            f"no circuit-breaker state on {host} (no JSON status, no *_circuit_breaker_state metric)"
        )
    open_samples = [s for s in samples if s.value >= 1]  # 1 open, 2 half-open
    names = ", ".join(s.labels.get("name", s.labels.get("upstream", s.name)) for s in open_samples)
    return [
        Measure(
            host,
            bool(open_samples),
            [metrics.evidence(s.line) for s in (open_samples or samples)[:2]],
            {"breakers": names or "none"},
        )
    ]


def _open_breakers(data: Any, path: str = "") -> list[str]:
    """Names of breakers whose state says open, anywhere in the status JSON."""
    found: list[str] = []
    if isinstance(data, dict):
        state = data.get("state")
        if isinstance(state, str) and state.lower() in ("open", "half-open", "half_open"):
            found.append(str(data.get("name") or path or "breaker"))
        for key, value in data.items():
            if key == "state":
                continue
            if isinstance(value, str) and value.lower() == "open":
                found.append(key if not path else f"{path}.{key}")
            elif isinstance(value, (dict, list)):
                found += _open_breakers(value, key)
    elif isinstance(data, list):
        for item in data:
            found += _open_breakers(item, path)
    return found


@measure
def deploy_before_errors(
    bundle: BundleView,
    host: str,
    probe: Any = "deploy_log",
    errors_probe: Any = "service_journal",
    error_pattern: str = r"ERROR|status=5\d\d",
    service_probe: Any = "service_status",
    min_errors: int = 5,
    version_probe: Any = "app_health",
    metrics_probe: Any = "app_metrics",
    containers_probe: Any = None,
) -> list[Measure]:
    """Minutes from the latest deploy to the first error after it, when a previous tag exists to go back to.

    The deploy moment is the later of HEAD's commit time and the service's last start (a deploy
    checks out and restarts): a release committed long ago but started just now is a fresh deploy.
    On a Compose host (`containers_probe`) it is the creation of the newest service container instead
    (`up -d --build` makes new containers from the new image; a crash-looping one keeps its creation time).
    The value is None (never fires) without a previous tag or with fewer than `min_errors` errors after it.
    """
    log = read_probe(bundle, host, probe)
    entries = [e for e in p.parse_git_log(log.text) if e.when is not None]
    if not entries:
        raise Unknown(f"probe {log.probe} on {host}: no dated commits in the deploy log")
    head = entries[0]
    current = head.tags[0] if head.tags else _describe(log.text) or head.ref
    previous = next((t for e in entries[1:] for t in e.tags if t != current), None)
    deployed = head.when
    evidence = [log.evidence(head.line)]
    try:
        svc = read_probe(bundle, host, service_probe, allow_failed=True)
        unit = p.parse_systemctl_status(svc.text)
        if unit and unit.since and deployed and unit.since > deployed:
            deployed = unit.since
            evidence.append(svc.evidence(unit.line))
    except Unknown:
        pass
    if containers_probe:
        created = _newest_container(bundle, host, containers_probe)
        if created is not None and deployed and created[0] > deployed:
            deployed = created[0]
            evidence.append(created[1])
    errors = read_probe(bundle, host, errors_probe, allow_failed=True, allow_empty=True)
    year = (_collected_at(bundle) or _dt.datetime.now(_dt.UTC)).year
    after = []
    for ln in _journal_hits(errors, error_pattern):
        when = p.parse_time(ln.text, year)
        if when is not None and deployed is not None and when >= deployed:
            after.append((when, ln))
    running, running_evidence = _running_version(bundle, host, version_probe, metrics_probe)
    if running_evidence is not None:
        evidence.append(running_evidence)
    fields = {
        "current": current,
        "previous_tag": previous or "",
        "deployed": deployed.isoformat() if deployed else "?",
        "deployed_at": deployed.strftime("%H:%M UTC") if deployed else "?",
        "errors": len(after),
        "running": _running_note(current, running),
    }
    if previous is None or len(after) < min_errors or deployed is None:
        return [Measure(host, None, evidence, fields)]  # None never fires: no rollback target or no errors
    first_at, first_line = after[0]
    minutes = (first_at - deployed).total_seconds() / 60.0
    evidence.append(errors.evidence(first_line.number))
    return [Measure(host, round(minutes, 1), evidence, fields | {"minutes": round(minutes, 1)})]


def _running_version(
    bundle: BundleView, host: str, version_probe: Any, metrics_probe: Any
) -> tuple[str | None, Evidence | None]:
    """The release the app says it runs: /health's `version`, else a *_build_info{version=...} metric."""
    try:
        out = read_probe(bundle, host, version_probe, allow_failed=True)
        data = p.parse_json(out.text)
        if isinstance(data, dict) and data.get("version"):
            return str(data["version"]), out.evidence(
                _find_line(out.text, '"version"') or 1, f"/health reports version {data['version']}"
            )
    except Unknown:
        pass
    try:
        out = read_probe(bundle, host, metrics_probe)
    except Unknown:
        return None, None
    info = next(
        (s for s in p.parse_metrics(out.text) if s.name.endswith("build_info") and "version" in s.labels),
        None,
    )
    if info is None:
        return None, None
    return info.labels["version"], out.evidence(info.line)


def _running_note(tag: str, running: str | None) -> str:
    """How the app's own version squares with the checked-out release."""
    if running is None:
        return "the app does not report its version"
    if running.lstrip("vV") == tag.lstrip("vV"):
        return f"the app reports {running}"
    return f"the app reports {running}, not {tag}: restarted onto another release, or not restarted yet"


def _describe(text: str) -> str | None:
    """The `git describe --tags` line that follows the log (after a blank line)."""
    tail = text.strip().split("\n\n")
    if len(tail) > 1:
        last = tail[-1].strip().splitlines()
        if len(last) == 1 and re.fullmatch(r"[\w.+-]+", last[0]):
            return last[0]
    return None


# ------------------------------------------------------------ CPU, I/O, load, database size, 5xx by endpoint


@measure
def cpu_busy_pct(bundle: BundleView, host: str, probe: Any = "top") -> list[Measure]:
    """CPU busy % (100 - idle) from top's `%Cpu(s)` line, with iowait and steal."""
    out = read_probe(bundle, host, probe)
    cpu = p.parse_top_cpu(out.text)
    if cpu is None:
        raise Unknown(f"probe {out.probe} on {host}: no '%Cpu(s):' line")
    return [
        Measure(
            host, cpu.busy_pct, [out.evidence(cpu.line)], {"iowait": cpu.iowait_pct, "steal": cpu.steal_pct}
        )
    ]


@measure
def device_util_pct(bundle: BundleView, host: str, probe: Any = "iostat") -> list[Measure]:
    """Each device's utilisation % over iostat's sample, with its worst await (ms)."""
    out = read_probe(bundle, host, probe)
    devices = p.parse_iostat(out.text)
    if not devices:
        raise Unknown(f"probe {out.probe} on {host}: no device rows with %util")
    return [
        Measure(host, d.util_pct, [out.evidence(d.line)], {"device": d.name, "await_ms": d.await_ms})
        for d in devices
    ]


@measure
def load_per_core(bundle: BundleView, host: str, probe: Any = "uptime") -> list[Measure]:
    """The 1-minute load average divided by the host's cores (the probe's `cores: N` line, from nproc)."""
    out = read_probe(bundle, host, probe)
    load = p.parse_uptime(out.text)
    if load is None:
        raise Unknown(f"probe {out.probe} on {host}: no load averages")
    if not load.cores:
        raise Unknown(
            f"probe {out.probe} on {host}: the number of cores was not collected (no 'cores: N' line)"
        )
    return [
        Measure(
            host,
            round(load.load1 / load.cores, 2),
            [out.evidence(load.line)],
            {"load1": load.load1, "load5": load.load5, "cores": load.cores},
        )
    ]


@measure
def top_counted(
    bundle: BundleView,
    host: str,
    probe: Any = "http_5xx_by_path",
    pattern: str = r"^(?P<status>\d{3})\s+(?P<what>\S+)",
) -> list[Measure]:
    """The most frequent line of a `uniq -c` summary (5xx by endpoint): its count, and its share of all."""
    out = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
    rows = p.parse_counted(out.text)
    total = sum(r.count for r in rows)
    if not rows:
        return [Measure(host, 0, [], {"count": 0, "total": 0, "what": "", "status": "", "share": 0.0})]
    top = rows[0]
    match = re.search(pattern, top.text)
    fields = {
        "count": top.count,
        "total": total,
        "share": round(100.0 * top.count / total, 1),
        "what": match.group("what") if match else top.text,
        "status": match.group("status") if match else "?",
    }
    return [Measure(host, top.count, [out.evidence(r.line) for r in rows[:3]], fields)]


def pg_database_bytes(bundle: BundleView, host: str, probe: Any = "pg_db_size") -> tuple[float, Evidence]:
    """Bytes of every (non-template) database on a db host, summed; Unknown when not collected."""
    out = read_probe(bundle, host, probe)
    rows = [r for r in _rows(out) if p.to_number(r.get("bytes")) is not None]
    if not rows:
        raise Unknown(f"probe {out.probe} on {host}: no database sizes in the output")
    return sum(p.to_number(r.get("bytes")) or 0.0 for r in rows), out.evidence(rows[0].line)


# ---------------------------------------------------------------- Docker Compose


def _containers(bundle: BundleView, host: str, probe: Any) -> tuple[Output, list[p.Container]]:
    """The project's containers (one-offs and cleanly finished run-once containers left out)."""
    out = read_probe(bundle, host, probe)
    found = [c for c in p.parse_containers(out.text) if not c.completed and not c.oneoff]
    if not found and "no container of compose project" not in out.text:
        raise Unknown(f"probe {out.probe} on {host}: no container JSON in the output ({_first(out.text)})")
    return out, found


def _newest_container(bundle: BundleView, host: str, probe: Any) -> tuple[_dt.datetime, Evidence] | None:
    """When the newest container of the project was created, with the line saying so (None: not known)."""
    try:
        out, found = _containers(bundle, host, probe)
    except Unknown:
        return None
    dated = [c for c in found if c.created is not None]
    if not dated:
        return None
    newest = max(dated, key=lambda c: c.created or _dt.datetime.min.replace(tzinfo=_dt.UTC))
    assert newest.created is not None
    excerpt = f"container {newest.name} ({newest.image}) created {newest.created.isoformat()}"
    return newest.created, out.evidence(newest.line, excerpt)


def _human_bytes(value: int) -> str:
    if value <= 0:
        return "none"
    for unit, size in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return f"{value} B"


@measure
def compose_container_down(bundle: BundleView, host: str, probe: Any = "compose_containers") -> list[Measure]:
    """True per container of the project that is not running (exited, dead, created) or is unhealthy.

    A restarting container is the crash-loop rule's; a one-off or a cleanly finished run-once container is
    not a service that is down. No container at all is down too.
    """
    out, found = _containers(bundle, host, probe)
    if not found:
        line = _find_line(out.text, "no container") or 1
        fields = {"container": "-", "service": "-", "state": "no container", "health": "-"}
        return [Measure(host, True, [out.evidence(line)], fields)]
    measures = []
    for c in found:
        down = (not c.running and not c.restarting and c.status != "restarting") or c.health == "unhealthy"
        excerpt = f"{c.name} ({c.service}): {c.state}; restarts {c.restart_count}; started {c.started_at}"
        fields = {"container": c.name, "service": c.service, "state": c.state, "health": c.health or "none"}
        measures.append(Measure(host, down, [out.evidence(c.line, excerpt)], fields))
    return measures


@measure
def compose_crash_looping(
    bundle: BundleView,
    host: str,
    probe: Any = "compose_containers",
    events_probe: Any = "compose_events",
    recent_s: float = 120.0,
) -> list[Measure]:
    """Restarts in the window of each container that is crash-looping now (restarting, or last started under
    `recent_s` before the collection), else 0.

    Restarts are the current instance's crashes in the window (compose_events: a `die` not announced by a
    `kill`, which a stop or a restart sends), or its restart count when its last start is inside the window,
    whichever is more; a container recreated or stopped on purpose is not crash-looping.
    """
    out, found = _containers(bundle, host, probe)
    start = window_start(bundle)
    collected = _collected_at(bundle)
    dies: dict[str, list[p.DockerEvent]] = {}  # container id -> its crashes in the window
    events_out: Output | None = None
    try:
        events_out = read_probe(bundle, host, events_probe, allow_empty=True)
        before: dict[str, str] = {}  # container id -> its previous event
        for ev in p.parse_docker_events(events_out.text):
            # a stop or restart by someone sends `kill` first: that die is not a crash
            crashed = ev.action == "die" and before.get(ev.id) != "kill"
            before[ev.id] = ev.action
            if crashed and (start is None or ev.when is None or ev.when >= start):
                dies.setdefault(ev.id, []).append(ev)
    except Unknown:
        events_out = None
    measures = []
    for c in found:
        recent = (
            c.started_at is not None
            and collected is not None
            and (collected - c.started_at).total_seconds() <= recent_s
        )
        looping_now = c.restarting or c.status == "restarting" or recent
        in_window = c.started_at is not None and start is not None and c.started_at >= start
        # the engine's die events may have rolled off its 256-event memory: the restart count is a floor too
        count = max(len(dies.get(c.id, [])), c.restart_count if in_window else 0)
        said = f"{c.name} ({c.service}): {c.state}; restart count {c.restart_count}"
        evidence = [out.evidence(c.line, said)]
        if events_out is not None and dies.get(c.id):
            last = dies[c.id][-1]
            evidence.append(events_out.evidence(last.line, last.describe()))
        fields = {
            "container": c.name,
            "service": c.service,
            "state": c.state,
            "restarts": c.restart_count,
            "dies": count,
            "exit_code": c.exit_code,
        }
        measures.append(Measure(host, count if looping_now else 0, evidence, fields))
    return measures


@measure
def compose_oom_killed(bundle: BundleView, host: str, probe: Any = "compose_containers") -> list[Measure]:
    """True per container whose current instance the kernel OOM-killed (docker's State.OOMKilled)."""
    out, found = _containers(bundle, host, probe)
    measures = []
    for c in found:
        excerpt = f"{c.name} ({c.service}): {c.state}; OOMKilled={str(c.oom_killed).lower()}"
        fields = {
            "container": c.name,
            "service": c.service,
            "state": c.state,
            "limit": _human_bytes(c.memory_limit),
        }
        measures.append(Measure(host, c.oom_killed, [out.evidence(c.line, excerpt)], fields))
    return measures


@measure
def compose_oom_history(
    bundle: BundleView,
    host: str,
    probe: Any = "oom_events",
    containers_probe: Any = "compose_containers",
    events_probe: Any = "compose_events",
) -> list[Measure]:
    """OOM kills in the project's containers inside the window (the history, whatever the containers say now).

    The kernel's log (oom_events) names the memory cgroup of each kill, which ends in the container's id:
    a kill counts when that id is one of the project's containers. Without such lines, the engine's `oom`
    events count (it keeps only its last 256 events: minutes on a host whose containers have healthchecks).
    """
    _, found = _containers(bundle, host, containers_probe)
    names = {c.id: c.name for c in found if c.id}
    start = window_start(bundle)
    year = (_collected_at(bundle) or _dt.datetime.now(_dt.UTC)).year
    kills: list[tuple[p.Line, str]] = []
    kernel: Output | None = None
    try:
        kernel = read_probe(bundle, host, probe, allow_failed=True, allow_empty=True)
        ours: dict[str, str] = {}  # pid -> container name, from the kill's cgroup line
        seen: set[str] = set()
        for ln in p.grep(kernel.text, patterns.OOM.regex.pattern):
            memcg = re.search(r"task_memcg=([^,\s]+)", ln.text)
            pid = re.search(r"\bpid=(\d+)", ln.text)
            if memcg and pid:
                owner = next((n for i, n in names.items() if i in memcg.group(1).split("/")), None)
                if owner:
                    ours[pid.group(1)] = owner
                continue
            killed = re.search(r"Killed process (\d+)", ln.text)
            if not killed or killed.group(1) not in ours:
                continue
            when = p.parse_time(ln.text, year)
            key = ln.text[killed.start() :]  # dmesg and the kernel journal repeat the same kill
            if (when is not None and start is not None and when < start) or key in seen:
                continue
            seen.add(key)
            kills.append((ln, ours[killed.group(1)]))
    except Unknown:
        kernel = None
    if kernel is not None and kills:
        victim = re.search(r"Killed process \d+ \(([^)]+)\)", kills[-1][0].text)
        fields = {
            "count": len(kills),
            "container": kills[-1][1],
            "victim": victim.group(1) if victim else "?",
            "source": "the kernel log",
        }
        shown = kills[:1] + kills[1:][-2:]
        return [Measure(host, len(kills), [kernel.evidence(ln.number) for ln, _ in shown], fields)]
    events = read_probe(bundle, host, events_probe, allow_empty=True)
    ooms = [
        ev
        for ev in p.parse_docker_events(events.text)
        if ev.action == "oom" and (start is None or ev.when is None or ev.when >= start)
    ]
    fields = {
        "count": len(ooms),
        "container": ooms[-1].container if ooms else "",
        "victim": "?",
        "source": "docker events",
    }
    evidence = [events.evidence(ev.line, ev.describe()) for ev in ooms[:1] + ooms[1:][-2:]]
    return [Measure(host, len(ooms), evidence, fields)]


@measure
def compose_memory_pct(bundle: BundleView, host: str, probe: Any = "compose_stats") -> list[Measure]:
    """Memory use of each running container as % of its limit (docker stats' MemPerc)."""
    out = read_probe(bundle, host, probe)
    rows = [r for r in p.parse_docker_stats(out.text) if r.mem_pct is not None]
    if not rows:
        if "no running container" in out.text:
            return [Measure(host, 0.0)]
        raise Unknown(f"probe {out.probe} on {host}: no container statistics in the output")
    return [
        Measure(host, r.mem_pct, [out.evidence(r.line)], {"container": r.name, "usage": r.mem_usage})
        for r in rows
    ]
