"""`collect --hosts PATTERN` (also `collector collect`) and `collector ingest DIR...`: parsing and
display only."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from collector import collect as collect_step
from collector.bundle import BundleWriteFailed
from collector.core import EXIT_PARTIAL, Findings, HostResult, RunResult, response_time_text
from collector.redact import RedactionError, Redactor
from collector.transport import ENGINES, Payload, Target

_STATUS_STYLE = {
    "ok": "green",
    "partial": "yellow",
    "unreachable": "red",
    "failed": "red",
    "running": "cyan",
    "connecting": "blue",
    "waiting": "dim",
}


class HostBoard:
    """Live progress: one row per host with probes done/total and its status."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.live: Live | None = None

    def start(self, targets: dict[str, Target], payload: Payload) -> None:
        from collector.probes import expected_names

        for name, target in targets.items():
            total = len(expected_names(payload.entries, target.roles))
            self.rows[name] = {
                "roles": ",".join(target.roles) or "-",
                "done": 0,
                "total": total,
                "status": "waiting",
                "error": "",
            }
        if self.console.is_terminal:
            self.live = Live(self.render(), console=self.console, refresh_per_second=8, transient=True)
            self.live.start()

    def update(self, host: str, event: str, detail: dict[str, Any]) -> None:
        with self.lock:
            row = self.rows.get(host)
            if row is None:
                return
            if event == "probe":
                row["done"] = min(row["total"], row["done"] + 1)
            elif event == "done":
                row["status"] = detail.get("status", "?")
                row["error"] = str(detail.get("error") or "")
                if row["status"] in ("ok", "partial"):
                    row["done"] = row["total"]
            elif row["status"] not in ("ok", "partial", "unreachable", "failed"):
                row["status"] = event
        if self.live is not None:
            self.live.update(self.render())

    def render(self) -> Table:
        table = Table(title="collect", expand=False)
        for column in ("host", "roles", "probes", "status"):
            table.add_column(column)
        with self.lock:
            for host, row in self.rows.items():
                style = _STATUS_STYLE.get(row["status"], "")
                table.add_row(
                    host,
                    row["roles"],
                    f"{row['done']}/{row['total']}",
                    f"[{style}]{row['status']}[/{style}]" if style else row["status"],
                )
        return table

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _counts(result: HostResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for probe in result.probes:
        counts[probe.status] = counts.get(probe.status, 0) + 1
    return counts


def final_table(run: RunResult, redactor: Redactor | None = None) -> Table:
    """Host × status at the end of a run; host errors redacted (whole, before they are cut to the column)."""
    scrub = redactor or Redactor()
    table = Table(title=f"{len(run.hosts)} host(s)" + (" — INTERRUPTED" if run.interrupted else ""))
    for column in ("host", "roles", "status", "ok", "failed", "timeout", "not_found", "skipped", "error"):
        table.add_column(column)
    for host, result in run.hosts.items():
        counts = _counts(result)
        style = _STATUS_STYLE.get(result.status, "")
        problems = [f"{p.probe}: {p.status}" for p in result.probes if p.status in ("failed", "timeout")]
        error = result.error or ("; ".join(problems[:3]) + (" …" if len(problems) > 3 else ""))
        table.add_row(
            host,
            ",".join(result.roles) or "-",
            f"[{style}]{result.status}[/{style}]",
            *(str(counts.get(s, 0)) for s in ("ok", "failed", "timeout", "not_found", "skipped")),
            scrub.redact_text(error, "terminal")[:120],
        )
    return table


def headline(findings: Findings | None) -> str | None:
    """The findings' one-line headline (triage's summary, then the severity's response time: "P1 — respond
    within 15 minutes"), None without a verdict."""
    if findings is None or not findings.summary:
        return None
    respond = response_time_text(findings.severity)
    return f"{findings.summary} · {findings.severity} — {respond}" if respond else findings.summary


def summary(outcome: collect_step.CollectOutcome) -> dict[str, Any]:
    """The --json document."""
    run = outcome.run
    bundle = outcome.bundle
    return {
        "incident": bundle.name if bundle else run.incident,
        "bundle": str(bundle) if bundle else None,
        "archive": f"{bundle}.tar.gz" if bundle else None,
        "exit_code": outcome.exit_code,
        "engine": run.engine,
        "pattern": run.pattern,
        "inventory": run.inventory,
        "started": run.started,
        "finished": run.finished,
        "interrupted": run.interrupted,
        "hosts": {
            h: {"status": r.status, "error": r.error, "roles": list(r.roles), "probes": _counts(r)}
            for h, r in run.hosts.items()
        },
        "monitoring": {m.probe: m.status for m in run.monitoring},
        "severity": outcome.findings.severity if outcome.findings is not None else None,
        "headline": headline(outcome.findings),
        "respond": response_time_text(outcome.findings.severity) if outcome.findings is not None else None,
        "notes": outcome.notes,
    }


def _show(outcome: collect_step.CollectOutcome, as_json: bool) -> None:
    """Print the outcome; everything taken from the run (errors, notes, findings) goes through the redactor.

    Redaction failing here prints nothing of the run (fail closed): one line saying so, the bundle path.
    """
    redactor = outcome.redactor or Redactor()
    try:
        if as_json:
            click.echo(json.dumps(redactor.redact_value(summary(outcome), "terminal"), indent=2))
            return
        table = final_table(outcome.run, redactor)
        line = redactor.redact_text(headline(outcome.findings) or "", "terminal")
        notes = [redactor.redact_text(note, "terminal") for note in outcome.notes]
    except RedactionError as exc:
        click.echo(f"collect: not showing the run's details: {exc}", err=True)
        if outcome.bundle:
            click.echo(f"bundle: {outcome.bundle}")
        return
    console = Console(no_color=not sys.stdout.isatty(), highlight=False, soft_wrap=True)
    console.print(table)
    if line:
        console.print(f"findings: {line}")
    for note in notes:
        console.print(f"note: {note}")
    if outcome.bundle:
        console.print(f"bundle: {outcome.bundle}")
        console.print(f"archive: {outcome.bundle}.tar.gz")


@click.command("collect", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--hosts",
    "pattern",
    required=True,
    metavar="PATTERN",
    help="Ansible host pattern: prod, app, prod:&db, web0*, local.",
)
@click.option(
    "-i",
    "--inventory",
    metavar="INVENTORY",
    help="Ansible inventory file or folder (YAML or INI). Default: ./inventory, else the shipped one.",
)
@click.option("--since", metavar="DURATION", help="Journal window: 10m, 2h, 1d or a timestamp. Default 10m.")
@click.option("--out", "out_dir", metavar="DIR", help="Where bundles go. Default: bundles/.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary instead of tables.")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    metavar="S",
    help="Per-probe timeout in seconds (caps the catalogue's own timeouts).",
)
@click.option(
    "--engine", metavar="|".join(ENGINES), help="ssh (default, fastest) or ansible (playbooks/collect.yml)."
)
@click.option(
    "--forks",
    type=int,
    metavar="N",
    help="Hosts collected at once, both engines (default 50; COLLECTOR_FORKS).",
)
@click.option(
    "--incident", metavar="ID", help="Incident id (bundle name). Default: derived from pattern and time."
)
@click.option(
    "--no-redact", "no_redact", is_flag=True, help="Keep secrets (the bundle's name and manifest say so)."
)
@click.option(
    "--catalogue", metavar="FILE", hidden=True, help="Another probe catalogue (tests, experiments)."
)
def collect_command(
    pattern: str,
    inventory: str | None,
    since: str | None,
    out_dir: str | None,
    as_json: bool,
    timeout_s: float | None,
    engine: str | None,
    forks: int | None,
    incident: str | None,
    no_redact: bool,
    catalogue: str | None,
) -> None:
    """Run the runbook's read-only probes on every matching host at once and write an evidence bundle."""
    # SIGTERM, SIGHUP (a dropped SSH session): like Ctrl-C, the bundle is written
    collect_step.stop_on_signals()
    board = HostBoard(Console(stderr=True, no_color=not sys.stderr.isatty()))
    try:
        outcome = _or_exit(
            lambda: collect_step.collect(
                pattern,
                inventory=inventory,
                since=since,
                out_dir=out_dir,
                timeout_s=timeout_s,
                engine=engine,
                forks=forks,
                incident=incident,
                redact=False if no_redact else None,
                catalogue=catalogue,
                command_line=["collect", *sys.argv[1:]] if sys.argv else [],
                progress=board.update,
                on_hosts=None if as_json else board.start,
            )
        )
    finally:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP): the bundle is what matters
            board.stop()
    _exit(outcome, as_json)


