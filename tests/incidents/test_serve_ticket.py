"""`collector serve` with a ticket system configured: the incident's sealed bundle lands on a new ticket of a
real Redmine (the ticket tests' throwaway instance on loopback), and the incident records the ticket id."""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_fixtures import ROOT, ServeProcess, alert, notification, poll

from collector.incidents.store import IncidentStore

pytestmark = pytest.mark.slow


def _tickets_conftest() -> Any:
    spec = importlib.util.spec_from_file_location(
        "tickets_conftest_for_serve", ROOT / "tests" / "tickets" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def redmine_server() -> Iterator[Any]:
    tickets = _tickets_conftest()
    missing = tickets._installed()
    if missing:
        pytest.skip(missing)
    with tickets.running_redmine() as server:
        yield server


def test_opened_incident_gets_a_ticket_with_its_bundle(tmp_path: Path, redmine_server: Any) -> None:
    serve = ServeProcess(
        tmp_path,
        inventory=str(ROOT / "inventory" / "local.yml"),
        fallback="local",
        env={
            "COLLECTOR_SERVE_TICKET_SYSTEM": "redmine",
            "COLLECTOR_SERVE_TICKET_PROJECT": redmine_server.project,
            "COLLECTOR_REDMINE_URL": redmine_server.url,
            "COLLECTOR_REDMINE_API_KEY": redmine_server.admin_key,
        },
    ).start()
    store = IncidentStore(serve.db)
    try:
        starts = (_dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=10)).isoformat(timespec="milliseconds")
        status, body, _ = serve.post(
            notification(
                "g-ticket", [alert("TicketMe", "fp-t", starts.replace("+00:00", "Z"), severity="critical")]
            )
        )
        assert status == 200, body
        inc_id = json.loads(body)["incident"]
        event = poll(
            lambda: next(
                (e for e in store.events(inc_id) if e.kind in ("ticket-created", "ticket-failed")), None
            ),
            180,
            "the ticket",
        )
        assert event.kind == "ticket-created", event.detail
        inc = store.get(inc_id)
        assert inc is not None and inc.ticket == event.detail["ticket"]  # type: ignore[index]
        request = urllib.request.Request(
            f"{redmine_server.url}/issues/{inc.ticket}.json?include=attachments",
            headers={"X-Redmine-API-Key": redmine_server.admin_key},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            issue = json.load(resp)["issue"]
        assert inc_id in issue["subject"]
        names = {a["filename"] for a in issue["attachments"]}
        assert f"{inc_id}.tar.gz" in names, names
    finally:
        serve.stop()
        store.close()
