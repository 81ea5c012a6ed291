"""The runbook's incident report and status updates as written (issue 15, point 8).

Each field and section of the runbook's templates is asked of the rendered text with the value the
bundle gives it (not a placeholder where the value is known): the report's "Incident Report: [ID]", its
summary fields, the timeline milestones, the four stock action items, lessons learned and the post-mortem
meeting; the comms' status page link (from configuration), ETA, root cause, fix, downtime, the 48-hour
post-mortem promise and the thanks; the severity's response time in the report and triage's output.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from report_fixtures import FINDINGS_DOC
from rich.console import Console
from test_report_render import _text_of_html, _with_actions

from collector import report

MakeBundle = Callable[..., Path]
STATUS_PAGE = "https://status.example.com/incidents"
NOW = dt.datetime(2026, 11, 28, 5, 45, tzinfo=dt.UTC)


@pytest.fixture
def status_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A config file (the settings' own resolution) naming the status page."""
    config = tmp_path / "collector.yml"
    config.write_text(f"status_page_url: {STATUS_PAGE}\n")
    monkeypatch.setenv("COLLECTOR_CONFIG", str(config))
    monkeypatch.delenv("COLLECTOR_STATUS_PAGE_URL", raising=False)
    return STATUS_PAGE


@pytest.fixture
def no_status_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "empty.yml"
    config.write_text("{}\n")
    monkeypatch.setenv("COLLECTOR_CONFIG", str(config))
    monkeypatch.delenv("COLLECTOR_STATUS_PAGE_URL", raising=False)


# ------------------------------------------------------------------ the severity's response time


def test_response_time_is_the_runbooks_per_severity() -> None:
    from collector.core import response_time_text

    assert response_time_text("P0") == "respond immediately (within 2 minutes)"
    assert response_time_text("P1") == "respond within 15 minutes"
    assert response_time_text("P2") == "respond within 1 hour"
    assert response_time_text("P3") == "respond within 4 hours"
    assert response_time_text("none") == "" and response_time_text("unknown") == ""


def test_triage_output_names_the_response_time() -> None:
    from collector.cli.triage import show

    console = Console(record=True, width=200, highlight=False)
    show(console, FINDINGS_DOC)
    first = console.export_text().splitlines()[0]
    assert first.startswith("severity P1 — respond within 15 minutes"), first


# ------------------------------------------------------------------ the incident report


def _section(md: str, heading: str) -> str:
    """The text of one `## heading` section of report.md."""
    return md.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_report_follows_the_runbook_template_section_for_section(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle())
    report.render_reports(path)
    md = (path / "report.md").read_text()
    page = _text_of_html((path / "report.html").read_text())
    assert md.startswith("# Incident Report: inc-test\n")
    assert "Incident Report: inc-test" in page.split("Summary")[0]
    assert "<title>Incident Report: inc-test" in (path / "report.html").read_text()

    strict = MarkdownIt("commonmark")
    tokens = strict.parse(md)
    headings = [
        tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"
    ]
    runbook = ["Summary", "Timeline", "Root cause analysis", "Action items", "Lessons learned"]
    assert [h for h in headings if h in runbook] == runbook  # the runbook's order
    assert headings[-1] == "Post-mortem meeting"

    summary = _section(md, "Summary")
    for field, value in (
        ("Date", "2026-11-28"),
        ("Duration", "12 min 00 s"),
        ("Severity", "P1 (major degradation) — respond within 15 minutes"),
        ("Impact", "degraded; 2 of 6 hosts; about 38.0 % of requests fail (5xx)"),
        ("Root cause", "Database connection pool exhausted on app1, db1"),
        ("Resolution", "kill-idle-connections (minutes=5) on db1, verified"),
    ):
        assert f"- **{field}:** {value}" in summary, (field, summary)
    for field in ("Date", "Duration", "Severity", "Impact", "Root cause", "Resolution"):
        assert f"{field}\n" in page or f"{field} " in page, field
    assert (
        "respond within 15 minutes" in page and "kill-idle-connections (minutes=5) on db1, verified" in page
    )


def test_timeline_milestones_are_dated_from_the_bundle_or_unknown(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle())
    report.render_reports(path)
    md = (path / "report.md").read_text()
    timeline = _section(md, "Timeline")
    expected = {
        "Detected": "2026-11-28 05:34:00 UTC",  # the first alert's startsAt
        "Acknowledged": "unknown",  # no incident record in a bundle collected by hand
        "Investigating": "2026-11-28 05:40:00 UTC",  # evidence collection started
        "Mitigated": "2026-11-28 05:44:05 UTC",  # kill-idle-connections applied
        "Resolved": "2026-11-28 05:44:05 UTC",  # verification passed
    }
    rows = [line for line in timeline.splitlines() if line.startswith("| ")]
    for milestone, when in expected.items():
        row = next((r for r in rows if r.startswith(f"| {milestone} |")), None)
        assert row is not None and f"| {when}" in row, (milestone, timeline)
    assert "HighErrorRatio" in next(r for r in rows if r.startswith("| Detected |"))
    assert "kill-idle-connections" in next(r for r in rows if r.startswith("| Mitigated |"))
    page = _text_of_html((path / "report.html").read_text())
    for milestone in expected:
        assert milestone in page
    assert "Acknowledged unknown" in page

    bare = make_bundle(name="inc-open")  # nothing applied yet: mitigated and resolved are not known
    report.render_reports(bare, ["md"])
    open_timeline = _section((bare / "report.md").read_text(), "Timeline")
    for milestone in ("Acknowledged", "Mitigated", "Resolved"):
        assert f"| {milestone} | unknown |" in open_timeline, (milestone, open_timeline)


