"""Through a bastion without losing hosts (issue 17): 33 lab hosts, every one but app1 behind ProxyJump
through app1, whose sshd runs Debian's default `MaxStartups 10:30:100`.

One boot of 30 extra hosts (module fixture, under the lab lock) serves every case; the fixture puts the lab
back to its three hosts afterwards, as tests/lab/test_lab_hosts.py does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_lab import hosts
from collector_lab.lock import lab_lock as hold_lab_lock

from collector.config import Settings
from collector.times import wait_until
from collector.transport.ssh import worst_connect_s

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.destructive]

EXTRA = 30
JUMP = "app1"
DEFAULT_MAX_STARTUPS = "10:30:100"
# Last in the drop-in order: unlike most keywords, the LAST MaxStartups sshd reads wins (OpenSSH 9.2).
DEFAULTS_DROP_IN = "/etc/ssh/sshd_config.d/zzzz-collector-test-maxstartups.conf"
COLLECT = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"
LAB = "import sys; from collector_lab.cli import main; sys.argv[0] = 'collector-lab'; main()"
DOWN_IP = "10.203.57.250"  # on the lab's bridge, no host: a jump host that is truly down


def _lab_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAB, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _in(settings: Settings, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """A command on a lab host through nsenter: works while its sshd is stopped."""
    done: subprocess.CompletedProcess[str] = hosts.run_in(settings, host, list(argv), timeout=60)
    return done


def _max_startups(settings: Settings) -> str:
    out = _in(settings, JUMP, "sshd", "-T").stdout
    return next((ln.split()[1] for ln in out.splitlines() if ln.startswith("maxstartups ")), "")


@pytest.fixture(scope="module")
def fleet(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """33 lab hosts, app1's sshd at Debian's defaults; the inventory and each host's address."""
    settings = lab.settings
    with hold_lab_lock(timeout_s=3600):
        started = time.monotonic()
        restored = False
        try:
            up = _lab_cli("up", "--extra", str(EXTRA))
            assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
            if _max_startups(settings) != DEFAULT_MAX_STARTUPS:
                line = f"MaxStartups {DEFAULT_MAX_STARTUPS}"
                _in(settings, JUMP, "sh", "-c", f"echo '{line}' > {DEFAULTS_DROP_IN}")
                assert _in(settings, JUMP, "systemctl", "reload", "ssh").returncode == 0
                restored = True
            assert _max_startups(settings) == DEFAULT_MAX_STARTUPS
            doc = yaml.safe_load(hosts.inventory_path(settings).read_text())
            table = {
                name: hv
                for group in doc["all"]["children"]["lab"]["children"].values()
                for name, hv in (group.get("hosts") or {}).items()
            }
            assert len(table) == 3 + EXTRA, sorted(table)
            print(f"\nboot of {EXTRA} extra hosts: {time.monotonic() - started:.1f}s")
            yield {
                "settings": settings,
                "doc": doc,
                "ips": {n: str(hv["ansible_host"]) for n, hv in table.items()},
                "dir": tmp_path_factory.mktemp("bastion"),
            }
        finally:
            _in(settings, JUMP, "systemctl", "start", "ssh")  # a failed case may have left it stopped
            if restored:
                _in(settings, JUMP, "rm", "-f", DEFAULTS_DROP_IN)
                _in(settings, JUMP, "systemctl", "reload", "ssh")
            back = _lab_cli("up")
            print(f"module with boot and teardown: {time.monotonic() - started:.1f}s")
    assert back.returncode == 0, back.stdout[-2000:] + back.stderr[-2000:]
    assert "web01" not in hosts.inventory_path(settings).read_text()


