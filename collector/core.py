"""The contracts every step shares: result values and status words.

Each step hands the next one plain values from this module (see ARCHITECTURE in the README).
A failing host or probe is one of these values, never an exception that ends the run.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

ProbeStatus = Literal["ok", "failed", "timeout", "not_found", "skipped"]
HostStatus = Literal["ok", "partial", "unreachable", "failed"]

PROBE_STATUSES: tuple[str, ...] = ("ok", "failed", "timeout", "not_found", "skipped")
HOST_STATUSES: tuple[str, ...] = ("ok", "partial", "unreachable", "failed")

# Exit codes shared by every command.
EXIT_OK = 0
EXIT_PARTIAL = 1  # ran, but some host or check failed
EXIT_USAGE = 2  # bad input: one clear line, nothing written

BUNDLE_SCHEMA = "incident-collector/bundle/v1"
FINDINGS_SCHEMA = "incident-collector/findings/v3"


class UsageError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits 2."""


def utcnow() -> str:
    """The current time as an ISO 8601 UTC string with millisecond precision."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class ProbeResult:
    """What one probe did on one host. `output` is the raw (possibly capped) bytes."""

    host: str
    probe: str
    command: str
    status: ProbeStatus
    rc: int | None
    started: str
    duration_s: float
    output: bytes = b""
    truncated: bool = False
    bytes: int = 0  # bytes the command produced, before the cap
    error: str | None = None


@dataclass
class HostResult:
    """All probes of one host, or why there are none (unreachable, auth failure...)."""

    host: str
    status: HostStatus
    error: str | None = None
    probes: list[ProbeResult] = field(default_factory=list)
    roles: tuple[str, ...] = ()


@dataclass
class RunResult:
    """One collection run: every host's result plus the control-machine monitoring queries."""

    incident: str
    pattern: str
    inventory: str
    engine: str
    command_line: list[str]
    started: str
    finished: str = ""
    interrupted: bool = False
    since: str = ""  # the journal window asked for (`10m` or a timestamp); triage reads its window from it
    hosts: dict[str, HostResult] = field(default_factory=dict)
    monitoring: list[ProbeResult] = field(default_factory=list)  # host == "monitoring"

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h, r in self.hosts.items() if r.status != "ok"]


def host_status(probes: list[ProbeResult]) -> HostStatus:
    """A reachable host is ok when every probe is ok, not_found or skipped, else partial."""
    if not probes:
        return "failed"
    bad = [p for p in probes if p.status in ("failed", "timeout")]
    return "partial" if bad else "ok"


# ================================================================ findings (triage → report → tickets)
# One severity scale, most severe first; "none" is what a bundle with no finding gets.
Severity = Literal["P0", "P1", "P2", "P3"]
SEVERITIES: tuple[Severity, ...] = ("P0", "P1", "P2", "P3")
NO_SEVERITY = "none"
# The runbook's step-2 meaning of each level (README's severity table).
SEVERITY_MEANING: dict[str, str] = {
    "P0": "complete outage",
    "P1": "major degradation",
    "P2": "partial impact",
    "P3": "minor (warnings)",
}
# The runbook's response times (acknowledge within); P0's "immediate" is its first-actions window, 2 minutes.
SEVERITY_RESPONSE_TIME: dict[str, _dt.timedelta] = {
    "P0": _dt.timedelta(minutes=2),
    "P1": _dt.timedelta(minutes=15),
    "P2": _dt.timedelta(hours=1),
    "P3": _dt.timedelta(hours=4),
}


def response_time_text(severity: str) -> str:
    """The runbook's response time in words ("respond within 15 minutes"); "" for none or unknown."""
    within = SEVERITY_RESPONSE_TIME.get(severity)
    if within is None:
        return ""
    minutes = int(within.total_seconds() // 60)
    if severity == SEVERITIES[0]:  # the runbook says "immediate"; its first-actions window bounds it
        return f"respond immediately (within {minutes} minutes)"
    hours, rest = divmod(minutes, 60)
    span = f"{minutes} minutes" if hours == 0 or rest else f"{hours} hour{'s' if hours > 1 else ''}"
    return f"respond within {span}"


# Whether a finding rests on the system's state now (live) or on what its logs say happened (history);
# None until the measures say which.
Basis = Literal["live", "history"]


def severity_rank(severity: str) -> int:
    """Sort key: P0 → 0 … P3 → 3, then "none", then anything else."""
    return (
        SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES) + (severity != NO_SEVERITY)
    )


