"""Every probe is read: CPU (top), I/O (iostat), load against cores (uptime), database size and growth,
5xx by endpoint, and the runbook's circuit breaker from Prometheus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from triage_synth import findings_by_rule, healthy, healthy_monitoring, make_bundle

from collector.triage import parsers as p
from collector.triage import triage_bundle

TOP_TWO = """top - 18:39:43 up  1:47,  0 user,  load average: 2.97, 2.17, 1.75
%Cpu(s):  0.0 us,  0.0 sy,  0.0 ni,100.0 id,  0.0 wa,  0.0 hi,  0.0 si,  0.0 st
top - 18:39:44 up  1:47,  0 user,  load average: 2.97, 2.17, 1.75
%Cpu(s): 61.5 us, 33.0 sy,  0.0 ni,  2.5 id,  3.0 wa,  0.0 hi,  0.0 si,  0.0 st
"""
IOSTAT_OLD = (
    "Device:         rrqm/s   wrqm/s     r/s     w/s    rkB/s    wkB/s avgrq-sz avgqu-sz   await "
    "r_await w_await  svctm  %util\n"
    "sda               0.00     3.00    1.00  250.00     4.00  9000.00    71.7    12.50  180.25   2.00  "
    "181.00   3.90  97.60\n"
)


def _triage(
    tmp_path: Path, probes: dict[str, Any], monitoring: dict[str, Any] | None = None
) -> dict[str, Any]:
    return triage_bundle(make_bundle(tmp_path, probes, monitoring), seal=False).to_dict()


def test_top_cpu_takes_the_measured_iteration() -> None:
    cpu = p.parse_top_cpu(TOP_TWO)
    assert cpu is not None and (cpu.busy_pct, cpu.iowait_pct, cpu.line) == (97.5, 3.0, 4)
    assert p.parse_top_cpu("no cpu here\n") is None


def test_iostat_new_and_old_columns() -> None:
    (old,) = p.parse_iostat(IOSTAT_OLD)
    assert (old.name, old.util_pct, old.await_ms, old.line) == ("sda", 97.6, 181.0, 2)
    new = p.parse_iostat(healthy()["app1"]["iostat"])  # type: ignore[arg-type]
    assert [(d.name, d.util_pct, d.await_ms) for d in new] == [("vda", 0.4, 0.8)]


def test_uptime_with_cores_and_counted_lines() -> None:
    load = p.parse_uptime(" 18:39:43 up  1:47,  0 user,  load average: 2.97, 2.17, 1.75\ncores: 2\n")
    assert load is not None and (load.load1, load.load5, load.cores) == (2.97, 2.17, 2)
    assert p.parse_uptime("up 3 days\n") is None
    rows = p.parse_counted("     12 500 /api/orders\n      3 502 /api/zoho/sync\n")
    assert [(r.count, r.text) for r in rows] == [(12, "500 /api/orders"), (3, "502 /api/zoho/sync")]


def test_cpu_load_and_io_saturation_are_live_findings(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["top"] = TOP_TWO
    probes["db1"]["iostat"] = IOSTAT_OLD
    probes["db1"]["uptime"] = " 18:39:43 up  1:47,  0 user,  load average: 5.10, 2.17, 1.75\ncores: 2\n"
    doc = _triage(tmp_path, probes)
    by = findings_by_rule(doc)
    (cpu,) = by["cpu-saturated"]
    assert cpu["severity"] == "P3" and cpu["basis"] == "live" and cpu["hosts"] == ["db1"]
    assert "CPU 97.5 % busy (iowait 3.0 %" in cpu["message"]
    (io,) = by["disk-io-saturated"]
    assert "sda is 97.6 % utilised, await up to 181.0 ms" in io["message"]
    (load,) = by["load-over-cores"]
    assert load["severity"] == "P3" and "1-minute load 5.1 on 2 core(s) (2.55 per core" in load["message"]
    figures = doc["figures"]
    assert figures["cpu_busy_pct"]["db1"] == 97.5 and figures["cpu_busy_pct"]["app1"] == 4.6
    assert figures["load_per_core"]["db1"] == 2.55 and figures["io_util_max_pct"]["db1"] == 97.6
    assert figures["io_await_max_ms"]["db1"] == 181.0


def test_load_without_cores_is_unknown_not_a_pass(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["uptime"] = " 06:00:00 up 1:00,  0 users,  load average: 9.10, 0.12, 0.09\n"
    doc = triage_bundle(make_bundle(tmp_path, probes), seal=False)
    assert doc.rules["load-over-cores"] == "unknown"
    assert "cores was not collected" in next(u.reason for u in doc.unknown if u.rule == "load-over-cores")


def test_5xx_by_endpoint_is_context_on_the_live_5xx_ratio(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["http_5xx_by_path"] = "     40 500 /api/orders\n      2 502 /api/zoho/sync\n"
    monitoring = healthy_monitoring()
    monitoring["error_ratio"] = json.dumps({"kind": "instant", "value": 0.3, "result": [], "error": None})
    doc = _triage(tmp_path, probes, monitoring)
    by = findings_by_rule(doc)
    (endpoint,) = by["endpoint-5xx"]
    assert endpoint["title"] == "5xx concentrated on one endpoint in the last hour: /api/orders"
    assert "40 responses 500 on /api/orders in the last hour (95.2 % of its 42 5xx)" in endpoint["message"]
    assert endpoint["basis"] == "history" and not endpoint["recovered"]
    assert "endpoint-5xx" in by["high-5xx-ratio"][0]["context"]


def test_database_size_and_growth_against_the_previous_bundle_of_the_same_hosts(tmp_path: Path) -> None:
    first = make_bundle(tmp_path, healthy())
    assert triage_bundle(first, seal=False).figures.pg_db_growth_bytes == {"db1": None}  # nothing to compare
    probes = healthy()
    probes["db1"]["pg_db_size"] = (
        "datname|bytes|size\nsergas|209715200|200 MB\npostgres|7500000|7324 kB\n(2 rows)\n"
    )
    import triage_synth

    later = triage_synth.STARTED
    triage_synth.STARTED = "2026-11-28T07:00:00.000Z"
    try:
        second = make_bundle(tmp_path / "x", probes)
        second = second.rename(tmp_path / "inc-later")  # beside the first, as collect's out dir holds them
    finally:
        triage_synth.STARTED = later
    figures = triage_bundle(second, seal=False).figures
    assert figures.pg_db_bytes == {"db1": 209715200 + 7500000}
    assert figures.pg_db_growth_bytes == {"db1": 104857600}


def test_the_circuit_breaker_from_prometheus_joins_the_rate_limiting_finding(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["service_journal"] = "".join(
        f"2026-11-28T05:59:{i:02d}+0000 app1 sergas-app[1]: WARNING: zoho upstream status=429 rate limit "
        "exceeded\n"
        for i in range(5)
    )
    probes["app1"]["circuit_breaker"] = {"output": "", "status": "failed", "rc": 7}
    probes["app1"]["app_metrics"] = {"output": "", "status": "failed", "rc": 7}
    monitoring = healthy_monitoring()
    monitoring["circuit_breaker_state"] = json.dumps(
        {"kind": "instant", "value": 1.0, "result": [], "error": None}
    )
    doc = _triage(tmp_path, probes, monitoring)
    by = findings_by_rule(doc)
    (breaker,) = by["zoho-breaker-open"]
    assert breaker["severity"] == "P2" and breaker["basis"] == "live"
    assert "sergas_zoho_circuit_breaker_state is 1.0 in Prometheus" in breaker["message"]
    assert breaker["evidence"][0]["probe"] == "circuit_breaker_state"
    assert "rate-limited" in breaker["context"]
    assert by["rate-limited"][0]["severity"] == "P2" and not by["rate-limited"][0]["recovered"]
    assert doc["findings"][0]["rule"] == "zoho-breaker-open"


def test_zoho_calls_still_refused_keep_rate_limiting_live_while_the_breaker_is_closed(tmp_path: Path) -> None:
    """The breaker closes on the first call that gets through; the last 2 minutes' 429s still say now."""
    probes = healthy()
    probes["app1"]["service_journal"] = "".join(
        f"2026-11-28T05:59:{i:02d}+0000 app1 sergas-app[1]: ERROR: zoho sync failed: upstream rate limit "
        "exceeded (HTTP 429 Too Many Requests)\n"
        for i in range(5)
    )
    monitoring = healthy_monitoring()
    monitoring["zoho_throttled_2m"] = _instant(14.0)
    doc = _triage(tmp_path, probes, monitoring)
    by = findings_by_rule(doc)
    (now,) = by["zoho-throttled-now"]
    assert now["severity"] == "P2" and now["basis"] == "live" and now["message"].startswith("14")
    assert now["evidence"][0]["probe"] == "zoho_throttled_2m"
    assert by["rate-limited"][0]["severity"] == "P2" and not by["rate-limited"][0]["recovered"]
    # the same lines with no refused call in the last 2 minutes: over, history
    monitoring["zoho_throttled_2m"] = _instant(0.0)
    again = findings_by_rule(_triage(tmp_path / "again", probes, monitoring))
    assert "zoho-throttled-now" not in again
    assert again["rate-limited"][0]["severity"] == "P3" and again["rate-limited"][0]["recovered"]


def _instant(value: float) -> str:
    return json.dumps({"kind": "instant", "value": value, "result": [], "error": None})
