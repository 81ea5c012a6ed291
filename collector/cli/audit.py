"""`collector audit verify [--log FILE]` and `collector approve PLAN --as NAME [--break-glass REASON]`."""
from __future__ import annotations

import click

from collector.config import load_settings
from collector.core import EXIT_OK, EXIT_PARTIAL


@click.group("audit")
def audit() -> None:
    """The append-only, hash-chained audit log of plans, approvals and applies."""


@audit.command("verify")
@click.option("--log", "log_file", metavar="FILE", help="Audit log (default: setting audit_log).")
@click.pass_context
def audit_verify(ctx: click.Context, log_file: str | None) -> None:
    """Check the hash chain; name the first broken or edited record."""
    from collector.remediate.audit import AuditLog

    settings = load_settings(audit_log=log_file)
    check = AuditLog(settings.audit_log).verify()
    if check.ok:
        click.echo(f"audit log {settings.audit_log}: OK, {check.records} record(s), chain intact; last hash {check.last_hash}")
        ctx.exit(EXIT_OK)
    click.echo(f"audit log {settings.audit_log}: BROKEN at record {check.records} (line {check.first_bad}): {check.reason}")
    ctx.exit(EXIT_PARTIAL)


@click.command("approve")
@click.argument("plan_file", metavar="PLAN")
@click.option("--as", "as_name", required=True, metavar="NAME", help="The approver (must not be the requester).")
@click.option("--break-glass", metavar="REASON", help="Let the requester approve alone; loud and audited.")
def approve(plan_file: str, as_name: str, break_glass: str | None) -> None:
    """Approve a plan: binds the approver to the plan's hash, valid for approval_ttl_s."""
    from collector.remediate.approve import approve_plan
    from collector.remediate.plan import describe

    settings = load_settings()
    plan, approval = approve_plan(plan_file, as_name, settings, break_glass=break_glass)
    if approval.break_glass:
        banner = "!" * 72
        click.echo(banner, err=True)
        click.echo(f"!!! BREAK-GLASS: {approval.approver} approved plan {plan.id} (requested by {plan.requester})", err=True)
        click.echo(f"!!! reason: {approval.break_glass}", err=True)
        click.echo(f"!!! recorded in the audit log {settings.audit_log}", err=True)
        click.echo(banner, err=True)
    for line in describe(plan):
        click.echo(line)
    if plan.failed_hosts:
        click.echo(f"warning: the plan's check run failed on {', '.join(plan.failed_hosts)}", err=True)
    click.echo(f"approved until {approval.expires}: collector remediate apply {plan_file}")


commands = [audit, approve]
