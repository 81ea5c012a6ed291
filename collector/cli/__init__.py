"""The command line: parses arguments and calls the steps; nothing else lives here.

Each step's commands sit in their own module of this package (which exposes `commands`, a list of
click commands). Modules are imported only when one of their commands runs, so `collect` in the
first minutes of an incident does not pay for importing remediation or tickets. The test lab is a
separate distribution (lab/, the `collector-lab` command).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from types import TracebackType
from typing import Any

import click

from collector import __version__
from collector.core import EXIT_USAGE, UsageError

# command name -> the module of this package that defines it
COMMANDS: dict[str, str] = {
    "collect": "collect",
    "ingest": "collect",
    "triage": "triage",
    "report": "report",
    "comms": "report",
    "remediate": "remediate",
    "approve": "audit",
    "verify": "verify",
    "audit": "audit",
    "attach": "attach",
    "incident": "incident",
    "serve": "serve",
}


def scrub(text: str) -> str:
    """An error line or traceback as it will be printed, its secrets replaced (patterns only: no inventory is
    at hand when the inventory is what failed); when redaction itself fails, the text is withheld."""
    try:
        from collector.redact import Redactor

        return Redactor().redact_text(text, "stderr")
    except Exception:  # noqa: BLE001 - fail closed: say that something failed, never show it unscrubbed
        return "(message withheld: its redaction failed)"


def _redacting_excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """A crash's traceback goes to a terminal, a CI log or a ticket: the same redaction as everything else."""
    sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))


def _usage_error(exc: UsageError) -> None:
    click.echo(f"error: {scrub(str(exc))}", err=True)
    sys.exit(EXIT_USAGE)


def load_command(name: str) -> click.Command | None:
    """The click command `name`, importing only the module that defines it."""
    module_name = COMMANDS.get(name)
    if module_name is None:
        return None
    module = importlib.import_module(f"collector.cli.{module_name}")
    return next((c for c in getattr(module, "commands", []) if c.name == name), None)


class _Group(click.Group):
    """Loads commands lazily; turns UsageError into one line on stderr and exit 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        sys.excepthook = _redacting_excepthook
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            _usage_error(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="collector")
def main() -> None:
    """incident collector: collect evidence, triage, remediate with approval, verify, report."""


def collect_main() -> None:
    """The `collect` console script: the same command as `collector collect`."""
    sys.excepthook = _redacting_excepthook
    command = load_command("collect")
    assert command is not None, "collector.cli.collect defines no collect command"
    try:
        command.main(prog_name="collect", standalone_mode=True)
    except UsageError as exc:
        _usage_error(exc)
