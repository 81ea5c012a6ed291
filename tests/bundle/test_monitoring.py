"""Monitoring queries: parsing against a tiny Prometheus-shaped server on loopback, and the lab's
Prometheus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collector.bundle import Bundle, write_bundle
from collector.config import Settings
from collector.core import RunResult
from collector.monitoring import collect_monitoring

VECTOR = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1795842000.0, "0.125"]}]},
}
MATRIX = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"job": "sergas"},
                "values": [[1795842000, "0.1"], [1795842030, "NaN"], [1795842060, "0.3"]],
            }
        ],
    },
}
TARGETS = {
    "status": "success",
    "data": {
        "activeTargets": [
            {
                "labels": {"job": "sergas", "instance": "app1:8000"},
                "scrapePool": "sergas",
                "health": "down",
                "lastError": "connection refused",
                "lastScrape": "2026-11-28T05:00:00Z",
                "scrapeUrl": "http://app1:8000/metrics",
            },
            {"labels": {"job": "node", "instance": "db1:9100"}, "health": "up", "lastError": ""},
        ]
    },
}
ALERTS = [
    {
        "labels": {"alertname": "HighErrorRate", "severity": "critical", "instance": "app1"},
        "annotations": {"summary": "5xx above 5%"},
        "startsAt": "2026-11-28T04:55:00Z",
        "endsAt": "2026-11-28T05:10:00Z",
        "status": {"state": "active"},
    }
]


NOT_FOUND = (404, {"status": "error", "error": "not found"})


def _prometheus_route(path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
    answers: dict[str, Any] = {
        "/api/v1/query": VECTOR,
        "/api/v1/query_range": MATRIX,
        "/api/v1/targets": TARGETS,
        "/api/v2/alerts": ALERTS,
    }
    if "p95" in query.get("query", [""])[0] and path == "/api/v1/query":
        return 400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
    return (200, answers[path]) if path in answers else NOT_FOUND


@pytest.fixture()
def fake_prometheus(json_server: Any) -> str:
    return str(json_server(_prometheus_route))


def _by_name(results: list[Any]) -> dict[str, Any]:
    return {r.probe: r for r in results}


def test_queries_are_parsed_into_monitoring_probes(fake_prometheus: str) -> None:
    settings = Settings(promql_p95="p95_expr")
    hostvars = {
        "collector_prometheus_url": fake_prometheus,
        "collector_alertmanager_url": fake_prometheus + "/",
    }
    results = _by_name(collect_monitoring(settings, hostvars, timeout_s=3))
    assert sorted(results) == [
        "alerts",
        "circuit_breaker_state",
        "error_ratio",
        "error_ratio_range",
        "p95_latency",
        "p95_latency_range",
        "targets",
        "zoho_throttled_2m",
    ]
    assert all(r.host == "monitoring" for r in results.values())
    ratio = json.loads(results["error_ratio"].output)
    assert results["error_ratio"].status == "ok"
    assert (ratio["kind"], ratio["value"], ratio["error"]) == ("instant", 0.125, None)
    assert ratio["query"] == settings.promql_error_ratio
    series = json.loads(results["error_ratio_range"].output)["series"]
    assert series == [
        {
            "metric": {"job": "sergas"},
            "values": [[1795842000.0, 0.1], [1795842030.0, None], [1795842060.0, 0.3]],
        }
    ]
    p95 = json.loads(results["p95_latency"].output)
    assert results["p95_latency"].status == "failed"
    assert "HTTP 400" in p95["error"] and "parse error" in p95["error"]
    targets = json.loads(results["targets"].output)["targets"]
    assert [(t["job"], t["health"], t["last_error"]) for t in targets] == [
        ("node", "up", None),
        ("sergas", "down", "connection refused"),
    ]
    alerts = json.loads(results["alerts"].output)
    assert alerts["source"] == "alertmanager"
    assert alerts["alerts"][0]["name"] == "HighErrorRate" and alerts["alerts"][0]["severity"] == "critical"
    assert alerts["alerts"][0]["starts_at"] == "2026-11-28T04:55:00Z"
    assert results["alerts"].command.startswith(f"GET {fake_prometheus}/api/v2/alerts?active=true")


def test_range_queries_can_be_turned_off(fake_prometheus: str) -> None:
    results = collect_monitoring(
        Settings(prometheus_url=fake_prometheus, alertmanager_url=fake_prometheus),
        timeout_s=3,
        range_minutes=0,
    )
    assert sorted(r.probe for r in results) == [
        "alerts",
        "circuit_breaker_state",
        "error_ratio",
        "p95_latency",
        "targets",
        "zoho_throttled_2m",
    ]


def test_unreachable_prometheus_is_a_failed_probe_not_a_crash() -> None:
    import socket

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    results = collect_monitoring(Settings(prometheus_url=url, alertmanager_url=url), timeout_s=1)
    assert {r.status for r in results} == {"failed"}
    doc = json.loads(results[0].output)
    assert "unreachable" in doc["error"] and doc.get("value") is None


def test_silent_server_times_out() -> None:
    import socket
    import time

    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        t0 = time.monotonic()
        results = collect_monitoring(
            Settings(prometheus_url=url, alertmanager_url=url), timeout_s=0.5, range_minutes=0
        )
        elapsed = time.monotonic() - t0
    assert {r.status for r in results} == {"timeout"}
    assert elapsed < 3
    assert "within 0.5s" in (results[0].error or "")


def test_monitoring_lands_in_the_bundle(fake_prometheus: str, tmp_path: Path) -> None:
    settings = Settings(
        prometheus_url=fake_prometheus, alertmanager_url=fake_prometheus, promql_p95="p95_expr"
    )
    results = collect_monitoring(settings, timeout_s=3)
    run = RunResult(
        "inc-mon", "local", "inventory/", "ssh", ["collect"], "2026-11-28T05:00:00Z", monitoring=results
    )
    bundle = Bundle.open(write_bundle(run, Settings(), out_dir=tmp_path))
    assert bundle.monitoring_names == sorted(r.probe for r in results)
    assert bundle.monitoring("error_ratio")["value"] == 0.125
    assert bundle.manifest["monitoring"]["p95_latency"]["status"] == "failed"
    assert bundle.monitoring("alerts")["alerts"][0]["name"] == "HighErrorRate"


@pytest.mark.lab
def test_lab_prometheus_and_alertmanager_answer(lab: Any) -> None:
    hostvars = {
        "collector_prometheus_url": lab.prometheus_url,
        "collector_alertmanager_url": lab.alertmanager_url,
    }
    results = _by_name(collect_monitoring(Settings(), hostvars, timeout_s=5))
    for name in ("error_ratio", "p95_latency", "error_ratio_range", "p95_latency_range", "targets", "alerts"):
        assert results[name].status == "ok", (name, results[name].error)
    targets = json.loads(results["targets"].output)["targets"]
    assert {t["job"] for t in targets} >= {"prometheus"}
    assert all(t["health"] in ("up", "down", "unknown") for t in targets)
    assert isinstance(json.loads(results["alerts"].output)["alerts"], list)
    ratio = json.loads(results["error_ratio"].output)
    assert ratio["kind"] == "instant" and (ratio["value"] is None or 0.0 <= ratio["value"] <= 1.0)
    assert json.loads(results["error_ratio_range"].output)["kind"] == "range"
