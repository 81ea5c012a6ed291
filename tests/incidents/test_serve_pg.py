"""Two `collector serve` processes sharing one PostgreSQL store (the lab's db1): the same notification posted
to both at once opens one incident and runs one collection."""

from __future__ import annotations

import datetime as _dt
import json
import threading
from pathlib import Path

import pytest
from serve_fixtures import ROOT, ServeProcess, alert, notification, poll
from test_store import pg_url  # noqa: F401 - the dedicated database on db1, as a fixture here too

from collector.incidents.store import IncidentStore

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_two_serve_processes_on_postgres_open_once(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    local = str(ROOT / "inventory" / "local.yml")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    servers = [
        ServeProcess(tmp_path / name, inventory=local, fallback="local", max_collections=1, db=pg_url).start()
        for name in ("a", "b")
    ]
    store = IncidentStore(pg_url)
    try:
        starts = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        answers: dict[str, list[dict[str, object]]] = {}
        lock = threading.Lock()

        def post(server: ServeProcess, group: str) -> None:
            doc = notification(group, [alert("Shared", f"fp-{group}", starts)])
            status, body, _ = server.post(doc)
            assert status == 200, body
            with lock:
                answers.setdefault(group, []).append(json.loads(body))

        groups = [f"g-pg-{i}" for i in range(5)]
        threads = [threading.Thread(target=post, args=(s, g)) for g in groups for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for group in groups:
            got = answers[group]
            assert len(got) == 2 and len({a["incident"] for a in got}) == 1, got
            assert sorted(bool(a["opened"]) for a in got) == [
                False,
                True,
            ]  # one process opened, the other joined
        incidents = [i for i in store.list(limit=100) if i.group_key.startswith("g-pg-")]
        assert len(incidents) == 5
        for inc in incidents:
            poll(
                lambda inc=inc: [w for w in store.work(inc.id) if w.kind == "collect" and w.state == "done"],
                180,
                f"the collection of {inc.group_key}",
            )
            assert len([w for w in store.work(inc.id) if w.kind == "collect"]) == 1  # no double work
            assert len(store.get(inc.id).bundles) == 1  # type: ignore[union-attr]
            assert [a.deliveries for a in store.alerts(inc.id)] == [2]  # both deliveries recorded once
        owners = {w.owner for inc in incidents for w in store.work(inc.id) if w.kind == "collect"}
        assert owners  # which process collected is whichever opened
    finally:
        for server in servers:
            server.stop()
        store.close()
