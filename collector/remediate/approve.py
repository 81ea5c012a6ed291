"""Approval: a second person signs one plan's hash; break-glass self-approval is loud and audited."""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass
from pathlib import Path

from collector.config import Settings
from collector.core import UsageError, utcnow
from collector.remediate import Refused
from collector.remediate.audit import AuditLog
from collector.remediate.plan import Plan, load_plan, save_plan
from collector.times import parse_instant


@dataclass(frozen=True)
class Approval:
    """Who approved which plan content, when, until when, and whether it was break-glass."""

    approver: str
    approved: str
    plan_hash: str
    expires: str
    break_glass: str | None = None


def approve_plan(path: str | Path, approver: str, settings: Settings, *, break_glass: str | None = None,
                 audit: AuditLog | None = None) -> tuple[Plan, Approval]:
    """Record an approval in the plan file and the audit log; refuses self-approval without break-glass."""
    audit = audit or AuditLog(settings.audit_log)
    plan = load_plan(path)
    name = (approver or "").strip()
    if not name:
        raise UsageError("approve needs --as NAME (the approver)")
    if break_glass is not None and not break_glass.strip():
        raise UsageError("--break-glass needs a REASON")
    if plan.compute_hash() != plan.hash:
        _refuse(audit, plan, name, "plan was modified after it was written (hash mismatch); plan again")
    if name == plan.requester and not break_glass:
        _refuse(audit, plan, name, f"{name} requested this plan and cannot approve it; a second person must "
                                   "(or --break-glass REASON, which is audited)")
    now = utcnow()
    expires = (parse_instant(now) + _dt.timedelta(seconds=settings.approval_ttl_s)).isoformat(timespec="milliseconds")
    approval = Approval(approver=name, approved=now, plan_hash=plan.hash, expires=expires.replace("+00:00", "Z"),
                        break_glass=break_glass.strip() if break_glass else None)
    audit.append("approve", actor=name, plan_id=plan.id, plan_hash=plan.hash, action=plan.action,
                 targets=plan.targets, requester=plan.requester, approver=name, break_glass=approval.break_glass,
                 expires=approval.expires)
    if approval.break_glass:
        audit.append("break-glass", actor=name, plan_id=plan.id, plan_hash=plan.hash, reason=approval.break_glass,
                     self_approved=name == plan.requester)
    plan.approval = asdict(approval)
    save_plan(plan, Path(path))
    return plan, approval


def _refuse(audit: AuditLog, plan: Plan, actor: str, reason: str) -> None:
    audit.append("approve-refused", actor=actor, plan_id=plan.id, plan_hash=plan.hash, reason=reason)
    raise Refused(reason)


def approval_problem(plan: Plan, settings: Settings, audit: AuditLog, *, now: str | None = None) -> str | None:
    """Why this plan may not be applied (modified, unapproved, self-approved, expired, unrecorded), or None."""
    if plan.compute_hash() != plan.hash:
        return "plan was modified after it was written (its content no longer matches its hash)"
    approval = plan.approval
    if not approval:
        return f"plan {plan.id} is not approved (collector approve PLAN --as NAME, by someone other than {plan.requester})"
    if approval.get("plan_hash") != plan.hash:
        return "the approval is for different plan content (plan hash differs); approve again"
    approver = str(approval.get("approver") or "")
    if not approver:
        return "the approval names no approver"
    if approver == plan.requester and not approval.get("break_glass"):
        return f"plan is approved by its own requester {approver} without --break-glass"
    recorded = [r for r in audit.approvals(plan.hash) if r.get("approver") == approver
                and r.get("break_glass") == approval.get("break_glass")]
    if not recorded:
        return f"no approval by {approver} for this plan hash is recorded in the audit log {audit.path}"
    current = parse_instant(now or utcnow())
    approved = parse_instant(str(approval.get("approved")))
    deadline = min(parse_instant(str(approval.get("expires"))), approved + _dt.timedelta(seconds=settings.approval_ttl_s))
    if current >= deadline:
        return f"the approval by {approver} expired at {deadline.isoformat(timespec='seconds')}; approve again"
    return None
