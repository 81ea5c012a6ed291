"""`collector triage BUNDLE [--json]`: parsing and display only; collector.triage does the work."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape

from collector.core import NO_SEVERITY, SEVERITIES, Finding, Findings, response_time_text

# One style per level of collector.core's scale, most severe first.
_SEVERITY_STYLE = dict(
    zip((*SEVERITIES, NO_SEVERITY), ("bold white on red", "bold red", "yellow", "cyan", "green"))
)
_QUESTIONS = ("How many users/hosts affected", "Is data at risk", "Down or degraded", "Security incident")


@click.command("triage")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print findings.json instead of the summary.")
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(),
    default=None,
    help="Another rules file (default: the shipped rules.yml).",
)
def triage_command(bundle: str, as_json: bool, rules_path: str | None) -> None:
    """Findings, P0–P3 severity and the suggested mitigation for BUNDLE (writes findings.json into it)."""
    from collector.triage import FINDINGS_FILE, triage_bundle

    findings = triage_bundle(bundle, rules_path=rules_path)
    if as_json:
        click.echo(json.dumps(findings.to_dict(), indent=2, sort_keys=False))
        return
    console = Console(highlight=False, soft_wrap=True)
    show(console, findings)
    console.print(f"[dim]{escape(FINDINGS_FILE)} written into {escape(bundle)}[/dim]")


def show(console: Console, doc: Findings) -> None:
    """The human summary: severity, the step-2 answers, one block per finding, what could not be judged."""
    style = _SEVERITY_STYLE.get(doc.severity, "")
    respond = f" — {response_time_text(doc.severity)}" if response_time_text(doc.severity) else ""
    console.print(f"[{style}]severity {doc.severity}[/{style}]{respond}  {escape(doc.summary)}")
    q = doc.questions
    for label, item in zip(_QUESTIONS, (q.affected, q.data_at_risk, q.down_or_degraded, q.security)):
        why = f" [dim]({escape(item.why)})[/dim]" if item.why else ""
        console.print(f"  {label}: [bold]{escape(item.answer)}[/bold]{why}")
    if doc.security.suspected:
        console.print(f"[bold red]POSSIBLE SECURITY INCIDENT[/bold red]: {escape(doc.security.advice)}")
    if doc.findings:
        console.print("findings:")
    for finding in doc.findings:
        _finding(console, finding)
    if doc.unknown:
        console.print(f"[yellow]could not evaluate {len(doc.unknown)} rule(s):[/yellow]")
        by_reason: dict[str, list[str]] = {}
        for unknown in doc.unknown:  # one unreachable host makes many rules unknown for the same reason
            for _, reason in unknown.details or (("", unknown.reason),):
                rules = by_reason.setdefault(reason, [])
                if unknown.rule not in rules:
                    rules.append(unknown.rule)
        for reason, rules in by_reason.items():
            console.print(f"  [yellow]?[/yellow] {escape(', '.join(rules))}: {escape(reason)}")


def _finding(console: Console, finding: Finding) -> None:
    style = _SEVERITY_STYLE.get(finding.severity, "")
    hosts = escape("[" + ",".join(finding.hosts) + "]")
    console.print(
        f"  [{style}]{finding.severity}[/{style}] {escape(finding.id)} {hosts} {escape(finding.title)}: "
        f"{escape(finding.message)}"
    )
    for ev in finding.evidence[:4]:
        where = f"{ev.path}:{ev.line}" if ev.line else ev.path
        console.print(f'      evidence {escape(where)}  [dim]"{escape(ev.excerpt)}"[/dim]')
    if finding.mitigation:
        console.print(f"      mitigate: [bold]{escape(finding.mitigation.command)}[/bold]")
    for alt in finding.alternatives:
        console.print(f"      or:       {escape(alt.command)}")


commands = [triage_command]
