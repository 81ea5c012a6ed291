"""The incident report: HTML, Markdown, TICKET.md and status-update texts rendered from a bundle.

Everything here reads a bundle (plus the findings.json and actions.json that triage and
remediate put into it) and hands plain values to the Jinja2 templates in `reports/`.
Nothing in a report depends on the wall clock, so re-rendering the same bundle gives the same
bytes and the sealed tar.gz stays deterministic; only the comms texts carry "now".
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from collector import __version__
from collector.core import UsageError
from collector.paths import resource

FORMATS = ("html", "md")
STAGES = ("initial", "mitigation", "resolved")
SEVERITY_ORDER = ("P0", "P1", "P2", "P3", "none")
NEXT_UPDATE_MIN = 15  # the runbook's status-update cadence

# Which line in a probe's output is the first sign of trouble, per kind of timeline event.
_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL|FATAL|PANIC)\b|Traceback|\berror:", re.IGNORECASE)
_OOM_LINE = re.compile(r"out of memory|oom-kill|oom_kill|killed process", re.IGNORECASE)
# Lower-case literals one of which every match contains: str.find over a 25 MiB journal is far
# faster than a case-insensitive regex, which then only confirms the candidate line.
_NEEDLES = {_ERROR_LINE: ("error", "critical", "fatal", "panic", "traceback"),
            _OOM_LINE: ("out of memory", "oom-kill", "oom_kill", "killed process")}
# The role's own service log first: journal_errors also holds unrelated units' noise (sshd...).
_JOURNAL_PROBES = ("service_journal", "journal_errors")
_OOM_PROBES = ("oom_events",)
_DEPLOY_PROBES = ("deploy_log",)
_DEPLOYS_PER_HOST = 3
_DEPLOY_SUSPECT_S = 2 * 3600  # a deploy this shortly before the first symptom is worth a question

_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}:\d{2})(?P<frac>\.\d+)?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?"
)
_DMESG_T = re.compile(r"\[(?:\w{3} )?(?P<mon>\w{3}) +(?P<day>\d{1,2}) (?P<time>\d{2}:\d{2}:\d{2}) (?P<year>\d{4})\]")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_DEPLOY_LINE = re.compile(r"^(?P<hash>[0-9a-f]{6,40}) (?P<at>\S+) (?P<rest>.*)$")

# Key figures as the report shows them: key, label, unit, the runbook's "bad" threshold.
FIGURES: tuple[tuple[str, str, str, float | None], ...] = (
    ("error_ratio", "5xx ratio", "ratio", 0.10),
    ("p95_s", "p95 latency", "seconds", 0.200),
    ("pg_connections", "PostgreSQL connections", "count", None),
    ("pg_max_connections", "PostgreSQL max_connections", "count", None),
    ("mem_used_pct", "Memory used", "pct", 90.0),
    ("disk_max_pct", "Fullest disk", "pct", 90.0),
    ("redis_used_memory", "Redis used memory", "bytes", None),
    ("redis_maxmemory", "Redis maxmemory", "bytes", None),
)

# Follow-ups an SRE would file after each runbook scenario; matched on the finding's scenario/id.
_PREVENTION: tuple[tuple[str, str], ...] = (
    ("pool", "Size the DB connection pool against max_connections and alert at 80 % use."),
    ("connection", "Size the DB connection pool against max_connections and alert at 80 % use."),
    ("lock", "Find the transaction that held the lock; add lock_timeout / statement_timeout."),
    ("slow", "Index or rewrite the slow queries; add a slow-query alert."),
    ("memory", "Set a memory limit and find the leak; alert on RSS growth."),
    ("oom", "Set a memory limit and find the leak; alert on RSS growth."),
    ("disk", "Add log rotation / retention for the full filesystem; alert at 80 %."),
    ("redis", "Review Redis maxmemory and eviction policy; alert at 80 % of maxmemory."),
    ("rate limit", "Agree the upstream rate limit; keep the circuit breaker and cache TTL tuned."),
    ("rate-limit", "Agree the upstream rate limit; keep the circuit breaker and cache TTL tuned."),
    ("429", "Agree the upstream rate limit; keep the circuit breaker and cache TTL tuned."),
    ("circuit", "Agree the upstream rate limit; keep the circuit breaker and cache TTL tuned."),
    ("deploy", "Add a canary stage and an automatic rollback on 5xx for deploys."),
    ("down", "Add a health-check alert and auto-restart for the service."),
    ("5xx", "Find the failing endpoint in the 5xx-by-path summary and fix it."),
    ("error", "Find the failing endpoint in the 5xx-by-path summary and fix it."),
    ("latency", "Profile the slow endpoints; add a p95 SLO alert."),
    ("p95", "Profile the slow endpoints; add a p95 SLO alert."),
)


@dataclass(frozen=True)
class TimelineEvent:
    """One dated line of the incident timeline."""

    at: _dt.datetime
    kind: str  # alert|deploy|error|oom|collection|triage|plan|approval|apply|verify
    text: str
    hosts: tuple[str, ...] = ()
    source: str | None = None  # a bundle-relative path to the evidence
    approx: bool = False  # the time is when we saw it, not when it happened
    probe: str = ""  # the probe the line came from (service logs outrank other units' noise)

    @property
    def when(self) -> str:
        return fmt_time(self.at)


@dataclass(frozen=True)
class FigureRow:
    """One key figure (possibly of one host), formatted, with whether it crosses the runbook's threshold."""

    key: str
    label: str
    host: str
    value: str
    bad: bool
    raw: Any = None
    detail: str = ""  # every known host's value, worst first, when there is more than one


@dataclass(frozen=True)
class Chart:
    """One Prometheus range series drawn as a sparkline."""

    title: str
    svg: Markup
    text: str  # unicode block sparkline for Markdown and plain text
    first: str
    last: str
    peak: str
    points: int


@dataclass
class ReportData:
    """Everything the templates see, computed once from the bundle."""

    incident: str
    bundle_path: str
    tool_version: str
    manifest: dict[str, Any]
    severity: str
    severity_known: bool
    title: str
    impact: str
    questions: list[tuple[str, str, str]]
    security: str | None
    hosts: list[str]
    hosts_affected: list[str]
    host_rows: list[dict[str, Any]]
    probe_names: list[str]
    findings: list[dict[str, Any]]
    unevaluated: list[tuple[str, str]]
    figures: list[FigureRow]
    figures_note: str | None
    charts: list[Chart]
    timeline: list[TimelineEvent]
    actions: list[dict[str, Any]]
    before_after: list[dict[str, str]]
    action_items: list[dict[str, str]]
    root_cause: list[str]
    resolution: list[str]
    lessons: list[str]
    started: str
    detected: str
    resolved: str | None
    duration: str
    collection: dict[str, str]
    verification: str | None
    archive: str
    problems: list[str] = field(default_factory=list)  # side files we could not read, said in the report
    side_files: list[str] = field(default_factory=list)  # derived files present (findings.json, actions.json)


