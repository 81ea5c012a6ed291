"""Verify's monitoring checks against a loopback Prometheus/Alertmanager stand-in (real HTTP, real JSON)."""

from __future__ import annotations

from typing import Any

import pytest

from collector.config import Settings
from collector.verify import Check, _window_expr, monitoring_checks, passed
from collector.verify import table as checks_table

ANSWERS: dict[str, Any] = {}


def _route(path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
    if path == "/api/v1/query":
        expr = query["query"][0]
        ANSWERS.setdefault("queries", []).append(expr)
        value = ANSWERS["ratio"] if "status=~" in expr else ANSWERS["p95"]
        result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
    if path == "/api/v2/alerts":
        return 200, ANSWERS["alerts"]
    return 404, {"status": "error", "error": "not found"}


@pytest.fixture()
def stand_in(json_server: Any) -> Settings:
    url = json_server(_route)
    ANSWERS.clear()
    return Settings(prometheus_url=url, alertmanager_url=url)


def _alert(name: str) -> dict[str, Any]:
    return {"labels": {"alertname": name}, "annotations": {}, "status": {"state": "active"}, "startsAt": "x"}


def test_healthy_numbers_pass(stand_in: Settings) -> None:
    ANSWERS.update(ratio=0.004, p95=0.05, alerts=[])
    checks = monitoring_checks(stand_in, window="30s")
    assert passed(checks) and [c.name for c in checks] == [
        "5xx ratio < 1%",
        "p95 < 200 ms",
        "no active alerts",
    ]
    assert all("[30s]" in q for q in ANSWERS["queries"])


def test_runbook_thresholds_fail(stand_in: Settings) -> None:
    ANSWERS.update(ratio=0.01, p95=0.2, alerts=[_alert("SergasAppDown")])
    checks = {c.name: c for c in monitoring_checks(stand_in)}
    assert not checks["5xx ratio < 1%"].passed and "1.00%" in checks["5xx ratio < 1%"].detail
    assert not checks["p95 < 200 ms"].passed and "200 ms" in checks["p95 < 200 ms"].detail
    assert not checks["no active alerts"].passed and "SergasAppDown" in checks["no active alerts"].detail


def test_no_traffic_is_unknown_and_expected_alerts_are_not_failures(stand_in: Settings) -> None:
    ANSWERS.update(ratio=None, p95=None, alerts=[_alert("SergasZohoCircuitBreakerOpen")])
    checks = monitoring_checks(stand_in, allowed_alerts=["SergasZohoCircuitBreakerOpen"])
    assert not passed(checks)  # no requests in the window: unknown, never a pass
    assert [c.status for c in checks] == ["unknown", "unknown", "pass"]
    assert "expected" in checks[2].detail and "no requests" in checks[0].detail


def test_unreachable_monitoring_fails_the_checks() -> None:
    checks = monitoring_checks(
        Settings(prometheus_url="http://127.0.0.1:9", alertmanager_url="http://127.0.0.1:9"), timeout_s=1
    )
    assert len(checks) == 3 and not any(c.passed for c in checks)


def test_window_rewrite_and_table() -> None:
    assert _window_expr("rate(x[5m]) / rate(y[5m])", "30s") == "rate(x[30s]) / rate(y[30s])"
    lines = checks_table(
        [Check("SELECT 1", "db1", True, "1"), Check("Redis PING", "redis1", False, "NOAUTH")]
    )
    assert lines[1].split()[:4] == ["SELECT", "1", "db1", "PASS"] and "FAIL" in lines[2]
    assert not passed([])
