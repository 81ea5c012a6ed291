"""The runbook's clocks as pure functions: explicit times in, what is due out."""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from typing import Any

import pytest

from collector.core import Incident
from collector.incidents import lifecycle as lc
from collector.incidents.lifecycle import Contact, People, Signals
from collector.incidents.store import Event

T0 = _dt.datetime(2026, 11, 28, 3, 0, tzinfo=_dt.UTC)
ONCALL = Contact("Dana On-call", "on-call", "dana@example.invalid")
PEOPLE = People(
    oncall=ONCALL,
    contacts=(
        Contact(
            "Engineering Manager",
            "manager",
            "manager@example.invalid",
            ("unresolved", "cross-system", "expertise"),
        ),
        Contact("CTO", "cto", "cto@example.invalid", ("data-loss", "security")),
        Contact("Security Team", "security", "security@example.invalid", ("security",)),
        Contact("Database Expert", "dba", "dba@example.invalid", ("data-loss",)),
        Contact("Vendor Support", "vendors", "", ("expertise",)),
    ),
)


def at(minutes: float) -> _dt.datetime:
    return T0 + _dt.timedelta(minutes=minutes)


def z(minutes: float) -> str:
    return lc.iso_z(at(minutes))


def incident(severity: str | None = "P0", **kw: Any) -> Incident:
    base = Incident(
        id="inc-1",
        group_key="g",
        title="PoolExhausted",
        state="open",
        severity=severity,  # type: ignore[arg-type]
        commander=None,
        opened_at=z(0),
    )
    return replace(base, **kw)


def ev(kind: str, minutes: float, **detail: Any) -> Event:
    return Event(
        seq=int(minutes * 100), incident="inc-1", kind=kind, at=z(minutes), actor="t", detail=detail or None
    )


def kinds(items: list[lc.Due]) -> list[str]:
    return [d.key for d in items]


@pytest.mark.parametrize(
    ("severity", "minutes"), [("P0", 2), ("P1", 15), ("P2", 60), ("P3", 240), (None, 15)]
)
def test_ack_deadline_is_the_runbooks_response_time(severity: str | None, minutes: int) -> None:
    assert lc.ack_deadline(incident(severity)) == at(minutes)


def test_p0_p1_are_commanded_by_the_oncall_p2_p3_by_the_first_responder() -> None:
    assert lc.commander_for(incident("P0"), PEOPLE, responder="sam") == "Dana On-call"
    assert lc.commander_for(incident("P1"), PEOPLE) == "Dana On-call"
    assert lc.commander_for(incident("P2"), PEOPLE, responder="sam") == "sam"
    assert lc.commander_for(incident("P3"), PEOPLE) is None
    assert lc.commander_for(incident("P2", commander="kim"), PEOPLE, responder="sam") == "kim"
    # the open P0 gets its commander assigned at once, a P2 waits for its responder
    assert "assign" in kinds(lc.due(incident("P0"), [], at(0), PEOPLE))
    assert "assign" not in kinds(lc.due(incident("P2"), [], at(0), PEOPLE))


def test_p0_initial_update_within_5_minutes_then_every_15() -> None:
    inc = incident("P0", commander="Dana On-call")
    assert lc.update_deadline(inc, []) == at(5)
    # no evidence yet: the initial update waits, but not past its deadline
    assert "notify:initial" not in kinds(lc.due(inc, [], at(4), PEOPLE))
    assert "notify:initial" in kinds(lc.due(inc, [], at(5), PEOPLE))
    # with a bundle it goes at once, once the receiver's collection (report, ticket, plan) is done
    assert "notify:initial" in kinds(lc.due(replace(inc, bundles=("/b",)), [], at(1), PEOPLE))
    assert "notify:initial" not in kinds(
        lc.due(replace(inc, bundles=("/b",)), [], at(1), PEOPLE, collecting=True)
    )
    assert "notify:initial" in kinds(
        lc.due(replace(inc, bundles=("/b",)), [], at(5), PEOPLE, collecting=True)
    )
    sent = [ev("update-sent", 3, stage="initial", key="notify:initial")]
    assert lc.update_deadline(inc, sent) == at(18)
    assert [d for d in lc.due(inc, sent, at(17.9), PEOPLE) if d.kind == "remind" and "update" in d.key] == []


