"""Collection speed and memory against the parallel-SSH floor and plain Ansible, on the lab.

Every figure is measured in this run, on the same hosts and the same probe set (the shipped catalogue,
each host's commands rendered by the on-host runner's own `fill`):

  collect-ssh      our `collect --engine ssh` (the default engine)
  collect-ansible  our `collect --engine ansible` (playbooks/collect.yml through ansible-runner)
  floor            one OpenSSH connection per host, all hosts at once, that host's probes run concurrently
  ansible-plain    plain ansible-playbook, default settings: forks 5, facts gathered, one shell task per probe
  ansible-tuned    plain ansible-playbook: no facts, pipelining, forks = hosts, free strategy,
                   one task per probe

plus the cost of one unreachable host (a closed loopback port and a powered-off lab host) and the
controller's peak RSS while one probe prints 1 GiB. Writes bench/RESULTS.md and prints the ratios.

    .venv/bin/python bench/bench_collect.py                 # 3 hosts (app1, db1, redis1), 5 runs each
    collector-lab up --extra 30 && .venv/bin/python bench/bench_collect.py --sizes 3,33
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from collector.inventory import load_inventory
from collector.probes import build_request, load_entries, runner_module

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LAB_INVENTORY = Path("/var/lib/incident-collector/lab/inventory/lab.yml")
SINCE = "10m"


class BenchError(Exception):
    """The benchmark cannot run as asked (lab down, too few hosts): said loudly, exit 1."""


def rendered_commands(inventory: str, hosts: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """host -> probe -> {command, env, timeout_s}: exactly what our runner would run there."""
    runner = runner_module()
    inv = load_inventory(inventory)
    entries = load_entries()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for host in hosts:
        hostvars = inv.hosts[host]
        request = build_request(
            entries, hostvars, inv.roles(host), since=SINCE, cap_bytes=25 << 20, default_timeout_s=30
        )
        values = dict(request["vars"], since=runner.journal_since(SINCE), since_utc=runner.since_utc(SINCE))
        out[host] = {}
        for probe in runner.select(request["probes"], request["roles"]):
            command, missing = runner.fill(probe["command"], values)
            if missing:
                continue
            env = {
                name: str(values[var]) for name, var in (probe.get("env") or {}).items() if values.get(var)
            }
            out[host][probe["name"]] = {
                "command": command,
                "env": env,
                "timeout_s": float(probe.get("timeout_s") or 30),
            }
    return out


def ssh_argv(hostvars: dict[str, Any]) -> list[str]:
    """The OpenSSH command line the inventory describes (host-key checking stays on)."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if hostvars.get("ansible_ssh_private_key_file"):
        argv += ["-i", str(hostvars["ansible_ssh_private_key_file"])]
    argv += shlex.split(str(hostvars.get("ansible_ssh_common_args", "")))
    user = hostvars.get("ansible_user", "root")
    return argv + [f"{user}@{hostvars.get('ansible_host', '')}"]


def floor_script(probes: dict[str, dict[str, Any]]) -> str:
    """A shell script that runs a host's probes all at once and prints every output."""
    lines = ["d=$(mktemp -d)"]
    for i, (name, p) in enumerate(probes.items()):
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in p["env"].items())
        lines.append(
            f'( {env} timeout {p["timeout_s"]:g} sh -c {shlex.quote(p["command"])} > "$d/{i}" 2>&1 ) &'
        )
    lines += ["wait", 'for f in "$d"/*; do cat "$f"; done', 'rm -rf "$d"']
    return "\n".join(lines) + "\n"


