"""Everything a report shows, computed once from a bundle (findings, actions, timeline, figures): `build`."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector import __version__
from collector.core import (
    NO_SEVERITY,
    SEVERITIES,
    SEVERITY_MEANING,
    ActionRecord,
    Evidence,
    Finding,
    Findings,
    Incident,
    IncidentSummary,
    MitigationSuggestion,
    UsageError,
)
from collector.core import severity_rank as _core_rank
from collector.report.figures import (
    _PAIRS,
    FIGURES,
    Chart,
    FigureRow,
    _figure_spec,
    charts,
    figure_rows,
    fmt_figure,
)
from collector.report.timeline import (
    _DEPLOY_SUSPECT_S,
    TimelineEvent,
    _clip,
    _host_probes,
    _host_results_text,
    _incident_start,
    _params_text,
    _read_json,
    _verify_text,
    build_timeline,
    collapse_bystanders,
    fmt_duration,
    fmt_time,
    parse_time,
)
from collector.triage import read_findings

SEVERITY_ORDER: tuple[str, ...] = (*SEVERITIES, NO_SEVERITY)  # the scale lives in collector.core

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


# The runbook's post-mortem: held and published within 48 hours of resolution.
POST_MORTEM_WITHIN = _dt.timedelta(hours=48)
# The runbook's lessons-learned prompts, for the post-mortem to answer.
LESSON_PROMPTS: tuple[str, ...] = ("What went well", "What went wrong", "Where we got lucky")
# Key figures that speak of capacity (the fourth stock action item names those that crossed a threshold).
_CAPACITY_FIGURES = (
    "pg_connections",
    "mem_used_pct",
    "disk_max_pct",
    "redis_used_memory",
    "cpu_busy_pct",
    "load_per_core",
    "io_util_max_pct",
)


@dataclass(frozen=True)
class Milestone:
    """One of the runbook's timeline milestones: when it happened ("unknown" when the evidence does not
    say) and what marks it (or why it is not known)."""

    name: str  # Detected, Acknowledged, Investigating, Mitigated, Resolved
    when: str
    what: str

    @property
    def known(self) -> bool:
        return self.when != "unknown"


@dataclass(frozen=True)
class PostMortem:
    """The post-mortem meeting: within 48 h of resolution (`due`, None while unresolved), who, what."""

    due: str | None
    attendees: tuple[str, ...]
    agenda: tuple[tuple[str, str], ...]  # (item, what it covers)


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
    findings: list[FindingView]
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
    summary: IncidentSummary | None = (
        None  # what the header, TICKET.md, the ticket subject and comms say first
    )
    # The runbook's incident report template and status updates, each from the values above:
    date: str = "unknown"  # the day the incident began (YYYY-MM-DD)
    severity_meaning: str = ""  # "major degradation"
    response_time: str = ""  # "respond within 15 minutes"
    cause: str = ""  # the root cause in one line (the most severe finding, where)
    fix: str = ""  # what fixed it in one line (the applied remediations), or what is suggested
    milestones: list[Milestone] = field(default_factory=list)
    postmortem: PostMortem = field(default_factory=lambda: PostMortem(None, (), ()))
    lesson_prompts: tuple[str, ...] = LESSON_PROMPTS
    problems: list[str] = field(default_factory=list)  # side files we could not read, said in the report
    side_files: list[str] = field(default_factory=list)  # derived files present (findings.json, actions.json)


# ---------------------------------------------------------------- findings, actions, skeleton


def severity_rank(severity: Any) -> int:
    return _core_rank(str(severity))


@dataclass(frozen=True)
class EvidenceView:
    """A finding's evidence line as shown: `link` is the bundle-relative path when it is safe to link."""

    host: str
    probe: str
    path: str
    link: str | None
    line: int | None
    excerpt: str

    @classmethod
    def of(cls, ev: Evidence) -> EvidenceView:
        return cls(ev.host, ev.probe, ev.path, _safe_link(ev.path), ev.line, ev.excerpt)


