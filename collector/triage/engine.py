"""The small rule evaluator: a rule names a measure, a comparison and a threshold; the engine does the rest.

A rule (rules.yml) never runs code of its own. Its `measure` names a function in
collector.triage.measures that reads the bundle and returns Measures (a value plus the evidence
lines it came from) or raises Unknown (probe missing, timed out, empty, unreadable). The engine
compares each value with the rule's threshold, groups what fired into findings, and records
every rule it could not evaluate with the reason. Nothing here raises for a bad bundle.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from collector.core import SEVERITIES, Finding, MitigationSuggestion, UsageError, severity_rank
from collector.triage.measures import MEASURES
from collector.triage.targets import HostVars, inventory_hostvars, targets_for
from collector.triage.view import MONITORING_HOST, BundleView, Measure, Unknown, host_roles

RULES_FILE = Path(__file__).with_name("rules.yml")


@dataclass(frozen=True)
class Mitigation:
    """The runbook action a rule suggests; `hosts` is 'finding' (where it fired) or a role/group."""

    action: str
    params: dict[str, str]
    hosts: str = "finding"


@dataclass(frozen=True)
class Rule:
    """One triage rule as written in rules.yml."""

    id: str
    title: str
    scenario: str
    probes: tuple[str, ...]
    measure: str
    args: dict[str, Any]
    op: str
    threshold: Any
    severity: str
    message: str
    roles: tuple[str, ...] = ()  # empty: evaluated once, on the monitoring answers
    severity_when_all_hosts: str | None = None
    mitigation: Mitigation | None = None
    alternatives: tuple[Mitigation, ...] = ()  # further runbook options, shown after the first
    security: bool = False
    data_at_risk: bool = False
    down: bool = False
    unless: tuple[str, ...] = ()  # rules that, when they fire, make this one redundant (its worse twin)
    basis: str = "live"  # live: state at collection time; history: log lines in the window
    explains: tuple[str, ...] = ()  # history rules: further scenarios whose live findings they explain
    lasting: bool = False  # history whose harm does not end with the lines (corruption, a break-in attempt)
    # the failing check a measure names (its `failing` field) -> live rules that, firing, are its cause
    caused_by: tuple[tuple[str, tuple[str, ...]], ...] = ()


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}

_RULE_KEYS = {
    "id",
    "title",
    "scenario",
    "probes",
    "measure",
    "args",
    "when",
    "severity",
    "message",
    "roles",
    "severity_when_all_hosts",
    "mitigation",
    "security",
    "data_at_risk",
    "down",
    "description",
    "unless",
    "basis",
    "explains",
    "lasting",
    "caused_by",
}
BASES = ("live", "history")
# What history alone can be worth: it happened, it is over (the runbook's P3, minor).
HISTORY_ALONE = "P3"


def load_rules(path: Path | str | None = None) -> list[Rule]:
    """Read and validate rules.yml; a broken rule file is a UsageError naming the rule."""
    path = Path(path) if path else RULES_FILE
    try:
        # libyaml when present: the pure-Python loader costs ~0.1 s of every collect.
        doc = yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"rules file {path} is unreadable: {str(exc).splitlines()[0]}") from None
    entries = doc.get("rules") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise UsageError(f"rules file {path} has no list `rules`")
    rules: list[Rule] = []
    for entry in entries:
        rules.append(_rule(entry, path, MEASURES))
    ids = [r.id for r in rules]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UsageError(f"rules file {path}: rule {dupes[0]} is declared twice")
    for rule in rules:
        missing = [u for u in rule.unless if u not in ids]
        if missing:
            raise UsageError(f"rules file {path}: rule {rule.id}: `unless` names no rule {missing[0]!r}")
        missing = [c for _, causes in rule.caused_by for c in causes if c not in ids]
        if missing:
            raise UsageError(f"rules file {path}: rule {rule.id}: `caused_by` names no rule {missing[0]!r}")
    return rules


def _rule(entry: Any, path: Path | str, known_measures: dict[str, Any]) -> Rule:
    if not isinstance(entry, dict) or not entry.get("id"):
        raise UsageError(f"rules file {path}: every rule needs an id")
    rid = entry["id"]
    unknown = sorted(set(entry) - _RULE_KEYS)
    if unknown:
        raise UsageError(f"rules file {path}: rule {rid}: unknown key {unknown[0]!r}")
    for key in ("title", "scenario", "measure", "when", "severity", "message", "basis"):
        if key not in entry:
            raise UsageError(f"rules file {path}: rule {rid}: missing {key!r}")
    if entry["measure"] not in known_measures:
        raise UsageError(f"rules file {path}: rule {rid}: unknown measure {entry['measure']!r}")
    if entry["basis"] not in BASES:
        raise UsageError(
            f"rules file {path}: rule {rid}: basis must be live (state now) or history (log lines)"
        )
    when = entry["when"]
    if not isinstance(when, dict) or when.get("op") not in _OPS or "value" not in when:
        raise UsageError(
            f"rules file {path}: rule {rid}: `when` needs op (one of {' '.join(_OPS)}) and value"
        )
    for key in ("severity", "severity_when_all_hosts"):
        if entry.get(key) is not None and entry[key] not in SEVERITIES:
            raise UsageError(f"rules file {path}: rule {rid}: {key} must be one of {', '.join(SEVERITIES)}")
    raw = entry.get("mitigation") or []
    options: list[Mitigation] = []
    for m in raw if isinstance(raw, list) else [raw]:
        if not isinstance(m, dict) or not m.get("action"):
            raise UsageError(f"rules file {path}: rule {rid}: each mitigation needs an action")
        options.append(
            Mitigation(
                str(m["action"]),
                {str(k): str(v) for k, v in (m.get("params") or {}).items()},
                str(m.get("hosts", "finding")),
            )
        )
    caused_by = entry.get("caused_by") or {}
    if not isinstance(caused_by, dict) or not all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in caused_by.values()
    ):
        raise UsageError(
            f"rules file {path}: rule {rid}: `caused_by` maps a failing check to a list of rule ids"
        )
    return Rule(
        id=str(rid),
        title=str(entry["title"]),
        scenario=str(entry["scenario"]),
        probes=tuple(entry.get("probes") or ()),
        measure=str(entry["measure"]),
        args=dict(entry.get("args") or {}),
        op=str(when["op"]),
        threshold=when["value"],
        severity=str(entry["severity"]),
        message=str(entry["message"]),
        roles=tuple(entry.get("roles") or ()),
        severity_when_all_hosts=entry.get("severity_when_all_hosts"),
        mitigation=options[0] if options else None,
        alternatives=tuple(options[1:]),
        security=bool(entry.get("security")),
        data_at_risk=bool(entry.get("data_at_risk")),
        down=bool(entry.get("down")),
        unless=tuple(str(u) for u in entry.get("unless") or ()),
        basis=str(entry["basis"]),
        explains=tuple(str(x) for x in entry.get("explains") or ()),
        lasting=bool(entry.get("lasting")),
        caused_by=tuple((str(k), tuple(v)) for k, v in caused_by.items()),
    )


# ---------------------------------------------------------------- evaluation


@dataclass
class Outcome:
    """What one rule did: its findings, the hosts it could not judge (and why), the hosts it judged."""

    rule: Rule
    fired: list[Measure] = field(default_factory=list)
    judged: int = 0
    findings: list[Finding] = field(default_factory=list)
    unknown: list[tuple[str, str]] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)

    suppressed_by: str | None = None

    @property
    def state(self) -> str:
        if self.suppressed_by:
            return "suppressed"
        if self.findings:
            return "fired"
        if self.unknown:
            return "unknown"
        return "passed" if self.evaluated else "not_applicable"


def hosts_for(rule: Rule, bundle: BundleView) -> list[str]:
    """The hosts a rule applies to: role match, or (roles unknown) any host where one of its probes ran."""
    if not rule.roles:
        return [MONITORING_HOST]
    if "all" in rule.roles:
        return list(bundle.hosts)
    chosen = []
    for host in bundle.hosts:
        roles = host_roles(bundle, host)
        if roles:
            if set(roles) & set(rule.roles):
                chosen.append(host)
        elif any((bundle.probe(host, p) or {}).get("status", "skipped") != "skipped" for p in rule.probes):
            chosen.append(
                host
            )  # no roles recorded: a probe that ran (not skipped as not applicable) says it applies
    return chosen


def evaluate_rule(rule: Rule, bundle: BundleView, measure_fn: Callable[..., list[Measure]]) -> Outcome:
    """Run one rule over its hosts; any error inside a measure becomes 'unknown', never a crash."""
    outcome = Outcome(rule)
    for host in hosts_for(rule, bundle):
        try:
            taken = measure_fn(bundle, host, **rule.args)
        except Unknown as exc:
            outcome.unknown.append((host, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - a parser bug must not hide the other rules' findings
            outcome.unknown.append((host, f"could not evaluate: {type(exc).__name__}: {exc}"))
            continue
        outcome.evaluated.append(host)
        outcome.fired += [m for m in taken if compare(m.value, rule.op, rule.threshold)]
    outcome.judged = len(hosts_for(rule, bundle))
    return outcome


def evaluate_rules(
    rules: list[Rule], bundle: BundleView, measures: dict[str, Callable[..., list[Measure]]]
) -> list[Outcome]:
    """Every rule, then findings: a rule's host is dropped where a worse twin (`unless`) fired on it."""
    outcomes = [evaluate_rule(rule, bundle, measures[rule.measure]) for rule in rules]
    hostvars = inventory_hostvars(bundle)
    fired_on = {o.rule.id: {m.host for m in o.fired} for o in outcomes}
    live_fired = {o.rule.id for o in outcomes if o.fired and o.rule.basis == "live"}
    for outcome in outcomes:
        covered = {h for twin in outcome.rule.unless for h in fired_on.get(twin, set())}
        kept = [m for m in outcome.fired if m.host not in covered]
        if outcome.fired and not kept:
            outcome.suppressed_by = next(t for t in outcome.rule.unless if fired_on.get(t))
        groups: dict[str, list[Measure]] = {}
        for measure in kept:
            groups.setdefault(measure.key or outcome.rule.id, []).append(measure)
        for key, group in groups.items():
            outcome.findings.append(
                _finding(
                    outcome.rule,
                    key,
                    group,
                    outcome.judged,
                    lambda role: role_hosts(bundle, role),
                    hostvars,
                    causes=_live_causes(outcome.rule, group, live_fired),
                )
            )
    _now_versus_then(outcomes, _year(bundle))
    return outcomes


