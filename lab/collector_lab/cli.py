"""`collector-lab`: build, boot, inspect, break and heal the test hosts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import click
from collector.config import Settings, load_settings
from collector.core import EXIT_PARTIAL, EXIT_USAGE, UsageError

from collector_lab import base, demo, faults, hosts, lifecycle, load


def _say(msg: str) -> None:
    click.echo(msg, err=True)


def _settings(state_dir: str | None) -> Settings:
    return load_settings(state_dir=state_dir)


state_dir_option = click.option(
    "--state-dir",
    default=None,
    metavar="DIR",
    help="Lab state and base cache (default /var/lib/incident-collector).",
)


class _LabGroup(click.Group):
    """Bad input: one line, exit 2.

    A lab step that fails (a mount, a boot, a fault's check): one line, exit 1.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            click.echo(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
            sys.exit(EXIT_PARTIAL)


@click.group("collector-lab", cls=_LabGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The lab: nspawn hosts app1/db1/redis1 (+ webNN), Prometheus and Alertmanager on loopback."""


@main.command("build")
@click.option("--force", is_flag=True, help="Rebuild the base even when it is cached.")
@state_dir_option
def build_cmd(force: bool, state_dir: str | None) -> None:
    """Build the base rootfs once (debootstrap, cached by a hash of its recipe)."""
    settings = _settings(state_dir)
    hosts.preflight()
    cached = base.is_built(settings) and not force
    if not cached:
        _say(
            f"building base {base.recipe_hash()} with debootstrap from {base.mirror()} (a few minutes; "
            f"log: {base.base_root(settings) / ('build-' + base.recipe_hash() + '.log')})"
        )
    started = time.monotonic()
    path = base.build(settings, force=force)
    how = "cached" if cached else f"built in {time.monotonic() - started:.0f}s"
    click.echo(f"base {base.recipe_hash()} {how}: {path}")


@main.command("up")
@click.option("--extra", default=0, type=int, metavar="N", help="Also boot N light hosts web01..webNN.")
@click.option("--fresh", is_flag=True, help="Drop every host's overlay first: provision all hosts anew.")
@state_dir_option
def up_cmd(extra: int, fresh: bool, state_dir: str | None) -> None:
    """Boot the lab (idempotent): hosts, provisioning, inventory/lab.yml, monitoring."""
    hosts.check_extra(extra)
    settings = _settings(state_dir)
    hosts.preflight()
    result = lifecycle.up(settings, extra=extra, log=_say, fresh=fresh)
    for name, what in result.hosts.items():
        click.echo(f"{name:8} {what}")
    for err in result.errors:
        click.echo(f"error: {err}", err=True)
    click.echo(
        f"lab {'up' if result.ok else 'up with errors'} in {result.seconds}s; inventory {result.inventory}"
    )
    if not result.ok:
        sys.exit(EXIT_PARTIAL)


@main.command("down")
@state_dir_option
def down_cmd(state_dir: str | None) -> None:
    """Stop every host and monitoring; remove mounts, cgroups, bridge and inventory."""
    settings = _settings(state_dir)
    stopped = lifecycle.down(settings, log=_say)
    click.echo(f"lab down ({len(stopped)} hosts stopped)")


@main.command("reset")
@state_dir_option
def reset_cmd(state_dir: str | None) -> None:
    """`down`, then forget overlays, secrets and keys (the cached base stays)."""
    lifecycle.reset(_settings(state_dir), log=_say)
    click.echo("lab reset: next `lab up` provisions fresh hosts")


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@state_dir_option
def status_cmd(as_json: bool, state_dir: str | None) -> None:
    """Each host, its services and active faults; monitoring. Exit 1 when the lab is not fully up."""
    hosts.preflight()
    info = lifecycle.status(_settings(state_dir))
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
    else:
        click.echo(_render_status(info))
    if not info["up"]:
        sys.exit(EXIT_PARTIAL)


def _render_status(info: dict[str, Any]) -> str:
    lines = [
        f"lab: {'UP' if info['up'] else 'DOWN'}  bridge: {'yes' if info['bridge'] else 'no'}"
        + (f"  (last up took {info['up_seconds']}s)" if info.get("up_seconds") else "")
    ]
    lines.append(
        f"{'host':8} {'group':6} {'ip':14} {'state':9} {'system':10} {'service':28} {'ssh':4} memory"
    )
    for name, h in info["hosts"].items():
        if h.get("stray"):
            lines.append(f"{name:8} (stray container, not part of this lab)")
            continue
        state = "running" if h["running"] else "stopped"
        svc = f"{h['service']}={h['service_state'] or '-'}"
        ssh = "yes" if h.get("ssh") else "no"
        lines.append(
            f"{name:8} {h['group']:6} {h['ip']:14} {state:9} {h['system'] or '-':10} {svc:28} {ssh:4} "
            f"{_memory_text(h)}"
        )
    for name, m in info["monitoring"].items():
        lines.append(f"{name:13} {'ready' if m['ready'] else 'not answering'} {m['url']} pids={m['pids']}")
    lines.extend(_compose_text(info.get("compose") or {}))
    if info["bridge"]:  # a lab taken down has no faults in, whatever the checks of stopped hosts say
        active = [name for name, on in info["faults"].items() if on]
        lines.append(f"faults: {', '.join(active) or 'none'}")
    if info.get("inventory"):
        lines.append(f"inventory: {info['inventory']}")
    return "\n".join(lines)


def _compose_text(c: dict[str, Any]) -> list[str]:
    """The compose host: its engine, release and each container's state, health, restarts, OOM kill."""
    if not c.get("engine"):
        return ["compose1      docker engine not running"]
    lines = [
        f"compose1      docker engine pid {c['engine_pid']} {c['socket']}  release {c.get('release') or '-'}"
    ]
    for service, st in (c.get("containers") or {}).items():
        if not st:
            lines.append(f"  {service:11} no container")
            continue
        lines.append(
            f"  {service:11} {st['name']:20} {st['status']:9} health={st['health'] or '-':9} "
            f"restarts={st['restarts']} oom_killed={'yes' if st['oom_killed'] else 'no'}"
        )
    return lines


def _memory_text(h: dict[str, Any]) -> str:
    if not h.get("memory_limit"):
        return "-"
    used = (h.get("memory_usage") or 0) / 2**20
    text = f"{used:.0f}/{h['memory_limit'] / 2**20:.0f} MiB"
    return text + (f" oom_kills={h['oom_kills']}" if h.get("oom_kills") else "")


def _echo(out: str | dict[str, Any]) -> None:
    click.echo(out if isinstance(out, str) else json.dumps(out, indent=2, default=str))


@main.command("break")
@click.argument("name")
@state_dir_option
def break_cmd(name: str, state_dir: str | None) -> None:
    """Inject fault NAME into the lab (holds /tmp/collector-lab.lock)."""
    _echo(faults.break_fault(name, _settings(state_dir)))


@main.command("heal")
@click.argument("name")
@state_dir_option
def heal_cmd(name: str, state_dir: str | None) -> None:
    """Remove fault NAME (or `all`) and return the hosts to healthy."""
    _echo(faults.heal_fault(name, _settings(state_dir)))


@main.command("load")
@click.option("--seconds", default=30.0, type=float, show_default=True, help="How long to drive traffic.")
@click.option("--rps", default=20.0, type=float, show_default=True, help="Requests per second.")
@state_dir_option
def load_cmd(seconds: float, rps: float, state_dir: str | None) -> None:
    """Drive bounded traffic at the app so Prometheus has rates."""
    _echo(load.run_load(_settings(state_dir), seconds=seconds, rps=rps))


@main.command("demo")
@click.argument("scenario", metavar="SCENARIO")
@click.option("--workdir", default=".", show_default=True, help="Where bundles/, plans/ and audit/ go.")
@state_dir_option
def demo_cmd(scenario: str, workdir: str, state_dir: str | None) -> None:
    """Play one runbook scenario (break → collect → approve → fix → verify → report → heal);
    see collector_lab/demo.py."""
    if not demo.demo(demo.get_scenario(scenario).name, _settings(state_dir), workdir=workdir, say=click.echo):
        sys.exit(EXIT_PARTIAL)