def worst_severity(severities: Iterable[str]) -> str:
    """The most severe of the given severities, or "none"."""
    found = [s for s in severities if s in SEVERITIES]
    return min(found, key=severity_rank) if found else NO_SEVERITY


class _Doc:
    """Strict reading of one JSON object of a versioned document: a missing key or a wrong type is a
    UsageError."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        self.raw, self.where = raw, where

    def _get(self, key: str, kinds: tuple[type, ...], label: str, optional: bool) -> Any:
        if key not in self.raw:
            raise UsageError(f"{self.where}: required field {key!r} is missing")
        value = self.raw[key]
        if value is None and optional:
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise UsageError(f"{self.where}: field {key!r} must be {label}, got {type(value).__name__}")
        return value

    def text(self, key: str) -> str:
        return str(self._get(key, (str,), "a string", False))

    def opt_text(self, key: str) -> str | None:
        value = self._get(key, (str,), "a string or null", True)
        return None if value is None else str(value)

    def flag(self, key: str) -> bool:
        return bool(self._get(key, (bool,), "true or false", False))

    def opt_int(self, key: str) -> int | None:
        value = self._get(key, (int,), "an integer or null", True)
        return None if value is None else int(value)

    def opt_number(self, key: str) -> float | None:
        value = self._get(key, (int, float), "a number or null", True)
        return None if value is None else float(value)

    def items(self, key: str) -> list[Any]:
        return list(self._get(key, (list,), "a list", False))

    def texts(self, key: str) -> tuple[str, ...]:
        items = self.items(key)
        if not all(isinstance(i, str) for i in items):
            raise UsageError(f"{self.where}: field {key!r} must be a list of strings")
        return tuple(items)

    def obj(self, key: str) -> dict[str, Any]:
        return dict(self._get(key, (dict,), "an object", False))

    def opt_obj(self, key: str) -> dict[str, Any] | None:
        value = self._get(key, (dict,), "an object or null", True)
        return None if value is None else dict(value)

    def text_map(self, key: str) -> dict[str, str]:
        value = self.obj(key)
        if not all(isinstance(v, str) for v in value.values()):
            raise UsageError(f"{self.where}: field {key!r} must map names to strings")
        return {str(k): str(v) for k, v in value.items()}

    def severity(self, key: str, *, allow_none: bool = False) -> str:
        value = self.text(key)
        if value not in SEVERITIES and not (allow_none and value == NO_SEVERITY):
            allowed = ", ".join(SEVERITIES + ((NO_SEVERITY,) if allow_none else ()))
            raise UsageError(f"{self.where}: field {key!r} is {value!r}, not one of {allowed}")
        return value


@dataclass(frozen=True)
class Evidence:
    """One quoted line of the bundle that a finding rests on (`path` is bundle-relative)."""

    host: str
    probe: str
    path: str
    line: int | None
    excerpt: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "probe": self.probe,
            "path": self.path,
            "line": self.line,
            "excerpt": self.excerpt,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "evidence") -> Evidence:
        d = _Doc(raw, where)
        return cls(d.text("host"), d.text("probe"), d.text("path"), d.opt_int("line"), d.text("excerpt"))


@dataclass(frozen=True)
class MitigationSuggestion:
    """A runbook action triage suggests: where (`hosts`, an inventory pattern), with what, and the ready
    command."""

    action: str
    hosts: str
    params: dict[str, str]
    command: str  # the `collector remediate ...` line, shell-quoted

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "hosts": self.hosts,
            "params": dict(self.params),
            "command": self.command,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "mitigation") -> MitigationSuggestion:
        d = _Doc(raw, where)
        return cls(d.text("action"), d.text("hosts"), d.text_map("params"), d.text("command"))


@dataclass(frozen=True)
class Finding:
    """What one rule found (on one or more hosts), with its evidence and the suggested mitigation."""

    id: str
    rule: str
    title: str
    severity: Severity
    scenario: str
    hosts: tuple[str, ...]
    message: str
    evidence: tuple[Evidence, ...] = ()
    mitigation: MitigationSuggestion | None = None
    alternatives: tuple[MitigationSuggestion, ...] = ()  # further runbook options, after the first
    security: bool = False
    data_at_risk: bool = False
    down: bool = False
    basis: Basis | None = None  # live: state at collection time; history: log lines in the window
    # live findings: ids of the history findings that explain them (shown beneath them as context)
    context: tuple[str, ...] = ()
    # history findings: when the last line of their evidence was written (ISO UTC); None: undated or live
    last_seen: str | None = None
    # history finding that no live finding explains: it happened earlier, the system has recovered
    recovered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "title": self.title,
            "severity": self.severity,
            "scenario": self.scenario,
            "hosts": list(self.hosts),
            "message": self.message,
            "evidence": [e.to_dict() for e in self.evidence],
            "mitigation": self.mitigation.to_dict() if self.mitigation else None,
            "alternatives": [m.to_dict() for m in self.alternatives],
            "security": self.security,
            "data_at_risk": self.data_at_risk,
            "down": self.down,
            "basis": self.basis,
            "context": list(self.context),
            "last_seen": self.last_seen,
            "recovered": self.recovered,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "finding") -> Finding:
        d = _Doc(raw, where)
        here = d.where = f"{where} {d.text('id')}"
        basis = d.opt_text("basis")
        if basis not in (None, "live", "history"):
            raise UsageError(f"{here}: field 'basis' is {basis!r}, not live, history or null")
        mitigation = d.opt_obj("mitigation")
        return cls(
            id=d.text("id"),
            rule=d.text("rule"),
            title=d.text("title"),
            severity=d.severity("severity"),  # type: ignore[arg-type]
            scenario=d.text("scenario"),
            hosts=d.texts("hosts"),
            message=d.text("message"),
            evidence=tuple(Evidence.from_dict(e, f"{here} evidence") for e in d.items("evidence")),
            mitigation=MitigationSuggestion.from_dict(mitigation, f"{here} mitigation")
            if mitigation
            else None,
            alternatives=tuple(
                MitigationSuggestion.from_dict(m, f"{here} alternative") for m in d.items("alternatives")
            ),
            security=d.flag("security"),
            data_at_risk=d.flag("data_at_risk"),
            down=d.flag("down"),
            basis=basis,  # type: ignore[arg-type]
            context=d.texts("context"),
            last_seen=d.opt_text("last_seen"),
            recovered=d.flag("recovered"),
        )


@dataclass(frozen=True)
class UnknownRule:
    """A rule triage could not evaluate, on which hosts, and why (per host in `details`)."""

    rule: str
    title: str
    hosts: tuple[str, ...]
    reason: str  # every host's reason in one line
    details: tuple[tuple[str, str], ...] = ()  # (host, reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "title": self.title,
            "hosts": list(self.hosts),
            "reason": self.reason,
            "details": [{"host": h, "reason": r} for h, r in self.details],
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "unknown rule") -> UnknownRule:
        d = _Doc(raw, where)
        details = tuple(
            (_Doc(x, f"{where} detail").text("host"), _Doc(x, f"{where} detail").text("reason"))
            for x in d.items("details")
        )
        return cls(d.text("rule"), d.text("title"), d.texts("hosts"), d.text("reason"), details)


@dataclass(frozen=True)
class Answer:
    """One of the runbook's step-2 answers and why."""

    answer: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "why": self.why}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "answer") -> Answer:
        d = _Doc(raw, where)
        return cls(d.text("answer"), d.text("why"))