def _inventory(fleet: dict[str, Any], name: str, jumps: dict[str, str]) -> Path:
    """A copy of the 33-host inventory where each host in `jumps` goes through its jump (user@host[:port]),
    written as an Ansible user writes it: `-o ProxyJump=` in ansible_ssh_common_args."""
    doc = json.loads(json.dumps(fleet["doc"]))
    for group in doc["all"]["children"]["lab"]["children"].values():
        for host, hv in (group.get("hosts") or {}).items():
            if host in jumps:
                hv["ansible_ssh_common_args"] += f" -o ProxyJump={jumps[host]}"
    path = Path(fleet["dir"]) / f"{name}.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _behind_app1(fleet: dict[str, Any]) -> dict[str, str]:
    return {h: f"root@{fleet['ips'][JUMP]}" for h in fleet["ips"] if h != JUMP}


def _collect(
    fleet: dict[str, Any],
    inventory: Path,
    *args: str,
    pattern: str = "lab",
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One `collect --json` run: its manifest, plus the collection's own span (the manifest's started →
    finished) and the command's wall time."""
    out = Path(fleet["dir"]) / f"out-{time.monotonic_ns()}"
    # The run's settings are the defaults plus what the case gives (a developer's COLLECTOR_* stay out).
    env = {k: v for k, v in os.environ.items() if k == "COLLECTOR_STATE_DIR" or not k.startswith("COLLECTOR")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", COLLECT, "--hosts", pattern, "-i", str(inventory), "--out", str(out), "--json"]
        + list(args),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**env, **(extra_env or {})},
    )
    wall = time.monotonic() - started
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    bundle = Path(json.loads(proc.stdout)["bundle"])
    manifest: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())

    def instant(text: str) -> float:
        return datetime.fromisoformat(text).timestamp()

    manifest["span_s"] = instant(manifest["finished"]) - instant(manifest["started"])
    manifest["wall_s"] = wall
    return manifest


def _lost(manifest: dict[str, Any]) -> dict[str, str]:
    return {
        h: f"{e['status']}: {e.get('error')}"
        for h, e in manifest["hosts"].items()
        if e["status"] in ("unreachable", "failed")
    }


def _accepted_on_jump(fleet: dict[str, Any], since: str) -> int:
    """sshd's 'Accepted publickey' lines on app1 for connections from this controller since an epoch."""
    out = _in(
        fleet["settings"], JUMP, "journalctl", "--no-pager", "-o", "cat", "-u", "ssh", "--since", f"@{since}"
    ).stdout
    controller = fleet["ips"][JUMP].rsplit(".", 1)[0] + ".1"
    return sum(1 for ln in out.splitlines() if "Accepted publickey" in ln and f" from {controller} " in ln)


def test_33_hosts_behind_app1_lose_nothing_three_runs_in_a_row(fleet: dict[str, Any]) -> None:
    direct = _collect(fleet, _inventory(fleet, "direct", {}))
    assert len(direct["hosts"]) == 3 + EXTRA and not _lost(direct), _lost(direct)
    via = _inventory(fleet, "via-app1", _behind_app1(fleet))
    spans = []
    for run in range(3):
        since = _in(fleet["settings"], JUMP, "date", "+%s").stdout.strip()
        through = _collect(fleet, via)
        assert not _lost(through), f"run {run + 1}: {_lost(through)}"
        assert {h: e["status"] for h, e in through["hosts"].items()} == {
            h: e["status"] for h, e in direct["hosts"].items()
        }
        # One authenticated connection to the bastion (plus app1's own collection), not one per host.
        accepted = _accepted_on_jump(fleet, since)
        assert 1 <= accepted <= 3, f"run {run + 1}: {accepted} logins on {JUMP}"
        spans.append(through["span_s"])
    again = _collect(fleet, _inventory(fleet, "direct", {}))  # the first run after a boot is a cold one
    assert not _lost(again), _lost(again)
    fastest = min(direct["span_s"], again["span_s"])
    shown = ", ".join(f"{s:.2f}s" for s in spans)
    print(f"\ndirect {direct['span_s']:.2f}s, {again['span_s']:.2f}s; via {JUMP}: {shown}")
    assert max(spans) <= 1.5 * max(fastest, 2.0), (fastest, spans)


