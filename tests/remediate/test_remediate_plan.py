"""Plans: the content hash, saving and loading, diffs, requester, targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.core import (
    ActionRecord,
    AffectedAnswer,
    Answer,
    Finding,
    Findings,
    MitigationSuggestion,
    Questions,
    SecurityFlag,
    UsageError,
)
from collector.inventory import load_inventory
from collector.remediate.actions import get_action
from collector.remediate.plan import (
    Plan,
    _pinned_value,
    binding_changes,
    describe,
    load_plan,
    plan_extravars,
    render_diff,
    save_plan,
    targets_for,
)


def test_hash_is_stable_and_covers_the_content(plan: Plan) -> None:
    assert plan.hash == plan.compute_hash() and len(plan.hash) == 64
    plan.params["size"] = 21
    assert plan.compute_hash() != plan.hash
    plan.params["size"] = 20
    plan.targets.append("app3")
    assert plan.compute_hash() != plan.hash


def test_signatures_are_outside_the_hash_and_the_binding_inside(plan: Plan) -> None:
    before = plan.compute_hash()
    plan.statements = [{"statement": {}, "signature": "x"}]
    plan.requester = "bob"
    assert plan.compute_hash() == before
    assert set(plan.binding) == {
        "tool_version",
        "ansible_version",
        "inventory_files",
        "host_vars",
        "ssh_files",
        "playbooks_dir",
        "deploy",
        "playbook_files",
    }
    assert plan.binding["deploy"] == "systemd"  # the targets' collector_deploy picks the playbook
    assert "remediate/pool-resize.yml" in plan.binding["playbook_files"]
    assert "remediate/tasks/wait_healthy.yml" in plan.binding["playbook_files"]
    assert "remediate/library/collector_change.py" in plan.binding["playbook_files"]
    assert "127.0.0.1" not in json.dumps(plan.binding["host_vars"])  # digests, never the values
    plan.binding = dict(plan.binding, tool_version="0.0.1")
    assert plan.compute_hash() != before


def test_save_and_load_round_trip(plan: Plan, tmp_path: Path) -> None:
    path = save_plan(plan, tmp_path / "plans" / "p.json")
    loaded = load_plan(path)
    assert loaded == plan and loaded.compute_hash() == plan.hash
    assert json.loads(path.read_text())["schema"] == "incident-collector/plan/v2"
    assert not list(path.parent.glob(".*tmp"))


def test_load_refuses_what_is_not_a_plan(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"schema": "other"}')
    with pytest.raises(UsageError, match="is not a plan"):
        load_plan(tmp_path / "x.json")
    with pytest.raises(UsageError, match="does not exist"):
        load_plan(tmp_path / "missing.json")


def test_extravars_carry_the_plans_time_for_restart(plan: Plan) -> None:
    plan.action, plan.params = "restart", {}
    extra = plan_extravars(plan)
    assert extra["restart_hosts"] == "app1,app2"
    assert extra["restart_since"] == 1795845600  # 2026-11-28T06:00:00Z


def test_binding_changes_name_the_part() -> None:
    before = {
        "tool_version": "1",
        "inventory_files": {"/i.yml": "a"},
        "host_vars": {"app1": "x", "app2": "y"},
    }
    now = {"tool_version": "2", "inventory_files": {"/i.yml": "b"}, "host_vars": {"app1": "x"}}
    assert binding_changes(before, now) == [
        "the tool's version changed (1 -> 2)",
        "inventory file /i.yml changed",
        "connection/collector_* variables of app2 is gone",
    ]


def test_targets_are_the_pattern_within_the_actions_group(inventory_file: Path) -> None:
    inv = load_inventory(str(inventory_file))
    assert targets_for(get_action("pool-resize"), inv, "all") == ["app1", "app2"]
    assert targets_for(get_action("restart"), inv, "app1:db1:web01") == ["app1", "db1"]
    with pytest.raises(UsageError, match="matches none of them"):
        targets_for(get_action("kill-idle-connections"), inv, "app")
    with pytest.raises(UsageError, match="matches no host"):
        targets_for(get_action("restart"), inv, "nosuch*")


def test_render_diff_shows_only_what_changed() -> None:
    text = render_diff(
        {
            "before": "DATABASE_POOL_SIZE=5\n",
            "after": "DATABASE_POOL_SIZE=20\n",
            "before_header": ".env: DATABASE_POOL_SIZE",
            "after_header": ".env: DATABASE_POOL_SIZE",
        }
    )
    assert "-DATABASE_POOL_SIZE=5\n" in text and "+DATABASE_POOL_SIZE=20\n" in text
    assert render_diff({"before": "same", "after": "same"}) == ""
    assert render_diff([{"prepared": "x"}]) == "x\n"


def test_rollback_pin_reads_the_resolved_tag() -> None:
    results = [
        {"task": "Show the release change.", "msg": "/opt/sergas/app release: v1.1.0 (abc) -> v1.0.0 (def)"}
    ]
    assert _pinned_value(get_action("rollback"), results) == "v1.0.0"
    results = [{"task": "Show the release change.", "msg": "/opt/sergas/app release: already v1.0.0 (def)"}]
    assert _pinned_value(get_action("rollback"), results) == "v1.0.0"


def test_describe_names_targets_diff_and_approval_state(plan: Plan) -> None:
    text = "\n".join(describe(plan))
    assert "pool-resize" in text and "app1: would change" in text and "+DATABASE_POOL_SIZE=20" in text
    assert "approved  not yet" in text and plan.hash in text and "bound to  1 inventory file(s)" in text


def test_action_record_round_trip() -> None:
    from collector.core import ActionRecord

    record = ActionRecord(
        action="restart",
        params={},
        plan_id="p",
        plan_hash="h",
        requester="alice",
        requested="t0",
        approver="bob",
        approved="t1",
        break_glass=None,
        applier="alice",
        applied_started="t2",
        applied_finished="t3",
        hosts={"app1": {"status": "changed"}},
        stopped=None,
        verify={"passed": True},
        audit_head="7:abc",
        signatures={"approve": "d"},
    )
    assert ActionRecord.from_dict(record.to_dict()) == record
    assert record.to_dict()["schema"] == "incident-collector/action/v2"


def _findings(action: str, params: dict[str, str]) -> Findings:
    suggestion = MitigationSuggestion(action, "app1", params, f"collector remediate {action} --hosts app1")
    finding = Finding(
        "pg-connections-near-max",
        "pg-connections-near-max",
        "Pool near max",
        "P1",
        "pool_exhausted",
        ("db1",),
        "98 of 100",
        mitigation=suggestion,
    )
    no = Answer("no", "-")
    questions = Questions(AffectedAnswer("1 of 2 hosts", "-", ("db1",), 2), no, Answer("degraded", "-"), no)
    return Findings(
        "inc-1",
        "2026-11-28T05:40:01.000Z",
        "P1",
        "P1: Pool near max",
        questions,
        SecurityFlag(False),
        (finding,),
    )


def _record(action: str) -> ActionRecord:
    return ActionRecord(
        action=action,
        params={},
        plan_id="p",
        plan_hash="h",
        requester="alice",
        requested="t0",
        approver="bob",
        approved="t1",
        break_glass=None,
        applier="alice",
        applied_started="t2",
        applied_finished="2026-11-28T05:50:00Z",
        hosts={},
        stopped=None,
        verify={},
    )


def test_approve_reads_the_bundles_findings_and_actions_as_their_typed_contracts(
    plan: Plan, tmp_path: Path
) -> None:
    """Another schema is said, not shown as "triage said None" with no suggestion (the loose reader did
    that)."""
    from collector.remediate.approve import since_bundle

    bundle = tmp_path / "inc-1"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"finished": "2026-11-28T05:40:00.000Z", "hosts": {}}))
    (bundle / "findings.json").write_text(json.dumps({"severity": "P1", "findings": []}))
    (bundle / "actions.json").write_text(json.dumps({"actions": [{"action": "restart"}]}))
    plan.bundle = str(bundle)
    text = "\n".join(since_bundle(plan))
    assert "findings.json unreadable" in text and "triage said" not in text
    assert "actions.json unreadable" in text and "already applied" not in text


def test_approve_shows_what_differs_from_the_incidents_bundle(plan: Plan, tmp_path: Path) -> None:
    from collector.remediate.approve import since_bundle

    bundle = tmp_path / "inc-1"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(
        json.dumps({"finished": "2026-11-28T05:40:00.000Z", "hosts": {"app1": {}}})
    )
    (bundle / "findings.json").write_text(json.dumps(_findings("pool-resize", {"size": "30"}).to_dict()))
    (bundle / "actions.json").write_text(json.dumps({"actions": [_record("restart").to_dict()]}))
    plan.bundle = str(bundle)
    text = "\n".join(since_bundle(plan))
    assert "collected 2026-11-28T05:40:00.000Z, 20 min before this plan" in text
    assert "targets not in the evidence (no data collected from them): app2" in text
    assert "this action was suggested by pg-connections-near-max" in text
    assert "size=20 (suggested 30)" in text and "already applied for this incident: restart at" in text