@dataclass(frozen=True)
class AffectedAnswer(Answer):
    """ "How many users and hosts are affected?", with the hosts and the 5xx ratio behind the answer."""

    hosts: tuple[str, ...] = ()
    hosts_total: int = 0
    error_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {
            "hosts": list(self.hosts),
            "hosts_total": self.hosts_total,
            "error_ratio": self.error_ratio,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "answer") -> AffectedAnswer:
        d = _Doc(raw, where)
        return cls(
            d.text("answer"),
            d.text("why"),
            d.texts("hosts"),
            d.opt_int("hosts_total") or 0,
            d.opt_number("error_ratio"),
        )


# findings.json keys of the four questions, and the question each asks.
QUESTION_KEYS: dict[str, str] = {
    "how_many_users_and_hosts_affected": "How many users and hosts are affected?",
    "is_data_at_risk": "Is data at risk?",
    "down_or_degraded": "Is the service down or degraded?",
    "is_it_a_security_incident": "Is it a security incident?",
}


@dataclass(frozen=True)
class Questions:
    """The runbook's four step-2 questions, answered."""

    affected: AffectedAnswer
    data_at_risk: Answer
    down_or_degraded: Answer
    security: Answer

    def items(self) -> list[tuple[str, Answer]]:
        """(question text, answer) in the runbook's order."""
        return list(
            zip(
                QUESTION_KEYS.values(),
                (self.affected, self.data_at_risk, self.down_or_degraded, self.security),
            )
        )

    def to_dict(self) -> dict[str, Any]:
        keys = list(QUESTION_KEYS)
        return {
            keys[0]: self.affected.to_dict(),
            keys[1]: self.data_at_risk.to_dict(),
            keys[2]: self.down_or_degraded.to_dict(),
            keys[3]: self.security.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "questions") -> Questions:
        d = _Doc(raw, where)
        k = list(QUESTION_KEYS)
        return cls(
            AffectedAnswer.from_dict(d.obj(k[0]), f"{where} {k[0]}"),
            Answer.from_dict(d.obj(k[1]), f"{where} {k[1]}"),
            Answer.from_dict(d.obj(k[2]), f"{where} {k[2]}"),
            Answer.from_dict(d.obj(k[3]), f"{where} {k[3]}"),
        )


