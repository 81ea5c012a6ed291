"""Comms that go somewhere real: a Debian MTA (exim4) on loopback, a loopback chat webhook, the real Redmine.

The mail is read back from the local mailbox (/var/mail/<user>), the chat POST from the receiver, the
ticket note from Redmine's REST API. `tick` drives it all, as the server does.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import secrets
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from comms_fixtures import MAIL_USER, ChatReceiver, chat, mail_body, mta, read_mail

from collector.incidents import lifecycle as lc
from collector.incidents.store import IncidentStore

_TICKETS_CONFTEST = Path(__file__).resolve().parents[1] / "tickets" / "conftest.py"


def _tickets_helpers() -> Any:
    """tests/tickets/conftest.py (the real Redmine and bundle builders) as a module of its own."""
    spec = importlib.util.spec_from_file_location("tickets_conftest_for_incidents", _TICKETS_CONFTEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tickets = _tickets_helpers()
__all__ = ["chat", "mta"]  # fixtures, used by name


# ---------------------------------------------------------------- the setup


CHAT_TOKEN = "chat-" + secrets.token_hex(12)


@pytest.fixture
def configured(tmp_path: Path, mta: Path, chat: ChatReceiver, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = {
        "oncall": {"name": "Dana On-call", "email": f"{MAIL_USER}@localhost"},
        "contacts": [
            {"name": "Security Team", "email": f"{MAIL_USER}@localhost", "escalate_on": ["security"]},
            {"name": "CTO", "escalate_on": ["security", "data-loss"]},
        ],
        "notify": {
            "email": {
                "host": "127.0.0.1",
                "port": 25,
                "mode": "insecure",
                "from": "incident-collector@localhost",
            },
            "chat": [{"url": chat.url, "token": CHAT_TOKEN}],
            "ticket": "redmine",
            "page_url": "http://127.0.0.1:8080/",
        },
    }
    path = tmp_path / "incidents.yml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("COLLECTOR_INCIDENTS_CONFIG", str(path))
    monkeypatch.delenv("COLLECTOR_ONCALL", raising=False)
    monkeypatch.delenv("COLLECTOR_CHAT_WEBHOOK", raising=False)
    return path


def _store(tmp_path: Path) -> IncidentStore:
    return IncidentStore(str(tmp_path / "incidents.db"))


def test_initial_update_reaches_the_mailbox_the_chat_and_the_ticket(
    tmp_path: Path,
    configured: Path,
    chat: ChatReceiver,
    mta: Path,
    redmine: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLLECTOR_REDMINE_URL", redmine.url)
    monkeypatch.setenv("COLLECTOR_REDMINE_API_KEY", redmine.admin_key)
    monkeypatch.setenv("COLLECTOR_TICKETS_CONFIG", str(tmp_path / "no-tickets.yml"))
    (tmp_path / "no-tickets.yml").write_text("{}\n")
    from collector.tickets import load_ticket_config, open_system

    system = open_system(load_ticket_config("redmine"))
    ticket = system.create(redmine.project, "incident ticket", "opened by the test", "P1", [])
    bundle = tickets.build_bundle(tmp_path / "bundles", severity="P1")
    store = _store(tmp_path)
    now = _dt.datetime.now(_dt.UTC)
    token = secrets.token_hex(4)
    incident, opened = store.open_or_join(
        f"g-{token}",
        [{"labels": {"alertname": f"AppDown{token}"}}],
        now,
        severity="P1",
        hosts=["app1"],
        title=f"AppDown{token}",
    )
    assert opened
    store.add_bundle(incident.id, str(bundle))
    store.update(incident.id, ticket=ticket.id)

    done = lc.tick(store, None, now + _dt.timedelta(seconds=5))
    kinds = [(i, d.key) for i, d in done]
    assert (incident.id, "assign") in kinds and (incident.id, "notify:initial") in kinds

    msg = read_mail(mta, incident.id)
    assert "INCIDENT [P1]" in str(msg["Subject"]) and "INVESTIGATING" in str(msg["Subject"])
    body = mail_body(msg)
    assert "Incident commander: Dana On-call" in body  # the commander assigned on the same tick
    assert "App health check failing" in body  # filled from the bundle's findings
    assert incident.id in body and "Next update:" in body and "(in 30 minutes)" in body  # P1: every 30

    headers, post = chat.find(incident.id)
    assert headers.get("Authorization") == f"Bearer {CHAT_TOKEN}"
    assert "INCIDENT [P1]" in post["title"] and "App health check failing" in post["message"]

    with urllib.request.urlopen(
        urllib.request.Request(
            f"{redmine.url}/issues/{ticket.id}.json?include=journals",
            headers={"X-Redmine-API-Key": redmine.admin_key},
        ),
        timeout=30,
    ) as answer:
        journals = json.load(answer)["issue"]["journals"]
    notes = "\n".join(j.get("notes") or "" for j in journals)
    assert "INVESTIGATING" in notes and "Incident commander: Dana On-call" in notes

    sent = [e for e in store.events(incident.id) if e.kind == "update-sent"]
    assert len(sent) == 1 and sent[0].detail is not None
    assert sent[0].detail["channels"] == {"email": "ok", "chat": "ok", "ticket": "ok"}
    # nothing is sent twice
    again = lc.tick(store, None, now + _dt.timedelta(seconds=10))
    assert [d.key for i, d in again if i == incident.id] == []


def test_security_escalation_goes_out_with_no_secret_in_clear(
    tmp_path: Path, configured: Path, chat: ChatReceiver, mta: Path
) -> None:
    store = _store(tmp_path)
    now = _dt.datetime.now(_dt.UTC)
    token = secrets.token_hex(4)
    leaked = "postgres://app:Sup3rS3cretPw" + token + "@db1/app"
    incident, _ = store.open_or_join(
        f"g-{token}",
        [{"labels": {"alertname": "AuthFailures"}}],
        now,
        severity="P2",
        title=f"AuthFailures{token} {leaked} token={CHAT_TOKEN}",
    )
    lc.raise_flag(store, incident.id, "security", "sam", why="logins from an unknown network", now=now)
    done = lc.tick(store, None, now + _dt.timedelta(seconds=1))
    assert "escalate:security" in [d.key for _, d in done]

    msg = read_mail(mta, f"AuthFailures{token}")
    body = mail_body(msg)
    assert str(msg["Subject"]).strip().startswith("ESCALATION [P2]")
    assert "security breach suspected: logins from an unknown network" in body
    assert "Security Team" in body and "CTO" in body
    for text in (body, str(msg["Subject"])):
        assert "Sup3rS3cretPw" not in text and CHAT_TOKEN not in text
    _, post = chat.find(f"AuthFailures{token}")
    assert "Sup3rS3cretPw" not in json.dumps(post) and CHAT_TOKEN not in json.dumps(post)
    (event,) = [e for e in store.events(incident.id) if e.kind == "escalated"]
    assert event.detail is not None and event.detail["reason"] == "security"


def test_missed_acknowledgement_sends_a_reminder_to_the_oncall(
    tmp_path: Path, configured: Path, chat: ChatReceiver, mta: Path
) -> None:
    store = _store(tmp_path)
    opened = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=3)
    token = secrets.token_hex(4)
    incident, _ = store.open_or_join(
        f"g-{token}", [{"labels": {"alertname": "ApiDown"}}], opened, severity="P0", title=f"ApiDown{token}"
    )
    done = lc.tick(store, None, opened + _dt.timedelta(minutes=3))
    assert "remind:ack:0" in [d.key for _, d in done]
    msg = read_mail(mta, f"REMINDER [P0] ApiDown{token}")
    assert "not acknowledged: the P0 response time (2 min)" in mail_body(msg)
    assert f"collector incident ack {incident.id}" in mail_body(msg)


@pytest.fixture(scope="module")
def redmine() -> Iterator[Any]:
    missing = tickets._installed()
    if missing:
        pytest.skip(missing)
    with tickets.running_redmine() as server:
        yield server


@pytest.mark.parametrize(
    ("stage", "headline"),
    [("initial", "INVESTIGATING"), ("mitigation", "MITIGATION"), ("resolved", "RESOLVED")],
)
def test_each_stage_is_the_comms_template_filled_from_the_incident(
    tmp_path: Path, stage: str, headline: str
) -> None:
    from collector.core import Incident
    from collector.incidents import notify
    from collector.report import render_comms

    bundle = tickets.build_bundle(tmp_path / "bundles", severity="P2")
    incident = Incident(
        id="inc-x",
        group_key="g",
        title="AppDown",
        state="open",
        severity="P2",
        commander="Sam Responder",
        opened_at="2026-11-28T03:00:00.000Z",
        bundles=(str(bundle),),
        ticket="7",
        hosts=("app1",),
    )
    now = _dt.datetime(2026, 11, 28, 3, 10, tzinfo=_dt.UTC)
    text = notify.update_text(incident, stage, now, notify.Channels(page_url="http://127.0.0.1:9095/"))
    pasted = render_comms(bundle, stage, now)  # what `collector comms` prints: the same template
    assert text.splitlines()[0] == pasted.splitlines()[0] and headline in text.splitlines()[0]
    assert "App health check failing" in text
    assert (
        "Incident: inc-x (open, P2)" in text
        and "Page: http://127.0.0.1:9095/" in text
        and "Ticket: 7" in text
    )
    if stage == "initial":
        assert "Incident commander: Sam Responder" in text and "Incident commander: <name>" in pasted
        assert "Next update: 2026-11-28 05:10:00 UTC (in 120 minutes)" in text  # P2: every 2 h
    # no bundle yet: a short text from the incident alone
    bare = notify.update_text(
        Incident(
            id="inc-y",
            group_key="g",
            title="AppDown",
            state="open",
            severity=None,
            commander=None,
            opened_at="2026-11-28T03:00:00.000Z",
        ),
        stage,
        now,
    )
    assert "INCIDENT [?] AppDown" in bare and "Commander: not assigned yet" in bare


def test_resolved_update_takes_the_incidents_times_and_the_configured_status_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve's resolved update: downtime from the incident's start to its resolution (the bundle was
    collected before anything was applied), the status page from the settings, the runbook's closing lines."""
    from collector.config import load_settings
    from collector.core import Incident
    from collector.incidents import notify

    status_page = "https://status.example.com/"
    settings_file = tmp_path / "collector.yml"
    settings_file.write_text(f"status_page_url: {status_page}\n")
    incidents_file = tmp_path / "incidents.yml"
    incidents_file.write_text("notify: {}\n")
    monkeypatch.setenv("COLLECTOR_CONFIG", str(settings_file))
    monkeypatch.setenv("COLLECTOR_INCIDENTS_CONFIG", str(incidents_file))
    monkeypatch.delenv("COLLECTOR_STATUS_PAGE_URL", raising=False)
    monkeypatch.delenv("COLLECTOR_CHAT_WEBHOOK", raising=False)
    channels = notify.load_channels(load_settings())
    assert channels.status_page == status_page

    bundle = tickets.build_bundle(tmp_path / "bundles", severity="P1")
    incident = Incident(
        id="inc-r",
        group_key="g",
        title="AppDown",
        state="resolved",
        severity="P1",
        commander="Sam Responder",
        opened_at="2026-11-28T03:00:00.000Z",
        acked_at="2026-11-28T03:04:00.000Z",
        resolved_at="2026-11-28T03:40:00.000Z",
        bundles=(str(bundle),),
        hosts=("app1",),
    )
    now = _dt.datetime(2026, 11, 28, 3, 41, tzinfo=_dt.UTC)
    text = notify.update_text(incident, "resolved", now, channels)
    assert "Duration: 40 min 00 s of downtime (2026-11-28 03:00:00 UTC → 2026-11-28 03:40:00 UTC)" in text
    assert "Root cause: App health check failing on app1" in text
    assert "A detailed post-mortem will be published within 48 hours (by 2026-11-30 03:40:00 UTC)." in text
    assert "Thank you for your patience." in text and f"Status page: {status_page}\n" in text
    assert "verification has not passed" not in text  # serve resolves only once step 5 passes
    initial = notify.update_text(replace(incident, state="open", resolved_at=None), "initial", now, channels)
    assert (
        f"Status page: {status_page}\n" in initial and "Severity: P1 — respond within 15 minutes" in initial
    )
