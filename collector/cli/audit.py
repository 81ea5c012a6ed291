"""`collector audit verify [--log FILE] [--expect HEAD]` and `collector approve PLAN [--key FILE]
[--break-glass R]`."""

from __future__ import annotations

import sys

import click

from collector.config import load_settings
from collector.core import EXIT_OK, EXIT_PARTIAL, UsageError


@click.group("audit")
def audit() -> None:
    """The append-only, hash-chained, signed audit log of plans, approvals and applies."""


@audit.command("verify")
@click.option("--log", "log_file", metavar="FILE", help="Audit log (default: the policy's audit_log).")
@click.option(
    "--expect",
    metavar="HEAD",
    help="The head (SEQ:HASH) kept elsewhere: a bundle's actions.json, a ticket note, the journal.",
)
@click.pass_context
def audit_verify(ctx: click.Context, log_file: str | None, expect: str | None) -> None:
    """Check the hash chain, every signature and the external checkpoint; name the first problem."""
    from collector.remediate.apply import record_dangling
    from collector.remediate.audit import AuditLog, parse_head
    from collector.remediate.policy import POLICY_PATH, PolicyError, load_policy
    from collector.remediate.signing import Verifier

    settings = load_settings(audit_log=log_file)
    if expect:
        parse_head(expect)
    try:
        policy = load_policy()
    except PolicyError:
        if not settings.audit_log:
            raise
        policy = None
    path = settings.audit_log or (policy.audit_log if policy else "")
    ours = policy is not None and path == policy.audit_log
    log = AuditLog(path, policy.checkpoint_file if ours and policy else None)
    if not log.path.exists():
        raise UsageError(f"audit log {log.path} does not exist")
    if ours and policy is not None:
        for found in record_dangling(log, policy):
            click.echo(
                f"recorded apply-dangling: the apply of plan {found.get('plan_id')} started "
                f"{found.get('started')} by {found.get('started_by')} has no outcome",
                err=True,
            )
    verifier = Verifier(policy.signers_path()) if policy else None
    check = log.verify(verifier=verifier, expect=expect)
    for lineno in check.torn:
        click.echo(
            f"warning: line {lineno} is torn (not JSON: an interrupted write); skipped, the chain continues",
            err=True,
        )
    signatures = (
        f"{check.signed} signature(s) verified against {policy.allowed_signers}"
        if policy
        else f"signatures NOT checked (no policy at {POLICY_PATH})"
    )
    if check.ok:
        kept = f"; matches checkpoint {check.checkpoint}" if check.checkpoint else ""
        click.echo(
            f"audit log {log.path}: OK, {check.records} record(s), chain intact, {signatures}{kept}; "
            f"head {check.head}"
        )
        ctx.exit(EXIT_OK)
    where = f" (line {check.first_bad})" if check.first_bad else ""
    click.echo(f"audit log {log.path}: BROKEN at record {check.records}{where}: {check.reason}")
    ctx.exit(EXIT_PARTIAL)


@click.command("approve")
@click.argument("plan_file", metavar="PLAN")
@click.option(
    "--key",
    metavar="FILE",
    help="Your SSH key: a private key file, or a .pub whose key ssh-agent holds (default: ssh-agent).",
)
@click.option("--as", "as_name", metavar="NAME", help="Optional label; must match your key's principal.")
@click.option(
    "--break-glass",
    metavar="REASON",
    help="Approve your own request (break-glass principals only); loud and audited.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
@click.pass_context
def approve(
    ctx: click.Context,
    plan_file: str,
    key: str | None,
    as_name: str | None,
    break_glass: str | None,
    yes: bool,
) -> None:
    """Show a plan, then sign your approval of exactly its content (valid for the policy's approval TTL)."""
    from collector.remediate.apply import record_dangling
    from collector.remediate.approve import approve_plan, since_bundle
    from collector.remediate.audit import AuditLog
    from collector.remediate.plan import describe, load_plan
    from collector.remediate.policy import load_policy
    from collector.remediate.signing import signer_for

    settings = load_settings()
    policy = load_policy()
    signer = signer_for(key or settings.signing_key, allowed_signers=policy.signers_path())
    log = AuditLog(policy.audit_log, policy.checkpoint_file)
    record_dangling(log, policy)
    plan = load_plan(plan_file)
    for line in describe(plan) + since_bundle(plan):
        click.echo(line)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "approve asks for confirmation on a terminal; pass --yes to approve from a script"
            )
        if not click.confirm(
            f"Sign your approval of plan {plan.id} ({plan.action} on {len(plan.targets)} host(s))?"
        ):
            click.echo("not approved: nothing signed")
            ctx.exit(EXIT_PARTIAL)
    plan, approval = approve_plan(
        plan_file,
        signer,
        policy,
        break_glass=break_glass,
        as_name=as_name,
        audit=log,
        ttl_s=settings.approval_ttl_s,
    )
    if approval.break_glass:
        banner = "!" * 72
        click.echo(banner, err=True)
        click.echo(
            f"!!! BREAK-GLASS: {approval.approver} approved plan {plan.id} (requested by {plan.requester})",
            err=True,
        )
        click.echo(f"!!! reason: {approval.break_glass}", err=True)
        click.echo(f"!!! recorded in the audit log {policy.audit_log}", err=True)
        click.echo(banner, err=True)
    click.echo(
        f"approved  by {approval.approver} (verified key) until {approval.expires}: "
        f"collector remediate apply {plan_file}"
    )


commands = [audit, approve]