def run_floor(inventory: str, hosts: list[str], commands: dict[str, dict[str, dict[str, Any]]]) -> None:
    inv = load_inventory(inventory)
    errors: list[str] = []

    def one(host: str) -> None:
        proc = subprocess.run(
            ssh_argv(inv.hosts[host]) + ["sh", "-s"],
            input=floor_script(commands[host]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode == 255:
            errors.append(f"{host}: {proc.stderr.strip()}")

    threads = [threading.Thread(target=one, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise BenchError("floor: ssh failed: " + "; ".join(errors))


def plain_ansible_project(
    workdir: Path,
    inventory: str,
    hosts: list[str],
    commands: dict[str, dict[str, dict[str, Any]]],
    tuned: bool,
) -> Path:
    """An inventory with each host's rendered commands and a playbook of one shell task per probe."""
    inv_dir = workdir / ("tuned" if tuned else "plain")
    (inv_dir / "host_vars").mkdir(parents=True, exist_ok=True)
    (inv_dir / "hosts.yml").write_text(Path(inventory).read_text())
    names: list[str] = []
    for host in hosts:
        for name in commands[host]:
            if name not in names:
                names.append(name)
        # !unsafe: the commands hold braces Ansible must not template.
        body = "bench_cmds:\n" + "".join(
            f"  {name}: !unsafe {json.dumps(p['command'])}\n" for name, p in commands[host].items()
        )
        body += "bench_env:\n" + "".join(
            f"  {name}: {json.dumps(p['env'])}\n" for name, p in commands[host].items()
        )
        (inv_dir / "host_vars" / f"{host}.yml").write_text(body)
    play: dict[str, Any] = {
        "name": "Run the probes as plain Ansible tasks.",
        "hosts": ",".join(hosts),
        "gather_facts": not tuned,
        "tasks": [],
    }
    if tuned:
        play["strategy"] = "free"
    for name in names:
        play["tasks"].append(
            {
                "name": f"Run probe {name}.",
                "ansible.builtin.shell": f"{{{{ bench_cmds['{name}'] }}}}",
                "environment": f"{{{{ bench_env['{name}'] }}}}",
                "when": f"'{name}' in bench_cmds",
                "changed_when": False,
                "failed_when": False,
            }
        )
    playbook = inv_dir / "playbook.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    return playbook


def ansible_env(workdir: Path, tuned: bool, forks: int) -> dict[str, str]:
    env = dict(
        os.environ,
        ANSIBLE_HOME=str(workdir / "ahome"),
        ANSIBLE_LOCAL_TEMP=str(workdir / "atmp"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(workdir / "cp"),
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_NOCOLOR="1",
        PATH=f"{BIN}:{os.environ.get('PATH', '')}",
    )
    if tuned:
        env.update(ANSIBLE_PIPELINING="1", ANSIBLE_FORKS=str(forks))
    return env


def run_plain_ansible(playbook: Path, workdir: Path, tuned: bool, forks: int) -> None:
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(playbook.parent / "hosts.yml"), str(playbook)],
        capture_output=True,
        text=True,
        env=ansible_env(workdir, tuned, forks),
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"ansible-playbook failed (rc {proc.returncode}): {proc.stdout[-400:]}")


def run_collect(inventory: str, pattern: str, out: Path, engine: str, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            str(BIN / "collect"),
            "--hosts",
            pattern,
            "-i",
            inventory,
            "--out",
            str(out),
            "--json",
            "--engine",
            engine,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise BenchError(f"collect --engine {engine} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}


def timed(runs: int, fn: Callable[[], Any]) -> list[float]:
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return walls


def stats(walls: list[float]) -> dict[str, float]:
    return {"min": min(walls), "median": statistics.median(walls), "max": max(walls), "n": len(walls)}


def peak_rss_mb(argv: list[str]) -> float:
    """Peak RSS of a command and what it waits for, measured by a fresh wrapper process of its own."""
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
        "stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=900, check=False
    )
    return int(proc.stdout.strip()) / 1024.0


def bench_size(inventory: str, pattern: str, runs: int, work: Path) -> dict[str, Any]:
    inv = load_inventory(inventory)
    hosts = inv.match(pattern)
    commands = rendered_commands(inventory, hosts)
    n_probes = sum(len(p) for p in commands.values())
    print(
        f"== {len(hosts)} hosts ({pattern}), {n_probes} probe runs per collection, {runs} runs each",
        flush=True,
    )
    plain = plain_ansible_project(work, inventory, hosts, commands, tuned=False)
    tuned = plain_ansible_project(work, inventory, hosts, commands, tuned=True)
    results: dict[str, Any] = {"hosts": len(hosts), "probes": n_probes}
    contenders: list[tuple[str, Callable[[], Any]]] = [
        ("floor", lambda: run_floor(inventory, hosts, commands)),
        ("collect-ssh", lambda: run_collect(inventory, pattern, work / "out", "ssh")),
        ("collect-ansible", lambda: run_collect(inventory, pattern, work / "out", "ansible")),
        ("ansible-tuned", lambda: run_plain_ansible(tuned, work, True, len(hosts))),
        ("ansible-plain", lambda: run_plain_ansible(plain, work, False, 5)),
    ]
    # Warm-up once each (page cache, Python imports), not counted.
    for name, fn in contenders:
        fn()
    # Interleave the contenders so that drift on the machine hits them all alike.
    walls: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for i in range(runs):
        for name, fn in contenders:
            walls[name] += timed(1, fn)
        print(
            f"  run {i + 1}/{runs}: " + "  ".join(f"{n} {w[-1]:.2f}s" for n, w in walls.items()), flush=True
        )
    for name, w in walls.items():
        results[name] = stats(w)
    return results


def bench_unreachable(inventory: str, work: Path, runs: int) -> dict[str, Any]:
    """What one unreachable host adds: app1 alone against app1 plus a host whose port is closed on
    loopback."""
    extra = work / "unreachable.yml"
    extra.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "ghost": {
                            "hosts": {
                                "ghost1": {
                                    "ansible_host": "127.0.0.1",
                                    "ansible_port": 1,
                                    "ansible_user": "root",
                                    "collector_roles": ["web"],
                                }
                            }
                        }
                    }
                }
            }
        )
    )
    inv_dir = work / "inv-unreachable"
    inv_dir.mkdir(exist_ok=True)
    (inv_dir / "lab.yml").write_text(Path(inventory).read_text())
    (inv_dir / "ghost.yml").write_text(extra.read_text())
    alone = timed(runs, lambda: run_collect(str(inv_dir), "app1", work / "out", "ssh"))
    with_ghost = timed(runs, lambda: run_collect(str(inv_dir), "app1:ghost1", work / "out", "ssh"))
    return {
        "alone": stats(alone),
        "with_unreachable": stats(with_ghost),
        "added_s": statistics.median(with_ghost) - statistics.median(alone),
    }


