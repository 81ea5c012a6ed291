"""The report's timeline: dated events from the bundle's logs, alerts, deploys, collection and actions."""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from collector import times
from collector.core import Findings
from collector.triage import patterns
from collector.triage.patterns import LinePattern

# Which line in a probe's output is the first sign of trouble: triage's own evidence patterns.
_ERROR_LINE = patterns.ERROR
_OOM_LINE = patterns.OOM
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
_DMESG_T = re.compile(
    r"\[(?:\w{3} )?(?P<mon>\w{3}) +(?P<day>\d{1,2}) (?P<time>\d{2}:\d{2}:\d{2}) (?P<year>\d{4})\]"
)
_DEPLOY_LINE = re.compile(r"^(?P<hash>[0-9a-f]{6,40}) (?P<at>\S+) (?P<rest>.*)$")


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


# ---------------------------------------------------------------- time


def parse_time(value: Any) -> _dt.datetime | None:
    """An aware UTC datetime from an ISO 8601 string (Z, offsets, nanoseconds) or epoch seconds."""
    if isinstance(value, (int, float)):
        return times.instant_or_none(value)
    return times.find_instant(str(value)) if value else None


def line_time(line: str) -> _dt.datetime | None:
    """The timestamp at the start of a log line: ISO (journal short-iso, git) or `dmesg -T` style."""
    head = line[:64]
    stamp = times.find_instant(head)
    if stamp is not None:
        return stamp
    return times.find_ctime(head)  # `dmesg -T`: [Sat Nov 28 05:35:12 2026]


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
    """A derived JSON file of the bundle (findings.json, actions.json);
    None when absent, noted when unreadable."""
    data = bundle.read_file(name)  # the bundle's safe reader: never outside the folder, no symlink followed
    if data is None:
        return None
    try:
        loaded = json.loads(data.decode("utf-8", errors="replace"))
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


def build_timeline(
    bundle: Any, findings: Findings | None, actions: dict[str, Any] | None
) -> list[TimelineEvent]:
    """Alerts, deploys, first errors/OOMs, the collection, triage and each remediation step, in time order."""
    events: list[TimelineEvent] = []
    events += alert_events(bundle)
    events += deploy_events(bundle)
    events += log_events(bundle)
    events += collection_events(bundle.manifest)
    if findings is not None:
        at = parse_time(findings.generated)
        if at is not None:
            events.append(
                TimelineEvent(
                    at, "triage", f"Triage: severity {findings.severity}, {len(findings.findings)} finding(s)"
                )
            )
    events += action_events(actions)
    return _merge_hosts(sorted(events, key=lambda e: (e.at, _KIND_ORDER.get(e.kind, 99), e.text)))


_KIND_ORDER = {
    k: i
    for i, k in enumerate(
        ("deploy", "alert", "error", "oom", "collection", "triage", "plan", "approval", "apply", "verify")
    )
}


def _merge_hosts(events: list[TimelineEvent]) -> list[TimelineEvent]:
    """One line for the same event seen on many hosts (a 33-host fleet shows one deploy, not 33)."""
    merged: dict[tuple[Any, ...], TimelineEvent] = {}
    for event in events:
        key = (event.at, event.kind, event.text)
        if key in merged:
            prior = merged[key]
            hosts = tuple(dict.fromkeys(prior.hosts + event.hosts))
            merged[key] = TimelineEvent(
                prior.at, prior.kind, prior.text, hosts, prior.source, prior.approx, prior.probe
            )
        else:
            merged[key] = event
    return list(merged.values())


def _alerts_list(data: Any) -> list[dict[str, Any]]:
    """Alerts as Alertmanager's raw shape (startsAt, labels),
    from our monitoring doc or a raw v1/v2 answer."""
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
    return {
        "labels": labels,
        "annotations": notes,
        "startsAt": alert.get("starts_at"),
        "endsAt": alert.get("ends_at"),
        "status": {"state": alert.get("state")},
    }


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
        text = (
            f"Alert {alertname} firing"
            + (f" ({severity})" if severity else "")
            + (f": {summary}" if summary else "")
        )
        host = labels.get("instance") or labels.get("host")
        events.append(
            TimelineEvent(
                at, "alert", _clip(text), (str(host),) if host else (), _monitoring_path(bundle, name)
            )
        )
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
                events.append(
                    TimelineEvent(
                        at,
                        "deploy",
                        _clip(f"Deploy {match.group('hash')}: {match.group('rest')}"),
                        (host,),
                        _probe_path(bundle, host, probe),
                    )
                )
                count += 1
                if count >= _DEPLOYS_PER_HOST:
                    break
    return events


def _ok_text(bundle: Any, host: str, probe: str) -> str | None:
    try:
        text = bundle.text(host, probe)
    except (OSError, ValueError):
        return None
    return text if isinstance(text, str) else None


def log_events(bundle: Any) -> list[TimelineEvent]:
    """The first ERROR line and the first OOM line of each host's journal probes."""
    events = []
    for host in bundle.hosts:
        first_error = _first_line(bundle, host, _JOURNAL_PROBES, _ERROR_LINE)
        if first_error:
            at, line, probe, approx = first_error
            events.append(
                TimelineEvent(
                    at,
                    "error",
                    _clip(f"First error: {line}"),
                    (host,),
                    _probe_path(bundle, host, probe),
                    approx,
                    probe,
                )
            )
        first_oom = _first_line(bundle, host, _OOM_PROBES + _JOURNAL_PROBES, _OOM_LINE)
        if first_oom:
            at, line, probe, approx = first_oom
            events.append(
                TimelineEvent(
                    at,
                    "oom",
                    _clip(f"Out of memory: {line}"),
                    (host,),
                    _probe_path(bundle, host, probe),
                    approx,
                )
            )
    return events


