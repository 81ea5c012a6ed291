"""Unit tests of the pure probe-output parsers (collector.triage.parsers)."""

from __future__ import annotations

import datetime as dt
import json

from collector.triage import parsers as p


def test_df_posix_and_inodes_tables() -> None:
    text = (
        "Filesystem     Type 1024-blocks    Used Available Capacity Mounted on\n"
        "/dev/vda       ext4   1000   950   50      95% /\n"
        "/dev/loop3     ext4   100   100    0     100% /var/lib/sergas data\n"
        "\n"
        "Filesystem     Inodes IUsed IFree IUse% Mounted on\n"
        "/dev/vda       1000   920   80   92% /\n"
    )
    rows = p.parse_df(text)
    space = [r for r in rows if not r.inodes]
    inodes = [r for r in rows if r.inodes]
    assert [(r.mount, r.used_pct, r.line) for r in space] == [
        ("/", 95.0, 2),
        ("/var/lib/sergas data", 100.0, 3),
    ]
    assert [(r.mount, r.used_pct) for r in inodes] == [("/", 92.0)]


def test_df_human_wrapped_device_and_dash_percent() -> None:
    text = (
        "Filesystem      Size  Used Avail Use% Mounted on\n"
        "/dev/mapper/very-long-volume-name\n"
        "                 20G   19G  1.0G  95% /srv\n"
        "none               0     0     0    - /sys/fs/x\n"
    )
    rows = p.parse_df(text)
    assert [(r.filesystem, r.mount, r.used_pct, r.line) for r in rows] == [
        ("/dev/mapper/very-long-volume-name", "/srv", 95.0, 3)
    ]


def test_free_bytes_and_human_units_agree() -> None:
    raw = (
        "               total        used        free      shared  buff/cache   available\n"
        "Mem:      1000000000   700000000   100000000           0   200000000   250000000\n"
        "Swap:      500000000   400000000   100000000\n"
    )
    human = (
        "               total        used        free      shared  buff/cache   available\n"
        "Mem:           953Mi       667Mi        95Mi          0B       190Mi       238Mi\n"
        "Swap:          476Mi       381Mi        95Mi\n"
    )
    a, b = p.parse_free(raw), p.parse_free(human)
    assert a is not None and b is not None
    assert round(a.mem_used_pct, 1) == 75.0  # total - available, not "used"
    assert abs(a.mem_used_pct - b.mem_used_pct) < 0.5
    assert round(a.swap_used_pct) == 80 and a.swap_line == 3


def test_free_without_mem_line_is_none() -> None:
    assert p.parse_free("") is None
    assert p.parse_free("free: command not found\n") is None


def test_psql_unaligned_two_queries_with_footers() -> None:
    text = (
        "state|connections|max_connections\nidle|95|100\nactive|2|100\n(2 rows)\n"
        "total|max_connections|used_pct\n97|100|97.0\n(1 row)\n"
    )
    tables = p.parse_psql_tables(text)
    assert len(tables) == 2
    assert [r.get("state") for r in tables[0]] == ["idle", "active"]
    assert tables[1][0].get("total") == "97" and tables[1][0].line == 6


def test_psql_empty_result_and_aligned_output() -> None:
    assert p.parse_psql("pid|usename|running_s\n(0 rows)\n") == []
    aligned = (
        " pid  | state  | running_s \n------+--------+-----------\n 4242 | active |      12.5\n(1 row)\n"
    )
    rows = p.parse_psql(aligned)
    assert len(rows) == 1 and rows[0].get("pid") == "4242" and rows[0].get("running_s") == "12.5"
    assert rows[0].line == 3


def test_psql_tuples_only_is_positional() -> None:
    rows = p.parse_psql("42\n")
    assert rows[0].get("x", index=0) == "42"


def test_redis_info_crlf_and_config_get_pairs() -> None:
    info = p.parse_redis_info("# Memory\r\nused_memory:1048576\r\nmaxmemory:2097152\r\n")
    assert info["used_memory"] == ("1048576", 2) and info["maxmemory"][0] == "2097152"
    cfg = p.parse_redis_info("maxmemory\n67108864\nmaxmemory-policy\nallkeys-lru\n")
    assert cfg["maxmemory"] == ("67108864", 2) and cfg["maxmemory_policy"][0] == "allkeys-lru"


def test_parse_time_formats() -> None:
    utc = dt.UTC
    assert p.parse_time("2026-11-28T05:40:01+0000 app1 x: ERROR") == dt.datetime(
        2026, 11, 28, 5, 40, 1, tzinfo=utc
    )
    assert p.parse_time("2026-11-28T07:40:01+02:00") == dt.datetime(2026, 11, 28, 5, 40, 1, tzinfo=utc)
    assert p.parse_time("[Sat Nov 28 05:40:01 2026] Killed process 1") == dt.datetime(
        2026, 11, 28, 5, 40, 1, tzinfo=utc
    )
    assert p.parse_time("Nov 28 05:40:01 app1 kernel: x", 2026) == dt.datetime(
        2026, 11, 28, 5, 40, 1, tzinfo=utc
    )
    assert p.parse_time("no time here") is None


