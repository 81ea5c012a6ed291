"""Rendering: the Jinja2 environment, Markdown-safe filters, report files and status-update texts."""

from __future__ import annotations

import datetime as _dt
import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2

from collector.core import UsageError
from collector.paths import resource
from collector.redact import Redactor
from collector.report.data import SEVERITY_ORDER, ReportData, _safe_link, build
from collector.report.timeline import fmt_time

FORMATS = ("html", "md")
STAGES = ("initial", "mitigation", "resolved")
NEXT_UPDATE_MIN = 15  # the runbook's status-update cadence


# ---------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """Autoescape HTML templates (report.html.j2); Markdown and text get explicit filters instead."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource("reports"))),
        autoescape=lambda name: bool(name) and str(name).endswith((".html.j2", ".html")),
        # A template naming a field the typed values do not have is a bug to see, not an empty section.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_inline
    env.filters["mdcode"] = md_code
    env.filters["mdblock"] = md_block
    env.filters["mdlink"] = md_link_target
    env.filters["safelink"] = _safe_link
    env.filters["hostlist"] = host_list
    env.filters["sevclass"] = lambda s: f"sev-{str(s).lower()}" if s in SEVERITY_ORDER else "sev-unknown"
    return env


# Backslash-escape what could start markup; `_` only where it could open or close emphasis (not in
# snake_case), so pasted text stays readable where Markdown is not rendered.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|<>~]|^#|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def host_list(hosts: Iterable[str], limit: int = 6) -> str:
    """`app1, db1` or `web01, web02, …, web06 and 24 more` for long lists."""
    names = list(hosts)
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def md_inline(value: Any) -> str:
    """Text safe inside a Markdown paragraph or table cell: no markup, no raw HTML, one line."""
    text = " ".join(str(value if value is not None else "").split())
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: Any) -> str:
    """An inline code span that survives backticks in the value."""
    text = " ".join(str(value).split())
    ticks = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (ticks + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_block(value: Any) -> str:
    """A fenced code block longer than any backtick run inside, so log lines cannot break out."""
    text = str(value).rstrip("\n")
    ticks = max((len(m) for m in re.findall(r"`{3,}", text)), default=0)
    fence = "`" * max(3, ticks + 1)
    return f"{fence}text\n{text}\n{fence}"


def md_link_target(value: Any) -> str:
    """A link destination in <…> form, which allows spaces but not < or >."""
    return "<" + str(value).replace("<", "%3C").replace(">", "%3E") + ">"


def warm_up(formats: Iterable[str] = FORMATS) -> None:
    """Compile the report templates ahead (collect does it while it waits for the hosts)."""
    for template in [f"report.{fmt}.j2" for fmt in formats] + ["ticket.md.j2"]:
        _environment().get_template(template)


def render_text(template: str, data: ReportData, **extra: Any) -> str:
    """Render one template of reports/ with the report data."""
    return _environment().get_template(template).render(r=data, **extra)


def _open(bundle_path: str | Path) -> Any:
    from collector.bundle import Bundle  # the bundle step owns the layout

    return Bundle.open(Path(bundle_path))


def parse_formats(value: str | Iterable[str]) -> tuple[str, ...]:
    """`html,md` → ('html', 'md'); anything else is a usage error."""
    items = value.split(",") if isinstance(value, str) else list(value)
    formats = tuple(dict.fromkeys(f.strip().lower() for f in items if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UsageError(
            f"unknown report format {unknown[0] if unknown else '(none)'!r}: choose from {', '.join(FORMATS)}"
        )
    return formats


class RedactionFailed(Exception):
    """The scrubber failed on a report: placeholders were written instead of the clear text."""


def withheld(name: str, exc: BaseException) -> str:
    """What stands in for a text the scrubber could not check: never the text, only why it is missing."""
    return (
        f"[{name} withheld: redaction failed ({type(exc).__name__}); nothing was written in clear. "
        "Fix the redaction rules and run the command again.]\n"
    )


def render_reports(
    bundle_path: str | Path, formats: Iterable[str] = FORMATS, *, seal: bool = True
) -> list[Path]:
    """Write report.html / report.md and TICKET.md into the bundle, then re-seal it; returns the paths.

    Redaction fails closed: a report the scrubber cannot check is replaced by a placeholder, the
    bundle is sealed with the placeholders, and RedactionFailed says which reports were withheld.
    """
    chosen = parse_formats(formats)
    bundle = _open(bundle_path)
    data = build(bundle)
    written: list[Path] = []
    failed: list[str] = []
    outputs = [(f"report.{fmt}", f"report.{fmt}.j2") for fmt in chosen] + [("TICKET.md", "ticket.md.j2")]
    for name, template in outputs:
        text = render_text(template, data)
        path = Path(bundle.path) / name
        try:
            bundle.write_text(
                name, text
            )  # scrubbed on the way in; a scrubber error raises before any byte lands
        except Exception as exc:  # noqa: BLE001 - any scrubber failure: the clear text must not land
            failed.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
            bundle.write_placeholder(
                name, withheld(name, exc)
            )  # a constant text: nothing to scrub; private mode
        written.append(path)
    if seal:  # False: the caller seals once at the end of its command (collect, remediate apply)
        bundle.seal()
    if failed:
        raise RedactionFailed("reports withheld, redaction failed: " + "; ".join(failed))
    return written


def render_comms(
    bundle_path: str | Path, stage: str, now: _dt.datetime | None = None, *, status_page: str | None = None
) -> str:
    """The runbook's status update for `stage` (initial, mitigation, resolved), ready to paste.

    `status_page` defaults to the `status_page_url` setting.
    """
    if stage not in STAGES:
        raise UsageError(f"unknown comms stage {stage!r}: choose from {', '.join(STAGES)}")
    if status_page is None:
        from collector.config import load_settings

        status_page = load_settings().status_page_url
    bundle = _open(bundle_path)
    data = build(bundle)
    moment = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    text = status_update(data, stage, moment, _dt.timedelta(minutes=NEXT_UPDATE_MIN), status_page=status_page)
    return _redact(text)


def status_update(
    data: ReportData,
    stage: str,
    now: _dt.datetime,
    every: _dt.timedelta,
    *,
    status_page: str = "",
    commander: str | None = None,
) -> str:
    """One comms template filled (`collector comms` and serve's updates both come through here): the
    update's time, the next one's (`every` later), the ETA, the status page link and the commander."""
    next_update = fmt_time(now + every)
    return render_text(
        f"comms/{stage}.txt.j2",
        data,
        now=fmt_time(now),
        next_update=next_update,
        next_update_min=int(every.total_seconds() // 60),
        eta=eta(data, next_update),
        status_page=status_page or "not configured (setting status_page_url)",
        commander=commander or "<name>",
    )


def eta(data: ReportData, next_update: str) -> str:
    """The runbook's ETA, as honest as the evidence allows: restored, verifying, or not known yet (and what
    it waits for)."""
    if data.resolved:
        return f"service restored at {data.resolved} (verified); monitoring until {next_update}"
    applied = [a for a in data.actions if a.get("applied_finished")]
    if applied:
        return f"mitigation applied at {applied[-1]['applied_text']}; verifying, next update by {next_update}"
    command = next((f.command for f in data.findings if f.command), "")
    if command:
        return f"not known yet; pending approval of `{command}`, next update by {next_update}"
    return f"not known yet; investigating, next update by {next_update}"


def _redact(text: str) -> str:
    """Comms go to a terminal and then a chat: scrub once more, in case a derived file slipped one through.

    Fails closed: when the scrubber fails, the update is withheld (a placeholder saying why),
    never printed in clear.
    """
    try:
        return str(Redactor(()).redact_text(text, "comms"))
    except Exception as exc:  # noqa: BLE001 - any scrubber failure withholds the text
        return withheld("status update", exc)
