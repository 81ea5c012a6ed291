"""`collector serve` as a real process on loopback: auth, bad bodies, an incident that collects, duplicate
deliveries, a storm, and kill -9 during a collection. Collections point at `local` (this machine) to stay
cheap."""

from __future__ import annotations

import datetime as _dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_fixtures import ROOT, ServeProcess, alert, notification, poll

from collector.incidents.store import IncidentStore

LOCAL = str(ROOT / "inventory" / "local.yml")
pytestmark = pytest.mark.slow


def now_iso(offset_s: float = 0.0) -> str:
    moment = _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=offset_s)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess(tmp_path, inventory=LOCAL, fallback="local", max_collections=2).start()
    yield proc
    proc.stop()


@pytest.fixture()
def store(serve: ServeProcess) -> Iterator[IncidentStore]:
    s = IncidentStore(serve.db)
    yield s
    s.close()


def done_collections(store: IncidentStore, incident: str) -> list[str]:
    return [w.state for w in store.work(incident) if w.kind == "collect" and w.state in ("done", "failed")]


def test_401_400_and_nothing_stored(serve: ServeProcess, store: IncidentStore) -> None:
    doc = notification("g-auth", [alert("NoAuth", "fa", now_iso(), instance="nowhere:1")])
    for token in ("", "wrong-token"):
        status, body, _ = serve.post(doc, token=token)
        assert status == 401 and "unauthorized" in body
    assert store.list() == []
    assert serve.log().count("401 webhook from 127.0.0.1") == 2
    assert "NoAuth" not in serve.log()  # nothing of the body was read or logged
    status, body, _ = serve.post(None, raw=b"{not json")
    assert status == 400 and "malformed JSON" in body
    status, body, _ = serve.post({"version": "3", "alerts": []})
    assert status == 400 and "version 4" in body
    assert store.list() == []


def test_unmatched_alert_opens_incident_that_says_so_and_collects_fallback(
    serve: ServeProcess, store: IncidentStore
) -> None:
    starts = now_iso(-30)
    doc = notification(
        "g-nohost", [alert("DiskWeird", "fp-1", starts, severity="warning", instance="ghost:9100")]
    )
    status, body, seconds = serve.post(doc)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["opened"] and answer["new_alerts"] == 1 and answer["queued"] == ["collect"]
    assert seconds < 1.0  # answered before the collection ran
    inc_id = answer["incident"]
    poll(lambda: done_collections(store, inc_id), 120, "the fallback collection")
    inc = store.get(inc_id)
    assert inc is not None and inc.state == "open" and inc.severity in ("P3", "P2", "P1", "P0")
    assert inc.hosts == ("local",) and len(inc.bundles) == 1
    bundle = Path(inc.bundles[0])
    assert bundle.name == inc_id and (bundle / "manifest.json").is_file()
    assert Path(f"{bundle}.tar.gz").is_file() and Path(f"{bundle}.tar.gz.sha256").is_file()  # sealed
    events = store.events(inc_id)
    kinds = [e.kind for e in events]
    assert kinds[:3] == ["alert-fired", "declared", "no-host-matched"]
    assert events[0].at == starts  # the timeline starts at Alertmanager's startsAt
    said = next(e for e in events if e.kind == "no-host-matched").detail
    assert said is not None and said["pattern"] == "local" and "instance=ghost:9100" in said["reasons"][0]
    collected = next(e for e in events if e.kind == "collected").detail
    assert collected is not None and collected["hosts"] == ["local"] and collected["bundle"] == str(bundle)
    assert "triaged" in kinds


def test_duplicate_deliveries_are_deduplicated(serve: ServeProcess, store: IncidentStore) -> None:
    doc = notification("g-dup", [alert("Dup", "fp-d1", now_iso(-5)), alert("Dup", "fp-d2", now_iso(-4))])
    answers = [json.loads(serve.post(doc)[1]) for _ in range(3)]  # Alertmanager's retries send it again
    assert [a["new_alerts"] for a in answers] == [2, 0, 0]
    assert len({a["incident"] for a in answers}) == 1 and [a["opened"] for a in answers] == [
        True,
        False,
        False,
    ]
    inc_id = answers[0]["incident"]
    recorded = store.alerts(inc_id)
    assert sorted(a.fingerprint for a in recorded) == ["fp-d1", "fp-d2"] and all(
        a.deliveries == 3 for a in recorded
    )
    assert [e.kind for e in store.events(inc_id)].count("alert-fired") == 2
    assert len([w for w in store.work(inc_id) if w.kind == "collect"]) == 1  # one collection, not three
    assert len(store.list()) == 1


