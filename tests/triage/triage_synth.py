"""Synthetic bundles for triage unit tests: real bundles (collector.bundle.write_bundle) from crafted
RunResults.

`healthy()` returns probe outputs shaped like the catalogue's commands on a healthy lab; tests
change one output to stage a fault, then `make_bundle` writes it with the real bundle writer.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from collector.bundle import write_bundle
from collector.config import Settings
from collector.core import Findings, HostResult, ProbeResult, RunResult, host_status

STARTED = "2026-11-28T06:00:00.000Z"
# A probe spec: plain output (status ok, rc 0) or a dict {output, status, rc, error}.
Spec = str | bytes | dict[str, Any]

ROLES = {"app1": ("app",), "db1": ("db",), "redis1": ("redis",)}

_ACTIVE = """● {unit}.service - {unit}
     Loaded: loaded (/etc/systemd/system/{unit}.service; enabled; preset: enabled)
     Active: active (running) since Sat 2026-11-28 05:00:00 UTC; 1h ago
   Main PID: 123 (python3)
"""

_DF = """Filesystem     Type 1024-blocks    Used Available Capacity Mounted on
/dev/vda       ext4   263174212 23000000 230000000      10% /
/dev/loop3     ext4       49152    1024     44032       3% /var/lib/sergas

Filesystem     Inodes IUsed   IFree IUse% Mounted on
/dev/vda       16777216 500000 16277216    3% /
/dev/loop3      12288     20    12268    1% /var/lib/sergas
"""

_FREE = """               total        used        free      shared  buff/cache   available
Mem:     25276502016   652214272 23873093632     8388608  1041711104 24624287744
Swap:              0           0           0
"""

_PS = """    PID    PPID USER     %CPU %MEM   RSS    VSZ STAT ELAPSED COMMAND         COMMAND
    123       1 sergas    0.5  0.1 40000 300000 Ssl      3600 python3         python3 -m sergas_app
"""

_DEPLOY_GOOD = """1a2b3c4 2026-11-28T04:00:00+00:00 Lab (HEAD, tag: v1.0.0, main) Release 1.0.0
0f0f0f0 2026-11-28T03:59:00+00:00 Lab Initial import

v1.0.0
"""

_HEALTHY_JSON = json.dumps(
    {"status": "healthy", "checks": {"database": {"status": "ok"}, "redis": {"status": "ok"}}}
)


_TOP = """top - 06:00:00 up  1:00,  0 users,  load average: 0.10, 0.12, 0.09
Tasks:  46 total,   1 running,  45 sleeping,   0 stopped,   0 zombie
%Cpu(s):  3.1 us,  1.0 sy,  0.0 ni, 95.4 id,  0.5 wa,  0.0 hi,  0.0 si,  0.0 st
MiB Mem :  24105.1 total,  21323.8 free,   1653.6 used,   1493.7 buff/cache

    PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ COMMAND
    123 sergas    20   0  300000  40000  10000 S   0.7   0.1   0:01.00 python3
"""

_IOSTAT = (
    """Linux 6.18.44 (app1) \t11/28/26 \t_x86_64_\t(2 CPU)

avg-cpu:  %user   %nice %system %iowait  %steal   %idle
           3.00    0.00    1.00    0.50    0.00   95.50

"""
    "Device            r/s     rkB/s   rrqm/s  %rrqm r_await rareq-sz     w/s     wkB/s   wrqm/s  %wrqm "
    "w_await wareq-sz     d/s     dkB/s   drqm/s  %drqm d_await dareq-sz     f/s f_await  aqu-sz  %util\n"
    "vda              2.00     16.00     0.00   0.00    0.50     8.00    5.00     40.00     1.00  "
    "16.67    0.80     8.00    0.00      0.00     0.00   0.00    0.00     0.00    1.00    0.10    "
    "0.01   0.40\n"
    "\n"
)

NGINX_TEST_OK = (
    "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n"
    "nginx: configuration file /etc/nginx/nginx.conf test is successful\n"
)


def _journal(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def access_lines(n: int, status: int = 200, start_min: int = 55, path: str = "/api/orders") -> list[str]:
    """`n` access lines of the app's journal (short-iso), one per second from 05:<start_min>."""
    return [
        f"2026-11-28T05:{start_min + i // 60:02d}:{i % 60:02d}+0000 app1 sergas-app[123]: "
        f"INFO: path={path} method=GET status={status} duration_ms=12"
        for i in range(n)
    ]