@dataclass(frozen=True)
class FindingView:
    """A finding as the report shows it: where in words, the ready command, linkable evidence."""

    id: str
    rule: str
    title: str
    severity: str
    scenario: str
    hosts: tuple[str, ...]
    message: str
    where: str
    evidence: tuple[EvidenceView, ...]
    mitigation: MitigationSuggestion | None
    command: str
    alternatives: tuple[str, ...]
    basis: str = ""  # now | earlier in the window (recovered or context)
    context: tuple[str, ...] = ()  # the earlier findings that explain this one, as "title (rule)"

    @classmethod
    def of(cls, f: Finding, titles: dict[str, str] | None = None) -> FindingView:
        last = f" (last at {f.last_seen[11:16]} UTC)" if f.last_seen else ""
        basis = (
            "live: the state now"
            if f.basis == "live"
            else f"history, recovered: earlier in the window{last}"
            if f.recovered
            else f"history: log lines in the window{last}"
            if f.basis == "history"
            else ""
        )
        return cls(
            id=f.id,
            rule=f.rule,
            title=f.title,
            severity=f.severity,
            scenario=f.scenario,
            hosts=f.hosts,
            message=f.message,
            where=", ".join("fleet-wide (monitoring)" if h == "monitoring" else h for h in f.hosts),
            evidence=tuple(EvidenceView.of(e) for e in f.evidence),
            mitigation=f.mitigation,
            command=f.mitigation.command if f.mitigation else "",
            alternatives=tuple(m.command for m in f.alternatives),
            basis=basis,
            context=tuple(f"{(titles or {}).get(c, c)} ({c})" for c in f.context),
        )


def _questions(findings: Findings | None) -> list[tuple[str, str, str]]:
    """The runbook's four step-2 questions as (question, answer, why)."""
    if findings is None:
        return []
    return [(question, a.answer, a.why) for question, a in findings.questions.items()]


def _unevaluated(findings: Findings | None) -> list[tuple[str, str]]:
    """(rule, title: why) for every rule triage could not evaluate."""
    return [
        (u.rule, f"{u.title}: {u.reason}" if u.title else u.reason)
        for u in (findings.unknown if findings else ())
    ]


def _safe_link(path: Any) -> str | None:
    """A bundle-relative link, never an absolute path or a URL (the report must not reach outside)."""
    if (
        not isinstance(path, str)
        or not path
        or path.startswith(("/", "\\"))
        or ":" in path
        or ".." in path.split("/")
    ):
        return None
    return path


def normalise_findings(findings: Findings | None) -> list[FindingView]:
    """Findings in triage's order (live first, by severity; then history), each with safe evidence links
    and its mitigation command."""
    titles = {f.id: f.title for f in (findings.findings if findings else ())}
    return [FindingView.of(f, titles) for f in (findings.findings if findings else ())]


def action_items(
    findings: list[FindingView], actions: list[dict[str, Any]], figures: list[FigureRow] | None = None
) -> list[dict[str, str]]:
    """The runbook's four stock action items (monitoring, the root-cause fix, the runbook, capacity) for the
    most severe finding, then each finding's mitigation (unless done) and prevention; owner and due date
    are left blank for the post-mortem to fill."""
    done = {str(a.get("action")) for a in actions if _action_succeeded(a)}
    items = _stock_items(findings, figures or [])
    seen: set[str] = {_prevention_for(findings[0])} if findings else set()
    for finding in findings:
        action = finding.mitigation.action if finding.mitigation else ""
        command = finding.command or action
        if action and action not in done and command not in seen:
            seen.add(command)
            items.append(
                {
                    "what": f"Mitigate “{finding.title}”: {command}",
                    "finding": finding.id,
                    "priority": finding.severity,
                    "owner": "",
                }
            )
        prevention = _prevention_for(finding)
        if prevention not in seen:
            seen.add(prevention)
            items.append(
                {
                    "what": f"Prevent recurrence of “{finding.title}”: {prevention}",
                    "finding": finding.id,
                    "priority": finding.severity,
                    "owner": "",
                }
            )
    return items


def _stock_items(findings: list[FindingView], figures: list[FigureRow]) -> list[dict[str, str]]:
    """The runbook's four action items, filled with this incident's cause, scenario and strained figures."""
    top = findings[0] if findings else None
    cause = f"“{top.title}”" if top else "the cause named in the post-mortem"
    scenario = f"the “{top.scenario}” scenario" if top and top.scenario else f"the scenario of {cause}"
    strained = [
        f"{row.label} {row.value} on {row.host or 'the fleet'}"
        for row in figures
        if row.bad and row.key in _CAPACITY_FIGURES
    ]
    capacity = (
        "; ".join(strained)
        if strained
        else f"headroom on {', '.join(top.hosts)}"
        if top and top.hosts
        else "headroom of every tier"
    )
    texts = (
        f"Add monitoring: an alert on {cause} that fires before users notice it",
        "Fix the root cause (the mitigation only bought time): "
        + (_prevention_for(top) if top else "find it in the post-mortem (5 whys)"),
        f"Update the runbook: {scenario}, with what this incident taught (signals, commands, timings)",
        f"Review capacity planning: {capacity}",
    )
    priority = top.severity if top else "—"
    return [{"what": t, "finding": top.id if top else "", "priority": priority, "owner": ""} for t in texts]


