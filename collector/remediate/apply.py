"""Apply an approved plan: refuse what is unsafe, canary first, batches with a health gate, verify, record.

Nothing touches a host before every refusal rule has passed. A failed batch (or a failed health
gate) stops the rollout and the remaining hosts stay untouched. Afterwards the step 5 checklist
runs, an after-bundle is collected, and the whole story goes to the audit log and actions.json.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.config import Settings
from collector.core import UsageError, utcnow
from collector.inventory import Inventory, load_inventory
from collector.redact import Redactor
from collector.remediate import Refused
from collector.remediate.actions import Action, get_action
from collector.remediate.approve import approval_problem
from collector.remediate.audit import AuditLog
from collector.remediate.plan import Plan, load_plan, play_summary, requester_name
from collector.times import parse_instant
from collector.verify import Check, passed, verify

ACTIONS_SCHEMA = "incident-collector/actions/v1"
Echo = Callable[[str], None]


@dataclass
class ApplyResult:
    """What an apply did: per-host outcomes, why it stopped, the checklist, the after-bundle."""

    plan: Plan
    started: str
    finished: str = ""
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: str | None = None
    checks: list[Check] = field(default_factory=list)
    after_bundle: str | None = None
    before_after: dict[str, Any] = field(default_factory=dict)
    actions_json: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return passed(self.checks)

    @property
    def ok(self) -> bool:
        return self.stopped is None and self.verified and all(
            h["status"] in ("ok", "changed") for h in self.hosts.values())


def batches(targets: list[str], batch_size: int) -> list[list[str]]:
    """The canary (first target) alone, then the rest in batches of `batch_size`."""
    if not targets:
        return []
    size = max(1, int(batch_size))
    rest = targets[1:]
    return [targets[:1]] + [rest[i:i + size] for i in range(0, len(rest), size)]


def restart_blocked(action: Action, targets: list[str], audit: AuditLog, min_interval_s: float,
                    now: float | None = None) -> dict[str, float]:
    """Targets restarted by the tool less than `min_interval_s` ago → seconds still to wait."""
    if not action.restarts or min_interval_s <= 0:
        return {}
    current = time.time() if now is None else now
    blocked = {}
    for host in targets:
        last = audit.last_restart(host)
        if last is None:
            continue
        age = current - parse_instant(last).timestamp()
        if age < min_interval_s:
            blocked[host] = round(min_interval_s - age, 1)
    return blocked


def preflight(plan: Plan, action: Action, settings: Settings, audit: AuditLog, *, max_hosts: int | None,
              inv: Inventory) -> None:
    """Every refusal rule that needs no host; raises Refused (one line) and audits it."""
    problem = approval_problem(plan, settings, audit)
    if problem is None and not plan.targets:
        problem = "the plan has no target host"
    limit = max_hosts if max_hosts is not None else settings.blast_radius
    if problem is None and len(plan.targets) > limit:
        problem = (f"the plan targets {len(plan.targets)} hosts, more than the blast-radius limit of {limit}; "
                   f"raise it explicitly with --max-hosts {len(plan.targets)}")
    if problem is None:
        missing = [h for h in plan.targets if h not in inv.hosts]
        if missing:
            problem = f"target {missing[0]} is no longer in the inventory {plan.inventory}"
    if problem:
        _refuse(audit, plan, problem)


def _refuse(audit: AuditLog, plan: Plan, reason: str) -> None:
    audit.append("apply-refused", actor=_actor(), plan_id=plan.id, plan_hash=plan.hash, action=plan.action,
                 targets=plan.targets, reason=reason)
    raise Refused(f"refused: {reason} — nothing was changed")


def _actor() -> str:
    from collector.config import load_settings

    try:
        return requester_name(None, load_settings())
    except UsageError:
        return requester_name(None, Settings())


def _host_outcome(play: Any, redactor: Redactor) -> dict[str, Any]:
    if play is None:
        return {"status": "failed", "changed": False, "msg": "no result from the playbook run"}
    return {"status": play.status, "changed": bool(play.changed),
            "msg": redactor.redact_text(play_summary(play), "apply")[:500]}


def _check_rate_limited(plan: Plan, action: Action, blocked: dict[str, float], audit: AuditLog) -> None:
    """Rate-limited hosts may still be applied when a check run shows no restart would happen (idempotent re-run)."""
    from collector.transport.ansible import run_playbook

    run = run_playbook(action.playbook, plan.inventory, ",".join(blocked), plan.extravars(), check=True)
    would = [h for h in blocked if (run.hosts.get(h) is None or run.hosts[h].changed or run.hosts[h].failed)]
    if would:
        host = would[0]
        _refuse(audit, plan, f"{host} was restarted by this tool less than the minimum interval ago; "
                             f"wait {blocked[host]:.0f} s (restart_min_interval_s) before restarting it again")


def apply_plan(path: str | Path, settings: Settings, *, max_hosts: int | None = None, batch_size: int | None = None,
               bundle: str | None = None, verify_wait_s: float = 60.0, verify_window: str = "30s",
               collect_after: bool = True, allowed_alerts: tuple[str, ...] = (),
               echo: Echo = lambda line: None) -> ApplyResult:
    """Apply an approved plan file; see the module docstring for the order of things."""
    from collector.transport.ansible import run_playbook

    plan = load_plan(path)
    action = get_action(plan.action)
    audit = AuditLog(settings.audit_log)
    if max_hosts is not None and max_hosts < 1:
        raise UsageError("--max-hosts must be at least 1")
    if batch_size is not None and batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    inv = load_inventory(plan.inventory)
    preflight(plan, action, settings, audit, max_hosts=max_hosts, inv=inv)
    blocked = restart_blocked(action, plan.targets, audit, settings.restart_min_interval_s)
    if blocked:
        _check_rate_limited(plan, action, blocked, audit)

    redactor = Redactor(settings.redact_patterns, inv.secret_values(plan.targets))
    actor = _actor()
    result = ApplyResult(plan=plan, started=utcnow())
    audit.append("apply-start", actor=actor, plan_id=plan.id, plan_hash=plan.hash, action=plan.action,
                 params=plan.params, targets=plan.targets, requester=plan.requester,
                 approver=(plan.approval or {}).get("approver"), break_glass=(plan.approval or {}).get("break_glass"),
                 diffs=plan.diffs)
    groups = batches(plan.targets, batch_size or settings.batch_size)
    for index, batch in enumerate(groups):
        label = "canary" if index == 0 else f"batch {index}"
        echo(f"{label}: applying {plan.action} on {', '.join(batch)}")
        run = run_playbook(action.playbook, plan.inventory, ",".join(batch), plan.extravars(), diff=True)
        for host in batch:
            outcome = _host_outcome(run.hosts.get(host), redactor)
            result.hosts[host] = outcome
            audit.append("apply-host", actor=actor, plan_id=plan.id, plan_hash=plan.hash, action=plan.action, host=host,
                         status=outcome["status"], changed=outcome["changed"], msg=outcome["msg"],
                         restarted=bool(action.restarts and outcome["changed"]))
            echo(f"  {host}: {outcome['status']}" + (f" — {outcome['msg']}" if outcome["status"] not in ("ok", "changed") else ""))
        bad = [h for h in batch if result.hosts[h]["status"] not in ("ok", "changed")]
        if bad:
            result.stopped = f"{label} failed on {', '.join(bad)}; the rollout stopped"
        elif index < len(groups) - 1:
            gate = verify(inv, batch, settings, monitoring=False, only_health=True, wait_s=30)
            if not passed(gate):
                failing = "; ".join(f"{c.host} {c.name}: {c.detail}" for c in gate if not c.passed)
                result.stopped = f"health gate after {label} failed ({failing}); the rollout stopped"
        if result.stopped:
            untouched = [h for later in groups[index + 1:] for h in later]
            for host in untouched:
                result.hosts[host] = {"status": "not-run", "changed": False, "msg": "left untouched: the rollout stopped"}
            audit.append("apply-stopped", actor=actor, plan_id=plan.id, plan_hash=plan.hash, reason=result.stopped,
                         untouched=untouched)
            echo(result.stopped + (f"; untouched: {', '.join(untouched)}" if untouched else ""))
            break

    echo("verify: running the recovery checklist")
    result.checks = verify(inv, _verify_hosts(inv, plan), settings, window=verify_window, wait_s=verify_wait_s,
                           allowed_alerts=action.expected_alerts(plan.params) + tuple(allowed_alerts))
    audit.append("verify", actor=actor, plan_id=plan.id, plan_hash=plan.hash, passed=result.verified,
                 checks=[c.as_dict() for c in result.checks])
    before = bundle or plan.bundle
    if collect_after:
        out_dir = str(Path(before).resolve().parent) if before else settings.out_dir
        result.after_bundle = _after_bundle(plan, out_dir, result.notes)
    if before and result.after_bundle:
        result.before_after = before_after(before, result.after_bundle, result.notes)
    result.finished = utcnow()
    audit.append("apply-finish", actor=actor, plan_id=plan.id, plan_hash=plan.hash, action=plan.action,
                 hosts=result.hosts, stopped=result.stopped, verified=result.verified, after_bundle=result.after_bundle)
    target_bundle = before or result.after_bundle
    if target_bundle:
        result.actions_json = write_actions(target_bundle, action_record(result), result.notes)
        _render_reports(target_bundle, result.notes)
    return result


def _verify_hosts(inv: Inventory, plan: Plan) -> list[str]:
    """The targets plus the app's dependencies (db, redis groups) when the inventory has them."""
    hosts = list(plan.targets)
    for host in inv.hosts:
        if host not in hosts and {"db", "redis"} & set(inv.roles(host)):
            hosts.append(host)
    return hosts


