"""nginx in front of the app: its upstream errors (502/504 in the access log; connect() failed, upstream timed
out, no live upstreams in the error log) as triage reads them, from real nginx 1.22 log lines."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from triage_synth import findings_by_rule, healthy, make_bundle

from collector.triage import triage_bundle
from collector.triage.parsers import parse_time

# As nginx 1.22 wrote them on app1 with the app stopped (lab/app/files/nginx-sergas.conf's format), the
# bundle's run started 2026-11-28T06:00:00Z with --since 10m.
ACCESS_502 = (
    '10.203.57.1 - - [28/Nov/2026:05:58:01 +0000] "GET /api/orders HTTP/1.1" 502 157 "-" '
    '"python-httpx/0.27.0" rt=0.000 us="502" urt="0.000" ua="127.0.0.1:8000"'
)
ACCESS_502_NO_LIVE = (
    '10.203.57.1 - - [28/Nov/2026:05:58:02 +0000] "GET /api/customers/7 HTTP/1.1" 502 157 "-" '
    '"python-httpx/0.27.0" rt=0.000 us="-" urt="-" ua="sergas_app"'
)
ACCESS_504 = (
    '10.203.57.1 - - [28/Nov/2026:05:59:40 +0000] "POST /api/orders HTTP/1.1" 504 167 "-" "curl/7.88.1" '
    'rt=30.002 us="504" urt="30.002" ua="127.0.0.1:8000"'
)
ERROR_REFUSED = (
    "2026/11/28 05:58:01 [error] 381#381: *12 connect() failed (111: Connection refused) while connecting to "
    'upstream, client: 10.203.57.1, server: _, request: "GET /api/orders HTTP/1.1", '
    'upstream: "http://127.0.0.1:8000/api/orders", host: "10.203.57.11"'
)
ERROR_NO_LIVE = (
    "2026/11/28 05:58:02 [error] 381#381: *13 no live upstreams while connecting to upstream, client: "
    '10.203.57.1, server: _, request: "GET /api/customers/7 HTTP/1.1", upstream: '
    '"http://sergas_app/api/customers/7", host: "10.203.57.11"'
)
ERROR_TIMED_OUT = (
    "2026/11/28 05:59:40 [error] 382#382: *20 upstream timed out (110: Connection timed out) while reading "
    'response header from upstream, client: 10.203.57.1, server: _, request: "POST /api/orders HTTP/1.1", '
    'upstream: "http://127.0.0.1:8000/api/orders", host: "10.203.57.11"'
)
ERROR_OTHER = (
    '2026/11/28 05:57:00 [error] 381#381: *2 open() "/usr/share/nginx/html/favicon.ico" failed '
    '(2: No such file or directory), client: 10.203.57.1, server: _, request: "GET /favicon.ico HTTP/1.1"'
)

_APP_DOWN_HEALTH = {
    "output": "curl: (7) Failed to connect to 127.0.0.1 port 8000: Connection refused\nHTTP 000 0.000s\n",
    "status": "failed",
    "rc": 7,
}


def _access(lines: list[str], total: int = 40, counts: str | None = None) -> str:
    if counts is None:
        by: dict[str, int] = {}
        for line in lines:
            status = line.split('" ', 1)[1][:3]
            by[status] = by.get(status, 0) + 1
        counts = " ".join(f"{k}={v}" for k, v in by.items())
    head = (
        f"# nginx access log since 2026-11-28 05:50:00 UTC: {total} requests, {len(lines)} with a 5xx or a "
        f"failed upstream ({counts}); the last {len(lines)} follow\n"
    )
    return head + "".join(f"{line}\n" for line in lines)


def _errors(lines: list[str]) -> str:
    head = f"# nginx error log since 2026-11-28 05:50:00 UTC: {len(lines)} lines (error={len(lines)}); "
    return head + f"the last {len(lines)} follow\n" + "".join(f"{line}\n" for line in lines)


def _nginx_502s(probes: dict[str, Any], n: int = 6) -> None:
    probes["app1"]["nginx_access_errors"] = _access([ACCESS_502] * (n - 1) + [ACCESS_502_NO_LIVE])
    probes["app1"]["nginx_error_log"] = _errors([ERROR_OTHER, ERROR_REFUSED, ERROR_NO_LIVE])


def _triage(tmp_path: Path, probes: dict[str, Any]) -> dict[str, Any]:
    findings = triage_bundle(make_bundle(tmp_path, probes))
    return findings.to_dict() | {"rules": findings.rules}


def test_nginx_stamps_are_read_as_utc_instants() -> None:
    assert parse_time(ACCESS_502) == dt.datetime(2026, 11, 28, 5, 58, 1, tzinfo=dt.UTC)
    assert parse_time(ERROR_TIMED_OUT) == dt.datetime(2026, 11, 28, 5, 59, 40, tzinfo=dt.UTC)
    # the line's own zone counts, and an ISO date in the URL does not
    shifted = '1.2.3.4 - - [28/Nov/2026:07:58:01 +0200] "GET /x?at=2020-01-01T00:00:00Z HTTP/1.1" 502 1'
    assert parse_time(shifted) == dt.datetime(2026, 11, 28, 5, 58, 1, tzinfo=dt.UTC)


def test_app_down_explains_nginx_502s_and_its_upstream_errors(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["app_health"] = _APP_DOWN_HEALTH
    _nginx_502s(probes)
    doc = _triage(tmp_path, probes)
    by = findings_by_rule(doc)
    (upstream,) = by["nginx-upstream-errors"]
    assert upstream["severity"] == "P1" and upstream["basis"] == "history" and not upstream["recovered"]
    assert "nginx answered 6 of 40 requests" in upstream["message"]
    assert "6 × 502" in upstream["message"] and "most on /api/orders" in upstream["message"]
    assert upstream["evidence"][0]["excerpt"].startswith("10.203.57.1 - - [28/Nov/2026:05:58:01 +0000]")
    assert upstream["evidence"][0]["probe"] == "nginx_access_errors"
    (failures,) = by["nginx-upstream-failures"]
    assert failures["severity"] == "P1"
    assert "2 upstream error(s)" in failures["message"]  # the favicon line is not an upstream error
    assert "connect() failed × 1" in failures["message"] and "no live upstreams × 1" in failures["message"]
    # the live finding comes first and carries nginx's lines as its context
    (app_down,) = by["app-down"]
    assert doc["findings"][0]["rule"] == "app-down" and doc["severity"] == "P0"
    assert {"nginx-upstream-errors", "nginx-upstream-failures"} <= set(app_down["context"])
    assert "nginx-down" not in by and doc["rules"]["nginx-down"] == "passed"


def test_nginx_errors_alone_have_recovered_and_say_when_the_last_was(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["nginx_access_errors"] = _access([ACCESS_502] * 5 + [ACCESS_504])
    probes["app1"]["nginx_error_log"] = _errors([ERROR_REFUSED, ERROR_TIMED_OUT])
    doc = _triage(tmp_path, probes)
    by = findings_by_rule(doc)
    (upstream,) = by["nginx-upstream-errors"]
    assert upstream["severity"] == "P3" and upstream["recovered"] is True
    assert upstream["message"].startswith("recovered: 6 event(s) in the window, the last at 05:59 UTC")
    assert "5 × 502, 1 × 504" in upstream["message"]
    (failures,) = by["nginx-upstream-failures"]
    assert failures["severity"] == "P3" and "the last at 05:59 UTC" in failures["message"]
    assert "upstream timed out × 1" in failures["message"]
    assert doc["severity"] == "P3"


def test_the_count_line_counts_past_the_lines_shown(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["app_health"] = _APP_DOWN_HEALTH
    shown = _access([ACCESS_502] * 3, total=9000, counts="502=4100 504=20 500=7")
    probes["app1"]["nginx_access_errors"] = shown
    doc = _triage(tmp_path, probes)
    (upstream,) = findings_by_rule(doc)["nginx-upstream-errors"]
    assert "nginx answered 4120 of 9000 requests" in upstream["message"]
    assert "4100 × 502, 20 × 504" in upstream["message"] and "500" not in upstream["message"].split("(")[1]


def test_a_few_502s_or_an_app_500_are_not_nginx_upstream_errors(tmp_path: Path) -> None:
    probes = healthy()
    app_500 = ACCESS_502.replace('" 502 157', '" 500 21').replace('us="502"', 'us="500"')
    probes["app1"]["nginx_access_errors"] = _access([ACCESS_502] * 4 + [app_500] * 30)
    doc = _triage(tmp_path, probes)
    assert doc["rules"]["nginx-upstream-errors"] == "passed"
    assert doc["rules"]["nginx-upstream-failures"] == "passed"


def test_nginx_down_is_live_and_says_what_nginx_t_says(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["nginx_status"] = {
        "output": "× nginx.service - A high performance web server and a reverse proxy server\n"
        "     Loaded: loaded (/lib/systemd/system/nginx.service; enabled; preset: enabled)\n"
        "     Active: failed (Result: exit-code) since Sat 2026-11-28 05:58:00 UTC; 2min ago\n\n"
        'nginx: [emerg] unknown directive "proxy_passs" in /etc/nginx/sites-enabled/sergas:24\n'
        "nginx: configuration file /etc/nginx/nginx.conf test failed\n",
        "status": "ok",
        "rc": 1,
    }
    doc = _triage(tmp_path, probes)
    (down,) = findings_by_rule(doc)["nginx-down"]
    assert down["severity"] == "P1" and down["basis"] == "live" and down["down"] is True
    assert "nginx is failed (Result: exit-code) (configuration test FAILED)" in down["message"]


def test_a_host_without_nginx_has_nothing_to_judge(tmp_path: Path) -> None:
    probes = healthy()
    unset = "host var not set: collector_nginx_"
    skipped = {"output": "", "status": "skipped", "rc": None, "error": unset + "service"}
    probes["app1"]["nginx_status"] = skipped
    probes["app1"]["nginx_access_errors"] = skipped | {"error": unset + "access_log"}
    probes["app1"]["nginx_error_log"] = {"output": "", "status": "not_found", "rc": 127, "error": "no nginx"}
    doc = _triage(tmp_path, probes)
    for rule in ("nginx-down", "nginx-upstream-errors", "nginx-upstream-failures"):
        assert doc["rules"][rule] == "passed", rule
    assert [u for u in doc["unknown"] if u["rule"].startswith("nginx")] == []


def test_an_unreadable_nginx_log_is_unknown_not_passed(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["nginx_error_log"] = {
        "output": "no nginx error log at /var/log/nginx/error.log\n",
        "status": "failed",
        "rc": 2,
        "error": "exit 2",
    }
    doc = _triage(tmp_path, probes)
    assert doc["rules"]["nginx-upstream-failures"] == "unknown"
    reason = next(u["reason"] for u in doc["unknown"] if u["rule"] == "nginx-upstream-failures")
    assert "no nginx error log at /var/log/nginx/error.log" in reason
