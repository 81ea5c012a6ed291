"""Rules against real (synthetic) bundles: each rule fires on its fault, stays quiet when healthy,
and turns 'unknown' (with the reason) when its probe is missing, timed out, empty or unreadable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from triage_synth import access_lines, findings_by_rule, healthy, healthy_monitoring, make_bundle

from collector.core import FINDINGS_SCHEMA, UsageError
from collector.triage import evaluate, triage_bundle
from collector.triage.engine import load_rules


def _triage(
    tmp_path: Path, probes: dict[str, Any] | None = None, monitoring: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    """Triage a synthetic bundle; the findings as findings.json holds them (these tests pin its shape),
    with the rule states as a map (findings.json lists them as pairs)."""
    findings = triage_bundle(make_bundle(tmp_path, probes, monitoring, **kw))
    return findings.to_dict() | {"rules": findings.rules}


def _prometheus(error_ratio: float = 0.0, p95: float = 0.012) -> dict[str, Any]:
    """Monitoring answers of a healthy lab, with Prometheus's current 5xx ratio and p95 set."""
    monitoring = healthy_monitoring()
    monitoring["error_ratio"] = json.dumps(
        {"kind": "instant", "value": error_ratio, "result": [], "error": None}, indent=2
    )
    monitoring["p95_latency"] = json.dumps(
        {"kind": "instant", "value": p95, "result": [], "error": None}, indent=2
    )
    return monitoring


def _unknown(doc: dict[str, Any], rule: str) -> str:
    return next(u["reason"] for u in doc["unknown"] if u["rule"] == rule)


def test_healthy_bundle_has_no_finding_and_answers_the_four_questions(tmp_path: Path) -> None:
    doc = _triage(tmp_path)
    assert doc["schema"] == FINDINGS_SCHEMA
    assert doc["severity"] == "none" and doc["findings"] == [] and doc["unknown"] == []
    q = doc["questions"]
    assert q["down_or_degraded"]["answer"] == "healthy"
    assert q["is_data_at_risk"]["answer"] == "no"
    assert q["is_it_a_security_incident"]["answer"] == "no sign"
    assert q["how_many_users_and_hosts_affected"]["answer"].startswith("0 of 3 hosts")
    assert doc["security"]["suspected"] is False
    assert set(doc["rules"].values()) <= {"passed", "not_applicable"}
    # only rules for roles this fleet has no host of (Compose) are not applicable; every other one passed
    synth_roles = {"app", "db", "redis", "all"}
    assert {r for r, s in doc["rules"].items() if s == "not_applicable"} == {
        r.id for r in load_rules() if r.roles and not set(r.roles) & synth_roles
    }
    # written into the bundle and sealed (listed in SHA256SUMS)
    bundle = tmp_path / "inc-test"
    assert json.loads((bundle / "findings.json").read_text())["severity"] == "none"
    assert "findings.json" in (bundle / "SHA256SUMS").read_text()


