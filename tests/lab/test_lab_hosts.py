"""The lab is what it claims: hosts, services, passwords, monitoring, inventory; up/down leave no trace.

Tests that need the healthy state hold `lab_lock`, so a fault test elsewhere is not half-way through.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_lab import BRIDGE, LAB_NAME, assets, base, compose, hosts, monitoring

from collector.config import Settings
from collector.times import wait_until

COLLECTOR_LAB = str(Path(sys.executable).parent / "collector-lab")
ROLE_SERVICE = {"app": "sergas-app", "db": "postgresql", "redis": "redis-server", "web": "ssh"}


def _cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    argv = [COLLECTOR_LAB, *args]
    return subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _promql(lab: Any, query: str) -> list[dict[str, Any]]:
    url = f"{lab.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    return list(_get_json(url)["data"]["result"])


# ---------------------------------------------------------------- bad input (no lab needed)


def test_up_rejects_a_negative_extra() -> None:
    proc = _cli("up", "--extra", "-1")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--extra" in proc.stderr
    assert proc.stdout == ""


def test_up_without_root_says_so_and_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner
    from collector_lab.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("COLLECTOR_STATE_DIR", str(tmp_path / "state"))
    res = CliRunner().invoke(main, ["up"])
    assert res.exit_code == 2, res.output
    assert "needs root" in res.output and res.output.strip().count("\n") == 0
    assert not (tmp_path / "state").exists()  # nothing written


def test_up_without_nspawn_names_the_package(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the nspawn check comes after the root check")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("nsenter", "ip", "ssh-keygen"):  # everything but systemd-nspawn
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(bin_dir), "COLLECTOR_STATE_DIR": str(tmp_path / "state")}
    proc = _cli("up", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "systemd-nspawn is not installed" in proc.stderr and "systemd-container" in proc.stderr
    assert not (tmp_path / "state").exists()


def test_mirror_comes_from_the_machines_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\nComponents: main\n"
    )
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://old.invalid/debian/ bookworm main contrib\n"
    )
    sources = base.apt_sources(tmp_path)
    assert [(s.uri, s.suite) for s in sources] == [
        ("http://mirror.invalid/debian", "bookworm"),
        ("http://mirror.invalid/debian", "bookworm-updates"),
        ("http://old.invalid/debian", "bookworm"),
    ]
    assert base.mirror(sources) == "http://mirror.invalid/debian"


def test_recipe_hash_covers_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    before = base.recipe_hash()
    monkeypatch.setattr(base, "APT_PACKAGES", (*base.APT_PACKAGES, "htop"))
    assert base.recipe_hash() != before
    assert "htop" in base.recipe()["apt"]  # type: ignore[operator]


def test_alert_rules_fire_at_the_runbook_thresholds_and_not_below() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    folder = assets() / "monitoring"
    proc = subprocess.run(
        [promtool, "test", "rules", "rules_test.yml"],
        cwd=folder,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rendered_prometheus_config_is_valid_and_scrapes_each_app_host(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    settings = Settings(state_dir=str(tmp_path))
    paths = monitoring.render_configs(settings, {"app1": "10.203.57.11", "app2": "10.203.57.14"})
    proc = subprocess.run(
        [promtool, "check", "config", str(paths["prometheus"])],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = yaml.safe_load(paths["prometheus"].read_text())
    app_job = next(j for j in doc["scrape_configs"] if j["job_name"] == "sergas-app")
    assert app_job["static_configs"] == [
        {"targets": ["10.203.57.11:8000"], "labels": {"host": "app1"}},
        {"targets": ["10.203.57.14:8000"], "labels": {"host": "app2"}},
    ]
    assert doc["rule_files"] == [str(paths["rules"])]


# ---------------------------------------------------------------- the running lab


@pytest.mark.lab
def test_each_host_runs_its_role_service_and_sshd(lab: Any, lab_lock: None) -> None:
    for name in lab.names:
        host = lab.host(name)
        assert host.run("hostname").stdout.strip() == name
        assert host.service("ssh").is_running
        group = next(g for g in ("app", "db", "redis", "web") if name in lab.groups[g])
        service = host.service(ROLE_SERVICE[group])
        assert service.is_running and service.is_enabled, f"{name}: {ROLE_SERVICE[group]} not active+enabled"


@pytest.mark.lab
def test_every_host_has_the_runbook_basics(lab: Any) -> None:
    machine_ids = set()
    for name in lab.names:
        host = lab.host(name)
        machine_id = host.file("/etc/machine-id").content_string.strip()
        assert len(machine_id) == 32
        machine_ids.add(machine_id)
        assert host.file(f"/var/log/journal/{machine_id}").is_directory, f"{name}: journal not persistent"
        for tool in ("git", "python3", "sar", "iostat", "curl", "sudo", "ss", "dmesg"):
            assert host.exists(tool), f"{name}: {tool} missing"
        assert host.run("dmesg | tail -1").rc == 0, f"{name}: dmesg needs CAP_SYSLOG"
    assert len(machine_ids) == len(lab.names)


@pytest.mark.lab
def test_ports_listen_where_the_app_needs_them(lab: Any, lab_lock: None) -> None:
    ip = lab.ips
    assert lab.host("app1").socket("tcp://0.0.0.0:8000").is_listening
    assert lab.host("db1").socket(f"tcp://{ip['db1']}:5432").is_listening
    assert lab.host("redis1").socket(f"tcp://{ip['redis1']}:6379").is_listening
    for name in lab.names:
        assert hosts.port_open(ip[name], 22), name


@pytest.mark.lab
def test_psql_works_with_the_lab_password_and_not_without(lab: Any, lab_lock: None) -> None:
    app = lab.host("app1")
    cmd = "psql -h {} -U sergas -d sergas -tAc 'select current_user, count(*) > 0 from customers'"
    good = app.run("env PGPASSWORD=%s " + cmd.format(lab.ips["db1"]), lab.secrets["db_password"])
    assert good.rc == 0, good.stderr
    assert good.stdout.strip() == "sergas|t"
    bad = app.run("env PGPASSWORD=wrong-password " + cmd.format(lab.ips["db1"]))
    assert bad.rc != 0 and "password authentication failed" in bad.stderr


@pytest.mark.lab
def test_redis_cli_works_with_the_lab_password_and_not_without(lab: Any, lab_lock: None) -> None:
    app = lab.host("app1")
    ip = lab.ips["redis1"]
    good = app.run("env REDISCLI_AUTH=%s redis-cli -h %s ping", lab.secrets["redis_password"], ip)
    assert good.stdout.strip() == "PONG"
    maxmem = app.run(
        "env REDISCLI_AUTH=%s redis-cli -h %s config get maxmemory", lab.secrets["redis_password"], ip
    )
    assert int(maxmem.stdout.split()[-1]) > 0
    anon = app.run("redis-cli -h %s ping", ip)
    assert "NOAUTH" in anon.stdout + anon.stderr


@pytest.mark.lab
def test_app_health_is_healthy_from_the_host_and_over_the_bridge(lab: Any, lab_lock: None) -> None:
    on_host = json.loads(lab.host("app1").check_output("curl -fsS http://127.0.0.1:8000/health"))
    assert on_host["status"] == "healthy"
    assert {"database", "redis"} <= set(on_host["checks"])
    over_bridge = _get_json(f"http://{lab.ips['app1']}:8000/health")
    assert over_bridge["status"] == "healthy"


@pytest.mark.lab
def test_prometheus_scrapes_app1_and_loaded_the_runbook_alerts(lab: Any, lab_lock: None) -> None:
    def app1_up() -> list[dict[str, Any]]:
        result = _promql(lab, 'up{job="sergas-app",host="app1"}')
        return result if result and result[0]["value"][1] == "1" else []

    assert wait_until(app1_up, 20, 0.5), _promql(lab, 'up{job="sergas-app",host="app1"}')
    rules = _get_json(f"{lab.prometheus_url}/api/v1/rules")["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert {
        "SergasAppDown",
        "SergasHigh5xxRatio",
        "SergasHighLatencyP95",
        "SergasZohoCircuitBreakerOpen",
    } <= names
    am = _get_json(f"{lab.prometheus_url}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert any("127.0.0.1:9093" in a["url"] for a in am)


@pytest.mark.lab
def test_alertmanager_answers_on_loopback_only(lab: Any) -> None:
    status = _get_json(f"{lab.alertmanager_url}/api/v2/status")
    assert status["cluster"]["status"] == "disabled"
    # its one receiver is `collector serve` on loopback, with the lab's bearer token from a file
    assert "url: http://127.0.0.1:9095/alertmanager" in status["config"]["original"]
    assert "credentials_file:" in status["config"]["original"]
    assert isinstance(_get_json(f"{lab.alertmanager_url}/api/v2/alerts"), list)
    listening = subprocess.run(["ss", "-Htlnp"], check=False, capture_output=True, text=True).stdout
    lines = [line for line in listening.splitlines() if ":9093 " in line or ":9090 " in line]
    assert lines and all("127.0.0.1:" in line for line in lines), lines


@pytest.mark.lab
def test_inventory_follows_the_contract_and_ansible_reaches_every_host(lab: Any) -> None:
    doc = yaml.safe_load(lab.inventory.read_text())
    groups = doc["all"]["children"]["lab"]["children"]
    assert set(groups) == {"app", "db", "redis", "web"}
    app1 = groups["app"]["hosts"]["app1"]
    assert app1["ansible_host"] == lab.ips["app1"] and app1["ansible_user"] == "root"
    assert "StrictHostKeyChecking=yes" in app1["ansible_ssh_common_args"]
    assert app1["collector_service"] == "sergas-app" and app1["collector_app_port"] == 8000
    assert groups["db"]["hosts"]["db1"]["collector_pg_database"] == "sergas"
    assert groups["redis"]["hosts"]["redis1"]["collector_redis_password"] == lab.secrets["redis_password"]
    assert doc["all"]["vars"]["collector_prometheus_url"] == "http://127.0.0.1:9090"
    known = lab.known_hosts.read_text()
    assert all(f"{n},{ip} ssh-ed25519 " in known for n, ip in lab.ips.items())
    ansible = Path(sys.executable).parent / "ansible"
    proc = subprocess.run(
        [str(ansible), "-i", str(lab.inventory), "lab", "-m", "ping", "-o"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(lab.names)


@pytest.mark.lab
def test_each_host_sits_in_its_own_memory_cgroup_with_a_limit(lab: Any) -> None:
    for name in lab.names:
        cg = hosts.memory_cgroup(name)
        limit = int((cg / "memory.limit_in_bytes").read_text())
        assert 0 < limit < 8 * 2**30, name
        leader = hosts.leader_pid(lab.settings, name)
        assert leader and str(leader) in (cg / "cgroup.procs").read_text().split(), name


@pytest.mark.lab
def test_status_json_shows_every_host_and_service(lab: Any, lab_lock: None) -> None:
    proc = _cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["up"] is True and info["bridge"] is True
    for name in lab.names:
        h = info["hosts"][name]
        assert h["running"] and h["service_state"] == "active" and h["ssh"], (name, h)
    assert info["monitoring"]["prometheus"]["ready"] and info["monitoring"]["alertmanager"]["ready"]


def _links() -> str:
    return subprocess.run(["ip", "-br", "link"], check=False, capture_output=True, text=True).stdout


def _traces(settings: Any) -> dict[str, Any]:
    """Everything of the lab that must be gone after `lab down`."""
    state_dir = str(settings.state_dir)
    mounts = [line for line in Path("/proc/self/mounts").read_text().splitlines() if state_dir in line]
    cgroups = [str(p) for c in hosts.CGROUP_CONTROLLERS if (p := hosts.CGROUP_ROOT / c / LAB_NAME).exists()]
    bridge = subprocess.run(["ip", "link", "show", BRIDGE], check=False, capture_output=True).returncode == 0
    veths = [
        line
        for line in subprocess.run(
            ["ip", "-br", "link"], check=False, capture_output=True, text=True
        ).stdout.splitlines()
        if line.startswith("vb-")
    ]
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes()
                # An ssh client (a test's ControlMaster) may name the lab key; it is no lab process.
                if state_dir.encode() in argv and not argv.split(b"\0")[0].endswith(b"ssh"):
                    procs.append(entry.name)
            except OSError:
                pass
    return {
        "mounts": mounts,
        "cgroups": cgroups,
        "bridge": bridge,
        "veths": veths,
        "procs": procs,
        "inventory": hosts.inventory_path(settings).exists(),
        # an earlier lab's silences and firing alerts would mute the next lab's
        "monitoring data": sorted(p.name for p in monitoring.mon_dir(settings).glob("*-data")),
        # the compose host's engine: its exec root (socket, pidfile, netns) and its network's bridge
        "compose": [
            trace
            for trace, left in (
                (str(compose.EXEC_ROOT), compose.EXEC_ROOT.exists()),
                (compose.COMPOSE_BRIDGE, compose.COMPOSE_BRIDGE in _links()),
            )
            if left
        ],
    }


@pytest.mark.lab
@pytest.mark.destructive
@pytest.mark.slow
def test_down_leaves_nothing_and_up_tolerates_leftovers(lab: Any, lab_lock: None) -> None:
    inotify_before = hosts.INOTIFY.read_text()
    try:
        down = _cli("down")
        assert down.returncode == 0, down.stderr
        assert _traces(lab.settings) == {
            "mounts": [],
            "cgroups": [],
            "bridge": False,
            "veths": [],
            "procs": [],
            "inventory": False,
            "monitoring data": [],
            "compose": [],
        }
        assert hosts.INOTIFY.read_text() == inotify_before
        status = _cli("status")
        assert status.returncode == 1 and "DOWN" in status.stdout
        # Leftovers of a crashed session: a bare bridge without address and an orphan cgroup.
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        (hosts.CGROUP_ROOT / "systemd" / LAB_NAME / "ghost").mkdir(parents=True)
    finally:
        started = time.monotonic()
        up = _cli("up")
        took = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    if "provisioning" not in up.stderr:  # lab/provision or lab/app changed meanwhile: fresh hosts, slower
        assert took < 15, f"lab up from provisioned overlays took {took:.1f}s"
    assert not (hosts.CGROUP_ROOT / "systemd" / LAB_NAME / "ghost").exists()
    again = _cli("up")  # idempotent: everything kept
    assert again.returncode == 0 and again.stdout.count(" kept") == len(lab.names), again.stdout
    for name in lab.names:
        lab._hosts.pop(name, None)  # new boots: drop cached connections
    assert (
        json.loads(lab.host("app1").check_output("curl -fsS http://127.0.0.1:8000/health"))["status"]
        == "healthy"
    )


@pytest.mark.lab
@pytest.mark.destructive
@pytest.mark.slow
def test_thirty_extra_hosts_boot_and_go_away_again(lab: Any, lab_lock: None) -> None:
    inotify_before = hosts.INOTIFY.read_text()
    try:
        up = _cli("up", "--extra", "30", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert int(hosts.INOTIFY.read_text()) >= 128 + 33 * hosts.INOTIFY_PER_HOST
        doc = yaml.safe_load(hosts.inventory_path(lab.settings).read_text())
        web = doc["all"]["children"]["lab"]["children"]["web"]["hosts"]
        assert sorted(web) == [f"web{n:02d}" for n in range(1, 31)]
        assert web["web30"]["ansible_host"] == "10.203.57.130" and web["web30"]["collector_service"] == "ssh"
        ansible = Path(sys.executable).parent / "ansible"
        proc = subprocess.run(
            [
                str(ansible),
                "-i",
                str(lab.inventory),
                "web",
                "-m",
                "command",
                "-a",
                "hostname",
                "-o",
                "-f",
                "30",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert all(f"web{n:02d} | CHANGED | rc=0 | (stdout) web{n:02d}" in proc.stdout for n in range(1, 31))
    finally:
        back = _cli("up", timeout=300)
    assert back.returncode == 0, back.stdout + back.stderr
    assert hosts.INOTIFY.read_text() == inotify_before
    assert set(hosts.nspawn_pids(lab.settings)) == set(lab.names)
    assert "web01" not in hosts.inventory_path(lab.settings).read_text()