def bench_memory(inventory: str, work: Path) -> dict[str, Any]:
    """Controller peak RSS while one probe on app1 prints 1 GiB, against a probe printing nothing."""

    def catalogue(command: str) -> Path:
        path = work / f"cat-{abs(hash(command))}.yml"
        path.write_text(
            yaml.safe_dump(
                {
                    "collector_probes": [
                        {"name": "flood", "roles": ["app"], "timeout_s": 300, "command": command}
                    ]
                }
            )
        )
        return path

    def argv(catalogue_file: Path) -> list[str]:
        return [
            str(BIN / "collect"),
            "--hosts",
            "app1",
            "-i",
            inventory,
            "--out",
            str(work / "out"),
            "--json",
            "--engine",
            "ssh",
            "--catalogue",
            str(catalogue_file),
        ]

    base = peak_rss_mb(argv(catalogue("true")))
    t0 = time.perf_counter()
    peak = peak_rss_mb(argv(catalogue("head -c 1073741824 /dev/zero | tr '\\0' x")))
    return {"baseline_mb": base, "flood_1gib_mb": peak, "flood_wall_s": time.perf_counter() - t0}


def git_commit() -> str:
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "unknown"


def fmt(s: dict[str, float]) -> str:
    return f"{s['min']:.2f} / {s['median']:.2f} / {s['max']:.2f}"