@pytest.mark.parametrize(("severity", "first", "every"), [("P1", 15, 30), ("P2", 60, 120), ("P3", 240, 480)])
def test_other_severities_cadence(severity: str, first: int, every: int) -> None:
    inc = incident(severity)
    assert lc.update_deadline(inc, []) == at(first)
    assert lc.update_deadline(inc, [ev("update-sent", 10, stage="initial")]) == at(10 + every)


def test_missed_update_sends_one_reminder_per_missed_period_to_the_commander() -> None:
    inc = incident("P0", commander="Dana On-call", acked_at=z(1), state="acknowledged")
    events = [ev("update-sent", 3, stage="initial", key="notify:initial")]
    reminders = [d for d in lc.due(inc, events, at(19), PEOPLE) if d.kind == "remind"]
    assert len(reminders) == 1
    assert reminders[0].recipients == (ONCALL,)
    assert "2026-11-28T03:18:00.000Z" in reminders[0].text
    done = [*events, ev("reminder", 19, key=reminders[0].key)]
    assert [d for d in lc.due(inc, done, at(25), PEOPLE) if d.kind == "remind"] == []
    again = [d for d in lc.due(inc, done, at(34), PEOPLE) if d.kind == "remind"]
    assert len(again) == 1 and again[0].key != reminders[0].key
    # a status update resets the clock: nothing overdue
    updated = [*done, ev("update-sent", 30, stage="update", key="update:30")]
    assert [d for d in lc.due(inc, updated, at(34), PEOPLE) if d.kind == "remind"] == []


def test_missed_acknowledgement_reminds_the_oncall() -> None:
    inc = incident("P1")
    assert [d for d in lc.due(inc, [], at(14), PEOPLE) if d.kind == "remind"] == []
    (reminder,) = [d for d in lc.due(inc, [], at(15), PEOPLE) if d.kind == "remind"]
    assert reminder.key == "remind:ack:0" and reminder.recipients == (ONCALL,)
    assert "15 min" in reminder.text
    acked = incident("P1", acked_at=z(10), state="acknowledged")
    assert [d for d in lc.due(acked, [], at(20), PEOPLE) if d.key.startswith("remind:ack")] == []


def test_unresolved_after_one_hour_escalates_once_to_its_contacts() -> None:
    inc = incident("P1", commander="Dana On-call", acked_at=z(2), state="acknowledged")
    assert [d for d in lc.due(inc, [], at(59), PEOPLE) if d.kind == "escalate"] == []
    (esc,) = [d for d in lc.due(inc, [], at(60), PEOPLE) if d.kind == "escalate"]
    assert esc.reason == "unresolved"
    assert [c.name for c in esc.recipients] == ["Engineering Manager"]
    done = [ev("escalated", 60, reason="unresolved", key=esc.key)]
    assert [d for d in lc.due(inc, done, at(200), PEOPLE) if d.kind == "escalate"] == []
    resolved = replace(inc, state="resolved", resolved_at=z(50))
    assert [d for d in lc.due(resolved, [], at(120), PEOPLE) if d.kind == "escalate"] == []


def test_data_loss_and_security_escalate_at_once() -> None:
    inc = incident("P2")
    signals = Signals(data_loss=True, security=True, why={"data-loss": "triage: writes failing"})
    esc = {d.reason: d for d in lc.due(inc, [], at(1), PEOPLE, signals) if d.kind == "escalate"}
    assert set(esc) == {"data-loss", "security"}
    assert {c.name for c in esc["data-loss"].recipients} == {"CTO", "Database Expert"}
    assert {c.name for c in esc["security"].recipients} == {"CTO", "Security Team"}
    assert "writes failing" in esc["data-loss"].text
    # a person's flag escalates too (cross-system impact, need for expertise)
    flagged = [
        ev("flag", 2, flag="cross-system", why="orders and billing down"),
        ev("flag", 2, flag="expertise"),
    ]
    esc2 = {d.reason: d for d in lc.due(inc, flagged, at(3), PEOPLE) if d.kind == "escalate"}
    assert set(esc2) == {"cross-system", "expertise"}
    assert {c.name for c in esc2["expertise"].recipients} == {"Engineering Manager", "Vendor Support"}
    assert "orders and billing down" in esc2["cross-system"].text