# ---------------------------------------------------------------- time


def parse_time(value: Any) -> _dt.datetime | None:
    """An aware UTC datetime from an ISO 8601 string (Z, offsets, nanoseconds) or epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return _dt.datetime.fromtimestamp(float(value), _dt.UTC)
    match = _ISO.search(str(value))
    if not match:
        return None
    return _iso_match(match)


def _iso_match(match: re.Match[str]) -> _dt.datetime | None:
    frac = (match.group("frac") or "")[:7]  # fromisoformat takes at most microseconds
    tz = match.group("tz") or "+00:00"
    if tz == "Z":
        tz = "+00:00"
    elif ":" not in tz:
        tz = f"{tz[:3]}:{tz[3:]}"
    try:
        parsed = _dt.datetime.fromisoformat(f"{match.group('date')}T{match.group('time')}{frac}{tz}")
    except ValueError:
        return None
    return parsed.astimezone(_dt.UTC)


def line_time(line: str) -> _dt.datetime | None:
    """The timestamp at the start of a log line: ISO (journal short-iso, git) or `dmesg -T` style."""
    head = line[:64]
    match = _ISO.search(head)
    if match:
        return _iso_match(match)
    match_d = _DMESG_T.search(head)
    if match_d and match_d.group("mon") in _MONTHS:
        try:
            hour, minute, second = (int(x) for x in match_d.group("time").split(":"))
            return _dt.datetime(int(match_d.group("year")), _MONTHS[match_d.group("mon")], int(match_d.group("day")),
                                hour, minute, second, tzinfo=_dt.UTC)
        except ValueError:
            return None
    return None


def fmt_time(at: _dt.datetime | None) -> str:
    """`2026-11-28 05:40:03 UTC`, or an em dash when unknown."""
    if at is None:
        return "—"
    return at.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(seconds: float | None) -> str:
    """`1 h 05 min`, `7 min 12 s`, `40 s`."""
    if seconds is None or seconds < 0:
        return "unknown"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


# ---------------------------------------------------------------- bundle side files


def _read_json(bundle: Any, name: str, problems: list[str] | None = None) -> dict[str, Any] | None:
    """A derived JSON file of the bundle (findings.json, actions.json); None when absent, noted when unreadable."""
    path = Path(bundle.path) / name
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except ValueError as exc:
        if problems is not None:
            problems.append(f"{name} is not valid JSON ({exc}); its content is left out of this report")
        return None
    if not isinstance(loaded, dict):
        if problems is not None:
            problems.append(f"{name} is not a JSON object; its content is left out of this report")
        return None
    return loaded


def _host_probes(bundle: Any, host: str) -> dict[str, dict[str, Any]]:
    entry = bundle.host(host) or {}
    probes = entry.get("probes") or {}
    return probes if isinstance(probes, dict) else {}


def _probe_path(bundle: Any, host: str, probe: str) -> str | None:
    meta = bundle.probe(host, probe) or {}
    path = meta.get("path")
    return str(path) if path else None


# ---------------------------------------------------------------- timeline


def build_timeline(bundle: Any, findings: dict[str, Any] | None, actions: dict[str, Any] | None) -> list[TimelineEvent]:
    """Alerts, deploys, first errors/OOMs, the collection, triage and each remediation step, in time order."""
    events: list[TimelineEvent] = []
    events += alert_events(bundle)
    events += deploy_events(bundle)
    events += log_events(bundle)
    events += collection_events(bundle.manifest)
    if findings:
        at = parse_time(findings.get("created") or findings.get("generated"))
        if at is not None:
            events.append(TimelineEvent(at, "triage", f"Triage: severity {findings.get('severity', '?')}, "
                                        f"{len(findings.get('findings') or [])} finding(s)"))
    events += action_events(actions)
    return _merge_hosts(sorted(events, key=lambda e: (e.at, _KIND_ORDER.get(e.kind, 99), e.text)))


_KIND_ORDER = {k: i for i, k in enumerate(
    ("deploy", "alert", "error", "oom", "collection", "triage", "plan", "approval", "apply", "verify"))}


def _merge_hosts(events: list[TimelineEvent]) -> list[TimelineEvent]:
    """One line for the same event seen on many hosts (a 33-host fleet shows one deploy, not 33)."""
    merged: dict[tuple[Any, ...], TimelineEvent] = {}
    for event in events:
        key = (event.at, event.kind, event.text)
        if key in merged:
            prior = merged[key]
            hosts = tuple(dict.fromkeys(prior.hosts + event.hosts))
            merged[key] = TimelineEvent(prior.at, prior.kind, prior.text, hosts, prior.source, prior.approx, prior.probe)
        else:
            merged[key] = event
    return list(merged.values())


def _alerts_list(data: Any) -> list[dict[str, Any]]:
    """Alerts as Alertmanager's raw shape (startsAt, labels), from our monitoring doc or a raw v1/v2 answer."""
    if isinstance(data, dict) and isinstance(data.get("alerts"), list):  # collector.monitoring.shape_alerts
        return [_raw_alert(a) for a in data["alerts"] if isinstance(a, dict)]
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, list) and all(isinstance(a, dict) for a in data):
        return [a for a in data if "startsAt" in a or "labels" in a]
    return []


def _raw_alert(alert: dict[str, Any]) -> dict[str, Any]:
    if "startsAt" in alert:
        return alert
    labels = dict(alert.get("labels") or {})
    labels.setdefault("alertname", alert.get("name") or "alert")
    if alert.get("severity"):
        labels.setdefault("severity", alert["severity"])
    if alert.get("instance"):
        labels.setdefault("instance", alert["instance"])
    notes = dict(alert.get("annotations") or {})
    if alert.get("summary"):
        notes.setdefault("summary", alert["summary"])
    return {"labels": labels, "annotations": notes, "startsAt": alert.get("starts_at"),
            "endsAt": alert.get("ends_at"), "status": {"state": alert.get("state")}}


def monitoring_names(bundle: Any) -> list[str]:
    """The names of the monitoring answers in the bundle, in manifest order."""
    mon = bundle.manifest.get("monitoring") or {}
    return list(mon) if isinstance(mon, dict) else []


def _monitoring_path(bundle: Any, name: str) -> str | None:
    meta = (bundle.manifest.get("monitoring") or {}).get(name) or {}
    return str(meta["path"]) if isinstance(meta, dict) and meta.get("path") else None


