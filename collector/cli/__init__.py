"""The command line: parses arguments and calls the steps; nothing else lives here.

Each step's commands sit in their own module of this package and are added to the
`collector` group below; `collect` is also a console script of its own.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from collector import __version__
from collector.core import EXIT_USAGE, UsageError

# One module per step; each exposes `commands`, a list of click commands or groups.
COMMAND_MODULES = ("lab", "collect", "triage", "report", "remediate", "verify", "audit", "attach")


class _Group(click.Group):
    """Turns UsageError (and click's own usage errors) into one line on stderr and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="collector")
def main() -> None:
    """incident collector: collect evidence, triage, remediate with approval, verify, report."""


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"collector.cli.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"collector.cli.{_name}":
            raise
        continue
    for _command in getattr(_module, "commands", []):
        main.add_command(_command)


def collect_main() -> None:
    """The `collect` console script: the same command as `collector collect`."""
    command = main.commands.get("collect")
    if command is None:
        click.echo("error: collect is not available in this build", err=True)
        sys.exit(EXIT_USAGE)
    try:
        command.main(prog_name="collect", standalone_mode=True)
    except UsageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
