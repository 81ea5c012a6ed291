"""Synthetic runs, findings and actions for the report tests (importable by name, unlike conftest.py)."""

from __future__ import annotations

import json
from typing import Any

from collector.core import (
    AffectedAnswer,
    Answer,
    Evidence,
    Finding,
    Findings,
    HostResult,
    KeyFigures,
    MitigationSuggestion,
    ProbeResult,
    Questions,
    RunResult,
    SecurityFlag,
    UnknownRule,
)

SEEDED_SECRET = "Zx9-seeded-Pg-Passw0rd-4417"
SEEDED_TOKEN = "tok_live_8f3a9c2e7d1b4a6f"
STARTED = "2026-11-28T05:40:00.000Z"
FINISHED = "2026-11-28T05:40:03.500Z"


def _probe(
    host: str,
    name: str,
    out: str,
    status: str = "ok",
    rc: int | None = 0,
    started: str = "2026-11-28T05:40:00.500Z",
) -> ProbeResult:
    data = out.encode()
    return ProbeResult(
        host=host,
        probe=name,
        command=f"run {name}",
        status=status,
        rc=rc,  # type: ignore[arg-type]
        started=started,
        duration_s=0.2,
        output=data,
        bytes=len(data),
    )


def _app_probes(host: str, *, secret_line: bool) -> list[ProbeResult]:
    journal = (
        f"2026-11-28T05:31:10+00:00 {host} sergas-app[311]: path=/api/orders status=200 ms=12\n"
        f"2026-11-28T05:32:07+00:00 {host} sergas-app[311]: ERROR: database pool exhausted: "
        "FATAL: sorry, too many clients already\n"
        f"2026-11-28T05:33:00+00:00 {host} sergas-app[311]: "
        "ERROR: request failed path=/api/orders status=500\n"
    )
    if secret_line:
        journal += (
            f"2026-11-28T05:33:30+00:00 {host} sergas-app[311]: connecting to "
            f"postgresql://sergas:{SEEDED_SECRET}@db1:5432/sergas\n"
            f"2026-11-28T05:33:31+00:00 {host} sergas-app[311]: Authorization: Bearer {SEEDED_TOKEN}\n"
        )
    return [
        _probe(host, "service_status", "● sergas-app.service - Sergas app\n   Active: active (running)\n"),
        _probe(host, "journal_errors", journal),
        _probe(host, "service_journal", journal),
        _probe(
            host,
            "oom_events",
            "[Sat Nov 28 05:35:12 2026] Memory cgroup out of memory: Killed process 4242 (python3) "
            "total-vm:812345kB\n",
        ),
        _probe(
            host,
            "deploy_log",
            "9f1c2ab 2026-11-28T05:30:02+00:00 Lab Deployer (HEAD, tag: v1.1.0) Release 1.1.0\n"
            "41d0e77 2026-11-27T22:10:00+00:00 Lab Deployer (tag: v1.0.0) Release 1.0.0\n\nv1.1.0\n",
        ),
        _probe(host, "app_health", '{"status": "unhealthy"}\nHTTP 503 0.004s\n', status="failed", rc=22),
        _probe(host, "iostat", "", status="not_found", rc=127),
        _probe(
            host,
            "df",
            "Filesystem     Type 1024-blocks  Used Available Capacity Mounted on\n"
            "/dev/sda1      ext4   41152736 16461094 24691642      40% /\n"
            "/dev/loop3     ext4      99800    96806     2994      97% /opt/sergas/data\n",
        ),
        _probe(
            host,
            "free",
            "               total        used        free      shared  buff/cache   available\n"
            "Mem:     25000000000  6000000000  9000000000     1000000 10000000000 19000000000\n"
            "Swap:             0           0           0\n",
        ),
    ]


def _db_probes(host: str) -> list[ProbeResult]:
    return [
        _probe(host, "service_status", "● postgresql.service\n   Active: active (exited)\n"),
        _probe(
            host,
            "journal_errors",
            f"2026-11-28T05:32:05+00:00 {host} postgres[90]: FATAL:  sorry, too many clients already\n",
        ),
        _probe(
            host,
            "service_journal",
            f"2026-11-28T05:31:00+00:00 {host} postgres[90]: LOG:  checkpoint starting: time\n"
            f"2026-11-28T05:32:05+00:00 {host} postgres[90]: FATAL:  sorry, too many clients already\n",
        ),
        _probe(host, "pg_connections", "state|connections|max_connections\nidle|98|100\n"),
        _probe(host, "pg_long_queries", "", status="timeout", rc=124),
    ]


