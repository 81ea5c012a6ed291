"""The four compose playbooks for real, on a throwaway Compose project on the lab's Docker Engine.

The project (`cwt<pid>`, one service `app` on no network, a healthcheck, releases v1 and v2 as git tags) is
this test's own: the lab's `sergas` project and hosts are never touched. It holds the lab lock all the same,
so that no `collector-lab up/down` stops the engine under it. Each
playbook runs as `collector remediate` runs it (collector.transport.ansible.run_playbook, check + diff, then
for real, then again): check mode changes nothing, the apply does what it says, the second run changes
nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.paths import resource
from collector.transport.ansible import PlaybookRun, run_playbook

pytestmark = [pytest.mark.lab]

SOCKET = Path("/run/iclab-docker/docker.sock")  # the lab's engine (lab/compose/README.md)
ENGINE = f"unix://{SOCKET}"
BASE_IMAGE = "iclab/base"
REMEDIATE = resource("playbooks") / "remediate"
COMPOSE_FILE = """\
version: "2.4"
services:
  app:
    build: {context: ., network: none}
    command: ["sleep", "infinity"]
    network_mode: none
    mem_limit: 64m
    memswap_limit: 64m
    restart: unless-stopped
    healthcheck: {test: ["CMD", "test", "-f", "/release"], interval: 1s, timeout: 2s, retries: 3}
"""


def _env() -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": ENGINE}


def _sh(*argv: str, cwd: Path | None = None, timeout: float = 120) -> str:
    proc = subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{argv}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}"
    return proc.stdout


def _compose_cli() -> list[str]:
    probe = subprocess.run(["docker", "compose", "version"], env=_env(), capture_output=True, check=False)
    return ["docker", "compose"] if probe.returncode == 0 else ["docker-compose"]


@pytest.fixture()
def project(lab: Any, lab_lock: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A git checkout with releases v1 and v2 (v2 checked out), up and healthy, and an inventory naming it."""
    if (
        not SOCKET.exists()
        or subprocess.run(["docker", "version"], env=_env(), capture_output=True, check=False).returncode != 0
    ):
        pytest.skip("the lab's Docker Engine is not running (collector-lab up starts it)")
    name = f"cwt{os.getpid()}"
    repo = tmp_path / "project"
    repo.mkdir()
    (repo / "docker-compose.yml").write_text(COMPOSE_FILE)
    (repo / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY release /release\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    _sh(*git[:5], "init", "-q", str(repo))
    for release in ("v1", "v2"):
        (repo / "release").write_text(release + "\n")
        _sh(*git, "add", "-A")
        _sh(*git, "commit", "-q", "-m", f"release {release}")
        _sh(*git, "tag", "-a", release, "-m", release)
    compose = [
        *_compose_cli(),
        "--project-name",
        name,
        "--project-directory",
        str(repo),
        "-f",
        str(repo / "docker-compose.yml"),
    ]
    _sh(*compose, "up", "-d", "--build", timeout=300)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        json.dumps(
            {
                "compose": {
                    "hosts": {
                        "cw": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": "/usr/bin/python3",
                            "collector_deploy": "compose",
                            "collector_compose_dir": str(repo),
                            "collector_compose_project": name,
                            "collector_compose_service": "app",
                            "collector_docker_host": ENGINE,
                        }
                    }
                }
            }
        )
    )
    info = {"name": name, "repo": repo, "inventory": str(inventory), "compose": compose}
    try:
        assert _wait_ready(name, 1), "the throwaway project never became healthy"
        yield info
    finally:
        subprocess.run(
            [*compose, "down", "-v", "--rmi", "local", "-t", "1"],
            env=_env(),
            capture_output=True,
            timeout=120,
            check=False,
        )


def _containers(name: str) -> list[dict[str, Any]]:
    ids = _sh("docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={name}").split()
    return json.loads(_sh("docker", "inspect", *ids)) if ids else []