def healthy() -> dict[str, dict[str, Spec]]:
    """Probe outputs of a healthy three-host lab (app1, db1, redis1), keyed host → probe."""
    common = {
        "journal_errors": "",
        "error_summary": "",
        "uptime": " 06:00:00 up 1:00,  0 users,  load average: 0.10, 0.12, 0.09\ncores: 2\n",
        "top": _TOP,
        "iostat": _IOSTAT,
        "free": _FREE,
        "df": _DF,
        "ps_mem": _PS,
        "oom_events": "",
    }
    app = common | {
        "service_status": _ACTIVE.format(unit="sergas-app"),
        "service_journal": _journal(access_lines(40)),
        "http_5xx_by_path": "",
        "deploy_log": _DEPLOY_GOOD,
        "app_health": _HEALTHY_JSON + "\nHTTP 200 0.004s\n",
        "app_metrics": 'sergas_zoho_circuit_breaker_state{name="zoho"} 0\n',
        "circuit_breaker": json.dumps({"zoho": {"state": "closed", "failures": 0}}) + "\nHTTP 200\n",
        "nginx_status": _ACTIVE.format(unit="nginx") + "\n" + NGINX_TEST_OK,
        "nginx_error_log": "# nginx error log since 2026-11-28 05:50:00 UTC: 0 lines (); the last 0 follow\n",
        "nginx_access_errors": "# nginx access log since 2026-11-28 05:50:00 UTC: 40 requests, 0 with a 5xx "
        "or a failed upstream (); the last 0 follow\n",
    }
    db = common | {
        "service_status": _ACTIVE.format(unit="postgresql"),
        "service_journal": "",
        "deploy_log": {"output": "", "status": "skipped", "rc": None, "error": "no collector_deploy_dir"},
        "pg_connections": "state|connections|max_connections\nidle|5|100\nactive|1|100\n(2 rows)\n"
        "total|max_connections|used_pct\n6|100|6.0\n(1 row)\n",
        "pg_long_queries": "pid|usename|datname|state|wait_event_type|wait_event|running_s|query\n(0 rows)\n",
        "pg_blocking_locks": "blocked_pid|blocked_user|blocked_s|blocking_pids|blocked_query|blocking_pid|"
        "blocking_state|blocking_query\n(0 rows)\n",
        "pg_idle_in_transaction": "pid|usename|datname|client_addr|idle_s|last_query\n(0 rows)\n",
        "pg_db_size": "datname|bytes|size\nsergas|104857600|100 MB\npostgres|7500000|7324 kB\n(2 rows)\n",
    }
    redis = common | {
        "service_status": _ACTIVE.format(unit="redis-server"),
        "service_journal": "",
        "redis_ping": "PONG\n",
        "redis_info_memory": "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n"
        "maxmemory:67108864\r\nmaxmemory_human:64.00M\r\nmaxmemory_policy:allkeys-lru\r\n",
        "redis_maxmemory": "maxmemory\n67108864\nmaxmemory-policy\nallkeys-lru\n",
    }
    return {"app1": app, "db1": db, "redis1": redis}


def healthy_monitoring() -> dict[str, Spec]:
    """Monitoring answers shaped like collector.monitoring's documents on a healthy lab."""
    return {
        "error_ratio": json.dumps({"kind": "instant", "value": 0.0, "result": [], "error": None}, indent=2),
        "p95_latency": json.dumps({"kind": "instant", "value": 0.012, "result": [], "error": None}, indent=2),
        "alerts": json.dumps({"alerts": []}, indent=2),
        "circuit_breaker_state": json.dumps(
            {"kind": "instant", "value": 0.0, "result": [], "error": None}, indent=2
        ),
        "zoho_throttled_2m": json.dumps(
            {"kind": "instant", "value": 0.0, "result": [], "error": None}, indent=2
        ),
    }


def _probe(host: str, name: str, spec: Spec) -> ProbeResult:
    if isinstance(spec, dict):
        output = spec.get("output", b"")
        status, rc, error = spec.get("status", "ok"), spec.get("rc", 0), spec.get("error")
    else:
        output, status, rc, error = spec, "ok", 0, None
    data = output.encode() if isinstance(output, str) else output
    return ProbeResult(
        host=host,
        probe=name,
        command=f"<{name}>",
        status=status,
        rc=rc,
        started=STARTED,
        duration_s=0.1,
        output=data,
        bytes=len(data),
        error=error,
    )


def make_bundle(
    tmp: Path,
    probes: dict[str, dict[str, Spec]] | None = None,
    monitoring: dict[str, Spec] | None = None,
    *,
    unreachable: dict[str, str] | None = None,
    since: str = "10m",
    since_in_argv: bool = True,
    # none: the runbook's numbers apply, not a running lab's overrides
    inventory: str = "synthetic/no-inventory.yml",
) -> Path:
    """Write a real bundle from host → probe → output (default: the healthy lab) and return its folder."""
    probes = copy.deepcopy(healthy() if probes is None else probes)
    monitoring = healthy_monitoring() if monitoring is None else monitoring
    hosts: dict[str, HostResult] = {}
    for host, outputs in probes.items():
        results = [_probe(host, name, spec) for name, spec in outputs.items()]
        hosts[host] = HostResult(host, host_status(results), None, results, ROLES.get(host, ("web",)))
    for host, error in (unreachable or {}).items():
        hosts[host] = HostResult(host, "unreachable", error, [], ROLES.get(host, ("web",)))
    argv = ["collect", "--hosts", "lab"] + (["--since", since] if since_in_argv else [])
    run = RunResult(
        incident="inc-test",
        pattern="lab",
        inventory=inventory,
        engine="ssh",
        command_line=argv,
        started=STARTED,
        since=since,
        finished="2026-11-28T06:00:05.000Z",
        hosts=hosts,
        monitoring=[_probe("monitoring", n, s) for n, s in monitoring.items()],
    )
    return write_bundle(run, Settings(), out_dir=tmp, archive=False)


def findings_by_rule(doc: Findings | dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """rule id → its findings, as findings.json holds them."""
    out: dict[str, list[dict[str, Any]]] = {}
    for finding in (doc.to_dict() if isinstance(doc, Findings) else doc)["findings"]:
        out.setdefault(finding["rule"], []).append(finding)
    return out
