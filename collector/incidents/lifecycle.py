"""The runbook's clocks and people: who commands, when an acknowledgement, an update or an escalation is due.

The rules are pure functions over (Incident, its timeline events, now) and return what is due; `tick`
applies them to every incident of a store (the server calls it periodically, `collector incident tick`
once). The runbook's numbers:

- response time (acknowledge deadline): P0 immediate (the runbook's first-actions window, 2 minutes),
  P1 15 min, P2 1 h, P3 4 h;
- incident commander: P0/P1 the on-call engineer from configuration, P2/P3 the first responder (whoever
  acknowledges first);
- status updates: P0 the initial one within 5 minutes, then every 15; the runbook is silent on the others,
  so P1 within 15 min then every 30, P2 within 1 h then every 2 h, P3 within 4 h then every 8 h
  (the first update is due when the response time ends, the cadence is twice it, at least 15 minutes);
- a missed acknowledge or update deadline sends a reminder to the commander (or the on-call), once per
  missed period;
- escalation ("When to escalate"): not resolved within 1 hour; data loss suspected, security breach
  suspected and cross-system impact at once; need for expertise when a person asks for it. Each reason
  escalates once, to the contacts whose `escalate_on` names it.

An incident without a severity yet runs on P1's clocks: the alert said something is wrong, and a person
should look within 15 minutes until triage says otherwise.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from collector.core import INCIDENT_ACTIVE_STATES, SEVERITIES, SEVERITY_RESPONSE_TIME, Incident, UsageError
from collector.times import iso_z, parse_instant

if TYPE_CHECKING:
    from collector.config import Settings
    from collector.incidents.store import Event, IncidentStore

log = logging.getLogger("collector.incidents")
MINUTE = _dt.timedelta(minutes=1)
DEFAULT_SEVERITY = "P1"
RESPONSE_TIME = SEVERITY_RESPONSE_TIME  # the runbook's, kept with the severity scale in collector.core
# (first update within, then every)
UPDATE_CADENCE: dict[str, tuple[_dt.timedelta, _dt.timedelta]] = {
    "P0": (5 * MINUTE, 15 * MINUTE),
    "P1": (15 * MINUTE, 30 * MINUTE),
    "P2": (60 * MINUTE, 120 * MINUTE),
    "P3": (240 * MINUTE, 480 * MINUTE),
}
COMMANDED_BY_ONCALL = ("P0", "P1")
ACTIVE: tuple[str, ...] = tuple(INCIDENT_ACTIVE_STATES)
ESCALATE_UNRESOLVED_AFTER = 60 * MINUTE
ESCALATION_REASONS: dict[str, str] = {
    "unresolved": "not resolved within 1 hour",
    "data-loss": "data loss suspected",
    "security": "security breach suspected",
    "cross-system": "cross-system impact",
    "expertise": "need for additional expertise",
}
# Flags a person (or triage) raises on an incident; each escalates at once.
FLAGS = ("data-loss", "security", "cross-system", "expertise")
STAGES = ("initial", "mitigation", "resolved")

# Timeline event kinds this module writes (besides the store's own).
EV_ACK = "acknowledged"
EV_ASSIGNED = "assigned"
EV_UPDATE = "update-sent"  # detail: stage, message, channels
EV_REMINDER = "reminder"  # detail: key, what, due
EV_ESCALATED = "escalated"  # detail: reason, contacts
EV_FLAG = "flag"  # detail: flag, why
EV_SILENCED = "silenced"  # detail: ids
EV_UNSILENCED = "unsilenced"  # detail: ids
EV_RESOLVED = "resolved"
EV_CLOSED = "closed"


# ---------------------------------------------------------------- people (configuration)


@dataclass(frozen=True)
class Contact:
    """A person or team to page: name, role, e-mail, and the escalation reasons they are called for."""

    name: str
    role: str = ""
    email: str = ""
    escalate_on: tuple[str, ...] = ()

    def label(self) -> str:
        return f"{self.name} ({self.role})" if self.role and self.role != self.name else self.name


@dataclass(frozen=True)
class People:
    """The on-call engineer and the escalation contacts."""

    oncall: Contact | None = None
    contacts: tuple[Contact, ...] = ()

    def for_reason(self, reason: str) -> tuple[Contact, ...]:
        return tuple(c for c in self.contacts if reason in c.escalate_on)


def config_file() -> Path | None:
    """incidents.yml: `$COLLECTOR_INCIDENTS_CONFIG`, else ./incidents.yml, else
    ~/.config/collector/incidents.yml."""
    explicit = os.environ.get("COLLECTOR_INCIDENTS_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"COLLECTOR_INCIDENTS_CONFIG points to {path}, which is not a file")
        return path
    for candidate in (Path("incidents.yml"), Path.home() / ".config" / "collector" / "incidents.yml"):
        if candidate.is_file():
            return candidate
    return None


def read_config(path: Path | None = None) -> dict[str, Any]:
    """The incidents configuration file as a mapping ({} when there is none)."""
    path = path or config_file()
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"incidents config {path} is unreadable: {exc}".splitlines()[0]) from None
    if not isinstance(loaded, dict):
        raise UsageError(f"incidents config {path} must be a mapping (oncall, contacts, notify)")
    return loaded


def _contact(raw: Any, where: str) -> Contact:
    if isinstance(raw, str):
        return Contact(name=raw)
    if not isinstance(raw, dict) or not raw.get("name"):
        raise UsageError(f"{where} must be a mapping with at least a name")
    on = raw.get("escalate_on") or ()
    on = (on,) if isinstance(on, str) else tuple(str(r) for r in on)
    unknown = [r for r in on if r not in ESCALATION_REASONS]
    if unknown:
        raise UsageError(
            f"{where}: unknown escalation reason {unknown[0]!r} (use {', '.join(ESCALATION_REASONS)})"
        )
    return Contact(
        name=str(raw["name"]),
        role=str(raw.get("role") or ""),
        email=str(raw.get("email") or ""),
        escalate_on=on,
    )


def people_from(config: Mapping[str, Any]) -> People:
    """People from the configuration mapping; `COLLECTOR_ONCALL` (a name) overrides the on-call's name."""
    raw_oncall = config.get("oncall")
    oncall = _contact(raw_oncall, "incidents config: oncall") if raw_oncall else None
    env_oncall = os.environ.get("COLLECTOR_ONCALL")
    if env_oncall:
        oncall = Contact(name=env_oncall, role="on-call", email=oncall.email if oncall else "")
    raw_contacts = config.get("contacts") or []
    if not isinstance(raw_contacts, list):
        raise UsageError("incidents config: contacts must be a list")
    contacts = tuple(_contact(c, f"incidents config: contacts[{i}]") for i, c in enumerate(raw_contacts))
    return People(oncall=oncall, contacts=contacts)