def active_alerts(bundle: Any) -> list[tuple[str, dict[str, Any]]]:
    """(monitoring name, alert) for every Alertmanager alert in the bundle."""
    found: list[tuple[str, dict[str, Any]]] = []
    for name in monitoring_names(bundle):
        found += [(name, a) for a in _alerts_list(_safe_monitoring(bundle, name))]
    return found


def _safe_monitoring(bundle: Any, name: str) -> Any:
    try:
        return bundle.monitoring(name)
    except (OSError, ValueError):
        return None


def alert_events(bundle: Any) -> list[TimelineEvent]:
    """One event per firing alert, at its Alertmanager startsAt."""
    events = []
    for name, alert in active_alerts(bundle):
        at = parse_time(alert.get("startsAt"))
        if at is None:
            continue
        labels = alert.get("labels") or {}
        summary = (alert.get("annotations") or {}).get("summary") or ""
        alertname = labels.get("alertname", "alert")
        severity = labels.get("severity")
        text = f"Alert {alertname} firing" + (f" ({severity})" if severity else "") + (f": {summary}" if summary else "")
        host = labels.get("instance") or labels.get("host")
        events.append(TimelineEvent(at, "alert", _clip(text), (str(host),) if host else (), _monitoring_path(bundle, name)))
    return events


def deploy_events(bundle: Any) -> list[TimelineEvent]:
    """The most recent commits of each host's deploy directory (git log --date=iso-strict)."""
    events = []
    for host in bundle.hosts:
        for probe in _DEPLOY_PROBES:
            text = _ok_text(bundle, host, probe)
            if not text:
                continue
            count = 0
            for line in text.splitlines():
                match = _DEPLOY_LINE.match(line.strip())
                at = parse_time(match.group("at")) if match else None
                if match is None or at is None:
                    continue
                events.append(TimelineEvent(at, "deploy", _clip(f"Deploy {match.group('hash')}: {match.group('rest')}"),
                                            (host,), _probe_path(bundle, host, probe)))
                count += 1
                if count >= _DEPLOYS_PER_HOST:
                    break
    return events


def _ok_text(bundle: Any, host: str, probe: str) -> str | None:
    try:
        return bundle.text(host, probe)
    except (OSError, ValueError):
        return None


def log_events(bundle: Any) -> list[TimelineEvent]:
    """The first ERROR line and the first OOM line of each host's journal probes."""
    events = []
    for host in bundle.hosts:
        first_error = _first_line(bundle, host, _JOURNAL_PROBES, _ERROR_LINE)
        if first_error:
            at, line, probe, approx = first_error
            events.append(TimelineEvent(at, "error", _clip(f"First error: {line}"), (host,),
                                        _probe_path(bundle, host, probe), approx, probe))
        first_oom = _first_line(bundle, host, _OOM_PROBES + _JOURNAL_PROBES, _OOM_LINE)
        if first_oom:
            at, line, probe, approx = first_oom
            events.append(TimelineEvent(at, "oom", _clip(f"Out of memory: {line}"), (host,),
                                        _probe_path(bundle, host, probe), approx))
    return events


def _first_line(bundle: Any, host: str, probes: Iterable[str],
                pattern: re.Pattern[str]) -> tuple[_dt.datetime, str, str, bool] | None:
    """The first matching line of the first probe (in order) that has one; undated lines take the probe's start."""
    for probe in probes:
        text = _ok_text(bundle, host, probe)
        if not text:
            continue
        line = first_matching_line(text, pattern, _NEEDLES.get(pattern, ()))
        if line is None:
            continue
        at = line_time(line)
        approx = at is None
        if at is None:
            at = parse_time((bundle.probe(host, probe) or {}).get("started"))
        if at is None:
            continue
        text_line = _strip_stamp(line)
        if text_line.startswith(f"{host} "):  # journal short-iso repeats the host the timeline already names
            text_line = text_line[len(host) + 1:]
        # Output is in time order, so this is the probe's earliest match; probes are in order of preference.
        return (at, text_line, probe, approx)
    return None


def first_matching_line(text: str, pattern: re.Pattern[str], needles: Iterable[str] = ()) -> str | None:
    """The first line of `text` that `pattern` matches; `needles` (lower case) find candidates fast."""
    lower = text.lower()
    if not needles or len(lower) != len(text):  # a few characters change length when lowered
        match = pattern.search(text)
        if match is None:
            return None
        start, end = text.rfind("\n", 0, match.start()) + 1, text.find("\n", match.end())
        return text[start: end if end >= 0 else len(text)]
    pos = 0
    while True:
        hits = [i for i in (lower.find(n, pos) for n in needles) if i >= 0]
        if not hits:
            return None
        first = min(hits)
        start, end = text.rfind("\n", 0, first) + 1, text.find("\n", first)
        end = end if end >= 0 else len(text)
        if pattern.search(text, start, end):
            return text[start:end]
        pos = end + 1


def _strip_stamp(line: str) -> str:
    """The log line without its leading timestamp (the timeline shows the time already)."""
    line = line.strip()
    match = _ISO.match(line)
    if match:
        return line[match.end():].strip()
    match_d = _DMESG_T.match(line)
    if match_d:
        return line[match_d.end():].strip()
    return line