def test_mitigation_and_resolved_updates_and_silences_expire_after_resolution() -> None:
    inc = incident("P0", commander="Dana On-call", state="mitigating", acked_at=z(1))
    sent = [ev("update-sent", 2, stage="initial")]
    assert "notify:mitigation" in kinds(lc.due(inc, sent, at(10), PEOPLE))
    res = replace(inc, state="resolved", resolved_at=z(30))
    events = [*sent, ev("silenced", 1, ids=["s1", "s2"]), ev("unsilenced", 30, ids=["s1"])]
    items = lc.due(res, events, at(31), PEOPLE)
    assert "notify:resolved" in kinds(items)
    (unsilence,) = [d for d in items if d.kind == "unsilence"]
    assert unsilence.ids == ("s2",)
    assert not [d for d in items if d.kind in ("remind", "escalate")]


def test_next_deadline_is_the_soonest_clock() -> None:
    inc = incident("P0")
    first = lc.next_deadline(inc, [], at(0))
    assert first is not None and first.what == "acknowledge" and first.at == at(2)
    acked = replace(inc, acked_at=z(1), state="acknowledged")
    nxt = lc.next_deadline(acked, [], at(1))
    assert nxt is not None and nxt.what == "initial update" and nxt.at == at(5)
    assert lc.next_deadline(replace(inc, state="closed"), [], at(1)) is None


def test_people_config_ships_the_runbooks_five_contacts() -> None:
    from pathlib import Path

    config = lc.read_config(Path(__file__).resolve().parents[2] / "incidents.example.yml")
    people = lc.people_from(config)
    assert people.oncall is not None
    assert [c.name for c in people.contacts] == [
        "Engineering Manager",
        "CTO",
        "Security Team",
        "Database Expert",
        "Vendor Support",
    ]
    assert {c.name for c in people.for_reason("security")} >= {"Security Team"}


def test_bad_contact_reason_is_a_usage_error() -> None:
    from collector.core import UsageError

    with pytest.raises(UsageError, match="unknown escalation reason 'sometimes'"):
        lc.people_from({"contacts": [{"name": "x", "escalate_on": ["sometimes"]}]})


def test_an_escalation_nobody_is_configured_for_goes_to_the_oncall() -> None:
    people = People(oncall=ONCALL, contacts=(Contact("CTO", "cto", "cto@example.invalid", ("security",)),))
    (esc,) = [
        d for d in lc.due(incident("P1"), [], at(1), people, Signals(data_loss=True)) if d.kind == "escalate"
    ]
    assert esc.recipients == (ONCALL,)
    assert "no contact is configured for this reason: sent to the on-call" in esc.text