def action_record(result: ApplyResult) -> dict[str, Any]:
    """One entry of actions.json (CONTRACTS.md)."""
    plan, approval = result.plan, result.plan.approval or {}
    return {
        "action": plan.action, "params": plan.params, "plan_hash": plan.hash, "plan_id": plan.id,
        "requester": plan.requester, "requested": plan.created,
        "approver": approval.get("approver"), "approved": approval.get("approved"),
        "break_glass": approval.get("break_glass"),
        "applied_started": result.started, "applied_finished": result.finished,
        "hosts": result.hosts, "stopped": result.stopped,
        "verify": {"passed": result.verified, "checks": [c.as_dict() for c in result.checks]},
        "after_bundle": result.after_bundle, "before_after": result.before_after,
    }


def _after_bundle(plan: Plan, out_dir: str, notes: list[str]) -> str | None:
    """Collect a fresh bundle from the plan's pattern (the evidence after the fix), beside the before-bundle."""
    try:
        from collector.collect import collect
    except ImportError:
        notes.append("after-bundle skipped: collector.collect is not available")
        return None
    try:
        outcome = collect(plan.pattern, inventory=plan.inventory, out_dir=out_dir,
                          command_line=["collector", "remediate", "apply", plan.id, "(after-bundle)"])
        notes.extend(outcome.notes)
        return str(outcome.bundle) if outcome.bundle else None
    except Exception as exc:  # the fix is done; a failed collection is a note, not a failed apply
        notes.append(f"after-bundle failed: {type(exc).__name__}: {exc}"[:300])
        return None