def collection_events(manifest: dict[str, Any]) -> list[TimelineEvent]:
    """When collection started and finished, and how the hosts came out."""
    events = []
    hosts = manifest.get("hosts") or {}
    started = parse_time(manifest.get("started"))
    if started:
        events.append(TimelineEvent(started, "collection",
                                    f"Evidence collection started ({manifest.get('pattern') or '?'}, {len(hosts)} hosts)"))
    finished = parse_time(manifest.get("finished"))
    if finished:
        counts: dict[str, int] = {}
        for entry in hosts.values():
            status = (entry or {}).get("status", "?")
            counts[status] = counts.get(status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        verb = "interrupted" if manifest.get("interrupted") else "finished"
        events.append(TimelineEvent(finished, "collection", f"Evidence collection {verb} ({summary or 'no hosts'})"))
    return events


def action_events(actions: dict[str, Any] | None) -> list[TimelineEvent]:
    """Each remediation: requested, approved (or break-glass), applied, verified."""
    events: list[TimelineEvent] = []
    for action in (actions or {}).get("actions") or []:
        name = str(action.get("action", "action"))
        hosts = tuple(sorted((action.get("hosts") or {}).keys()))
        requested = parse_time(action.get("requested"))
        if requested:
            events.append(TimelineEvent(requested, "plan", f"Plan {name} requested by {action.get('requester') or '?'}",
                                        hosts))
        approved = parse_time(action.get("approved"))
        if action.get("break_glass"):
            events.append(TimelineEvent(approved or requested or _EPOCH, "approval",
                                        f"BREAK-GLASS for {name} by {action.get('approver') or action.get('requester') or '?'}: "
                                        f"{action['break_glass']}", hosts))
        elif approved:
            events.append(TimelineEvent(approved, "approval", f"Plan {name} approved by {action.get('approver') or '?'}",
                                        hosts))
        start = parse_time(action.get("applied_started"))
        if start:
            events.append(TimelineEvent(start, "apply", f"Applying {name}{_params_text(action.get('params'))}", hosts))
        end = parse_time(action.get("applied_finished"))
        if end:
            events.append(TimelineEvent(end, "apply", f"Applied {name}: {_host_results_text(action)}", hosts))
        verify = action.get("verify")
        if isinstance(verify, dict) and (end or start):
            events.append(TimelineEvent(end or start or _EPOCH, "verify", f"Verification {_verify_text(verify)}", hosts))
    return events


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _params_text(params: Any) -> str:
    if not isinstance(params, dict) or not params:
        return ""
    return " (" + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + ")"


def _host_results_text(action: dict[str, Any]) -> str:
    results = action.get("hosts") or {}
    parts = []
    for host in sorted(results):
        res = results[host] or {}
        status = res.get("status", "?")
        parts.append(f"{host} {status}" + (" (changed)" if res.get("changed") and status != "changed" else ""))
    return ", ".join(parts) or "no hosts"


def _verify_text(verify: dict[str, Any]) -> str:
    checks = verify.get("checks") or []
    failed = [c for c in checks if not c.get("passed")]
    if verify.get("passed"):
        return f"passed ({len(checks)} checks)"
    names = ", ".join(f"{c.get('name')}@{c.get('host')}" for c in failed[:5])
    return f"FAILED ({len(failed)} of {len(checks)} checks: {names})"


def _clip(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- figures and charts


def fmt_figure(unit: str, value: Any) -> str:
    """A key figure as a person reads it: 12.5 %, 340 ms, 1.2 GiB."""
    if value is None:
        return "unknown"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if unit == "ratio":
        return f"{value * 100:.1f} %"
    if unit == "seconds":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "pct":
        return f"{value:.1f} %"
    if unit == "bytes":
        return fmt_bytes(value)
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"


def fmt_bytes(value: float) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _figure_spec(key: str) -> tuple[str, str, float | None]:
    for fkey, label, unit, threshold in FIGURES:
        if fkey == key:
            return label, unit, threshold
    return key.replace("_", " "), "count", None


_PAIRS = {"pg_connections": "pg_max_connections", "redis_used_memory": "redis_maxmemory"}
_DETAIL_HOSTS = 12


def figure_rows(figures: dict[str, Any]) -> list[FigureRow]:
    """One row per key figure in the runbook's order: the worst host's value first, every known host after.

    Connections and Redis memory are shown against their maximum ("98 / 100 (98 %)").
    """
    known = {f[0] for f in FIGURES}
    keys = [k for k, *_ in FIGURES if k in figures] + sorted(k for k in figures if k not in known)
    rows = []
    for key in keys:
        if key in _PAIRS.values() and any(pk in figures for pk, lk in _PAIRS.items() if lk == key):
            continue  # shown with the figure it limits
        label, unit, threshold = _figure_spec(key)
        value = figures[key]
        if not isinstance(value, dict):
            rows.append(FigureRow(key, label, "", fmt_figure(unit, value),
                                  _over(key, value, threshold, figures, ""), value))
            continue
        cells = []
        for host, raw in sorted(value.items(), key=lambda kv: str(kv[0])):
            if raw is None:
                continue
            text, level = _figure_cell(key, unit, raw, figures, str(host))
            cells.append((str(host), text, level, _over(key, raw, threshold, figures, str(host)), raw))
        if not cells:
            rows.append(FigureRow(key, label, "", "unknown", False, None))
            continue
        worst = max(cells, key=lambda c: c[2])
        detail = ""
        if len(cells) > 1:
            shown = sorted(cells, key=lambda c: -c[2])[:_DETAIL_HOSTS]
            detail = ", ".join(f"{h} {t}" for h, t, *_ in shown) + (
                f", … {len(cells) - _DETAIL_HOSTS} more" if len(cells) > _DETAIL_HOSTS else "")
        rows.append(FigureRow(key, label, worst[0], worst[1], any(c[3] for c in cells), worst[4], detail))
    return rows


def _figure_cell(key: str, unit: str, raw: Any, figures: dict[str, Any], host: str) -> tuple[str, float]:
    """A host's figure as text, and the number that ranks hosts (use against the maximum for pairs)."""
    level = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else 0.0
    limit_key = _PAIRS.get(key)
    limit = (figures.get(limit_key) or {}) if limit_key else {}
    limit_value = limit.get(host) if isinstance(limit, dict) else limit
    if limit_key and isinstance(limit_value, (int, float)) and limit_value > 0:
        pct = 100.0 * level / float(limit_value)
        return f"{fmt_figure(unit, raw)} / {fmt_figure(unit, limit_value)} ({pct:.0f} %)", pct
    if limit_key and limit_value == 0 and key == "redis_used_memory":
        return f"{fmt_figure(unit, raw)} (no maxmemory)", 0.0
    return fmt_figure(unit, raw), level


def _over(key: str, raw: Any, threshold: float | None, figures: dict[str, Any], host: str) -> bool:
    """Whether a figure crosses the runbook's threshold (connections and Redis: 90 % of their maximum)."""
    if not isinstance(raw, (int, float)) or isinstance(raw, bool):
        return False
    if threshold is not None:
        return raw > threshold
    if key in _PAIRS:
        limit = figures.get(_PAIRS[key])
        if isinstance(limit, dict):
            limit = limit.get(host)
        if isinstance(limit, (int, float)) and limit > 0:
            return raw >= 0.9 * limit
    return False


def load_figures(bundle: Any) -> tuple[dict[str, Any], str | None]:
    """collector.triage.figures.key_figures(bundle), or {} and why when triage is unavailable."""
    try:
        from collector.triage.figures import key_figures
    except ImportError as exc:
        return {}, f"key figures unavailable: {exc}"
    try:
        figures = key_figures(bundle)
    except Exception as exc:  # noqa: BLE001 - a broken figure must not cost the whole report
        return {}, f"key figures could not be computed: {type(exc).__name__}: {exc}"
    return (figures if isinstance(figures, dict) else {}), None


def range_series(data: Any) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """The (labels, [(t, v)]) series of a range query: our monitoring doc or Prometheus's raw matrix."""
    if not isinstance(data, dict):
        return []
    if data.get("kind") == "range" and isinstance(data.get("series"), list):  # collector.monitoring.shape_range
        items = data["series"]
    else:
        body = data.get("data") if isinstance(data.get("data"), dict) else data
        if not isinstance(body, dict) or body.get("resultType") != "matrix":
            return []
        items = body.get("result") or []
    series = []
    for item in items:
        if not isinstance(item, dict):
            continue
        points = []
        for pair in item.get("values") or []:
            try:
                t, v = float(pair[0]), float(pair[1])
            except (TypeError, ValueError, IndexError):
                continue  # None/NaN: an empty rate window, not a zero
            if math.isfinite(v):
                points.append((t, v))
        if points:
            series.append((dict(item.get("metric") or {}), points))
    return series


def charts(bundle: Any, limit: int = 12) -> list[Chart]:
    """A sparkline per Prometheus range series in the bundle's monitoring answers."""
    out: list[Chart] = []
    for name in monitoring_names(bundle):
        for labels, points in range_series(_safe_monitoring(bundle, name)):
            label_text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
            title = name + (f" {{{label_text}}}" if label_text else "")
            out.append(make_chart(title, points, _unit_for(name)))
            if len(out) >= limit:
                return out
    return out


def _unit_for(name: str) -> str:
    lowered = name.lower()
    if "ratio" in lowered or "5xx" in lowered or "error" in lowered:
        return "ratio"
    if "p95" in lowered or "latency" in lowered or "duration" in lowered:
        return "seconds"
    return "count"


_BLOCKS = "▁▂▃▄▅▆▇█"


def make_chart(title: str, points: list[tuple[float, float]], unit: str, width: int = 240, height: int = 48) -> Chart:
    """An inline SVG sparkline (numbers only, so it is safe markup) and a text one."""
    values = [v for _, v in points]
    t0, t1 = points[0][0], points[-1][0]
    lo, hi = min(values), max(values)
    span_t = (t1 - t0) or 1.0
    span_v = (hi - lo) or 1.0
    pad = 3.0
    coords = [
        (pad + (t - t0) / span_t * (width - 2 * pad), height - pad - (v - lo) / span_v * (height - 2 * pad))
        for t, v in points
    ]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    area = f"{coords[0][0]:.1f},{height - pad:.1f} {line} {coords[-1][0]:.1f},{height - pad:.1f}"
    last_x, last_y = coords[-1]
    label = escape(f"{title}: {fmt_figure(unit, values[0])} → {fmt_figure(unit, values[-1])}, peak {fmt_figure(unit, hi)}")
    svg = Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{label}" xmlns="http://www.w3.org/2000/svg">'
        f'<polygon points="{area}" class="spark-area"/>'
        f'<polyline points="{line}" class="spark-line" fill="none"/>'
        f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="2.5" class="spark-dot"/></svg>'
    )
    step = max(1, len(values) // 40)
    sampled = values[::step]
    text = "".join(_BLOCKS[min(len(_BLOCKS) - 1, int((v - lo) / span_v * (len(_BLOCKS) - 1) + 0.5))] for v in sampled)
    return Chart(title, svg, text, fmt_figure(unit, values[0]), fmt_figure(unit, values[-1]), fmt_figure(unit, hi),
                 len(points))


# ---------------------------------------------------------------- findings, actions, skeleton


def severity_rank(severity: Any) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


_QUESTION_TEXT = {
    "how_many_users_and_hosts_affected": "How many users and hosts are affected?",
    "is_data_at_risk": "Is data at risk?",
    "down_or_degraded": "Is the service down or degraded?",
    "is_it_a_security_incident": "Is it a security incident?",
}


def _questions(raw: Any) -> list[tuple[str, str, str]]:
    """The runbook's four step-2 questions as (question, answer, why), whatever shape triage chose."""
    items: list[tuple[str, Any]] = []
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [(str(i.get("question") or i.get("id") or i.get("name") or "?"), i) for i in raw if isinstance(i, dict)]
    out = []
    for key, value in items:
        question = _QUESTION_TEXT.get(str(key), str(key).replace("_", " "))
        if isinstance(value, dict):
            answer = _answer(value.get("answer", value.get("value")))
            why = str(value.get("why") or value.get("reason") or value.get("detail") or "")
        else:
            answer, why = _answer(value), ""
        out.append((question, answer, why))
    return out


def _answer(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return "unknown" if value is None else str(value)


def _impact(questions: list[tuple[str, str, str]], affected: list[str], total: int) -> str:
    """One line: down or degraded, and how many users and hosts."""
    state = next((a for q, a, _ in questions if "down" in q.lower() or "degraded" in q.lower()), "")
    users = next((a for q, a, _ in questions if "user" in q.lower() or "how many" in q.lower()), "")
    parts = [p for p in (state, users) if p]
    if not users:
        parts.append(f"{len(affected)} of {total} hosts affected")
    return "; ".join(parts)


def _security(findings: dict[str, Any]) -> str | None:
    """Triage's separate security flag ({suspected, answer, why, advice} or a plain flag), None when clear."""
    for key in ("security", "security_incident", "possible_security_incident"):
        value = findings.get(key)
        if isinstance(value, dict):
            if not value.get("suspected"):
                return None
            parts = [str(value.get(k)) for k in ("why", "advice") if value.get(k)]
            return "; ".join(parts) or "possible security incident"
        if value is True:
            return "possible security incident — handle it per the security process"
        if isinstance(value, str) and value:
            return value
    return None


def _unevaluated(findings: dict[str, Any]) -> list[tuple[str, str]]:
    for key in ("unknown", "unevaluated", "not_evaluated", "rules_unknown", "skipped"):
        value = findings.get(key)
        if isinstance(value, list):
            out = []
            for item in value:
                if isinstance(item, dict):
                    why = str(item.get("why") or item.get("reason") or "")
                    title = str(item.get("title") or "")
                    out.append((str(item.get("id") or item.get("rule") or "?"), f"{title}: {why}" if title else why))
                else:
                    out.append((str(item), ""))
            return out
        if isinstance(value, dict):
            return [(str(k), str(v)) for k, v in value.items()]
    return []


def _safe_link(path: Any) -> str | None:
    """A bundle-relative link, never an absolute path or a URL (the report must not reach outside)."""
    if not isinstance(path, str) or not path or path.startswith(("/", "\\")) or ":" in path or ".." in path.split("/"):
        return None
    return path


def normalise_findings(findings: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Findings sorted by severity, each with safe evidence links and a mitigation line."""
    out = []
    for item in (findings or {}).get("findings") or []:
        if not isinstance(item, dict):
            continue
        evidence = []
        for ev in item.get("evidence") or []:
            if not isinstance(ev, dict):
                continue
            evidence.append({
                "host": str(ev.get("host") or ""), "probe": str(ev.get("probe") or ""),
                "path": str(ev.get("path") or ""), "link": _safe_link(ev.get("path")),
                "line": ev.get("line"), "excerpt": str(ev.get("excerpt") or ""),
            })
        mitigation = item.get("mitigation") if isinstance(item.get("mitigation"), dict) else None
        out.append({
            "id": str(item.get("id") or ""), "title": str(item.get("title") or item.get("id") or "finding"),
            "severity": str(item.get("severity") or "?"), "scenario": str(item.get("scenario") or ""),
            "hosts": [str(h) for h in item.get("hosts") or []], "message": str(item.get("message") or ""),
            "where": ", ".join("fleet-wide (monitoring)" if str(h) == "monitoring" else str(h)
                               for h in item.get("hosts") or []),
            "evidence": evidence, "mitigation": mitigation,
            "command": str((mitigation or {}).get("command") or ""),
            "alternatives": [str(m.get("command") or m.get("action")) for m in item.get("alternatives") or []
                             if isinstance(m, dict) and (m.get("command") or m.get("action"))],
        })
    return sorted(out, key=lambda f: (severity_rank(f["severity"]), f["title"]))


def action_items(findings: list[dict[str, Any]], actions: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Pre-filled follow-ups: mitigate (unless done) and prevent each finding; owners left to fill."""
    done = {str(a.get("action")) for a in actions if _action_succeeded(a)}
    items: list[dict[str, str]] = []
    seen: set[str] = set()
    for finding in findings:
        mitigation = finding["mitigation"] or {}
        action = str(mitigation.get("action") or "")
        command = finding["command"] or action
        if action and action not in done and command not in seen:
            seen.add(command)
            items.append({"what": f"Mitigate “{finding['title']}”: {finding['command'] or action}",
                          "finding": finding["id"], "priority": finding["severity"], "owner": "TBD"})
        prevention = _prevention_for(finding)
        if prevention not in seen:
            seen.add(prevention)
            items.append({"what": f"Prevent recurrence of “{finding['title']}”: {prevention}",
                          "finding": finding["id"], "priority": finding["severity"], "owner": "TBD"})
    if findings:
        items.append({"what": "Hold the post-mortem and publish this report within 24 h", "finding": "",
                      "priority": findings[0]["severity"], "owner": "incident commander"})
    return items


def _prevention_for(finding: dict[str, Any]) -> str:
    haystack = f"{finding['scenario']} {finding['id']} {finding['title']}".lower()
    for needle, text in _PREVENTION:
        if needle in haystack:
            return text
    return "Find the root cause and add an alert that would have caught it earlier."


def _action_succeeded(action: dict[str, Any]) -> bool:
    verify = action.get("verify")
    hosts_ok = all((r or {}).get("status") in ("ok", "changed") for r in (action.get("hosts") or {}).values())
    return bool(hosts_ok and not action.get("stopped") and isinstance(verify, dict) and verify.get("passed"))


def normalise_actions(actions: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The remediations in the order they were applied, with display strings."""
    out = []
    for action in (actions or {}).get("actions") or []:
        if not isinstance(action, dict):
            continue
        verify = action.get("verify") if isinstance(action.get("verify"), dict) else None
        out.append({
            **action,
            "name": str(action.get("action") or "action"),
            "params_text": _params_text(action.get("params")).strip(" ()"),
            "results_text": _host_results_text(action),
            "host_results": [(h, (action.get("hosts") or {})[h] or {}) for h in sorted(action.get("hosts") or {})],
            "verify_text": _verify_text(verify) if verify else "not run",
            "verify_checks": (verify or {}).get("checks") or [],
            "succeeded": _action_succeeded(action),
            "requested_text": fmt_time(parse_time(action.get("requested"))),
            "approved_text": fmt_time(parse_time(action.get("approved"))),
            "applied_text": fmt_time(parse_time(action.get("applied_finished") or action.get("applied_started"))),
        })
    return sorted(out, key=lambda a: str(a.get("applied_started") or a.get("requested") or ""))


_BEFORE_AFTER_HOSTS = 8


def before_after_rows(actions: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The key figures before and after each remediation: what changed, biggest change first per figure."""
    rows = []
    figure_order = {k: i for i, (k, *_) in enumerate(FIGURES)}
    for action in actions:
        pairs = action.get("before_after") or {}
        for key in sorted(pairs, key=lambda k: (figure_order.get(k, 99), k)):
            pair = pairs[key]
            if key in _PAIRS.values() or not isinstance(pair, (list, tuple)) or len(pair) != 2:
                continue  # maxima rarely move; the figure they limit is shown
            label, unit, _ = _figure_spec(key)
            before, after = pair
            if isinstance(before, dict) or isinstance(after, dict):
                before, after = before if isinstance(before, dict) else {}, after if isinstance(after, dict) else {}
                changes = [(h, before.get(h), after.get(h)) for h in sorted(set(before) | set(after))
                           if before.get(h) != after.get(h)]
                changes.sort(key=lambda c: -_delta(c[1], c[2]))
                for host, b, a in changes[:_BEFORE_AFTER_HOSTS]:
                    rows.append({"action": action["name"], "figure": f"{label} ({host})",
                                 "before": fmt_figure(unit, b), "after": fmt_figure(unit, a)})
            elif before is not None or after is not None:
                rows.append({"action": action["name"], "figure": label,
                             "before": fmt_figure(unit, before), "after": fmt_figure(unit, after)})
    return rows


def _delta(before: Any, after: Any) -> float:
    numbers = [v for v in (before, after) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return abs(float(numbers[0]) - float(numbers[1])) if len(numbers) == 2 else float("inf")


def host_matrix(bundle: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Probe names (columns) and one row per host with each probe's status and its bundle file."""
    probe_names: list[str] = []
    rows = []
    for host in bundle.hosts:
        entry = bundle.host(host) or {}
        probes = _host_probes(bundle, host)
        for name in probes:
            if name not in probe_names:
                probe_names.append(name)
        bad = [(n, str((p or {}).get("status"))) for n, p in probes.items()
               if (p or {}).get("status") in ("failed", "timeout")]
        rows.append({"host": host, "status": str(entry.get("status") or "?"), "error": entry.get("error") or "",
                     "roles": ", ".join(entry.get("roles") or []), "probes": probes,
                     "ok": sum(1 for p in probes.values() if (p or {}).get("status") == "ok"),
                     "total": len(probes), "bad": bad,
                     "other": [(n, str((p or {}).get("status"))) for n, p in probes.items()
                               if (p or {}).get("status") in ("not_found", "skipped")]})
    return probe_names, rows


def build(bundle: Any) -> ReportData:
    """Gather every value the templates need from an opened bundle."""
    manifest = bundle.manifest
    problems: list[str] = []
    findings_doc = _read_json(bundle, "findings.json", problems)
    actions_doc = _read_json(bundle, "actions.json", problems)
    findings = normalise_findings(findings_doc)
    actions = normalise_actions(actions_doc)
    probe_names, host_rows = host_matrix(bundle)
    hosts = list(bundle.hosts)
    affected = _affected(findings, host_rows)
    questions = _questions((findings_doc or {}).get("questions"))
    severity = str((findings_doc or {}).get("severity") or "unknown")
    timeline = collapse_bystanders(build_timeline(bundle, findings_doc, actions_doc), affected)
    figures, figures_note = load_figures(bundle)
    triage_figures = (findings_doc or {}).get("figures")
    if not figures and isinstance(triage_figures, dict):
        figures, figures_note = triage_figures, None  # as triage saw them

    collection_start = parse_time(manifest.get("started"))
    collection_end = parse_time(manifest.get("finished"))
    started_at = _incident_start(timeline, affected, findings) or collection_start
    resolved_at = _resolved_at(actions)
    end_at = resolved_at or collection_end
    duration = (end_at - started_at).total_seconds() if started_at and end_at else None

    title = findings[0]["title"] if findings else f"Incident {manifest.get('incident', '')}"
    data = ReportData(
        incident=str(manifest.get("incident") or Path(bundle.path).name),
        bundle_path=str(Path(bundle.path)),
        tool_version=str(manifest.get("tool_version") or __version__),
        manifest=manifest,
        severity=severity,
        severity_known=findings_doc is not None,
        title=title,
        impact=_impact(questions, affected, len(hosts)),
        questions=questions,
        security=_security(findings_doc or {}),
        hosts=hosts,
        hosts_affected=affected,
        host_rows=host_rows,
        probe_names=probe_names,
        findings=findings,
        unevaluated=_unevaluated(findings_doc or {}),
        figures=figure_rows(figures),
        figures_note=figures_note,
        charts=charts(bundle),
        timeline=timeline,
        actions=actions,
        before_after=before_after_rows(actions),
        action_items=action_items(findings, actions),
        root_cause=_root_cause(findings),
        resolution=_resolution(actions),
        lessons=_lessons(timeline, started_at, collection_start, resolved_at),
        started=fmt_time(started_at),
        detected=fmt_time(collection_start),
        resolved=fmt_time(resolved_at) if resolved_at else None,
        duration=fmt_duration(duration) + ("" if resolved_at else " (ongoing at collection end)"),
        collection={"started": fmt_time(collection_start), "finished": fmt_time(collection_end),
                    "pattern": str(manifest.get("pattern") or ""), "engine": str(manifest.get("engine") or ""),
                    "inventory": str(manifest.get("inventory") or ""),
                    "interrupted": "yes" if manifest.get("interrupted") else "no",
                    "redacted": "no" if manifest.get("redacted") is False else "yes"},
        verification=_last_verification(actions),
        archive=f"{Path(bundle.path).name}.tar.gz",
        problems=problems,
        side_files=[n for n in ("findings.json", "actions.json") if (Path(bundle.path) / n).is_file()],
    )
    return data


_BYSTANDER_LINES = 3


def collapse_bystanders(timeline: list[TimelineEvent], affected: list[str]) -> list[TimelineEvent]:
    """Keep a 33-host timeline readable: first errors of hosts no finding names fold into one line past a few."""
    if not affected:
        return timeline
    bystanders = [e for e in timeline if e.kind == "error" and not set(e.hosts) & set(affected)]
    if len(bystanders) <= _BYSTANDER_LINES:
        return timeline
    first = bystanders[0]
    hosts = tuple(dict.fromkeys(h for e in bystanders for h in e.hosts))
    summary = TimelineEvent(first.at, "error", _clip(f"First errors on {len(hosts)} hosts no finding names "
                                                     f"(earliest shown): {first.text.removeprefix('First error: ')}"),
                            hosts, first.source, first.approx, first.probe)
    dropped = {id(e) for e in bystanders}
    out = [e for e in timeline if id(e) not in dropped]
    out.append(summary)
    return sorted(out, key=lambda e: (e.at, _KIND_ORDER.get(e.kind, 99), e.text))


def _incident_start(timeline: list[TimelineEvent], affected: list[str],
                    findings: list[dict[str, Any]]) -> _dt.datetime | None:
    """When the symptoms the findings describe began: the first alert, or first error on an affected host.

    OOM lines count only when a finding is about memory: dmesg can hold days-old kills (and in
    containers the whole machine's), which must not stretch the incident.
    """
    about_memory = any(re.search(r"oom|memory", f"{f['id']} {f['scenario']}", re.IGNORECASE) for f in findings)

    def on_affected(event: TimelineEvent) -> bool:
        return not affected or bool(set(event.hosts) & set(affected))

    strong = [e.at for e in timeline if e.kind == "alert"
              or (e.kind == "error" and e.probe == _JOURNAL_PROBES[0] and on_affected(e))
              or (e.kind == "oom" and about_memory and on_affected(e))]
    if strong:
        return min(strong)
    # No alert and no service-log error: any unit's error on an affected host is the best we have.
    weak = [e.at for e in timeline if e.kind == "error" and on_affected(e)]
    return min(weak) if weak else None


def _affected(findings: list[dict[str, Any]], host_rows: list[dict[str, Any]]) -> list[str]:
    """Bundle hosts named by a finding (not the `monitoring` pseudo-host), else hosts that did not come back ok."""
    known = {r["host"] for r in host_rows}
    named = list(dict.fromkeys(h for f in findings if f["severity"] != "none" for h in f["hosts"] if h in known))
    if named:
        return named
    return [r["host"] for r in host_rows if r["status"] != "ok"]


def _resolved_at(actions: list[dict[str, Any]]) -> _dt.datetime | None:
    """When the last remediation finished with verification green, if the last one did."""
    if not actions or not actions[-1]["succeeded"]:
        return None
    return parse_time(actions[-1].get("applied_finished"))


def _last_verification(actions: list[dict[str, Any]]) -> str | None:
    return actions[-1]["verify_text"] if actions else None


def _root_cause(findings: list[dict[str, Any]]) -> list[str]:
    if not findings:
        return ["Not known yet: no triage findings in this bundle (run `collector triage`)."]
    top = findings[0]
    lines = [f"Most severe finding: {top['title']} ({top['severity']})"
             + (f", runbook scenario “{top['scenario']}”" if top["scenario"] else "")
             + (f" on {', '.join(top['hosts'])}" if top["hosts"] else "") + "."]
    if top["evidence"]:
        ev = top["evidence"][0]
        lines.append(f"Evidence: {ev['path'] or ev['probe']}"
                     + (f" line {ev['line']}" if ev["line"] not in (None, "") else "")
                     + (f": {_clip(ev['excerpt'], 160)}" if ev["excerpt"] else ""))
    for other in findings[1:4]:
        lines.append(f"Also seen: {other['title']} ({other['severity']}).")
    lines.append("To be confirmed in the post-mortem (five whys).")
    return lines


def _resolution(actions: list[dict[str, Any]]) -> list[str]:
    if not actions:
        return ["No remediation recorded in this bundle yet."]
    lines = []
    for action in actions:
        approval = (f"BREAK-GLASS ({action['break_glass']})" if action.get("break_glass")
                    else f"approved by {action.get('approver') or '?'}")
        lines.append(f"{action['name']}" + (f" ({action['params_text']})" if action["params_text"] else "")
                     + f", requested by {action.get('requester') or '?'}, {approval}; "
                     + f"result: {action['results_text']}; verification {action['verify_text']}.")
    return lines


def _lessons(timeline: list[TimelineEvent], started: _dt.datetime | None, collected: _dt.datetime | None,
             resolved: _dt.datetime | None) -> list[str]:
    lines = []
    if started and collected:
        lines.append(f"Time from first sign of trouble to evidence collection: "
                     f"{fmt_duration((collected - started).total_seconds())}.")
    if started and resolved:
        lines.append(f"Time to recovery: {fmt_duration((resolved - started).total_seconds())}.")
    deploys = [e for e in timeline if e.kind == "deploy" and started and e.at <= started]
    if deploys and started and (started - deploys[-1].at).total_seconds() <= _DEPLOY_SUSPECT_S:
        lines.append(f"A deploy preceded the first error by {fmt_duration((started - deploys[-1].at).total_seconds())}: "
                     "was it the trigger?")
    lines += ["What went well: …", "What went wrong: …", "Where we got lucky: …"]
    return lines


# ---------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """Autoescape HTML templates (report.html.j2); Markdown and text get explicit filters instead."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource("reports"))),
        autoescape=lambda name: bool(name) and str(name).endswith((".html.j2", ".html")),
        # A field an older triage/remediate did not write renders empty instead of costing the report.
        undefined=jinja2.Undefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_inline
    env.filters["mdcode"] = md_code
    env.filters["mdblock"] = md_block
    env.filters["mdlink"] = md_link_target
    env.filters["safelink"] = _safe_link
    env.filters["hostlist"] = host_list
    env.filters["sevclass"] = lambda s: f"sev-{str(s).lower()}" if s in SEVERITY_ORDER else "sev-unknown"
    return env


# Backslash-escape what could start markup; `_` only where it could open or close emphasis (not in
# snake_case), so pasted text stays readable where Markdown is not rendered.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|<>~]|^#|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def host_list(hosts: Iterable[str], limit: int = 6) -> str:
    """`app1, db1` or `web01, web02, …, web06 and 24 more` for long lists."""
    names = list(hosts)
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def md_inline(value: Any) -> str:
    """Text safe inside a Markdown paragraph or table cell: no markup, no raw HTML, one line."""
    text = " ".join(str(value if value is not None else "").split())
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: Any) -> str:
    """An inline code span that survives backticks in the value."""
    text = " ".join(str(value).split())
    ticks = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (ticks + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_block(value: Any) -> str:
    """A fenced code block longer than any backtick run inside, so log lines cannot break out."""
    text = str(value).rstrip("\n")
    ticks = max((len(m) for m in re.findall(r"`{3,}", text)), default=0)
    fence = "`" * max(3, ticks + 1)
    return f"{fence}text\n{text}\n{fence}"


def md_link_target(value: Any) -> str:
    """A link destination in <…> form, which allows spaces but not < or >."""
    return "<" + str(value).replace("<", "%3C").replace(">", "%3E") + ">"


def render_text(template: str, data: ReportData, **extra: Any) -> str:
    """Render one template of reports/ with the report data."""
    return _environment().get_template(template).render(r=data, **extra)


def _open(bundle_path: str | Path) -> Any:
    from collector.bundle import Bundle  # the bundle step owns the layout

    return Bundle.open(Path(bundle_path))


def parse_formats(value: str | Iterable[str]) -> tuple[str, ...]:
    """`html,md` → ('html', 'md'); anything else is a usage error."""
    items = value.split(",") if isinstance(value, str) else list(value)
    formats = tuple(dict.fromkeys(f.strip().lower() for f in items if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UsageError(f"unknown report format {unknown[0] if unknown else '(none)'!r}: choose from {', '.join(FORMATS)}")
    return formats


def render_reports(bundle_path: str | Path, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write report.html / report.md and TICKET.md into the bundle, then re-seal it; returns the paths."""
    chosen = parse_formats(formats)
    bundle = _open(bundle_path)
    data = build(bundle)
    written: list[Path] = []
    outputs = [(f"report.{fmt}", f"report.{fmt}.j2") for fmt in chosen] + [("TICKET.md", "ticket.md.j2")]
    for name, template in outputs:
        bundle.write_text(name, render_text(template, data))
        written.append(Path(bundle.path) / name)
    bundle.seal()
    return written


def render_comms(bundle_path: str | Path, stage: str, now: _dt.datetime | None = None) -> str:
    """The runbook's status update for `stage` (initial, mitigation, resolved), ready to paste."""
    if stage not in STAGES:
        raise UsageError(f"unknown comms stage {stage!r}: choose from {', '.join(STAGES)}")
    bundle = _open(bundle_path)
    data = build(bundle)
    moment = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    text = render_text(f"comms/{stage}.txt.j2", data, now=fmt_time(moment),
                       next_update=fmt_time(moment + _dt.timedelta(minutes=NEXT_UPDATE_MIN)),
                       next_update_min=NEXT_UPDATE_MIN)
    return _redact(text)


def _redact(text: str) -> str:
    """Comms go to a terminal and then a chat: scrub once more, in case a derived file slipped one through."""
    try:
        from collector.redact import Redactor
    except ImportError:
        return text
    try:
        return str(Redactor(()).redact_text(text, "comms"))
    except Exception:  # noqa: BLE001 - never lose the update text over the scrubber's own failure; the bundle was scrubbed
        return text
