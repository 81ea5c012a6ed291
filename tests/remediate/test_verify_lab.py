"""Verify on the lab: the lab's critical flows run on app1, their traffic reaches Prometheus before the 5xx
ratio and p95 are measured, and a stopped app fails its flows (healed after)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collector.inventory import load_inventory
from collector.smoke import flows_for
from collector.times import wait_until
from collector.verify import passed, run_checks

pytestmark = [pytest.mark.lab]

LAB_FLOWS = {"flow: health", "flow: recent orders", "flow: a customer's orders", "flow: customers"}
MEASURES = ("5xx ratio < 1%", "p95 < 200 ms")


def _healthy(app_host: Any) -> bool:
    answer = app_host.run("curl -sf --max-time 3 http://127.0.0.1:8000/health")
    return answer.rc == 0 and '"status": "healthy"' in answer.stdout


def test_the_lab_ships_flows_and_verify_runs_them_and_measures_their_traffic(
    lab: Any, lab_lock: None, app_host: Any
) -> None:
    assert wait_until(lambda: _healthy(app_host), 60, 1.0), "app1 is not healthy"
    inv = load_inventory(str(lab.inventory))
    assert {f"flow: {f.name}" for f in flows_for(inv.hosts["app1"], inv.source)} == LAB_FLOWS
    checks = run_checks(inv, ["app1"], lab.settings)
    flows = {c.name: c for c in checks if c.name.startswith("flow: ")}
    assert set(flows) == LAB_FLOWS
    for check in flows.values():
        assert check.passed and check.host == "app1" and "5/5 ok" in check.detail, check
    measured = {c.name: c for c in checks if c.name in MEASURES}
    # Prometheus scraped verify's own 20 requests before the measure: a value, never "no data".
    for name in MEASURES:
        assert measured[name].status in ("pass", "fail"), measured[name]
        assert "verify sent 20 requests" in measured[name].detail, measured[name]


def test_a_db_only_verify_still_drives_the_apps_traffic(lab: Any, lab_lock: None, app_host: Any) -> None:
    assert wait_until(lambda: _healthy(app_host), 60, 1.0), "app1 is not healthy"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "collector"), "verify", "--hosts", "db1", "-i", str(lab.inventory)]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    doc = json.loads(proc.stdout)
    assert doc["passed"] is (proc.returncode == 0)
    names = {c["name"]: c for c in doc["checks"]}
    assert not any(n.startswith("flow: ") for n in names)  # app1 is not verified, only driven
    for name in MEASURES:
        assert names[name]["status"] != "unknown" and "verify sent 20 requests" in names[name]["detail"]


@pytest.mark.destructive
def test_a_stopped_app_fails_its_flows_and_verify(lab: Any, lab_lock: None, app_host: Any) -> None:
    inv = load_inventory(str(lab.inventory))
    app_host.run("systemctl stop sergas-app")
    try:
        checks = run_checks(inv, ["app1"], lab.settings, monitoring=False)
        flows = {c.name: c for c in checks if c.name.startswith("flow: ")}
        assert set(flows) == LAB_FLOWS and not passed(checks)
        for check in flows.values():
            assert check.status == "fail" and "5 of 5 failed (no answer" in check.detail, check
    finally:
        app_host.run("systemctl start sergas-app")
        assert wait_until(lambda: _healthy(app_host), 60, 1.0), "app1 did not come back"
    healed = run_checks(inv, ["app1"], lab.settings, monitoring=False)
    assert all(c.passed for c in healed if c.name.startswith("flow: ")), healed
