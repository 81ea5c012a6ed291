"""Approval rules and apply's refusals that need no host: nothing runs, every refusal is audited."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from collector.config import Settings
from collector.inventory import load_inventory
from collector.remediate import Refused
from collector.remediate.actions import get_action
from collector.remediate.apply import apply_plan, batches, preflight, restart_blocked
from collector.remediate.approve import approval_problem, approve_plan
from collector.remediate.audit import AuditLog
from collector.remediate.plan import Plan, load_plan, save_plan


@pytest.fixture()
def plan_path(plan: Plan, tmp_path: Path) -> Path:
    return save_plan(plan, tmp_path / "plans" / f"{plan.id}.json")


def test_second_person_approval_is_bound_to_the_hash(plan_path: Path, settings: Settings) -> None:
    plan, approval = approve_plan(plan_path, "bob", settings)
    assert approval.plan_hash == plan.hash and approval.approver == "bob" and approval.break_glass is None
    saved = load_plan(plan_path)
    assert saved.approval and saved.approval["plan_hash"] == plan.hash
    assert approval_problem(saved, settings, AuditLog(settings.audit_log)) is None
    records = list(AuditLog(settings.audit_log).records())
    assert [r["event"] for r in records] == ["approve"] and records[0]["approver"] == "bob"


def test_self_approval_is_refused_and_audited(plan_path: Path, settings: Settings) -> None:
    with pytest.raises(Refused, match="alice requested this plan and cannot approve it"):
        approve_plan(plan_path, "alice", settings)
    assert load_plan(plan_path).approval is None
    assert [r["event"] for r in AuditLog(settings.audit_log).records()] == ["approve-refused"]


def test_break_glass_is_allowed_loudly_and_audited(plan_path: Path, settings: Settings) -> None:
    plan, approval = approve_plan(plan_path, "alice", settings, break_glass="sev1, nobody else awake")
    assert approval.break_glass == "sev1, nobody else awake"
    events = [r["event"] for r in AuditLog(settings.audit_log).records()]
    assert events == ["approve", "break-glass"]
    assert approval_problem(load_plan(plan_path), settings, AuditLog(settings.audit_log)) is None


def test_unapproved_modified_expired_and_forged_plans_are_refused(plan_path: Path, settings: Settings) -> None:
    audit = AuditLog(settings.audit_log)
    assert "is not approved" in str(approval_problem(load_plan(plan_path), settings, audit))
    approve_plan(plan_path, "bob", settings)
    # expired: a zero TTL at apply time
    expired = dataclasses.replace(settings, approval_ttl_s=0.0)
    assert "expired" in str(approval_problem(load_plan(plan_path), expired, audit))
    # modified: an edited parameter no longer matches the hash
    doc = json.loads(plan_path.read_text())
    doc["params"]["size"] = 500
    plan_path.write_text(json.dumps(doc))
    assert "modified" in str(approval_problem(load_plan(plan_path), settings, audit))
    # re-hashed by the editor: the approval names the old hash
    tampered = load_plan(plan_path)
    tampered.hash = tampered.compute_hash()
    assert "different plan content" in str(approval_problem(tampered, settings, audit))
    # forged approval for the new hash: not in the audit log
    tampered.approval = dict(tampered.approval or {}, plan_hash=tampered.hash)
    assert "recorded in the audit log" in str(approval_problem(tampered, settings, audit))
    # self-approval written into the file by hand
    tampered.approval = dict(tampered.approval, approver="alice")
    assert "its own requester" in str(approval_problem(tampered, settings, audit))


def test_apply_refuses_before_touching_any_host(plan_path: Path, settings: Settings) -> None:
    with pytest.raises(Refused, match="not approved.*nothing was changed"):
        apply_plan(plan_path, settings, collect_after=False)
    records = list(AuditLog(settings.audit_log).records())
    assert [r["event"] for r in records] == ["apply-refused"]


def test_blast_radius_and_empty_targets(plan: Plan, plan_path: Path, settings: Settings) -> None:
    approve_plan(plan_path, "bob", settings)
    approved = load_plan(plan_path)
    inv = load_inventory(approved.inventory)
    audit = AuditLog(settings.audit_log)
    small = dataclasses.replace(settings, blast_radius=1)
    with pytest.raises(Refused, match="more than the blast-radius limit of 1; raise it explicitly with --max-hosts 2"):
        preflight(approved, get_action("pool-resize"), small, audit, max_hosts=None, inv=inv)
    preflight(approved, get_action("pool-resize"), small, audit, max_hosts=2, inv=inv)  # raised explicitly
    empty = dataclasses.replace(approved, targets=[])
    empty.hash = empty.compute_hash()
    empty.approval = dict(approved.approval or {}, plan_hash=empty.hash)
    audit.append("approve", plan_hash=empty.hash, approver="bob", break_glass=None)
    with pytest.raises(Refused, match="no target host"):
        preflight(empty, get_action("pool-resize"), settings, audit, max_hosts=None, inv=inv)


def test_canary_first_then_batches() -> None:
    assert batches(["a", "b", "c", "d", "e"], 2) == [["a"], ["b", "c"], ["d", "e"]]
    assert batches(["a"], 3) == [["a"]]
    assert batches([], 3) == []


def test_restarts_are_rate_limited_per_host(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl")
    audit.append("apply-host", host="app1", restarted=True)
    audit.append("apply-host", host="app2", restarted=False)
    blocked = restart_blocked(get_action("restart"), ["app1", "app2"], audit, 60.0)
    assert list(blocked) == ["app1"] and 0 < blocked["app1"] <= 60
    assert restart_blocked(get_action("circuit-breaker"), ["app1"], audit, 60.0) == {}
    assert restart_blocked(get_action("restart"), ["app1"], audit, 0.0) == {}