@dataclass(frozen=True)
class SecurityFlag:
    """Triage's separate security flag: suspected when a security rule fired, with its reasons."""

    suspected: bool
    reasons: tuple[str, ...] = ()
    advice: str = ""

    @property
    def why(self) -> str:
        return "; ".join(self.reasons) or "no security rule fired"

    def to_dict(self) -> dict[str, Any]:
        return {"suspected": self.suspected, "reasons": list(self.reasons), "advice": self.advice}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "security") -> SecurityFlag:
        d = _Doc(raw, where)
        return cls(d.flag("suspected"), d.texts("reasons"), d.text("advice"))


HostFigure = dict[str, float | None]  # host -> value (None: could not be read)


@dataclass(frozen=True)
class KeyFigures:
    """The incident's key figures, computed once per bundle by triage (None: unknown; per-host maps are
    None when the bundle has no host of that role)."""

    error_ratio: float | None = None  # 0–1, fleet-wide (Prometheus)
    p95_s: float | None = None
    pg_connections: HostFigure | None = None
    pg_max_connections: HostFigure | None = None
    mem_used_pct: HostFigure | None = None
    disk_max_pct: HostFigure | None = None
    redis_used_memory: HostFigure | None = None  # bytes
    redis_maxmemory: HostFigure | None = None  # bytes; 0 = unlimited
    cpu_busy_pct: HostFigure | None = None  # top: 100 - idle
    load_per_core: HostFigure | None = None  # uptime's 1-minute load / cores
    io_util_max_pct: HostFigure | None = None  # iostat: the busiest device's %util
    io_await_max_ms: HostFigure | None = None  # iostat: the worst await of any device
    pg_db_bytes: HostFigure | None = None  # every database's size, summed
    pg_db_growth_bytes: HostFigure | None = (
        None  # since the previous bundle of the same hosts (None: no such bundle)
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            name: (dict(value) if isinstance(value, dict) else value)
            for name, value in ((f, getattr(self, f)) for f in FIGURE_KEYS)
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "figures") -> KeyFigures:
        d = _Doc(raw, where)
        hosts: dict[str, HostFigure | None] = {}
        for key in FIGURE_KEYS[2:]:
            value = d.opt_obj(key)
            if value is not None and not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value.values()
            ):
                raise UsageError(f"{where}: field {key!r} must map hosts to numbers or null")
            hosts[key] = None if value is None else {str(h): v for h, v in value.items()}
        return cls(d.opt_number("error_ratio"), d.opt_number("p95_s"), **hosts)


