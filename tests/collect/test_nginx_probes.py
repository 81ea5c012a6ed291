"""The shipped nginx probes run for real by the probe runner over nginx log files: the --since window in the
line's own zone, the rotated file, the bound with its count line, and hosts without nginx."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from test_probe_runner import output, run_runner

from collector.probes import load_entries

NGINX = ("nginx_status", "nginx_error_log", "nginx_access_errors")


def _run(tmp_path: Path, monkeypatch: Any, tz: str = "UTC", **hostvars: str) -> dict[str, Any]:
    monkeypatch.setenv("TZ", tz)  # the runner and its probes inherit it, as on a host in that zone
    values = {
        "collector_nginx_service": "nginx",
        "collector_nginx_access_log": str(tmp_path / "access.log"),
        "collector_nginx_error_log": str(tmp_path / "error.log"),
    } | hostvars
    entries = [e for e in load_entries() if e["name"] in NGINX]
    return run_runner(entries, values, ("app",), timeout=20)["by_name"]


def _clf(minutes_ago: float, tz: str = "UTC") -> str:
    when = dt.datetime.now(ZoneInfo(tz)) - dt.timedelta(minutes=minutes_ago)
    return when.strftime("%d/%b/%Y:%H:%M:%S %z")


def _iso(minutes_ago: float, tz: str = "UTC") -> str:
    return (dt.datetime.now(ZoneInfo(tz)) - dt.timedelta(minutes=minutes_ago)).isoformat(timespec="seconds")


def _local(minutes_ago: float, tz: str) -> str:
    return (dt.datetime.now(ZoneInfo(tz)) - dt.timedelta(minutes=minutes_ago)).strftime("%Y/%m/%d %H:%M:%S")


def _req(stamp: str, status: int, path: str = "/api/orders", upstream: str | None = None) -> str:
    us = upstream or str(status)
    return (
        f'10.203.57.1 - - [{stamp}] "GET {path} HTTP/1.1" {status} 157 "-" "curl/7.88.1" '
        f'rt=0.001 us="{us}" urt="0.001" ua="127.0.0.1:8000"'
    )


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _lines(result: dict[str, Any]) -> list[str]:
    assert result["status"] == "ok", result
    return output(result).decode().splitlines()


def test_access_errors_keep_the_windows_5xx_in_utc_and_in_the_hosts_zone(
    tmp_path: Path, monkeypatch: Any
) -> None:
    for tz in ("UTC", "Asia/Tokyo", "America/New_York"):
        log = [
            _req(_clf(40, tz), 502),  # before the 10-minute window, in the host's zone
            _req(_clf(40), 504),  # before it, in UTC
            _req(_clf(3, tz), 200),
            _req(_clf(3, tz), 404),
            _req(_clf(2, tz), 502),
            _req(_clf(2), 504, "/api/customers"),
            "10.203.57.1 - - [" + _iso(1, tz) + '] "GET /iso HTTP/1.1" 503 0 "-" "-"',  # $time_iso8601
            _req(_clf(1, tz), 200, "/retried", upstream="502, 200"),  # a failed upstream, then a good one
            _req(_clf(40, "Europe/Kyiv"), 500),  # another zone than UTC and the host's: kept
        ]
        _write(tmp_path / "access.log", log)
        kept = _lines(_run(tmp_path, monkeypatch, tz)["nginx_access_errors"])
        assert kept[1:] == [log[4], log[5], log[6], log[7], log[8]], tz
        head = kept[0]
        assert head.startswith("# nginx access log since ") and " UTC: 7 requests, 5 with a 5xx" in head, head
        for count in ("502=1", "504=1", "503=1", "500=1", "upstream5xx=1"):
            assert count in head, (tz, head)


def test_error_log_keeps_the_window_in_the_hosts_local_time(tmp_path: Path, monkeypatch: Any) -> None:
    for tz in ("UTC", "Asia/Tokyo"):
        refused = "connect() failed (111: Connection refused) while connecting to upstream, client: 10.0.0.1"
        log = [
            f'{_local(40, tz)} [error] 381#381: *1 {refused}, server: _, request: "GET / HTTP/1.1"',
            f'{_local(2, tz)} [error] 381#381: *7 {refused}, server: _, request: "GET /api/orders HTTP/1.1"',
            f"{_local(1, tz)} [crit] 381#381: *9 no live upstreams while connecting to upstream",
        ]
        _write(tmp_path / "error.log", log)
        kept = _lines(_run(tmp_path, monkeypatch, tz)["nginx_error_log"])
        assert kept[1:] == log[1:], tz
        assert " UTC: 2 lines (" in kept[0] and "error=1" in kept[0] and "crit=1" in kept[0], kept[0]


def test_the_rotated_log_is_read_while_it_holds_the_window(tmp_path: Path, monkeypatch: Any) -> None:
    _write(tmp_path / "access.log.1", [_req(_clf(50), 502), _req(_clf(4), 502, "/before-rotation")])
    _write(tmp_path / "access.log", [_req(_clf(1), 504, "/after-rotation")])
    kept = _lines(_run(tmp_path, monkeypatch)["nginx_access_errors"])
    requests = [line.split('"')[1] for line in kept[1:]]
    assert requests == ["GET /before-rotation HTTP/1.1", "GET /after-rotation HTTP/1.1"]
    # a rotated file older than the window is not read at all
    old = (dt.datetime.now() - dt.timedelta(hours=2)).timestamp()
    os.utime(tmp_path / "access.log.1", (old, old))
    assert len(_lines(_run(tmp_path, monkeypatch)["nginx_access_errors"])) == 2


def test_the_output_is_bounded_and_the_count_line_counts_every_line(tmp_path: Path, monkeypatch: Any) -> None:
    stamp = _clf(1)
    failed = [_req(stamp, 502, f"/p{i}") for i in range(2500)]
    _write(tmp_path / "access.log", failed + [_req(stamp, 200)] * 99)
    kept = _lines(_run(tmp_path, monkeypatch)["nginx_access_errors"])
    assert len(kept) == 2001  # the count line and the last 2000
    assert ": 2599 requests, 2500 with a 5xx" in kept[0] and "(502=2500)" in kept[0]
    assert "the last 2000 follow" in kept[0]
    assert "GET /p500 " in kept[1] and "GET /p2499 " in kept[-1]


def test_without_nginx_the_probes_skip_or_say_so(tmp_path: Path, monkeypatch: Any) -> None:
    by = _run(tmp_path, monkeypatch)  # the inventory names logs that are not there
    for name in ("nginx_error_log", "nginx_access_errors"):
        assert by[name]["status"] == "failed" and by[name]["rc"] == 2, by[name]
        kind = name.split("_")[1]
        assert output(by[name]).decode().startswith(f"no nginx {kind} log at {tmp_path}/"), output(by[name])
    entries = [e for e in load_entries() if e["name"] in NGINX]
    unset = run_runner(entries, {}, ("app",))["by_name"]  # the inventory names no nginx on this host
    for name in NGINX:
        assert unset[name]["status"] == "skipped" and "host var not set" in unset[name]["error"], unset[name]