def _wait_ready(name: str, count: int, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = _containers(name)
        healthy = [
            c
            for c in found
            if c["State"]["Running"] and c["State"].get("Health", {}).get("Status") == "healthy"
        ]
        if len(found) == count and len(healthy) == count:
            return True
        time.sleep(0.5)
    return False


def _run(book: str, info: dict[str, Any], extra: dict[str, Any], *, check: bool = False) -> PlaybookRun:
    return run_playbook(
        REMEDIATE / book, info["inventory"], "cw", extra, check=check, diff=True, unsafe_vars=True
    )


def _host(run: PlaybookRun) -> Any:
    play = run.hosts["cw"]
    assert play.status in ("ok", "changed"), f"{play.status}: {play.msg} {play.results[-3:]}"
    return play


def test_restart_once_per_request(project: dict[str, Any]) -> None:
    started = _containers(project["name"])[0]["State"]["StartedAt"]
    since = {"restart_since": int(time.time()) + 1}
    time.sleep(1.1)
    checked = _host(_run("compose-restart.yml", project, since, check=True))
    assert checked.changed and _containers(project["name"])[0]["State"]["StartedAt"] == started
    assert any("restarted (" in str(d.get("after")) for d in checked.diffs)
    assert _host(_run("compose-restart.yml", project, since)).changed
    assert _containers(project["name"])[0]["State"]["StartedAt"] != started
    again = _host(_run("compose-restart.yml", project, since))
    assert not again.changed  # started after the request: the same request restarts once


def test_scale_up_and_back_is_idempotent(project: dict[str, Any]) -> None:
    assert _host(_run("compose-scale.yml", project, {"scale_replicas": 2}, check=True)).changed
    assert len(_containers(project["name"])) == 1
    assert _host(_run("compose-scale.yml", project, {"scale_replicas": 2})).changed
    assert _wait_ready(project["name"], 2, 5)
    assert not _host(_run("compose-scale.yml", project, {"scale_replicas": 2})).changed
    assert _host(_run("compose-scale.yml", project, {"scale_replicas": 1})).changed
    assert _wait_ready(project["name"], 1, 5)


def test_memory_limit_writes_the_override_and_recreates(project: dict[str, Any]) -> None:
    override = project["repo"] / "docker-compose.override.yml"
    checked = _host(_run("compose-memory-limit.yml", project, {"memory_limit_max": "128M"}, check=True))
    assert checked.changed and not override.exists()
    assert any("134217728" in str(d.get("after")) for d in checked.diffs)
    assert _host(_run("compose-memory-limit.yml", project, {"memory_limit_max": "128M"})).changed
    assert "mem_limit: 128M" in override.read_text() and 'version: "2.4"' in override.read_text()
    (app,) = _containers(project["name"])
    assert (app["HostConfig"]["Memory"], app["HostConfig"]["MemorySwap"]) == (128 * 2**20, 128 * 2**20)
    assert not _host(_run("compose-memory-limit.yml", project, {"memory_limit_max": "128M"})).changed
    refused = run_playbook(
        REMEDIATE / "compose-memory-limit.yml",
        project["inventory"],
        "cw",
        {"memory_limit_max": "80%"},
        unsafe_vars=True,
    ).hosts["cw"]
    assert refused.failed and "80% and infinity are systemd's" in refused.msg


def test_rollback_to_previous_then_nothing(project: dict[str, Any]) -> None:
    checked = _host(_run("compose-rollback.yml", project, {"rollback_tag": "previous"}, check=True))
    assert checked.changed and any("v1 (" in str(m.get("msg")) for m in checked.results)
    assert (
        _sh("git", "-C", str(project["repo"]), "describe", "--tags").strip() == "v2"
    )  # check changed nothing
    old_id = _containers(project["name"])[0]["Id"]
    assert _host(_run("compose-rollback.yml", project, {"rollback_tag": "v1"})).changed
    assert _sh("git", "-C", str(project["repo"]), "describe", "--tags").strip() == "v1"
    (app,) = _containers(project["name"])
    assert app["Id"] != old_id and app["State"]["Health"]["Status"] == "healthy"
    assert _sh("docker", "exec", app["Id"], "cat", "/release").strip() == "v1"  # rebuilt from the release
    assert not _host(_run("compose-rollback.yml", project, {"rollback_tag": "v1"})).changed