def test_storm_200_alerts_3_groups(serve: ServeProcess, store: IncidentStore) -> None:
    """200 alerts in 10 s over 3 groups: 3 incidents, every alert recorded, at most 2 collections at once."""
    times: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        group = f"g-storm-{i % 3}"
        doc = notification(
            group, [alert(f"Storm{i % 3}", f"storm-{i}", now_iso(-1), instance=f"ghost{i}:9100")]
        )
        status, _, seconds = serve.post(doc)
        with lock:
            times.append(seconds)
            statuses.append(status)

    threads = []
    started = time.monotonic()
    for i in range(200):  # 20 per second for 10 s, each POST on its own thread as Alertmanager's would be
        t = threading.Thread(target=send, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(max(0.0, started + (i + 1) * 0.05 - time.monotonic()))
    for t in threads:
        t.join(60)
    assert statuses.count(200) == 200, statuses
    incidents = store.list()
    assert len(incidents) == 3
    assert sorted(i.alerts for i in incidents) == [66, 67, 67]
    assert sum(len(store.alerts(i.id)) for i in incidents) == 200
    for inc in incidents:
        poll(lambda inc=inc: done_collections(store, inc.id), 180, f"the collection of {inc.group_key}")
    # at most 2 collections ran at once: from the store's own start/finish times
    spans = [
        (w.started_at, w.finished_at) for i in incidents for w in store.work(i.id) if w.kind == "collect"
    ]
    assert len(spans) == 3 and all(s and f for s, f in spans)
    edges = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak <= 2
    assert serve.get("/healthz")[1]["peak"] <= 2
    ordered = sorted(times)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    print(
        f"storm: 200 POSTs, p50 {ordered[100] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms, peak collections {peak}"
    )
    # Every POST is answered while the collections run (the work is queued, not done in the request); the
    # speed target itself (p99) is bench/bench_serve.py's, measured against a baseline in the same run.
    assert ordered[-1] < 10.0


def test_kill9_during_collection_then_restart_reruns_it(tmp_path: Path) -> None:
    first = ServeProcess(tmp_path, inventory=LOCAL, fallback="local", max_collections=1).start()
    store = IncidentStore(first.db)
    try:
        status, body, _ = first.post(notification("g-kill", [alert("Kill", "fp-k", now_iso(-2))]))
        assert status == 200
        inc_id = json.loads(body)["incident"]
        # killed while the bundle is being written (its hidden folder exists), as a real crash would land
        poll(lambda: list(first.out_dir.glob(f".{inc_id}.*.tmp")), 60, "the bundle to be in writing", 0.01)
        first.kill9()
        assert done_collections(store, inc_id) == []  # it died mid-collection
        second = ServeProcess(tmp_path, inventory=LOCAL, fallback="local", max_collections=1)
        second.db = first.db
        second.start()
        try:
            poll(lambda: done_collections(store, inc_id), 120, "the re-run collection")
            work = [w for w in store.work(inc_id) if w.kind == "collect"]
            assert [(w.state, w.attempt) for w in work] == [("interrupted", 1), ("done", 2)]
            inc = store.get(inc_id)
            assert inc is not None and inc.state == "open" and len(store.list()) == 1  # no incident lost
            assert len(inc.bundles) == 1 and Path(f"{inc.bundles[0]}.tar.gz").is_file()
            collected = next(e for e in store.events(inc_id) if e.kind == "collected").detail or {}
            left = collected["interrupted_attempt_left"]
            assert any(f"/.{inc_id}." in p for p in left), left  # the half-written evidence is named, kept
            assert Path(inc.bundles[0]).name == f"{inc_id}-2" or Path(inc.bundles[0]).name == inc_id
            interrupted = next(e for e in store.events(inc_id) if e.kind == "collect-interrupted")
            assert interrupted.detail is not None and interrupted.detail["state"] == "running"
            # the alert that arrived before the kill is still there, once
            assert [a.fingerprint for a in store.alerts(inc_id)] == ["fp-k"]
        finally:
            second.stop()
    finally:
        first.stop()
        store.close()


def _monitoring_stand_in(firing: list[dict[str, Any]]) -> Any:
    """Alertmanager answering `firing` (as it is at each request) and Prometheus answering healthy numbers
    (no data would be UNKNOWN, which never resolves an incident)."""

    def monitoring(path: str, query: Any) -> tuple[int, Any]:
        if path == "/api/v2/alerts":
            return 200, list(firing)
        return 200, {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "0.001"]}]},
        }

    return monitoring