def _prevention_for(finding: FindingView) -> str:
    haystack = f"{finding.scenario} {finding.id} {finding.title}".lower()
    for needle, text in _PREVENTION:
        if needle in haystack:
            return text
    return "Find the root cause and add an alert that would have caught it earlier."


def _action_succeeded(action: dict[str, Any]) -> bool:
    verify = action.get("verify")
    hosts_ok = all((r or {}).get("status") in ("ok", "changed") for r in (action.get("hosts") or {}).values())
    return bool(hosts_ok and not action.get("stopped") and isinstance(verify, dict) and verify.get("passed"))


def action_records(doc: dict[str, Any] | None, problems: list[str]) -> dict[str, Any] | None:
    """actions.json with each record read as remediate's ActionRecord (its one from_dict) and written back
    whole; a record that is not one is left out, and the report says so."""
    if doc is None:
        return None
    records = []
    for raw in doc.get("actions") or []:
        try:
            records.append(ActionRecord.from_dict(raw, "actions.json record").to_dict())
        except UsageError as exc:
            problems.append(f"{exc}; it is left out of this report")
    return {**doc, "actions": records}


def normalise_actions(actions: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The remediations in the order they were applied, with display strings."""
    out = []
    for action in (actions or {}).get("actions") or []:
        if not isinstance(action, dict):
            continue
        verify = action.get("verify") if isinstance(action.get("verify"), dict) else None
        out.append(
            {
                **action,
                "name": str(action.get("action") or "action"),
                "params_text": _params_text(action.get("params")).strip(" ()"),
                "results_text": _host_results_text(action),
                "host_results": [
                    (h, _host_result((action.get("hosts") or {})[h]))
                    for h in sorted(action.get("hosts") or {})
                ],
                "verify_text": _verify_text(verify) if verify else "not run",
                "verify_checks": [_check(c) for c in (verify or {}).get("checks") or []],
                "succeeded": _action_succeeded(action),
                "requested_text": fmt_time(parse_time(action.get("requested"))),
                "approved_text": fmt_time(parse_time(action.get("approved"))),
                "applied_text": fmt_time(
                    parse_time(action.get("applied_finished") or action.get("applied_started"))
                ),
            }
        )
    return sorted(out, key=lambda a: str(a.get("applied_started") or a.get("requested") or ""))


def _host_result(result: Any) -> dict[str, Any]:
    """One host's apply result with the fields the templates show
    (the record is remediate's, not typed here)."""
    res = result if isinstance(result, dict) else {}
    return {
        "status": str(res.get("status") or "?"),
        "changed": bool(res.get("changed")),
        "msg": str(res.get("msg") or ""),
    }


def _check(check: Any) -> dict[str, Any]:
    """One verification check with the fields the templates show."""
    c = check if isinstance(check, dict) else {}
    return {
        "name": str(c.get("name") or "?"),
        "host": str(c.get("host") or ""),
        "passed": bool(c.get("passed")),
        # verify's unknown (no data) is shown as such: not a pass, and not a measured failure either
        "result": "UNKNOWN" if c.get("status") == "unknown" else ("pass" if c.get("passed") else "FAIL"),
        "detail": str(c.get("detail") or ""),
    }


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
                before, after = (
                    before if isinstance(before, dict) else {},
                    after if isinstance(after, dict) else {},
                )
                changes = [
                    (h, before.get(h), after.get(h))
                    for h in sorted(set(before) | set(after))
                    if before.get(h) != after.get(h)
                ]
                changes.sort(key=lambda c: -_delta(c[1], c[2]))
                for host, b, a in changes[:_BEFORE_AFTER_HOSTS]:
                    rows.append(
                        {
                            "action": action["name"],
                            "figure": f"{label} ({host})",
                            "before": fmt_figure(unit, b),
                            "after": fmt_figure(unit, a),
                        }
                    )
            elif before is not None or after is not None:
                rows.append(
                    {
                        "action": action["name"],
                        "figure": label,
                        "before": fmt_figure(unit, before),
                        "after": fmt_figure(unit, after),
                    }
                )
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
        bad = [
            (n, str((p or {}).get("status")))
            for n, p in probes.items()
            if (p or {}).get("status") in ("failed", "timeout")
        ]
        rows.append(
            {
                "host": host,
                "status": str(entry.get("status") or "?"),
                "error": entry.get("error") or "",
                "roles": ", ".join(entry.get("roles") or []),
                "probes": probes,
                "ok": sum(1 for p in probes.values() if (p or {}).get("status") == "ok"),
                "total": len(probes),
                "bad": bad,
                "other": [
                    (n, str((p or {}).get("status")))
                    for n, p in probes.items()
                    if (p or {}).get("status") in ("not_found", "skipped")
                ],
            }
        )
    return probe_names, rows


def build(bundle: Any, incident: Incident | None = None) -> ReportData:
    """Gather every value the templates need from an opened bundle (and, for serve's comms, the incident
    it was collected for: its opening, acknowledgement and resolution times)."""
    manifest = bundle.manifest
    problems: list[str] = []
    triaged = read_findings(bundle)  # strict: another schema or a missing field stops the report, loudly
    actions_doc = action_records(_read_json(bundle, "actions.json", problems), problems)
    findings = normalise_findings(triaged)
    actions = normalise_actions(actions_doc)
    probe_names, host_rows = host_matrix(bundle)
    hosts = list(bundle.hosts)
    affected = _affected(findings, host_rows)
    questions = _questions(triaged)
    summary = IncidentSummary.of(str(manifest.get("incident") or Path(bundle.path).name), triaged)
    timeline = collapse_bystanders(build_timeline(bundle, triaged, actions_doc), affected)
    # The key figures as triage computed and stored them; none before triage has run.
    figures = triaged.figures.to_dict() if triaged else {}
    figures_note = None if triaged else "key figures come from triage, which has not run on this bundle"

    collection_start = parse_time(manifest.get("started"))
    collection_end = parse_time(manifest.get("finished"))
    started_at = _incident_start(timeline, affected, _about_memory(findings)) or collection_start
    opened_at = parse_time(incident.opened_at) if incident else None
    if opened_at and (started_at is None or opened_at < started_at):
        started_at = opened_at  # the incident's alert came before anything the bundle saw
    resolved_at = _resolved_at(actions) or (parse_time(incident.resolved_at) if incident else None)
    end_at = resolved_at or collection_end
    duration = (end_at - started_at).total_seconds() if started_at and end_at else None

    data = ReportData(
        incident=str(manifest.get("incident") or Path(bundle.path).name),
        bundle_path=str(Path(bundle.path)),
        tool_version=str(manifest.get("tool_version") or __version__),
        manifest=manifest,
        severity=summary.severity,
        severity_known=summary.triaged,
        title=summary.headline,
        impact=summary.impact or f"{len(affected)} of {len(hosts)} hosts affected",
        questions=questions,
        security=summary.security,
        hosts=hosts,
        hosts_affected=affected,
        host_rows=host_rows,
        probe_names=probe_names,
        findings=findings,
        unevaluated=_unevaluated(triaged),
        figures=figure_rows(figures),
        figures_note=figures_note,
        charts=charts(bundle),
        timeline=timeline,
        actions=actions,
        before_after=before_after_rows(actions),
        action_items=action_items(findings, actions, figure_rows(figures)),
        root_cause=_root_cause(findings),
        resolution=_resolution(actions),
        lessons=_lessons(timeline, started_at, collection_start, resolved_at),
        started=fmt_time(started_at),
        detected=fmt_time(collection_start),
        resolved=fmt_time(resolved_at) if resolved_at else None,
        duration=fmt_duration(duration) + ("" if resolved_at else " (ongoing at collection end)"),
        collection={
            "started": fmt_time(collection_start),
            "finished": fmt_time(collection_end),
            "pattern": str(manifest.get("pattern") or ""),
            "engine": str(manifest.get("engine") or ""),
            "inventory": str(manifest.get("inventory") or ""),
            "interrupted": "yes" if manifest.get("interrupted") else "no",
            "redacted": "no" if manifest.get("redacted") is False else "yes",
        },
        verification=_last_verification(actions),
        archive=f"{Path(bundle.path).name}.tar.gz",
        summary=summary,
        problems=problems,
        side_files=[n for n in ("findings.json", "actions.json") if bundle.exists(n)],
        date=started_at.strftime("%Y-%m-%d") if started_at else "unknown",
        severity_meaning=SEVERITY_MEANING.get(summary.severity, ""),
        response_time=summary.response_time,
        cause=_cause(findings, triaged),
        fix=_fix(findings, actions),
        milestones=milestones(timeline, actions, manifest, resolved_at, incident),
        postmortem=post_mortem(resolved_at, host_rows, affected, actions, findings),
    )
    return data


def _cause(findings: list[FindingView], triaged: Findings | None) -> str:
    """The root cause in one line: the most severe finding and where (triage orders live causes first)."""
    if triaged is None:
        return "not known yet: triage has not run on the evidence"
    if not findings:
        return "not identified: nothing crossed the runbook's thresholds"
    top = findings[0]
    return (
        top.title
        + (f" on {top.where}" if top.where else "")
        + (f" (runbook scenario “{top.scenario}”)" if top.scenario else "")
    )


def _where(action: dict[str, Any]) -> str:
    """`kill-idle-connections (minutes=5) on db1`: a remediation, its parameters and its hosts."""
    hosts = [h for h, _ in action["host_results"]]
    return (
        str(action["name"])
        + (f" ({action['params_text']})" if action["params_text"] else "")
        + (f" on {', '.join(hosts)}" if hosts else "")
    )


def _fix(findings: list[FindingView], actions: list[dict[str, Any]]) -> str:
    """What fixed it in one line: each applied remediation and whether verification passed."""
    if actions:
        return "; ".join(
            _where(a) + (", verified" if a["succeeded"] else ", not verified yet") for a in actions
        )
    command = next((f.command for f in findings if f.command), "")
    return "none applied yet" + (f"; suggested: {command}" if command else "")


def milestones(
    timeline: list[TimelineEvent],
    actions: list[dict[str, Any]],
    manifest: dict[str, Any],
    resolved_at: _dt.datetime | None,
    incident: Incident | None = None,
) -> list[Milestone]:
    """The runbook's timeline milestones from the alerts, the collection, the remediations and (when known)
    the incident's own record; "unknown" where none of them says."""
    unknown = "unknown"
    alerts = [e for e in timeline if e.kind == "alert"]
    opened = parse_time(incident.opened_at) if incident else None
    if alerts and (opened is None or alerts[0].at <= opened):
        detected = Milestone("Detected", fmt_time(alerts[0].at), alerts[0].text)
    elif opened:
        detected = Milestone(
            "Detected", fmt_time(opened), f"incident {incident.id if incident else ''} opened"
        )
    else:
        detected = Milestone("Detected", unknown, "no alert in the evidence bundle")
    acked = parse_time(incident.acked_at) if incident else None
    acknowledged = (
        Milestone("Acknowledged", fmt_time(acked), f"by {incident.commander or 'the responder'}")
        if acked and incident
        else Milestone(
            "Acknowledged", unknown, "not in the evidence bundle (collector incident ack records it)"
        )
    )
    started = parse_time(manifest.get("started"))
    investigating = (
        Milestone(
            "Investigating", fmt_time(started), f"evidence collection started ({manifest.get('pattern')})"
        )
        if started
        else Milestone("Investigating", unknown, "the collection's start is not recorded")
    )
    applied = [a for a in actions if parse_time(a.get("applied_finished")) and _hosts_ok(a)]
    mitigated = (
        Milestone("Mitigated", applied[0]["applied_text"], f"{_where(applied[0])} applied")
        if applied
        else Milestone("Mitigated", unknown, "no mitigation applied yet")
    )
    if resolved_at and actions and actions[-1]["succeeded"]:
        resolved = Milestone("Resolved", fmt_time(resolved_at), f"verification {actions[-1]['verify_text']}")
    elif resolved_at:
        resolved = Milestone(
            "Resolved", fmt_time(resolved_at), "incident resolved (alerts cleared, step 5 passed)"
        )
    else:
        resolved = Milestone("Resolved", unknown, "not resolved yet")
    return [detected, acknowledged, investigating, mitigated, resolved]


def _hosts_ok(action: dict[str, Any]) -> bool:
    return all(res["status"] in ("ok", "changed") for _, res in action["host_results"]) and bool(
        action["host_results"]
    )


def post_mortem(
    resolved_at: _dt.datetime | None,
    host_rows: list[dict[str, Any]],
    affected: list[str],
    actions: list[dict[str, Any]],
    findings: list[FindingView],
) -> PostMortem:
    """The post-mortem meeting: due 48 h after resolution; the people an SRE would invite; the agenda."""
    roles = sorted(
        {
            role.strip()
            for r in host_rows
            if r["host"] in affected
            for role in r["roles"].split(",")
            if role.strip()
        }
    )
    actors: dict[str, list[str]] = {}
    for action in actions:
        for who, did in ((action.get("requester"), "requested"), (action.get("approver"), "approved")):
            if who and did not in actors.setdefault(str(who), []):
                actors[str(who)].append(did)
    attendees = [
        "incident commander",
        "on-call engineer(s)",
        "service owner(s)" + (f" of {', '.join(roles)}" if roles else ""),
    ]
    if actors:
        attendees.append(
            "who acted: " + ", ".join(f"{who} ({' and '.join(did)})" for who, did in actors.items())
        )
    top = findings[0].title if findings else "the symptom"
    agenda = (
        ("Timeline review", "the milestones and events above; where did the time between them go?"),
        ("Root cause analysis (5 whys)", f"from “{top}” down to a cause a fix removes"),
        ("Action items", "an owner and a due date for each TODO above"),
        ("Process improvements", "alerting, the runbook, comms and escalation"),
    )
    due = fmt_time(resolved_at + POST_MORTEM_WITHIN) if resolved_at else None
    return PostMortem(due, tuple(attendees), agenda)


def _about_memory(findings: list[FindingView]) -> bool:
    """Whether a finding is about memory (then old OOM kills may mark the incident's start)."""
    return any(re.search(r"oom|memory", f"{f.id} {f.scenario}", re.IGNORECASE) for f in findings)


def _affected(findings: list[FindingView], host_rows: list[dict[str, Any]]) -> list[str]:
    """Bundle hosts named by a finding (not the `monitoring` pseudo-host),
    else hosts that did not come back ok."""
    known = {r["host"] for r in host_rows}
    named = list(dict.fromkeys(h for f in findings for h in f.hosts if h in known))
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


def _root_cause(findings: list[FindingView]) -> list[str]:
    if not findings:
        return ["Not known yet: no triage findings in this bundle (run `collector triage`)."]
    top = findings[0]
    lines = [
        f"Most severe finding: {top.title} ({top.severity})"
        + (f", runbook scenario “{top.scenario}”" if top.scenario else "")
        + (f" on {', '.join(top.hosts)}" if top.hosts else "")
        + "."
    ]
    if top.evidence:
        ev = top.evidence[0]
        lines.append(
            f"Evidence: {ev.path or ev.probe}"
            + (f" line {ev.line}" if ev.line is not None else "")
            + (f": {_clip(ev.excerpt, 160)}" if ev.excerpt else "")
        )
    for other in findings[1:4]:
        lines.append(f"Also seen: {other.title} ({other.severity}).")
    lines.append("To be confirmed in the post-mortem (five whys).")
    return lines


def _resolution(actions: list[dict[str, Any]]) -> list[str]:
    if not actions:
        return ["No remediation recorded in this bundle yet."]
    lines = []
    for action in actions:
        approval = (
            f"BREAK-GLASS ({action['break_glass']})"
            if action.get("break_glass")
            else f"approved by {action.get('approver') or '?'}"
        )
        lines.append(
            f"{action['name']}"
            + (f" ({action['params_text']})" if action["params_text"] else "")
            + f", requested by {action.get('requester') or '?'}, {approval}; "
            + f"result: {action['results_text']}; verification {action['verify_text']}."
        )
    return lines


def _lessons(
    timeline: list[TimelineEvent],
    started: _dt.datetime | None,
    collected: _dt.datetime | None,
    resolved: _dt.datetime | None,
) -> list[str]:
    lines = []
    if started and collected:
        lines.append(
            f"Time from first sign of trouble to evidence collection: "
            f"{fmt_duration((collected - started).total_seconds())}."
        )
    if started and resolved:
        lines.append(f"Time to recovery: {fmt_duration((resolved - started).total_seconds())}.")
    deploys = [e for e in timeline if e.kind == "deploy" and started and e.at <= started]
    if deploys and started and (started - deploys[-1].at).total_seconds() <= _DEPLOY_SUSPECT_S:
        lines.append(
            "A deploy preceded the first error by "
            f"{fmt_duration((started - deploys[-1].at).total_seconds())}: "
            "was it the trigger?"
        )
    return lines
