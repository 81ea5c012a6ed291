"""One answer to "what roles has this host?": collect, plan and verify agree on `collector_roles: "app,db"`.

Unit level on the functions each step uses, then the CLI on this machine (connection local, no lab):
collect with both engines runs exactly the app and db probes of a custom catalogue, verify runs the
app and db checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from collector.collect import collect_targets
from collector.inventory import load_inventory
from collector.probes import build_request, load_entries
from collector.remediate.actions import get_action
from collector.remediate.plan import targets_for
from collector.verify import host_checks

INV = str(Path(__file__).parent / "collect" / "inventories" / "roles.yml")
CATALOGUE = (
    "collector_probes:\n"
    "  - {name: every, roles: [all], command: echo every, timeout_s: 5, description: all hosts}\n"
    "  - {name: app_probe, roles: [app], command: echo app, timeout_s: 5, description: app}\n"
    "  - {name: db_probe, roles: [db], command: echo db, timeout_s: 5, description: db}\n"
    "  - {name: redis_probe, roles: [redis], command: echo redis, timeout_s: 5, description: redis}\n"
    # The characters of "app,db": a step that iterates the string would run these.
    "  - {name: char_probe, roles: [a, p, d, b, ','], command: echo chars, timeout_s: 5,"
    " description: chars}\n"
)
EXPECTED_PROBES = {"every", "app_probe", "db_probe"}


@pytest.fixture()
def catalogue(tmp_path: Path) -> Path:
    path = tmp_path / "probes.yml"
    path.write_text(CATALOGUE)
    return path


def test_collect_selects_the_probes_of_both_roles(catalogue: Path) -> None:
    inv = load_inventory(INV)
    target = collect_targets(inv, ["both"])["both"]
    assert target.roles == ("app", "db")
    request = build_request(
        load_entries(str(catalogue)),
        target.hostvars,
        target.roles,
        since="10m",
        cap_bytes=1000,
        default_timeout_s=5,
    )
    assert {p["name"] for p in request["probes"]} == EXPECTED_PROBES


def test_plan_targets_a_host_by_each_of_its_roles() -> None:
    inv = load_inventory(INV)
    assert targets_for(get_action("kill-idle-connections"), inv, "both") == ["both"]  # a db action
    assert targets_for(get_action("pool-resize"), inv, "both") == ["both"]  # an app action
    assert targets_for(get_action("kill-idle-connections"), inv, "all") == ["both", "db1", "spaced"]


def test_verify_runs_the_checks_of_both_roles() -> None:
    """Real checks on this machine (testinfra's local backend): the app's /health and the db's SELECT 1."""
    checks = host_checks(load_inventory(INV), "both")
    names = [c.name for c in checks]
    assert "/health healthy" in names and "SELECT 1" in names and "Redis PING" not in names
    assert all(c.host == "both" for c in checks)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from collector.cli import main; sys.argv[0] = 'collector'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180, check=False
    )


@pytest.mark.parametrize("engine", ["ssh", "ansible"])
def test_collect_cli_runs_the_probes_of_both_roles(engine: str, catalogue: Path, tmp_path: Path) -> None:
    proc = _cli(
        "collect",
        "--hosts",
        "both",
        "-i",
        INV,
        "--engine",
        engine,
        "--catalogue",
        str(catalogue),
        "--out",
        str(tmp_path / "out"),
    )
    assert proc.returncode in (0, 1), proc.stderr
    [manifest_path] = (tmp_path / "out").glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    host = manifest["hosts"]["both"]
    assert host["roles"] == ["app", "db"]
    assert set(host["probes"]) == EXPECTED_PROBES, host["probes"]


def test_verify_cli_runs_the_checks_of_both_roles() -> None:
    proc = _cli("verify", "--hosts", "both", "-i", INV, "--json")
    assert proc.returncode == 1, proc.stderr  # nothing listens on the app URL, no PostgreSQL here
    checks = [c for c in json.loads(proc.stdout)["checks"] if c["host"] == "both"]
    assert {c["name"] for c in checks} == {"/health healthy", "SELECT 1"}