def load_people() -> People:
    return people_from(read_config())


# ---------------------------------------------------------------- the clocks (pure)


@dataclass(frozen=True)
class Signals:
    """What triage saw in the incident's newest bundle that decides an escalation."""

    data_loss: bool = False
    security: bool = False
    cross_system: bool = False
    why: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Due:
    """One thing due now for an incident.

    kind: assign | notify | remind | escalate | unsilence. `key` makes it happen once (the timeline event
    written when it is done carries it).
    """

    kind: str
    key: str
    due_at: _dt.datetime
    text: str
    stage: str = ""  # notify: initial | mitigation | resolved
    reason: str = ""  # escalate: a key of ESCALATION_REASONS
    recipients: tuple[Contact, ...] = ()
    ids: tuple[str, ...] = ()  # unsilence: the silence ids still active


@dataclass(frozen=True)
class Deadline:
    what: str
    at: _dt.datetime


def _t(text: str | None) -> _dt.datetime | None:
    return parse_instant(text) if text else None


def severity_of(incident: Incident) -> str:
    """The severity the clocks run on (P1 until one is known)."""
    return incident.severity if incident.severity in SEVERITIES else DEFAULT_SEVERITY


def ack_deadline(incident: Incident) -> _dt.datetime:
    return parse_instant(incident.opened_at) + RESPONSE_TIME[severity_of(incident)]


def commander_for(incident: Incident, people: People, responder: str | None = None) -> str | None:
    """P0/P1: the on-call; P2/P3: the first responder (the person acknowledging), else nobody yet."""
    if incident.commander:
        return incident.commander
    if severity_of(incident) in COMMANDED_BY_ONCALL:
        return people.oncall.name if people.oncall else responder
    return responder