def test_the_ansible_engine_reuses_one_connection_to_the_bastion(fleet: dict[str, Any]) -> None:
    since = _in(fleet["settings"], JUMP, "date", "+%s").stdout.strip()
    inventory = _inventory(fleet, "via-app1-ansible", _behind_app1(fleet))
    through = _collect(fleet, inventory, "--engine", "ansible")
    assert len(through["hosts"]) == 3 + EXTRA and not _lost(through), _lost(through)
    accepted = _accepted_on_jump(fleet, since)
    assert 1 <= accepted <= 3, f"{accepted} logins on {JUMP}"


def test_a_stopped_or_dead_jump_host_marks_exactly_the_hosts_behind_it(fleet: dict[str, Any]) -> None:
    names = sorted(h for h in fleet["ips"] if h.startswith("web"))
    behind_app1 = names[:10]
    behind_dead = names[10:15]
    jumps = {h: f"root@{fleet['ips'][JUMP]}" for h in behind_app1}
    jumps |= {h: f"root@{DOWN_IP}" for h in behind_dead}
    inventory = _inventory(fleet, "stopped-jump", jumps)
    timeout_s = 3
    settings = fleet["settings"]
    assert _in(settings, JUMP, "systemctl", "stop", "ssh").returncode == 0
    try:
        assert wait_until(lambda: not hosts.port_open(fleet["ips"][JUMP], 22), 10, 0.2)
        rest = "lab:!app1:!" + ":!".join(jumps)
        baseline = _collect(fleet, _inventory(fleet, "direct-rest", {}), pattern=rest)
        m = _collect(
            fleet,
            inventory,
            pattern="lab:!app1",
            extra_env={"COLLECTOR_CONNECT_TIMEOUT_S": str(timeout_s)},
        )
    finally:
        _in(settings, JUMP, "systemctl", "start", "ssh")
    assert wait_until(lambda: hosts.port_open(fleet["ips"][JUMP], 22), 30, 0.2)
    unreachable = {h for h, e in m["hosts"].items() if e["status"] == "unreachable"}
    assert unreachable == set(jumps), sorted(unreachable ^ set(jumps))
    for host in behind_app1:
        error = m["hosts"][host]["error"]
        assert f"jump host root@{fleet['ips'][JUMP]} unreachable" in error, error
    for host in behind_dead:
        assert f"jump host root@{DOWN_IP} unreachable" in m["hosts"][host]["error"], m["hosts"][host]
    assert not _lost({"hosts": {h: e for h, e in m["hosts"].items() if h not in jumps}})
    # A jump host that is down costs its hosts one connect timeout (never retried), once for all of them.
    bound = worst_connect_s(Settings(connect_timeout_s=timeout_s, connect_retries=0))
    print(f"\nstopped/dead jump run {m['span_s']:.2f}s, the rest alone {baseline['span_s']:.2f}s")
    assert m["span_s"] <= baseline["span_s"] + bound + 2.0, (m["span_s"], baseline["span_s"])


@pytest.mark.skipif(
    not os.environ.get("COLLECTOR_MEASURE_FORKS"), reason="a measurement: COLLECTOR_MEASURE_FORKS=1"
)
def test_measure_forks(fleet: dict[str, Any]) -> None:
    """The measurement behind the `forks` default (README "Fleets and bastions"): 33 hosts, direct and
    behind app1, forks 10/25/50, three runs each; prints min/median/max of the collection's span."""
    inventories = {
        "direct": _inventory(fleet, "m-direct", {}),
        "via": _inventory(fleet, "m-via", _behind_app1(fleet)),
    }
    for forks in (10, 25, 50):
        for kind, inventory in inventories.items():
            spans = sorted(_collect(fleet, inventory, "--forks", str(forks))["span_s"] for _ in range(3))
            shown = " / ".join(f"{s:.2f}s" for s in spans)
            print(f"\nforks {forks:2d} {kind:6s}: {shown} (min/median/max)")
