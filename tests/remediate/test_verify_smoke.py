"""Step 5's critical flows as data, run by verify; and no data is UNKNOWN, never a pass.

The flows run for real: the on-host script (testinfra's local backend, real HTTP) against a loopback
JSON server; the judging and parsing are plain functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

from collector.config import Settings
from collector.core import UsageError
from collector.inventory import load_inventory
from collector.smoke import Flow, flows_for, judge, parse_flows, rounds_for
from collector.smoke import run as run_smoke
from collector.verify import Check, denominator, monitoring_checks, passed, run_checks
from collector.verify import table as checks_table

LAB_STYLE = [
    {"name": "health", "path": "/health", "json": {"status": "healthy"}},
    {"name": "recent orders", "path": "/api/orders", "json_keys": ["orders"]},
    {"name": "sync", "method": "post", "path": "/api/zoho/sync", "body": {}, "contains": "synced"},
]


def test_flows_parse_with_defaults_and_named_fields() -> None:
    health, orders, sync = parse_flows(LAB_STYLE)
    assert health == Flow("health", "/health", json={"status": "healthy"})
    assert (orders.method, orders.status, orders.json_keys) == ("GET", 200, ("orders",))
    assert (sync.method, sync.contains, sync.body) == ("POST", ("synced",), {})


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "non-empty list"),
        ({"name": "x"}, "non-empty list"),
        ([{"path": "/health"}], "[0].name is required"),
        ([{"name": "h", "path": "health"}], "(h).path must start with /"),
        ([{"name": "h", "path": "/a b"}], "(h).path must start with /"),
        ([{"name": "h", "path": "/", "method": "BREW"}], "(h).method must be one of"),
        ([{"name": "h", "path": "/", "status": "200"}], "(h).status must be an HTTP status"),
        ([{"name": "h", "path": "/", "status": 42}], "(h).status must be an HTTP status"),
        ([{"name": "h", "path": "/", "json_keys": [""]}], "(h).json_keys must be a string or a list"),
        ([{"name": "h", "path": "/", "json": ["status"]}], "(h).json must map dotted keys"),
        ([{"name": "h", "path": "/", "timeout_s": 0}], "(h).timeout_s must be"),
        ([{"name": "h", "path": "/", "expect": 200}], "unknown field 'expect'"),
        ([{"name": "h", "path": "/"}, {"name": "h", "path": "/x"}], "two flows are called 'h'"),
    ],
)
def test_bad_flows_are_one_line_naming_the_field(raw: Any, message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_flows(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_flows_from_a_yaml_file_next_to_the_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "prod.yml"
    inventory.write_text("all: {}\n")
    (tmp_path / "flows.yml").write_text(yaml.safe_dump({"collector_smoke_flows": LAB_STYLE}))
    flows = flows_for({"collector_smoke_flows": "flows.yml"}, str(inventory))
    assert [f.name for f in flows] == ["health", "recent orders", "sync"]
    assert flows_for({}, str(inventory)) == []
    with pytest.raises(UsageError, match="cannot read"):
        flows_for({"collector_smoke_flows": "missing.yml"}, str(inventory))
    assert rounds_for({}) == 5 and rounds_for({"collector_smoke_rounds": "3"}) == 3
    with pytest.raises(UsageError, match="collector_smoke_rounds"):
        rounds_for({"collector_smoke_rounds": 0})


def test_judge_checks_status_substrings_keys_and_values() -> None:
    flow = parse_flows(
        [{"name": "h", "path": "/", "contains": "ok", "json_keys": ["a.b", "l.0"], "json": {"s": "up"}}]
    )[0].as_dict()
    good = json.dumps({"a": {"b": 1}, "l": [1], "s": "up", "note": "ok"})
    assert judge(flow, 200, good) is None
    assert judge(flow, 503, good) == "HTTP 503, expected 200"
    assert judge(flow, None, "") == "HTTP None, expected 200"
    assert judge(flow, 200, good.replace('"ok"', '"no"')) == "body lacks 'ok'"
    assert judge(flow, 200, "ok, but <html>") == "body is not JSON"
    assert judge(flow, 200, good.replace('"b"', '"c"')) == "no 'a.b' in the JSON body"
    assert judge(flow, 200, good.replace('"up"', '"down"')) == "s is 'down', expected 'up'"


def _app(path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
    if path == "/health":
        return 200, {"status": "healthy"}
    if path == "/api/orders":
        return 200, {"orders": [{"id": 1}]}
    if path == "/broken":
        return 503, {"error": "down"}
    return 404, {"error": "not found"}


def test_the_on_host_runner_sends_every_round_and_judges_each_answer(json_server: Any) -> None:
    url = json_server(_app)
    flows = parse_flows(
        [
            {"name": "health", "path": "/health", "json": {"status": "healthy"}},
            {"name": "orders", "path": "/api/orders", "json_keys": ["orders.0.id"]},
            {"name": "wrong key", "path": "/api/orders", "json_keys": ["customers"]},
            {"name": "broken", "path": "/broken"},
        ]
    )
    results = {r.flow.name: r for r in run_smoke(testinfra.get_host("local://"), "local", url, flows, 3)}
    assert [r.runs for r in results.values()] == [3, 3, 3, 3]
    assert results["health"].passed and results["orders"].passed
    assert "3/3 ok" in results["health"].detail() and "GET /health" in results["health"].detail()
    wrong = results["wrong key"]
    assert not wrong.passed and "no 'customers' in the JSON body" in wrong.detail()
    assert results["broken"].problems == ("HTTP 503, expected 200",) * 3
    assert "3 of 3 failed" in results["broken"].detail()


def test_a_flow_against_nothing_listening_fails_with_the_reason() -> None:
    [result] = run_smoke(testinfra.get_host("local://"), "local", "http://127.0.0.1:9", [Flow("h", "/")], 2)
    assert not result.passed and result.runs == 2 and "no answer" in result.problems[0]


# --- no data is unknown ---------------------------------------------------------------------------------

PROM: dict[str, Any] = {}


def _monitoring(path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
    if path == "/api/v1/query":
        expr = query["query"][0]
        PROM.setdefault("asked", []).append(expr)
        if expr.startswith("sum(rate(sergas_http_requests_total["):  # the ratio's denominator alone
            value = PROM.get("total")
        else:
            value = PROM["ratio"] if "status=~" in expr else PROM["p95"]
        result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
    if path == "/api/v2/alerts":
        return 200, []
    return 404, {"status": "error", "error": "not found"}


@pytest.mark.parametrize("ratio, p95", [(None, None), ("NaN", "NaN"), (None, 0.05)])
def test_no_requests_in_the_window_is_unknown_and_not_a_pass(json_server: Any, ratio: Any, p95: Any) -> None:
    url = json_server(_monitoring)
    PROM.clear()
    PROM.update(ratio=ratio, p95=p95)
    checks = {c.name: c for c in monitoring_checks(Settings(prometheus_url=url, alertmanager_url=url))}
    ratio_check = checks["5xx ratio < 1%"]
    assert ratio_check.status == "unknown" and not ratio_check.passed
    assert "no data" in ratio_check.detail
    assert not passed(checks.values())
    lines = checks_table(list(checks.values()))
    assert any(" UNKNOWN " in line and "5xx ratio" in line for line in lines)
    assert not any("PASS" in line and "5xx ratio" in line for line in lines)


def test_traffic_without_a_single_5xx_is_zero_not_unknown(json_server: Any) -> None:
    """A freshly started app has no 5xx counters: the ratio's numerator is empty, but there was traffic."""
    url = json_server(_monitoring)
    PROM.clear()
    PROM.update(ratio=None, p95=0.01, total=0.7)
    checks = {c.name: c for c in monitoring_checks(Settings(prometheus_url=url, alertmanager_url=url))}
    ratio = checks["5xx ratio < 1%"]
    assert ratio.status == "pass" and "0.00% over 30s (no 5xx answers)" in ratio.detail
    assert "sum(rate(sergas_http_requests_total[30s]))" in PROM["asked"]
    PROM.update(total=0.0)  # 0/0: nothing answered at all
    checks = {c.name: c for c in monitoring_checks(Settings(prometheus_url=url, alertmanager_url=url))}
    assert checks["5xx ratio < 1%"].status == "unknown"
    assert denominator("a / (b / c)") == "(b / c)" and denominator('x{p="/a"}') is None


