"""report.html / report.md / TICKET.md / comms rendered from real (synthetic-run) bundles."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt
from report_fixtures import ACTIONS, FINDINGS, FINDINGS_DOC, SEEDED_SECRET, SEEDED_TOKEN

from collector import report
from collector.bundle import Bundle

MakeBundle = Callable[..., Path]


def _with_actions(path: Path, actions: dict[str, Any] = ACTIONS) -> Path:
    """Put actions.json in as remediate apply does (Bundle.write_json, redacted on the way in),
    then re-seal."""
    bundle = Bundle.open(path)
    bundle.write_json("actions.json", actions)
    bundle.seal()
    return path


def _text_of_html(markup: str) -> str:
    """The visible text of an HTML document (what a reader sees), entities decoded."""

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.skip += tag in ("style", "script")

        def handle_endtag(self, tag: str) -> None:
            self.skip -= tag in ("style", "script")

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(markup)
    return " ".join(" ".join(parser.parts).split())


# ------------------------------------------------------------------ pure functions


def test_parse_time_handles_alertmanager_nanoseconds_offsets_and_dmesg() -> None:
    assert report.parse_time("2026-11-28T05:34:00.123456789Z") == dt.datetime(
        2026, 11, 28, 5, 34, 0, 123456, tzinfo=dt.UTC
    )
    assert report.parse_time("2026-11-28T07:34:00+02:00") == dt.datetime(2026, 11, 28, 5, 34, tzinfo=dt.UTC)
    assert report.line_time("2026-11-28T05:32:07+0000 app1 sergas-app[1]: ERROR: x") == dt.datetime(
        2026, 11, 28, 5, 32, 7, tzinfo=dt.UTC
    )
    assert report.line_time("[Sat Nov 28 05:35:12 2026] Memory cgroup out of memory") == dt.datetime(
        2026, 11, 28, 5, 35, 12, tzinfo=dt.UTC
    )
    assert report.line_time("[12345.678] Out of memory: Killed process 1") is None
    assert report.parse_time("not a time") is None


def test_first_matching_line_finds_the_earliest_real_match() -> None:
    text = "a errors-free line\nb path=/x status=200\nc ERROR: boom\nd FATAL: later\n"
    error, oom = report._ERROR_LINE, report._OOM_LINE
    assert report.first_matching_line(text, error.regex, error.needles) == "c ERROR: boom"
    assert (
        report.first_matching_line("İİ x\nkernel: Out of memory: Killed process 1\n", oom.regex, oom.needles)
        == "kernel: Out of memory: Killed process 1"
    )
    assert report.first_matching_line("nothing here\n", oom.regex, oom.needles) is None


def test_markdown_filters_keep_log_text_from_breaking_out() -> None:
    assert report.md_inline("a|b <img src=x> [x](y) pg_connections _em_") == (
        r"a\|b \<img src=x\> \[x\](y) pg_connections \_em\_"
    )
    block = report.md_block("line with ``` fence\nnext")
    assert block.startswith("````text\n") and block.endswith("\n````")
    assert report.md_code("a `b` c") == "``a `b` c``"


def test_sparkline_is_numbers_only_svg_with_escaped_label() -> None:
    chart = report.make_chart('err"<x>', [(0, 0.0), (30, 0.5), (60, 0.25)], "ratio")
    assert str(chart.svg).startswith("<svg") and "<x>" not in str(chart.svg) and "&lt;x&gt;" in str(chart.svg)
    assert (chart.first, chart.last, chart.peak) == ("0.0 %", "25.0 %", "50.0 %")
    assert chart.text[0] == "▁" and chart.text[1] == "█"


def test_figure_rows_flag_the_runbook_thresholds() -> None:
    rows = report.figure_rows(
        {
            "error_ratio": 0.42,
            "p95_s": 0.15,
            "pg_connections": {"db1": 95},
            "pg_max_connections": {"db1": 100},
            "disk_max_pct": {"app1": 97.0, "db1": 40.0},
            "mem_used_pct": {"app1": None},
            "redis_used_memory": {"redis1": 900 * 2**20},
            "redis_maxmemory": {"redis1": 2**30},
        }
    )
    by = {r.key: r for r in rows}
    assert [r.key for r in rows] == [
        "error_ratio",
        "p95_s",
        "pg_connections",
        "mem_used_pct",
        "disk_max_pct",
        "redis_used_memory",
    ]  # maxima are shown with what they limit
    assert by["error_ratio"].value == "42.0 %" and by["error_ratio"].bad
    assert by["p95_s"].value == "150 ms" and not by["p95_s"].bad
    assert by["pg_connections"].value == "95 / 100 (95 %)" and by["pg_connections"].bad
    assert (
        by["disk_max_pct"].host == "app1" and by["disk_max_pct"].value == "97.0 %" and by["disk_max_pct"].bad
    )
    assert by["disk_max_pct"].detail == "app1 97.0 %, db1 40.0 %"
    assert by["mem_used_pct"].value == "unknown" and not by["mem_used_pct"].bad
    assert by["redis_used_memory"].value == "900.0 MiB / 1.0 GiB (88 %)" and not by["redis_used_memory"].bad


# ------------------------------------------------------------------ timeline


def test_timeline_merges_every_source_in_time_order(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle())
    bundle = Bundle.open(path)
    events = report.build_timeline(bundle, FINDINGS_DOC, ACTIONS)
    kinds = [e.kind for e in events]
    assert [e.at for e in events] == sorted(e.at for e in events)
    for kind in ("deploy", "error", "alert", "oom", "collection", "plan", "approval", "apply", "verify"):
        assert kind in kinds, kind
    by_kind = {e.kind: e for e in reversed(events)}  # first of each kind
    assert by_kind["deploy"].text.startswith("Deploy 41d0e77")
    assert report.fmt_time(by_kind["alert"].at) == "2026-11-28 05:34:00 UTC"
    assert "HighErrorRatio" in by_kind["alert"].text
    first_error = next(e for e in events if e.kind == "error")
    assert report.fmt_time(first_error.at) == "2026-11-28 05:32:05 UTC" and first_error.hosts == ("db1",)
    assert first_error.source == "hosts/db1/service_journal.txt"
    assert first_error.text == "First error: postgres[90]: FATAL: sorry, too many clients already"
    oom = next(e for e in events if e.kind == "oom")
    assert report.fmt_time(oom.at) == "2026-11-28 05:35:12 UTC" and "Killed process 4242" in oom.text
    approval = next(e for e in events if e.kind == "approval")
    assert "approved by bob" in approval.text and report.fmt_time(approval.at) == "2026-11-28 05:43:10 UTC"
    verify = next(e for e in events if e.kind == "verify")
    assert "passed (2 checks)" in verify.text


def test_service_log_wins_over_other_units_noise() -> None:
    class Outputs:
        texts: ClassVar[dict[str, str]] = {
            "service_journal": "2026-11-28T05:50:00+0000 app1 python3[1]: ERROR: GET /api/orders failed\n",
            "journal_errors": "2026-11-28T05:40:00+0000 app1 sshd[9]: error: kex_exchange_identification\n",
        }

        def text(self, host: str, probe: str) -> str | None:
            return self.texts.get(probe)

        def probe(self, host: str, probe: str) -> dict[str, Any]:
            return {"started": "2026-11-28T06:00:00Z"}

    found = report._first_line(Outputs(), "app1", report._JOURNAL_PROBES, report._ERROR_LINE)
    assert (
        found is not None
        and found[1] == "python3[1]: ERROR: GET /api/orders failed"
        and found[2] == "service_journal"
    )


def test_incident_start_ignores_old_oom_unless_a_finding_is_about_memory() -> None:
    at = lambda m: dt.datetime(2026, 11, 28, 5, m, tzinfo=dt.UTC)
    timeline = [
        report.TimelineEvent(at(1), "oom", "Out of memory: old kill", ("app1", "web01")),
        report.TimelineEvent(at(20), "error", "First error: sshd noise", ("web01",), probe="journal_errors"),
        report.TimelineEvent(at(25), "error", "First error: sshd noise", ("db1",), probe="journal_errors"),
        report.TimelineEvent(at(30), "error", "First error: app", ("app1",), probe="service_journal"),
        report.TimelineEvent(at(35), "alert", "Alert X firing", ()),
    ]
    assert report._incident_start(timeline, ["app1", "db1"], False) == at(
        30
    )  # service log beats db1's sshd noise
    assert report._incident_start(timeline, ["app1"], True) == at(1)  # a finding is about memory
    assert report._incident_start(timeline[4:], [], False) == at(35)
    assert report._incident_start(timeline[1:3], ["db1"], False) == at(25)  # nothing better: any unit's error


def test_identical_events_on_many_hosts_are_one_line(make_bundle: MakeBundle) -> None:
    bundle = Bundle.open(make_bundle(n_web=0))
    events = report.build_timeline(bundle, None, None)
    app_deploys = [e for e in events if e.kind == "deploy"]
    assert len(app_deploys) == 2  # app1's two commits; db1/web hosts have no deploy_log
    merged = report._merge_hosts(
        [
            report.TimelineEvent(app_deploys[0].at, "deploy", "Deploy x", (h,))
            for h in ("app1", "app2", "app3")
        ]
    )
    assert len(merged) == 1 and merged[0].hosts == ("app1", "app2", "app3")


def test_break_glass_is_loud_in_timeline_and_report(make_bundle: MakeBundle) -> None:
    actions = json.loads(json.dumps(ACTIONS))
    actions["actions"][0].update(approver=None, approved=None, break_glass="db down, approver unreachable")
    path = _with_actions(make_bundle(), actions)
    report.render_reports(path)
    assert "BREAK-GLASS" in (path / "report.md").read_text()
    assert "BREAK-GLASS: db down, approver unreachable" in _text_of_html((path / "report.html").read_text())


# ------------------------------------------------------------------ the reports


def test_reports_hold_the_skeleton_and_the_facts(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle(n_web=2))
    written = report.render_reports(path)
    assert [p.name for p in written] == ["report.html", "report.md", "TICKET.md"]
    page = _text_of_html((path / "report.html").read_text())
    md = (path / "report.md").read_text()
    for text in (page, md):
        for section in (
            "Summary",
            "Timeline",
            "Findings",
            "Key figures",
            "Root cause",
            "Resolution",
            "Action items",
            "Lessons learned",
        ):
            assert section in text, section
        for host in ("app1", "db1", "redis1", "web01", "web02"):
            assert host in text, host
        assert "Database connection pool exhausted" in text
        assert "collector remediate kill-idle-connections --hosts db1 --param minutes=5" in text
        assert "approved by bob" in text and "alice" in text
        assert "2026-11-28 05:32:05 UTC" in text  # incident start = first error
        assert "2026-11-28 05:44:05 UTC" in text  # resolved = verified apply
        assert "12 min 00 s" in text  # 05:32:05 → 05:44:05
        assert "redis_memory" in text.replace("\\_", "_")  # the rule that could not be evaluated
    assert "P1" in page.split("Summary")[0]  # severity in the header
    assert "42.0 %" in page and "0.2 %" in page  # before/after error ratio
    assert "38.0 % ▲" in page and "720 ms ▲" in page  # key figures from the instant queries
    assert "97.0 % ▲" in page and "98 / 100 (98 %) ▲" in page
    assert "pg_long_queries" in md.replace("\\_", "_") and "timeout" in md
    assert "No route to host" in md


def test_html_autoescapes_every_value(make_bundle: MakeBundle) -> None:
    path = make_bundle()
    report.render_reports(path, ["html"])
    markup = (path / "report.html").read_text()
    assert "<script" not in markup.lower()
    assert "High 5xx ratio &lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert "&lt;b&gt;x&lt;/b&gt;" in markup and "<b>x</b>" not in markup
    assert not (path / "report.md").exists()  # only the requested format (+ TICKET.md)
    assert (path / "TICKET.md").is_file()


def test_html_is_self_contained(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle())
    report.render_reports(path, ["html"])
    markup = (path / "report.html").read_text()

    class Refs(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.refs: list[tuple[str, str, str]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)
            for name, value in attrs:
                if name in ("src", "href", "srcset", "data", "poster", "action", "xlink:href"):
                    self.refs.append((tag, name, value or ""))

    refs = Refs()
    refs.feed(markup)
    assert "style" in refs.tags and "svg" in refs.tags
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(refs.tags)
    assert all(tag == "a" and name == "href" for tag, name, _ in refs.refs), refs.refs
    assert all(
        not re.match(r"^([a-z][a-z0-9+.-]*:|//|/)", value, re.IGNORECASE) for _, _, value in refs.refs
    ), refs.refs
    assert any(value == "hosts/app1/journal_errors.txt" for _, _, value in refs.refs)
    css = markup[markup.index("<style>") : markup.index("</style>")]
    assert "@media print" in css and "url(" not in css and "@import" not in css


def test_markdown_parses_as_commonmark_with_the_same_facts(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle(n_web=1))
    report.render_reports(path, ["md"])
    md = (path / "report.md").read_text()
    strict = MarkdownIt("commonmark")
    tokens = strict.parse(md)
    headings = [
        tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"
    ]
    assert headings == [
        "Summary",
        "Timeline",
        "Findings",
        "Key figures",
        "Hosts and probes",
        "Root cause analysis",
        "Resolution",
        "Action items",
        "Lessons learned",
        "Post-mortem meeting",
    ]
    rendered = _text_of_html(strict.render(md))
    for fact in (
        "P1",
        "Database connection pool exhausted",
        "High 5xx ratio <script>alert(1)</script>",
        "Out-of-memory kill on app1",
        "app1",
        "db1",
        "redis1",
        "web01",
        "kill-idle-connections",
        "approved by bob",
        "idle|98|100",
        "2026-11-28 05:34:00 UTC",
    ):
        assert fact in rendered, fact
    assert "<script>" not in strict.render(md)  # escaped, never raw HTML
    # Pipe tables are GFM; with tables on, the timeline is a real table with one row per event.
    gfm = MarkdownIt("commonmark").enable("table")
    table_html = gfm.render(md)
    assert table_html.count("<table>") >= 5
    assert re.search(r"<td>2026-11-28 05:43:10 UTC</td>\s*<td>approval</td>", table_html)
    links = [
        t for t in strict.parse(md) if t.type == "inline" for t in t.children or [] if t.type == "link_open"
    ]
    assert any(link.attrs.get("href") == "hosts/app1/journal_errors.txt" for link in links)


def test_ticket_md_is_short_and_says_where_the_bundle_is(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle())
    report.render_reports(path)
    ticket = (path / "TICKET.md").read_text()
    assert ticket.startswith("# [P1] Database connection pool exhausted\n")
    assert "`inc-test.tar.gz`" in ticket and "`inc-test.tar.gz.sha256`" in ticket and str(path) in ticket
    assert "approved by bob" in ticket and "passed (2 checks)" in ticket
    assert "- **Severity:** P1 — respond within 15 minutes\n" in ticket
    assert len(ticket.splitlines()) < 40
    assert "High 5xx ratio \\<script\\>alert(1)\\</script\\> on fleet-wide (monitoring)" in ticket
    assert "`findings.json`, `actions.json`, `manifest.json`" in ticket
    MarkdownIt("commonmark").parse(ticket)


def test_report_without_triage_or_actions_still_renders(make_bundle: MakeBundle) -> None:
    path = make_bundle(findings=None)
    report.render_reports(path)
    md = (path / "report.md").read_text()
    assert md.startswith("# Incident Report: inc-test\n") and "**[unknown] Incident inc-test**" in md
    assert "Triage has not run" in md and "No remediation recorded" in md


def test_unreadable_side_file_is_said_not_hidden(make_bundle: MakeBundle) -> None:
    path = make_bundle()
    (path / "actions.json").write_text('{"actions": [ {"verify": {"passed": «REDACTED:password:2»}} ]}')
    Bundle.open(path).seal()
    report.render_reports(path)
    assert "actions.json is not valid JSON" in (path / "report.md").read_text()
    assert "actions.json is not valid JSON" in (path / "report.html").read_text()


# ------------------------------------------------------------------ secrets and the archive


def test_seeded_secret_never_reaches_a_report(make_bundle: MakeBundle) -> None:
    path = make_bundle(findings=None)
    # A finding whose excerpt carries the raw secret, written past the bundle's redactor on purpose:
    # the report's own write must scrub it.
    raw = json.loads(json.dumps(FINDINGS))
    raw["findings"][0]["evidence"][1]["excerpt"] = f"postgresql://sergas:{SEEDED_SECRET}@db1/sergas"
    (path / "findings.json").write_text(json.dumps(raw))
    Bundle.open(path).seal()
    report.render_reports(path)
    html_text = (path / "report.html").read_text()
    md = (path / "report.md").read_text()
    for text in (html_text, md, (path / "TICKET.md").read_text()):
        assert SEEDED_SECRET not in text and SEEDED_TOKEN not in text
    assert "postgresql://sergas:«REDACTED:" in md  # the excerpt is there, scrubbed
    for stage in report.STAGES:
        assert SEEDED_SECRET not in report.render_comms(path, stage)
    with tarfile.open(path.parent / "inc-test.tar.gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name != "inc-test/findings.json":  # planted raw above, on purpose
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert SEEDED_SECRET.encode() not in data and SEEDED_TOKEN.encode() not in data, member.name


def test_archive_is_deterministic_and_verified_after_report(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle())
    report.render_reports(path)
    archive = path.parent / "inc-test.tar.gz"
    first = archive.read_bytes()
    first_report = (path / "report.html").read_bytes()
    report.render_reports(path)
    assert archive.read_bytes() == first
    assert (path / "report.html").read_bytes() == first_report
    assert Bundle.open(path).verify() == []
    sha_line = (path.parent / "inc-test.tar.gz.sha256").read_text()
    assert sha_line == f"{hashlib.sha256(first).hexdigest()}  inc-test.tar.gz\n"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first))) as tar:
        names = tar.getnames()
    assert {"inc-test/report.html", "inc-test/report.md", "inc-test/TICKET.md"} <= set(names)
    sums = (path / "SHA256SUMS").read_text()
    assert f"{hashlib.sha256(first_report).hexdigest()}  report.html" in sums


def test_33_host_bundle_names_every_host(make_bundle: MakeBundle) -> None:
    path = make_bundle(n_web=30, web_errors=True)
    report.render_reports(path)
    page = _text_of_html((path / "report.html").read_text())
    for i in range(1, 31):
        assert f"web{i:02d}" in page
    assert "33 (lab, engine ssh)" in page
    md = (path / "report.md").read_text()
    timeline = md.split("## Timeline")[1].split("## Findings")[0]
    assert "First errors on 30 hosts no finding names (earliest shown): sshd" in timeline
    assert timeline.count("| error |") == 3  # db1, app1, and the 30 bystanders folded into one


# ------------------------------------------------------------------ comms


def test_comms_stages_fill_the_runbook_updates(make_bundle: MakeBundle) -> None:
    path = _with_actions(make_bundle())
    now = dt.datetime(2026, 11, 28, 5, 45, tzinfo=dt.UTC)
    initial = report.render_comms(path, "initial", now=now)
    assert initial.startswith("🚨 INCIDENT [P1] Database connection pool exhausted — INVESTIGATING")
    assert "Next update: 2026-11-28 06:00:00 UTC (in 15 minutes)" in initial
    assert "Hosts affected: app1, db1\n" in initial  # not the `monitoring` pseudo-host
    assert "Impact: degraded; 2 of 6 hosts; about 38.0 % of requests fail (5xx)" in initial
    assert "[P2] Out-of-memory kill on app1" in initial
    mitigation = report.render_comms(path, "mitigation", now=now)
    assert "MITIGATION APPLIED, MONITORING" in mitigation
    assert "kill-idle-connections (minutes=5) on db1" in mitigation
    assert (
        "Memory used (db1): 30.0 % → 31.0 %" in mitigation and "(app1)" not in mitigation.split("Before")[1]
    )
    assert "max_connections" not in mitigation and "p95" not in mitigation and "approved by bob" in mitigation
    assert "5xx ratio: 42.0 % → 0.2 %" in mitigation
    assert "PostgreSQL connections (db1): 98 → 9" in mitigation
    resolved = report.render_comms(path, "resolved", now=now)
    assert resolved.startswith("✅ RESOLVED [P1]")
    assert "Resolved: 2026-11-28 05:44:05 UTC" in resolved and "Duration: 12 min 00 s" in resolved
    assert "verification has not passed" not in resolved


def test_same_mitigation_suggested_once_and_prevention_fits_the_scenario(make_bundle: MakeBundle) -> None:
    findings = json.loads(json.dumps(FINDINGS))
    twin = json.loads(json.dumps(findings["findings"][0]))
    twin.update(id="pg-connections-near-max", title="PostgreSQL connections near max_connections")
    findings["findings"].append(twin)
    findings["findings"][1]["scenario"] = "High error rate"
    path = make_bundle(findings=findings)
    report.render_reports(path)
    md = (path / "report.md").read_text()
    command = "collector remediate kill-idle-connections --hosts db1 --param minutes=5"
    assert md.split("## Resolution")[1].split("## Action items")[0].count(command) == 1
    items = md.split("## Action items")[1].split("## Lessons")[0]
    assert items.count(command) == 1
    assert "rate limit" not in items  # "High error rate" is not about rate limiting


def test_security_flag_is_a_banner_everywhere(make_bundle: MakeBundle) -> None:
    findings = json.loads(json.dumps(FINDINGS))
    findings["security"] = {
        "suspected": True,
        "reasons": ["Auth failures: 400 failed logins from one address"],
        "advice": "preserve this bundle, involve the security on-call",
    }
    path = make_bundle(findings=findings)
    report.render_reports(path)
    assert "Possible security incident: Auth failures: 400 failed logins" in _text_of_html(
        (path / "report.html").read_text()
    )
    assert "Possible security incident:** Auth failures" in (path / "report.md").read_text()
    assert "SECURITY: possible security incident" in report.render_comms(path, "initial")
    clear = make_bundle(name="inc-clear")
    report.render_reports(clear)
    assert "Possible security incident" not in (clear / "report.md").read_text()


def test_resolved_comms_warn_when_not_verified(make_bundle: MakeBundle) -> None:
    text = report.render_comms(make_bundle(), "resolved")
    assert "verification has not passed yet" in text


# ------------------------------------------------------------------ command line


@pytest.fixture
def main() -> Any:
    """The real `collector` group (imported here so a sibling step's broken module fails only these tests)."""
    from collector.cli import main as collector_main

    return collector_main


def test_cli_report_and_comms(make_bundle: MakeBundle, main: Any) -> None:
    path = make_bundle()
    runner = CliRunner()
    result = runner.invoke(main, ["report", str(path), "--format", "md"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(path / "report.md"), str(path / "TICKET.md")]
    result = runner.invoke(main, ["comms", str(path), "--stage", "initial"])
    assert result.exit_code == 0 and "INVESTIGATING" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["report", "{missing}"],
        ["report", "{notbundle}"],
        ["comms", "{notbundle}", "--stage", "initial"],
        ["report", "{bundle}", "--format", "pdf"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    make_bundle: MakeBundle, tmp_path: Path, args: list[str], main: Any
) -> None:
    bundle = make_bundle()
    notbundle = tmp_path / "plain"
    notbundle.mkdir()
    (notbundle / "x.txt").write_text("x")
    before = sorted(p.name for p in bundle.iterdir())
    argv = [a.format(missing=tmp_path / "nope", notbundle=notbundle, bundle=bundle) for a in args]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert sorted(p.name for p in bundle.iterdir()) == before  # nothing written


def test_cli_unknown_stage_exit_2(make_bundle: MakeBundle, main: Any) -> None:
    result = CliRunner().invoke(main, ["comms", str(make_bundle()), "--stage", "later"])
    assert result.exit_code == 2
