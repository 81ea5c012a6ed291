"""Fleet scale (issue 17): 3, 33 and 100 real lab hosts, and 100 / 300 / 1,000 simulated endpoints.

Holds the lab lock for the whole run (the lab is shared: nobody breaks a host under us, and we give it
back as we found it). In one run:

  lab       `collector-lab up --extra N` (default 97: 100 hosts): boot wall time, the memory the hosts take
            (MemAvailable before/after, and the sum of the hosts' memory cgroups), kernel limits on the way
  hosts     at 3, 33 and 100 hosts, on the same hosts and the same probe set (bench_collect's helpers):
            floor       one OpenSSH connection per host, all at once, that host's probes run concurrently
            collect-ssh our `collect --engine ssh` (default settings), with the controller's peak RSS,
                        CPU seconds and peak open file descriptors
            ansible-plain  plain ansible-playbook with its defaults: forks 5, facts, no pipelining,
                        one shell task per probe
  endpoints every lab host's sshd also listens on extra ports (a drop-in this bench adds and removes), an
            inventory of 100 / 300 / 1,000 host entries over them and a one-probe catalogue: the controller's
            own cost per host (wall, CPU seconds, peak RSS, peak fds) and its growth factor

then `collector-lab up` puts the lab back to its 3 hosts (and the kernel limits back). Prints a Markdown
section; `--results` appends it to bench/RESULTS.md.

    .venv/bin/python bench/bench_fleet.py                          # everything (about 25 minutes)
    .venv/bin/python bench/bench_fleet.py --extra 30 --sizes 3,33  # a smaller fleet
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_collect as bc
from collector_lab import hosts as lab_hosts
from collector_lab import lab_dir, lab_state
from collector_lab.lock import lab_lock

from collector.config import load_settings
from collector.inventory import load_inventory

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DROP_IN = "/etc/ssh/sshd_config.d/zz-bench-fleet.conf"
FIRST_EXTRA_PORT = 2201
# OpenSSH's MAX_LISTEN_SOCKS is 16: port 22 plus 15 more, one socket each (AddressFamily inet; with IPv6 too
# each port takes two, and an sshd asked for more exits "Too many listen sockets" at reload).
MAX_EXTRA_PORTS = 15
KERNEL = {
    "fs.inotify.max_user_instances": "/proc/sys/fs/inotify/max_user_instances",
    "fs.inotify.max_user_watches": "/proc/sys/fs/inotify/max_user_watches",
    "kernel.keys.maxkeys": "/proc/sys/kernel/keys/maxkeys",
    "kernel.keys.maxbytes": "/proc/sys/kernel/keys/maxbytes",
    "kernel.pid_max": "/proc/sys/kernel/pid_max",
}


class BenchError(Exception):
    """The benchmark cannot go on (lab did not come up, a contender failed): said loudly, exit 1."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def kernel_values() -> dict[str, str]:
    return {k: Path(p).read_text().strip() for k, p in KERNEL.items() if Path(p).exists()}


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def lab_cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "collector-lab"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def kernel_use() -> dict[str, int]:
    """What the booted lab actually uses of the limits it might hit: inotify instances (all users),
    root's keyring keys, processes."""
    inotify = 0
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            inotify += sum(1 for fd in fd_dir.iterdir() if os.readlink(fd) == "anon_inode:inotify")
        except OSError:
            continue
    keys = 0
    for line in Path("/proc/key-users").read_text().splitlines():
        if line.split(":")[0].strip() == "0":
            keys = int(line.split()[3].split("/")[0])
    processes = int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    return {"inotify_instances": inotify, "root_keys": keys, "processes": processes}


def hosts_memory_mb(names: list[str]) -> float:
    total = 0
    for name in names:
        try:
            total += int((lab_hosts.memory_cgroup(name) / "memory.usage_in_bytes").read_text())
        except (OSError, ValueError):
            pass
    return total / 2**20