FIGURE_KEYS: tuple[str, ...] = (
    "error_ratio",
    "p95_s",
    "pg_connections",
    "pg_max_connections",
    "mem_used_pct",
    "disk_max_pct",
    "redis_used_memory",
    "redis_maxmemory",
    "cpu_busy_pct",
    "load_per_core",
    "io_util_max_pct",
    "io_await_max_ms",
    "pg_db_bytes",
    "pg_db_growth_bytes",
)


@dataclass(frozen=True)
class Findings:
    """triage's verdict on one bundle (findings.json): severity, the step-2 answers, the security flag,
    every finding, the rules it could not evaluate and why, each rule's state and the key figures."""

    incident: str
    generated: str
    severity: str  # P0..P3 or "none"
    summary: str
    questions: Questions
    security: SecurityFlag
    findings: tuple[Finding, ...] = ()
    unknown: tuple[UnknownRule, ...] = ()
    rules: dict[str, str] = field(
        default_factory=dict
    )  # rule id -> fired|passed|unknown|suppressed|not_applicable
    figures: KeyFigures = field(default_factory=KeyFigures)
    schema: str = FINDINGS_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "incident": self.incident,
            "generated": self.generated,
            "severity": self.severity,
            "summary": self.summary,
            "questions": self.questions.to_dict(),
            "security": self.security.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
            # a list of pairs, not a map: `"auth-failures": "passed"` reads as a secret assignment to the
            # scrubber
            "unknown": [u.to_dict() for u in self.unknown],
            "rules": [{"rule": rule, "state": state} for rule, state in self.rules.items()],
            "figures": self.figures.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "findings.json") -> Findings:
        """The findings document; another schema, a missing field or a wrong type is a UsageError naming
        it."""
        d = _Doc(raw, where)
        schema = d.text("schema")
        if schema != FINDINGS_SCHEMA:
            raise UsageError(
                f"{where} has schema {schema!r}; this collector reads {FINDINGS_SCHEMA!r} "
                "(re-run `collector triage` on the bundle)"
            )
        return cls(
            incident=d.text("incident"),
            generated=d.text("generated"),
            severity=d.severity("severity", allow_none=True),
            summary=d.text("summary"),
            questions=Questions.from_dict(d.obj("questions"), f"{where} questions"),
            security=SecurityFlag.from_dict(d.obj("security"), f"{where} security"),
            findings=tuple(Finding.from_dict(f, f"{where} finding") for f in d.items("findings")),
            unknown=tuple(UnknownRule.from_dict(u, f"{where} unknown rule") for u in d.items("unknown")),
            rules=_rule_states(d.items("rules"), f"{where} rules"),
            figures=KeyFigures.from_dict(d.obj("figures"), f"{where} figures"),
            schema=schema,
        )


def _rule_states(items: list[Any], where: str) -> dict[str, str]:
    states = [_Doc(item, where) for item in items]
    return {d.text("rule"): d.text("state") for d in states}


@dataclass(frozen=True)
class IncidentSummary:
    """The incident as people see it first (report header, TICKET.md, ticket subject, comms)."""

    incident: str
    severity: str  # P0..P3, "none", or "unknown" when triage has not run
    headline: str  # the most severe finding's title, or a neutral line
    impact: str  # down or degraded, and how many users and hosts
    hosts_affected: tuple[str, ...]
    security: str | None  # why and what to do when a security incident is suspected; None when clear

    @property
    def triaged(self) -> bool:
        return self.severity != "unknown"

    @property
    def response_time(self) -> str:
        """The severity's response time in words, "" when there is no severity."""
        return response_time_text(self.severity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident": self.incident,
            "severity": self.severity,
            "headline": self.headline,
            "impact": self.impact,
            "hosts_affected": list(self.hosts_affected),
            "security": self.security,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "incident summary") -> IncidentSummary:
        d = _Doc(raw, where)
        return cls(
            d.text("incident"),
            d.text("severity"),
            d.text("headline"),
            d.text("impact"),
            d.texts("hosts_affected"),
            d.opt_text("security"),
        )

    @classmethod
    def of(cls, incident: str, findings: Findings | None) -> IncidentSummary:
        """The summary from triage's findings (None: triage has not run on the bundle)."""
        if findings is None:
            return cls(incident, "unknown", f"Incident {incident}", "", (), None)  # impact: not judged yet
        # triage orders them: live evidence first, by severity (a fault's cause before its leftovers)
        top = findings.findings[0] if findings.findings else None
        affected = tuple(dict.fromkeys(h for f in findings.findings for h in f.hosts if h != "monitoring"))
        impact = "; ".join(
            a for a in (findings.questions.down_or_degraded.answer, findings.questions.affected.answer) if a
        )
        flag = findings.security
        security = (
            ("; ".join(p for p in (flag.why, flag.advice) if p) or "possible security incident")
            if flag.suspected
            else None
        )
        return cls(
            incident,
            findings.severity,
            top.title if top else f"Incident {incident}",
            impact,
            affected,
            security,
        )


