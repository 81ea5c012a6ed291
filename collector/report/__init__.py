"""The incident report: HTML, Markdown, TICKET.md and status-update texts rendered from a bundle.

Everything here reads a bundle (plus the findings.json and actions.json that triage and
remediate put into it) and hands plain values to the Jinja2 templates in `reports/`.
Nothing in a report depends on the wall clock, so re-rendering the same bundle gives the same
bytes and the sealed tar.gz stays deterministic; only the comms texts carry "now".

    timeline.py  dated events (logs, alerts, deploys, collection, actions) and when the incident began
    figures.py   triage's stored key figures against the runbook's thresholds; range series as sparklines
    data.py      `build(bundle)` -> ReportData: findings, actions, impact, root cause, everything shown
    render.py    the Jinja2 environment and filters; `render_reports`, `render_comms`
"""

from __future__ import annotations

from collector.report.data import SEVERITY_ORDER, FindingView, ReportData, build, severity_rank
from collector.report.figures import Chart, FigureRow, figure_rows, make_chart
from collector.report.render import (
    FORMATS,
    STAGES,
    md_block,
    md_code,
    md_inline,
    parse_formats,
    render_comms,
    render_reports,
    render_text,
    status_update,
)
from collector.report.timeline import (
    _ERROR_LINE,
    _JOURNAL_PROBES,
    _OOM_LINE,
    TimelineEvent,
    _first_line,
    _incident_start,
    _merge_hosts,
    build_timeline,
    first_matching_line,
    fmt_duration,
    fmt_time,
    line_time,
    parse_time,
)

__all__ = [
    "FORMATS",
    "SEVERITY_ORDER",
    "STAGES",
    # the timeline's internals, which tests pin down
    "_ERROR_LINE",
    "_JOURNAL_PROBES",
    "_OOM_LINE",
    "Chart",
    "FigureRow",
    "FindingView",
    "ReportData",
    "TimelineEvent",
    "_first_line",
    "_incident_start",
    "_merge_hosts",
    "build",
    "build_timeline",
    "figure_rows",
    "first_matching_line",
    "fmt_duration",
    "fmt_time",
    "line_time",
    "make_chart",
    "md_block",
    "md_code",
    "md_inline",
    "parse_formats",
    "parse_time",
    "render_comms",
    "render_reports",
    "render_text",
    "severity_rank",
    "status_update",
]