def _web_probes(host: str, errors: bool = False) -> list[ProbeResult]:
    noise = (
        (
            f"2026-11-28T05:2{int(host[-1]) % 10}:00+00:00 {host} sshd[1{host[-2:]}]: error: "
            "kex_exchange_identification: Connection closed by remote host\n"
        )
        if errors
        else ""
    )
    return [
        _probe(host, "service_status", "● ssh.service\n   Active: active (running)\n"),
        _probe(host, "journal_errors", noise),
        _probe(host, "uptime", " 05:40:01 up 1 day, load average: 0.1\n"),
    ]


def _range_doc(name: str, values: list[float]) -> bytes:
    start = 1795844400.0  # 2026-11-28T05:00:00Z
    doc = {
        "source": "prometheus",
        "query": name,
        "kind": "range",
        "error": None,
        "series": [{"metric": {}, "values": [[start + 30 * i, v] for i, v in enumerate(values)]}],
    }
    return json.dumps(doc).encode()


def make_run(
    n_web: int = 0, *, secret_line: bool = True, incident: str = "inc-test", web_errors: bool = False
) -> RunResult:
    """app1, db1, redis1 (unreachable) and n_web light hosts, with alerts and range series."""
    hosts = {
        "app1": HostResult(
            "app1", "partial", probes=_app_probes("app1", secret_line=secret_line), roles=("app",)
        ),
        "db1": HostResult("db1", "partial", probes=_db_probes("db1"), roles=("db",)),
        "redis1": HostResult(
            "redis1",
            "unreachable",
            error="ssh: connect to host redis1 port 22: No route to host",
            roles=("redis",),
        ),
    }
    for i in range(n_web):
        name = f"web{i + 1:02d}"
        hosts[name] = HostResult(name, "ok", probes=_web_probes(name, web_errors), roles=("web",))
    alerts = {
        "source": "alertmanager",
        "error": None,
        "alerts": [
            {
                "name": "HighErrorRatio",
                "state": "active",
                "severity": "critical",
                "starts_at": "2026-11-28T05:34:00.123456789Z",
                "ends_at": None,
                "instance": "app1:8000",
                "summary": "5xx ratio above 10 % for 5 minutes",
                "labels": {"alertname": "HighErrorRatio", "severity": "critical"},
                "annotations": {},
            },
        ],
    }
    monitoring = [
        ProbeResult(
            "monitoring",
            "error_ratio",
            "GET query",
            "ok",
            None,
            STARTED,
            0.1,
            output=json.dumps(
                {"source": "prometheus", "kind": "instant", "value": 0.38, "result": [], "error": None}
            ).encode(),
        ),
        ProbeResult(
            "monitoring",
            "p95_latency",
            "GET query",
            "ok",
            None,
            STARTED,
            0.1,
            output=json.dumps(
                {"source": "prometheus", "kind": "instant", "value": 0.72, "result": [], "error": None}
            ).encode(),
        ),
        ProbeResult(
            "monitoring", "alerts", "GET alerts", "ok", None, STARTED, 0.1, output=json.dumps(alerts).encode()
        ),
        ProbeResult(
            "monitoring",
            "error_ratio_range",
            "GET range",
            "ok",
            None,
            STARTED,
            0.1,
            output=_range_doc("error_ratio", [0.0, 0.01, 0.02, 0.15, 0.31, 0.42, 0.40, 0.38]),
        ),
        ProbeResult(
            "monitoring",
            "p95_latency_range",
            "GET range",
            "ok",
            None,
            STARTED,
            0.1,
            output=_range_doc("p95", [0.05, 0.06, 0.09, 0.3, 0.8, 0.75, 0.7, 0.72]),
        ),
    ]
    return RunResult(
        incident=incident,
        pattern="lab",
        inventory="inventory/lab.yml",
        engine="ssh",
        command_line=["collect", "--hosts", "lab"],
        started=STARTED,
        finished=FINISHED,
        hosts=hosts,
        monitoring=monitoring,
    )


def _ev(host: str, probe: str, path: str, line: int | None, excerpt: str) -> Evidence:
    return Evidence(host, probe, path, line, excerpt)


def _fix(action: str, hosts: str, **params: str) -> MitigationSuggestion:
    command = f"collector remediate {action} --hosts {hosts}" + "".join(
        f" --param {k}={v}" for k, v in params.items()
    )
    return MitigationSuggestion(action, hosts, params, command)