# ============================================================ remediation (plan → approval → apply → audit)
PLAN_SCHEMA = "incident-collector/plan/v2"
STATEMENT_SCHEMA = "incident-collector/statement/v1"
ACTION_RECORD_SCHEMA = "incident-collector/action/v2"
# Roles a signed statement can have; an approval is an `approve` or (self-approval) `break-glass` statement.
STATEMENT_ROLES: tuple[str, ...] = ("request", "approve", "break-glass", "apply", "apply-finish")


def canonical_json(value: Any) -> str:
    """The one JSON form that is hashed and signed: sorted keys, no spaces, UTF-8 kept."""
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Statement:
    """What a person signs: a role over one plan's content hash, at a time (and, for an approval, until
    when)."""

    role: str
    plan_id: str
    plan_hash: str
    time: str
    nonce: str
    expires: str | None = None  # approvals only
    reason: str | None = None  # break-glass only
    approval: str | None = None  # apply: the digest of the approval signature it consumes
    records: tuple[str, ...] = ()  # apply-finish: hashes of the audit records of that run it vouches for
    schema: str = STATEMENT_SCHEMA

    def message(self) -> bytes:
        """The exact bytes signed and verified."""
        return canonical_json(self.to_dict()).encode()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "role": self.role,
            "plan_id": self.plan_id,
            "plan_hash": self.plan_hash,
            "time": self.time,
            "nonce": self.nonce,
            "expires": self.expires,
            "reason": self.reason,
            "approval": self.approval,
            "records": list(self.records),
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "statement") -> Statement:
        if not isinstance(raw, dict) or raw.get("schema") != STATEMENT_SCHEMA:
            raise UsageError(f"{where} is not a signed statement ({STATEMENT_SCHEMA})")
        try:
            role, plan_id, plan_hash = str(raw["role"]), str(raw["plan_id"]), str(raw["plan_hash"])
            time, nonce = str(raw["time"]), str(raw["nonce"])
        except KeyError as exc:
            raise UsageError(f"{where} lacks {exc.args[0]}") from None
        if role not in STATEMENT_ROLES:
            raise UsageError(f"{where} has an unknown role {role!r}")

        def opt(name: str) -> str | None:
            value = raw.get(name)
            return None if value is None else str(value)

        return cls(
            role,
            plan_id,
            plan_hash,
            time,
            nonce,
            opt("expires"),
            opt("reason"),
            opt("approval"),
            tuple(str(r) for r in raw.get("records") or ()),
        )


@dataclass(frozen=True)
class Signed:
    """A statement with its SSH signature; `principal` is who verified as its signer when it was written."""

    statement: Statement
    signature: str
    principal: str = ""

    @property
    def digest(self) -> str:
        import hashlib

        return hashlib.sha256(self.signature.strip().encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "statement": self.statement.to_dict(),
            "signature": self.signature,
            "principal": self.principal,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "signed statement") -> Signed:
        if not isinstance(raw, dict):
            raise UsageError(f"{where} is not a signed statement")
        return cls(
            Statement.from_dict(raw.get("statement"), where),
            str(raw.get("signature") or ""),
            str(raw.get("principal") or ""),
        )


# Plan fields outside the content hash: the hash itself, and what people add by signing it.
_PLAN_UNHASHED = ("hash", "requester", "statements")