def write_results(
    path: Path, sizes: dict[str, Any], unreachable: dict[str, Any] | None, memory: dict[str, Any] | None
) -> str:
    lines = [
        "# Collection benchmark",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- commit: {git_commit()}",
        (
            f"- machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}"
        ),
        "- command: `.venv/bin/python bench/bench_collect.py --sizes " + ",".join(sizes) + "`",
        "- lab hosts share the machine's cores with the controller: compare ratios, not seconds.",
        "",
        "Wall time in seconds, min / median / max:",
        "",
        "| hosts | probes | floor | collect-ssh | collect-ansible | ansible-tuned | ansible-plain |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sizes.values():
        lines.append(
            f"| {r['hosts']} (n={r['floor']['n']}) | {r['probes']} | {fmt(r['floor'])} | "
            f"{fmt(r['collect-ssh'])} | "
            f"{fmt(r['collect-ansible'])} | {fmt(r['ansible-tuned'])} | {fmt(r['ansible-plain'])} |"
        )
    lines += [
        "",
        "Ratios of medians (target in brackets):",
        "",
        (
            "| hosts | collect-ssh / floor (≤ 1.5) | ansible-plain / collect-ssh (≥ 5) | "
            "collect-ansible / floor (≤ 2.5) | ansible-tuned / collect-ssh |"
        ),
        "|---|---|---|---|---|",
    ]
    for r in sizes.values():
        m = {k: v["median"] for k, v in r.items() if isinstance(v, dict)}
        lines.append(
            f"| {r['hosts']} | {m['collect-ssh'] / m['floor']:.2f} | "
            f"{m['ansible-plain'] / m['collect-ssh']:.2f} | "
            f"{m['collect-ansible'] / m['floor']:.2f} | {m['ansible-tuned'] / m['collect-ssh']:.2f} |"
        )
    if unreachable:
        lines += [
            "",
            (
                f"Unreachable host (closed port on loopback): app1 alone {fmt(unreachable['alone'])} s, "
                f"app1 + unreachable {fmt(unreachable['with_unreachable'])} s: adds "
                f"{unreachable['added_s']:.2f} s (connect timeout 10 s)."
            ),
        ]
    if memory:
        lines += [
            "",
            (
                "Controller peak RSS (the `collect` process): "
                f"{memory['baseline_mb']:.0f} MB with an empty probe, "
                f"{memory['flood_1gib_mb']:.0f} MB while one probe prints 1 GiB "
                f"(ratio {memory['flood_1gib_mb'] / memory['baseline_mb']:.2f}; target < 300 MB; "
                f"that run took {memory['flood_wall_s']:.1f} s)."
            ),
        ]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-i", "--inventory", default=str(LAB_INVENTORY))
    parser.add_argument("--sizes", default="3", help="3 (app1, db1, redis1) and/or 33 (the whole lab)")
    parser.add_argument("--runs", type=int, default=5, help="runs per contender at 3 hosts (33 hosts: 3)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--skip-extras", action="store_true", help="skip the unreachable and memory figures")
    args = parser.parse_args(argv)
    try:
        if not Path(args.inventory).is_file():
            raise BenchError(f"lab inventory {args.inventory} not found: run `collector-lab up` first")
        inv = load_inventory(args.inventory)
        sizes: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="bench-collect-") as tmp:
            work = Path(tmp)
            for size in args.sizes.split(","):
                pattern = "app1:db1:redis1" if size.strip() == "3" else "lab"
                hosts = inv.match(pattern)
                if len(hosts) != int(size):
                    raise BenchError(
                        f"{size} hosts wanted, the lab has {len(hosts)} for {pattern!r}: "
                        f"`collector-lab up --extra {int(size) - 3}` first"
                    )
                sizes[size] = bench_size(args.inventory, pattern, args.runs if int(size) <= 3 else 3, work)
            unreachable = None if args.skip_extras else bench_unreachable(args.inventory, work, 3)
            memory = None if args.skip_extras else bench_memory(args.inventory, work)
        print(write_results(Path(args.out), sizes, unreachable, memory))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
