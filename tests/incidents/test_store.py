"""The incident store on SQLite and on the lab's real PostgreSQL (db1): opening is atomic across processes,
alerts are deduplicated, the timeline keeps its order, and work a dead process held is found again."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.core import Incident, UsageError
from collector.incidents.store import IncidentStore, engine_url

HBA_MARK = "# incident-collector test store"


def _psql(db: Any, sql: str, database: str = "postgres") -> str:
    out = db.run(f"runuser -u postgres -- psql -X -tAq -v ON_ERROR_STOP=1 -d {database} -c {_q(sql)}")
    assert out.rc == 0, out.stderr
    return str(out.stdout)


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


@pytest.fixture(scope="module")
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A dedicated database and role on db1, reachable from the controller's bridge address; dropped after."""
    lab = request.getfixturevalue("lab")
    from collector_lab.lock import lab_lock

    db = lab.host(lab.groups["db"][0])
    name = f"ictest_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    controller = "10.203.57.1"
    hba = db.run("runuser -u postgres -- psql -X -tAq -c 'SHOW hba_file'").stdout.strip()
    with lab_lock(timeout_s=3600):
        _psql(db, f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        _psql(db, f"CREATE DATABASE {name} OWNER {name}")
        line = f"host {name} {name} {controller}/32 scram-sha-256 {HBA_MARK}"
        assert db.run(f"printf '%s\\n' {_q(line)} >> {_q(hba)}").rc == 0
        _psql(db, "SELECT pg_reload_conf()")
    try:
        yield f"postgresql://{name}:{password}@{lab.ips[lab.groups['db'][0]]}:5432/{name}"
    finally:
        with lab_lock(timeout_s=3600):
            db.run(f"sed -i '/{HBA_MARK}/d' {_q(hba)}")
            _psql(db, "SELECT pg_reload_conf()")
            _psql(db, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            _psql(db, f"DROP ROLE IF EXISTS {name}")
        assert (
            name
            not in db.run("runuser -u postgres -- psql -X -tAq -c 'SELECT datname FROM pg_database'").stdout
        )
        assert HBA_MARK not in db.file(hba).content_string


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.lab)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "incidents.db")
        return
    url = request.getfixturevalue("pg_url")
    yield url
    # each test starts from empty tables
    store = IncidentStore(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TABLE IF EXISTS incident_work, incident_alerts, incident_events, incidents"
        )
    store.close()


@pytest.fixture()
def store(store_url: str) -> Iterator[IncidentStore]:
    s = IncidentStore(store_url)
    yield s
    s.close()


ALERT = {
    "labels": {
        "alertname": "SergasAppDown",
        "instance": "app1:8000",
        "severity": "critical",
        "job": "sergas-app",
    },
    "annotations": {"summary": "sergas-app on app1:8000 is down"},
    "fingerprint": "aa11",
    "startsAt": "2026-12-01T10:00:00.000Z",
    "status": "firing",
}


def test_open_then_join_then_resolve_frees_the_group(store: IncidentStore) -> None:
    inc, opened = store.open_or_join("g1", [ALERT], "2026-12-01T10:00:05.000Z", severity="P1", hosts=["app1"])
    assert opened and inc.state == "open" and inc.severity == "P1" and inc.hosts == ("app1",)
    assert inc.id.startswith("inc-20261201-100005-")
    assert inc.title == "SergasAppDown: sergas-app on app1:8000 is down"
    assert inc.labels["alertname"] == "SergasAppDown"
    again, opened2 = store.open_or_join(
        "g1", [ALERT], "2026-12-01T10:01:00.000Z", severity="P0", hosts=["db1"]
    )
    assert not opened2 and again.id == inc.id
    assert again.severity == "P0" and again.hosts == ("app1", "db1")  # worst severity, merged hosts
    assert store.get(inc.id) == again
    assert [e.kind for e in store.events(inc.id)] == ["declared"]

    resolved = store.update(inc.id, state="resolved", resolved_at="2026-12-01T10:30:00.000Z")
    assert resolved.state == "resolved" and resolved.resolved_at == "2026-12-01T10:30:00.000Z"
    assert store.find_active("g1") is None
    fresh, opened3 = store.open_or_join("g1", [ALERT], "2026-12-01T11:00:00.000Z")
    assert opened3 and fresh.id != inc.id
    # the old one cannot be reopened while the group has another active incident
    with pytest.raises(UsageError, match="already has an active incident"):
        store.update(inc.id, state="open")
    assert [i.id for i in store.list()] == [fresh.id, inc.id]
    assert [i.id for i in store.list(states=["resolved"])] == [inc.id]
    with pytest.raises(UsageError):
        store.list(states=["bogus"])
    with pytest.raises(UsageError):
        store.update(inc.id, id="x")
    with pytest.raises(UsageError):
        store.update(inc.id, severity="P9")


def test_fields_round_trip_and_bundles_append(store: IncidentStore) -> None:
    inc, _ = store.open_or_join("g2", [ALERT], "2026-12-01T10:00:00.000Z")
    store.add_bundle(inc.id, "/b/one")
    store.add_bundle(inc.id, "/b/two")
    updated = store.update(
        inc.id,
        plan="/plans/p.json",
        ticket="42",
        commander="oncall",
        state="acknowledged",
        acked_at="2026-12-01T10:01:00.000Z",
        labels={"team": "db"},
    )
    assert updated.bundles == ("/b/one", "/b/two")
    assert (updated.plan, updated.ticket, updated.commander, updated.state) == (
        "/plans/p.json",
        "42",
        "oncall",
        "acknowledged",
    )
    assert Incident.from_dict(json.loads(json.dumps(updated.to_dict()))) == updated
    assert store.find_active("g2") == updated  # acknowledged is still active


