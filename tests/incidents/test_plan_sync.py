"""The plan's approval and apply (a person's, outside serve) reach the incident's timeline at the audit log's times."""
from __future__ import annotations

from collector.incidents.worker import plan_events

RECORDS = [
    {"seq": 1, "time": "2026-12-01T19:00:00.000Z", "event": "plan", "actor": "alice", "plan_hash": "h1"},
    {"seq": 2, "time": "2026-12-01T19:00:01.000Z", "event": "approve", "actor": "bob", "plan_hash": "other"},
    {"seq": 3, "time": "2026-12-01T19:01:00.000Z", "event": "approve", "actor": "bob", "plan_hash": "h1",
     "plan_id": "p1"},
    {"seq": 4, "time": "2026-12-01T19:02:00.000Z", "event": "apply-start", "actor": "alice", "plan_hash": "h1"},
    {"seq": 5, "time": "2026-12-01T19:02:30.000Z", "event": "apply-finish", "actor": "alice", "plan_hash": "h1",
     "plan_id": "p1", "action": "kill-idle-connections", "verified": True, "hosts": {"db1": {"status": "changed"}}},
    {"seq": 6, "time": "2026-12-01T19:05:00.000Z", "event": "approve", "actor": "carol", "plan_hash": "h1"},
]


def test_first_approval_and_finished_apply_of_this_plan_only() -> None:
    got = plan_events(RECORDS, "h1", set())
    assert [(k, at, actor) for k, at, actor, _ in got] == [
        ("plan-approved", "2026-12-01T19:01:00.000Z", "bob"), ("applied", "2026-12-01T19:02:30.000Z", "alice")]
    assert got[1][3] == {"plan": "p1", "action": "kill-idle-connections", "verified": True, "audit_seq": 5,
                         "hosts": {"db1": "changed"}}


def test_kinds_already_on_the_timeline_are_not_added_again() -> None:
    assert [k for k, *_ in plan_events(RECORDS, "h1", {"plan-approved"})] == ["applied"]
    assert plan_events(RECORDS, "h1", {"plan-approved", "applied"}) == []
    assert plan_events(RECORDS, "nope", set()) == []