def lab_up(extra: int) -> dict[str, Any]:
    """Boot the lab with `extra` web hosts; what it took."""
    before = {"mem_available_mb": mem_available_mb(), "kernel": kernel_values()}
    t0 = time.perf_counter()
    proc = lab_cli("up", "--extra", str(extra))
    wall = time.perf_counter() - t0
    names = sorted(lab_state().get("hosts") or {})
    running = lab_hosts.nspawn_pids(load_settings())
    status = lab_cli("status", "--json", timeout=600)
    systems: dict[str, int] = {}
    try:
        for info in json.loads(status.stdout)["hosts"].values():
            systems[str(info.get("system"))] = systems.get(str(info.get("system")), 0) + 1
    except (ValueError, KeyError):
        systems = {"status failed": 1}
    out = {
        "extra": extra,
        "rc": proc.returncode,
        "wall_s": wall,
        "hosts": len(names),
        "running": len(running),
        "mem_available_before_mb": before["mem_available_mb"],
        "mem_available_after_mb": mem_available_mb(),
        "hosts_cgroup_mb": hosts_memory_mb(names),
        "web_cgroup_mb": hosts_memory_mb([n for n in names if n.startswith("web")]),
        "kernel_before": before["kernel"],
        "kernel_after": kernel_values(),
        "use": kernel_use(),
        "systems": systems,
        "tail": (proc.stdout + proc.stderr)[-1500:],
    }
    return out


# ---------------------------------------------------------------- measuring one controller process


