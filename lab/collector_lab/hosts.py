"""The lab's hosts: systemd-nspawn containers booted on a bridge, each on its own overlay of the base.

Facts of this machine that shape the code (issue 2): PID 1 is not systemd and cgroups are hybrid,
so every launcher first moves itself into its own cgroup (name=systemd, unified and a v1 memory
cgroup with a limit, which makes a real kernel OOM kill possible) and nspawn runs with
`--register=no --keep-unit`; `machinectl` does not work, so hosts are reached by ssh or
`nsenter -t <container pid 1> -a`; many containers need a higher `fs.inotify.max_user_instances`.

Provisioning hook (runs once per fresh overlay, after the host has booted):
`lab/provision/common.sh` then `lab/provision/<role>.sh` run inside the host through nsenter, as
root, with a clean environment holding only PATH, HOME and these variables:

    LAB_HOST            the host's name (app1, db1, redis1, web01...)
    LAB_ROLE            its group: app | db | redis | web
    LAB_SRC             /srv/lab, the project's lab/ folder bind-mounted read-only into every host
    LAB_IP              the host's own bridge address
    LAB_APP_HOST, LAB_DB_HOST, LAB_REDIS_HOST   bridge IPs of app1, db1, redis1 (names also in /etc/hosts)
    LAB_BRIDGE_IP       the control machine's address on the bridge (Prometheus scrapes from it)
    LAB_SUBNET          10.203.57.0/24 (for pg_hba.conf and bind addresses)
    LAB_COMPOSE_SUBNET  10.203.58.0/24, the compose host's containers (collector_lab.compose), routed
                        through the control machine
    LAB_DB_NAME, LAB_DB_USER            sergas, sergas
    LAB_DB_PASSWORD, LAB_REDIS_PASSWORD, LAB_API_TOKEN   the lab's random secrets (secrets.json)
    LAB_APP_PORT        8000
    LAB_MEMORY_LIMIT    the host's memory cgroup limit in bytes

A script's non-zero exit fails `lab up` for that host (its output is in hosts/<host>/provision.log).
After the role script the hook runs `systemctl enable --now <role's unit>` if the unit exists, and
writes /var/lib/collector-lab/provisioned (the hash of common.sh, <role>.sh and, for app and db,
lab/app) so a later `lab up` skips provisioning; when those files change, a stopped host's overlay
is recreated.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.config import Settings
from collector.core import UsageError
from collector.paths import resource
from collector.times import wait_until

from collector_lab import (
    BRIDGE,
    BRIDGE_IP,
    COMPOSE_SUBNET,
    LAB_NAME,
    MAX_EXTRA,
    PREFIX_LEN,
    SUBNET,
    assets,
    base,
    host_table,
    lab_dir,
    lab_secrets,
)

Log = Callable[[str], None]
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("systemd", "unified", "memory")
MARKER = "var/lib/collector-lab/provisioned"
CONTAINER_LAB_SRC = "/srv/lab"
INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_PER_HOST = 12  # measured 8-11 per booted container
BOOT_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _quiet(msg: str) -> None:
    return None


# ---------------------------------------------------------------- preflight


def preflight() -> None:
    """Root and systemd-nspawn, or one clear UsageError naming what is missing."""
    if os.geteuid() != 0:
        raise UsageError(
            "the lab needs root: run `collector-lab` as root (it mounts, bridges and boots containers)"
        )
    for tool, package in (
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
        ("ssh-keygen", "openssh-client"),
    ):
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} is not installed: apt-get install {package}")


def check_extra(extra: int) -> None:
    if not 0 <= extra <= MAX_EXTRA:
        raise UsageError(f"--extra must be between 0 and {MAX_EXTRA}, not {extra}")


# ---------------------------------------------------------------- small helpers


def _run(
    argv: list[str],
    *,
    check: bool = True,
    timeout: float = 60.0,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        env=env,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])}... failed (rc {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ''}"
        )
    return proc


def _host_dir(settings: Settings, name: str) -> Path:
    return lab_dir(settings) / "hosts" / name


def _cgroup_dirs(name: str) -> list[Path]:
    return [CGROUP_ROOT / c / LAB_NAME / name for c in CGROUP_CONTROLLERS]


def memory_cgroup(name: str) -> Path:
    """The v1 memory cgroup holding host `name` (memory.limit_in_bytes, memory.oom_control...)."""
    return CGROUP_ROOT / "memory" / LAB_NAME / name


def _mounted(path: Path) -> bool:
    target = str(path)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[1].replace("\\040", " ") == target:
            return True
    return False


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def nspawn_pids(settings: Settings, name: str | None = None) -> dict[str, list[int]]:
    """Running systemd-nspawn processes of this lab (found by their --directory), by host name."""
    prefix = f"--directory={lab_dir(settings) / 'hosts'}/"
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if not argv or not argv[0].endswith("systemd-nspawn"):
            continue
        for arg in argv:
            if arg.startswith(prefix):
                host = arg[len(prefix) :].split("/")[0]
                if name is None or host == name:
                    found.setdefault(host, []).append(int(entry.name))
    return found


def lab_src_arg() -> str:
    """nspawn's bind of this checkout's (or wheel's) lab/ folder into every host."""
    return f"--bind-ro={assets()}:{CONTAINER_LAB_SRC}"


def runs_current_lab_src(settings: Settings, name: str) -> bool:
    """Whether the running host sees this checkout's lab/ (not one of an older clone)."""
    return any(lab_src_arg() in _cmdline(pid) for pid in nspawn_pids(settings, name).get(name, []))


def leader_pid(settings: Settings, name: str) -> int | None:
    """PID (on this machine) of the host's own systemd, or None when it is not running."""
    for pid in nspawn_pids(settings, name).get(name, []):
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
            except OSError:
                continue
    return None


def run_in(
    settings: Settings,
    name: str,
    argv: list[str],
    *,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv inside host `name` through nsenter (all namespaces), never raising on rc != 0."""
    pid = leader_pid(settings, name)
    if pid is None:
        return subprocess.CompletedProcess(argv, 255, "", f"{name} is not running")
    base_env = {"PATH": PATH_ENV, "HOME": "/root", "LANG": "C.UTF-8"}
    full = [
        "nsenter",
        "-t",
        str(pid),
        "-a",
        "--",
        "env",
        "-i",
        *[f"{k}={v}" for k, v in {**base_env, **(env or {})}.items()],
        *argv,
    ]
    try:
        return _run(full, check=False, timeout=timeout, input_text=input_text)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return subprocess.CompletedProcess(argv, 124, out, f"timed out after {timeout}s")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, mode)
    tmp.rename(path)


def _state_path(settings: Settings) -> Path:
    return lab_dir(settings) / "state.json"


# ---------------------------------------------------------------- secrets and keys


def ensure_secrets(settings: Settings) -> dict[str, str]:
    """The lab's random secrets, made once per lab (kept until `lab reset`)."""
    existing = lab_secrets(settings)
    if {"db_password", "redis_password", "api_token"} <= set(existing):
        return existing
    import secrets as _secrets

    made = {
        "db_password": "dbpw" + _secrets.token_hex(12),
        "redis_password": "rdpw" + _secrets.token_hex(12),
        "api_token": "tok" + _secrets.token_hex(16),
    }
    path = lab_dir(settings) / "secrets.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, made, mode=0o600)
    return made


def ssh_key(settings: Settings) -> Path:
    """The lab's private SSH key (ed25519), generated once."""
    key = lab_dir(settings) / "ssh" / "id_ed25519"
    if not key.exists() or not key.with_suffix(".pub").exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key.unlink(missing_ok=True)
        key.with_suffix(".pub").unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{LAB_NAME}-lab", "-f", str(key)])
    return key


# ---------------------------------------------------------------- network


def check_subnet() -> None:
    """The lab's subnet must exist nowhere but on its own bridge."""
    net = ipaddress.ip_network(SUBNET)
    addrs = json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    for link in addrs:
        if link.get("ifname") == BRIDGE:
            continue
        for info in link.get("addr_info", []):
            iface = ipaddress.ip_interface(f"{info['local']}/{info.get('prefixlen', 32)}")
            if iface.network.overlaps(net):
                raise UsageError(
                    f"subnet {SUBNET} is already used on {link.get('ifname')}; the lab needs it alone"
                )
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show"]).stdout or "[]")
    for route in routes:
        dst = route.get("dst", "")
        if route.get("dev") == BRIDGE or dst in ("", "default"):
            continue
        if ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False).overlaps(net):
            raise UsageError(f"subnet {SUBNET} is routed via {route.get('dev')}; the lab needs it alone")


def ensure_bridge() -> None:
    """Create (or repair) the lab bridge with the control machine's address on it."""
    show = _run(["ip", "-j", "-d", "link", "show", BRIDGE], check=False)
    if show.returncode == 0:
        info = json.loads(show.stdout or "[{}]")[0]
        if info.get("linkinfo", {}).get("info_kind") != "bridge":
            _run(["ip", "link", "del", BRIDGE])
            show = _run(["ip", "link", "show", BRIDGE], check=False)
    if show.returncode != 0:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addrs = json.loads(_run(["ip", "-j", "-4", "addr", "show", "dev", BRIDGE]).stdout or "[]")
    found = {f"{a['local']}/{a['prefixlen']}" for link in addrs for a in link.get("addr_info", [])}
    if found - {f"{BRIDGE_IP}/{PREFIX_LEN}"}:  # a stale bridge with some other address: start clean
        _run(["ip", "addr", "flush", "dev", BRIDGE])
    _run(["ip", "addr", "replace", f"{BRIDGE_IP}/{PREFIX_LEN}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])


def delete_bridge() -> None:
    if _run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
        _run(["ip", "link", "del", BRIDGE], check=False)


def _delete_veth(name: str) -> None:
    """Remove a leftover host-side veth; nspawn cannot create it again while it exists."""
    veth = f"vb-{name}"[:15]
    for _ in range(30):
        if _run(["ip", "link", "show", veth], check=False).returncode != 0:
            return
        _run(["ip", "link", "del", veth], check=False)
        time.sleep(0.1)


def port_open(ip: str, port: int, timeout: float = 0.5) -> bool:
    """Whether ip:port accepts a TCP connection (lab addresses and loopback only)."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- inotify


def inotify_needed(hosts: int) -> int | None:
    """The fs.inotify.max_user_instances that `hosts` containers need, None when the default does."""
    return None if hosts <= 8 else max(1024, 128 + hosts * INOTIFY_PER_HOST)


def raise_inotify(settings: Settings, hosts: int, state: dict[str, Any]) -> None:
    """Raise fs.inotify.max_user_instances when many hosts boot; remember the value to put back."""
    needed = inotify_needed(hosts)
    current = int(INOTIFY.read_text())
    if needed is None or current >= needed:
        return
    state.setdefault("inotify_orig", current)
    INOTIFY.write_text(str(needed))


def restore_inotify(state: dict[str, Any]) -> None:
    orig = state.pop("inotify_orig", None)
    if orig is not None:
        INOTIFY.write_text(str(orig))


# ---------------------------------------------------------------- overlay and host files


def provision_hash(role: str) -> str:
    """Hash of the files a host of `role` provisions from: common.sh, <role>.sh, lab/app for app and db."""
    digest = hashlib.sha256()
    lab = assets()
    files = [lab / "provision" / "common.sh", lab / "provision" / f"{role}.sh"]
    if role in ("app", "db"):  # db.sh loads the app's schema
        files += sorted(p for p in (lab / "app").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(lab)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _fresh_overlay_needed(hdir: Path, base_hash: str, role: str) -> bool:
    """A stopped host whose overlay was made on another base or other provisioning files is redone."""
    recorded = _read_json(hdir / "host.json")
    if not (hdir / "upper").exists():
        return False
    if recorded.get("base") != base_hash:
        return True
    marker = hdir / "upper" / MARKER
    return marker.exists() and marker.read_text().strip() != provision_hash(role)


def stale_reason(settings: Settings, name: str, role: str) -> str | None:
    """Why a running host no longer matches this checkout (base, provisioning files, lab/ bind), or None."""
    hdir = _host_dir(settings, name)
    if _read_json(hdir / "host.json").get("base") != base.recipe_hash():
        return "it runs on an older base"
    marker = hdir / "root" / MARKER
    if marker.exists() and marker.read_text().strip() != provision_hash(role):
        return "lab/provision or lab/app changed since it was provisioned"
    if not runs_current_lab_src(settings, name):
        return "it binds another checkout's lab/ folder"
    return None


def ensure_overlay(settings: Settings, name: str, role: str, log: Log) -> Path:
    """Mount the host's overlay (upper/work in its folder, the base read-only below); returns its root."""
    hdir = _host_dir(settings, name)
    root = hdir / "root"
    base_hash = base.recipe_hash()
    if _mounted(root):
        return root
    if _fresh_overlay_needed(hdir, base_hash, role):
        log(f"{name}: base or provisioning files changed, recreating its overlay")
        shutil.rmtree(hdir / "upper", ignore_errors=True)
        shutil.rmtree(hdir / "work", ignore_errors=True)
        (hdir / "provision.log").unlink(missing_ok=True)
    for sub in ("upper", "work", "root"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(hdir.parent, 0o700)  # see lifecycle.up: the uppers hold secrets
    lower = base.base_path(settings)
    opts = f"lowerdir={lower},upperdir={hdir / 'upper'},workdir={hdir / 'work'}"
    _run(["mount", "-t", "overlay", f"overlay-{LAB_NAME}-{name}", "-o", opts, str(root)])
    _write_json(hdir / "host.json", {"base": base_hash, "name": name})
    return root


def unmount_overlay(settings: Settings, name: str) -> None:
    root = _host_dir(settings, name) / "root"
    for _ in range(5):
        if not _mounted(root):
            return
        if _run(["umount", str(root)], check=False).returncode != 0:
            _run(["umount", "-l", str(root)], check=False)
        time.sleep(0.1)


def drop_overlay(settings: Settings, name: str) -> None:
    """Stop host `name` and forget its overlay: the next start provisions it from the base again."""
    stop_host(settings, name)
    hdir = _host_dir(settings, name)
    for sub in ("upper", "work"):
        shutil.rmtree(hdir / sub, ignore_errors=True)
    (hdir / "provision.log").unlink(missing_ok=True)


def _hosts_file(table: dict[str, dict[str, object]]) -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback", f"{BRIDGE_IP} control"]
    lines += [f"{spec['ip']} {host}" for host, spec in table.items()]
    return "\n".join(lines) + "\n"


def write_host_files(
    root: Path, name: str, spec: dict[str, object], table: dict[str, dict[str, object]], pubkey: str
) -> str:
    """Identity, address, authorized key and host key of one host; returns its host public key line."""
    (root / "etc/hostname").write_text(name + "\n")
    (root / "etc/hosts").write_text(_hosts_file(table))
    machine_id = root / "etc/machine-id"
    if not machine_id.exists() or not machine_id.read_text().strip():
        machine_id.write_text(uuid.uuid4().hex + "\n")  # fixed per host so its persistent journal stays one
    network = root / "etc/systemd/network"
    network.mkdir(parents=True, exist_ok=True)
    # Sorts before systemd's own 80-container-host0.network, which would give host0 a link-local address.
    (network / "80-lab-host0.network").unlink(missing_ok=True)
    (network / "10-lab-host0.network").write_text(
        f"[Match]\nName=host0\n\n[Network]\nAddress={spec['ip']}/{PREFIX_LEN}\nLinkLocalAddressing=no\n"
        "IPv6AcceptRA=no\n"
        # The compose host's containers answer through the control machine (no default route here).
        f"\n[Route]\nDestination={COMPOSE_SUBNET}\nGateway={BRIDGE_IP}\n"
    )
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (ssh_dir / "authorized_keys").write_text(pubkey)
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    host_key = root / "etc/ssh/ssh_host_ed25519_key"
    if not host_key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(host_key)])
    return host_key.with_suffix(".pub").read_text().split("#")[0].strip()


# ---------------------------------------------------------------- cgroups


def prepare_cgroups(name: str, memory_limit: int) -> list[Path]:
    """Fresh per-host cgroups (leftovers are emptied and removed first) with the memory limit set."""
    remove_cgroups(name)
    dirs = _cgroup_dirs(name)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    (memory_cgroup(name) / "memory.limit_in_bytes").write_text(str(memory_limit))
    return dirs


def _cgroup_pids(d: Path) -> list[int]:
    pids: list[int] = []
    for procs in d.rglob("cgroup.procs"):
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            continue
    return pids


def kill_cgroup(d: Path) -> None:
    """SIGKILL every process in a cgroup and the cgroups below it."""
    for pid in _cgroup_pids(d):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_cgroup_tree(d: Path) -> None:
    """Remove a cgroup and those below it, deepest first; a cgroup whose last process is still exiting
    refuses for a moment, so this tries for up to 5 s."""
    for _ in range(50):
        subdirs = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for sub in [*subdirs, d]:
            try:
                sub.rmdir()
            except OSError:
                pass
        if not d.exists():
            break
        time.sleep(0.1)


def remove_cgroups(name: str) -> None:
    """Kill whatever is left in the host's cgroups and remove them, deepest first."""
    for d in _cgroup_dirs(name):
        if not d.exists():
            continue
        kill_cgroup(d)
        remove_cgroup_tree(d)
    for c in CGROUP_CONTROLLERS:
        top = CGROUP_ROOT / c / LAB_NAME
        try:
            if top.exists() and not any(p.is_dir() for p in top.iterdir()):
                top.rmdir()
        except OSError:
            pass


# ---------------------------------------------------------------- start / stop one host


def _launcher(dirs: list[Path]) -> list[str]:
    """A shell that moves itself into the host's cgroups, then execs the rest of its arguments."""
    moves = "; ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in dirs)
    return ["/bin/sh", "-c", f'{moves} && exec "$@"', "lab-launcher"]


def start_host(
    settings: Settings, name: str, table: dict[str, dict[str, object]] | None = None, log: Log = _quiet
) -> int:
    """Boot host `name` (overlay, files, cgroups, nspawn); return its nspawn pid, also if already running."""
    table = table or host_table(int(_read_json(_state_path(settings)).get("extra", 0)))
    running = nspawn_pids(settings, name).get(name)
    if running:
        return running[0]
    spec = table[name]
    cleanup_host(settings, name)
    root = ensure_overlay(settings, name, str(spec["group"]), log)
    pubkey = ssh_key(settings).with_suffix(".pub").read_text()
    host_pub = write_host_files(root, name, spec, table, pubkey)
    hdir = _host_dir(settings, name)
    (hdir / "host_key.pub").write_text(host_pub + "\n")
    dirs = prepare_cgroups(name, int(spec["memory"]))  # type: ignore[call-overload]
    argv = [
        "systemd-nspawn",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--machine={name}",
        f"--directory={root}",
        f"--network-bridge={BRIDGE}",
        "--capability=CAP_SYSLOG",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--console=read-only",
        lab_src_arg(),
    ]
    console = (hdir / "console.log").open("wb")  # this boot's console only
    proc = subprocess.Popen(
        [*_launcher(dirs), *argv],
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    console.close()
    return proc.pid


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie left by an unreaped child counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def wait_booted(
    settings: Settings, name: str, timeout: float = BOOT_TIMEOUT_S, pid: int | None = None
) -> str:
    """Wait until the host's systemd finished booting; returns running/degraded/..., 'exited' or 'timeout'.

    `pid` is the launcher start_host returned: until its shell has exec'd systemd-nspawn no process of
    the host is visible by its command line, so its own liveness is what tells a host that exited early.
    """
    deadline = time.monotonic() + timeout

    def settled() -> str:
        """The host's boot state once it has one, "exited" if its launcher died, else "" (poll again)."""
        if leader_pid(settings, name) is not None:
            left = max(1.0, deadline - time.monotonic())
            res = run_in(settings, name, ["systemctl", "is-system-running", "--wait"], timeout=left)
            state = res.stdout.strip().splitlines()[-1:] or [""]
            if state[0] in ("running", "degraded", "maintenance", "stopping"):
                return state[0]
        if not (_alive(pid) if pid is not None else nspawn_pids(settings, name).get(name)):
            return "exited"
        return ""

    return wait_until(settled, timeout, 0.2) or "timeout"


def boot_stopped_host(settings: Settings, name: str, timeout: float = BOOT_TIMEOUT_S) -> float:
    """Boot one stopped, provisioned host of the running lab again and wait for its sshd; seconds it took.

    Only this host: its overlay (provisioning, host key, data) is kept, so the inventory, the other
    hosts and monitoring stay as they are (healing `host-down`). A host whose overlay must be made anew
    (base or provisioning files changed meanwhile) needs the whole `collector-lab up`: RuntimeError.
    """
    started = time.monotonic()
    state = _read_json(_state_path(settings))
    table: dict[str, dict[str, object]] = state.get("hosts") or host_table(int(state.get("extra", 0) or 0))
    if name not in table:
        raise UsageError(f"{name} is not a host of this lab ({', '.join(table)})")
    if is_running(settings, name):
        return 0.0
    if _fresh_overlay_needed(_host_dir(settings, name), base.recipe_hash(), str(table[name]["group"])):
        raise RuntimeError(
            f"{name} must be provisioned anew (base or lab/provision changed): run `collector-lab up`"
        )
    pid = start_host(settings, name, table)
    boot = wait_booted(settings, name, timeout=timeout, pid=pid)
    if boot not in ("running", "degraded"):
        raise RuntimeError(f"{name}: boot {boot} (see {_host_dir(settings, name) / 'console.log'})")
    if needs_provisioning(settings, name):
        raise RuntimeError(f"{name} booted unprovisioned: run `collector-lab up`")
    ip = str(table[name]["ip"])
    if not wait_until(lambda: port_open(ip, 22), 30.0):
        raise RuntimeError(f"{name}: sshd not answering on {ip}:22")
    return round(time.monotonic() - started, 1)


def stop_host(settings: Settings, name: str, timeout: float = STOP_TIMEOUT_S) -> None:
    """Halt host `name` cleanly (SIGTERM to nspawn), then remove its mount, cgroups and veth."""
    pids = nspawn_pids(settings, name).get(name, [])
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    wait_until(lambda: not [p for p in pids if Path(f"/proc/{p}").exists() and _cmdline(p)], timeout, 0.1)
    cleanup_host(settings, name)


def cleanup_host(settings: Settings, name: str) -> None:
    """Remove every trace of a host that is not meant to run: processes, cgroups, mount, veth."""
    for pid in nspawn_pids(settings, name).get(name, []):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    remove_cgroups(name)
    unmount_overlay(settings, name)
    _delete_veth(name)


def is_running(settings: Settings, name: str) -> bool:
    return leader_pid(settings, name) is not None


# ---------------------------------------------------------------- provisioning


def provision_env(
    name: str, spec: dict[str, object], table: dict[str, dict[str, object]], secrets: dict[str, str]
) -> dict[str, str]:
    """The environment the provisioning scripts get (see the module docstring)."""
    ips = {host: str(s["ip"]) for host, s in table.items()}
    return {
        "LAB_HOST": name,
        "LAB_ROLE": str(spec["group"]),
        "LAB_SRC": CONTAINER_LAB_SRC,
        "LAB_IP": str(spec["ip"]),
        "LAB_APP_HOST": ips["app1"],
        "LAB_DB_HOST": ips["db1"],
        "LAB_REDIS_HOST": ips["redis1"],
        "LAB_BRIDGE_IP": BRIDGE_IP,
        "LAB_SUBNET": SUBNET,
        "LAB_COMPOSE_SUBNET": COMPOSE_SUBNET,
        "LAB_DB_NAME": "sergas",
        "LAB_DB_USER": "sergas",
        "LAB_DB_PASSWORD": secrets["db_password"],
        "LAB_REDIS_PASSWORD": secrets["redis_password"],
        "LAB_API_TOKEN": secrets["api_token"],
        "LAB_APP_PORT": "8000",
        "LAB_MEMORY_LIMIT": str(spec["memory"]),
    }


def needs_provisioning(settings: Settings, name: str) -> bool:
    return not (_host_dir(settings, name) / "root" / MARKER).exists()


def provision(
    settings: Settings,
    name: str,
    spec: dict[str, object],
    table: dict[str, dict[str, object]],
    secrets: dict[str, str],
    steps: tuple[str, ...],
) -> str | None:
    """Run the given provisioning steps ('common', role) in the host; returns an error or None."""
    hdir = _host_dir(settings, name)
    env = provision_env(name, spec, table, secrets)
    scripts = assets() / "provision"
    with (hdir / "provision.log").open("a") as out:
        for step in steps:
            script = scripts / f"{step}.sh"
            if not script.is_file():
                out.write(f"== {step}: no {script.name}, skipped\n")
                continue
            started = time.monotonic()
            res = run_in(
                settings,
                name,
                ["/bin/bash", f"{CONTAINER_LAB_SRC}/provision/{step}.sh"],
                env=env,
                timeout=300,
            )
            out.write(
                f"== {step}.sh rc={res.returncode} {time.monotonic() - started:.1f}s\n"
                f"{res.stdout}{res.stderr}\n"
            )
            if res.returncode != 0:
                tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
                return f"{step}.sh failed (rc {res.returncode}): {tail[0]} (see {hdir / 'provision.log'})"
    return None


def finish_provisioning(settings: Settings, name: str, spec: dict[str, object]) -> str | None:
    """Enable the role's unit when it exists and write the provisioned marker."""
    service = str(spec["service"])
    exists = run_in(settings, name, ["systemctl", "cat", f"{service}.service"], timeout=30)
    if exists.returncode == 0:
        res = run_in(settings, name, ["systemctl", "enable", "--now", f"{service}.service"], timeout=120)
        if res.returncode != 0:
            return f"systemctl enable --now {service} failed: {res.stderr.strip()[-200:]}"
    marker = _host_dir(settings, name) / "root" / MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(provision_hash(str(spec["group"])) + "\n")
    return None


# ---------------------------------------------------------------- inventory


def inventory_dirs(settings: Settings) -> list[Path]:
    """Where `lab up` writes lab.yml + lab_known_hosts: the state dir, and the inventory folder."""
    dirs = [lab_dir(settings) / "inventory"]
    candidates = [Path(settings.inventory)]
    try:
        shipped = resource("inventory")
        if "_data" not in shipped.parts:  # a source checkout: its inventory/ is the README's
            candidates.append(shipped)
    except FileNotFoundError:
        pass
    for cand in candidates:
        if cand.is_dir() and cand.resolve() not in [d.resolve() for d in dirs]:
            dirs.append(cand.resolve())
    return dirs


def inventory_path(settings: Settings) -> Path:
    """The canonical lab inventory (under the state dir; copies sit in ./inventory)."""
    return lab_dir(settings) / "inventory" / "lab.yml"


def host_vars(
    name: str, spec: dict[str, object], key: Path, known_hosts: Path, secrets: dict[str, str]
) -> dict[str, object]:
    """Per-host inventory variables (CONTRACTS.md)."""
    hv: dict[str, object] = {
        "ansible_host": spec["ip"],
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
        "ansible_python_interpreter": "/usr/bin/python3",
        "collector_service": spec["service"],
        "collector_memory_limit_bytes": spec["memory"],
    }
    group = spec["group"]
    if group == "app":
        hv.update(
            {
                "collector_deploy_dir": "/opt/sergas/app",
                "collector_env_file": "/opt/sergas/app/.env",
                "collector_app_url": "http://127.0.0.1:8000",
                "collector_app_port": 8000,
                # nginx in front of the app on :80 (lab/provision/app.sh): its unit and Debian's log files
                "collector_nginx_service": "nginx",
                "collector_nginx_access_log": "/var/log/nginx/access.log",
                "collector_nginx_error_log": "/var/log/nginx/error.log",
                # The runbook's MemoryLimit is 4G; the lab's app host has 1.5 GiB, so a 4G limit would
                # bound nothing here: the lab's deployment sets a limit below its host's memory.
                "collector_memory_limit_target": "1G",
            }
        )
    elif group == "db":
        hv.update(
            {
                "collector_pg_database": "sergas",
                "collector_pg_os_user": "postgres",
                "collector_pg_app_user": "sergas",
                "collector_pg_log_dir": "/var/log/postgresql",
                # The runbook kills idle connections older than 5 minutes; the lab's faults leave idle
                # connections only seconds old (a scenario lasts a minute), so the lab kills every idle one.
                "collector_idle_minutes_target": 0,
            }
        )
    elif group == "redis":
        hv.update({"collector_redis_port": 6379, "collector_redis_password": secrets["redis_password"]})
    return hv


# The runbook's step 5 "test critical flows" for the sample app (verify runs them on each app host; see
# collector/smoke.py). The business reads a customer does, served through the cache and the database.
# Not /api/zoho/sync: it answers 503 by design while the circuit breaker is open (a mitigation) and
# 502 while Zoho rate-limits; the breaker's state is judged by its own alert.
SMOKE_FLOWS: list[dict[str, Any]] = [
    {"name": "health", "path": "/health", "json": {"status": "healthy"}},
    {"name": "recent orders", "path": "/api/orders", "json_keys": ["orders"]},
    {"name": "a customer's orders", "path": "/api/orders?customer_id=1", "json_keys": ["orders.0.id"]},
    {"name": "customers", "path": "/api/customers", "json_keys": ["customers.0.email"]},
]


def write_inventory(
    settings: Settings,
    table: dict[str, dict[str, object]],
    host_keys: dict[str, str],
    secrets: dict[str, str],
    extra_groups: dict[str, dict[str, Any]] | None = None,
) -> list[Path]:
    """Write lab.yml, lab_known_hosts and lab_ssh_config into every inventory folder; returns the files.

    `extra_groups` go beside the `lab` group (the compose host's `compose`), so `--hosts lab` stays the
    nspawn hosts.
    """
    import yaml

    key = ssh_key(settings)
    written: list[Path] = []
    for folder in inventory_dirs(settings):
        folder.mkdir(parents=True, exist_ok=True)
        known = folder / "lab_known_hosts"
        known.write_text("".join(f"{name},{table[name]['ip']} {host_keys[name]}\n" for name in table))
        groups: dict[str, dict[str, Any]] = {g: {"hosts": {}} for g in ("app", "db", "redis", "web")}
        for name, spec in table.items():
            groups[str(spec["group"])]["hosts"][name] = host_vars(name, spec, key, known, secrets)
        groups["app"]["vars"] = {"collector_smoke_flows": SMOKE_FLOWS}
        doc = {
            "all": {
                "vars": {
                    "collector_prometheus_url": "http://127.0.0.1:9090",
                    "collector_alertmanager_url": "http://127.0.0.1:9093",
                },
                "children": {"lab": {"children": groups}, **(extra_groups or {})},
            }
        }
        inv = folder / "lab.yml"
        header = "# Written by `collector-lab up`; removed by `collector-lab down`. Do not edit.\n"
        inv.write_text(header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        os.chmod(inv, 0o600)  # it holds the Redis password
        if folder != inventory_path(settings).parent:
            written += [inv, known]
            continue
        ssh_config = folder / "lab_ssh_config"  # only in the state dir: the repo's .gitignore lacks it
        ssh_config.write_text(
            "".join(
                f"Host {name}\n  HostName {spec['ip']}\n  User root\n  IdentityFile {key}\n"
                f"  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  HostKeyAlias {name}\n"
                for name, spec in table.items()
            )
        )
        written += [inv, known, ssh_config]
    return written


def remove_inventory(paths: list[str]) -> None:
    for p in paths:
        Path(p).unlink(missing_ok=True)
