"""Triage: findings, the four step-2 answers and a P0–P3 severity from a bundle, with their evidence.

`triage_bundle(path)` evaluates rules.yml against the bundle, writes `findings.json` into it
(`Findings.to_dict`), seals the bundle (checksums, archive) and returns the typed Findings.
Everything that reads findings.json reads it through `read_findings` (`Findings.from_dict`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from collector.core import (
    FINDINGS_SCHEMA,
    AffectedAnswer,
    Answer,
    Finding,
    Findings,
    KeyFigures,
    Questions,
    SecurityFlag,
    UnknownRule,
    UsageError,
    severity_rank,
    utcnow,
    worst_severity,
)
from collector.triage.engine import Outcome, Rule, evaluate_rules, load_rules
from collector.triage.figures import key_figures
from collector.triage.measures import MEASURES
from collector.triage.view import MONITORING_HOST, BundleView

if TYPE_CHECKING:
    from collector.bundle import Bundle

FINDINGS_FILE = "findings.json"

__all__ = ["FINDINGS_FILE", "FINDINGS_SCHEMA", "bundle_figures", "evaluate", "read_findings", "triage_bundle"]


def triage_bundle(path: str | Path, *, rules_path: str | Path | None = None, seal: bool = True) -> Findings:
    """Triage the bundle at `path`: write findings.json, seal, return the findings."""
    from collector.bundle import Bundle  # late: the CLI must be able to show a usage error first

    bundle = Bundle.open(path)
    findings = evaluate(bundle, load_rules(rules_path))
    bundle.write_json(FINDINGS_FILE, findings.to_dict())
    if seal:
        bundle.seal()
    return findings


def read_findings(bundle: Bundle) -> Findings | None:
    """The bundle's findings.json as Findings; None when triage has not run. Unreadable, another schema or a
    missing field: UsageError naming it (a report must not quietly drop a section)."""
    where = f"{Path(bundle.path).name}/{FINDINGS_FILE}"
    data = bundle.read_file(FINDINGS_FILE)
    if data is None:
        return None
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise UsageError(
            f"{where} is not valid JSON ({exc}); re-run `collector triage` on the bundle"
        ) from None
    return Findings.from_dict(raw, where)


def bundle_figures(path: str | Path) -> KeyFigures:
    """The key figures of the bundle at `path` as triage stored them (remediate's before/after reads these).

    A bundle triage has not run on (its triage failed) gets them computed here, without writing.
    """
    from collector.bundle import Bundle

    bundle = Bundle.open(path)
    stored = read_findings(bundle)
    return stored.figures if stored is not None else key_figures(bundle)


def evaluate(bundle: BundleView, rules: list[Rule]) -> Findings:
    """Every rule against the bundle → the findings (nothing written)."""
    outcomes = evaluate_rules(rules, bundle, MEASURES)
    # What is happening now first (by severity; at equal severity in rules.yml's order, a cause such as a
    # deploy before its symptoms), then what happened earlier in the window: a fault's bundle names that
    # fault.
    order = {r.id: i for i, r in enumerate(rules)}
    findings = sorted(
        (f for o in outcomes for f in o.findings),
        key=lambda f: (f.basis != "live", severity_rank(f.severity), order.get(f.rule, 0), f.id),
    )
    unknown = [
        UnknownRule(
            o.rule.id,
            o.rule.title,
            tuple(h for h, _ in o.unknown),
            "; ".join(dict.fromkeys(f"{h}: {why}" if h != MONITORING_HOST else why for h, why in o.unknown)),
            tuple(o.unknown),
        )
        for o in outcomes
        if o.unknown
    ]
    figures = key_figures(bundle)
    severity = worst_severity(f.severity for f in findings)
    security = _security(findings)
    return Findings(
        incident=str(bundle.manifest.get("incident") or ""),
        generated=utcnow(),
        severity=severity,
        summary=_summary(severity, findings, unknown),
        questions=_questions(bundle, findings, outcomes, figures, security),
        security=security,
        findings=tuple(findings),
        unknown=tuple(unknown),
        rules={o.rule.id: o.state for o in outcomes},
        figures=figures,
    )


def _summary(severity: str, findings: list[Finding], unknown: list[UnknownRule]) -> str:
    if not findings:
        tail = f"; {len(unknown)} rule(s) could not be evaluated" if unknown else ""
        return f"no finding{tail}"
    top = findings[0]
    if all(f.recovered for f in findings):
        return (
            f"{severity}: recovered, no live sign now; earlier in the window: {top.title} "
            f"({', '.join(top.hosts)}); "
            f"{len(findings)} finding(s) in all"
        )
    return f"{severity}: {top.title} ({', '.join(top.hosts)}); {len(findings)} finding(s) in all"


def _questions(
    bundle: BundleView,
    findings: list[Finding],
    outcomes: list[Outcome],
    figures: KeyFigures,
    security: SecurityFlag,
) -> Questions:
    """The runbook's step-2 questions, each answered with why."""
    hosts = list(bundle.hosts)
    serious = [f for f in findings if f.severity != "P3"]
    affected = sorted({h for f in serious for h in f.hosts if h != MONITORING_HOST})
    ratio = figures.error_ratio
    users = f"about {ratio * 100:.1f} % of requests fail (5xx)" if ratio is not None else "5xx ratio unknown"
    app_down = [f for f in findings if f.rule == "app-down"]
    if app_down and app_down[0].severity == "P0":
        users = "all users: the app is down on every app host"
    data = [f for f in findings if f.data_at_risk]
    data_unknown = [o.rule.id for o in outcomes if o.rule.data_at_risk and o.state == "unknown"]
    down = [f for f in findings if f.severity == "P0"]
    severity = worst_severity(f.severity for f in findings)
    if down:
        state, why = "down", "; ".join(f.title for f in down)
    elif severity in ("P1", "P2"):
        state, why = "degraded", "; ".join(dict.fromkeys(f.title for f in serious))
    elif severity == "P3":
        earlier = [f for f in findings if f.recovered]
        state, why = (
            "minor issues",
            "; ".join(
                dict.fromkeys(
                    [f.title for f in findings if not f.recovered]
                    + (
                        [
                            (
                                "recovered, earlier in the window: "
                                f"{', '.join(dict.fromkeys(f.title for f in earlier))}"
                            )
                        ]
                        if earlier
                        else []
                    )
                )
            ),
        )
    else:
        state, why = "healthy", "no rule fired"
    data_why = "; ".join(f"{f.title} ({', '.join(f.hosts)})" for f in data) or (
        f"could not evaluate: {', '.join(data_unknown)}"
        if data_unknown
        else "no data-loss, full-disk or database-down sign"
    )
    return Questions(
        affected=AffectedAnswer(
            f"{len(affected)} of {len(hosts)} hosts; {users}",
            "hosts named by findings above P3",
            tuple(affected),
            len(hosts),
            ratio,
        ),
        data_at_risk=Answer("yes" if data else ("unknown" if data_unknown else "no"), data_why),
        down_or_degraded=Answer(state, why),
        security=Answer("possibly" if security.suspected else "no sign", security.why),
    )


def _security(findings: list[Finding]) -> SecurityFlag:
    """The separate security flag: suspected when any security rule fired."""
    hits = [f for f in findings if f.security]
    advice = "treat as a possible security incident: preserve this bundle, involve the security on-call"
    return SecurityFlag(bool(hits), tuple(f"{f.title}: {f.message}" for f in hits), advice if hits else "")