def _retrying_serve(folder: Path, monitoring_url: str, attempts: int) -> ServeProcess:
    """serve on `local` whose failed verifies run again after 1 s, at most `attempts` times."""
    return ServeProcess(
        folder,
        inventory=LOCAL,
        fallback="local",
        max_collections=1,
        env={
            "COLLECTOR_PROMETHEUS_URL": monitoring_url,
            "COLLECTOR_ALERTMANAGER_URL": monitoring_url,
            "COLLECTOR_SERVE_VERIFY_WAIT_S": "0",
            "COLLECTOR_SERVE_VERIFY_RETRY_S": "1",
            "COLLECTOR_SERVE_VERIFY_ATTEMPTS": str(attempts),
        },
    ).start()


def _resolved(group: str, fingerprint: str, starts: str) -> dict[str, Any]:
    return notification(group, [alert("Re", fingerprint, starts, status="resolved")], status="resolved")


def test_a_failed_verify_runs_again_while_the_alerts_stay_resolved(tmp_path: Path, json_server: Any) -> None:
    """Alertmanager says resolved once: serve verifies again on its own until the checklist passes."""
    firing: list[dict[str, Any]] = [
        {"labels": {"alertname": "Lingering"}, "status": {"state": "active"}, "startsAt": now_iso(-60)}
    ]

    url = json_server(_monitoring_stand_in(firing))
    serve = _retrying_serve(tmp_path, url, attempts=3)
    store = IncidentStore(serve.db)
    try:
        starts = now_iso(-20)
        _, body, _ = serve.post(notification("g-retry", [alert("Re", "fp-re", starts)]))
        inc_id = json.loads(body)["incident"]
        poll(lambda: done_collections(store, inc_id), 120, "the collection")
        serve.post(_resolved("g-retry", "fp-re", starts))
        # the lingering alert keeps failing the checklist: 3 attempts in all, then it waits for a person
        poll(
            lambda: len([e for e in store.events(inc_id) if e.kind == "verify-failed"]) >= 3,
            120,
            "three failed verifies",
        )
        time.sleep(2.5)  # a 4th would be due after 1 s: none comes
        kinds = [e.kind for e in store.events(inc_id)]
        assert kinds.count("verify-failed") == 3 and kinds.count("verify-retry") == 2, kinds
        assert store.get(inc_id).state == "open"  # type: ignore[union-attr]
    finally:
        serve.stop()
        store.close()
    # the same with the lingering alert gone before the second attempt: resolved without a new notification
    (tmp_path / "again").mkdir()
    serve = _retrying_serve(tmp_path / "again", url, attempts=10)
    store = IncidentStore(serve.db)
    try:
        _, body, _ = serve.post(notification("g-retry2", [alert("Re", "fp-r2", starts)]))
        inc_id = json.loads(body)["incident"]
        poll(lambda: done_collections(store, inc_id), 120, "the collection")
        serve.post(_resolved("g-retry2", "fp-r2", starts))
        poll(lambda: any(e.kind == "verify-failed" for e in store.events(inc_id)), 120, "a failed verify")
        firing.clear()  # the lingering alert clears; Alertmanager sends nothing more
        poll(lambda: store.get(inc_id).state == "resolved", 60, "the retried verify")  # type: ignore[union-attr]
        kinds = [e.kind for e in store.events(inc_id)]
        assert kinds.index("verify-failed") < kinds.index("verify-retry") < kinds.index("verified")
    finally:
        serve.stop()
        store.close()