def test_grep_and_journal_noise() -> None:
    text = "-- No entries --\nx ERROR: boom\nfine\n"
    hits = [ln for ln in p.grep(text, "error|entries") if not p.is_journal_noise(ln.text)]
    assert [(h.number, h.text) for h in hits] == [(2, "x ERROR: boom")]


def test_git_log_catalogue_format_and_default_format() -> None:
    text = (
        "9f9f9f9 2026-11-28T05:50:00+00:00 Lab Bot (HEAD, tag: v1.1.0) Release 1.1.0\n"
        "1a2b3c4 2026-11-28T04:00:00+00:00 Lab Bot (tag: v1.0.0, main) Release 1.0.0\n\nv1.1.0\n"
    )
    entries = p.parse_git_log(text)
    assert [e.tags for e in entries] == [("v1.1.0",), ("v1.0.0",)]
    assert entries[0].when == dt.datetime(2026, 11, 28, 5, 50, tzinfo=dt.UTC)
    default = (
        "commit 9f9f9f9aaaa (HEAD -> main, tag: v2)\nAuthor: A <a@b>\n"
        "Date:   Sat Nov 28 05:50:00 2026 +0100\n\n    msg\n"
    )
    (entry,) = p.parse_git_log(default)
    assert entry.tags == ("v2",) and entry.line == 1
    assert entry.when == dt.datetime(2026, 11, 28, 4, 50, tzinfo=dt.UTC)


def test_health_json_after_curl_status_line() -> None:
    text = (
        json.dumps({"status": "unhealthy", "checks": {"database": {"status": "error"}, "redis": "ok"}})
        + "\nHTTP 503 0.01s\n"
    )
    health = p.parse_health(text)
    assert health is not None and not health.healthy and health.failing == ("database",)
    assert p.parse_health("curl: (7) Failed to connect\n") is None


def test_metrics_exposition() -> None:
    text = (
        '# HELP x\nsergas_http_requests_total{path="/a",status="500"} 12\n'
        'sergas_zoho_circuit_breaker_state{name="zoho"} 1\ngarbage line\n'
    )
    samples = p.parse_metrics(text)
    assert [(s.name, s.labels, s.value, s.line) for s in samples] == [
        ("sergas_http_requests_total", {"path": "/a", "status": "500"}, 12.0, 2),
        ("sergas_zoho_circuit_breaker_state", {"name": "zoho"}, 1.0, 3),
    ]


def test_prometheus_answers_raw_and_shaped() -> None:
    raw = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.25"]}]},
    }
    assert p.prom_scalar(raw) == 0.25
    assert p.prom_scalar({"status": "success", "data": {"resultType": "vector", "result": []}}) is None
    assert p.prom_scalar({"kind": "instant", "value": 0.5}) == 0.5
    assert p.prom_scalar({"kind": "instant", "value": None}) is None  # NaN / no traffic
    assert p.prom_scalar({"kind": "instant", "value": "NaN"}) is None


def test_alerts_v2_list_and_shaped_document() -> None:
    v2 = [
        {
            "labels": {"alertname": "AppDown", "severity": "critical"},
            "status": {"state": "active"},
            "annotations": {"summary": "app down"},
            "startsAt": "2026-11-28T05:00:00Z",
        },
        {"labels": {"alertname": "Quiet"}, "status": {"state": "suppressed"}},
    ]
    alerts = p.parse_alerts(v2)
    assert [(a.name, a.severity, a.summary) for a in alerts] == [("AppDown", "critical", "app down")]
    shaped = {
        "alerts": [
            {
                "name": "HighP95",
                "state": "active",
                "severity": "warning",
                "summary": "slow",
                "labels": {"alertname": "HighP95", "severity": "warning"},
            }
        ]
    }
    assert [(a.name, a.severity) for a in p.parse_alerts(shaped)] == [("HighP95", "warning")]
    assert p.parse_alerts("not a list") == []


def test_systemctl_status_and_ps() -> None:
    unit = p.parse_systemctl_status(
        "● x.service\n     Active: failed (Result: exit-code) since Sat 2026-11-28 05:00:00 UTC; 1min ago\n"
    )
    assert unit is not None and unit.active == "failed" and unit.line == 2
    assert unit.since == dt.datetime(2026, 11, 28, 5, 0, tzinfo=dt.UTC)
    assert p.parse_systemctl_status("Unit x.service could not be found.\n") is None
    procs = p.parse_ps("  PID  PPID USER %CPU %MEM   RSS COMMAND\n  1 0 root 0.0 55.5 1024 hog --big\n")
    assert procs[0].mem_pct == 55.5 and procs[0].rss == 1024 * 1024


def test_decode_non_utf8_is_replaced_not_fatal() -> None:
    assert p.decode(b"ok \xff\xfe line\n") == "ok \ufffd\ufffd line\n"
    assert p.decode(None) == ""