def test_alerts_are_deduplicated_and_timeline_uses_starts_at(store: IncidentStore) -> None:
    inc, _ = store.open_or_join("g3", [ALERT], "2026-12-01T10:00:30.000Z")
    assert store.record_alert(inc.id, "aa11", "firing", ALERT["labels"], ALERT["startsAt"], None)
    # Alertmanager's retry after a 5xx: the same alert again
    assert not store.record_alert(inc.id, "aa11", "firing", ALERT["labels"], ALERT["startsAt"], None)
    assert store.record_alert(
        inc.id, "bb22", "firing", {"alertname": "X"}, "2026-12-01T09:59:00.000Z", "0001-01-01T00:00:00Z"
    )
    assert not store.record_alert(
        inc.id, "aa11", "resolved", ALERT["labels"], ALERT["startsAt"], "2026-12-01T10:20:00.000Z"
    )
    alerts = {a.fingerprint: a for a in store.alerts(inc.id)}
    assert set(alerts) == {"aa11", "bb22"}
    assert alerts["aa11"].deliveries == 3 and alerts["aa11"].status == "resolved"
    assert alerts["aa11"].ends_at == "2026-12-01T10:20:00.000Z" and alerts["bb22"].ends_at is None
    got = store.get(inc.id)
    assert got is not None and got.alerts == 2
    store.add_event(inc.id, "acknowledged", "2026-12-01T10:02:00.000Z", actor="alice", detail={"via": "cli"})
    timeline = [(e.kind, e.at) for e in store.events(inc.id)]
    assert timeline == [
        ("alert-fired", "2026-12-01T09:59:00.000Z"),
        ("alert-fired", "2026-12-01T10:00:00.000Z"),
        ("declared", "2026-12-01T10:00:30.000Z"),
        ("acknowledged", "2026-12-01T10:02:00.000Z"),
    ]
    assert store.events(inc.id)[-1].actor == "alice" and store.events(inc.id)[-1].detail == {"via": "cli"}


def test_work_is_claimed_once_and_a_dead_owner_is_found(store: IncidentStore) -> None:
    inc, _ = store.open_or_join("g4", [ALERT], "2026-12-01T10:00:00.000Z")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    owner = f"{socket.gethostname()}:{dead.pid}"
    work = store.claim_work("collect", inc.id, owner=owner, args={"hosts": "app1"})
    assert work is not None and work.state == "queued"
    assert store.claim_work("collect", inc.id) is None  # one unfinished collection per incident
    store.start_work(work.id)
    stale = store.stale_work(lease_s=3600)
    assert [w.id for w in stale] == [work.id]
    again = store.take_over(stale[0])
    assert again is not None and again.attempt == 2 and again.args == {"hosts": "app1"}
    assert store.take_over(stale[0]) is None  # taken over once only
    assert store.get_work(work.id).state == "interrupted"  # type: ignore[union-attr]
    assert "collect-interrupted" in [e.kind for e in store.events(inc.id)]
    assert store.stale_work(lease_s=3600) == []  # ours, and we live
    store.finish_work(again.id, "done", detail={"bundle": "/b"})
    assert store.claim_work("collect", inc.id) is not None  # free again after finishing
    # a live owner on another machine is stale only when its heartbeat is older than the lease
    other = store.claim_work("verify", inc.id, "2026-12-01T10:00:00.000Z", owner="elsewhere:1")
    assert other is not None
    assert [w.id for w in store.stale_work("2026-12-01T10:00:30.000Z", lease_s=60)] == []
    assert [w.id for w in store.stale_work("2026-12-01T10:02:00.000Z", lease_s=60)] == [other.id]


RACER = textwrap.dedent("""
    import json, sys, time
    from collector.incidents.store import IncidentStore
    url, start, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    store = IncidentStore(url)
    while time.time() < start:
        time.sleep(0.005)
    out = []
    for i in range(n):
        inc, opened = store.open_or_join(f"race-{i}", [], None, hosts=[f"h{i}"])
        out.append([inc.id, opened])
    print(json.dumps(out))
""")


def test_two_processes_racing_open_one_incident_per_group(store_url: str) -> None:
    IncidentStore(store_url).close()  # schema first, so the race is about incidents
    n = 25
    start = time.time() + 3.0
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, store_url, str(start), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    for i in range(n):
        ids = {r[i][0] for r in results}
        assert len(ids) == 1, f"group race-{i} got {ids}"
        assert sum(1 for r in results if r[i][1]) == 1  # exactly one process opened it
    store = IncidentStore(store_url)
    assert len(store.list(limit=1000)) == n
    store.close()


def test_engine_urls() -> None:
    assert engine_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert engine_url("/tmp/x.db") == "sqlite:////tmp/x.db"
    assert engine_url("").startswith("sqlite:///") and engine_url("").endswith(
        "incident-collector/incidents.db"
    )
    with pytest.raises(UsageError, match="mysql"):
        engine_url("mysql://h/db")