def _events(events: Iterable[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


def _detail(event: Event, key: str) -> Any:
    return (event.detail or {}).get(key)


def sent_stages(events: Iterable[Event]) -> set[str]:
    return {str(_detail(e, "stage")) for e in _events(events, EV_UPDATE)}


def last_update(events: Sequence[Event]) -> _dt.datetime | None:
    times = [parse_instant(e.at) for e in _events(events, EV_UPDATE)]
    return max(times) if times else None


def update_deadline(incident: Incident, events: Sequence[Event]) -> _dt.datetime | None:
    """When the next status update is due (None once the incident is no longer active)."""
    if incident.state not in INCIDENT_ACTIVE_STATES:
        return None
    first, every = UPDATE_CADENCE[severity_of(incident)]
    last = last_update(events)
    return parse_instant(incident.opened_at) + first if last is None else last + every


def flags(events: Iterable[Event], signals: Signals) -> dict[str, str]:
    """Raised flags and why: from people (flag events) and from triage's signals."""
    raised: dict[str, str] = {}
    for name, on in (
        ("data-loss", signals.data_loss),
        ("security", signals.security),
        ("cross-system", signals.cross_system),
    ):
        if on:
            raised[name] = signals.why.get(name, "triage")
    for event in _events(events, EV_FLAG):
        name = str(_detail(event, "flag") or "")
        if name in FLAGS:
            raised.setdefault(name, str(_detail(event, "why") or f"raised by {event.actor or 'someone'}"))
    return raised


def active_silences(events: Iterable[Event]) -> list[str]:
    made = [str(i) for e in _events(events, EV_SILENCED) for i in (_detail(e, "ids") or [])]
    gone = {str(i) for e in _events(events, EV_UNSILENCED) for i in (_detail(e, "ids") or [])}
    return [i for i in dict.fromkeys(made) if i not in gone]


def next_deadline(incident: Incident, events: Sequence[Event], now: _dt.datetime) -> Deadline | None:
    """The soonest clock of an active incident (acknowledge, update, escalation), for the page."""
    if incident.state not in INCIDENT_ACTIVE_STATES:
        return None
    clocks: list[Deadline] = []
    if not incident.acked_at:
        clocks.append(Deadline("acknowledge", ack_deadline(incident)))
    update = update_deadline(incident, events)
    if update is not None:
        clocks.append(Deadline("initial update" if not sent_stages(events) else "status update", update))
    if "unresolved" not in {_detail(e, "reason") for e in _events(events, EV_ESCALATED)}:
        clocks.append(Deadline("escalation", parse_instant(incident.opened_at) + ESCALATE_UNRESOLVED_AFTER))
    return min(clocks, key=lambda d: d.at) if clocks else None


def due(
    incident: Incident,
    events: Sequence[Event],
    now: _dt.datetime,
    people: People,
    signals: Signals = Signals(),
    *,
    collecting: bool = False,
) -> list[Due]:
    """Everything due for `incident` at `now` that has not been done yet, in the order to do it.

    `collecting`: the receiver's collection (collect, triage, report, ticket, plan) is still running; the
    initial update waits for it (it is filled from the report and goes on the ticket) until its deadline.
    """
    out: list[Due] = []
    severity = severity_of(incident)
    opened = parse_instant(incident.opened_at)
    active = incident.state in INCIDENT_ACTIVE_STATES
    done_keys = {str(_detail(e, "key")) for e in events if _detail(e, "key")}
    stages = sent_stages(events)
    commander = incident.commander
    who = _recipients(incident, people)

    if active and not commander and severity in COMMANDED_BY_ONCALL and people.oncall:
        out.append(
            Due(
                "assign",
                "assign",
                opened,
                f"{people.oncall.name} commands this {severity} incident "
                "(the on-call engineer, per the runbook)",
                recipients=(people.oncall,),
            )
        )

    # Status updates the runbook's templates carry: initial (as soon as evidence is in, at the latest at its
    # deadline), mitigation (once a fix is applied), resolved.
    first_due = opened + UPDATE_CADENCE[severity][0]
    evidence_in = bool(incident.bundles) and not collecting
    if "initial" not in stages and (evidence_in or now >= first_due or not active):
        out.append(Due("notify", "notify:initial", min(now, first_due), "initial update", stage="initial"))
    mitigating = incident.state == "mitigating" or any(e.kind == "applied" for e in events)
    if "mitigation" not in stages and mitigating and active:
        out.append(Due("notify", "notify:mitigation", now, "mitigation update", stage="mitigation"))
    if "resolved" not in stages and incident.state in ("resolved", "closed"):
        out.append(
            Due(
                "notify",
                "notify:resolved",
                _t(incident.resolved_at) or now,
                "resolved update",
                stage="resolved",
            )
        )

    if active and not incident.acked_at:
        deadline = ack_deadline(incident)
        if now >= deadline:
            period = RESPONSE_TIME[severity]
            n = int((now - deadline) / period) if period else 0
            key = f"remind:ack:{n}"
            if key not in done_keys:
                out.append(
                    Due(
                        "remind",
                        key,
                        deadline + n * period,
                        f"not acknowledged: the {severity} response time ({_mins(period)}) ended at "
                        f"{iso_z(deadline)}",
                        recipients=who,
                    )
                )
    update = update_deadline(incident, events)
    if active and update is not None and now >= update and "initial" in stages:
        every = UPDATE_CADENCE[severity][1]
        n = int((now - update) / every)
        key = f"remind:update:{iso_z(update)}:{n}"
        if key not in done_keys:
            out.append(
                Due(
                    "remind",
                    key,
                    update + n * every,
                    f"status update overdue: it was due at {iso_z(update)} (every {_mins(every)} for "
                    f"{severity})",
                    recipients=who,
                )
            )

    if active:
        reasons: dict[str, str] = {}
        if now >= opened + ESCALATE_UNRESOLVED_AFTER:
            reasons["unresolved"] = f"open since {iso_z(opened)}, not resolved within 1 hour"
        reasons.update(flags(events, signals))
        escalated = {str(_detail(e, "reason")) for e in _events(events, EV_ESCALATED)}
        for reason, why in reasons.items():
            key = f"escalate:{reason}"
            if reason not in escalated and key not in done_keys:
                recipients, note = people.for_reason(reason), ""
                if not recipients and people.oncall:
                    # an escalation nobody receives is worse than one the on-call has to forward
                    recipients, note = (
                        (people.oncall,),
                        " (no contact is configured for this reason: sent to the on-call)",
                    )
                out.append(
                    Due(
                        "escalate",
                        key,
                        now,
                        f"{ESCALATION_REASONS[reason]}: {why}{note}",
                        reason=reason,
                        recipients=recipients,
                    )
                )
    else:
        left = active_silences(events)
        if left:
            out.append(
                Due(
                    "unsilence",
                    "unsilence",
                    _t(incident.resolved_at) or now,
                    f"expire {len(left)} Alertmanager silence(s): the incident is {incident.state}",
                    ids=tuple(left),
                )
            )
    return out


def _recipients(incident: Incident, people: People) -> tuple[Contact, ...]:
    """Reminders go to the commander when known (by name in the contacts), else to the on-call."""
    if incident.commander:
        for contact in (people.oncall, *people.contacts):
            if contact and contact.name == incident.commander:
                return (contact,)
        return (Contact(name=incident.commander),)
    return (people.oncall,) if people.oncall else ()


def _mins(delta: _dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h" if minutes >= 60 and minutes % 60 == 0 else f"{minutes} min"


# ---------------------------------------------------------------- signals from the newest bundle


def read_signals(incident: Incident) -> Signals:
    """Triage's data-at-risk and security answers, and whether affected hosts span more than one role."""
    if not incident.bundles:
        return Signals()
    from collector.bundle import Bundle  # the bundle and triage steps own these readers
    from collector.triage import read_findings

    try:
        bundle = Bundle.open(Path(incident.bundles[-1]))
        findings = read_findings(bundle)
    except (UsageError, OSError, ValueError):
        return Signals()
    if findings is None:
        return Signals()
    why: dict[str, str] = {}
    data_loss = findings.questions.data_at_risk.answer.strip().lower().startswith("yes")
    if data_loss:
        why["data-loss"] = f"triage: {findings.questions.data_at_risk.why}"
    security = findings.security.suspected
    if security:
        why["security"] = "triage: " + ("; ".join(findings.security.reasons) or "a security rule fired")
    hosts = bundle.manifest.get("hosts", {}) if isinstance(bundle.manifest, dict) else {}
    affected = {
        h for f in findings.findings for h in f.hosts if h in hosts and f.severity in ("P0", "P1", "P2")
    }
    roles = {r for h in affected for r in (hosts[h].get("roles") or [h])}
    cross = len(roles) > 1
    if cross:
        why["cross-system"] = f"triage: findings on {', '.join(sorted(roles))}"
    return Signals(data_loss=data_loss, security=security, cross_system=cross, why=why)


# ---------------------------------------------------------------- Alertmanager silences


class AlertmanagerError(Exception):
    """Alertmanager refused or could not be reached (one line)."""


def _am_request(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip().splitlines()
        raise AlertmanagerError(
            f"Alertmanager answered {exc.code} to {method} {url}: {text[0] if text else exc.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise AlertmanagerError(f"Alertmanager at {url} unreachable: {exc}") from None
    return json.loads(raw) if raw.strip() else None


def silence_matchers(
    incident: Incident, alert_labels: Sequence[Mapping[str, str]]
) -> list[list[dict[str, Any]]]:
    """One matcher set per silence: the labels the incident's alerts share (the group), else one per alert."""
    if incident.labels:
        return [
            [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in sorted(incident.labels.items())
            ]
        ]
    sets: list[list[dict[str, Any]]] = []
    for labels in alert_labels:
        matchers = [
            {"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in sorted(labels.items())
        ]
        if matchers and matchers not in sets:
            sets.append(matchers)
    return sets


def create_silences(
    alertmanager_url: str,
    incident: Incident,
    alert_labels: Sequence[Mapping[str, str]],
    who: str,
    now: _dt.datetime,
    hold: _dt.timedelta = _dt.timedelta(hours=24),
) -> list[str]:
    """Silence the incident's alerts in Alertmanager; the comment carries the incident id. Returns the ids.

    Silences need an end: `hold` (24 h), renewed by nothing; resolving the incident expires them early.
    """
    ids: list[str] = []
    for matchers in silence_matchers(incident, alert_labels):
        body = {
            "matchers": matchers,
            "startsAt": iso_z(now),
            "endsAt": iso_z(now + hold),
            "createdBy": who,
            "comment": f"incident {incident.id}: acknowledged by {who}; expires when the incident resolves",
        }
        answer = _am_request("POST", alertmanager_url.rstrip("/") + "/api/v2/silences", body)
        ids.append(str((answer or {}).get("silenceID")))
    return ids


# Records one timeline event: the store's add_event, or serve's (which also runs its hooks).
Recorder = Callable[[str, str, str, str, dict[str, Any]], object]


def end_silences(
    store: IncidentStore,
    incident_id: str,
    alertmanager_url: str | None,
    moment: str | _dt.datetime,
    actor: str,
    record: Recorder | None = None,
) -> dict[str, str]:
    """Expire the incident's silences still active (per its timeline) and record `unsilenced` with those
    ended. The one way an acknowledgement's silences end: `incident resolve`, serve's passed verify, and the
    tick's retry of what failed then. Returns id -> "expired" or the error line; a silence not ended stays
    active on the timeline, so the tick tries again."""
    left = active_silences(events_of(store, incident_id))
    if not (alertmanager_url and left):
        return {}
    results = expire_silences(alertmanager_url, left)
    done = [i for i, r in results.items() if r == "expired"]
    at = moment if isinstance(moment, str) else iso_z(moment)
    if done:
        (record or store.add_event)(incident_id, EV_UNSILENCED, at, actor, {"ids": done, "results": results})
    failed = {i: r for i, r in results.items() if r != "expired"}
    if failed:
        log.warning("incident %s: silences not expired, retried on the next tick: %s", incident_id, failed)
    return results


def expire_silences(alertmanager_url: str, ids: Iterable[str]) -> dict[str, str]:
    """Expire silences (DELETE /api/v2/silence/{id}); id -> "expired" or the error line."""
    results: dict[str, str] = {}
    for silence_id in ids:
        try:
            _am_request("DELETE", alertmanager_url.rstrip("/") + f"/api/v2/silence/{silence_id}")
            results[silence_id] = "expired"
        except AlertmanagerError as exc:
            # Already expired (or gone after an Alertmanager restart without storage): nothing left to end.
            results[silence_id] = (
                "expired" if " 404 " in str(exc) or "already expired" in str(exc) else str(exc)
            )
    return results


# ---------------------------------------------------------------- transitions (people's commands)


def events_of(store: IncidentStore, incident_id: str) -> list[Event]:
    """The incident's timeline as a plain list (the store's class-level `list` method confuses its
    annotations)."""
    found: Any = store.events(incident_id)
    return list(found)


def alert_labels(store: IncidentStore, incident_id: str) -> list[dict[str, str]]:
    found: Any = store.alerts(incident_id)
    return [dict(a.labels) for a in found]


def _now(now: _dt.datetime | None) -> _dt.datetime:
    return (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)


def get_incident(store: IncidentStore, incident_id: str) -> Incident:
    """The incident, or a UsageError naming the id."""
    return _get(store, incident_id)


def _get(store: IncidentStore, incident_id: str) -> Incident:
    incident = store.get(incident_id)
    if incident is None:
        raise UsageError(f"no incident {incident_id!r} (collector incident list shows them)")
    return incident


def acknowledge(
    store: IncidentStore,
    incident_id: str,
    who: str,
    *,
    people: People | None = None,
    alertmanager_url: str | None = None,
    now: _dt.datetime | None = None,
) -> tuple[Incident, list[str]]:
    """Acknowledge: set acked_at, the commander (P2/P3: the responder), and silence its alerts in
    Alertmanager.

    Returns the incident and the silence ids made; an Alertmanager failure raises AlertmanagerError after the
    acknowledgement is recorded (the person did acknowledge).
    """
    moment = _now(now)
    incident = _get(store, incident_id)
    if incident.state not in INCIDENT_ACTIVE_STATES:
        raise UsageError(f"incident {incident_id} is {incident.state}: nothing to acknowledge")
    changes: dict[str, Any] = {}
    if not incident.acked_at:
        changes["acked_at"] = iso_z(moment)
    if incident.state == "open":
        changes["state"] = "acknowledged"
    commander = commander_for(incident, people or People(), responder=who)
    if commander and commander != incident.commander:
        changes["commander"] = commander
    if changes:
        incident = store.update(incident_id, **changes)
        store.add_event(incident_id, EV_ACK, moment, actor=who, detail={"commander": incident.commander})
    ids: list[str] = []
    if alertmanager_url and not active_silences(events_of(store, incident_id)):
        labels = alert_labels(store, incident_id)
        ids = create_silences(alertmanager_url, incident, labels, who, moment)
        store.add_event(incident_id, EV_SILENCED, moment, actor=who, detail={"ids": ids})
    return incident, ids


def assign(
    store: IncidentStore, incident_id: str, commander: str, who: str, now: _dt.datetime | None = None
) -> Incident:
    incident = _get(store, incident_id)
    if incident.state == "closed":
        raise UsageError(f"incident {incident_id} is closed")
    incident = store.update(incident_id, commander=commander)
    store.add_event(incident_id, EV_ASSIGNED, _now(now), actor=who, detail={"commander": commander})
    return incident


def raise_flag(
    store: IncidentStore,
    incident_id: str,
    flag: str,
    who: str,
    why: str = "",
    now: _dt.datetime | None = None,
) -> None:
    if flag not in FLAGS:
        raise UsageError(f"unknown flag {flag!r} (use {', '.join(FLAGS)})")
    store.add_event(
        incident_id, EV_FLAG, _now(now), actor=who, detail={"flag": flag, "why": why or f"raised by {who}"}
    )


def post_update(
    store: IncidentStore,
    incident_id: str,
    who: str,
    settings: Settings | None = None,
    *,
    message: str | None = None,
    severity: str | None = None,
    mitigating: bool = False,
    flags: Sequence[str] = (),
    now: _dt.datetime | None = None,
    people: People | None = None,
    send_message: Callable[[Incident, str], dict[str, str]] | None = None,
) -> tuple[Incident, list[str]]:
    """A person's update: severity, flags (escalate at once), mitigating, and a status message sent on every
    channel (it resets the update clock). Then whatever became due is done. Returns the lines to print."""
    moment = _now(now)
    incident = _get(store, incident_id)
    if incident.state not in INCIDENT_ACTIVE_STATES:
        raise UsageError(f"incident {incident_id} is {incident.state}: updates are for active incidents")
    lines: list[str] = []
    if severity and severity != incident.severity:
        if severity not in SEVERITIES:
            raise UsageError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        before = incident.severity
        incident = store.update(incident_id, severity=severity)
        store.add_event(incident_id, "severity", moment, actor=who, detail={"from": before, "to": severity})
        lines.append(f"severity {before or '?'} -> {severity}")
    for flag in flags:
        raise_flag(store, incident_id, flag, who, now=moment)
        lines.append(f"raised: {ESCALATION_REASONS[flag]}")
    if mitigating and incident.state != "mitigating":
        incident = store.update(incident_id, state="mitigating")
        store.add_event(incident_id, "mitigating", moment, actor=who, detail=None)
        lines.append("state: mitigating")
    if message:
        if send_message is None:
            from collector.incidents import notify

            channels = notify.load_channels()
            oncall = (people or load_people()).oncall

            def send_message(inc: Incident, text: str) -> dict[str, str]:
                body = notify.message_text(inc, text, who, moment, channels)
                return notify.send_text(
                    inc,
                    body.splitlines()[0],
                    body,
                    channels,
                    email_to=[oncall.email] if oncall and oncall.email else [],
                )

        results = send_message(incident, message)
        store.add_event(
            incident_id,
            EV_UPDATE,
            moment,
            actor=who,
            detail={
                "key": f"update:{iso_z(moment)}",
                "stage": "update",
                "message": message[:2000],
                "channels": results,
            },
        )
        lines.append(
            "update sent: " + (", ".join(f"{k} {v}" for k, v in results.items()) or "no channel configured")
        )
    for _, item in tick(store, settings, moment, people=people, only=[incident_id]):
        lines.append(f"{item.kind}: {item.text}")
    return _get(store, incident_id), lines


def resolve(
    store: IncidentStore,
    incident_id: str,
    who: str,
    *,
    verified: bool,
    alertmanager_url: str | None = None,
    now: _dt.datetime | None = None,
) -> tuple[Incident, dict[str, str]]:
    """Move to resolved (only when the step-5 checklist passed) and expire the incident's silences."""
    moment = _now(now)
    incident = _get(store, incident_id)
    if incident.state not in INCIDENT_ACTIVE_STATES:
        raise UsageError(f"incident {incident_id} is {incident.state}, not active")
    if not verified:
        raise UsageError(
            f"incident {incident_id}: the step-5 checklist has not passed (run `collector verify`)"
        )
    incident = store.update(incident_id, state="resolved", resolved_at=iso_z(moment))
    store.add_event(incident_id, EV_RESOLVED, moment, actor=who, detail=None)
    return incident, end_silences(store, incident_id, alertmanager_url, moment, who)


def verified(events: Iterable[Event]) -> bool:
    """Whether the newest verify recorded on the timeline passed (verified, not verify-failed)."""
    runs = [e for e in events if e.kind in ("verified", "verify-failed")]
    if not runs or runs[-1].kind != "verified":
        return False
    detail = runs[-1].detail or {}
    return bool(detail.get("passed", detail.get("ok", True)))


def close(store: IncidentStore, incident_id: str, who: str, now: _dt.datetime | None = None) -> Incident:
    """Close a resolved incident: a person's word, after the step-5 checklist passed."""
    incident = _get(store, incident_id)
    if incident.state != "resolved":
        raise UsageError(
            f"incident {incident_id} is {incident.state}: only a resolved incident can be closed"
        )
    if not who.strip() or who.strip().lower() in ("collector", "serve", "alertmanager"):
        raise UsageError("closing is a person's decision: pass --by NAME")
    moment = _now(now)
    incident = store.update(incident_id, state="closed", closed_at=iso_z(moment))
    store.add_event(incident_id, EV_CLOSED, moment, actor=who, detail=None)
    return incident


# ---------------------------------------------------------------- tick


Sender = Callable[[Incident, Due], dict[str, str]]


def tick(
    store: IncidentStore,
    settings: Settings | None = None,
    now: _dt.datetime | None = None,
    *,
    people: People | None = None,
    send: Sender | None = None,
    alertmanager_url: str | None = None,
    only: Sequence[str] | None = None,
    recent: int = 200,
) -> list[tuple[str, Due]]:
    """Do everything due for every incident that may still need something; returns (incident id, what was
    done).

    The server calls it every few seconds, `collector incident tick` once. Each item is claimed in the store
    first (claim_work, kind `tick:<key>`), so two `serve` processes ticking at once send it once. `send`
    delivers notify/remind/escalate (default: notify.deliver on the configured channels) and returns
    channel -> "ok" or the error, recorded on the timeline. `only`: just these incident ids.
    """
    if alertmanager_url is None and settings is not None:
        alertmanager_url = settings.alertmanager_url
    moment = _now(now)
    # A claim whose process died mid-send would block its key for ever: end it; what is still due is redone.
    for stale in store.stale_work(moment, 120.0):
        if stale.kind.startswith("tick:"):
            store.finish_work(stale.id, "interrupted", moment)
    if people is None:
        people = load_people()
    if send is None:
        from collector.incidents import notify

        channels = notify.load_channels(settings)

        def send(incident: Incident, item: Due) -> dict[str, str]:
            return notify.deliver(incident, item, channels, store=store, people=people, now=moment)

    done: list[tuple[str, Due]] = []
    found: Any = [store.get(i) for i in only] if only is not None else store.list(limit=recent)
    for incident in [i for i in found if i is not None]:
        if (
            incident.state == "closed"
            and not active_silences(events_of(store, incident.id))
            and "resolved" in sent_stages(events_of(store, incident.id))
        ):
            continue
        events = events_of(store, incident.id)
        signals = read_signals(incident) if incident.state in INCIDENT_ACTIVE_STATES else Signals()
        work: Any = store.work(incident.id, ("queued", "running"))
        collecting = any(w.kind == "collect" for w in work)
        for item in due(incident, events, moment, people, signals, collecting=collecting):
            claim = store.claim_work(f"tick:{item.key}"[:40], incident.id, moment)
            if claim is None:
                continue  # another process is doing it
            try:
                current = store.get(incident.id) or incident
                if item.key in {
                    str(_detail(e, "key")) for e in events_of(store, incident.id) if _detail(e, "key")
                }:
                    continue
                try:
                    _perform(store, current, item, moment, send, alertmanager_url)
                except Exception:  # one incident's failure must not stop the others' clocks
                    log.exception(
                        "incident %s: %s failed; it is retried on the next tick", incident.id, item.key
                    )
                    continue
                done.append((incident.id, item))
            finally:
                store.finish_work(claim.id, "done", moment)
    return done


def _perform(
    store: IncidentStore,
    incident: Incident,
    item: Due,
    moment: _dt.datetime,
    send: Sender,
    alertmanager_url: str | None,
) -> None:
    base = {"key": item.key, "text": item.text}
    if item.kind == "assign":
        if incident.commander:
            return
        name = item.recipients[0].name
        store.update(incident.id, commander=name)
        store.add_event(
            incident.id, EV_ASSIGNED, moment, actor="collector", detail=base | {"commander": name}
        )
        return
    if item.kind == "unsilence":
        # no `key` on its event: what fails now stays active on the timeline and is due again next tick
        end_silences(store, incident.id, alertmanager_url, moment, "collector")
        return
    results = send(incident, item)
    contacts = [c.label() for c in item.recipients]
    if item.kind == "notify":
        store.add_event(
            incident.id,
            EV_UPDATE,
            moment,
            actor="collector",
            detail=base | {"stage": item.stage, "channels": results},
        )
    elif item.kind == "remind":
        store.add_event(
            incident.id,
            EV_REMINDER,
            moment,
            actor="collector",
            detail=base | {"to": contacts, "channels": results},
        )
    elif item.kind == "escalate":
        store.add_event(
            incident.id,
            EV_ESCALATED,
            moment,
            actor="collector",
            detail=base | {"reason": item.reason, "contacts": contacts, "channels": results},
        )


def on_event(
    store: IncidentStore, incident: Incident, event: Event, settings: Settings | None = None
) -> None:
    """The receiver's hook after each event it records: do at once what became due for that incident
    (the commander on declaration, the initial update once evidence is in, the resolved update)."""
    tick(store, settings, only=[incident.id])