def _live_causes(rule: Rule, measures: list[Measure], live_fired: set[str]) -> tuple[str, ...]:
    """The live rules that fired and explain what these measures say is failing (`caused_by`): an app whose
    /health fails on its database while the database refuses connections is a symptom; that is the cause."""
    if not rule.caused_by:
        return ()
    failing = {
        part.strip() for m in measures for part in str(m.fields.get("failing", "")).split(",") if part.strip()
    }
    return tuple(
        dict.fromkeys(
            c for check, causes in rule.caused_by if check in failing for c in causes if c in live_fired
        )
    )


def _year(bundle: BundleView) -> int | None:
    from collector.triage.parsers import parse_time  # the engine reads no probe itself; only a date here

    started = parse_time(str(bundle.manifest.get("started") or ""))
    return started.year if started else None


def _now_versus_then(outcomes: list[Outcome], year: int | None) -> None:
    """History (log lines in the window) is context, not severity: a history finding is linked to the live
    findings of its scenario (or of the scenarios it `explains`) and is never worse than them; with no live
    finding to explain it has recovered, and is worth at most P3."""
    from collector.triage.parsers import parse_time

    live = [f for o in outcomes if o.rule.basis == "live" for f in o.findings]
    context: dict[str, list[str]] = {}
    for outcome in outcomes:
        if outcome.rule.basis != "history" or outcome.rule.lasting:
            continue
        scenarios = {outcome.rule.scenario, *outcome.rule.explains}
        done = []
        for finding in outcome.findings:
            stamps = [t for e in finding.evidence if (t := parse_time(e.excerpt, year)) is not None]
            last = max(stamps).strftime("%Y-%m-%dT%H:%M:%SZ") if stamps else None
            linked = [f for f in live if f.scenario in scenarios]
            if linked:
                worst_now = min((f.severity for f in linked), key=severity_rank)
                severity = max(
                    finding.severity, worst_now, key=severity_rank
                )  # never worse than what is live
                for f in linked:
                    context.setdefault(f.id, []).append(finding.id)
                done.append(replace(finding, severity=severity, last_seen=last))
                continue
            count = _count(outcome, finding)
            when = f", the last at {last[11:16]} UTC" if last else ""
            done.append(
                replace(
                    finding,
                    severity=max(finding.severity, HISTORY_ALONE, key=severity_rank),  # type: ignore[arg-type]
                    message=(
                        f"recovered: {count} event(s) in the window{when}, no live sign now; "
                        f"{finding.message}"
                    ),
                    last_seen=last,
                    recovered=True,
                )
            )
        outcome.findings = done
    for outcome in outcomes:
        outcome.findings = [
            replace(f, context=tuple(dict.fromkeys(context.get(f.id, ())))) for f in outcome.findings
        ]