def _first_line(
    bundle: Any, host: str, probes: Iterable[str], pattern: LinePattern
) -> tuple[_dt.datetime, str, str, bool] | None:
    """The first matching line of the first probe (in order) that has one;
    undated lines take the probe's start."""
    for probe in probes:
        text = _ok_text(bundle, host, probe)
        if not text:
            continue
        line = first_matching_line(text, pattern.regex, pattern.needles)
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
            text_line = text_line[len(host) + 1 :]
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
        return text[start : end if end >= 0 else len(text)]
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
        return line[match.end() :].strip()
    match_d = _DMESG_T.match(line)
    if match_d:
        return line[match_d.end() :].strip()
    return line


def collection_events(manifest: dict[str, Any]) -> list[TimelineEvent]:
    """When collection started and finished, and how the hosts came out."""
    events = []
    hosts = manifest.get("hosts") or {}
    started = parse_time(manifest.get("started"))
    if started:
        events.append(
            TimelineEvent(
                started,
                "collection",
                f"Evidence collection started ({manifest.get('pattern') or '?'}, {len(hosts)} hosts)",
            )
        )
    finished = parse_time(manifest.get("finished"))
    if finished:
        counts: dict[str, int] = {}
        for entry in hosts.values():
            status = (entry or {}).get("status", "?")
            counts[status] = counts.get(status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        verb = "interrupted" if manifest.get("interrupted") else "finished"
        events.append(
            TimelineEvent(finished, "collection", f"Evidence collection {verb} ({summary or 'no hosts'})")
        )
    return events


def action_events(actions: dict[str, Any] | None) -> list[TimelineEvent]:
    """Each remediation: requested, approved (or break-glass), applied, verified."""
    events: list[TimelineEvent] = []
    for action in (actions or {}).get("actions") or []:
        name = str(action.get("action", "action"))
        hosts = tuple(sorted((action.get("hosts") or {}).keys()))
        requested = parse_time(action.get("requested"))
        if requested:
            events.append(
                TimelineEvent(
                    requested, "plan", f"Plan {name} requested by {action.get('requester') or '?'}", hosts
                )
            )
        approved = parse_time(action.get("approved"))
        if action.get("break_glass"):
            events.append(
                TimelineEvent(
                    approved or requested or _EPOCH,
                    "approval",
                    f"BREAK-GLASS for {name} by {action.get('approver') or action.get('requester') or '?'}: "
                    f"{action['break_glass']}",
                    hosts,
                )
            )
        elif approved:
            events.append(
                TimelineEvent(
                    approved, "approval", f"Plan {name} approved by {action.get('approver') or '?'}", hosts
                )
            )
        start = parse_time(action.get("applied_started"))
        if start:
            events.append(
                TimelineEvent(start, "apply", f"Applying {name}{_params_text(action.get('params'))}", hosts)
            )
        end = parse_time(action.get("applied_finished"))
        if end:
            events.append(TimelineEvent(end, "apply", f"Applied {name}: {_host_results_text(action)}", hosts))
        verify = action.get("verify")
        if isinstance(verify, dict) and (end or start):
            events.append(
                TimelineEvent(end or start or _EPOCH, "verify", f"Verification {_verify_text(verify)}", hosts)
            )
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
        parts.append(
            f"{host} {status}" + (" (changed)" if res.get("changed") and status != "changed" else "")
        )
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


_BYSTANDER_LINES = 3


def collapse_bystanders(timeline: list[TimelineEvent], affected: list[str]) -> list[TimelineEvent]:
    """Keep a 33-host timeline readable:
    first errors of hosts no finding names fold into one line past a few."""
    if not affected:
        return timeline
    bystanders = [e for e in timeline if e.kind == "error" and not set(e.hosts) & set(affected)]
    if len(bystanders) <= _BYSTANDER_LINES:
        return timeline
    first = bystanders[0]
    hosts = tuple(dict.fromkeys(h for e in bystanders for h in e.hosts))
    summary = TimelineEvent(
        first.at,
        "error",
        _clip(
            f"First errors on {len(hosts)} hosts no finding names "
            f"(earliest shown): {first.text.removeprefix('First error: ')}"
        ),
        hosts,
        first.source,
        first.approx,
        first.probe,
    )
    dropped = {id(e) for e in bystanders}
    out = [e for e in timeline if id(e) not in dropped]
    out.append(summary)
    return sorted(out, key=lambda e: (e.at, _KIND_ORDER.get(e.kind, 99), e.text))


def _incident_start(
    timeline: list[TimelineEvent], affected: list[str], about_memory: bool
) -> _dt.datetime | None:
    """When the symptoms the findings describe began: the first alert, or first error on an affected host.

    OOM lines count only when a finding is about memory: dmesg can hold days-old kills (and in
    containers the whole machine's), which must not stretch the incident.
    """

    def on_affected(event: TimelineEvent) -> bool:
        return not affected or bool(set(event.hosts) & set(affected))

    strong = [
        e.at
        for e in timeline
        if e.kind == "alert"
        or (e.kind == "error" and e.probe == _JOURNAL_PROBES[0] and on_affected(e))
        or (e.kind == "oom" and about_memory and on_affected(e))
    ]
    if strong:
        return min(strong)
    # No alert and no service-log error: any unit's error on an affected host is the best we have.
    weak = [e.at for e in timeline if e.kind == "error" and on_affected(e)]
    return min(weak) if weak else None
