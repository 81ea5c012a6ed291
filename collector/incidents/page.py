"""The incidents page `collector serve` shows at `/`: open and recent incidents, server-rendered, no external
assets.

    /                                        open incidents, then the recent resolved and closed ones
    /incidents/{id}                          one incident: clocks, alerts, evidence, timeline
    /incidents/{id}/bundles/{n}/report.html  the report of the incident's n-th bundle (read from the bundle)

No script, no web font, no request to anywhere else: every style is inline, the page refreshes itself every
30 s with a meta tag, and a Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from collector.core import INCIDENT_ACTIVE_STATES, SEVERITIES, Incident
from collector.incidents.lifecycle import (
    ESCALATION_REASONS,
    active_silences,
    alert_labels,
    events_of,
    next_deadline,
)
from collector.paths import resource
from collector.times import iso_z, parse_instant

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from collector.config import Settings
    from collector.incidents.store import Event, IncidentStore

REFRESH_S = 30
RECENT = 30  # resolved/closed incidents shown under the open ones
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Link:
    label: str
    href: str | None  # None: no report yet


@dataclass(frozen=True)
class Row:
    """One incident as the page shows it."""

    id: str
    title: str
    severity: str
    sev_class: str
    state: str
    commander: str
    opened_at: str
    age: str
    deadline: str  # "acknowledge in 4m", "status update OVERDUE 3m", or ""
    overdue: bool
    hosts: str
    reports: tuple[Link, ...]
    ticket: str
    alerts: int
    notes: tuple[str, ...] = ()  # escalations made, silences, a failed collection: what to know at a glance


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def report_links(incident: Incident) -> tuple[Link, ...]:
    """A link to each bundle's report.html (a bundle without one yet is named, not linked)."""
    from collector.bundle import Bundle  # the bundle step owns the layout and its safe reads

    links = []
    for n, folder in enumerate(incident.bundles):
        name = Path(folder).name
        try:
            has_report = Bundle.open(Path(folder)).exists("report.html")
        except Exception:  # noqa: BLE001 - a moved or unreadable bundle is shown as such, not a broken page
            has_report = False
        links.append(Link(name, f"/incidents/{incident.id}/bundles/{n}/report.html" if has_report else None))
    return tuple(links)


def notes(events: Sequence[Event]) -> tuple[str, ...]:
    """Escalations made, Alertmanager silences, the newest collection's failure."""
    out = [
        f"escalated: {ESCALATION_REASONS.get(str((e.detail or {}).get('reason')), 'yes')}"
        for e in events
        if e.kind == "escalated"
    ]
    if active_silences(events):
        out.append("alerts silenced")
    collections = [e for e in events if e.kind in ("collected", "collect-failed", "collect-interrupted")]
    if collections and collections[-1].kind != "collected":
        out.append(f"collection {collections[-1].kind.split('-', 1)[1]}")
    return tuple(out)