def _count(outcome: Outcome, finding: Finding) -> int:
    """How many events a history finding counted (its measures' `count`, else their values)."""
    total = 0
    for m in outcome.fired:
        if finding.hosts and m.host not in finding.hosts:
            continue
        number = m.fields.get("count", m.fields.get("bad", m.value))
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            total += int(number)
    return total


def compare(value: Any, op: str, threshold: Any) -> bool:
    """value OP threshold; None or a type mismatch is 'does not fire'."""
    if value is None:
        return False
    try:
        return bool(_OPS[op](value, threshold))
    except TypeError:
        return False


class _Fields(dict[str, Any]):
    """Template fields; a missing one renders as '?' instead of failing the rule."""

    def __missing__(self, key: str) -> str:
        return "?"


def render(template: str, values: dict[str, Any]) -> str:
    """Fill {name} placeholders from values; unknown names become '?'."""
    try:
        return string.Formatter().vformat(template, (), _Fields(values))
    except (ValueError, IndexError, AttributeError):
        return template


def role_hosts(bundle: BundleView, role: str) -> list[str]:
    """The bundle's hosts that have `role`."""
    return [h for h in bundle.hosts if role in host_roles(bundle, h)]


def _finding(
    rule: Rule,
    key: str,
    measures: list[Measure],
    judged_hosts: int,
    by_role: Callable[[str], list[str]],
    hostvars: HostVars | None = None,
    causes: tuple[str, ...] = (),
) -> Finding:
    """One finding of `rule` from its measures. With live `causes` (caused_by), this finding is their symptom:
    its own mitigation (a restart) is offered after theirs, as an alternative, and its message names them."""
    hosts = sorted({m.host for m in measures})
    # a measure's own severity (an alert's mapped label) counts only when it is on the scale
    candidates: list[str] = [s for m in measures if (s := m.severity or rule.severity) in SEVERITIES]
    severity = min(candidates or [rule.severity], key=severity_rank)
    if rule.severity_when_all_hosts and rule.roles and len(hosts) >= judged_hosts > 0:
        severity = min(severity, rule.severity_when_all_hosts, key=severity_rank)
    base = {"threshold": rule.threshold, "rule": rule.id}
    messages = [
        render(rule.message, base | {"host": m.host, "value": _fmt(m.value)} | m.fields) for m in measures
    ]
    first = (
        base
        | {"host": measures[0].host, "value": _fmt(measures[0].value), "hosts": ",".join(hosts)}
        | measures[0].fields
    )
    options = [
        _mitigation(m, hosts, first, by_role, hostvars) for m in (rule.mitigation, *rule.alternatives) if m
    ]
    if causes:
        messages.append(
            f"the cause is live: {', '.join(causes)} (its mitigation first"
            + (f"; {options[0].action} is an alternative)" if options else ")")
        )
    return Finding(
        id=rule.id if key == rule.id else f"{rule.id}:{key}",
        rule=rule.id,
        title=render(rule.title, first),
        severity=severity,  # type: ignore[arg-type]  # checked against SEVERITIES by load_rules and the alert map
        scenario=rule.scenario,
        hosts=tuple(hosts),
        message="; ".join(dict.fromkeys(messages)),
        evidence=tuple(e for m in measures for e in m.evidence),
        mitigation=None if causes or not options else options[0],
        alternatives=tuple(options if causes else options[1:]),
        security=rule.security,
        data_at_risk=rule.data_at_risk,
        down=rule.down,
        basis=rule.basis,  # type: ignore[arg-type]  # checked against BASES by load_rules
    )


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return round(
            value, 1 if abs(value) >= 10 else 2 if abs(value) >= 1 else 3
        )  # readable, not falsely precise
    return value