def before_after(before: str, after: str, notes: list[str]) -> dict[str, Any]:
    """{figure: [before, after]} from the key figures triage stored in both bundles."""
    from collector.triage import bundle_figures

    try:
        first, second = bundle_figures(before).to_dict(), bundle_figures(after).to_dict()
    except Exception as exc:
        notes.append(f"before/after failed: {type(exc).__name__}: {exc}"[:300])
        return {}
    return {key: [first.get(key), second.get(key)] for key in sorted(set(first) | set(second))}


def write_actions(bundle_path: str, record: dict[str, Any], notes: list[str]) -> str | None:
    """Append the record to the bundle's actions.json and re-seal the bundle."""
    from collector.bundle import Bundle

    try:
        bundle = Bundle.open(bundle_path)
        doc = bundle.read_json("actions.json") or {"schema": ACTIONS_SCHEMA, "actions": []}
        if not isinstance(doc, dict) or not isinstance(doc.get("actions"), list):
            doc = {"schema": ACTIONS_SCHEMA, "actions": []}
        doc["schema"] = ACTIONS_SCHEMA
        doc["actions"].append(record)
        written = bundle.write_json("actions.json", doc)
        bundle.seal()
        return str(written)
    except Exception as exc:
        notes.append(f"actions.json not written to {bundle_path}: {type(exc).__name__}: {exc}"[:300])
        return None


def _render_reports(bundle_path: str, notes: list[str]) -> None:
    try:
        from collector.report import render_reports
    except ImportError:
        return
    try:
        render_reports(bundle_path)
    except Exception as exc:
        notes.append(f"report not rendered: {type(exc).__name__}: {exc}"[:300])