@dataclass
class Plan:
    """A planned mitigation: what it would change (check + diff) and everything that decides what runs.

    `binding` holds the digests of the inventory files, each target's connection and collector_* vars,
    the playbook/task/module files, the tool and Ansible versions; `hash` covers every field but the
    signed statements (and the requester's name, which comes from the request's signature).
    """

    id: str
    action: str
    params: dict[str, Any]
    pattern: str
    inventory: str
    targets: list[str]
    created: str
    bundle: str | None = None
    check: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> status, changed, msg
    diffs: dict[str, list[str]] = field(default_factory=dict)  # host -> redacted unified diffs
    binding: dict[str, Any] = field(default_factory=dict)
    schema: str = PLAN_SCHEMA
    hash: str = ""
    requester: str = ""
    statements: list[dict[str, Any]] = field(default_factory=list)  # Signed.to_dict(), oldest first

    def content(self) -> dict[str, Any]:
        """The hashed part of the plan."""
        return {k: v for k, v in self.to_dict().items() if k not in _PLAN_UNHASHED}

    def compute_hash(self) -> str:
        import hashlib

        return hashlib.sha256(canonical_json(self.content()).encode()).hexdigest()

    def signed(self, *roles: str) -> list[Signed]:
        """The plan's signed statements with one of `roles` (every one when none is named)."""
        out = [Signed.from_dict(s, f"plan {self.id} statement") for s in self.statements]
        return [s for s in out if not roles or s.statement.role in roles]

    @property
    def changing_hosts(self) -> list[str]:
        return [h for h in self.targets if self.check.get(h, {}).get("changed")]

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h in self.targets if self.check.get(h, {}).get("status") in ("failed", "unreachable")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "id": self.id,
            "action": self.action,
            "params": dict(self.params),
            "pattern": self.pattern,
            "inventory": self.inventory,
            "targets": list(self.targets),
            "created": self.created,
            "bundle": self.bundle,
            "check": self.check,
            "diffs": self.diffs,
            "binding": self.binding,
            "hash": self.hash,
            "requester": self.requester,
            "statements": list(self.statements),
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "plan") -> Plan:
        if not isinstance(raw, dict) or raw.get("schema") != PLAN_SCHEMA:
            raise UsageError(f"{where} is not a plan ({PLAN_SCHEMA})")
        try:
            plan = cls(
                id=str(raw["id"]),
                action=str(raw["action"]),
                params=dict(raw["params"]),
                pattern=str(raw["pattern"]),
                inventory=str(raw["inventory"]),
                targets=[str(t) for t in raw["targets"]],
                created=str(raw["created"]),
                bundle=raw.get("bundle"),
                check=dict(raw.get("check") or {}),
                diffs=dict(raw.get("diffs") or {}),
                binding=dict(raw.get("binding") or {}),
                hash=str(raw.get("hash") or ""),
                requester=str(raw.get("requester") or ""),
                statements=list(raw.get("statements") or []),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{where} is incomplete: {exc}") from None
        return plan


@dataclass(frozen=True)
class ActionRecord:
    """One entry of a bundle's actions.json: who asked, who approved (verified principals), what ran, the
    outcome."""

    action: str
    params: dict[str, Any]
    plan_id: str
    plan_hash: str
    requester: str
    requested: str
    approver: str | None
    approved: str | None
    break_glass: str | None
    applier: str
    applied_started: str
    applied_finished: str
    hosts: dict[str, dict[str, Any]]
    stopped: str | None
    verify: dict[str, Any]
    after_bundle: str | None = None
    before_after: dict[str, Any] = field(default_factory=dict)
    audit_head: str | None = None  # "SEQ:HASH" of the audit log after this apply (its external checkpoint)
    signatures: dict[str, str] = field(default_factory=dict)  # role -> signature digest
    schema: str = ACTION_RECORD_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "action": self.action,
            "params": self.params,
            "plan_id": self.plan_id,
            "plan_hash": self.plan_hash,
            "requester": self.requester,
            "requested": self.requested,
            "approver": self.approver,
            "approved": self.approved,
            "break_glass": self.break_glass,
            "applier": self.applier,
            "applied_started": self.applied_started,
            "applied_finished": self.applied_finished,
            "hosts": self.hosts,
            "stopped": self.stopped,
            "verify": self.verify,
            "after_bundle": self.after_bundle,
            "before_after": self.before_after,
            "audit_head": self.audit_head,
            "signatures": self.signatures,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "action record") -> ActionRecord:
        if not isinstance(raw, dict):
            raise UsageError(f"{where} is not an action record")
        try:
            return cls(
                action=str(raw["action"]),
                params=dict(raw.get("params") or {}),
                plan_id=str(raw["plan_id"]),
                plan_hash=str(raw["plan_hash"]),
                requester=str(raw.get("requester") or ""),
                requested=str(raw.get("requested") or ""),
                approver=raw.get("approver"),
                approved=raw.get("approved"),
                break_glass=raw.get("break_glass"),
                applier=str(raw.get("applier") or ""),
                applied_started=str(raw.get("applied_started") or ""),
                applied_finished=str(raw.get("applied_finished") or ""),
                hosts=dict(raw.get("hosts") or {}),
                stopped=raw.get("stopped"),
                verify=dict(raw.get("verify") or {}),
                after_bundle=raw.get("after_bundle"),
                before_after=dict(raw.get("before_after") or {}),
                audit_head=raw.get("audit_head"),
                signatures=dict(raw.get("signatures") or {}),
                schema=str(raw.get("schema") or ACTION_RECORD_SCHEMA),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{where} is incomplete: {exc}") from None


# ================================================================ incidents (webhook → store → lifecycle)
IncidentState = Literal["open", "acknowledged", "mitigating", "resolved", "closed"]
INCIDENT_STATES: tuple[IncidentState, ...] = ("open", "acknowledged", "mitigating", "resolved", "closed")
# States in which an alert group joins the incident rather than opening a new one.
INCIDENT_ACTIVE_STATES: tuple[IncidentState, ...] = ("open", "acknowledged", "mitigating")
INCIDENT_SCHEMA = "incident-collector/incident/v1"


@dataclass(frozen=True)
class Incident:
    """One incident as the store holds it: what fired, its state and clocks, and what was gathered for it.

    Times are ISO 8601 UTC strings (`utcnow()`'s form); `bundles` are bundle folder paths, oldest first;
    `alerts` counts the distinct alerts recorded on it; `labels` are the labels its alerts share.
    """

    id: str
    group_key: str
    title: str
    state: IncidentState
    severity: Severity | None
    commander: str | None
    opened_at: str
    acked_at: str | None = None
    resolved_at: str | None = None
    closed_at: str | None = None
    bundles: tuple[str, ...] = ()
    plan: str | None = None
    ticket: str | None = None
    hosts: tuple[str, ...] = ()
    alerts: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state in INCIDENT_ACTIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": INCIDENT_SCHEMA,
            "id": self.id,
            "group_key": self.group_key,
            "title": self.title,
            "state": self.state,
            "severity": self.severity,
            "commander": self.commander,
            "opened_at": self.opened_at,
            "acked_at": self.acked_at,
            "resolved_at": self.resolved_at,
            "closed_at": self.closed_at,
            "bundles": list(self.bundles),
            "plan": self.plan,
            "ticket": self.ticket,
            "hosts": list(self.hosts),
            "alerts": self.alerts,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "incident") -> Incident:
        d = _Doc(raw, where)
        state = d.text("state")
        if state not in INCIDENT_STATES:
            raise UsageError(f"{where}: field 'state' is {state!r}, not one of {', '.join(INCIDENT_STATES)}")
        severity = d.opt_text("severity")
        if severity is not None and severity not in SEVERITIES:
            raise UsageError(
                f"{where}: field 'severity' is {severity!r}, not one of {', '.join(SEVERITIES)} or null"
            )
        return cls(
            id=d.text("id"),
            group_key=d.text("group_key"),
            title=d.text("title"),
            state=state,
            severity=severity,
            commander=d.opt_text("commander"),
            opened_at=d.text("opened_at"),
            acked_at=d.opt_text("acked_at"),
            resolved_at=d.opt_text("resolved_at"),
            closed_at=d.opt_text("closed_at"),
            bundles=d.texts("bundles"),
            plan=d.opt_text("plan"),
            ticket=d.opt_text("ticket"),
            hosts=d.texts("hosts"),
            alerts=d.opt_int("alerts") or 0,
            labels=d.text_map("labels"),
        )