def _mitigation(
    m: Mitigation,
    hosts: list[str],
    values: dict[str, Any],
    by_role: Callable[[str], list[str]],
    hostvars: HostVars | None = None,
) -> MitigationSuggestion:
    """The mitigation for these hosts: where the rule fired, or every bundle host of a role (else the role as
    a group)."""
    role = m.hosts
    targets = [h for h in hosts if h != MONITORING_HOST] if role == "finding" else []
    if not targets:
        role = "app" if role == "finding" else role  # a monitoring finding is about the app
        targets = by_role(role) or [role]
    pattern = ":".join(targets)
    if any("{target_" in v for v in m.params.values()):  # the runbook's numbers, or the inventory's override
        values = values | targets_for(targets, hostvars() if hostvars else {})
    rendered = {k: render(v, values) for k, v in m.params.items()}
    params = {
        k: v for k, v in rendered.items() if v not in ("", "?")
    }  # unknown value: let remediate default it
    return MitigationSuggestion(m.action, pattern, params, remediate_command(m.action, pattern, params))


def remediate_command(action: str, pattern: str, params: dict[str, str]) -> str:
    """The ready `collector remediate` line for a suggested mitigation."""
    parts = ["collector", "remediate", action, "--hosts", pattern]
    for key, value in params.items():
        parts += ["--param", f"{key}={value}"]
    return " ".join(shlex.quote(p) for p in parts)
