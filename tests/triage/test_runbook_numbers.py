"""Triage suggests the runbook's numbers (idle > 5 min, pool 30 / 50, ZOHO_RATE_LIMIT 50, TTL 1800 s,
MemoryLimit 4G), each overridable per deployment by an inventory host var."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from triage_synth import findings_by_rule, healthy, make_bundle

from collector.triage import triage_bundle

POOL_FULL = (
    "state|connections|max_connections\nidle|95|100\nactive|2|100\n(2 rows)\n"
    "total|max_connections|used_pct\n97|100|97.0\n(1 row)\n"
)
RATE_LIMITED = "".join(
    f"2026-11-28T05:59:{i:02d}+0000 app1 sergas-app[1]: WARNING: zoho upstream status=429 rate "
    f"limit exceeded\n"
    for i in range(5)
)
OOM = (
    "[Sat Nov 28 05:59:10 2026] Memory cgroup out of memory: Killed process 4242 (python3) total-vm:1000kB\n"
)
OPEN = '{"zoho": {"state": "open"}}\nHTTP 200\n'


def _faulty() -> dict[str, Any]:
    probes = healthy()
    probes["db1"]["pg_connections"] = POOL_FULL
    probes["app1"]["service_journal"] = RATE_LIMITED
    probes["app1"]["circuit_breaker"] = OPEN
    probes["app1"]["oom_events"] = OOM
    probes["db1"]["pg_long_queries"] = (
        "pid|usename|datname|state|wait_event_type|wait_event|running_s|query\n"
        "77|sergas|sergas|active|||12.0|SELECT report()\n(1 row)\n"
    )
    return probes


def _commands(doc: dict[str, Any], rule: str) -> list[str]:
    (finding,) = findings_by_rule(doc)[rule]
    return [
        m["command"].split(" --hosts ")[0].split()[-1] + " " + " ".join(m["command"].split(" --param ")[1:])
        for m in [finding["mitigation"], *finding["alternatives"]]
    ]


def test_the_runbooks_numbers_by_default(tmp_path: Path) -> None:
    doc = triage_bundle(make_bundle(tmp_path, _faulty()), seal=False).to_dict()
    assert _commands(doc, "pg-connections-near-max") == [
        "kill-idle-connections minutes=5",
        "pool-resize size=30",
        "pool-resize size=50",
    ]
    assert _commands(doc, "rate-limited") == [
        "circuit-breaker state=open",
        "rate-limit value=50",
        "extend-cache-ttl seconds=1800",
    ]
    assert _commands(doc, "oom-kill")[0] == "memory-limit max=4G"
    assert _commands(doc, "slow-queries") == ["extend-cache-ttl seconds=1800"]


def test_a_deployment_overrides_them_in_its_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("""all:
  children:
    app:
      hosts:
        app1:
          collector_pool_size_target: 80
          collector_pool_size_scaled_target: 120
          collector_zoho_rate_limit_target: 30
          collector_memory_limit_target: 6G
    db:
      hosts:
        db1:
          collector_idle_minutes_target: 15
    redis:
      hosts:
        redis1: {}
""")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    doc = triage_bundle(make_bundle(bundles, _faulty(), inventory=str(inventory)), seal=False).to_dict()
    assert _commands(doc, "pg-connections-near-max") == [
        "kill-idle-connections minutes=15",
        "pool-resize size=80",
        "pool-resize size=120",
    ]
    assert _commands(doc, "rate-limited")[1:] == ["rate-limit value=30", "extend-cache-ttl seconds=1800"]
    assert _commands(doc, "oom-kill")[0] == "memory-limit max=6G"
