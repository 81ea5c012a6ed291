"""Now versus then: live state drives severity; log lines in the window are context, or a recovered P3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from triage_synth import findings_by_rule, healthy, make_bundle

from collector.core import Findings
from collector.triage import triage_bundle
from collector.triage.engine import BASES, load_rules

POOL_FULL = (
    "state|connections|max_connections\nidle|95|100\nactive|2|100\n(2 rows)\n"
    "total|max_connections|used_pct\n97|100|97.0\n(1 row)\n"
)
TOO_MANY = "2026-11-28T05:5{m}:00+0000 app1 sergas-app[1]: ERROR: FATAL:  sorry, too many clients already\n"
BLOCKED = (
    "blocked_pid|blocked_user|blocked_s|blocking_pids|blocked_query|blocking_pid|blocking_state|blocking_query\n"
    "88|sergas|12.5|{77}|SELECT * FROM customers|77|idle in transaction|ALTER TABLE customers\n(1 row)\n"
)


def _triage(tmp_path: Path, probes: dict[str, Any]) -> Findings:
    return triage_bundle(make_bundle(tmp_path, probes))


def test_every_rule_says_whether_it_reads_the_state_now_or_log_lines() -> None:
    rules = load_rules()
    assert all(r.basis in BASES for r in rules)
    by = {r.id: r.basis for r in rules}
    # log lines in the window are history, whatever they say; what a probe reads of the state now is live
    for rule in rules:
        if rule.measure.startswith("log_") or rule.measure == "oom_kills":
            assert rule.basis == "history", rule.id
    assert {
        by[r]
        for r in (
            "app-down",
            "pg-connections-near-max",
            "high-5xx-ratio",
            "redis-near-maxmemory",
            "lock-contention",
            "memory-high",
            "alert",
            "deploy-before-errors",
        )
    } == {"live"}
    assert {
        by[r]
        for r in (
            "too-many-connections-logged",
            "rate-limited",
            "oom-kill",
            "error-storm",
            "lock-waits-logged",
            "access-log-5xx-ratio",
        )
    } == {"history"}


def test_history_alone_is_a_recovered_p3_saying_when_it_last_happened(tmp_path: Path) -> None:
    probes = healthy()
    probes["app1"]["service_journal"] = TOO_MANY.format(m=1) * 2 + TOO_MANY.format(m=2)
    findings = _triage(tmp_path, probes)
    (f,) = findings.findings
    assert (f.rule, f.severity, f.basis, f.recovered) == (
        "too-many-connections-logged",
        "P3",
        "history",
        True,
    )
    assert f.message.startswith("recovered: 3 event(s) in the window, the last at 05:52 UTC")
    assert f.last_seen == "2026-11-28T05:52:00Z"
    assert findings.severity == "P3" and findings.summary.startswith("P3: recovered")
    assert "recovered, earlier in the window" in findings.questions.down_or_degraded.why


def test_live_evidence_keeps_the_history_that_explains_it_as_context(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["pg_connections"] = POOL_FULL
    probes["app1"]["service_journal"] = TOO_MANY.format(m=9) * 3
    findings = _triage(tmp_path, probes)
    live, logged = findings.findings
    assert (live.rule, live.basis, live.severity) == ("pg-connections-near-max", "live", "P1")
    assert live.context == ("too-many-connections-logged",)
    assert (logged.rule, logged.basis, logged.severity, logged.recovered) == (
        "too-many-connections-logged",
        "history",
        "P1",
        False,
    )
    assert not logged.message.startswith("recovered")
    assert findings.severity == "P1"
    assert Findings.from_dict(findings.to_dict()) == findings  # context, last_seen, recovered round-trip


def test_a_faults_bundle_names_that_fault_first_not_the_leftovers_of_earlier_ones(tmp_path: Path) -> None:
    probes = healthy()
    # earlier in the window: an OOM kill, a pool exhaustion and rate limits, all healed since
    probes["app1"]["oom_events"] = (
        "[Sat Nov 28 05:51:10 2026] Memory cgroup out of memory: Killed process 4242 (python3) "
        "total-vm:1000kB\n"
    )
    probes["app1"]["service_journal"] = TOO_MANY.format(m=3) * 3 + "".join(
        f"2026-11-28T05:54:{i:02d}+0000 app1 sergas-app[1]: WARNING: zoho upstream status=429 rate limit "
        "exceeded\n"
        for i in range(5)
    )
    # now: a migration holds a lock
    probes["db1"]["pg_blocking_locks"] = BLOCKED
    findings = _triage(tmp_path, probes)
    first = findings.findings[0]
    assert (first.rule, first.basis, first.severity) == ("lock-contention", "live", "P2")
    assert findings.severity == "P2" and findings.summary.startswith("P2: Queries blocked behind a lock")
    leftovers = {f.rule: f for f in findings.findings[1:]}
    assert {"oom-kill", "too-many-connections-logged", "rate-limited"} <= set(leftovers)
    assert all(f.severity == "P3" and f.recovered and f.basis == "history" for f in leftovers.values())
    assert leftovers["oom-kill"].last_seen == "2026-11-28T05:51:10Z"


def test_lasting_history_keeps_its_severity(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["service_journal"] = (
        "2026-11-28T05:51:00+0000 db1 postgres[9]: PANIC:  could not read block\n"
    )
    (f,) = findings_by_rule(_triage(tmp_path, probes).to_dict())["data-loss-signs"]
    assert f["severity"] == "P0" and f["basis"] == "history" and not f["recovered"]


def test_the_report_says_what_is_live_and_what_happened_earlier(tmp_path: Path) -> None:
    from collector import report

    probes = healthy()
    probes["db1"]["pg_connections"] = POOL_FULL
    probes["app1"]["service_journal"] = TOO_MANY.format(m=9) * 3
    probes["app1"]["oom_events"] = (
        "[Sat Nov 28 05:51:10 2026] Memory cgroup out of memory: Killed process 4242 (python3) "
        "total-vm:1000kB\n"
    )
    path = make_bundle(tmp_path, probes)
    triage_bundle(path, seal=False)
    report.render_reports(path, ["md"])
    text = (path / "report.md").read_text().split("## Findings")[1]
    first, second, third = text.split("\n### ")[1:4]
    assert first.startswith("1. [P1] PostgreSQL connections near max_connections")
    assert "Evidence: live: the state now" in first
    assert (
        'What happened earlier that explains it:\n- "Too many connections" errors in the logs '
        "(too-many-connections-logged)" in first.replace("\\", "")
    )
    assert second.startswith("2. [P1]") and "history: log lines in the window (last at 05:59 UTC)" in second
    assert (
        third.startswith("3. [P3] The kernel killed")
        and "history, recovered: earlier in the window (last at 05:51 UTC)" in third
        and "recovered: 1 event(s)" in third
    )