@click.command("ingest")
@click.argument("artifacts_dirs", metavar="DIR...", nargs=-1, required=True)
@click.option("--out", "out_dir", metavar="DIR", help="Where bundles go. Default: bundles/.")
@click.option("--incident", metavar="ID", help="Incident id (bundle name).")
@click.option(
    "-i",
    "--inventory",
    metavar="INVENTORY",
    help="The run's inventory: its secret host variables are redacted wherever they appear. "
    "Default: the inventory named in the artifacts, when readable here.",
)
@click.option(
    "--unseal-key",
    metavar="KEY",
    help="PEM RSA private key opening outputs the runs sealed (collector_output_recipient, its certificate).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary instead of tables.")
@click.option(
    "--no-redact", "no_redact", is_flag=True, help="Keep secrets (the bundle's name and manifest say so)."
)
def ingest_command(
    artifacts_dirs: tuple[str, ...],
    out_dir: str | None,
    incident: str | None,
    inventory: str | None,
    unseal_key: str | None,
    as_json: bool,
    no_redact: bool,
) -> None:
    """Build ONE bundle from the artifacts of playbooks/collect.yml runs made elsewhere.

    Each DIR is an ansible-runner artifacts (or private data) folder, or a folder of AWX job-event pages:
    one per AWX job slice. A host found in two of them with different results is an error (exit 2)."""
    collect_step.stop_on_signals()
    outcome = _or_exit(
        lambda: collect_step.ingest(
            list(artifacts_dirs),
            out_dir=out_dir,
            incident=incident,
            redact=False if no_redact else None,
            command_line=["collector", "ingest", *sys.argv[2:]],
            inventory=inventory,
            unseal_key=unseal_key,
        )
    )
    _exit(outcome, as_json)


def _or_exit(step: Callable[[], collect_step.CollectOutcome]) -> collect_step.CollectOutcome:
    """Run the step; a disk that failed even the bundle's manifest is one line on stderr and exit 1."""
    try:
        return step()
    except BundleWriteFailed as exc:
        click.echo(f"collect: {exc}", err=True)
        sys.exit(EXIT_PARTIAL)


def _exit(outcome: collect_step.CollectOutcome, as_json: bool) -> NoReturn:
    """Show the outcome and exit with its code. An incomplete bundle also gets its one line on stderr; a
    terminal that went away (SIGHUP) costs the display, never the exit code."""
    try:
        _show(outcome, as_json)
        if outcome.incomplete is not None:
            click.echo(
                f"collect: {next(n for n in outcome.notes if n.startswith('bundle INCOMPLETE'))}", err=True
            )
        sys.stdout.flush()
    except OSError:
        with contextlib.suppress(OSError):  # nothing to print to: later flushes must not fail at exit either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.dup2(devnull, sys.stderr.fileno())
    sys.exit(outcome.exit_code)


commands = [collect_command, ingest_command]
