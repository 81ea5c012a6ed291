"""What `collector serve` does with a notification: the incident and its alerts in the store at once, the
slow work (collect → triage → report → ticket → plan; verify on resolve) in a bounded pool afterwards.

Work is claimed in the store before it is queued, so a process that dies (kill -9) leaves a claim that
the next one (`recover`, at start and on every tick) finds, marks interrupted and runs again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.config import Settings
from collector.core import INCIDENT_ACTIVE_STATES as INCIDENT_ACTIVE
from collector.core import Findings, Incident, UsageError, utcnow
from collector.incidents import lifecycle
from collector.incidents.store import Event, IncidentStore, Work, process_owner
from collector.incidents.webhook import Alert, Notification, Route, alert_severity, route_hosts
from collector.times import instant_or_none, iso_z, parse_instant

log = logging.getLogger("collector.serve")

# Kinds of work this module runs (others in the store belong to the lifecycle side).
COLLECT, VERIFY = "collect", "verify"
OWN_KINDS = (COLLECT, VERIFY)

Hook = Callable[[IncidentStore, Incident, Event, Settings], None]


def lifecycle_hook() -> Hook:
    """The lifecycle's reaction to each timeline event (commander, updates, escalation)."""
    return lifecycle.on_event


def plan_events(
    records: Iterable[Mapping[str, Any]], plan_hash: str, have: set[str]
) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """(kind, at, actor, detail) of the plan's first approval and first finished apply in the remediation
    audit log's records, each unless the timeline already has that kind."""
    out: list[tuple[str, str, str | None, dict[str, Any]]] = []
    for record in records:
        if record.get("plan_hash") != plan_hash:
            continue
        event = record.get("event")
        if event == "approve" and "plan-approved" not in have and "plan-approved" not in [o[0] for o in out]:
            out.append(
                (
                    "plan-approved",
                    str(record["time"]),
                    record.get("actor"),
                    {"plan": record.get("plan_id"), "audit_seq": record.get("seq")},
                )
            )
        elif event == "apply-finish" and "applied" not in have and "applied" not in [o[0] for o in out]:
            hosts = record.get("hosts") or {}
            out.append(
                (
                    "applied",
                    str(record["time"]),
                    record.get("actor"),
                    {
                        "plan": record.get("plan_id"),
                        "action": record.get("action"),
                        "verified": record.get("verified"),
                        "audit_seq": record.get("seq"),
                        "hosts": {h: (v or {}).get("status") for h, v in hosts.items()},
                    },
                )
            )
    return out


def since_for(alerts: Sequence[Alert], lookback_s: float) -> str | None:
    """The collection's window start: `lookback_s` before the earliest alert's startsAt (what led up to the
    alert, not what led up to the collection); None when no startsAt reads as a time."""
    starts = [t for t in (instant_or_none(a.starts_at) for a in alerts) if t is not None]
    if not starts or lookback_s <= 0:
        return None
    return iso_z(min(starts) - _dt.timedelta(seconds=lookback_s))


@dataclass
class Received:
    """What one notification did (the webhook's answer body)."""

    incident: str | None
    opened: bool = False
    new_alerts: int = 0
    queued: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident": self.incident,
            "opened": self.opened,
            "new_alerts": self.new_alerts,
            "queued": self.queued,
            "note": self.note,
        }


