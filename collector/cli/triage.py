"""`collector triage BUNDLE [--json]`: parsing and display only; collector.triage does the work."""
from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

_SEVERITY_STYLE = {"P0": "bold white on red", "P1": "bold red", "P2": "yellow", "P3": "cyan", "none": "green"}
_QUESTIONS = (
    ("how_many_users_and_hosts_affected", "How many users/hosts affected"),
    ("is_data_at_risk", "Is data at risk"),
    ("down_or_degraded", "Down or degraded"),
    ("is_it_a_security_incident", "Security incident"),
)


@click.command("triage")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print findings.json instead of the summary.")
@click.option("--rules", "rules_path", type=click.Path(), default=None, help="Another rules file (default: the shipped rules.yml).")
def triage_command(bundle: str, as_json: bool, rules_path: str | None) -> None:
    """Findings, P0–P3 severity and the suggested mitigation for BUNDLE (writes findings.json into it)."""
    from collector.triage import FINDINGS_FILE, triage_bundle

    doc = triage_bundle(bundle, rules_path=rules_path)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=False))
        return
    console = Console(highlight=False, soft_wrap=True)
    show(console, doc)
    console.print(f"[dim]{escape(FINDINGS_FILE)} written into {escape(bundle)}[/dim]")


def show(console: Console, doc: dict[str, Any]) -> None:
    """The human summary: severity, the step-2 answers, one block per finding, what could not be judged."""
    severity = str(doc.get("severity", "none"))
    style = _SEVERITY_STYLE.get(severity, "")
    console.print(f"[{style}]severity {severity}[/{style}]  {escape(str(doc.get('summary', '')))}")
    questions = doc.get("questions") or {}
    for key, label in _QUESTIONS:
        item = questions.get(key) or {}
        why = f" [dim]({escape(str(item.get('why')))})[/dim]" if item.get("why") else ""
        console.print(f"  {label}: [bold]{escape(str(item.get('answer', 'unknown')))}[/bold]{why}")
    security = doc.get("security") or {}
    if security.get("suspected"):
        console.print(f"[bold red]POSSIBLE SECURITY INCIDENT[/bold red]: {escape(str(security.get('advice', '')))}")
    findings = doc.get("findings") or []
    if findings:
        console.print("findings:")
    for finding in findings:
        _finding(console, finding)
    unknown = doc.get("unknown") or []
    if unknown:
        console.print(f"[yellow]could not evaluate {len(unknown)} rule(s):[/yellow]")
        by_reason: dict[str, list[str]] = {}
        for item in unknown:  # one unreachable host makes many rules unknown for the same reason
            details = item.get("details") or [{"reason": item["reason"]}]
            for detail in details:
                rules = by_reason.setdefault(str(detail["reason"]), [])
                if item["rule"] not in rules:
                    rules.append(str(item["rule"]))
        for reason, rules in by_reason.items():
            console.print(f"  [yellow]?[/yellow] {escape(', '.join(rules))}: {escape(reason)}")


def _finding(console: Console, finding: dict[str, Any]) -> None:
    sev = str(finding["severity"])
    style = _SEVERITY_STYLE.get(sev, "")
    hosts = escape("[" + ",".join(finding.get("hosts") or []) + "]")
    console.print(f"  [{style}]{sev}[/{style}] {escape(finding['id'])} {hosts} {escape(finding['title'])}: "
                  f"{escape(finding.get('message', ''))}")
    for ev in (finding.get("evidence") or [])[:4]:
        where = f"{ev['path']}:{ev['line']}" if ev.get("line") else str(ev["path"])
        console.print(f"      evidence {escape(where)}  [dim]\"{escape(str(ev.get('excerpt', '')))}\"[/dim]")
    mitigation = finding.get("mitigation")
    if mitigation:
        console.print(f"      mitigate: [bold]{escape(mitigation['command'])}[/bold]")
    for alt in finding.get("alternatives") or []:
        console.print(f"      or:       {escape(alt['command'])}")


commands = [triage_command]
