"""`lab up`, `lab down`, `lab status`, `lab reset`: the whole lab as one idempotent unit.

`up` is declarative: the core hosts (app1, db1, redis1) plus `extra` light hosts must run, anything
else of the lab is stopped; leftovers of an earlier session (processes, mounts, cgroups, a stale
bridge) are cleaned on the way. `down` leaves no container, mount, cgroup, bridge or process.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from collector.config import Settings
from collector.times import wait_until

from collector_lab import (
    BRIDGE,
    LAB_NAME,
    base,
    compose,
    faults,
    host_table,
    hosts,
    lab_dir,
    lab_state,
    monitoring,
)
from collector_lab.hosts import Log, _quiet
from collector_lab.lock import lab_lock


@dataclass
class UpResult:
    """What `lab up` did: per-host outcome, errors, timings."""

    hosts: dict[str, str] = field(default_factory=dict)  # host -> started|kept|failed: reason
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    provisioned: list[str] = field(default_factory=list)
    inventory: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def _save_state(settings: Settings, state: dict[str, Any]) -> None:
    hosts._write_json(lab_dir(settings) / "state.json", state)


def _known_hosts_in_state(settings: Settings) -> set[str]:
    found = set(hosts.nspawn_pids(settings))
    hdir = lab_dir(settings) / "hosts"
    if hdir.is_dir():
        found |= {p.name for p in hdir.iterdir() if (p / "root").is_dir() and hosts._mounted(p / "root")}
    for c in hosts.CGROUP_CONTROLLERS:
        top = hosts.CGROUP_ROOT / c / LAB_NAME
        if top.is_dir():
            found |= {p.name for p in top.iterdir() if p.is_dir()}
    return found


def up(settings: Settings, extra: int = 0, log: Log = _quiet, fresh: bool = False) -> UpResult:
    """Bring the lab to: core hosts + `extra` web hosts running, provisioned, monitored, inventoried.

    `fresh` first stops every host and drops its overlay, so each is provisioned anew from the base.
    """
    hosts.preflight()
    hosts.check_extra(extra)
    started_at = time.monotonic()
    result = UpResult()
    if not base.is_built(settings):
        log("base image not built yet: building it (a few minutes, once)")
        base.build(settings)
    with lab_lock():
        state = lab_state(settings)
        table = host_table(extra)
        # Overlay uppers hold the hosts' secrets under container uids/gids that mean other users here.
        (lab_dir(settings) / "hosts").mkdir(parents=True, exist_ok=True)
        (lab_dir(settings) / "hosts").chmod(0o700)
        secrets = hosts.ensure_secrets(settings)
        hosts.ssh_key(settings)
        hosts.check_subnet()
        # Anything of the lab that is not wanted any more (fewer web hosts, leftovers) goes first.
        unwanted = sorted(_known_hosts_in_state(settings) - set(table))
        if unwanted:
            log(f"stopping {', '.join(unwanted)} (not part of this lab)")
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda n: hosts.stop_host(settings, n), unwanted))
        if fresh:
            log("fresh: dropping every host's overlay and the monitoring's data")
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda n: hosts.drop_overlay(settings, n), sorted(set(table) | set(unwanted))))
            monitoring.stop(settings)  # a killed session's `down` never ran: its silences must not live on
            monitoring.drop_data(settings)
        hosts.ensure_bridge()
        if hosts.inotify_needed(len(table)) is None:
            hosts.restore_inotify(state)
        else:
            hosts.raise_inotify(settings, len(table), state)
        state.update({"bridge": BRIDGE, "extra": extra, "hosts": {n: dict(s) for n, s in table.items()}})
        _save_state(settings, state)

        kept = {n for n in table if hosts.is_running(settings, n)}
        # A running host must match this checkout; a stale one is provisioned anew (CI's fresh clone).
        stale = {n: r for n in sorted(kept) if (r := hosts.stale_reason(settings, n, str(table[n]["group"])))}
        for name, reason in stale.items():
            log(f"{name}: {reason}; restarting it")
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda n: hosts.stop_host(settings, n), stale))
        kept -= set(stale)
        launched = {name: hosts.start_host(settings, name, table, log) for name in table if name not in kept}
        with ThreadPoolExecutor(max_workers=min(16, len(table))) as pool:
            boots = dict(
                zip(table, pool.map(lambda n: hosts.wait_booted(settings, n, pid=launched.get(n)), table))
            )
        for name, boot in boots.items():
            if boot not in ("running", "degraded"):
                result.errors.append(
                    f"{name}: boot {boot} (see {lab_dir(settings) / 'hosts' / name / 'console.log'})"
                )
            result.hosts[name] = "kept" if name in kept else "started"
        _provision_all(settings, table, secrets, boots, result, log)
        extra_groups = _start_compose(settings, result, log)
        host_keys = {n: (lab_dir(settings) / "hosts" / n / "host_key.pub").read_text().strip() for n in table}
        written = hosts.write_inventory(settings, table, host_keys, secrets, extra_groups)
        state["inventory_paths"] = [str(p) for p in written]
        result.inventory = str(hosts.inventory_path(settings))
        _wait_ssh(table, result)
        try:
            state["monitoring"] = monitoring.start(
                settings, {n: str(s["ip"]) for n, s in table.items() if s["group"] == "app"}
            )
        except RuntimeError as exc:
            result.errors.append(f"monitoring: {exc}")
        result.seconds = round(time.monotonic() - started_at, 1)
        state.update(
            {
                "up": not result.errors,
                "up_seconds": result.seconds,
                "up_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "errors": result.errors,
            }
        )
        _save_state(settings, state)
    return result


def _start_compose(settings: Settings, result: UpResult, log: Log) -> dict[str, dict[str, Any]] | None:
    """The compose host (its engine, project and routing; ~20 s cold, a few s warm): its inventory group."""
    if any(str(result.hosts.get(n, "")).startswith("failed") for n in ("db1", "redis1")):
        result.errors.append("compose: not started (db1 or redis1 failed)")
        return None
    try:
        timings = compose.start(settings, log)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        result.errors.append(str(exc).splitlines()[0] if str(exc) else f"compose: {type(exc).__name__}")
        return None
    result.hosts[compose.HOST] = f"compose project up in {timings['seconds']}s"
    return {compose.GROUP: compose.inventory_group(settings)}


def _provision_all(
    settings: Settings,
    table: dict[str, dict[str, object]],
    secrets: dict[str, str],
    boots: dict[str, str],
    result: UpResult,
    log: Log,
) -> None:
    """common.sh everywhere, then the db/redis/web roles, then the app (it needs db and redis)."""
    todo = [
        n for n in table if boots.get(n) in ("running", "degraded") and hosts.needs_provisioning(settings, n)
    ]
    if not todo:
        return
    log(f"provisioning {', '.join(todo)}")
    failed: set[str] = set()

    def step(name: str, steps: tuple[str, ...], finish: bool) -> None:
        error = hosts.provision(settings, name, table[name], table, secrets, steps)
        if error is None and finish:
            error = hosts.finish_provisioning(settings, name, table[name])
        if error:
            failed.add(name)
            result.errors.append(f"{name}: {error}")
            result.hosts[name] = f"failed: {error}"

    with ThreadPoolExecutor(max_workers=min(16, len(todo))) as pool:
        list(pool.map(lambda n: step(n, ("common",), False), todo))
        first = [n for n in todo if table[n]["group"] != "app" and n not in failed]
        list(pool.map(lambda n: step(n, (str(table[n]["group"]),), True), first))
        apps = [n for n in todo if table[n]["group"] == "app" and n not in failed]
        list(pool.map(lambda n: step(n, ("app",), True), apps))
    result.provisioned = [n for n in todo if n not in failed]


def _wait_ssh(table: dict[str, dict[str, object]], result: UpResult, timeout: float = 30.0) -> None:
    waiting = [n for n in table if not str(result.hosts.get(n, "")).startswith("failed")]

    def all_answer() -> bool:
        waiting[:] = [n for n in waiting if not hosts.port_open(str(table[n]["ip"]), 22)]
        return not waiting

    wait_until(all_answer, timeout)
    for name in waiting:
        result.errors.append(f"{name}: sshd not answering on {table[name]['ip']}:22")


def down(settings: Settings, log: Log = _quiet) -> list[str]:
    """Stop everything the lab runs and remove its traces; returns what was stopped."""
    hosts.preflight()
    with lab_lock():
        return _down(settings)


def _down(settings: Settings) -> list[str]:
    state = lab_state(settings)
    names = sorted(_known_hosts_in_state(settings) | set(state.get("hosts", {}) or {}))
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(names)))) as pool:
        list(pool.map(lambda n: hosts.stop_host(settings, n), names))
    compose.stop(settings)
    monitoring.stop(settings)
    monitoring.drop_data(settings)
    hosts.delete_bridge()
    hosts.restore_inotify(state)
    hosts.remove_inventory(
        list(state.get("inventory_paths", []))
        + [
            str(d / f)
            for d in hosts.inventory_dirs(settings)
            for f in ("lab.yml", "lab_known_hosts", "lab_ssh_config")
        ]
    )
    for c in hosts.CGROUP_CONTROLLERS:
        top = hosts.CGROUP_ROOT / c / LAB_NAME
        if top.is_dir():
            try:
                top.rmdir()
            except OSError:
                pass
    state = {k: v for k, v in state.items() if k in ("inotify_orig",)}
    state["up"] = False
    _save_state(settings, state)
    return names


def reset(settings: Settings, log: Log = _quiet) -> None:
    """`down`, then forget the hosts' overlays, secrets, key and monitoring data (the base stays)."""
    hosts.preflight()
    with lab_lock():
        _down(settings)
        d = lab_dir(settings)
        for sub in ("hosts", "monitoring", "ssh", "inventory", "compose", "docker"):
            shutil.rmtree(d / sub, ignore_errors=True)
        for f in ("secrets.json", "state.json"):
            (d / f).unlink(missing_ok=True)


