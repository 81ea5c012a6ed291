"""`collector incident ...` on a real store; `ack`/`resolve` against the lab's real Alertmanager."""

from __future__ import annotations

import datetime as _dt
import json
import secrets
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from collector.cli import main
from collector.incidents.store import IncidentStore


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> IncidentStore:
    config = tmp_path / "incidents.yml"
    config.write_text(yaml.safe_dump({"oncall": {"name": "Dana On-call"}}))  # no channels: nothing leaves
    monkeypatch.setenv("COLLECTOR_INCIDENTS_CONFIG", str(config))
    monkeypatch.setenv("COLLECTOR_INCIDENTS_DB", str(tmp_path / "incidents.db"))
    monkeypatch.delenv("COLLECTOR_ONCALL", raising=False)
    monkeypatch.delenv("COLLECTOR_CHAT_WEBHOOK", raising=False)
    return IncidentStore(str(tmp_path / "incidents.db"))


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["incident", *args], catch_exceptions=False)


def _open(
    store: IncidentStore, severity: str, minutes_ago: float = 0, labels: dict[str, str] | None = None
) -> Any:
    token = secrets.token_hex(3)
    at = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=minutes_ago)
    labels = labels or {"alertname": f"CollectorCliTest{token}", "instance": "app1:8000"}
    incident, _ = store.open_or_join(
        f"g-{token}", [{"labels": labels}], at, severity=severity, hosts=["app1"], title=f"Test{token}"
    )
    store.record_alert(incident.id, f"fp{token}", "firing", labels, at.isoformat())
    return incident


def test_list_show_assign_update_and_the_clocks(env: IncidentStore) -> None:
    p2 = _open(env, "P2", minutes_ago=70)
    p0 = _open(env, "P0", minutes_ago=1)
    listed = run("list")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].startswith(p0.id) and "acknowledge OVERDUE" not in lines[0]
    assert "P0" in lines[0] and "acknowledge in 0m" in lines[0]
    assert any(line.startswith(p2.id) and "OVERDUE" in line for line in lines)

    assert run("assign", p2.id, "Sam Responder", "--by", "kim").exit_code == 0
    shown = run("show", p2.id)
    assert "commander:  Sam Responder" in shown.output
    assert "assigned" in shown.output and "alertname=CollectorCliTest" in shown.output

    updated = run("update", p2.id, "--message", "pool at 100/100, killing idle", "--data-loss", "--by", "kim")
    assert updated.exit_code == 0, updated.output
    assert "raised: data loss suspected" in updated.output
    assert "update sent: no channel configured" in updated.output
    assert "escalate: data loss suspected" in updated.output  # at once, not after the hour
    assert "escalate: not resolved within 1 hour" in updated.output  # opened 70 minutes ago
    as_json = json.loads(run("show", p2.id, "--json").output)
    kinds = [e["kind"] for e in as_json["events"]]
    assert kinds.count("escalated") == 2 and "update-sent" in kinds and "flag" in kinds


def test_resolve_needs_the_checklist_and_close_needs_resolved(env: IncidentStore) -> None:
    inc = _open(env, "P1")
    closing = run("close", inc.id, "--by", "kim")
    assert (
        closing.exit_code == 2
        and f"incident {inc.id} is open: only a resolved incident can be closed" in closing.output
    )
    early = run("resolve", inc.id, "--by", "kim")
    assert early.exit_code == 2 and "the step-5 checklist has not passed" in early.output
    env.add_event(inc.id, "verify-failed", None, "serve", {"passed": False})
    assert run("resolve", inc.id).exit_code == 2
    env.add_event(inc.id, "verified", None, "serve", {"passed": True})
    resolved = run("resolve", inc.id, "--by", "kim")
    assert resolved.exit_code == 0, resolved.output
    assert f"{inc.id} resolved at" in resolved.output
    assert env.get(inc.id).state == "resolved"  # type: ignore[union-attr]
    assert run("close", inc.id, "--by", "collector").exit_code == 2  # a person closes it
    closed = run("close", inc.id, "--by", "kim")
    assert closed.exit_code == 0 and env.get(inc.id).state == "closed"  # type: ignore[union-attr]
    assert run("list").output.strip() == "no active incidents (--all shows the others)"
    assert inc.id in run("list", "--all").output


def test_unknown_incident_is_one_line_and_exit_2(env: IncidentStore) -> None:
    result = run("show", "inc-nope")
    assert result.exit_code == 2
    assert result.output.strip() == "error: no incident 'inc-nope' (collector incident list shows them)"


def _silence(url: str, silence_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/api/v2/silence/{silence_id}", timeout=10) as answer:
        found: dict[str, Any] = json.load(answer)
    return found


@pytest.mark.lab
def test_ack_silences_the_alerts_in_alertmanager_until_resolved(
    env: IncidentStore, lab: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTOR_ALERTMANAGER_URL", lab.alertmanager_url)
    token = secrets.token_hex(3)
    inc = _open(
        env,
        "P2",
        labels={"alertname": f"CollectorCliTest{token}", "instance": "app1:8000", "severity": "warning"},
    )
    acked = run("ack", inc.id, "--by", "sam")
    assert acked.exit_code == 0, acked.output
    assert "commander: sam" in acked.output  # P2: the first responder commands it
    silence_id = acked.output.split("silenced in Alertmanager: ", 1)[1].split()[0]
    silence = _silence(lab.alertmanager_url, silence_id)
    assert silence["status"]["state"] == "active"
    assert inc.id in silence["comment"] and silence["createdBy"] == "sam"
    assert {(m["name"], m["value"], m["isEqual"]) for m in silence["matchers"]} == {
        ("alertname", f"CollectorCliTest{token}", True),
        ("instance", "app1:8000", True),
        ("severity", "warning", True),
    }
    # acknowledging again adds no second silence
    assert "silenced in Alertmanager" not in run("ack", inc.id, "--by", "sam").output

    env.add_event(inc.id, "verified", None, "serve", {"passed": True})
    resolved = run("resolve", inc.id, "--by", "sam")
    assert resolved.exit_code == 0, resolved.output
    assert f"silence {silence_id}: expired" in resolved.output
    assert _silence(lab.alertmanager_url, silence_id)["status"]["state"] == "expired"


@pytest.mark.lab
def test_serve_expires_the_silences_as_its_verify_resolves(
    env: IncidentStore, lab: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve resolves on a passed verify and ends the acknowledgement's silence then, not at a later tick."""
    from collector.config import Settings
    from collector.incidents.worker import Service

    monkeypatch.setenv("COLLECTOR_ALERTMANAGER_URL", lab.alertmanager_url)
    inc = _open(env, "P2")
    acked = run("ack", inc.id, "--by", "sam")
    silence_id = acked.output.split("silenced in Alertmanager: ", 1)[1].split()[0]
    assert _silence(lab.alertmanager_url, silence_id)["status"]["state"] == "active"
    Service(env, Settings(alertmanager_url=lab.alertmanager_url), hooks=[]).unsilence(
        inc.id, "2026-12-02T01:00:00Z"
    )
    assert _silence(lab.alertmanager_url, silence_id)["status"]["state"] == "expired"
    (gone,) = [e for e in env.events(inc.id) if e.kind == "unsilenced"]
    assert gone.actor == "serve" and (gone.detail or {})["ids"] == [silence_id]
