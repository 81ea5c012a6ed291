"""The report reads triage's typed findings, stored key figures and evidence patterns, and fails closed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import FINDINGS, SEEDED_SECRET

from collector import report
from collector.bundle import Bundle
from collector.core import UsageError
from collector.redact import Redactor
from collector.report.render import RedactionFailed
from collector.triage import patterns, triage_bundle

MakeBundle = Callable[..., Path]
TRIAGE_TESTS = Path(__file__).resolve().parents[1] / "triage"


def _findings(**changes: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(FINDINGS))
    doc.update(changes)
    return doc


@pytest.mark.parametrize("drop", ["questions", "security", "unknown", "figures"])
def test_a_findings_json_missing_a_field_stops_the_report_loudly(make_bundle: MakeBundle, drop: str) -> None:
    doc = _findings()
    del doc[drop]
    path = make_bundle(findings=doc)
    with pytest.raises(UsageError, match=f"required field '{drop}' is missing"):
        report.render_reports(path)
    assert not (path / "report.md").exists() and not (path / "TICKET.md").exists()


def test_a_findings_json_of_another_schema_stops_the_report(make_bundle: MakeBundle) -> None:
    path = make_bundle(findings=_findings(schema="incident-collector/findings/v1"))
    with pytest.raises(UsageError, match="findings/v1"):
        report.render_reports(path)


def test_a_findings_json_that_is_not_json_stops_the_report(make_bundle: MakeBundle) -> None:
    path = make_bundle(findings=None)
    (path / "findings.json").write_text('{"schema": "incident-collector/findings/v2", ')
    with pytest.raises(UsageError, match="findings.json is not valid JSON"):
        report.render_reports(path)


def test_key_figures_are_triages_stored_ones(make_bundle: MakeBundle) -> None:
    # the bundle's Prometheus answer says 38 %; triage stored 55 %: the report shows what triage decided on
    doc = _findings()
    doc["figures"]["error_ratio"] = 0.55
    path = make_bundle(findings=doc)
    report.render_reports(path, ["md"])
    figures = (path / "report.md").read_text().split("## Key figures")[1].split("## ")[0]
    row = next(line for line in figures.splitlines() if line.startswith("| 5xx ratio |"))
    assert "55.0 %" in row and "38.0 %" not in row


def test_timeline_oom_uses_triages_pattern(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert report._OOM_LINE is patterns.OOM and report._ERROR_LINE is patterns.ERROR
    monkeypatch.syspath_prepend(str(TRIAGE_TESTS))
    from triage_synth import healthy, make_bundle

    probes = healthy()
    probes["app1"]["oom_events"] = (
        "[Sat Nov 28 05:57:10 2026] Memory cgroup out of memory: "
        "Killed process 4242 (python3) total-vm:1000kB\n"
    )
    path = make_bundle(tmp_path, probes)
    (oom,) = [f for f in triage_bundle(path).findings if f.rule == "oom-kill"]
    excerpt = oom.evidence[0].excerpt
    events = [e for e in report.build_timeline(Bundle.open(path), None, None) if e.kind == "oom"]
    assert [e.hosts for e in events] == [("app1",)]
    assert excerpt.split("] ", 1)[1] in events[0].text  # the line triage matched is the timeline's OOM event


def _broken_scrubber(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: Redactor, data: bytes) -> list[tuple[int, int, int, str]]:
        raise RuntimeError("scrubber bug")

    monkeypatch.setattr(Redactor, "_spans", fail)


def test_report_redaction_fails_closed(make_bundle: MakeBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_bundle()
    report.render_reports(path)
    assert "Database connection pool exhausted" in (path / "report.md").read_text()
    _broken_scrubber(monkeypatch)
    with pytest.raises(RedactionFailed, match=r"report.md: .*\(RuntimeError\)"):
        report.render_reports(path)
    for name in ("report.html", "report.md", "TICKET.md"):
        text = (path / name).read_text()
        assert text.startswith(f"[{name} withheld: redaction failed ("), name
        assert "Database connection pool exhausted" not in text and SEEDED_SECRET not in text
    monkeypatch.undo()
    assert Bundle.open(path).verify() == []  # sealed with the placeholders


def test_comms_redaction_fails_closed(make_bundle: MakeBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_bundle()
    _broken_scrubber(monkeypatch)
    text = report.render_comms(path, "initial")
    assert text.startswith("[status update withheld: redaction failed (")
    assert "Database connection pool exhausted" not in text


def test_cli_report_says_the_reports_were_withheld(
    make_bundle: MakeBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from collector.cli import main

    path = make_bundle()
    _broken_scrubber(monkeypatch)
    result = CliRunner().invoke(main, ["report", str(path), "--format", "md"])
    assert result.exit_code == 1
    assert "reports withheld, redaction failed: report.md" in result.output
    assert (path / "report.md").read_text().startswith("[report.md withheld")