def test_resolved_runs_verify_and_resolves_only_when_it_passes(tmp_path: Path, json_server: Any) -> None:
    """Alertmanager's resolved notification runs step 5; a failing checklist leaves the incident open."""
    firing: list[dict[str, Any]] = [
        {
            "labels": {"alertname": "StandInAlert"},
            "status": {"state": "active"},
            "startsAt": now_iso(-60),
            "fingerprint": "x",
        }
    ]

    url = json_server(_monitoring_stand_in(firing))
    serve = ServeProcess(
        tmp_path,
        inventory=LOCAL,
        fallback="local",
        max_collections=1,
        env={"COLLECTOR_PROMETHEUS_URL": url, "COLLECTOR_ALERTMANAGER_URL": url},
    ).start()
    store = IncidentStore(serve.db)
    try:
        starts = now_iso(-20)
        status, body, _ = serve.post(notification("g-res", [alert("Res", "fp-r", starts)]))
        inc_id = json.loads(body)["incident"]
        poll(lambda: done_collections(store, inc_id), 120, "the collection")
        resolved = notification("g-res", [alert("Res", "fp-r", starts, status="resolved")], status="resolved")
        status, body, _ = serve.post(resolved)
        assert status == 200 and json.loads(body)["queued"] == ["verify"]
        failed = poll(
            lambda: next((e for e in store.events(inc_id) if e.kind == "verify-failed"), None),
            120,
            "the failing verify",
        )
        assert failed.detail is not None and failed.detail["passed"] is False
        assert any(
            c["name"] == "no active alerts" and "StandInAlert" in c["detail"] for c in failed.detail["failed"]
        )
        inc = store.get(inc_id)
        assert inc is not None and inc.state == "open" and inc.resolved_at is None
        assert [a.status for a in store.alerts(inc_id)] == ["resolved"]  # the alert row follows Alertmanager
        firing.clear()  # the alert is gone: Alertmanager's next resolved post verifies again, and passes
        poll(
            lambda: [w for w in store.work(inc_id) if w.kind == "verify" and w.state == "done"],
            60,
            "verify done",
        )
        status, body, _ = serve.post(resolved)
        assert status == 200 and json.loads(body)["queued"] == ["verify"]

        def is_resolved() -> Any:
            found = store.get(inc_id)
            return found if found is not None and found.state == "resolved" else None

        inc = poll(is_resolved, 120, "the incident to resolve")
        kinds = [e.kind for e in store.events(inc_id)]
        assert kinds.index("verify-failed") < kinds.index("verified") < kinds.index("resolved")
        assert inc.resolved_at is not None and store.find_active("g-res") is None
    finally:
        serve.stop()
        store.close()


def test_repeat_of_a_resolved_incidents_alert_does_not_reopen(
    serve: ServeProcess, store: IncidentStore
) -> None:
    starts = now_iso(-50)
    doc = notification("g-repeat", [alert("Again", "fp-a", starts)])
    first = json.loads(serve.post(doc)[1])
    poll(lambda: done_collections(store, first["incident"]), 120, "the collection")
    store.update(
        first["incident"], state="resolved", resolved_at=now_iso()
    )  # as a person would, verify passed
    repeat = json.loads(serve.post(doc)[1])  # Alertmanager's repeat_interval: same alert, same startsAt
    assert (
        repeat["incident"] == first["incident"] and not repeat["opened"] and "not reopened" in repeat["note"]
    )
    assert len(store.list()) == 1 and store.alerts(first["incident"])[0].deliveries == 2
    again = json.loads(serve.post(notification("g-repeat", [alert("Again", "fp-a", now_iso())]))[1])
    assert again["opened"] and again["incident"] != first["incident"]  # it fired again: a new incident


def test_incident_opened_by_a_process_that_died_before_queueing_is_collected_on_retry(
    serve: ServeProcess, store: IncidentStore
) -> None:
    doc = notification("g-orphan", [alert("Orphan", "fp-o", now_iso(-5))])
    # what a serve killed between its INSERT and its claim leaves: the incident, no work
    orphan, opened = store.open_or_join("g-orphan", doc["alerts"], now_iso(-4))
    assert opened and store.work(orphan.id) == []
    answer = json.loads(serve.post(doc)[1])  # Alertmanager's retry (it never got an answer)
    assert answer["incident"] == orphan.id and not answer["opened"] and answer["queued"] == ["collect"]
    poll(lambda: done_collections(store, orphan.id), 120, "the orphan's collection")
    assert json.loads(serve.post(doc)[1])["queued"] == []  # collected once
