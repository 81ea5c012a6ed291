"""The runbook's scenarios end to end, typed as an engineer would, against the lab.

Each test drives the INSTALLED commands as subprocesses (`collect`, `collector` beside this Python):
lab break → collect → severity and finding → the finding's suggested mitigation planned by alice →
approved by bob (each signing with their lab key) → remediate apply → verify → report.md (timeline) names it
all → lab heal (always). The whole scenario holds the lab lock; plans and bundles live in tmp_path (the cwd),
the audit log is the policy's.
Traffic helpers, mitigation clean-up and the --since stamp come from collector_lab.demo; every
expectation below is this file's own.
"""

from __future__ import annotations

import json
import shlex
import threading
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
from collector.times import wait_until
from collector.triage.engine import compare, load_rules

pytestmark = [pytest.mark.lab, pytest.mark.destructive, pytest.mark.slow]

TIMINGS: dict[str, float] = {}


@dataclass(frozen=True)
class Expect(scenario_kit.Expect):
    """What the runbook says this scenario looks like and how it is fixed."""

    allow_alerts: tuple[str, ...] = ()  # alerts the mitigation raises on purpose (told to verify)


EXPECTED: dict[str, Expect] = {
    "pool-exhausted": Expect(
        "pg-connections-near-max", "P1", "P1", "kill-idle-connections", {"minutes": "0"}
    ),
    "rate-limited": Expect(
        "rate-limited",
        "P2",
        "P2",
        "circuit-breaker",
        {"state": "open"},
        allow_alerts=("SergasZohoCircuitBreakerOpen",),
    ),
    # the killed export job is gone and the app kept serving: nothing live remains, so the kill is history
    # (recovered, P3) that still suggests the memory limit (the lab inventory's 1G, below its 1.5 GiB host)
    "oom": Expect("oom-kill", "P3", "P3", "memory-limit", {"max": "1G"}),
    "bad-deploy": Expect("deploy-before-errors", "P1", "P1", "rollback", {"tag": "v1.0.0"}),
    "lock-contention": Expect("lock-contention", "P2", "P2", "kill-idle-connections", {"minutes": "0"}),
    "disk-full": Expect("no-space-logged", "P1", "P1", "clean-disk", {"subdir": "exports"}),
    "redis-memory": Expect("redis-near-maxmemory", "P2", "P2", "redis-maxmemory", {"policy": "allkeys-lru"}),
    "error-storm": Expect("error-storm-client", "P2", "P1", "block-client", {"address": "127.0.0.2"}),
}


@pytest.fixture()
def healed_lab(lab: Any, lab_lock: None) -> Iterator[Any]:
    """The lab with no fault left over by anyone (the lock is held, so an active fault is a leftover)."""
    heal_leftovers(lab)
    yield lab


@pytest.fixture(scope="module", autouse=True)
def _print_timings() -> Iterator[None]:
    yield
    if TIMINGS:
        print("\nscenario timings (break → heal): " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMINGS.items()))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_scenario_end_to_end(name: str, healed_lab: Any, tmp_path: Path) -> None:
    from collector_lab import faults

    lab, expect, scenario = healed_lab, EXPECTED[name], demo.get_scenario(name)
    sh, inventory = Shell(tmp_path), str(lab.inventory)
    started = time.monotonic()
    try:
        _play(sh, lab, scenario, expect, inventory, tmp_path)
    finally:
        sh("collector-lab", "heal", scenario.fault, timeout=180)
        demo.undo_side_effects(scenario, lab.settings)
        TIMINGS[name] = time.monotonic() - started
        print(f"\n{name}: {TIMINGS[name]:.1f} s; typed:\n  " + "\n  ".join(sh.typed))
    assert not faults.is_active(lab.settings, faults.get(scenario.fault)), (
        f"{scenario.fault} still active after heal"
    )


def _developed(lab: Any, rule_id: str, since: str) -> bool:
    """The finding's own log lines have piled up in the app's journal (pattern and threshold from
    rules.yml)."""
    rule = next(r for r in load_rules() if r.id == rule_id)
    pattern = rule.args.get("pattern")
    if rule.args.get("probe") != "service_journal" or not pattern:
        return True  # not a log rule: nothing to wait for here
    app = lab.groups["app"][0]
    service = str(load_inventory(str(lab.inventory)).hosts[app]["collector_service"])
    count = (
        f"journalctl --no-pager --quiet -u {shlex.quote(service)} --since {shlex.quote(since)} -o cat"
        f" | grep -ciP {shlex.quote(str(pattern))}"
    )
    return int(str(lab.host(app).run(count).stdout).strip() or 0) >= float(rule.threshold)


def _live_sign_scraped(lab: Any, rule_id: str) -> bool:
    """A history finding is P3 ("recovered") unless a live rule of its scenario holds. The live rules that
    Prometheus measures lag the logs by up to a scrape (5 s), so a fault a few seconds old is in the journal
    and not yet in Prometheus: an on-call collects while the fault is live, and so does this test. True when
    one such live rule holds now (the product's own queries and comparison), or when there is none."""
    from collector import monitoring

    rules = load_rules()
    rule = next(r for r in rules if r.id == rule_id)
    partners = [
        r
        for r in rules
        if rule.basis == "history" and r.basis == "live" and r.scenario == rule.scenario
        if r.measure == "prometheus_value"
    ]
    wanted = {str(name) for r in partners for name in r.args.get("query") or ()}
    values = {
        q.name: json.loads(monitoring.run_query(q).output).get("value")
        for q in monitoring.queries(lab.settings, range_minutes=0)
        if q.name in wanted
    }
    for partner in partners:
        for name in partner.args.get("query") or ():
            value = values.get(str(name))
            if value is not None and compare(
                value * float(partner.args.get("scale", 1)), partner.op, partner.threshold
            ):
                return True
    return not values


