"""Triage against real bundles from the lab: each `lab break` fault yields its finding and severity,
and the healed lab yields no finding above P3. Holds the lab lock while a fault is in."""
from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from collector.bundle import Bundle
from collector.collect import collect
from collector.core import SEVERITIES
from collector.triage import read_findings, triage_bundle

pytestmark = [pytest.mark.lab]

QUIET_WAIT_S = 330  # Prometheus' 5-minute rates and their alerts outlive a healed fault by up to this long


def _rank(severity: str) -> int:
    return len(SEVERITIES) - SEVERITIES.index(severity) if severity in SEVERITIES else 0


def _triage_lab(tmp_path: Path, lab: Any, since: str = "2m") -> dict[str, Any]:
    """Collect the whole lab (the real collect API, ssh engine) and triage the bundle."""
    outcome = collect("lab", inventory=str(lab.inventory), since=since, out_dir=str(tmp_path / "bundles"), after=False)
    assert outcome.bundle is not None
    findings = triage_bundle(outcome.bundle)
    assert read_findings(Bundle.open(outcome.bundle)) == findings  # findings.json reads back as what triage returned
    return findings.to_dict() | {"rules": findings.rules}


def _drive(lab: Any, seconds: float = 8.0, rps: float = 10.0, orders_only: bool = False) -> dict[int, int]:
    """Bounded traffic at the app on its bridge address (the demo's driver: orders of random customers, customers)."""
    from collector_lab.demo import drive_traffic
    return drive_traffic(f"http://{lab.ips[lab.groups['app'][0]]}:8000", seconds, rps, orders_only=orders_only)


def _until_orders_answer(lab: Any, timeout_s: float = 60.0) -> None:
    """Wait (bounded) until a short burst of orders requests all answer 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and set(_drive(lab, 1.0, 8.0, orders_only=True)) != {200}:
        time.sleep(2)


def _alerts(lab: Any) -> list[str]:
    try:
        with urllib.request.urlopen(f"{lab.alertmanager_url}/api/v2/alerts?active=true&silenced=false&inhibited=false",
                                    timeout=5) as response:
            return [a["labels"].get("alertname", "?") for a in json.loads(response.read())]
    except (OSError, ValueError):
        return []


def _prometheus(lab: Any, expr: str) -> float | None:
    query = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"{lab.prometheus_url}/api/v1/query?{query}", timeout=5) as response:
            result = json.loads(response.read())["data"]["result"]
        value = float(result[0]["value"][1]) if result else None
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return None if value is None or math.isnan(value) else value


def _quiet(lab: Any) -> bool:
    """No active alert, 5xx ratio and p95 under the runbook's thresholds (or no traffic at all)."""
    ratio = _prometheus(lab, lab.settings.promql_error_ratio)
    p95 = _prometheus(lab, lab.settings.promql_p95)
    return not _alerts(lab) and (ratio is None or ratio <= 0.10) and (p95 is None or p95 <= 0.2)


def _heal_leftovers() -> None:
    """Heal faults some earlier run left in; one that will not heal is left (its findings only add to ours)."""
    from collector_lab import faults
    for name, active in faults.active_faults().items():
        if active:
            try:
                faults.heal_fault(name)
            except faults.FaultError:
                pass


def _summary(doc: dict[str, Any]) -> str:
    return "; ".join(f"{f['severity']} {f['id']} {f['hosts']}" for f in doc["findings"]) or "no finding"


def test_healed_lab_has_no_finding_above_p3(lab: Any, lab_lock: None, tmp_path: Path) -> None:
    _heal_leftovers()
    deadline = time.monotonic() + QUIET_WAIT_S
    while not _quiet(lab) and time.monotonic() < deadline:  # earlier faults' 5-minute rates and alerts fade
        time.sleep(10)
    time.sleep(65)  # the journal window below must not reach back into a fault healed a moment ago
    doc = _triage_lab(tmp_path, lab, since="1m")
    above = [f for f in doc["findings"] if _rank(f["severity"]) > _rank("P3")]
    assert above == [], _summary(doc)
    assert doc["severity"] in ("none", "P3")
    assert doc["questions"]["down_or_degraded"]["answer"] in ("healthy", "minor issues")
    assert doc["security"]["suspected"] is False
    for rule in ("app-down", "database-down", "redis-down", "pg-connections-near-max", "disk-full", "host-unreachable"):
        assert doc["rules"][rule] == "passed", (rule, doc["unknown"])
    figures = doc["figures"]
    assert figures["pg_max_connections"] and all(v and v > 0 for v in figures["pg_max_connections"].values())
    assert figures["redis_maxmemory"] and all(v and v > 0 for v in figures["redis_maxmemory"].values())