def row(store: IncidentStore, incident: Incident, now: _dt.datetime) -> Row:
    events = events_of(store, incident.id)
    deadline = next_deadline(incident, events, now)
    text, overdue = "", False
    if deadline is not None:
        left = (deadline.at - now).total_seconds()
        overdue = left < 0
        text = (
            f"{deadline.what} OVERDUE {_duration(-left)}"
            if overdue
            else f"{deadline.what} in {_duration(left)}"
        )
    severity = incident.severity or "?"
    end = incident.closed_at or incident.resolved_at
    age = _duration(
        ((parse_instant(end) if end else now) - parse_instant(incident.opened_at)).total_seconds()
    )
    return Row(
        id=incident.id,
        title=incident.title,
        severity=severity,
        sev_class=f"sev-{severity.lower()}" if severity in SEVERITIES else "sev-unknown",
        state=incident.state,
        commander=incident.commander or "",
        opened_at=incident.opened_at,
        age=age,
        deadline=text,
        overdue=overdue,
        hosts=", ".join(incident.hosts),
        reports=report_links(incident),
        ticket=incident.ticket or "",
        alerts=incident.alerts,
        notes=notes(events),
    )


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource("reports"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(store: IncidentStore, now: _dt.datetime | None = None, recent: int = RECENT) -> str:
    """The incidents page (HTML) from the store: active incidents by severity, then the recent others."""
    moment = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    found: Any = store.list(INCIDENT_ACTIVE_STATES, limit=500)
    active = sorted(
        found, key=lambda i: (SEVERITIES.index(i.severity) if i.severity in SEVERITIES else 1, i.opened_at)
    )
    others: Any = store.list(("resolved", "closed"), limit=recent)
    return (
        _environment()
        .get_template("incidents.html.j2")
        .render(
            view="list",
            now=iso_z(moment),
            refresh_s=REFRESH_S,
            active=[row(store, i, moment) for i in active],
            recent=[row(store, i, moment) for i in others],
        )
    )


def render_incident(store: IncidentStore, incident_id: str, now: _dt.datetime | None = None) -> str | None:
    """One incident's page, or None when there is no such incident."""
    incident = store.get(incident_id)
    if incident is None:
        return None
    moment = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    events = events_of(store, incident_id)
    timeline = [
        {"at": e.at, "kind": e.kind, "actor": e.actor or "", "detail": _detail_text(e.kind, e.detail)}
        for e in events
    ]
    return (
        _environment()
        .get_template("incidents.html.j2")
        .render(
            view="incident",
            now=iso_z(moment),
            refresh_s=REFRESH_S,
            r=row(store, incident, moment),
            incident=incident,
            timeline=timeline,
            alerts=alert_labels(store, incident_id),
            silences=active_silences(events),
        )
    )


def _detail_text(kind: str, detail: dict[str, Any] | None) -> str:
    """A short human line for a timeline event's detail."""
    if not detail:
        return ""
    if kind == "escalated":
        return (
            f"{ESCALATION_REASONS.get(str(detail.get('reason')), detail.get('reason'))} → "
            f"{', '.join(detail.get('contacts') or []) or 'no contact configured'}"
        )
    if kind == "update-sent":
        sent = detail.get("channels") or {}
        where = ", ".join(f"{k}: {v}" for k, v in sent.items()) or "no channel"
        return f"{detail.get('stage')} ({where})" + (
            f": {detail['message']}" if detail.get("message") else ""
        )
    keys = (
        "commander",
        "reason",
        "flag",
        "why",
        "text",
        "severity",
        "bundle",
        "passed",
        "plan",
        "command",
        "ids",
        "error",
        "by",
    )
    return "; ".join(f"{k}: {_plain(detail[k])}" for k in keys if detail.get(k) not in (None, "", [], {}))[
        :400
    ]


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def bundle_report(store: IncidentStore, incident_id: str, index: int) -> bytes | None:
    """The report.html of the incident's `index`-th bundle, read through the bundle (no path leaves it)."""
    from collector.bundle import Bundle

    incident = store.get(incident_id)
    if incident is None or not 0 <= index < len(incident.bundles):
        return None
    try:
        data: bytes | None = Bundle.open(Path(incident.bundles[index])).read_file("report.html")
    except Exception:  # noqa: BLE001 - a vanished bundle is a 404, not a 500
        return None
    return data


def routes(store: IncidentStore, settings: Settings | None = None) -> list[BaseRoute]:
    """The page's Starlette routes (collector serve mounts them beside the webhook)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def index(request: Request) -> Response:
        return HTMLResponse(await run_in_threadpool(render_page, store), headers=HEADERS)

    async def incident(request: Request) -> Response:
        text = await run_in_threadpool(render_incident, store, str(request.path_params["incident_id"]))
        if text is None:
            return PlainTextResponse("no such incident\n", status_code=404, headers=HEADERS)
        return HTMLResponse(text, headers=HEADERS)

    async def report(request: Request) -> Response:
        data = await run_in_threadpool(
            bundle_report, store, str(request.path_params["incident_id"]), int(request.path_params["index"])
        )
        if data is None:
            return PlainTextResponse("no report for this bundle yet\n", status_code=404, headers=HEADERS)
        return Response(data, media_type="text/html; charset=utf-8", headers=HEADERS)

    return [
        Route("/", index, methods=["GET"]),
        Route("/incidents/{incident_id}", incident, methods=["GET"]),
        Route("/incidents/{incident_id}/bundles/{index:int}/report.html", report, methods=["GET"]),
    ]
