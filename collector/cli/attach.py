"""`collector attach`: put a bundle's evidence on a ticket (argument parsing and output only)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from collector.core import EXIT_PARTIAL, UsageError
from collector.tickets import REGISTRY, TicketError, load_ticket_config, open_system
from collector.tickets.evidence import Outcome, attach_bundle


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MB" if n >= 1048576 else f"{n} bytes"


def _report(outcome: Outcome, system: str) -> list[str]:
    ticket = outcome.ticket
    lines = []
    if outcome.created:
        severity = outcome.evidence.severity or "no severity"
        lines.append(
            f"created {system} ticket #{ticket.id} ({severity} → priority {ticket.priority or '?'}): "
            f"{ticket.url}"
        )
    elif outcome.reused:
        lines.append(
            f"found {system} ticket #{ticket.id} for {outcome.evidence.incident}, using it: {ticket.url}"
        )
    for item in outcome.uploaded:
        lines.append(
            f"attached {item.filename} ({_size(item.size)}, sha256 {item.sha256[:16]}…) to #{ticket.id}"
        )
    for old in outcome.superseded:
        lines.append(
            f"note: {old.filename} was already on #{ticket.id} with another sha256 (attachment "
            f"{old.id}); the bundle changed since, so the new one was added beside it"
        )
    for item in outcome.already:
        lines.append(f"already on #{ticket.id}: {item.filename} (same sha256), not uploaded again")
    if outcome.uploaded and not outcome.evidence.ticket_md:
        lines.append(
            "note: the bundle has no TICKET.md; posted the ticket template rendered from the bundle "
            "(as `collector report` would)"
        )
    posted = (
        "description" if outcome.created else "comment" if outcome.uploaded else "'already there' comment"
    )
    lines.append(f"{posted} posted: {ticket.url}")
    return lines


@click.command("attach")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--to", "system", type=click.Choice(sorted(REGISTRY)), required=True, help="The ticket system.")
@click.option("--ticket", default=None, help="Attach to this existing ticket id.")
@click.option("--new", "new", is_flag=True, help="Open a new ticket (needs --project).")
@click.option("--project", default=None, help="Project for --new (identifier or id).")
@click.option(
    "--url",
    default=None,
    help="Server URL (else COLLECTOR_<SYSTEM>_URL or tickets.yml). The API key is never an option.",
)
@click.option("--allow-unredacted", is_flag=True, help="Post a bundle that was collected with redaction off.")
def attach(
    bundle: Path,
    system: str,
    ticket: str | None,
    new: bool,
    project: str | None,
    url: str | None,
    allow_unredacted: bool,
) -> None:
    """Upload BUNDLE's tar.gz and .sha256 to a ticket with TICKET.md as the comment."""
    if new == (ticket is not None):
        raise UsageError("give exactly one of --ticket ID or --new --project P")
    if new and not project:
        raise UsageError("--new needs --project P")
    if ticket is not None and project:
        raise UsageError("--project goes with --new, not with --ticket")
    if not bundle.exists():
        raise UsageError(f"{bundle} does not exist")
    config = load_ticket_config(system, url=url)
    try:
        outcome = attach_bundle(
            open_system(config),
            bundle,
            ticket=ticket,
            project=project if new else None,
            allow_unredacted=allow_unredacted,
        )
    except TicketError as exc:
        click.echo(f"error: {config.scrub(str(exc))}", err=True)
        sys.exit(EXIT_PARTIAL)
    for line in _report(outcome, system):
        click.echo(config.scrub(line))


commands = [attach]