class Service:
    """The store, the inventory's routing and the work pool of one `serve` process."""

    def __init__(
        self,
        store: IncidentStore,
        settings: Settings,
        *,
        hooks: list[Hook] | None = None,
        max_collections: int | None = None,
        lease_s: float = 60.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = process_owner()
        self.lease_s = lease_s
        self.max_workers = max(1, int(max_collections or settings.serve_max_collections))
        self.work_queue: queue.Queue[Work | None] = queue.Queue(maxsize=max(1, settings.serve_queue_size))
        self.hooks: list[Hook] = list(hooks) if hooks is not None else [lifecycle_hook()]
        self.hook_queue: queue.Queue[tuple[str, Event] | None] = queue.Queue()
        self.inflight: set[int] = set()
        self.running = 0
        self.peak = 0  # most work items running at once in this process (bench and tests read it)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self._inventory: Any = None

    # ------------------------------------------------------------------ lifecycle of the service
    def start(self) -> None:
        self.inventory()  # parse once now: the first alert should not wait for Ansible's inventory loader
        for i in range(self.max_workers):
            self._thread(self._work_loop, f"serve-work-{i}")
        self._thread(self._hook_loop, "serve-hooks")
        self._thread(self._tick_loop, "serve-tick")
        self.recover()

    def _thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        for _ in range(self.max_workers):
            with contextlib.suppress(queue.Full):
                self.work_queue.put_nowait(None)
        self.hook_queue.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def inventory(self) -> Any:
        if self._inventory is None:
            from collector.inventory import load_inventory

            self._inventory = load_inventory(self.settings.inventory)
        return self._inventory

    # ------------------------------------------------------------------ receiving
    def route(self, note: Notification) -> Route:
        inv = self.inventory()
        groups = {g for gs in inv.groups.values() for g in gs}
        return route_hosts(
            note.alerts,
            inv.hosts,
            groups,
            self.settings.serve_host_labels,
            self.settings.serve_fallback_hosts,
        )

    def receive(self, note: Notification, now: str | None = None) -> Received:
        """Record the notification (incident, alerts, events) and queue its work; the webhook answers
        after."""
        at = now or utcnow()
        firing = [a for a in note.alerts if a.status == "firing"]
        if note.status == "firing" and firing:
            stale = self._repeat_of_finished(note, firing, at)
            if stale is not None:
                return stale
            route = self.route(note)
            incident, opened = self.store.open_or_join(
                note.group_key,
                [a.as_mapping() for a in firing],
                at,
                severity=alert_severity(firing),
                hosts=route.hosts,
                labels=note.common_labels or None,
            )
            result = Received(incident.id, opened)
            # joined, but never collected: the process that opened it died before queueing (Alertmanager
            # retried)
            if (opened or not self.store.work(incident.id, kinds=[COLLECT])) and self._declared(
                incident, route, at, since_for(firing, self.settings.serve_lookback_s)
            ):
                result.queued.append(COLLECT)
        else:
            found = self.store.find_active(note.group_key)
            if found is None:
                return Received(None, note="no active incident for this group")
            incident, result = found, Received(found.id)
        for alert in note.alerts:
            if self.store.record_alert(
                incident.id, alert.fingerprint, alert.status, alert.labels, alert.starts_at, alert.ends_at, at
            ):
                result.new_alerts += 1
        if note.status == "resolved":
            work = self.store.claim_work(VERIFY, incident.id, at, owner=self.owner)
            if work is not None:
                self.event(
                    incident.id,
                    "alert-resolved",
                    at,
                    "alertmanager",
                    {"alerts": len(note.alerts), "group_key": note.group_key},
                )
                self.enqueue(work)
                result.queued.append(VERIFY)
        return result

    def _repeat_of_finished(self, note: Notification, firing: list[Alert], at: str) -> Received | None:
        """Alertmanager repeating alerts (same fingerprint and startsAt) of an incident already resolved or
        closed: recorded as deliveries there, no new incident (a new firing has a new startsAt)."""
        if self.store.find_active(note.group_key) is not None:
            return None
        latest = self.store.latest(note.group_key)
        if latest is None:
            return None
        known = {(a.fingerprint, a.starts_at) for a in self.store.alerts(latest.id)}
        if not all((a.fingerprint, a.starts_at) in known for a in firing):
            return None
        for alert in note.alerts:
            self.store.record_alert(
                latest.id, alert.fingerprint, alert.status, alert.labels, alert.starts_at, alert.ends_at, at
            )
        return Received(
            latest.id, note=f"repeat of alerts of {latest.state} incident {latest.id}: not reopened"
        )

    def _declared(self, incident: Incident, route: Route, at: str, since: str | None) -> bool:
        """Claim and queue the incident's collection; False when another process (or delivery) already has."""
        work = self.store.claim_work(
            COLLECT, incident.id, at, owner=self.owner, args={"pattern": route.pattern, "since": since}
        )
        if work is None:
            return False
        detail = {"pattern": route.pattern, "matched": route.matched, "reasons": list(route.reasons)}
        self.event(incident.id, "routed" if route.matched else "no-host-matched", at, "serve", detail)
        declared = next((e for e in self.store.events(incident.id) if e.kind == "declared"), None)
        if declared is not None:
            self._hook(incident.id, declared)
        self.enqueue(work)
        return True

    def event(
        self,
        incident_id: str,
        kind: str,
        at: str | None = None,
        actor: str | None = "serve",
        detail: dict[str, Any] | None = None,
    ) -> Event:
        event = self.store.add_event(incident_id, kind, at or utcnow(), actor, detail)
        self._hook(incident_id, event)
        return event

    def _hook(self, incident_id: str, event: Event) -> None:
        if self.hooks:
            self.hook_queue.put((incident_id, event))

    def enqueue(self, work: Work) -> None:
        with self.lock:
            if work.id in self.inflight:
                return
            self.inflight.add(work.id)
        try:
            self.work_queue.put_nowait(work)
        except queue.Full:  # the claim stays queued in the store; the tick loop queues it when there is room
            with self.lock:
                self.inflight.discard(work.id)
            log.warning("work queue full: %s of %s waits in the store", work.kind, work.incident)

    # ------------------------------------------------------------------ recovery
    def recover(self) -> list[Work]:
        """Re-run work a dead process held, and queue our own claims the queue had no room for."""
        now = utcnow()
        retaken: list[Work] = []
        for item in self.store.stale_work(now, self.lease_s):
            if item.kind not in OWN_KINDS:
                continue  # the lifecycle side's claims are its own to recover
            again = self.store.take_over(item, now, owner=self.owner)
            if again is not None:
                log.warning(
                    "%s of %s was interrupted (owner %s gone): running it again",
                    item.kind,
                    item.incident,
                    item.owner,
                )
                retaken.append(again)
                self.enqueue(again)
        for item in self.store.work(states=["queued"]):
            if item.owner == self.owner and item.kind in OWN_KINDS:
                self.enqueue(item)
        return retaken

    # ------------------------------------------------------------------ loops
    def _tick_loop(self) -> None:
        period = max(0.5, float(self.settings.serve_tick_s))
        beat = min(period, self.lease_s / 4)
        last_tick = 0.0
        while not self.stopping.wait(beat):
            try:
                self.store.heartbeat_owner(self.owner)
                self.recover()
                self.sync_plans()
                self.poll_silenced()
                self.poll_unverified()
                if time.monotonic() - last_tick >= period:
                    last_tick = time.monotonic()
                    lifecycle.tick(self.store, self.settings)
            except Exception:
                log.exception("tick failed")

    def sync_plans(self) -> None:
        """Put a person's `collector approve` and `remediate apply` of an incident's plan on its timeline, at
        the audit log's times: they happen outside serve, and the incident's timeline must show them."""
        for incident in self.store.list(states=INCIDENT_ACTIVE):
            if not incident.plan:
                continue
            try:
                from collector.remediate.plan import load_plan

                plan_hash = load_plan(incident.plan).hash  # the typed Plan (another shape: UsageError)
                if not plan_hash:
                    continue
                have = {e.kind for e in self.store.events(incident.id)}
                if {"plan-approved", "applied"} <= have:
                    continue
                from collector.remediate.audit import AuditLog
                from collector.remediate.policy import load_policy

                policy = load_policy()
                records = list(AuditLog(policy.audit_log, policy.checkpoint_file).records())
            except (OSError, ValueError, UsageError):
                continue  # no plan file or policy here: nothing to read
            for kind, at, actor, detail in plan_events(records, plan_hash, have):
                self.event(incident.id, kind, at, actor, detail)
                if kind == "applied" and incident.state in ("open", "acknowledged"):
                    self.store.update(incident.id, state="mitigating")

    def poll_silenced(self) -> None:
        """Alertmanager sends no resolved notification for silenced alerts (prometheus/alertmanager#226), and
        `incident ack` silences them: for an acknowledged incident whose alerts Alertmanager no longer has
        active, run the resolved path (verify) once per silence, as the notification would have."""
        from collector.incidents import lifecycle

        url = self.settings.alertmanager_url
        if not url:
            return
        for incident in self.store.list(states=INCIDENT_ACTIVE):
            events = self.store.events(incident.id)
            if not lifecycle.active_silences(events):
                continue
            silenced_at = max(parse_instant(e.at) for e in events if e.kind == lifecycle.EV_SILENCED)
            if any(e.kind == "alert-resolved" and parse_instant(e.at) >= silenced_at for e in events):
                continue
            fingerprints = {a.fingerprint for a in self.store.alerts(incident.id)}
            try:
                live = lifecycle._am_request("GET", url.rstrip("/") + "/api/v2/alerts")
            except lifecycle.AlertmanagerError as exc:
                log.warning("silenced incident %s: %s", incident.id, exc)
                return
            if not fingerprints or fingerprints & {str(a.get("fingerprint")) for a in live or []}:
                continue
            at = utcnow()
            work = self.store.claim_work(VERIFY, incident.id, at, owner=self.owner)
            if work is None:
                continue
            self.event(
                incident.id,
                "alert-resolved",
                at,
                "alertmanager",
                {
                    "alerts": len(fingerprints),
                    "group_key": incident.group_key,
                    "seen": "no longer active in Alertmanager (silenced: no resolved notification)",
                },
            )
            self.enqueue(work)

    def poll_unverified(self, now: _dt.datetime | None = None) -> None:
        """Alertmanager says resolved once: a verify that failed then (the 30 s window still held the last
        5xx, an unrelated alert was still clearing) would leave the incident mitigating for ever. While all
        its alerts stay resolved, run verify again every `serve_verify_retry_s`, at most
        `serve_verify_attempts` times per resolve; after that a person runs `collector verify`."""
        moment = now or _dt.datetime.now(_dt.UTC)
        retry_s = float(self.settings.serve_verify_retry_s)
        for incident in self.store.list(states=INCIDENT_ACTIVE):
            events = self.store.events(incident.id)
            runs = [e for e in events if e.kind in ("verified", "verify-failed")]
            if not runs or runs[-1].kind != "verify-failed":
                continue
            if any(a.status != "resolved" for a in self.store.alerts(incident.id)):
                continue  # firing again: Alertmanager's next resolved notification verifies
            resolves = [parse_instant(e.at) for e in events if e.kind == "alert-resolved"]
            since = max(resolves) if resolves else parse_instant(runs[0].at)
            failures = [e for e in runs if parse_instant(e.at) >= since]
            if len(failures) >= int(self.settings.serve_verify_attempts):
                continue
            if (moment - parse_instant(runs[-1].at)).total_seconds() < retry_s:
                continue
            work = self.store.claim_work(VERIFY, incident.id, moment, owner=self.owner)
            if work is None:
                continue
            self.event(
                incident.id,
                "verify-retry",
                iso_z(moment),
                "serve",
                {"attempt": len(failures) + 1, "of": int(self.settings.serve_verify_attempts)},
            )
            self.enqueue(work)

    def _hook_loop(self) -> None:
        while True:
            item = self.hook_queue.get()
            if item is None:
                return
            incident_id, event = item
            incident = self.store.get(incident_id)
            if incident is None:
                continue
            for hook in self.hooks:
                try:
                    hook(self.store, incident, event, self.settings)
                except Exception:
                    log.exception(
                        "hook %s failed on %s %s", getattr(hook, "__name__", hook), incident_id, event.kind
                    )

    def _work_loop(self) -> None:
        while True:
            work = self.work_queue.get()
            if work is None:
                return
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            try:
                self.run(work)
            except Exception as exc:
                log.exception("%s of %s failed", work.kind, work.incident)
                with contextlib.suppress(Exception):
                    self.event(work.incident, f"{work.kind}-failed", detail={"error": repr(exc)[:500]})
                    self.store.finish_work(work.id, "failed", detail={"error": repr(exc)[:500]})
            finally:
                with self.lock:
                    self.running -= 1
                    self.inflight.discard(work.id)

    def run(self, work: Work) -> None:
        current = self.store.get_work(work.id)
        if current is None or current.state not in ("queued", "running") or current.owner != self.owner:
            return  # finished or taken over meanwhile
        self.store.start_work(work.id)
        if work.kind == COLLECT:
            detail = self.collect(work)
        elif work.kind == VERIFY:
            detail = self.verify(work)
        else:
            detail = {"skipped": f"unknown work kind {work.kind}"}
        self.store.finish_work(work.id, "failed" if detail.get("error") else "done", detail=detail)
        log.info(
            "%s of %s (attempt %d) finished: %s",
            work.kind,
            work.incident,
            work.attempt,
            ", ".join(
                f"{k}={detail.get(k)}" for k in ("bundle", "severity", "plan", "passed") if k in detail
            ),
        )

    # ------------------------------------------------------------------ the jobs
    def collect(self, work: Work) -> dict[str, Any]:
        """collect (read-only) → triage → report (all inside collect) → ticket → plan the suggested
        mitigation."""
        from collector.collect import collect

        incident = self.store.get(work.incident)
        assert incident is not None
        pattern = str((work.args or {}).get("pattern") or self.settings.serve_fallback_hosts)
        since = (work.args or {}).get("since") or None
        leftovers = self._leftovers(incident.id) if work.attempt > 1 else []
        outcome = collect(
            pattern,
            inventory=self.settings.inventory,
            out_dir=self.settings.out_dir,
            incident=incident.id,
            since=since,
            command_line=["collector", "serve", "--incident", incident.id],
        )
        bundle = str(outcome.bundle) if outcome.bundle else None
        hosts = sorted(outcome.run.hosts)
        detail: dict[str, Any] = {
            "bundle": bundle,
            "pattern": pattern,
            "hosts": hosts,
            "attempt": work.attempt,
            "failed_hosts": outcome.run.failed_hosts,
            "exit_code": outcome.exit_code,
            "notes": outcome.notes[:5],
        }
        if (
            leftovers
        ):  # what the interrupted attempt wrote stays for a person to read; the timeline says where
            detail["interrupted_attempt_left"] = leftovers
        if bundle:
            self.store.add_bundle(incident.id, bundle)
        self.store.update(incident.id, hosts=list(dict.fromkeys([*incident.hosts, *hosts])))
        self.event(incident.id, "collected", utcnow(), "serve", detail)
        if outcome.findings is None or bundle is None:
            if bundle is not None:  # the evidence is in; say on the timeline why there is no verdict
                self.event(incident.id, "triage-failed", utcnow(), "serve", {"notes": outcome.notes[:5]})
            return detail
        findings = outcome.findings
        changes: dict[str, Any] = {}
        if findings.severity != "none":
            changes["severity"] = findings.severity
        if changes:
            incident = self.store.update(incident.id, **changes)
        self.event(
            incident.id,
            "triaged",
            utcnow(),
            "serve",
            {
                "severity": findings.severity,
                "summary": findings.summary,
                "findings": [f.rule for f in findings.findings],
                "security": findings.security.suspected,
            },
        )
        if outcome.reports:
            self.event(
                incident.id, "reported", utcnow(), "serve", {"reports": [str(p) for p in outcome.reports]}
            )
        detail["severity"] = findings.severity
        detail["ticket"] = self._ticket(incident, bundle)
        detail["plan"] = self._plan(incident, findings, bundle)
        return detail

    def _leftovers(self, incident_id: str) -> list[str]:
        """What an interrupted collection of this incident left in the bundles folder: its half-written hidden
        folder (kept: evidence of the moment) and its claimed, still empty bundle folder (removed)."""
        out = Path(self.settings.out_dir)
        found = [str(p) for p in sorted(out.glob(f".{incident_id}.*.tmp"))]
        claimed = out / incident_id
        if claimed.is_dir() and not any(claimed.iterdir()) and not Path(f"{claimed}.tar.gz").exists():
            claimed.rmdir()
            found.append(f"{claimed} (empty, removed)")
        return found

    def _ticket(self, incident: Incident, bundle: str) -> str | None:
        system_name = self.settings.serve_ticket_system
        if not system_name:
            return None
        from collector.tickets import TicketError, load_ticket_config, open_system
        from collector.tickets.evidence import attach_bundle

        try:
            system = open_system(load_ticket_config(system_name))
            if incident.ticket:  # a re-run's bundle goes to the incident's ticket
                outcome = attach_bundle(system, Path(bundle), ticket=incident.ticket)
            else:
                outcome = attach_bundle(system, Path(bundle), project=self.settings.serve_ticket_project)
        except (TicketError, UsageError, OSError) as exc:  # no ticket is a note on the timeline, not a stop
            self.event(incident.id, "ticket-failed", utcnow(), "serve", {"error": str(exc)[:300]})
            return None
        ticket_id = str(outcome.ticket.id)
        self.store.update(incident.id, ticket=ticket_id)
        self.event(
            incident.id,
            "ticket-created" if outcome.created else "ticket-updated",
            utcnow(),
            "serve",
            {"ticket": ticket_id, "url": getattr(outcome.ticket, "url", None), "system": system_name},
        )
        return ticket_id

    def _plan(self, incident: Incident, findings: Findings, bundle: str) -> str | None:
        """Plan (check mode) the first suggested mitigation. With a signing key configured (`signing_key`, the
        service's own requester key) the plan is also requested, so it waits for a person's `collector
        approve`; without one it waits for a person to request it. Never approved here."""
        suggestion = next((f.mitigation for f in findings.findings if f.mitigation is not None), None)
        if suggestion is None:
            return None
        from collector.remediate.plan import default_plan_path, describe, make_plan, save_plan
        from collector.remediate.policy import load_policy

        requested: str | None = None
        try:
            policy = load_policy()
            plan = make_plan(
                suggestion.action,
                suggestion.hosts,
                suggestion.params,
                self.settings,
                inventory=self.settings.inventory,
                bundle=bundle,
                playbooks_dir=policy.playbooks_dir,
            )
            path = save_plan(plan, default_plan_path(plan, self.settings).absolute())
            if self.settings.signing_key:
                requested = self._request(plan, path, policy, incident)
        except Exception as exc:  # noqa: BLE001 - the evidence stands; the plan failing is recorded
            self.event(
                incident.id,
                "plan-failed",
                utcnow(),
                "serve",
                {"action": suggestion.action, "hosts": suggestion.hosts, "error": str(exc)[:300]},
            )
            return None
        self.store.update(incident.id, plan=str(path))
        awaiting = (
            f"a signed approval (`collector approve {path}`)"
            if requested
            else f"a signed request (`{suggestion.command}`) and a signed approval"
        )
        self.event(
            incident.id,
            "planned",
            utcnow(),
            "serve",
            {
                "plan": str(path),
                "id": plan.id,
                "action": plan.action,
                "hosts": plan.pattern,
                "targets": plan.targets,
                "hash": plan.hash,
                "changing": plan.changing_hosts,
                "failed": plan.failed_hosts,
                "command": suggestion.command,
                "requester": requested,
                "awaiting": awaiting,
                "summary": describe(plan)[:8],
            },
        )
        return str(path)

    def _request(self, plan: Any, path: Path, policy: Any, incident: Incident) -> str | None:
        from collector.remediate.approve import request_plan
        from collector.remediate.audit import AuditLog
        from collector.remediate.signing import signer_for

        try:
            signer = signer_for(self.settings.signing_key, allowed_signers=policy.signers_path())
            request_plan(plan, path, signer, policy, AuditLog(policy.audit_log, policy.checkpoint_file))
        except (UsageError, OSError) as exc:  # unsigned, it still waits for a person to request it
            self.event(incident.id, "plan-request-failed", utcnow(), "serve", {"error": str(exc)[:300]})
            return None
        return str(plan.requester)

    def verify(self, work: Work) -> dict[str, Any]:
        """The step 5 checklist on the incident's hosts; resolved only when it passes."""
        from collector.verify import passed, verify

        incident = self.store.get(work.incident)
        assert incident is not None
        inv = self.inventory()
        names = [h for h in incident.hosts if h in inv.hosts]
        if not names:
            collect_work = [w for w in self.store.work(incident.id) if w.kind == COLLECT]
            pattern = str(
                ((collect_work[-1].args or {}) if collect_work else {}).get("pattern")
                or self.settings.serve_fallback_hosts
            )
            names = inv.match(pattern)
        checks = verify(inv, names, self.settings, wait_s=float(self.settings.serve_verify_wait_s))
        ok = passed(checks)
        failed = [c.as_dict() for c in checks if not c.passed]
        detail = {"passed": ok, "hosts": names, "checks": len(checks), "failed": failed[:20]}
        at = utcnow()
        self.event(incident.id, "verified" if ok else "verify-failed", at, "serve", detail)
        if ok and incident.active:
            resolved = self.store.update(incident.id, state="resolved", resolved_at=at)
            self.event(
                resolved.id, "resolved", at, "serve", {"by": "verify passed after Alertmanager resolved"}
            )
            self.unsilence(resolved.id, at)
        return detail

    def unsilence(self, incident_id: str, at: str) -> None:
        """Expire the incident's Alertmanager silences as it resolves, as `incident resolve` does; one that
        fails now is retried by the lifecycle tick's `unsilence` chore."""
        lifecycle.end_silences(
            self.store, incident_id, self.settings.alertmanager_url, at, "serve", record=self.event
        )
