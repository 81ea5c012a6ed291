"""`collector remediate ACTION --hosts PATTERN ...` (plan) and `collector remediate apply PLAN`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from collector.config import load_settings
from collector.core import EXIT_OK, EXIT_PARTIAL, UsageError
from collector.remediate.actions import ACTIONS, Action, parse_param_args
from collector.verify import table as checks_table


def _scrub(line: str) -> str:
    """What this command prints of hosts and checks (check details, notes, errors) goes through the
    scrubber."""
    from collector.redact import Redactor

    return Redactor().redact_text(line, "terminal")


def _echo(line: str) -> None:
    click.echo(_scrub(line))


def _echo_err(line: str) -> None:
    click.echo(_scrub(line), err=True)


_KEY_HELP = (
    "Your SSH key: a private key file, or a .pub whose private key ssh-agent holds (default: ssh-agent)."
)
_AS_HELP = "Optional label; must match the principal your key has in allowed_signers."


def _plan_command(action: Action) -> click.Command:
    """The planning command of one action: check mode + diff, signed by the requester, written and shown."""

    @click.pass_context
    def run(
        ctx: click.Context,
        hosts: str,
        inventory: str | None,
        param: tuple[str, ...],
        plan_file: str | None,
        as_name: str | None,
        key: str | None,
        bundle: str | None,
        forks: int | None,
    ) -> None:
        from collector.remediate.approve import request_plan
        from collector.remediate.audit import AuditLog
        from collector.remediate.plan import default_plan_path, describe, make_plan
        from collector.remediate.policy import load_policy
        from collector.remediate.signing import signer_for

        settings = load_settings(inventory=inventory)
        raw = parse_param_args(param)
        policy = load_policy()
        signer = signer_for(key or settings.signing_key, allowed_signers=policy.signers_path())
        plan = make_plan(
            action.name,
            hosts,
            raw,
            settings,
            inventory=inventory or settings.inventory,
            bundle=bundle,
            forks=forks,
            playbooks_dir=policy.playbooks_dir,
        )
        path = Path(plan_file) if plan_file else default_plan_path(plan, settings)
        request_plan(
            plan, path, signer, policy, AuditLog(policy.audit_log, policy.checkpoint_file), as_name=as_name
        )
        for line in describe(plan):
            click.echo(line)
        if plan.failed_hosts:
            _echo_err(
                f"warning: the check run failed on {', '.join(plan.failed_hosts)}; "
                "applying will fail there too"
            )
        click.echo(str(path))
        ctx.exit(EXIT_PARTIAL if plan.failed_hosts else EXIT_OK)

    params_help = "; ".join(f"{p.name}: {p.help}, {p.describe()}" for p in action.params) or "none"
    command = click.Command(
        action.name,
        callback=run,
        help=f"Plan: {action.summary}. Targets group {'/'.join(action.groups)}. Parameters — {params_help}.",
        short_help=action.summary,
        params=[
            click.Option(
                ["--hosts"], required=True, help="Ansible host pattern (intersected with the action's group)."
            ),
            click.Option(["-i", "--inventory"], help="Inventory file or directory."),
            click.Option(
                ["--param"], multiple=True, metavar="NAME=VALUE", help="An action parameter (repeatable)."
            ),
            click.Option(
                ["--plan", "plan_file"],
                metavar="FILE",
                help="Where to write the plan (default plans/<id>.json).",
            ),
            click.Option(["--as", "as_name"], metavar="NAME", help=_AS_HELP),
            click.Option(["--key"], metavar="FILE", help=_KEY_HELP),
            click.Option(
                ["--bundle"], metavar="DIR", help="The incident's bundle (actions.json goes there on apply)."
            ),
            click.Option(["--forks"], type=int, help="Parallel hosts for the check run."),
        ],
    )
    return command


@click.command("request")
@click.argument("plan_file", metavar="PLAN")
@click.option("--key", metavar="FILE", help=_KEY_HELP)
@click.option("--as", "as_name", metavar="NAME", help=_AS_HELP)
def request_command(plan_file: str, key: str | None, as_name: str | None) -> None:
    """Sign the request of a plan made unsigned (e.g. by `collector serve`): you become its requester."""
    from collector.remediate.approve import request_plan
    from collector.remediate.audit import AuditLog
    from collector.remediate.plan import describe, load_plan
    from collector.remediate.policy import load_policy
    from collector.remediate.signing import signer_for

    settings = load_settings()
    policy = load_policy()
    signer = signer_for(key or settings.signing_key, allowed_signers=policy.signers_path())
    plan = load_plan(plan_file)
    if plan.compute_hash() != plan.hash:
        raise UsageError(f"plan {plan_file} was modified after it was written (hash mismatch); plan again")
    if plan.statements:
        raise UsageError(
            f"plan {plan_file} is already requested by {plan.requester or 'someone'}; plan again to "
            "request it yourself"
        )
    request_plan(
        plan,
        Path(plan_file),
        signer,
        policy,
        AuditLog(policy.audit_log, policy.checkpoint_file),
        as_name=as_name,
    )
    for line in describe(plan):
        click.echo(line)


@click.command("apply")
@click.argument("plan_file", metavar="PLAN")
@click.option("--key", metavar="FILE", help=_KEY_HELP)
@click.option("--as", "as_name", metavar="NAME", help=_AS_HELP)
@click.option(
    "--max-hosts",
    type=int,
    help="Raise the blast-radius limit for this apply (up to the policy's max_hosts).",
)
@click.option(
    "--batch-size", type=int, help="Hosts per batch after the canary (at most the policy's batch_size)."
)
@click.option("--bundle", metavar="DIR", help="Before-bundle for actions.json (default: the plan's).")
@click.option(
    "--verify-wait",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to keep re-checking the recovery checklist until it passes.",
)
@click.option("--no-after-bundle", is_flag=True, help="Do not collect an after-bundle.")
@click.option(
    "--allow-alert",
    multiple=True,
    metavar="NAME",
    help="An alert known to be unrelated or expected; verify does not count it (recorded).",
)
@click.pass_context
def apply_command(
    ctx: click.Context,
    plan_file: str,
    key: str | None,
    as_name: str | None,
    max_hosts: int | None,
    batch_size: int | None,
    bundle: str | None,
    verify_wait: float,
    no_after_bundle: bool,
    allow_alert: tuple[str, ...],
) -> None:
    """Apply an approved plan (signed by you): canary, batches, health gate, verify, after-bundle, audit."""
    from collector.remediate.apply import Interrupted, apply_plan
    from collector.remediate.policy import load_policy
    from collector.remediate.signing import signer_for

    settings = load_settings()
    policy = load_policy()
    signer = signer_for(key or settings.signing_key, allowed_signers=policy.signers_path())
    try:
        result = apply_plan(
            plan_file,
            settings,
            signer=signer,
            policy=policy,
            as_name=as_name,
            max_hosts=max_hosts,
            batch_size=batch_size,
            bundle=bundle,
            verify_wait_s=verify_wait,
            collect_after=not no_after_bundle,
            allowed_alerts=allow_alert,
            echo=_echo,
        )
    except Interrupted as exc:
        _echo_err(f"error: {exc}")
        ctx.exit(EXIT_PARTIAL)
    for line in checks_table(result.checks):
        _echo(line)
    for note in result.notes:
        _echo_err(f"note: {note}")
    changed = sum(1 for h in result.hosts.values() if h.get("changed"))
    click.echo(
        f"hosts: {len(result.hosts)}  changed={changed}  "
        f"failed={sum(1 for h in result.hosts.values() if h['status'] in ('failed', 'unreachable'))}  "
        f"untouched={sum(1 for h in result.hosts.values() if h['status'] == 'not-run')}"
    )
    if result.after_bundle:
        click.echo(f"after-bundle: {result.after_bundle}")
    if result.actions_json:
        click.echo(f"actions: {result.actions_json}")
    click.echo(f"applied by {result.applier}; audit head {result.audit_head}")
    click.echo(
        (
            "APPLIED and VERIFIED"
            if result.ok
            else f"NOT RECOVERED: {result.stopped or 'the recovery checklist failed'}"
        )
        + f" (plan {result.plan.id})"
    )
    ctx.exit(EXIT_OK if result.ok else EXIT_PARTIAL)


class RemediateGroup(click.Group):
    """First argument is an action name (plan it) or `apply`; anything else is one clear error line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return ["apply", "request", *ACTIONS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "apply":
            return apply_command
        if cmd_name == "request":
            return request_command
        action = ACTIONS.get(cmd_name)
        return _plan_command(action) if action else None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        command = self.get_command(ctx, name)
        if command is None:
            raise UsageError(
                f"unknown action {name!r}; known actions: {', '.join(ACTIONS)} (or: apply PLAN, request PLAN)"
            )
        return name, command, args[1:]


@click.group("remediate", cls=RemediateGroup)
def remediate() -> None:
    """Plan a runbook mitigation (ACTION --hosts PATTERN) or apply an approved plan (apply PLAN)."""


commands: list[Any] = [remediate]
