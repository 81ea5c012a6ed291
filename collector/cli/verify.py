"""`collector verify --hosts PATTERN`: the runbook's step 5 checklist, a PASS/FAIL/UNKNOWN table,
exit 1 unless every check passed."""

from __future__ import annotations

import json
import re

import click

from collector.config import load_settings
from collector.core import EXIT_OK, EXIT_PARTIAL, UsageError
from collector.inventory import load_inventory
from collector.redact import Redactor


@click.command("verify")
@click.option("--hosts", required=True, help="Ansible host pattern to check.")
@click.option("-i", "--inventory", help="Inventory file or directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option(
    "--window", default="30s", show_default=True, help="Prometheus rate window for 5xx ratio and p95."
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=0.0,
    help="Keep re-checking up to this many seconds until it passes.",
)
@click.option(
    "--allow-alert", multiple=True, metavar="NAME", help="An alert that is expected (not a failure)."
)
@click.pass_context
def verify_command(
    ctx: click.Context,
    hosts: str,
    inventory: str | None,
    as_json: bool,
    window: str,
    wait_s: float,
    allow_alert: tuple[str, ...],
) -> None:
    """Runbook step 5: /health, the smoke flows, 5xx ratio < 1 %, p95 < 200 ms, no alerts, SELECT 1, Redis
    PING, services. Verify sends the flows' requests itself; no data is UNKNOWN, which is not a pass."""
    from collector.verify import passed, verify
    from collector.verify import table as checks_table

    if not re.fullmatch(r"[1-9][0-9]*[smh]", window):
        raise UsageError(f"--window must look like 30s, 5m or 1h, got {window!r}")
    settings = load_settings(inventory=inventory)
    inv = load_inventory(inventory or settings.inventory)
    names = inv.match(hosts)
    checks = verify(inv, names, settings, window=window, wait_s=wait_s, allowed_alerts=allow_alert)
    ok = passed(checks)
    # Check details quote the hosts' own error output: scrubbed with the inventory's secrets, as a bundle is.
    redactor = Redactor(settings.redact_patterns, inv.secret_values())
    if as_json:
        doc = {"passed": ok, "checks": [c.as_dict() for c in checks]}
        click.echo(json.dumps(redactor.redact_value(doc, "verify"), indent=2))
    else:
        for line in checks_table(checks):
            click.echo(redactor.redact_text(line, "verify"))
        failed = [c for c in checks if c.status == "fail"]
        unknown = [c for c in checks if c.status == "unknown"]
        why = ", ".join(
            f"{n} {word}" for n, word in ((len(failed), "failed"), (len(unknown), "unknown (no data)")) if n
        )
        click.echo("RECOVERED: every check passed" if ok else f"NOT RECOVERED: {why or 'no checks ran'}")
    ctx.exit(EXIT_OK if ok else EXIT_PARTIAL)


commands = [verify_command]