def test_app_down_on_every_app_host_is_p0_with_restart(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["app_health"] = {
        "output": "curl: (7) Failed to connect to 127.0.0.1 port 8000: Connection refused\nHTTP 000 0.000s\n",
        "status": "failed",
        "rc": 7,
    }
    probes["app1"]["service_status"] = {
        "output": (
            "● sergas-app.service\n     Active: inactive (dead) since Sat 2026-11-28 05:58:00 UTC; 2min ago\n"
        ),
        "status": "ok",
        "rc": 3,
    }
    doc = _triage(tmp_path, probes)
    by = findings_by_rule(doc)
    (down,) = by["app-down"]
    assert down["severity"] == "P0" and doc["severity"] == "P0"
    assert down["hosts"] == ["app1"]
    assert down["evidence"][0] == {
        "host": "app1",
        "probe": "app_health",
        "path": "hosts/app1/app_health.txt",
        "line": 1,
        "excerpt": "curl: (7) Failed to connect to 127.0.0.1 port 8000: Connection refused",
    }
    assert down["mitigation"] == {
        "action": "restart",
        "hosts": "app1",
        "params": {},
        "command": "collector remediate restart --hosts app1",
    }
    assert by["service-inactive"][0]["evidence"][0]["line"] == 2
    assert doc["questions"]["down_or_degraded"]["answer"] == "down"


def test_unhealthy_json_names_the_failing_dependency(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["app_health"] = (
        json.dumps(
            {"status": "unhealthy", "checks": {"database": {"status": "error"}, "redis": {"status": "ok"}}}
        )
        + "\nHTTP 503 0.2s\n"
    )
    doc = _triage(tmp_path, probes)
    (down,) = findings_by_rule(doc)["app-down"]
    assert "database" in down["message"] and "HTTP 503" in down["message"]


def test_app_down_only_on_one_of_two_app_hosts_is_p1(tmp_path: Path) -> None:
    probes = healthy()
    probes["app2"] = dict(probes["app1"])
    probes["app2"]["app_health"] = {
        "output": "curl: (7) Couldn't connect to server\nHTTP 000 0.000s\n",
        "status": "failed",
        "rc": 7,
    }
    from triage_synth import ROLES

    ROLES["app2"] = ("app",)
    try:
        doc = _triage(tmp_path, probes)
    finally:
        ROLES.pop("app2")
    (down,) = findings_by_rule(doc)["app-down"]
    assert down["severity"] == "P1" and down["hosts"] == ["app2"]


def test_high_5xx_ratio_from_prometheus_is_p1(tmp_path: Path) -> None:
    monitoring = healthy_monitoring()
    monitoring["error_ratio"] = json.dumps(
        {"kind": "instant", "value": 0.42, "result": [], "error": None}, indent=2
    )
    doc = _triage(tmp_path, monitoring=monitoring)
    by = findings_by_rule(doc)
    assert by["high-5xx-ratio"][0]["severity"] == "P1"
    assert (
        "elevated-5xx-ratio" not in by and doc["rules"]["elevated-5xx-ratio"] == "suppressed"
    )  # its worse twin fired
    ev = by["high-5xx-ratio"][0]["evidence"][0]
    assert ev["path"] == "monitoring/error_ratio.json" and ev["excerpt"] == "error_ratio = 0.42"
    assert "42.0 %" in by["high-5xx-ratio"][0]["message"]
    assert doc["figures"]["error_ratio"] == 0.42
    assert "42.0 %" in doc["questions"]["how_many_users_and_hosts_affected"]["answer"]


def test_access_log_5xx_ratio_needs_enough_requests(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["service_journal"] = (
        "\n".join(access_lines(30) + access_lines(10, status=500, start_min=56)) + "\n"
    )
    doc = _triage(tmp_path / "a", probes, _prometheus(error_ratio=0.25))
    (f,) = findings_by_rule(doc)["access-log-5xx-ratio"]
    assert f["severity"] == "P1" and "10 of 40" in f["message"]
    # the log alone (Prometheus sees no errors now): it happened, it is over
    (f,) = findings_by_rule(_triage(tmp_path / "c", probes))["access-log-5xx-ratio"]
    assert f["severity"] == "P3" and f["recovered"] and f["message"].startswith("recovered: 10 event(s)")
    probes["app1"]["service_journal"] = "\n".join(access_lines(5, status=500)) + "\n"
    assert "access-log-5xx-ratio" not in findings_by_rule(_triage(tmp_path / "b", probes))


def test_p95_thresholds(tmp_path: Path) -> None:
    monitoring = healthy_monitoring()
    monitoring["p95_latency"] = json.dumps({"kind": "instant", "value": 0.35}, indent=2)
    by = findings_by_rule(_triage(tmp_path / "a", monitoring=monitoring))
    assert by["high-p95-latency"][0]["severity"] == "P2" and "severe-latency" not in by
    monitoring["p95_latency"] = json.dumps({"kind": "instant", "value": 3.0}, indent=2)
    by = findings_by_rule(_triage(tmp_path / "b", monitoring=monitoring))
    assert by["severe-latency"][0]["severity"] == "P1"


def test_prometheus_without_traffic_is_unknown_not_a_pass(tmp_path: Path) -> None:
    monitoring = healthy_monitoring()
    monitoring["error_ratio"] = json.dumps({"kind": "instant", "value": None, "result": []}, indent=2)
    doc = _triage(tmp_path, monitoring=monitoring)
    assert doc["rules"]["high-5xx-ratio"] == "unknown"
    assert "no value" in _unknown(doc, "high-5xx-ratio")


def test_pool_exhausted_suggests_kill_idle_then_pool_resize(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["pg_connections"] = (
        "state|connections|max_connections\nidle|95|100\nactive|2|100\n(2 rows)\n"
        "total|max_connections|used_pct\n97|100|97.0\n(1 row)\n"
    )
    probes["app1"]["service_journal"] = (
        "2026-11-28T05:59:00+0000 app1 sergas-app[1]: ERROR: FATAL:  sorry, too many clients already\n" * 3
    )
    doc = _triage(tmp_path, probes)
    by = findings_by_rule(doc)
    (near,) = by["pg-connections-near-max"]
    assert near["severity"] == "P1" and "97 of 100" in near["message"] and "idle=95" in near["message"]
    assert (near["evidence"][0]["line"], near["evidence"][0]["excerpt"]) == (2, "idle|95|100")
    # the runbook's numbers: idle over 5 minutes; a pool of 30, or 50 when scaling up
    assert (
        near["mitigation"]["command"]
        == "collector remediate kill-idle-connections --hosts db1 --param minutes=5"
    )
    assert (
        near["alternatives"][0]["command"] == "collector remediate pool-resize --hosts app1 --param size=30"
    )
    assert (
        near["alternatives"][1]["command"] == "collector remediate pool-resize --hosts app1 --param size=50"
    )
    assert by["too-many-connections-logged"][0]["hosts"] == ["app1"]


POOL_FULL = (
    "state|connections|max_connections\nidle|27|30\nactive|1|30\n(2 rows)\n"
    "total|max_connections|used_pct\n28|30|93.3\n(1 row)\n"
)


def _health(failing: str) -> str:
    checks = {name: {"status": "fail" if name == failing else "ok"} for name in ("database", "redis", "disk")}
    return json.dumps({"status": "unhealthy", "checks": checks}) + "\nHTTP 503 0.04s\n"


def test_app_down_on_a_full_database_suggests_the_databases_mitigation_not_a_restart(tmp_path: Path) -> None:
    """/health fails on its database while the database refuses the app: the app is the symptom. Its
    restart (which meets the same full database) becomes an alternative; the first mitigation suggested,
    the one serve plans, is the cause's (kill the idle connections)."""
    probes = healthy()
    probes["app1"]["app_health"] = _health("database")
    probes["db1"]["pg_connections"] = POOL_FULL
    doc = _triage(tmp_path, probes)
    by = findings_by_rule(doc)
    (down,) = by["app-down"]
    assert (
        doc["findings"][0]["rule"] == "app-down" and down["severity"] == "P0"
    )  # still the worst: it is down
    assert down["mitigation"] is None
    assert [a["command"] for a in down["alternatives"]] == ["collector remediate restart --hosts app1"]
    assert "the cause is live: pg-connections-near-max" in down["message"]
    first = next(f["mitigation"] for f in doc["findings"] if f["mitigation"])
    assert first["command"] == "collector remediate kill-idle-connections --hosts db1 --param minutes=5"


@pytest.mark.parametrize(
    ("failing", "db_full"),
    [
        ("database", False),  # the database is fine by every rule: nothing explains it, restart the app
        ("redis", True),  # a full database does not explain a failing Redis check
    ],
)
def test_app_down_keeps_its_restart_when_no_live_finding_explains_the_failing_check(
    tmp_path: Path, failing: str, db_full: bool
) -> None:
    probes = healthy()
    probes["app1"]["app_health"] = _health(failing)
    if db_full:
        probes["db1"]["pg_connections"] = POOL_FULL
    (down,) = findings_by_rule(_triage(tmp_path, probes))["app-down"]
    assert down["mitigation"]["command"] == "collector remediate restart --hosts app1"
    assert "the cause is live" not in down["message"]


def test_app_down_on_a_dead_redis_suggests_restarting_redis(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["app_health"] = _health("redis")
    probes["redis1"]["redis_ping"] = {
        "output": "Could not connect to Redis at 127.0.0.1:6379: Connection refused\n",
        "status": "failed",
        "rc": 1,
    }
    doc = _triage(tmp_path, probes)
    (down,) = findings_by_rule(doc)["app-down"]
    assert down["mitigation"] is None and "the cause is live: redis-down" in down["message"]
    first = next(f["mitigation"] for f in doc["findings"] if f["mitigation"])
    assert first["command"] == "collector remediate restart --hosts redis1"


@pytest.mark.parametrize("pg_log_found", [True, False])
def test_postgres_log_is_read_and_a_missing_one_falls_back_to_the_journal(
    tmp_path: Path, pg_log_found: bool
) -> None:
    line = (
        "2026-11-28 05:59:00.120 UTC [77] sergas@sergas app=[unknown] "
        "FATAL:  sorry, too many clients already\n"
    )
    probes = healthy()
    if pg_log_found:
        probes["db1"]["pg_log"] = line * 2
    else:  # no log file (a distribution that logs to the journal): the probe failed, the journal has the line
        probes["db1"]["pg_log"] = {
            "output": "no PostgreSQL log file under /var/log/postgresql\n",
            "status": "failed",
            "rc": 2,
        }
        probes["db1"]["service_journal"] = line * 2
    doc = _triage(tmp_path, probes)
    (found,) = findings_by_rule(doc)["too-many-connections-logged"]
    assert found["hosts"] == ["db1"] and "2 line(s)" in found["message"]
    assert found["evidence"][0]["path"] == f"hosts/db1/{'pg_log' if pg_log_found else 'service_journal'}.txt"


def test_idle_in_transaction_lock_contention_and_slow_queries(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["pg_idle_in_transaction"] = (
        "pid|usename|datname|client_addr|idle_s|last_query\n"
        "77|sergas|sergas||300.5|LOCK TABLE orders\n(1 row)\n"
    )
    probes["db1"]["pg_blocking_locks"] = (
        "blocked_pid|blocked_user|blocked_s|blocking_pids|blocked_query|blocking_pid|blocking_state|blocking_query\n"
        "88|sergas|42.0|{77}|UPDATE orders SET x=1|77|idle in transaction|LOCK TABLE orders\n(1 row)\n"
    )
    probes["db1"]["pg_long_queries"] = (
        "pid|usename|datname|state|wait_event_type|wait_event|running_s|query\n"
        "88|sergas|sergas|active|Lock|relation|42.0|UPDATE orders SET x=1\n"
        "77|sergas|sergas|idle in transaction|Client|ClientRead|300.5|LOCK TABLE orders\n(2 rows)\n"
    )
    by = findings_by_rule(_triage(tmp_path / "a", probes))
    assert (
        by["idle-in-transaction"][0]["severity"] == "P2"
        and "300.5" in by["idle-in-transaction"][0]["message"]
    )
    assert by["lock-contention"][0]["evidence"][0]["excerpt"].startswith("88|sergas|42.0")
    assert "slow-queries" not in by  # the long query waits on the lock: that is contention, not slowness
    probes = healthy()
    probes["db1"]["pg_long_queries"] = (
        "pid|usename|datname|state|wait_event_type|wait_event|running_s|query\n"
        "99|sergas|sergas|active|Timeout|PgSleep|12.3|SELECT pg_sleep(30)\n(1 row)\n"
    )
    by = findings_by_rule(_triage(tmp_path / "b", probes))
    (slow,) = by["slow-queries"]
    assert slow["severity"] == "P2" and "12.3" in slow["message"]
    assert slow["mitigation"]["action"] == "extend-cache-ttl"


def test_database_down_is_p0_and_data_at_risk(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["service_status"] = {
        "output": "● postgresql.service\n     Active: failed (Result: exit-code)\n",
        "rc": 3,
    }
    probes["db1"]["pg_connections"] = {
        "output": 'psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" '
        "failed: No such file or directory\n",
        "status": "failed",
        "rc": 2,
    }
    doc = _triage(tmp_path, probes)
    by = findings_by_rule(doc)
    assert by["database-down"][0]["severity"] == "P0"
    assert by["database-unreachable"][0]["severity"] == "P0"
    assert doc["questions"]["is_data_at_risk"]["answer"] == "yes"
    # the other psql-based rules cannot judge: unknown, with the psql error as the reason
    assert "failed on db1 (rc 2)" in _unknown(doc, "pg-connections-near-max")


def test_oom_kill_counts_only_this_hosts_cgroup_inside_the_window(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["oom_events"] = (
        "[Sat Nov 28 05:57:10 2026] "
        "oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg=/collector-lab/app1/hog,task=python3\n"
        "[Sat Nov 28 05:57:10 2026] Memory cgroup out of memory: Killed process 4242 (python3) "
        "total-vm:1000kB\n"
        "[Sat Nov 28 04:00:00 2026] Memory cgroup out of memory: Killed process 1 (old) total-vm:1kB\n"
    )
    probes["db1"]["oom_events"] = (
        probes["app1"]["oom_events"].splitlines()[0] + "\n"
    )  # the same kernel, another host
    by = findings_by_rule(_triage(tmp_path, probes))
    (oom,) = by["oom-kill"]
    assert oom["hosts"] == ["app1"] and "python3" in oom["message"] and "1 OOM kill" in oom["message"]
    assert oom["mitigation"]["command"] == "collector remediate memory-limit --hosts app1 --param max=4G"
    assert oom["alternatives"][0]["action"] == "restart"
    assert "oom-kill-infra" not in by


def test_disk_full_and_no_space(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["df"] = probes["app1"]["df"].replace(
        "1024     44032       3% /var/lib/sergas", "49152         0     100% /var/lib/sergas"
    )
    probes["app1"]["service_journal"] = (
        "2026-11-28T05:59:00+0000 app1 sergas-app[1]: ERROR: [Errno 28] No space left on device\n"
    )
    doc = _triage(tmp_path, probes)
    by = findings_by_rule(doc)
    assert (
        by["disk-exhausted"][0]["severity"] == "P1"
        and "/var/lib/sergas" in by["disk-exhausted"][0]["message"]
    )
    assert "disk-full" not in by  # the same host's milder twin is dropped
    assert by["no-space-logged"][0]["evidence"][0]["line"] == 1
    assert doc["questions"]["is_data_at_risk"]["answer"] == "yes"
    assert doc["figures"]["disk_max_pct"]["app1"] == 100.0


def test_redis_down_and_near_maxmemory(tmp_path: Path) -> None:
    probes = healthy()
    probes["redis1"]["redis_info_memory"] = "# Memory\r\nused_memory:66000000\r\nmaxmemory:67108864\r\n"
    by = findings_by_rule(_triage(tmp_path / "a", probes))
    assert (
        by["redis-near-maxmemory"][0]["severity"] == "P2"
        and "98.3 %" in by["redis-near-maxmemory"][0]["message"]
    )
    probes["redis1"]["redis_ping"] = {
        "output": "Could not connect to Redis at 127.0.0.1:6379: Connection refused\n",
        "status": "failed",
        "rc": 1,
    }
    by = findings_by_rule(_triage(tmp_path / "b", probes))
    assert by["redis-down"][0]["severity"] == "P1"
    assert by["redis-down"][0]["mitigation"]["command"] == "collector remediate restart --hosts redis1"


def test_rate_limited_suggests_breaker_rate_and_ttl(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["service_journal"] = "".join(
        f"2026-11-28T05:59:{i:02d}+0000 app1 sergas-app[1]: WARNING: zoho upstream status=429 rate limit "
        "exceeded\n"
        for i in range(8)
    )
    probes["app1"]["circuit_breaker"] = json.dumps({"zoho": {"state": "open"}}) + "\nHTTP 200\n"
    by = findings_by_rule(_triage(tmp_path, probes))
    (limited,) = by["rate-limited"]
    assert (
        limited["mitigation"]["command"]
        == "collector remediate circuit-breaker --hosts app1 --param state=open"
    )
    assert [a["action"] for a in limited["alternatives"]] == ["rate-limit", "extend-cache-ttl"]
    assert (
        by["circuit-breaker-open"][0]["severity"] == "P2"
        and "zoho" in by["circuit-breaker-open"][0]["message"]
    )


def test_deploy_shortly_before_errors_suggests_rollback_to_previous_tag(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["deploy_log"] = (
        "9f9f9f9 2026-11-28T04:10:00+00:00 Lab (HEAD, tag: v1.1.0) Release 1.1.0\n"
        "1a2b3c4 2026-11-28T04:00:00+00:00 Lab (tag: v1.0.0, main) Release 1.0.0\n\nv1.1.0\n"
    )
    probes["app1"]["service_status"] = (
        "● sergas-app.service\n     Active: active (running) since Sat 2026-11-28 05:55:00 UTC; 5min ago\n"
    )
    probes["app1"]["service_journal"] = "".join(
        f"2026-11-28T05:5{6 + i // 60}:{i % 60:02d}+0000 app1 sergas-app[1]: ERROR: path=/api/orders "
        "status=500\n"
        for i in range(10)
    )
    probes["app1"]["app_health"] = (
        json.dumps({"status": "healthy", "version": "1.1.0"}) + "\nHTTP 200 0.004s\n"
    )
    doc = _triage(tmp_path, probes, _prometheus(error_ratio=0.4))
    by = findings_by_rule(doc)
    (deploy,) = by["deploy-before-errors"]
    assert deploy["severity"] == "P1"
    assert deploy["mitigation"]["command"] == "collector remediate rollback --hosts app1 --param tag=v1.0.0"
    assert "v1.1.0" in deploy["message"] and "1.0 min later" in deploy["message"]
    assert {e["probe"] for e in deploy["evidence"]} == {
        "deploy_log",
        "service_status",
        "service_journal",
        "app_health",
    }
    # the release, its time and the gap to the first error, named first: the cause before its symptoms
    assert doc["findings"][0]["rule"] == "deploy-before-errors"
    assert deploy["title"] == "Release v1.1.0 deployed at 05:55 UTC, 1.0 min before the errors began"
    assert "the app reports 1.1.0" in deploy["message"] and "previous release v1.0.0" in deploy["message"]
    assert {f["rule"] for f in doc["findings"][1:]} >= {"high-5xx-ratio"}


def test_deploy_finding_says_when_the_app_runs_another_release_than_the_checkout(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["deploy_log"] = (
        "9f9f9f9 2026-11-28T05:55:00+00:00 Lab (HEAD, tag: v1.1.0) Release 1.1.0\n"
        "1a2b3c4 2026-11-28T04:00:00+00:00 Lab (tag: v1.0.0, main) Release 1.0.0\n\nv1.1.0\n"
    )
    probes["app1"]["service_journal"] = "".join(
        f"2026-11-28T05:57:{i:02d}+0000 app1 sergas-app[1]: ERROR: path=/api/orders status=500\n"
        for i in range(10)
    )
    probes["app1"]["app_health"] = {
        "output": "curl: (7) Failed to connect\nHTTP 000\n",
        "status": "failed",
        "rc": 7,
    }
    probes["app1"]["app_metrics"] = 'sergas_build_info{version="1.0.0"} 1\n'
    (deploy,) = findings_by_rule(_triage(tmp_path, probes))["deploy-before-errors"]
    assert "the app reports 1.0.0, not v1.1.0" in deploy["message"]
    assert deploy["title"] == "Release v1.1.0 deployed at 05:55 UTC, 2.0 min before the errors began"
    assert any(
        e["probe"] == "app_metrics" and "sergas_build_info" in e["excerpt"] for e in deploy["evidence"]
    )


def test_no_rollback_without_errors_or_previous_tag(tmp_path: Path) -> None:
    probes = healthy()  # v1.0.0 is the oldest tag: nothing to go back to, even with errors
    probes["app1"]["service_journal"] = "2026-11-28T05:59:00+0000 app1 sergas-app[1]: ERROR: boom\n" * 20
    assert "deploy-before-errors" not in findings_by_rule(_triage(tmp_path, probes))


def test_each_firing_alert_is_a_finding_with_mapped_severity(tmp_path: Path) -> None:
    monitoring = healthy_monitoring()
    monitoring["alerts"] = json.dumps(
        {
            "alerts": [
                {
                    "name": "SergasHighErrorRate",
                    "state": "active",
                    "severity": "critical",
                    "summary": "5xx > 10 %",
                    "starts_at": "2026-11-28T05:50:00Z",
                    "labels": {"alertname": "SergasHighErrorRate", "severity": "critical"},
                },
                {
                    "name": "SergasHighLatency",
                    "state": "active",
                    "severity": "warning",
                    "summary": "p95 > 200 ms",
                    "starts_at": "2026-11-28T05:51:00Z",
                    "labels": {"alertname": "SergasHighLatency", "severity": "warning"},
                },
            ]
        },
        indent=2,
    )
    doc = _triage(tmp_path, monitoring=monitoring)
    alerts = findings_by_rule(doc)["alert"]
    assert {(a["id"], a["severity"]) for a in alerts} == {
        ("alert:SergasHighErrorRate", "P1"),
        ("alert:SergasHighLatency", "P2"),
    }
    assert all(a["evidence"][0]["path"] == "monitoring/alerts.json" for a in alerts)
    assert doc["severity"] == "P1"


def test_auth_failures_flag_a_possible_security_incident(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["service_journal"] = "".join(
        f"2026-11-28T05:59:{i:02d}+0000 db1 postgres[9]: FATAL:  password authentication failed for user "
        '"sergas"\n'
        for i in range(12)
    )
    doc = _triage(tmp_path, probes)
    (auth,) = findings_by_rule(doc)["auth-failures"]
    assert auth["severity"] == "P1" and auth["security"] is True
    assert doc["security"]["suspected"] is True
    assert doc["questions"]["is_it_a_security_incident"]["answer"] == "possibly"


def test_data_loss_signs_are_p0(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["service_journal"] = (
        "2026-11-28T05:59:00+0000 db1 postgres[9]: PANIC:  could not write to file: invalid page in block 7\n"
    )
    doc = _triage(tmp_path, probes)
    assert findings_by_rule(doc)["data-loss-signs"][0]["severity"] == "P0"
    assert doc["questions"]["is_data_at_risk"]["answer"] == "yes"


def test_unreachable_host_is_a_finding_and_its_rules_are_unknown(tmp_path: Path) -> None:
    probes = healthy()
    del probes["redis1"]
    doc = _triage(
        tmp_path, probes, unreachable={"redis1": "ssh: connect to host 10.0.0.3 port 22: No route to host"}
    )
    (gone,) = findings_by_rule(doc)["host-unreachable"]
    assert gone["hosts"] == ["redis1"] and gone["severity"] == "P1"
    assert (
        gone["evidence"][0]["path"] == "manifest.json"
        and "No route to host" in gone["evidence"][0]["excerpt"]
    )
    assert "host redis1 is unreachable" in _unknown(doc, "redis-down")
    assert doc["rules"]["redis-down"] == "unknown"


# ---------------------------------------------------------------- edge cases


def test_missing_probe_makes_the_rule_unknown(tmp_path: Path) -> None:
    probes = healthy()
    del probes["app1"]["app_health"]
    doc = _triage(tmp_path, probes)
    assert doc["rules"]["app-down"] == "unknown"
    assert _unknown(doc, "app-down") == "app1: probe app_health was not collected on app1"
    assert doc["severity"] == "none"


def test_timed_out_probe_makes_the_rule_unknown_even_with_partial_output(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["pg_blocking_locks"] = {
        "output": "blocked_pid|blocked_user\n",
        "status": "timeout",
        "rc": 124,
    }
    doc = _triage(tmp_path, probes)
    assert doc["rules"]["lock-contention"] == "unknown"
    assert "probe pg_blocking_locks timed out on db1" in _unknown(doc, "lock-contention")


def test_empty_output_is_unknown_for_state_probes_but_zero_for_logs(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["df"] = ""
    probes["app1"]["free"] = ""
    doc = _triage(tmp_path, probes)
    assert "printed nothing" in _unknown(doc, "disk-full")
    assert doc["rules"]["memory-high"] == "unknown"
    assert doc["rules"]["error-storm"] == "passed"  # an empty error log is no errors, not unknown


def test_not_found_tool_is_unknown(tmp_path: Path) -> None:
    probes = healthy()
    probes["redis1"]["redis_ping"] = {
        "output": "",
        "status": "not_found",
        "rc": 127,
        "error": "redis-cli not found",
    }
    doc = _triage(tmp_path, probes)
    assert "tool is missing on redis1 (redis-cli not found)" in _unknown(doc, "redis-down")


def test_non_utf8_output_is_read_not_fatal(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["service_journal"] = {
        "output": b"".join(
            b"2026-11-28T05:59:%02d+0000 app1 sergas-app[1]: ERROR: bad bytes \xff\xfe in payload\n" % i
            for i in range(50)
        )
        * 2
    }
    doc = _triage(tmp_path, probes)
    (storm,) = findings_by_rule(doc)["error-storm"]
    assert "\ufffd" in storm["evidence"][0]["excerpt"] and "100 error lines" in storm["message"]
    json.dumps(doc)  # findings.json stays valid JSON


def test_garbage_output_never_crashes_any_rule(tmp_path: Path) -> None:
    probes = healthy()
    for host in probes.values():
        for name in list(host):
            host[name] = {
                "output": b"\x00\xff garbage | with | pipes\n(1 row)\n{not json",
                "status": "ok",
                "rc": 0,
            }
    monitoring = {n: "{broken" for n in healthy_monitoring()}
    doc = _triage(tmp_path, probes, monitoring)
    assert doc["schema"] == FINDINGS_SCHEMA
    assert doc["unknown"], "garbage must be reported as unknown, not pass silently"
    assert doc["rules"]["app-down"] == "unknown" and doc["rules"]["high-5xx-ratio"] == "unknown"


# ---------------------------------------------------------------- the rules file


def test_every_rule_is_complete_and_its_mitigation_is_a_valid_remediate_call() -> None:
    rules = load_rules()
    assert len(rules) >= 20
    from collector.remediate.actions import ACTIONS, validate_params

    for rule in rules:
        for m in filter(None, (rule.mitigation, *rule.alternatives)):
            assert m.action in ACTIONS, f"{rule.id}: unknown action {m.action}"
            from collector.triage.targets import RUNBOOK_TARGETS

            runbook = {f"{{{name}}}": value for name, (_, value) in RUNBOOK_TARGETS.items()}
            params = {
                k: runbook.get(v, ("127.0.0.2" if k == "address" else "v1.0.0") if "{" in v else v)
                for k, v in m.params.items()
            }
            validate_params(ACTIONS[m.action], params)  # raises UsageError on a bad parameter


def test_runbook_rules_exist() -> None:
    ids = {r.id for r in load_rules()}
    assert {
        "app-down",
        "high-5xx-ratio",
        "high-p95-latency",
        "pg-connections-near-max",
        "too-many-connections-logged",
        "idle-in-transaction",
        "lock-contention",
        "slow-queries",
        "oom-kill",
        "disk-full",
        "redis-down",
        "redis-near-maxmemory",
        "rate-limited",
        "deploy-before-errors",
        "alert",
    } <= ids


@pytest.mark.parametrize(
    "broken, message",
    [
        (
            (
                "rules: [{id: x, title: t, scenario: s, basis: live, measure: nosuch, "
                "when: {op: '>', value: 1}, severity: P1, message: m}]"
            ),
            "unknown measure",
        ),
        (
            (
                "rules: [{id: x, title: t, scenario: s, basis: live, measure: log_lines, "
                "when: {op: '~', value: 1}, severity: P1, message: m}]"
            ),
            "`when` needs op",
        ),
        (
            (
                "rules: [{id: x, title: t, scenario: s, basis: live, measure: log_lines, "
                "when: {op: '>', value: 1}, severity: P9, message: m}]"
            ),
            "severity must be one of",
        ),
        (
            (
                "rules: [{id: x, title: t, scenario: s, basis: live, measure: log_lines, "
                "when: {op: '>', value: 1}, severity: P1, message: m, colour: red}]"
            ),
            "unknown key 'colour'",
        ),
        (
            (
                "rules: [{id: x, title: t, scenario: s, basis: live, measure: log_lines, "
                "when: {op: '>', value: 1}, severity: P1, message: m, unless: [y]}]"
            ),
            "`unless` names no rule 'y'",
        ),
        (
            (
                "rules: [{id: x, title: t, scenario: s, basis: live, measure: log_lines, "
                "when: {op: '>', value: 1}, severity: P1, message: m, caused_by: {database: [y]}}]"
            ),
            "`caused_by` names no rule 'y'",
        ),
        (
            (
                "rules: [{id: x, title: t, scenario: s, basis: live, measure: log_lines, "
                "when: {op: '>', value: 1}, severity: P1, message: m, caused_by: [x]}]"
            ),
            "`caused_by` maps a failing check to a list of rule ids",
        ),
        (
            (
                "rules: [{id: x, title: t, scenario: s, measure: log_lines, "
                "when: {op: '>', value: 1}, severity: P1, message: m}]"
            ),
            "missing 'basis'",
        ),
        (
            (
                "rules: [{id: x, title: t, scenario: s, basis: past, measure: log_lines, "
                "when: {op: '>', value: 1}, severity: P1, message: m}]"
            ),
            "basis must be live",
        ),
        ("nope", "has no list `rules`"),
    ],
)
def test_a_broken_rules_file_is_a_usage_error(tmp_path: Path, broken: str, message: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(broken)
    with pytest.raises(UsageError, match=message):
        load_rules(path)


def test_a_new_rule_is_a_few_lines_of_yaml(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text("""rules:
  - id: high-load
    title: Load average is high
    scenario: Slow responses
    basis: live
    roles: [all]
    probes: [uptime]
    measure: log_lines
    args: {probe: uptime, pattern: "load average: [1-9][0-9]"}
    when: {op: ">=", value: 1}
    severity: P3
    message: "{host}: {first}"
""")
    probes = healthy()
    probes["db1"]["uptime"] = " 06:00:00 up 1:00,  0 users,  load average: 12.00, 8.00, 4.00\n"
    from collector.bundle import Bundle

    doc = evaluate(Bundle.open(make_bundle(tmp_path, probes)), load_rules(path))
    assert [(f.id, f.hosts, f.severity) for f in doc.findings] == [("high-load", ("db1",), "P3")]


def test_lock_waits_and_slow_statements_in_the_postgres_log(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["service_journal"] = (
        "2026-11-28T05:59:01+0000 db1 postgres[9]: LOG:  process 88 still waiting for AccessShareLock on "
        "relation 16390 after 1000.1 ms\n"
        "2026-11-28T05:59:02+0000 db1 postgres[9]: ERROR:  canceling statement due to statement timeout\n"
        "2026-11-28T05:59:03+0000 db1 postgres[9]: LOG:  process 89 still waiting for RowExclusiveLock on "
        "relation 16390\n"
        "2026-11-28T05:59:04+0000 db1 postgres[9]: LOG:  duration: 7012.5 ms  statement: SELECT * FROM "
        "orders\n"
        "2026-11-28T05:59:05+0000 db1 postgres[9]: LOG:  duration: 150.0 ms  statement: SELECT 1\n"
    )
    by = findings_by_rule(_triage(tmp_path, probes))
    # log lines alone: earlier, recovered (no blocked query now)
    assert (
        by["lock-waits-logged"][0]["severity"] == "P3"
        and "3 lock-wait lines" in by["lock-waits-logged"][0]["message"]
    )
    assert by["lock-waits-logged"][0]["message"].startswith(
        "recovered: 3 event(s) in the window, the last at 05:59 UTC"
    )
    (slow,) = by["slow-statements-logged"]
    assert "1 statement(s) over 5 s, the slowest 7012.5 ms" in slow["message"]
    assert slow["evidence"][0]["line"] == 4
    assert "many-slow-statements" not in by  # 2 statements over 100 ms is no trend


def test_a_host_without_roles_gets_only_the_rules_whose_probes_ran(tmp_path: Path) -> None:
    from triage_synth import ROLES

    probes = {
        "local": {
            k: v
            for k, v in healthy()["app1"].items()
            if k in ("df", "free", "journal_errors", "oom_events", "uptime", "ps_mem", "top", "iostat")
        }
    }
    probes["local"]["service_status"] = {
        "output": "",
        "status": "skipped",
        "rc": None,
        "error": "host var not set",
    }
    ROLES["local"] = ()
    try:
        doc = _triage(tmp_path, probes, healthy_monitoring())
    finally:
        ROLES.pop("local")
    assert doc["rules"]["disk-full"] == "passed" and doc["rules"]["journal-errors"] == "passed"
    assert doc["rules"]["database-down"] == "not_applicable"  # service_status was skipped: not a db host
    assert doc["rules"]["app-down"] == "not_applicable"
    assert doc["unknown"] == [] and doc["questions"]["is_data_at_risk"]["answer"] == "no"


def test_key_figures_shape_and_unknowns(tmp_path: Path) -> None:
    from collector.bundle import Bundle
    from collector.triage.figures import FIGURE_KEYS, key_figures

    probes = healthy()
    probes["db1"]["pg_connections"] = {"output": "", "status": "timeout", "rc": 124}
    figures = key_figures(Bundle.open(make_bundle(tmp_path, probes))).to_dict()
    assert tuple(figures) == FIGURE_KEYS
    assert figures["error_ratio"] == 0.0 and figures["p95_s"] == 0.012
    assert figures["pg_connections"] == {"db1": None} and figures["pg_max_connections"] == {"db1": None}
    assert figures["redis_used_memory"] == {"redis1": 1048576} and figures["redis_maxmemory"] == {
        "redis1": 67108864
    }
    assert figures["disk_max_pct"] == {"app1": 10.0, "db1": 10.0, "redis1": 10.0}
    assert set(figures["mem_used_pct"]) == {"app1", "db1", "redis1"}


def test_a_milder_twin_is_dropped_only_on_the_hosts_its_worse_twin_covers(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["df"] = probes["app1"]["df"].replace(
        "1024     44032       3% /var/lib/sergas", "49152         0     100% /var/lib/sergas"
    )
    probes["db1"]["df"] = probes["db1"]["df"].replace(
        "23000000 230000000      10% /", "23000000 230000000      95% /"
    )
    doc = _triage(tmp_path, probes)
    by = findings_by_rule(doc)
    assert by["disk-exhausted"][0]["hosts"] == ["app1"]
    assert by["disk-full"][0]["hosts"] == ["db1"] and by["disk-full"][0]["severity"] == "P2"
    monitoring = healthy_monitoring()
    monitoring["error_ratio"] = json.dumps({"kind": "instant", "value": 0.05}, indent=2)
    by = findings_by_rule(_triage(tmp_path / "b", monitoring=monitoring))
    assert by["elevated-5xx-ratio"][0]["severity"] == "P3" and "high-5xx-ratio" not in by


def test_access_log_p95_from_request_durations(tmp_path: Path) -> None:
    probes = healthy()
    lines = [
        f"2026-11-28T05:59:{i % 60:02d}+0000 app1 python3[1]: INFO: path=/api/orders status=200 method=GET "
        f"duration_ms={300 if i % 10 == 0 else 40}.0 client=10.0.0.1"
        for i in range(40)
    ]
    probes["app1"]["service_journal"] = "\n".join(lines) + "\n"
    by = findings_by_rule(_triage(tmp_path / "a", probes, _prometheus(p95=0.3)))
    (slow,) = by["access-log-p95-latency"]
    assert slow["severity"] == "P2" and "p95 of 40 logged API requests is 300.0 ms" in slow["message"]
    probes["app1"]["service_journal"] = "\n".join(lines[:10]) + "\n"  # too few requests to call a p95
    assert "access-log-p95-latency" not in findings_by_rule(_triage(tmp_path / "b", probes))


def test_the_window_comes_from_the_manifest_when_collect_ran_from_python(tmp_path: Path) -> None:
    # collect() called as a function has no --since on its command line: the manifest's `since` rules.
    probes = healthy()
    probes["app1"]["oom_events"] = (
        "[Sat Nov 28 05:57:10 2026] Memory cgroup out of memory: Killed process 4242 (python3) "
        "total-vm:1000kB\n"
    )
    narrow = make_bundle(tmp_path / "narrow", probes, since="1m", since_in_argv=False)
    assert json.loads((narrow / "manifest.json").read_text())["since"] == "1m"
    assert "oom-kill" not in findings_by_rule(triage_bundle(narrow))  # 2 min 50 s before the run: outside 1m
    wide = make_bundle(tmp_path / "wide", probes, since="10m", since_in_argv=False)
    assert "oom-kill" in findings_by_rule(triage_bundle(wide))
