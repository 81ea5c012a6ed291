"""The compose host (collector_lab.compose): its own Docker Engine running sergas-app as a Compose project.

The engine, the healthy app container reaching db1's PostgreSQL and redis1's Redis through the machine,
the release checkout, the inventory's `compose` group, the three compose faults (break, evidence, heal),
and a stop that leaves nothing, even after the engine was killed. Everything that changes the compose
host holds the lab lock and leaves it healthy at v1.0.0.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_lab import compose, faults, hosts
from collector_lab.lock import lab_lock as hold_lab_lock

from collector.config import Settings
from collector.times import wait_until

pytestmark = pytest.mark.lab
COLLECTOR_LAB = str(Path(sys.executable).parent / "collector-lab")


def _get(path: str) -> tuple[int, str]:
    """GET the compose app from this machine: (status, body); (0, error) when nothing answers."""
    try:
        with urllib.request.urlopen(f"{compose.APP_URL}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _inspect(name: str) -> dict[str, Any]:
    res = compose.docker("inspect", name)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout)[0])


def _healthy_at_v1_0_0(settings: Settings) -> None:
    assert compose.checked_out(settings) == compose.GOOD
    assert compose.wait_healthy(settings, "1.0.0", timeout=60), compose.container_state(settings)


@pytest.fixture(scope="session")
def compose_host(lab: Any) -> Iterator[Settings]:
    """The running compose host (`collector-lab up` starts it; started here when it is not up)."""
    settings: Settings = lab.settings
    start = not (compose.wanted(settings) and compose.is_running(settings))
    if start or compose.HOST not in lab.inventory.read_text():
        with hold_lab_lock(timeout_s=3600):
            if start:
                compose.start(settings)
            compose.refresh_inventory(settings)
    yield settings


@pytest.fixture()
def healthy_compose(compose_host: Settings, lab_lock: None) -> Iterator[Settings]:
    """The compose host under the lab lock, no compose fault active before or after the test."""
    for name in ("compose-app-down", "compose-bad-deploy", "compose-oom"):
        if faults.is_active(compose_host, faults.get(name)):
            faults.heal_fault(name, compose_host)
    yield compose_host
    for name in ("compose-app-down", "compose-bad-deploy", "compose-oom"):
        faults.heal_fault(name, compose_host)
    _healthy_at_v1_0_0(compose_host)


# ---------------------------------------------------------------- the engine and the project


def test_the_engine_runs_on_its_own_socket_without_iptables_or_default_bridge(compose_host: Settings) -> None:
    pid = compose.engine_pid()
    assert pid is not None
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    for flag in ("--iptables=false", "--ip6tables=false", "--bridge=none", f"--pidfile={compose.PIDFILE}"):
        assert flag in argv
    assert stat.S_ISSOCK(compose.SOCKET.stat().st_mode)
    assert int(compose.PIDFILE.read_text()) == pid
    info = json.loads(compose.docker("info", "--format", "{{json .}}").stdout)
    assert info["DockerRootDir"] == str(compose.data_root(compose_host))
    assert info["ServerVersion"].startswith("20.10")
    assert subprocess.run(["ip", "link", "show", "docker0"], capture_output=True, check=False).returncode != 0
    base_label = compose.docker(
        "image", "inspect", "-f", f'{{{{index .Config.Labels "{compose.BASE_LABEL}"}}}}', compose.BASE_IMAGE
    )
    assert base_label.stdout.strip() == compose.base.recipe_hash()


def test_the_app_container_is_healthy_and_reaches_postgresql_and_redis(
    compose_host: Settings, lab_lock: None
) -> None:
    # The project as its files say: an earlier test's mitigation (a memory limit applied, then its override
    # removed) leaves the running container with the old settings until `up -d` recreates it.
    compose.compose(compose_host, "up", "-d")
    # A fault just healed on db1 (pool-exhausted cuts every 'sergas-app' connection, the compose app's too)
    # leaves its pool reconnecting for a while: healthy within 3 minutes.
    assert compose.wait_healthy(compose_host, timeout=180), (
        compose.container_state(compose_host),
        compose.app_health(),
    )
    info = _inspect("sergas_app_1")
    assert info["HostConfig"]["Memory"] == compose.MEMORY_LIMIT
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert info["Config"]["Healthcheck"]["Test"][-1] == "http://127.0.0.1:8000/health"
    net = info["NetworkSettings"]["Networks"][compose.NETWORK]
    assert net["IPAddress"] == compose.APP_IP
    assert info["Config"]["Labels"]["com.docker.compose.project"] == compose.PROJECT
    assert info["Config"]["Labels"]["com.docker.compose.service"] == compose.SERVICE
    code, body = _get("/health")
    health = json.loads(body)
    assert code == 200 and health["status"] == "healthy" and health["version"] == "1.0.0", body
    assert health["checks"]["database"]["status"] == "ok"
    assert health["checks"]["redis"]["status"] == "ok"
    assert health["checks"]["zoho"]["circuit_breaker"] == "closed"
    # Real rows from db1's PostgreSQL through the route, and a logged request in `docker logs`.
    code, body = _get("/api/customers")
    assert code == 200 and len(json.loads(body)["customers"]) == 20, body[:300]
    logs = compose.docker("logs", "--since", "2m", "sergas_app_1")
    assert "path=/api/customers status=200" in logs.stdout + logs.stderr


def test_the_checkout_holds_both_releases_with_v1_0_0_deployed_and_its_secrets_outside_git(
    compose_host: Settings,
) -> None:
    repo = compose.project_dir(compose_host)
    tags = subprocess.run(["git", "-C", str(repo), "tag"], capture_output=True, text=True, check=True).stdout
    assert tags.split() == ["v1.0.0", "v1.1.0"]
    shown = subprocess.run(
        ["git", "-C", str(repo), "show", "v1.1.0:sergas/queries.py"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "discount_code" in shown.stdout
    tracked = subprocess.run(
        ["git", "-C", str(repo), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"docker-compose.yml", "Dockerfile", "VERSION"} <= set(tracked) and ".env" not in tracked
    env = repo / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert "DATABASE_URL=postgresql://sergas:" in env.read_text()
    config = compose.compose(compose_host, "config", "--services")
    assert config.returncode == 0 and set(config.stdout.split()) == {"app", "zoho-mock"}, config.stderr


def test_the_inventory_lists_compose1_beside_the_lab_group(lab: Any, compose_host: Settings) -> None:
    doc = yaml.safe_load(lab.inventory.read_text())
    children = doc["all"]["children"]
    assert "compose" not in children["lab"]["children"]  # `--hosts lab` stays the nspawn hosts
    hv = children["compose"]["hosts"]["compose1"]
    assert hv["ansible_connection"] == "local"
    assert hv["collector_roles"] == "compose" and hv["collector_deploy"] == "compose"
    assert hv["collector_compose_dir"] == str(compose.project_dir(compose_host))
    assert (Path(hv["collector_compose_dir"]) / hv["collector_compose_file"]).is_file()
    assert hv["collector_compose_project"] == "sergas" and hv["collector_compose_service"] == "app"
    assert hv["collector_docker_host"] == "unix:///run/iclab-docker/docker.sock"
    assert hv["collector_app_url"] == "http://10.203.58.10:8000"
    assert hv["collector_memory_limit_target"] == "512M"


def test_only_the_two_lab_bridges_forward(compose_host: Settings) -> None:
    conf = Path("/proc/sys/net/ipv4/conf")
    assert (conf / "iclab0" / "forwarding").read_text().strip() == "1"
    assert (conf / compose.COMPOSE_BRIDGE / "forwarding").read_text().strip() == "1"
    others = [
        p.name
        for p in conf.iterdir()
        if p.name not in ("all", "default", "iclab0", compose.COMPOSE_BRIDGE)
        and (p / "forwarding").read_text().strip() != "0"
    ]
    assert others == []
    table = subprocess.run(
        ["ip", "route", "show", "table", compose.ROUTE_TABLE], capture_output=True, text=True, check=True
    ).stdout
    assert "unreachable default" in table
    rules = subprocess.run(["ip", "rule"], capture_output=True, text=True, check=True).stdout
    assert f"iif {compose.COMPOSE_BRIDGE} lookup {compose.ROUTE_TABLE}" in rules


def test_status_shows_the_engine_and_each_container(compose_host: Settings) -> None:
    out = subprocess.run(
        [COLLECTOR_LAB, "status", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    info = json.loads(out.stdout)["compose"]
    assert info["engine"] is True and info["release"] in ("v1.0.0", "v1.1.0")
    app = info["containers"]["app"]
    assert app["name"] == "sergas_app_1" and app["status"] in ("running", "exited")
    assert {"health", "restarts", "oom_killed"} <= set(app)


# ---------------------------------------------------------------- faults


def test_compose_app_down_stops_the_container_and_heal_brings_it_back(healthy_compose: Settings) -> None:
    settings = healthy_compose
    faults.break_fault("compose-app-down", settings)
    state = compose.container_state(settings)
    assert state["status"] == "exited", state
    assert _get("/health")[0] == 0
    assert faults.active_faults(settings)["compose-app-down"] is True
    faults.heal_fault("compose-app-down", settings)
    assert compose.container_state(settings)["health"] == "healthy"
    assert _get("/health")[0] == 200


def test_compose_bad_deploy_builds_v1_1_0_and_heal_rolls_back(healthy_compose: Settings) -> None:
    settings = healthy_compose
    image_before = compose.container_state(settings)["image"]
    faults.break_fault("compose-bad-deploy", settings)
    assert compose.checked_out(settings) == "v1.1.0"
    assert json.loads(_get("/health")[1])["version"] == "1.1.0"
    assert compose.container_state(settings)["image"] != image_before
    # Cached answers (60 s) of the good release are still served: a customer not read lately is not.
    ids = iter(range(401, 501))
    assert wait_until(lambda: _get(f"/api/orders?customer_id={next(ids, 500)}")[0] == 500, 30)
    logs = compose.docker("logs", "--since", "2m", "sergas_app_1")
    assert "column o.discount_code does not exist" in logs.stdout + logs.stderr
    faults.heal_fault("compose-bad-deploy", settings)
    assert compose.checked_out(settings) == "v1.0.0"
    assert _get("/api/orders")[0] == 200


def test_compose_oom_kills_the_app_under_its_limit_and_docker_restarts_it(healthy_compose: Settings) -> None:
    settings = healthy_compose
    before = compose.container_state(settings)
    assert before["oom_killed"] is False
    faults.break_fault("compose-oom", settings)
    after = compose.container_state(settings)
    assert after["oom_killed"] is True and after["restarts"] == before["restarts"] + 1, after
    assert after["status"] == "running" and after["id"] == before["id"]  # restarted, not recreated
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    assert f"Memory cgroup out of memory: Killed process {before['pid']} (python3)" in dmesg
    assert compose.wait_healthy(settings, timeout=60)
    faults.heal_fault("compose-oom", settings)
    healed = compose.container_state(settings)
    assert healed["oom_killed"] is False and healed["restarts"] == 0


def test_breaking_a_compose_fault_while_the_engine_is_down_says_so(
    compose_host: Settings, lab_lock: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compose, "is_running", lambda settings=None: False)
    with pytest.raises(faults.FaultError, match="compose host is not up"):
        faults.break_fault("compose-app-down", compose_host)
    assert faults.active_faults(compose_host)["compose-oom"] is False


# ---------------------------------------------------------------- stop leaves nothing; start clears leftovers


def _traces(settings: Settings) -> dict[str, Any]:
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    rules = subprocess.run(["ip", "rule"], capture_output=True, text=True, check=True).stdout
    findmnt = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True)
    pgrep = subprocess.run(
        ["pgrep", "-f", str(compose.EXEC_ROOT)], capture_output=True, text=True, check=False
    ).stdout.split()
    return {
        "procs": [p for p in pgrep if int(p) != os.getpid()],
        "mounts": [
            m
            for m in findmnt.stdout.splitlines()
            if m.startswith((str(compose.EXEC_ROOT), str(compose.data_root(settings))))
        ],
        "bridge": compose.COMPOSE_BRIDGE in links,
        "rules": compose.ROUTE_TABLE in rules,
        "socket": compose.SOCKET.exists(),
        "exec_root": compose.EXEC_ROOT.exists(),
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{compose.CGROUP_PARENT}")],
    }


NOTHING = {
    "procs": [],
    "mounts": [],
    "bridge": False,
    "rules": False,
    "socket": False,
    "exec_root": False,
    "cgroups": [],
}


@pytest.mark.destructive
def test_stop_leaves_nothing_even_after_a_killed_engine_and_start_recovers(
    compose_host: Settings, lab_lock: None
) -> None:
    settings = compose_host
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    try:
        compose.stop(settings)
        assert _traces(settings) == NOTHING
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == "0\n" or forward_before != "1\n"
        # A killed session: the engine up with its containers running, then dockerd SIGKILLed.
        compose.start(settings)
        pid = compose.engine_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: compose.engine_pid() is None, 10)
        assert _traces(settings)["mounts"]  # containers' rootfs and netns mounts are left behind
    finally:
        timings = compose.start(settings)
        compose.refresh_inventory(settings)
    assert timings["import_s"] == 0.0  # the base image was kept
    _healthy_at_v1_0_0(settings)
    assert _get("/health")[0] == 200
    # Leftovers of the killed engine went: one dockerd, one containerd, one shim per container.
    names = sorted(Path(f"/proc/{p}/comm").read_text().strip() for p in compose.engine_processes())
    assert names.count("dockerd") == 1 and names.count("containerd") == 1, names
    assert hosts.port_open(compose.APP_IP, compose.APP_PORT)
