"""`collector incident list|show|ack|assign|update|resolve|close|tick`: argument parsing and printing only.

The rules (who commands, deadlines, silences, when an incident may resolve or close) live in
collector.incidents.lifecycle; the texts and channels in collector.incidents.notify.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import sys
from typing import Any

import click

from collector.config import Settings, load_settings
from collector.core import EXIT_PARTIAL, Incident, UsageError
from collector.times import iso_z, parse_instant


def _settings(db: str | None) -> Settings:
    return load_settings(incidents_db=db) if db else load_settings()


def _store(settings: Settings) -> Any:
    from collector.incidents.store import IncidentStore

    return IncidentStore(settings.incidents_db or None)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _age(since: str, now: _dt.datetime) -> str:
    seconds = max(0, int((now - parse_instant(since)).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def _in(moment: _dt.datetime, now: _dt.datetime) -> str:
    delta = int((moment - now).total_seconds())
    return f"in {delta // 60}m" if delta >= 0 else f"OVERDUE {-delta // 60}m"


db_option = click.option(
    "--db",
    help="Incidents database: a SQLite path or postgresql:// URL "
    "(default: the incidents_db setting, COLLECTOR_INCIDENTS_DB).",
)
by_option = click.option(
    "--by",
    "who",
    default=None,
    help="Who does this (default: the user setting, COLLECTOR_USER, else your login name).",
)


def _who(who: str | None, settings: Settings | None = None) -> str:
    return (who or (settings.user if settings else "") or getpass.getuser()).strip()


@click.group("incident")
def incident_group() -> None:
    """Incidents opened from Alertmanager: list, show, acknowledge, assign, update, resolve, close."""


@incident_group.command("list")
@db_option
@click.option(
    "--all", "show_all", is_flag=True, help="Resolved and closed incidents too (else the active ones)."
)
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def list_command(db: str | None, show_all: bool, limit: int, as_json: bool) -> None:
    """The active incidents (or all), newest first, with their next deadline."""
    from collector.incidents.lifecycle import ACTIVE, events_of, next_deadline

    store = _store(_settings(db))
    now = _now()
    incidents = store.list(None if show_all else ACTIVE, limit=limit)
    if not incidents:
        click.echo("no incidents" if show_all else "no active incidents (--all shows the others)")
        return
    for inc in incidents:
        deadline = next_deadline(inc, events_of(store, inc.id), now)
        if as_json:
            row = inc.to_dict() | {
                "next_deadline": {"what": deadline.what, "at": iso_z(deadline.at)} if deadline else None
            }
            click.echo(json.dumps(row))
            continue
        due = f"{deadline.what} {_in(deadline.at, now)}" if deadline else "-"
        click.echo(
            f"{inc.id}  {inc.severity or '?':2}  {inc.state:12}  {_age(inc.opened_at, now):>6}  "
            f"{(inc.commander or '-')[:20]:20}  {due:28}  {inc.title}"
        )


@incident_group.command("show")
@click.argument("incident_id")
@db_option
@click.option("--json", "as_json", is_flag=True)
def show_command(incident_id: str, db: str | None, as_json: bool) -> None:
    """One incident: its clocks, alerts, evidence and timeline."""
    from collector.incidents.lifecycle import (
        ack_deadline,
        active_silences,
        alert_labels,
        events_of,
        get_incident,
        next_deadline,
        update_deadline,
    )

    store = _store(_settings(db))
    inc = get_incident(store, incident_id)
    events = events_of(store, incident_id)
    now = _now()
    if as_json:
        click.echo(
            json.dumps(
                inc.to_dict()
                | {"events": [e.to_dict() for e in events], "alerts": alert_labels(store, incident_id)},
                indent=2,
            )
        )
        return
    lines = [
        f"{inc.id}  [{inc.severity or '?'}] {inc.title}",
        f"state:      {inc.state} (opened {inc.opened_at}, {_age(inc.opened_at, now)} ago)",
        f"commander:  {inc.commander or 'not assigned'}",
    ]
    if not inc.acked_at and inc.active:
        lines.append(f"acknowledge by {iso_z(ack_deadline(inc))} ({_in(ack_deadline(inc), now)})")
    else:
        lines.append(f"acknowledged: {inc.acked_at or '-'}")
    update = update_deadline(inc, events)
    if update:
        lines.append(f"next update by {iso_z(update)} ({_in(update, now)})")
    deadline = next_deadline(inc, events, now)
    if deadline:
        lines.append(f"next deadline: {deadline.what} at {iso_z(deadline.at)} ({_in(deadline.at, now)})")
    for label, value in (
        ("resolved", inc.resolved_at),
        ("closed", inc.closed_at),
        ("ticket", inc.ticket),
        ("plan", inc.plan),
    ):
        if value:
            lines.append(f"{label + ':':11} {value}")
    lines.append(f"hosts:      {', '.join(inc.hosts) or '-'}")
    silences = active_silences(events)
    if silences:
        lines.append(f"silences:   {', '.join(silences)}")
    lines.append("bundles:")
    lines += [f"  {b}" for b in inc.bundles] or ["  (none yet)"]
    lines.append("alerts:")
    lines += [
        f"  {', '.join(f'{k}={v}' for k, v in sorted(a.items()))}" for a in alert_labels(store, incident_id)
    ] or ["  (none recorded)"]
    lines.append("timeline:")
    for e in events:
        detail = ""
        if e.detail:
            detail = "  " + "; ".join(
                f"{k}={v}"
                for k, v in e.detail.items()
                if k
                in (
                    "stage",
                    "reason",
                    "commander",
                    "flag",
                    "why",
                    "ids",
                    "channels",
                    "message",
                    "passed",
                    "to",
                    "bundle",
                    "severity",
                )
            )
        lines.append(f"  {e.at}  {e.kind:14} {e.actor or '':12}{detail}".rstrip())
    click.echo("\n".join(lines))


@incident_group.command("ack")
@click.argument("incident_id")
@db_option
@by_option
@click.option("--no-silence", is_flag=True, help="Do not silence the incident's alerts in Alertmanager.")
@click.option(
    "--alertmanager", "alertmanager_url", help="Alertmanager URL (default: the alertmanager_url setting)."
)
def ack_command(
    incident_id: str, db: str | None, who: str | None, no_silence: bool, alertmanager_url: str | None
) -> None:
    """Acknowledge: you take it (P2/P3: you command it) and its alerts are silenced until it resolves."""
    from collector.incidents.lifecycle import AlertmanagerError, acknowledge, load_people

    settings = _settings(db)
    url = None if no_silence else (alertmanager_url or settings.alertmanager_url)
    try:
        inc, ids = acknowledge(
            _store(settings), incident_id, _who(who, settings), people=load_people(), alertmanager_url=url
        )
    except AlertmanagerError as exc:
        click.echo(f"{incident_id} acknowledged, but the silence failed: {exc}", err=True)
        sys.exit(EXIT_PARTIAL)
    click.echo(
        f"{inc.id} acknowledged by {_who(who, settings)} at {inc.acked_at}; commander: {inc.commander or '-'}"
    )
    for silence in ids:
        click.echo(f"silenced in Alertmanager: {silence} (expires when the incident resolves)")


@incident_group.command("assign")
@click.argument("incident_id")
@click.argument("commander")
@db_option
@by_option
def assign_command(incident_id: str, commander: str, db: str | None, who: str | None) -> None:
    """Make COMMANDER the incident commander."""
    from collector.incidents.lifecycle import assign

    if not commander.strip():
        raise UsageError("the commander's name is empty")
    settings = _settings(db)
    inc = assign(_store(settings), incident_id, commander.strip(), _who(who, settings))
    click.echo(f"{inc.id} commander: {inc.commander}")


@incident_group.command("update")
@click.argument("incident_id")
@db_option
@by_option
@click.option("-m", "--message", help="The status update to send (e-mail, chat, ticket note).")
@click.option("--severity", type=click.Choice(["P0", "P1", "P2", "P3"]), help="Change the severity.")
@click.option("--mitigating", is_flag=True, help="A fix is being applied: the mitigation update goes out.")
@click.option("--data-loss", is_flag=True, help="Data loss suspected: escalate at once.")
@click.option("--security", is_flag=True, help="Security breach suspected: escalate at once.")
@click.option("--cross-system", is_flag=True, help="Other systems are affected: escalate at once.")
@click.option("--expertise", is_flag=True, help="Need additional expertise: escalate at once.")
def update_command(
    incident_id: str,
    db: str | None,
    who: str | None,
    message: str | None,
    severity: str | None,
    mitigating: bool,
    data_loss: bool,
    security: bool,
    cross_system: bool,
    expertise: bool,
) -> None:
    """Send a status update and/or raise what the runbook escalates on; resets the update clock."""
    from collector.incidents.lifecycle import post_update

    flags = [
        name
        for name, on in (
            ("data-loss", data_loss),
            ("security", security),
            ("cross-system", cross_system),
            ("expertise", expertise),
        )
        if on
    ]
    if not (message or severity or mitigating or flags):
        raise UsageError(
            "nothing to update: give --message, --severity, --mitigating or a flag (--security ...)"
        )
    settings = _settings(db)
    _, results = post_update(
        _store(settings),
        incident_id,
        _who(who, settings),
        settings,
        message=message,
        severity=severity,
        mitigating=mitigating,
        flags=flags,
    )
    for line in results:
        click.echo(line)
    if any("failed" in line for line in results):
        sys.exit(EXIT_PARTIAL)


@incident_group.command("resolve")
@click.argument("incident_id")
@db_option
@by_option
@click.option(
    "--verify",
    "run_verify",
    is_flag=True,
    help="Run the step-5 checklist on the incident's hosts now (else the last verify must have passed).",
)
@click.option("-i", "--inventory", help="Inventory for --verify.")
def resolve_command(
    incident_id: str, db: str | None, who: str | None, run_verify: bool, inventory: str | None
) -> None:
    """Resolve: only when the step-5 checklist passed; expires the incident's silences,
    sends the resolved update."""
    from collector.incidents.lifecycle import events_of, get_incident, resolve, tick, verified

    settings = load_settings(**{k: v for k, v in (("incidents_db", db), ("inventory", inventory)) if v})
    store = _store(settings)
    inc = get_incident(store, incident_id)
    if run_verify:
        _verify(store, inc, settings)
    ok = verified(events_of(store, incident_id))
    if not ok:
        raise UsageError(
            f"incident {incident_id}: the step-5 checklist has not passed "
            "(run `collector incident resolve --verify`, or wait for Alertmanager's resolved notice)"
        )
    inc, expired = resolve(
        store, incident_id, _who(who, settings), verified=ok, alertmanager_url=settings.alertmanager_url
    )
    click.echo(f"{inc.id} resolved at {inc.resolved_at}")
    for silence, result in expired.items():
        click.echo(f"silence {silence}: {result}")
    for _, item in tick(store, settings, only=[incident_id]):
        click.echo(f"sent: {item.text}")


def _verify(store: Any, inc: Incident, settings: Settings) -> None:
    from collector.inventory import load_inventory
    from collector.verify import passed, table, verify

    inv = load_inventory(settings.inventory)
    names = [h for h in inc.hosts if h in inv.hosts] or inv.match("all")
    checks = verify(inv, names, settings)
    for line in table(checks):
        click.echo(line)
    ok = passed(checks)
    store.add_event(
        inc.id,
        "verified" if ok else "verify-failed",
        iso_z(_now()),
        getpass.getuser(),
        {
            "passed": ok,
            "hosts": names,
            "checks": len(checks),
            "failed": [c.as_dict() for c in checks if not c.passed][:20],
        },
    )


@incident_group.command("close")
@click.argument("incident_id")
@db_option
@click.option("--by", "who", required=True, help="Who closes it: closing is a person's decision.")
def close_command(incident_id: str, db: str | None, who: str) -> None:
    """Close a resolved incident (after the post-incident checklist)."""
    from collector.incidents.lifecycle import close

    inc = close(_store(_settings(db)), incident_id, who)
    click.echo(f"{inc.id} closed by {who} at {inc.closed_at}")


@incident_group.command("tick")
@db_option
def tick_command(db: str | None) -> None:
    """Run the clocks once: send what is due (updates, reminders, escalations); `serve` does this itself."""
    from collector.incidents.lifecycle import tick

    settings = _settings(db)
    done = tick(_store(settings), settings)
    for incident_id, item in done:
        click.echo(f"{incident_id}: {item.kind} {item.text}")
    if not done:
        click.echo("nothing due")


commands = [incident_group]