def test_check_status_is_consistent() -> None:
    assert Check("a", "h", True, "").status == "pass" and Check("a", "h", False, "").status == "fail"
    unknown = Check.unknown("a", "h", "no data")
    assert unknown.as_dict() == {
        "name": "a",
        "host": "h",
        "passed": False,
        "detail": "no data",
        "status": "unknown",
    }
    with pytest.raises(ValueError):
        Check("a", "h", True, "", "unknown")
    assert not passed([Check("a", "h", True, ""), unknown])


def test_verify_sends_the_flows_before_measuring(json_server: Any, tmp_path: Path) -> None:
    """run_checks on an app host (local backend) runs its flows N times, and the monitoring checks say so."""
    app = json_server(_app)
    monitoring = json_server(_monitoring)
    PROM.update(ratio=0.0, p95=0.01)
    inventory = tmp_path / "inv.yml"
    flows = [{"name": "orders", "path": "/api/orders", "json_keys": ["orders"]}]
    hostvars = {
        "ansible_connection": "local",
        "collector_app_url": app,
        "collector_smoke_flows": flows,
        "collector_smoke_rounds": 4,
    }
    inventory.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": {"web": hostvars}}}}}))
    settings = Settings(prometheus_url=monitoring, alertmanager_url=monitoring)
    checks = {c.name: c for c in run_checks(load_inventory(str(inventory)), ["web"], settings)}
    assert checks["flow: orders"].passed and "4/4 ok" in checks["flow: orders"].detail
    assert checks["5xx ratio < 1%"].passed and "verify sent 4 requests" in checks["5xx ratio < 1%"].detail
    assert checks["/health healthy"].passed


def test_the_report_shows_an_unknown_check_as_unknown() -> None:
    from collector.report.data import _check

    assert _check(Check.unknown("p95 < 200 ms", "monitoring", "no data").as_dict())["result"] == "UNKNOWN"
    assert _check(Check("SELECT 1", "db1", False, "rc 2").as_dict())["result"] == "FAIL"
    assert _check({"name": "old record", "passed": True})["result"] == "pass"  # written before `status`
