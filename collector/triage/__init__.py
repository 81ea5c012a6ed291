"""Triage: findings, the four step-2 answers and a P0–P3 severity from a bundle, with their evidence.

`triage_bundle(path)` evaluates rules.yml against the bundle, writes `findings.json` into it,
seals the bundle (checksums, archive) and returns the findings document.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from collector.core import FINDINGS_SCHEMA, utcnow
from collector.triage.engine import (
    MONITORING_HOST, SEVERITIES, BundleView, Outcome, Rule, evaluate_rules, load_rules, worst,
)
from collector.triage.figures import key_figures
from collector.triage.measures import MEASURES

FINDINGS_FILE = "findings.json"

__all__ = ["FINDINGS_FILE", "evaluate", "triage_bundle"]


def triage_bundle(path: str | Path, *, rules_path: str | Path | None = None, seal: bool = True) -> dict[str, Any]:
    """Triage the bundle at `path`: write findings.json, seal, return the findings document."""
    from collector.bundle import Bundle  # late: the CLI must be able to show a usage error first

    bundle = Bundle.open(path)
    doc = evaluate(bundle, load_rules(rules_path))
    bundle.write_json(FINDINGS_FILE, doc)
    if seal:
        bundle.seal()
    return doc


def evaluate(bundle: BundleView, rules: list[Rule]) -> dict[str, Any]:
    """Every rule against the bundle → the findings document (nothing written)."""
    outcomes = evaluate_rules(rules, bundle, MEASURES)
    findings = [f for o in outcomes for f in o.findings]
    findings.sort(key=lambda f: (SEVERITIES.index(f["severity"]), f["id"]))
    unknown = [
        {"rule": o.rule.id, "title": o.rule.title, "hosts": [h for h, _ in o.unknown],
         "reason": "; ".join(dict.fromkeys(f"{h}: {why}" if h != MONITORING_HOST else why for h, why in o.unknown)),
         "details": [{"host": h, "reason": why} for h, why in o.unknown]}
        for o in outcomes if o.unknown
    ]
    figures = key_figures(bundle)
    severity = worst(f["severity"] for f in findings)
    security = _security(findings)
    return {
        "schema": FINDINGS_SCHEMA,
        "incident": str(bundle.manifest.get("incident") or ""),
        "generated": utcnow(),
        "severity": severity,
        "summary": _summary(severity, findings, unknown),
        "questions": _questions(bundle, findings, outcomes, figures, security),
        "security": security,
        "findings": findings,
        "unknown": unknown,
        "rules": {o.rule.id: o.state for o in outcomes},
        "figures": figures,
    }


def _summary(severity: str, findings: list[dict[str, Any]], unknown: list[dict[str, Any]]) -> str:
    if not findings:
        tail = f"; {len(unknown)} rule(s) could not be evaluated" if unknown else ""
        return f"no finding{tail}"
    top = findings[0]
    return f"{severity}: {top['title']} ({', '.join(top['hosts'])}); {len(findings)} finding(s) in all"


def _questions(bundle: BundleView, findings: list[dict[str, Any]], outcomes: list[Outcome],
               figures: dict[str, Any], security: dict[str, Any]) -> dict[str, Any]:
    """The runbook's step-2 questions, each {answer, why}."""
    hosts = list(bundle.hosts)
    serious = [f for f in findings if f["severity"] != "P3"]
    affected = sorted({h for f in serious for h in f["hosts"] if h != MONITORING_HOST})
    ratio = figures.get("error_ratio")
    users = f"about {ratio * 100:.1f} % of requests fail (5xx)" if isinstance(ratio, (int, float)) else "5xx ratio unknown"
    app_down = [f for f in findings if f["rule"] == "app-down"]
    if app_down and app_down[0]["severity"] == "P0":
        users = "all users: the app is down on every app host"
    data = [f for f in findings if f.get("data_at_risk")]
    data_unknown = [o.rule.id for o in outcomes if o.rule.data_at_risk and o.state == "unknown"]
    down = [f for f in findings if f["severity"] == "P0"]
    severity = worst(f["severity"] for f in findings)
    if down:
        state, why = "down", "; ".join(f["title"] for f in down)
    elif severity in ("P1", "P2"):
        state, why = "degraded", "; ".join(dict.fromkeys(f["title"] for f in serious))
    elif severity == "P3":
        state, why = "minor issues", "; ".join(dict.fromkeys(f["title"] for f in findings))
    else:
        state, why = "healthy", "no rule fired"
    return {
        "how_many_users_and_hosts_affected": {
            "answer": f"{len(affected)} of {len(hosts)} hosts; {users}",
            "hosts": affected, "hosts_total": len(hosts), "error_ratio": ratio,
            "why": "hosts named by findings above P3",
        },
        "is_data_at_risk": {
            "answer": "yes" if data else ("unknown" if data_unknown else "no"),
            "why": "; ".join(f"{f['title']} ({', '.join(f['hosts'])})" for f in data)
            or (f"could not evaluate: {', '.join(data_unknown)}" if data_unknown else "no data-loss, full-disk or database-down sign"),
        },
        "down_or_degraded": {"answer": state, "why": why},
        "is_it_a_security_incident": {"answer": "possibly" if security["suspected"] else "no sign",
                                      "why": "; ".join(security["reasons"]) or "no security rule fired"},
    }


def _security(findings: list[dict[str, Any]]) -> dict[str, Any]:
    """The separate security flag: suspected when any security rule fired."""
    hits = [f for f in findings if f.get("security")]
    reasons = [f"{f['title']}: {f['message']}" for f in hits]
    return {
        "suspected": bool(hits),
        "answer": "possible security incident" if hits else "no sign",
        "why": "; ".join(reasons) or "no security rule fired",
        "reasons": reasons,
        "advice": "treat as a possible security incident: preserve this bundle, involve the security on-call" if hits else "",
    }
