"""The plan's approval and apply (a person's, outside serve) reach the incident's timeline at the audit log's
times."""

from __future__ import annotations

from typing import Any

from collector.incidents.worker import plan_events

RECORDS = [
    {"seq": 1, "time": "2026-12-01T19:00:00.000Z", "event": "plan", "actor": "alice", "plan_hash": "h1"},
    {"seq": 2, "time": "2026-12-01T19:00:01.000Z", "event": "approve", "actor": "bob", "plan_hash": "other"},
    {
        "seq": 3,
        "time": "2026-12-01T19:01:00.000Z",
        "event": "approve",
        "actor": "bob",
        "plan_hash": "h1",
        "plan_id": "p1",
    },
    {
        "seq": 4,
        "time": "2026-12-01T19:02:00.000Z",
        "event": "apply-start",
        "actor": "alice",
        "plan_hash": "h1",
    },
    {
        "seq": 5,
        "time": "2026-12-01T19:02:30.000Z",
        "event": "apply-finish",
        "actor": "alice",
        "plan_hash": "h1",
        "plan_id": "p1",
        "action": "kill-idle-connections",
        "verified": True,
        "hosts": {"db1": {"status": "changed"}},
    },
    {"seq": 6, "time": "2026-12-01T19:05:00.000Z", "event": "approve", "actor": "carol", "plan_hash": "h1"},
]


def test_first_approval_and_finished_apply_of_this_plan_only() -> None:
    got = plan_events(RECORDS, "h1", set())
    assert [(k, at, actor) for k, at, actor, _ in got] == [
        ("plan-approved", "2026-12-01T19:01:00.000Z", "bob"),
        ("applied", "2026-12-01T19:02:30.000Z", "alice"),
    ]
    assert got[1][3] == {
        "plan": "p1",
        "action": "kill-idle-connections",
        "verified": True,
        "audit_seq": 5,
        "hosts": {"db1": "changed"},
    }


def test_kinds_already_on_the_timeline_are_not_added_again() -> None:
    assert [k for k, *_ in plan_events(RECORDS, "h1", {"plan-approved"})] == ["applied"]
    assert plan_events(RECORDS, "h1", {"plan-approved", "applied"}) == []
    assert plan_events(RECORDS, "nope", set()) == []


def test_silenced_incident_whose_alerts_are_gone_runs_the_resolved_path_once(
    tmp_path: Any, json_server: Any
) -> None:
    """Alertmanager sends no resolved notification for silenced alerts: serve asks it, and queues verify
    once."""
    import datetime as dt

    from collector.config import Settings
    from collector.incidents.store import IncidentStore
    from collector.incidents.worker import VERIFY, Service

    live: list[dict[str, Any]] = [{"fingerprint": "fp1", "labels": {"alertname": "X"}}]
    url = json_server(lambda path, query: (200, live if path == "/api/v2/alerts" else {}))
    store = IncidentStore(str(tmp_path / "incidents.db"))
    now = dt.datetime.now(dt.UTC)
    inc, _ = store.open_or_join("g1", [{"labels": {"alertname": "X"}}], now, severity="P1")
    store.record_alert(inc.id, "fp1", "firing", {"alertname": "X"}, now.isoformat())
    store.add_event(inc.id, "silenced", now, "dana", {"ids": ["s1"]})
    service = Service(store, Settings(alertmanager_url=url), hooks=[])
    service.poll_silenced()  # still firing (silenced): nothing
    assert not store.work(inc.id, kinds=[VERIFY])
    live.clear()
    service.poll_silenced()
    service.poll_silenced()  # once per silence
    assert [w.state for w in store.work(inc.id, kinds=[VERIFY])] == ["queued"]
    resolved = [e for e in store.events(inc.id) if e.kind == "alert-resolved"]
    assert len(resolved) == 1 and "silenced" in str((resolved[0].detail or {})["seen"])
    store.close()
