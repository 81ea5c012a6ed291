"""`collector report BUNDLE` and `collector comms BUNDLE --stage ...`: argument parsing only."""

from __future__ import annotations

import sys

import click

from collector import report as report_step
from collector.core import EXIT_PARTIAL
from collector.report.render import RedactionFailed


@click.command("report")
@click.argument("bundle")
@click.option(
    "--format",
    "formats",
    default="html,md",
    show_default=True,
    help="Comma-separated report formats: html, md. TICKET.md is always written.",
)
def report_command(bundle: str, formats: str) -> None:
    """Write report.html / report.md and TICKET.md into BUNDLE and re-seal its archive."""
    chosen = report_step.parse_formats(formats)
    try:
        written = report_step.render_reports(bundle, chosen)
    except RedactionFailed as exc:  # fails closed: placeholders were written, the clear text was not
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PARTIAL)
    for path in written:
        click.echo(str(path))


@click.command("comms")
@click.argument("bundle")
@click.option(
    "--stage",
    type=click.Choice(report_step.STAGES),
    required=True,
    help="initial update, mitigation update, or resolution announcement.",
)
def comms_command(bundle: str, stage: str) -> None:
    """Print the runbook's status update for STAGE, filled from BUNDLE, ready to paste."""
    click.echo(report_step.render_comms(bundle, stage), nl=False)


commands = [report_command, comms_command]
