"""Pure parts of `collector serve`: the v4 payload, severity words, label → host routing, the bearer check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.cli.serve import split_listen
from collector.core import UsageError
from collector.incidents.server import authorized, is_loopback, page_access
from collector.incidents.webhook import (
    Alert,
    PayloadError,
    alert_severity,
    host_part,
    parse_label_rules,
    parse_payload,
    route_hosts,
)


def payload(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "version": "4",
        "groupKey": '{}:{alertname="X"}',
        "status": "firing",
        "receiver": "collector",
        "groupLabels": {"alertname": "X"},
        "commonLabels": {"alertname": "X"},
        "externalURL": "http://am",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "X", "instance": "10.0.0.5:8000"},
                "annotations": {"summary": "s"},
                "startsAt": "2026-12-01T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": "f1",
                "generatorURL": "http://p",
            }
        ],
    }
    doc.update(over)
    return doc


def test_payload_v4_is_read_and_wrong_ones_are_named() -> None:
    note = parse_payload(payload())
    assert note.group_key == '{}:{alertname="X"}' and note.status == "firing"
    assert note.alerts[0].ends_at is None and note.alerts[0].fingerprint == "f1"
    for bad, words in [
        ([], "JSON object"),
        (payload(version="3"), "version 4"),
        (payload(groupKey=""), "groupKey"),
        (payload(status="pending"), "status"),
        (payload(alerts={}), "alerts must be a list"),
        (payload(alerts=[{"labels": {}}]), "startsAt"),
    ]:
        with pytest.raises(PayloadError, match=words):
            parse_payload(bad)
    # no fingerprint (older Alertmanager): one from the labels, stable
    raw = payload()
    del raw["alerts"][0]["fingerprint"]  # type: ignore[index]
    assert parse_payload(raw).alerts[0].fingerprint == parse_payload(raw).alerts[0].fingerprint != "f1"


def alert(**labels: str) -> Alert:
    return Alert("firing", dict(labels), {}, "2026-12-01T10:00:00Z", None, "f")


def test_severity_from_labels() -> None:
    assert alert_severity([alert(severity="critical")]) == "P1"
    assert alert_severity([alert(severity="warning"), alert(priority="P0")]) == "P0"
    assert alert_severity([alert(severity="p2")]) == "P2"
    assert alert_severity([alert(severity="whatever")]) is None


HOSTVARS = {
    "app1": {"ansible_host": "10.203.57.11"},
    "db1.lab.example": {"ansible_host": "10.203.57.12"},
    "redis1": {},
}
GROUPS = {"app", "db", "redis", "sergas-app"}


def test_routing_instance_host_job_rules_and_fallback() -> None:
    r = route_hosts([alert(instance="10.203.57.11:8000")], HOSTVARS, GROUPS, [], "all")
    assert r.matched and r.pattern == "app1" and r.hosts == ("app1",)
    r = route_hosts(
        [alert(host="db1"), alert(instance="http://redis1:9121/metrics")], HOSTVARS, GROUPS, [], "all"
    )
    assert r.pattern == "db1.lab.example:redis1" and r.hosts == ("db1.lab.example", "redis1")
    r = route_hosts([alert(job="sergas-app")], HOSTVARS, GROUPS, [], "all")
    assert r.pattern == "sergas-app" and r.hosts == ()
    r = route_hosts([alert(service="pg", team="x")], HOSTVARS, GROUPS, ["service=pg:db", "team:app1"], "all")
    assert r.pattern == "db:app1" and "configured rule" in r.reasons[0]
    r = route_hosts([alert(instance="nowhere:9100", job="node")], HOSTVARS, GROUPS, [], "local")
    assert not r.matched and r.pattern == "local"
    assert "instance=nowhere:9100" in r.reasons[0] and "fallback pattern 'local'" in r.reasons[0]
    r = route_hosts(
        [alert(alertname="SergasHigh5xxRatio", instance="10.203.57.11:8000")],
        HOSTVARS,
        GROUPS,
        ["alertname=~Sergas.*:lab"],
        "all",
    )
    assert r.pattern == "lab:app1" and r.hosts == ("app1",)
    with pytest.raises(ValueError, match="label=value:pattern"):
        parse_label_rules(["nonsense"])
    assert host_part("[::1]:9100") == "::1" and host_part("app1") == "app1"


def test_bearer_and_listen() -> None:
    assert authorized(None, "") and authorized("Bearer s3cret", "s3cret")
    assert not authorized(None, "s3cret") and not authorized("Bearer nope", "s3cret")
    assert not authorized("Basic s3cret", "s3cret")
    assert split_listen("127.0.0.1:9095") == ("127.0.0.1", 9095) and split_listen(":80") == ("127.0.0.1", 80)
    assert split_listen("[::1]:9") == ("::1", 9)
    with pytest.raises(UsageError):
        split_listen("nope")
    assert is_loopback("127.0.0.2") and is_loopback("::1") and not is_loopback("0.0.0.0")


def test_the_page_answers_loopback_else_only_its_own_token() -> None:
    import base64

    def basic(user_password: str) -> str:
        return "Basic " + base64.b64encode(user_password.encode()).decode()

    assert page_access("127.0.0.1", None, "") and page_access("::1", None, "pg-tok")
    assert not page_access("10.203.57.1", None, "")  # no page token: loopback only
    assert not page_access("10.203.57.1", "Bearer pg-tok", "")
    assert not page_access(None, None, "pg-tok") and not page_access("10.203.57.1", None, "pg-tok")
    assert page_access("10.203.57.1", basic("dana:pg-tok"), "pg-tok")
    assert page_access("10.203.57.1", "Bearer pg-tok", "pg-tok")
    assert not page_access("10.203.57.1", basic("pg-tok:wrong"), "pg-tok")  # the password, not the user
    assert not page_access("10.203.57.1", "Basic !!notbase64", "pg-tok")
    assert not page_access("10.203.57.1", "Digest pg-tok", "pg-tok")


def test_serve_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "COLLECTOR_SERVE_TOKEN": ""}
    env.pop("COLLECTOR_CONFIG", None)
    for args, words in [
        (["--listen", "0.0.0.0:9999"], "not loopback; add --allow-remote"),
        (["--listen", "0.0.0.0:9999", "--allow-remote"], "needs a bearer token"),
        (["--listen", "nope"], "is not HOST:PORT"),
        (["--host-label", "nonsense"], "is not label=value:pattern"),
        (["--token-file", str(tmp_path / "missing")], "--token-file"),
        (["--max-collections", "0"], "at least 1"),
    ]:
        proc = subprocess.run(
            [
                str(Path(sys.executable).with_name("collector")),
                "serve",
                "--db",
                str(tmp_path / "x.db"),
                *args,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