# fault → (rules that must fire with their severity, the least overall severity, traffic during collection,
#          seconds to let the fault develop before collecting)
CASES: dict[str, tuple[dict[str, str], str, bool, float]] = {
    "app-down": ({"app-down": "P0", "service-inactive": "P1"}, "P0", False, 0),
    "bad-deploy": ({"deploy-before-errors": "P1"}, "P1", True, 0),
    # 7 s: the app's idle pool connections are reaped after 5 s, so traffic must open new ones and is refused
    "pool-exhausted": ({"pg-connections-near-max": "P1", "too-many-connections-logged": "P1"}, "P1", True, 7),
    "lock-contention": ({"lock-contention": "P2"}, "P2", True, 0),
    "rate-limited": ({"rate-limited": "P2"}, "P2", False, 15),
    "error-storm": ({"error-storm": "P2", "access-log-5xx-ratio": "P1"}, "P1", False, 5),
    "oom": ({"oom-kill": "P2"}, "P2", False, 0),
    # /var/lib/sergas is a 16 MiB tmpfs: df sees it full, the app logs ENOSPC, /health fails
    "disk-full": ({"disk-exhausted": "P1", "no-space-logged": "P1", "app-down": "P0"}, "P0", True, 0),
    "redis-memory": ({"redis-near-maxmemory": "P2"}, "P2", True, 0),
    "host-down": ({"host-unreachable": "P1"}, "P1", False, 0),
}


def _triage_with_traffic(tmp_path: Path, lab: Any, traffic: bool) -> dict[str, Any]:
    """Collect while the app serves requests, as in a real incident (blocked queries exist only then)."""
    if not traffic:
        return _triage_lab(tmp_path, lab)
    _drive(lab, 5.0, 10.0)  # the fault's errors reach the logs first
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = pool.submit(_drive, lab, 12.0, 10.0)
        time.sleep(5)
        doc = _triage_lab(tmp_path, lab)
        load.result()
    return doc


@pytest.mark.destructive
@pytest.mark.parametrize("fault", list(CASES))
def test_fault_yields_its_finding(fault: str, lab: Any, lab_lock: None, tmp_path: Path) -> None:
    from collector_lab import faults

    expected, least, traffic, settle_s = CASES[fault]
    _heal_leftovers()
    _until_orders_answer(lab)  # a previous fault's aftermath (e.g. connections still held) must not mask this one
    faults.break_fault(fault)
    try:
        time.sleep(settle_s)
        doc = _triage_with_traffic(tmp_path, lab, traffic)
    finally:
        faults.heal_fault(fault)
    fired = {f["rule"]: f for f in doc["findings"]}
    for rule, severity in expected.items():
        assert rule in fired, f"{fault}: {rule} did not fire; got {_summary(doc)}; unknown {doc['unknown']}"
        assert fired[rule]["severity"] == severity, _summary(doc)
        assert fired[rule]["evidence"], f"{rule} has no evidence"
        for ev in fired[rule]["evidence"]:
            assert ev["path"] and ev["excerpt"], ev
    assert _rank(doc["severity"]) >= _rank(least), _summary(doc)


@pytest.mark.destructive
def test_slow_queries_fault_and_a_query_over_5s(lab: Any, lab_lock: None, tmp_path: Path) -> None:
    """The slow-queries fault (each order lookup scans and JIT-compiles, ~100 ms) plus a report query that
    runs 15 s on db1: the runbook's > 5 s rule names that query; latency rules judge the rest."""
    from collector_lab import faults

    db = lab.groups["db"][0]
    _heal_leftovers()
    faults.break_fault("slow-queries")
    report = subprocess.Popen(  # a real long query on the real database, ends by itself
        ["ssh", "-F", str(lab.ssh_config), db, "runuser -u postgres -- psql -X -q -d sergas -c 'SELECT pg_sleep(15)'"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            load = pool.submit(_drive, lab, 12.0, 15.0, True)
            time.sleep(7)
            doc = _triage_lab(tmp_path, lab)
            load.result()
    finally:
        faults.heal_fault("slow-queries")
        try:
            report.wait(timeout=20)
        except subprocess.TimeoutExpired:
            report.kill()
    fired = {f["rule"]: f for f in doc["findings"]}
    assert "slow-queries" in fired, _summary(doc)
    slow = fired["slow-queries"]
    assert slow["severity"] == "P2" and slow["hosts"] == [db]
    assert any("pg_sleep(15)" in ev["excerpt"] for ev in slow["evidence"]), slow["evidence"]
    assert slow["mitigation"]["action"] == "extend-cache-ttl"