def test_action_items_are_the_runbooks_four_then_the_findings(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle())
    report.render_reports(path)
    md = (path / "report.md").read_text()
    items = [line for line in _section(md, "Action items").splitlines() if line.startswith("- [ ]")]
    stock = items[:4]
    assert (
        stock[0].startswith("- [ ] TODO: Add monitoring") and "Database connection pool exhausted" in stock[0]
    )
    assert stock[1].startswith("- [ ] TODO: Fix the root cause") and "max_connections" in stock[1]
    assert stock[2].startswith("- [ ] TODO: Update the runbook") and "connection pool exhausted" in stock[2]
    assert stock[3].startswith("- [ ] TODO: Review capacity planning") and "db1" in stock[3]
    for item in items:
        assert item.endswith("owner: , due: )"), item  # blank, for the post-mortem to fill
    page = _text_of_html((path / "report.html").read_text())
    for start in ("Add monitoring", "Fix the root cause", "Update the runbook", "Review capacity planning"):
        assert start in page


def test_lessons_learned_and_the_post_mortem_meeting(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle())
    report.render_reports(path)
    md = (path / "report.md").read_text()
    lessons = _section(md, "Lessons learned")
    for heading in ("What went well", "What went wrong", "Where we got lucky"):
        assert f"### {heading}" in lessons, heading
    assert "Time to recovery: 12 min 00 s." in lessons
    meeting = _section(md, "Post-mortem meeting")
    assert "within 48 h of resolution: by 2026-11-30 05:44:05 UTC" in meeting
    for who in ("incident commander", "on-call", "service owner", "alice", "bob"):
        assert who in meeting, who
    agenda = [line for line in meeting.splitlines() if line[:2] in ("1.", "2.", "3.", "4.")]
    assert [a.split(" ", 1)[1].split(":")[0] for a in agenda] == [
        "Timeline review",
        "Root cause analysis (5 whys)",
        "Action items",
        "Process improvements",
    ]
    page = _text_of_html((path / "report.html").read_text())
    assert "Post-mortem meeting" in page and "2026-11-30 05:44:05 UTC" in page and "5 whys" in page
    assert "Where we got lucky" in page

    ongoing = make_bundle(name="inc-ongoing")
    report.render_reports(ongoing, ["md"])
    meeting = _section((ongoing / "report.md").read_text(), "Post-mortem meeting")
    assert "within 48 h of resolution (not resolved yet)" in meeting


# ------------------------------------------------------------------ the status updates


def test_initial_update_carries_the_status_page_and_an_eta(make_bundle: MakeBundle, status_page: str) -> None:
    text = report.render_comms(_with_actions(make_bundle(), {"actions": []}), "initial", now=NOW)
    assert f"Status page: {status_page}\n" in text
    assert "Severity: P1 — respond within 15 minutes" in text
    assert (
        "ETA: not known yet; pending approval of " in text
        and "next update by 2026-11-28 06:00:00 UTC" in text
    )


def test_mitigation_update_carries_root_cause_actions_and_eta(
    make_bundle: MakeBundle, status_page: str
) -> None:
    text = report.render_comms(_with_actions(make_bundle()), "mitigation", now=NOW)
    assert f"Status page: {status_page}\n" in text
    assert "Root cause: Database connection pool exhausted on app1, db1" in text
    assert "kill-idle-connections (minutes=5) on db1" in text
    assert (
        "ETA: service restored at 2026-11-28 05:44:05 UTC (verified); monitoring until 2026-11-28 06:00:00"
        in text
    )
    unapplied = report.render_comms(make_bundle(name="inc-open"), "mitigation", now=NOW)
    assert "Root cause: Database connection pool exhausted on app1, db1" in unapplied
    assert "ETA: not known yet; pending approval of `collector remediate kill-idle-connections" in unapplied


def test_resolved_update_is_the_runbooks_as_written(make_bundle: MakeBundle, status_page: str) -> None:
    text = report.render_comms(_with_actions(make_bundle()), "resolved", now=NOW)
    assert "Duration: 12 min 00 s of downtime (2026-11-28 05:32:05 UTC → 2026-11-28 05:44:05 UTC)" in text
    assert "Root cause: Database connection pool exhausted on app1, db1" in text
    assert "Fix: kill-idle-connections (minutes=5) on db1, verified" in text
    assert "A detailed post-mortem will be published within 48 hours (by 2026-11-30 05:44:05 UTC)." in text
    assert "Thank you for your patience." in text
    assert f"Status page: {status_page}\n" in text
    assert "24 hours" not in text


def test_without_a_status_page_the_update_says_how_to_set_one(
    make_bundle: MakeBundle, no_status_page: None
) -> None:
    path = _with_actions(make_bundle())
    for stage in report.STAGES:
        text = report.render_comms(path, stage, now=NOW)
        assert "Status page: not configured (setting status_page_url)\n" in text, stage
