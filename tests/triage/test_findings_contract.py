"""The findings contract (collector.core): typed values with one from_dict/to_dict, a versioned schema,
one severity scale, and triage as the one place that computes key figures."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest
from triage_synth import healthy, make_bundle

import collector.report.data
import collector.tickets
import collector.triage.engine
from collector.bundle import Bundle
from collector.core import (
    FINDINGS_SCHEMA,
    SEVERITIES,
    Finding,
    Findings,
    IncidentSummary,
    KeyFigures,
    UsageError,
    severity_rank,
    worst_severity,
)
from collector.triage import FINDINGS_FILE, bundle_figures, read_findings, triage_bundle

ROOT = Path(__file__).resolve().parents[2]


def _oom_bundle(tmp_path: Path) -> Path:
    probes = healthy()
    probes["app1"]["oom_events"] = (
        "[Sat Nov 28 05:57:10 2026] Memory cgroup out of memory: Killed process 4242 (python3) "
        "total-vm:1000kB\n"
    )
    probes["db1"]["pg_blocking_locks"] = {"output": "", "status": "timeout", "rc": 124}
    return make_bundle(tmp_path, probes)


def test_findings_round_trip_through_findings_json(tmp_path: Path) -> None:
    findings = triage_bundle(_oom_bundle(tmp_path))
    assert isinstance(findings, Findings) and all(isinstance(f, Finding) for f in findings.findings)
    assert [f.rule for f in findings.findings] == ["oom-kill"] and findings.unknown[
        0
    ].rule == "lock-contention"
    raw = json.loads((tmp_path / "inc-test" / FINDINGS_FILE).read_text())
    assert raw == findings.to_dict() and raw["schema"] == FINDINGS_SCHEMA
    # rule states are pairs: as a map, `"auth-failures": "passed"` was scrubbed as a secret assignment
    assert {"rule": "auth-failures", "state": "passed"} in raw["rules"]
    assert Findings.from_dict(raw) == findings
    assert read_findings(Bundle.open(tmp_path / "inc-test")) == findings
    assert Findings.from_dict(json.loads(json.dumps(findings.to_dict()))).to_dict() == raw  # stable


def test_another_schema_is_a_clear_usage_error(tmp_path: Path) -> None:
    raw = triage_bundle(_oom_bundle(tmp_path)).to_dict()
    raw["schema"] = "incident-collector/findings/v1"
    with pytest.raises(
        UsageError, match=r"schema 'incident-collector/findings/v1'.*findings/v3.*collector triage"
    ):
        Findings.from_dict(raw)


@pytest.mark.parametrize(
    "path, message",
    [
        (("questions",), "required field 'questions' is missing"),
        (("findings", 0, "severity"), "finding oom-kill: required field 'severity' is missing"),
        (("findings", 0, "evidence", 0, "excerpt"), "evidence: required field 'excerpt' is missing"),
        (("security", "suspected"), "security: required field 'suspected' is missing"),
        (("figures", "error_ratio"), "figures: required field 'error_ratio' is missing"),
    ],
)
def test_a_missing_field_is_named_not_defaulted(
    tmp_path: Path, path: tuple[object, ...], message: str
) -> None:
    raw = triage_bundle(_oom_bundle(tmp_path)).to_dict()
    node = raw
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    del node[path[-1]]  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=message):
        Findings.from_dict(raw)


def test_a_wrong_type_or_severity_is_refused(tmp_path: Path) -> None:
    raw = triage_bundle(_oom_bundle(tmp_path)).to_dict()
    raw["findings"][0]["hosts"] = "app1"
    with pytest.raises(UsageError, match="'hosts' must be a list"):
        Findings.from_dict(raw)
    raw = triage_bundle(_oom_bundle(tmp_path / "b")).to_dict()
    raw["findings"][0]["severity"] = "SEV1"
    with pytest.raises(UsageError, match="'severity' is 'SEV1', not one of P0, P1, P2, P3"):
        Findings.from_dict(raw)


def test_one_severity_scale() -> None:
    assert SEVERITIES == ("P0", "P1", "P2", "P3")
    assert collector.triage.engine.SEVERITIES is SEVERITIES
    assert collector.tickets.SEVERITIES is SEVERITIES
    assert collector.report.data.SEVERITY_ORDER == (*SEVERITIES, "none")
    assert sorted(["P3", "none", "P0", "?", "P1"], key=severity_rank) == ["P0", "P1", "P3", "none", "?"]
    assert worst_severity(["P2", "P3", "x"]) == "P2" and worst_severity([]) == "none"


def test_key_figures_are_stored_and_read_back_not_recomputed(tmp_path: Path) -> None:
    path = _oom_bundle(tmp_path)
    stored = triage_bundle(path).figures
    assert stored.error_ratio == 0.0 and stored.disk_max_pct == {"app1": 10.0, "db1": 10.0, "redis1": 10.0}
    assert bundle_figures(path) == stored
    # what remediate's before/after reads is what triage stored, even if the evidence would now say otherwise
    bundle = Bundle.open(path)
    doc = read_findings(bundle)
    assert doc is not None
    bundle.write_json(FINDINGS_FILE, replace(doc, figures=replace(doc.figures, error_ratio=0.5)).to_dict())
    assert bundle_figures(path).error_ratio == 0.5
    # a bundle triage never ran on gets them computed, without writing anything
    (path / FINDINGS_FILE).unlink()
    assert bundle_figures(path) == stored and not (path / FINDINGS_FILE).exists()
    assert KeyFigures.from_dict(stored.to_dict()) == stored


def _imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }


def test_no_import_cycle_between_the_engine_and_the_measures() -> None:
    triage = ROOT / "collector" / "triage"
    assert "collector.triage.measures" in _imports(triage / "engine.py")
    for module in ("measures.py", "view.py", "figures.py", "patterns.py", "parsers.py"):
        assert "collector.triage.engine" not in _imports(triage / module), module  # engine → measures → view


def test_no_import_error_guard_around_our_own_modules() -> None:
    for folder in ("collector/triage", "collector/report", "collector/tickets"):
        for source in (ROOT / folder).glob("*.py"):
            assert "except ImportError" not in source.read_text(), source


def test_incident_summary_is_what_the_report_and_ticket_say_first(tmp_path: Path) -> None:
    findings = triage_bundle(_oom_bundle(tmp_path))
    summary = IncidentSummary.of("inc-test", findings)
    # an OOM kill in the window with no live sign now: recovered, at most P3, still named first
    assert (summary.severity, summary.headline, summary.hosts_affected) == (
        "P3",
        "The kernel killed a process of the app for lack of memory",
        ("app1",),
    )
    assert (
        summary.impact.startswith("minor issues; 0 of 3 hosts")
        and summary.security is None
        and summary.triaged
    )
    assert IncidentSummary.from_dict(summary.to_dict()) == summary
    untriaged = IncidentSummary.of("inc-test", None)
    assert (
        untriaged.severity == "unknown"
        and not untriaged.triaged
        and untriaged.headline == "Incident inc-test"
    )


def test_the_runbooks_response_times_live_with_the_scale() -> None:
    from collector.core import SEVERITY_RESPONSE_TIME
    from collector.incidents import lifecycle

    assert tuple(SEVERITY_RESPONSE_TIME) == SEVERITIES
    assert lifecycle.RESPONSE_TIME is SEVERITY_RESPONSE_TIME