def status(settings: Settings) -> dict[str, Any]:
    """The lab as it is now: each host (running, services, provisioned), monitoring, bridge, faults."""
    state = lab_state(settings)
    table: dict[str, Any] = state.get("hosts") or host_table(0)
    running = hosts.nspawn_pids(settings)
    out_hosts: dict[str, Any] = {}

    def one(name: str) -> tuple[str, dict[str, Any]]:
        spec = table[name]
        info: dict[str, Any] = {
            "group": spec["group"],
            "ip": spec["ip"],
            "running": name in running,
            "service": spec["service"],
            "service_state": None,
            "system": None,
            "provisioned": not hosts.needs_provisioning(settings, name),
        }
        info.update(_memory(name))
        if info["running"]:
            info["system"] = hosts.run_in(
                settings, name, ["systemctl", "is-system-running"], timeout=10
            ).stdout.strip()
            info["service_state"] = hosts.run_in(
                settings, name, ["systemctl", "is-active", str(spec["service"])], timeout=10
            ).stdout.strip()
            info["ssh"] = hosts.port_open(str(spec["ip"]), 22)
        return name, info

    names = sorted(set(table) | set(running), key=lambda n: (n not in table, n))
    with ThreadPoolExecutor(max_workers=8) as pool:
        for name, info in pool.map(
            lambda n: one(n) if n in table else (n, {"running": True, "stray": True}), names
        ):
            out_hosts[name] = info
    bridge = hosts._run(["ip", "link", "show", BRIDGE], check=False).returncode == 0
    compose_info = compose.status(settings)
    up_now = bool(out_hosts) and all(h.get("running") for h in out_hosts.values()) and bridge
    up_now = up_now and (compose_info["engine"] or not compose.wanted(settings))
    return {
        "up": up_now and bool(state.get("up")),
        "bridge": bridge,
        "hosts": out_hosts,
        "compose": compose_info,
        "monitoring": monitoring.status(settings),
        "faults": faults.active_faults(settings),
        "inventory": str(hosts.inventory_path(settings)) if hosts.inventory_path(settings).exists() else None,
        "up_seconds": state.get("up_seconds"),
        "errors": state.get("errors", []),
    }


def _memory(name: str) -> dict[str, int | None]:
    """The host's v1 memory cgroup: limit, usage and how often the kernel OOM-killed in it."""
    cg = hosts.memory_cgroup(name)
    out: dict[str, int | None] = {"memory_limit": None, "memory_usage": None, "oom_kills": None}
    try:
        out["memory_limit"] = int((cg / "memory.limit_in_bytes").read_text())
        out["memory_usage"] = int((cg / "memory.usage_in_bytes").read_text())
        for line in (cg / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                out["oom_kills"] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return out


def is_up(settings: Settings) -> bool:
    """Cheap check used by tests: state says up and the inventory exists and every host runs."""
    state = lab_state(settings)
    if not state.get("up") or not hosts.inventory_path(settings).exists():
        return False
    running = hosts.nspawn_pids(settings)
    return all(name in running for name in (state.get("hosts") or {}))
