"""The lab: systemd-nspawn test hosts on a bridge, the sample app, faults and monitoring.

Layout of the lab's state (outside the repository, under `Settings.state_dir`):

    base/<recipe-hash>/rootfs      the read-only Debian bookworm base (collector_lab.base)
    lab/secrets.json               random per-lab passwords and token (mode 0600)
    lab/ssh/id_ed25519[.pub]       the lab's SSH key
    lab/state.json                 what `lab up` started (hosts, pids, bridge, inotify, monitoring)
    lab/hosts/<host>/{upper,work,root,console.log}   each host's overlay and boot log
    lab/monitoring/{prometheus,alertmanager}/        config + data of the loopback monitoring
    lab/inventory/lab.yml, lab_known_hosts           the canonical inventory (also copied to ./inventory/)

Anything that breaks, heals or changes a lab host holds the lab lock (collector_lab.lock).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from collector.config import Settings, load_settings

LAB_NAME = "iclab"
BRIDGE = "iclab0"
SUBNET = "10.203.57.0/24"
COMPOSE_SUBNET = "10.203.58.0/24"  # the compose host's containers (collector_lab.compose)
BRIDGE_IP = "10.203.57.1"
PREFIX_LEN = 24

CORE_HOSTS: dict[str, dict[str, object]] = {
    # host: group, last octet, role's systemd unit, memory limit (v1 memory cgroup, bytes)
    "app1": {"group": "app", "octet": 11, "service": "sergas-app", "memory": 1536 * 2**20},
    "db1": {"group": "db", "octet": 12, "service": "postgresql", "memory": 1024 * 2**20},
    "redis1": {"group": "redis", "octet": 13, "service": "redis-server", "memory": 512 * 2**20},
}
WEB_MEMORY = 256 * 2**20
MAX_EXTRA = 99  # webNN: .100+N must stay inside the /24


def web_name(n: int) -> str:
    """The name of the n-th light host (web01, web02, ...)."""
    return f"web{n:02d}"


def host_table(extra: int = 0) -> dict[str, dict[str, object]]:
    """Every host of a lab with `extra` light hosts: group, ip, service, memory limit."""
    table: dict[str, dict[str, object]] = {}
    for name, spec in CORE_HOSTS.items():
        table[name] = {**spec, "ip": f"10.203.57.{spec['octet']}"}
    for n in range(1, extra + 1):
        table[web_name(n)] = {
            "group": "web",
            "octet": 100 + n,
            "service": "ssh",
            "memory": WEB_MEMORY,
            "ip": f"10.203.57.{100 + n}",
        }
    return table


def lab_dir(settings: Settings | None = None) -> Path:
    """The lab's state folder (secrets, keys, overlays, monitoring data)."""
    settings = settings or load_settings()
    return Path(settings.state_dir) / "lab"


def lab_secrets(settings: Settings | None = None) -> dict[str, str]:
    """The running lab's secrets (db_password, redis_password, api_token); {} when none."""
    path = lab_dir(settings) / "secrets.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def lab_state(settings: Settings | None = None) -> dict[str, Any]:
    """What `lab up` recorded in state.json; {} when the lab was never started or is down."""
    path = lab_dir(settings) / "state.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_PACKAGE = Path(__file__).resolve().parent


def assets() -> Path:
    """The lab's asset folder (app, faults, monitoring, provision): inside the wheel, or lab/ of a checkout.

    Every host bind-mounts it read-only as /srv/lab, and a running host is restarted by `up` when its
    mount names another folder, so the path must stay the same for one install.
    """
    shipped = _PACKAGE / "_data"
    if (shipped / "provision").is_dir():
        return shipped
    checkout = _PACKAGE.parent
    if (checkout / "provision").is_dir():
        return checkout
    raise FileNotFoundError(
        f"collector-lab is installed without its assets (looked in {shipped} and {checkout})"
    )


def is_root() -> bool:
    """Whether this process runs as root (the lab needs it)."""
    return os.geteuid() == 0