def test_two_processes_ticking_at_once_send_each_message_once(tmp_path: Any) -> None:
    """Two `serve` processes share one store: every item is claimed in the store first, so it goes out
    once."""
    import threading

    from collector.incidents.store import IncidentStore

    db = str(tmp_path / "incidents.db")
    first, second = IncidentStore(db), IncidentStore(db)
    now = _dt.datetime.now(_dt.UTC)
    for n in range(4):
        first.open_or_join(
            f"g{n}",
            [{"labels": {"alertname": f"A{n}"}}],
            now - _dt.timedelta(minutes=70),
            severity="P0",
            title=f"A{n}",
        )
    sent: list[tuple[str, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def send(inc: Incident, item: lc.Due) -> dict[str, str]:
        with lock:
            sent.append((inc.id, item.key))
        return {"test": "ok"}

    def run(store: IncidentStore) -> None:
        barrier.wait()
        lc.tick(store, None, now, people=PEOPLE, send=send)

    threads = [threading.Thread(target=run, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # each P0 opened 70 minutes ago: the initial update, an acknowledgement reminder, the 1-hour escalation
    assert len(sent) == len(set(sent)) == 4 * 3, sent
    assert {k for _, k in sent} == {"notify:initial", "escalate:unresolved", f"remind:ack:{(70 - 2) // 2}"}
    for incident in first.list():
        assert incident.commander == "Dana On-call"
        assert [e.kind for e in first.events(incident.id)].count("assigned") == 1
    assert lc.tick(second, None, now, people=PEOPLE, send=send) == []  # nothing left to do


def test_one_failing_send_does_not_stop_the_other_incidents(tmp_path: Any) -> None:
    from collector.incidents.store import IncidentStore

    store = IncidentStore(str(tmp_path / "incidents.db"))
    now = _dt.datetime.now(_dt.UTC)
    bad, _ = store.open_or_join(
        "bad", [{"labels": {"alertname": "Bad"}}], now - _dt.timedelta(minutes=6), severity="P0", title="Bad"
    )
    good, _ = store.open_or_join(
        "good",
        [{"labels": {"alertname": "Good"}}],
        now - _dt.timedelta(minutes=6),
        severity="P0",
        title="Good",
    )

    def send(inc: Incident, item: lc.Due) -> dict[str, str]:
        if inc.id == bad.id:
            raise RuntimeError("template exploded")
        return {"email": "ok"}

    done = lc.tick(store, None, now, people=PEOPLE, send=send)
    assert (good.id, "notify:initial") in [(i, d.key) for i, d in done]
    assert bad.id not in [i for i, d in done if d.kind == "notify"]
    # the failed item is not marked done: the next tick tries it again
    again = lc.tick(store, None, now, people=PEOPLE, send=lambda inc, item: {"email": "ok"})
    assert (bad.id, "notify:initial") in [(i, d.key) for i, d in again]


def test_silence_not_expired_at_resolve_is_retried_by_the_tick_until_it_is(
    tmp_path: Any, json_server: Any
) -> None:
    """Alertmanager down as the incident resolves: its silence stays active on the timeline and each tick
    tries again (not once), until one ends it; one `unsilenced` event, with the id."""
    from collector.incidents.store import IncidentStore

    answers = [503, 503, 200]
    deletes: list[str] = []

    def route(path: str, query: Any) -> tuple[int, Any]:
        deletes.append(path)
        return answers.pop(0), {}

    url = json_server(route)
    store = IncidentStore(str(tmp_path / "incidents.db"))
    now = _dt.datetime.now(_dt.UTC)
    inc, _ = store.open_or_join("g1", [{"labels": {"alertname": "X"}}], now, severity="P3", title="X")
    store.add_event(inc.id, "silenced", now, "dana", {"ids": ["s1"]})
    store.add_event(inc.id, "verified", now, "dana", {"passed": True})
    _, expired = lc.resolve(store, inc.id, "dana", verified=True, alertmanager_url=url, now=now)
    assert expired["s1"] != "expired" and lc.active_silences(store.events(inc.id)) == ["s1"]
    lc.tick(store, None, now, people=PEOPLE, send=lambda inc, item: {}, alertmanager_url=url)
    assert lc.active_silences(store.events(inc.id)) == ["s1"]
    lc.tick(store, None, now, people=PEOPLE, send=lambda inc, item: {}, alertmanager_url=url)
    assert deletes == ["/api/v2/silence/s1"] * 3
    assert lc.active_silences(store.events(inc.id)) == []
    (ended,) = [e for e in store.events(inc.id) if e.kind == "unsilenced"]
    assert (ended.detail or {})["ids"] == ["s1"] and ended.actor == "collector"
    lc.tick(store, None, now, people=PEOPLE, send=lambda inc, item: {}, alertmanager_url=url)
    assert len(deletes) == 3  # nothing left to end
    store.close()
