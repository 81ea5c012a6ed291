"""Everything a report shows, computed once from a bundle (findings, actions, timeline, figures): `build`."""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector import __version__
from collector.report.figures import (
    _PAIRS,
    FIGURES,
    Chart,
    FigureRow,
    _figure_spec,
    charts,
    figure_rows,
    fmt_figure,
    load_figures,
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

SEVERITY_ORDER = ("P0", "P1", "P2", "P3", "none")

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