def measure(argv: list[str], work: Path, timeout: float = 1800) -> dict[str, Any]:
    """Run a command; its wall time, CPU seconds, peak RSS (wait4) and peak open fds (polled /proc)."""
    out_path = work / f"stdout-{time.monotonic_ns()}.txt"
    peak_fds = 0
    done = threading.Event()
    with out_path.open("w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

        def poll_fds() -> None:
            nonlocal peak_fds
            while not done.is_set():
                try:
                    peak_fds = max(peak_fds, len(os.listdir(f"/proc/{proc.pid}/fd")))
                except OSError:
                    pass
                done.wait(0.02)

        poller = threading.Thread(target=poll_fds, daemon=True)
        poller.start()
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        done.set()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text()
    summary = json.loads(text) if text.strip().startswith("{") else {}
    return {
        "rc": proc.returncode,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "fds": peak_fds,
        "summary": summary,
    }


def collect_argv(inventory: str, pattern: str, out: Path, *extra: str) -> list[str]:
    return [str(BIN / "collect"), "--hosts", pattern, "-i", inventory, "--out", str(out), "--json", *extra]


def host_counts(m: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    hosts = (m.get("summary") or {}).get("hosts") or {}
    for value in hosts.values() if isinstance(hosts, dict) else []:
        status = value.get("status", "?") if isinstance(value, dict) else str(value)
        counts[status] = counts.get(status, 0) + 1
    return counts


def bundle_statuses(summary: dict[str, Any]) -> dict[str, int]:
    """Host statuses from the bundle's manifest (the --json summary names the bundle)."""
    bundle = summary.get("bundle")
    if not bundle or not (Path(bundle) / "manifest.json").is_file():
        return {}
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    return dict((manifest.get("summary") or {}).get("by_status") or {})


# ---------------------------------------------------------------- 3 / 33 / 100 real hosts


def size_pattern(inv_path: str, size: int) -> str:
    inv = load_inventory(inv_path)
    core = ["app1", "db1", "redis1"]
    web = sorted(h for h in inv.hosts if h.startswith("web"))
    names = core + web[: size - 3]
    if len(names) != size:
        raise BenchError(f"{size} hosts wanted, the lab has {len(core) + len(web)}")
    return ",".join(names)


def bench_hosts(inventory: str, size: int, runs: int, plain_runs: int, work: Path) -> dict[str, Any]:
    pattern = size_pattern(inventory, size)
    hosts = pattern.split(",")
    commands = bc.rendered_commands(inventory, hosts)
    n_probes = sum(len(p) for p in commands.values())
    log(
        f"{size} hosts, {n_probes} probe runs per collection: floor and collect-ssh x{runs}, "
        f"plain x{plain_runs}"
    )
    plain = bc.plain_ansible_project(work / f"s{size}", inventory, hosts, commands, tuned=False)
    out = work / "out"

    def collect() -> dict[str, Any]:
        m = measure(collect_argv(inventory, pattern, out, "--engine", "ssh"), work)
        if m["rc"] not in (0, 1):
            raise BenchError(f"collect exited {m['rc']} at {size} hosts")
        m["statuses"] = bundle_statuses(m["summary"])
        return m

    bc.run_floor(inventory, hosts, commands)  # warm-up, not counted
    collect()
    floor: list[float] = []
    collects: list[dict[str, Any]] = []
    plains: list[float] = []
    for i in range(runs):
        floor += bc.timed(1, lambda: bc.run_floor(inventory, hosts, commands))
        collects.append(collect())
        if i < plain_runs:
            plains += bc.timed(1, lambda: bc.run_plain_ansible(plain, work, False, 5))
        log(
            f"  run {i + 1}/{runs}: floor {floor[-1]:.2f}s collect-ssh {collects[-1]['wall_s']:.2f}s "
            f"({collects[-1]['statuses']}, {collects[-1]['rss_mb']:.0f} MB, {collects[-1]['fds']} fds)"
            + (f" ansible-plain {plains[-1]:.2f}s" if i < plain_runs else "")
        )
    return {
        "hosts": size,
        "probes": n_probes,
        "floor": bc.stats(floor),
        "collect": bc.stats([c["wall_s"] for c in collects]),
        "plain": bc.stats(plains) if plains else {},
        "cpu": bc.stats([c["cpu_s"] for c in collects]),
        "rss": bc.stats([c["rss_mb"] for c in collects]),
        "fds": bc.stats([float(c["fds"]) for c in collects]),
        "statuses": collects[-1]["statuses"],
    }


# ---------------------------------------------------------------- 1,000 endpoints by simulation


@contextmanager
def extra_sshd_ports(names: list[str], per_host: int) -> Iterator[None]:
    """Every host's sshd also listens on FIRST_EXTRA_PORT.. (+per_host-1); removed afterwards.

    MaxStartups is raised with them: a host entry per port means per_host handshakes at once to the same
    sshd, and Debian's default (10:30:100) would throttle them: we measure the controller here, not sshd.
    """
    settings = load_settings()
    if per_host > MAX_EXTRA_PORTS:
        raise BenchError(
            f"{per_host} extra ports per sshd wanted; OpenSSH listens on at most {MAX_EXTRA_PORTS}"
        )
    ports = "".join(f"Port {FIRST_EXTRA_PORT + i}\\n" for i in range(per_host))
    conf = f"Port 22\\n{ports}AddressFamily inet\\nMaxStartups 1000:30:2000\\n"
    # sshd -t first: a config sshd refuses must never reach a reload (sshd would stop, the host with it).
    add = f"printf '{conf}' > {DROP_IN} && {{ sshd -t || {{ rm -f {DROP_IN}; exit 1; }}; }}"
    add += " && systemctl reload ssh"
    drop = f"rm -f {DROP_IN} && systemctl reload-or-restart ssh"

    def run_all(script: str) -> list[str]:
        errors: list[str] = []

        def one(name: str) -> None:
            proc = lab_hosts.run_in(settings, name, ["sh", "-c", script], timeout=30)
            if proc.returncode != 0:
                errors.append(f"{name}: {proc.stderr.strip()[:200]}")

        threads = [threading.Thread(target=one, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return errors

    errors = run_all(add)
    try:
        if errors:
            raise BenchError("adding sshd ports failed: " + "; ".join(errors[:5]))
        ips = {n: str(s["ip"]) for n, s in (lab_state().get("hosts") or {}).items()}
        last = FIRST_EXTRA_PORT + per_host - 1
        # sshd binds its ports one by one after the reload (22 last): wait until every host has them all.
        pending = list(names)

        def all_listen() -> bool:
            pending[:] = [n for n in pending if not all(lab_hosts.port_open(ips[n], p) for p in (22, last))]
            return not pending

        if not bc_wait(all_listen, 30):
            raise BenchError(
                f"{', '.join(pending[:5])} do not listen on ports 22 and {last} after the reload"
            )
        yield
    finally:
        left = run_all(drop)
        if left:
            log("removing the sshd drop-in failed on: " + "; ".join(left[:5]))
        ips = {n: str(s["ip"]) for n, s in (lab_state().get("hosts") or {}).items()}
        if not bc_wait(lambda: all(lab_hosts.port_open(ips[n], 22) for n in names), 30):
            log("some hosts' sshd did not come back on port 22")


def bc_wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def endpoint_inventory(
    work: Path, inventory: str, names: list[str], count: int, per_host: int, one_known_hosts: bool
) -> Path:
    """`count` host entries (ep0001..) spread over the hosts' ports, with known_hosts for [ip]:port.

    By default each lab host's ports get a known_hosts file of their own (per_host lines): the ssh engine
    parses a host's known_hosts at each connection, so one file for every endpoint would add a cost that
    grows with the square of the fleet (`--one-known-hosts` measures that).
    """
    inv = load_inventory(inventory)
    keys = {n: (lab_dir() / "hosts" / n / "host_key.pub").read_text().strip() for n in names}
    files: dict[str, Path] = {}
    lines: dict[Path, list[str]] = {}
    for name in names:
        files[name] = work / ("endpoints_known_hosts" if one_known_hosts else f"known_hosts-{name}")
        ip = inv.hosts[name]["ansible_host"]
        lines.setdefault(files[name], []).extend(
            f"[{ip}]:{FIRST_EXTRA_PORT + p} {keys[name]}\n" for p in range(per_host)
        )
    for path, body in lines.items():
        path.write_text("".join(body))
    hosts: dict[str, Any] = {}
    for i in range(count):
        name = names[i % len(names)]
        hv = inv.hosts[name]
        hosts[f"ep{i + 1:04d}"] = {
            "ansible_host": hv["ansible_host"],
            "ansible_port": FIRST_EXTRA_PORT + (i // len(names)) % per_host,
            "ansible_user": hv.get("ansible_user", "root"),
            "ansible_ssh_private_key_file": hv["ansible_ssh_private_key_file"],
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={files[name]} -o StrictHostKeyChecking=yes",
            "ansible_python_interpreter": "/usr/bin/python3",
            "collector_roles": ["web"],
        }
    path = work / f"endpoints-{count}.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"endpoints": {"hosts": hosts}}}}, sort_keys=False))
    return path


def bench_endpoints(
    inventory: str, counts: list[int], runs: int, work: Path, one_known_hosts: bool = False
) -> dict[str, Any]:
    names = sorted(lab_state().get("hosts") or {})
    per_host = -(-max(counts) // len(names))
    catalogue = work / "one-probe.yml"
    catalogue.write_text(
        yaml.safe_dump(
            {
                "collector_probes": [
                    {"name": "uptime", "roles": ["all"], "command": "cat /proc/uptime", "timeout_s": 10}
                ]
            }
        )
    )
    results: dict[str, Any] = {
        "lab_hosts": len(names),
        "ports_per_host": per_host,
        "one_known_hosts": one_known_hosts,
        "counts": {},
    }
    log(f"endpoints: {len(names)} sshds x {per_host} extra ports, counts {counts}, {runs} run(s) each")
    with extra_sshd_ports(names, per_host):
        for count in counts:
            inv = endpoint_inventory(work, inventory, names, count, per_host, one_known_hosts)
            argv = collect_argv(
                str(inv), "endpoints", work / "out", "--engine", "ssh", "--catalogue", str(catalogue)
            )
            if count == counts[0]:
                measure(argv, work)  # warm-up (page cache, imports), not counted
            runs_ = []
            for _ in range(runs):
                m = measure(argv, work)
                m["statuses"] = bundle_statuses(m["summary"])
                runs_.append(m)
                log(
                    f"  {count} endpoints: {m['wall_s']:.2f}s wall, {m['cpu_s']:.2f}s CPU, "
                    f"{m['rss_mb']:.0f} MB, {m['fds']} fds, {m['statuses']}"
                )
            results["counts"][count] = {
                "wall": bc.stats([m["wall_s"] for m in runs_]),
                "cpu": bc.stats([m["cpu_s"] for m in runs_]),
                "rss": bc.stats([m["rss_mb"] for m in runs_]),
                "fds": bc.stats([float(m["fds"]) for m in runs_]),
                "statuses": runs_[-1]["statuses"],
            }
    return results


# ---------------------------------------------------------------- the report


def fmt(s: dict[str, float], digits: int = 2) -> str:
    if not s or not s.get("n"):
        return "—"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f} (n=1)"
    return f"{s['min']:.{digits}f} / {s['median']:.{digits}f} / {s['max']:.{digits}f}"


def report(
    args: argparse.Namespace,
    lab: dict[str, Any] | None,
    sizes: list[dict[str, Any]],
    eps: dict[str, Any] | None,
    restore: dict[str, Any] | None,
) -> str:
    lines = [
        "# Fleet benchmark (issue 17)",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- commit: {bc.git_commit()} (plus the working tree of that moment)",
        (
            f"- machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}; the lab's hosts share the 2 cores with the controller"
        ),
        "- command: `.venv/bin/python bench/bench_fleet.py " + " ".join(sys.argv[1:]) + "`",
        "- figures are min / median / max over the runs of this one bench run (n says how many)",
        "",
    ]
    if lab:
        lines += [
            f"Lab: `collector-lab up --extra {lab['extra']}` ({lab['hosts']} hosts) took "
            f"{lab['wall_s']:.0f} s "
            f"(rc {lab['rc']}); the hosts' memory cgroups hold {lab['hosts_cgroup_mb']:.0f} MB "
            f"({lab['web_cgroup_mb']:.0f} MB for the {lab['hosts'] - 3} web hosts, "
            f"{lab['web_cgroup_mb'] / max(1, lab['hosts'] - 3):.0f} MB each); MemAvailable "
            f"{lab['mem_available_before_mb'] / 1024:.1f} → {lab['mem_available_after_mb'] / 1024:.1f} GiB. "
            "Kernel settings during the run: "
            + ", ".join(
                f"{k} {lab['kernel_before'].get(k)} → {v}"
                for k, v in lab["kernel_after"].items()
                if lab["kernel_before"].get(k) != v
            )
            + f". In use with the lab up: {lab['use']['inotify_instances']} inotify instances, "
            f"{lab['use']['root_keys']} of root's keyring keys (kernel.keys.root_maxkeys), "
            f"{lab['use']['processes']} processes; hosts' systemd states {lab['systems']}.",
            "",
        ]
    if restore:
        lines += [
            f"Back to 3 hosts: `collector-lab up` took {restore['wall_s']:.0f} s (rc {restore['rc']}); "
            "kernel settings "
            + (
                "restored."
                if restore["kernel_after"] == (lab or {}).get("kernel_before")
                else f"now {restore['kernel_after']}."
            ),
            "",
        ]
    if sizes:
        lines += [
            "Real hosts, wall seconds (`collect` = `--engine ssh`, default settings):",
            "",
            (
                "| hosts | probes | floor | collect | ansible-plain | collect / floor (≤ 1.2) "
                "| plain / collect (≥ 10) | controller peak RSS MB (< 400) | CPU s | peak fds "
                "| host statuses |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sizes:
            ratio_plain = (
                f"{r['plain']['median'] / r['collect']['median']:.1f}" if r["plain"].get("n") else "—"
            )
            lines.append(
                f"| {r['hosts']} | {r['probes']} | {fmt(r['floor'])} | {fmt(r['collect'])} | "
                f"{fmt(r['plain'])} | {r['collect']['median'] / r['floor']['median']:.2f} | "
                f"{ratio_plain} | {fmt(r['rss'], 0)} | "
                f"{fmt(r['cpu'])} | {fmt(r['fds'], 0)} | {r['statuses']} |"
            )
        lines.append("")
    if eps and eps["counts"]:
        first = min(eps["counts"])
        base = eps["counts"][first]
        lines += [
            (
                f"Simulated endpoints: {eps['lab_hosts']} lab sshds, each also listening on "
                f"{eps['ports_per_host']} extra ports (MaxStartups raised: the controller is measured, not "
                "sshd), one host entry per (ip, port), one probe (`cat /proc/uptime`), "
                + ("one known_hosts for all" if eps["one_known_hosts"] else "one known_hosts file per sshd")
                + "; growth is against the "
                f"{first}-endpoint medians:"
            ),
            "",
            (
                "| endpoints | wall s | CPU s | CPU ms / endpoint | peak RSS MB | peak fds "
                "| growth wall / CPU / RSS / fds | host statuses |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for count, r in sorted(eps["counts"].items()):
            g = [r[k]["median"] / base[k]["median"] for k in ("wall", "cpu", "rss", "fds")]
            lines.append(
                f"| {count} | {fmt(r['wall'])} | {fmt(r['cpu'])} | {1000 * r['cpu']['median'] / count:.1f} | "
                f"{fmt(r['rss'], 0)} | {fmt(r['fds'], 0)} | "
                + " / ".join(f"{x:.2f}×" for x in g)
                + f" | {r['statuses']} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--extra", type=int, default=97, help="web hosts to boot (97: a 100-host lab)")
    parser.add_argument("--sizes", default="3,33,100", help="real-host sizes (each ≤ 3 + extra)")
    parser.add_argument("--runs", type=int, default=3, help="floor and collect runs per size")
    parser.add_argument("--plain-runs", type=int, default=1, help="plain Ansible runs per size (it is slow)")
    parser.add_argument("--endpoints", default="100,300,1000", help="simulated endpoint counts ('' to skip)")
    parser.add_argument("--endpoint-runs", type=int, default=3)
    parser.add_argument(
        "--one-known-hosts",
        action="store_true",
        help="one known_hosts for every endpoint (else one per sshd)",
    )
    parser.add_argument("--results", action="store_true", help="append the section to bench/RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="leave the lab at its big size afterwards")
    args = parser.parse_args(argv)
    inventory = str(bc.LAB_INVENTORY)
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))  # the controller's fds are what we measure
    lab: dict[str, Any] | None = None
    restore: dict[str, Any] | None = None
    sizes: list[dict[str, Any]] = []
    eps: dict[str, Any] | None = None
    try:
        with lab_lock(), tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            work = Path(tmp)
            try:
                log(f"collector-lab up --extra {args.extra}")
                lab = lab_up(args.extra)
                log(f"up took {lab['wall_s']:.0f}s rc {lab['rc']}: {lab['tail'][-300:]}")
                if lab["rc"] != 0:
                    raise BenchError(f"collector-lab up --extra {args.extra} failed: {lab['tail']}")
                for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
                    sizes.append(bench_hosts(inventory, size, args.runs, args.plain_runs, work))
                counts = [int(c) for c in args.endpoints.split(",") if c.strip()]
                if counts:
                    eps = bench_endpoints(inventory, counts, args.endpoint_runs, work, args.one_known_hosts)
            finally:
                if not args.keep:
                    log("collector-lab up (back to 3 hosts)")
                    t0 = time.perf_counter()
                    proc = lab_cli("up")
                    restore = {
                        "rc": proc.returncode,
                        "wall_s": time.perf_counter() - t0,
                        "kernel_after": kernel_values(),
                    }
                    log(f"back: rc {proc.returncode} in {restore['wall_s']:.0f}s")
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        print(report(args, lab, sizes, eps, restore))
        return 1
    text = report(args, lab, sizes, eps, restore)
    print(text)
    if args.results:
        with (ROOT / "bench" / "RESULTS.md").open("a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
