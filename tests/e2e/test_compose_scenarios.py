"""The runbook's Docker Compose variant end to end on the lab's compose host, typed as an engineer would.

As tests/e2e/test_scenarios.py, for each compose fault: lab break → collect (`--hosts compose1`) → the
finding and its suggested mitigation → planned by alice → approved by bob (each with their lab key) →
remediate apply (the compose playbook, chosen by the inventory's collector_deploy) → verify green → the
same plan approved again and applied: nothing changes → report timeline → lab heal (always). The whole
scenario holds the lab lock; plans and bundles live in tmp_path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import scenario_kit
from collector_lab import demo
from scenario_kit import APPROVER, REQUESTER, Shell, approve_and_apply, heal_leftovers, ok

from collector.core import severity_rank
from collector.inventory import load_inventory

pytestmark = [pytest.mark.lab, pytest.mark.destructive, pytest.mark.slow]

HOST = "compose1"
TIMINGS: dict[str, float] = {}


@dataclass(frozen=True)
class Expect(scenario_kit.Expect):
    """What the runbook says this compose fault looks like and how it is fixed."""

    playbook: str  # the compose playbook the plan binds (the inventory's collector_deploy chose it)
    orders_traffic_s: float = 0.0  # requests at /api/orders after the break (the errors a bad deploy makes)


EXPECTED: dict[str, Expect] = {
    # docker-compose stop app: the container exited and stays down
    "compose-app-down": Expect("compose-container-down", "P1", "P1", "restart", {}, "compose-restart"),
    # v1.1.0 checked out and built: its /api/orders fails; roll back to the previous release tag
    "compose-bad-deploy": Expect(
        "compose-deploy-before-errors",
        "P1",
        "P1",
        "rollback",
        {"tag": "v1.0.0"},
        "compose-rollback",
        orders_traffic_s=4.0,
    ),
    # OOM-killed under its 256 MiB limit and restarted by docker: the instance still carries OOMKilled; the
    # lab inventory's collector_memory_limit_target (512M) is the limit suggested
    "compose-oom": Expect(
        "compose-oom-killed", "P2", "P2", "memory-limit", {"max": "512M"}, "compose-memory-limit"
    ),
}


def _compose_vars(lab: Any) -> dict[str, Any]:
    inv = load_inventory(str(lab.inventory))
    if HOST not in inv.hosts:
        pytest.skip("the lab's compose host is not up (no compose1 in the lab inventory)")
    return dict(inv.hosts[HOST])


@pytest.fixture()
def compose_lab(lab: Any, lab_lock: None) -> Iterator[Any]:
    """The lab with its compose host up and no fault left over by anyone (the lock is held)."""
    _compose_vars(lab)
    heal_leftovers(lab)
    yield lab


@pytest.fixture(scope="module", autouse=True)
def _print_timings() -> Iterator[None]:
    yield
    if TIMINGS:
        print(
            "\ncompose scenario timings (break → heal): "
            + ", ".join(f"{k} {v:.1f}s" for k, v in TIMINGS.items())
        )


def _undo_memory_limit(hostvars: dict[str, Any]) -> None:
    """The override the memory limit wrote goes before the heal recreates the container (back to 256m)."""
    override = Path(str(hostvars["collector_compose_dir"])) / "docker-compose.override.yml"
    if override.is_file() and "incident-collector" in override.read_text():
        override.unlink()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_compose_scenario_end_to_end(name: str, compose_lab: Any, tmp_path: Path) -> None:
    from collector_lab import faults

    lab, expect = compose_lab, EXPECTED[name]
    hostvars = _compose_vars(lab)
    sh, inventory = Shell(tmp_path), str(lab.inventory)
    started = time.monotonic()
    try:
        _play(sh, lab, name, expect, inventory, hostvars, tmp_path)
    finally:
        _undo_memory_limit(hostvars)
        sh("collector-lab", "heal", name, timeout=180)
        TIMINGS[name] = time.monotonic() - started
        print(f"\n{name}: {TIMINGS[name]:.1f} s; typed:\n  " + "\n  ".join(sh.typed))
    assert not faults.is_active(lab.settings, faults.get(name)), f"{name} still active after heal"


def _last_action(bundle: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((bundle / "actions.json").read_text())["actions"][-1]
    return record


def _play(
    sh: Shell, lab: Any, name: str, expect: Expect, inventory: str, hostvars: dict[str, Any], cwd: Path
) -> None:
    since = demo.journal_since()
    ok(sh("collector-lab", "break", name, timeout=180))
    if expect.orders_traffic_s:
        statuses = demo.drive_traffic(
            str(hostvars["collector_app_url"]), expect.orders_traffic_s, orders_only=True
        )
        assert statuses.get(500, 0) >= 5, f"the bad release answered {statuses}"

    # collect → bundle with findings.json (triage ran at the end of collect); exit 1 = partial: with the app
    # down its /health and /metrics probes fail, which is evidence, not a failed collection
    collected = sh("collect", "--hosts", HOST, "-i", inventory, "--since", since)
    assert collected.returncode in (0, 1) and "bundle: " in collected.stdout, collected.stderr[-2000:]
    out = collected.stdout
    bundle = Path(demo.bundle_path(out, cwd))
    findings = json.loads((bundle / "findings.json").read_text())
    summary = "; ".join(f"{f['severity']} {f['id']}" for f in findings["findings"])
    named = [f for f in findings["findings"] if expect.finding in (f.get("id"), f.get("rule"))]
    assert named, f"{expect.finding} not found; triage said: {summary}"
    finding = named[0]
    assert finding["severity"] == expect.severity, summary
    assert severity_rank(findings["severity"]) <= severity_rank(expect.least), summary  # as severe or more
    assert finding["hosts"] == [HOST]
    assert finding["evidence"] and all(e["path"] and e["excerpt"] for e in finding["evidence"])
    mitigation = finding["mitigation"]
    assert mitigation and mitigation["action"] == expect.action, finding
    assert {k: str(v) for k, v in mitigation["params"].items() if k in expect.params} == expect.params, (
        mitigation
    )
    assert mitigation["command"].startswith(f"collector remediate {expect.action} --hosts {HOST}")

    # alice types the suggested command: the plan binds the compose playbook the inventory chose
    plan = cwd / "plans" / f"{name}.json"
    argv = demo.plan_argv(mitigation, inventory, str(plan), str(bundle), requester=REQUESTER)
    planned = ok(sh("collector", *argv[1:]))
    assert "deploy    compose" in planned, planned[-2000:]
    doc = json.loads(plan.read_text())
    assert doc["action"] == expect.action and doc["binding"]["deploy"] == "compose"
    assert f"remediate/{expect.playbook}.yml" in doc["binding"]["playbook_files"]
    assert all(k in doc["params"] and str(doc["params"][k]) == v for k, v in expect.params.items()), doc[
        "params"
    ]
    assert doc["check"][HOST]["changed"] is True, f"the check run found nothing to change: {doc['check']}"
    assert faults_active(lab, name), "the check run (plan) changed the host"

    # bob approves; alice applies (verify, after-bundle, actions.json, report)
    applied = approve_and_apply(sh, lab, plan, verify_wait=75, timeout=400)
    assert "APPLIED and VERIFIED" in applied, applied[-2000:]
    record = _last_action(bundle)
    assert (record["action"], record["requester"], record["approver"]) == (expect.action, REQUESTER, APPROVER)
    assert record["verify"]["passed"] is True and record["hosts"][HOST]["changed"] is True
    checks = {c["name"]: c for c in record["verify"]["checks"] if c["host"] == HOST}
    assert checks["compose service running"]["passed"] and checks["/health healthy"]["passed"], checks
    assert not faults_active(lab, name), f"{name} is still active after the mitigation"

    # the same plan approved again and applied: nothing left to change
    again = approve_and_apply(sh, lab, plan, verify_wait=30, timeout=300, after_bundle=False)
    assert "APPLIED and VERIFIED" in again, again[-2000:]
    second = _last_action(bundle)
    assert second["plan_id"] == record["plan_id"] and second["hosts"][HOST]["changed"] is False, second[
        "hosts"
    ]

    verified = ok(sh("collector", "verify", "--hosts", HOST, "-i", inventory, "--wait", "30"))
    assert "RECOVERED: every check passed" in verified
    assert "chain intact" in ok(sh("collector", "audit", "verify", "--expect", second["audit_head"]))

    scenario_kit.assert_report_tells_it(bundle, finding, expect)


def faults_active(lab: Any, name: str) -> bool:
    from collector_lab import faults

    return bool(faults.is_active(lab.settings, faults.get(name)))