# Findings as collector.triage makes them (typed), and as findings.json holds them (FINDINGS).
FINDINGS_DOC = Findings(
    incident="inc-test",
    generated="2026-11-28T05:40:04.000Z",
    severity="P1",
    summary="P1: Database connection pool exhausted (app1, db1); 3 finding(s) in all",
    questions=Questions(
        affected=AffectedAnswer(
            "2 of 6 hosts; about 38.0 % of requests fail (5xx)",
            "hosts named by findings above P3",
            ("app1", "db1"),
            6,
            0.38,
        ),
        data_at_risk=Answer("no", "no data-loss, full-disk or database-down sign"),
        down_or_degraded=Answer("degraded", "Database connection pool exhausted"),
        security=Answer("no sign", "no security rule fired"),
    ),
    security=SecurityFlag(False),
    findings=(
        Finding(
            "pool_exhausted",
            "pool_exhausted",
            "Database connection pool exhausted",
            "P1",
            "connection pool exhausted",
            ("app1", "db1"),
            "98 of 100 connections in use on db1",
            (
                _ev("db1", "pg_connections", "hosts/db1/pg_connections.txt", 2, "idle|98|100"),
                _ev(
                    "app1",
                    "journal_errors",
                    "hosts/app1/journal_errors.txt",
                    2,
                    f"ERROR: database pool exhausted <b>x</b> password={SEEDED_SECRET}",
                ),
            ),
            _fix("kill-idle-connections", "db1", minutes="5"),
            (_fix("pool-resize", "app1", size="20"),),
        ),
        Finding(
            "high_5xx",
            "high_5xx",
            "High 5xx ratio <script>alert(1)</script>",
            "P1",
            "error storm",
            ("monitoring",),
            "",
            (_ev("monitoring", "error_ratio", "monitoring/error_ratio_range.json", None, "0.42"),),
        ),
        Finding(
            "out_of_memory",
            "out_of_memory",
            "Out-of-memory kill on app1",
            "P2",
            "out of memory",
            ("app1",),
            "",
            (
                _ev(
                    "app1",
                    "oom_events",
                    "hosts/app1/oom_events.txt",
                    1,
                    "Memory cgroup out of memory: Killed process 4242 (python3)",
                ),
            ),
            _fix("memory-limit", "app1", max="512M"),
        ),
    ),
    unknown=(
        UnknownRule(
            "redis_memory",
            "Redis near maxmemory",
            ("redis1",),
            "redis1: no redis_info_memory (host unreachable)",
        ),
    ),
    rules={
        "pool_exhausted": "fired",
        "high_5xx": "fired",
        "out_of_memory": "fired",
        "redis_memory": "unknown",
    },
    figures=KeyFigures(
        error_ratio=0.38,
        p95_s=0.72,
        pg_connections={"db1": 98},
        pg_max_connections={"db1": 100},
        mem_used_pct={"app1": 24.0, "db1": None},
        disk_max_pct={"app1": 97.0, "db1": None},
        redis_used_memory={"redis1": None},
        redis_maxmemory={"redis1": None},
    ),
)
FINDINGS: dict[str, Any] = FINDINGS_DOC.to_dict()

ACTIONS: dict[str, Any] = {
    "schema": "incident-collector/actions/v1",
    "actions": [
        {
            "action": "kill-idle-connections",
            "params": {"minutes": 5},
            "plan_id": "plan-test",
            "plan_hash": "sha256:abc123",
            "requester": "alice",
            "requested": "2026-11-28T05:42:00Z",
            "approver": "bob",
            "approved": "2026-11-28T05:43:10Z",
            "break_glass": None,
            "applied_started": "2026-11-28T05:43:30Z",
            "applied_finished": "2026-11-28T05:44:05Z",
            "hosts": {"db1": {"status": "changed", "changed": True, "msg": "terminated 90 idle sessions"}},
            "verify": {
                "passed": True,
                "checks": [
                    {"name": "health", "host": "app1", "passed": True, "detail": "healthy"},
                    {"name": "error_ratio", "host": "monitoring", "passed": True, "detail": "0.2 % < 1 %"},
                ],
            },
            "after_bundle": "bundles/inc-test-after",
            "stopped": None,
            "before_after": {
                "error_ratio": [0.42, 0.002],
                "p95_s": [None, None],
                "pg_connections": [{"db1": 98}, {"db1": 9}],
                "pg_max_connections": [{"db1": 100}, {"db1": 100}],
                "mem_used_pct": [{"app1": 24.0, "db1": 30.0}, {"app1": 24.0, "db1": 31.0}],
            },
        }
    ],
}