def _blocked_queries(lab: Any) -> int:
    """Queries waiting on a lock in the lab's database (requests in flight against lock-contention)."""
    sql = "SELECT count(*) FROM pg_locks WHERE NOT granted"
    psql = "runuser -u postgres -- psql -X -At -d sergas -c"
    answer = lab.host(lab.groups["db"][0]).run(f"{psql} {shlex.quote(sql)}")
    return int(str(answer.stdout).strip() or 0)


def _play(sh: Shell, lab: Any, scenario: demo.Scenario, expect: Expect, inventory: str, cwd: Path) -> None:
    since = demo.journal_since()
    ok(sh("collector-lab", "break", scenario.fault, timeout=180))
    if scenario.settle_s:  # the fault runs until its symptom is there (bounded well above the demo's wait)
        assert wait_until(lambda: _developed(lab, expect.finding, since), 6 * scenario.settle_s + 30, 0.5), (
            f"{scenario.fault}: {expect.finding}'s log lines never piled up"
        )
    assert wait_until(lambda: _live_sign_scraped(lab, expect.finding), 60, 1.0), (
        f"{scenario.fault}: no live sign of {expect.finding}'s scenario reached Prometheus in 60 s"
    )
    background = None
    if scenario.traffic_s:
        base = demo.app_base_url(lab.settings)
        if scenario.traffic_during_collect:
            background = threading.Thread(
                target=demo.drive_traffic, args=(base, scenario.traffic_s), daemon=True
            )
            background.start()
            assert wait_until(lambda: _blocked_queries(lab) > 0 or not background.is_alive(), 20, 0.2)
        else:
            demo.drive_traffic(base, scenario.traffic_s)

    # collect → bundle with findings.json (triage ran at the end of collect)
    out = ok(sh("collect", "--hosts", "lab", "-i", inventory, "--since", since))
    if background is not None:
        background.join()
    bundle = Path(demo.bundle_path(out, cwd))
    findings = json.loads((bundle / "findings.json").read_text())
    named = [f for f in findings["findings"] if expect.finding in (f.get("id"), f.get("rule"))]
    summary = "; ".join(f"{f['severity']} {f['id']}" for f in findings["findings"])
    assert named, f"{expect.finding} not found; triage said: {summary}"
    finding = named[0]
    assert finding["severity"] == expect.severity, summary
    assert severity_rank(findings["severity"]) <= severity_rank(expect.least), summary  # as severe or more
    assert finding["evidence"] and all(e["path"] and e["excerpt"] for e in finding["evidence"])
    mitigation = finding["mitigation"]
    assert mitigation and mitigation["action"] == expect.action, finding
    assert {k: str(v) for k, v in mitigation["params"].items() if k in expect.params} == expect.params, (
        mitigation
    )
    assert mitigation["command"].startswith(
        f"collector remediate {expect.action} --hosts {mitigation['hosts']}"
    )

    # the suggested command as typed by alice, plus where the plan and the incident's bundle are
    plan = cwd / "plans" / f"{scenario.name}.json"
    argv = demo.plan_argv(mitigation, inventory, str(plan), str(bundle), requester=REQUESTER)
    ok(sh("collector", *argv[1:]))
    doc = json.loads(plan.read_text())
    assert doc["action"] == expect.action and doc["requester"] == REQUESTER
    assert [s["statement"]["role"] for s in doc["statements"]] == [
        "request"
    ]  # signed by alice's key, not approved
    assert any(c.get("changed") for c in doc["check"].values()), (
        f"the check run found nothing to change: {doc['check']}"
    )

    # a second person approves with their key; then apply (verify, after-bundle, actions.json, report)
    applied = approve_and_apply(sh, lab, plan, verify_wait=75, timeout=300)
    signed = [s for s in json.loads(plan.read_text())["statements"] if s["statement"]["role"] == "approve"]
    assert [s["principal"] for s in signed] == [APPROVER]
    assert "APPLIED and VERIFIED" in applied, applied[-2000:]

    allowed = [arg for alert in expect.allow_alerts for arg in ("--allow-alert", alert)]
    verified = ok(sh("collector", "verify", "--hosts", "lab", "-i", inventory, "--wait", "30", *allowed))
    assert "RECOVERED: every check passed" in verified

    actions = json.loads((bundle / "actions.json").read_text())["actions"][-1]
    assert (actions["action"], actions["requester"], actions["approver"]) == (
        expect.action,
        REQUESTER,
        APPROVER,
    )
    assert (
        actions["verify"]["passed"] is True
        and actions["break_glass"] is None
        and actions["applier"] == REQUESTER
    )
    assert "chain intact" in ok(sh("collector", "audit", "verify", "--expect", actions["audit_head"]))
    assert any(h["changed"] for h in actions["hosts"].values()), actions["hosts"]

    scenario_kit.assert_report_tells_it(bundle, finding, expect)
