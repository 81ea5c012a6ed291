"""Requests and approvals as SSH-signed statements, and the one judgement of whether a plan may run.

A request is the requester's signature over the plan's hash; an approval is a second person's signature
over the same hash, the time and an expiry (break-glass: the requester's own, with a reason, loud and
audited). Who may do what is the policy's; who someone is comes from their verified key, never a flag.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from collector.core import ActionRecord, Findings, Plan, Signed, Statement, UsageError, utcnow
from collector.jsonfile import read_json
from collector.remediate import Refused
from collector.remediate.audit import AuditLog
from collector.remediate.plan import load_plan, save_plan
from collector.remediate.policy import Policy
from collector.remediate.signing import SignatureError, Signer, Verifier
from collector.times import parse_instant

CLOCK_SKEW_S = 120.0  # a statement dated later than now by more than this is refused

# Refusal kinds recorded in the audit log (README: the audit log).
UNSIGNED, UNAPPROVED, SELF_APPROVED, EXPIRED, CONSUMED, CHANGED, POLICY, LOCKED, BROKEN_LOG = (
    "unsigned",
    "unapproved",
    "self-approved",
    "expired",
    "consumed",
    "changed-plan",
    "policy-violation",
    "locked",
    "audit-log-broken",
)


@dataclass(frozen=True)
class Approval:
    """A verified approval: the signed statement and who signed it."""

    signed: Signed
    approver: str
    requester: str

    @property
    def approved(self) -> str:
        return self.signed.statement.time

    @property
    def expires(self) -> str:
        return str(self.signed.statement.expires)

    @property
    def break_glass(self) -> str | None:
        return self.signed.statement.reason if self.signed.statement.role == "break-glass" else None

    @property
    def digest(self) -> str:
        return self.signed.digest


@dataclass(frozen=True)
class Problem:
    """Why a plan may not run: a refusal kind (audited) and one line for the person."""

    kind: str
    text: str


def new_statement(
    role: str,
    plan: Plan,
    *,
    expires: str | None = None,
    reason: str | None = None,
    approval: str | None = None,
    records: tuple[str, ...] = (),
    now: str | None = None,
) -> Statement:
    return Statement(
        role=role,
        plan_id=plan.id,
        plan_hash=plan.hash,
        time=now or utcnow(),
        nonce=secrets.token_hex(8),
        expires=expires,
        reason=reason,
        approval=approval,
        records=records,
    )


def sign_statement(
    statement: Statement, signer: Signer, verifier: Verifier, *, as_name: str | None = None
) -> Signed:
    """Sign and at once verify against allowed_signers: the principal is the key's, `as_name` must match
    it."""
    signature = signer.sign(statement.message())
    try:
        principal = verifier.principal(statement.message(), signature)
    except SignatureError as exc:
        raise SignatureError(f"{signer.label}: {exc}") from None
    if as_name and as_name.strip() and as_name.strip() != principal:
        raise SignatureError(
            f"--as {as_name.strip()} does not match the key's principal {principal} "
            f"in {verifier.allowed_signers}"
        )
    return Signed(statement, signature, principal)


def request_plan(
    plan: Plan, path: Path, signer: Signer, policy: Policy, audit: AuditLog, *, as_name: str | None = None
) -> Plan:
    """The requester signs the plan's hash; saved to `path` and recorded (`plan`) in the audit log."""
    verifier = Verifier(policy.signers_path())
    try:
        signed = sign_statement(new_statement("request", plan), signer, verifier, as_name=as_name)
    except SignatureError as exc:
        audit.append(
            "plan-refused",
            actor="unverified",
            kind=UNSIGNED,
            plan_id=plan.id,
            plan_hash=plan.hash,
            action=plan.action,
            reason=str(exc),
        )
        raise
    if not policy.may_request(signed.principal):
        audit.append(
            "plan-refused",
            actor=signed.principal,
            kind=POLICY,
            plan_id=plan.id,
            plan_hash=plan.hash,
            action=plan.action,
            reason=f"{signed.principal} may not request remediation (policy {policy.path})",
        )
        raise Refused(f"refused: {signed.principal} may not request remediation (policy {policy.path})")
    plan.requester = signed.principal
    plan.statements = [signed.to_dict()]
    save_plan(plan, path)
    audit.append(
        "plan",
        actor=signed.principal,
        plan_id=plan.id,
        plan_hash=plan.hash,
        action=plan.action,
        params=plan.params,
        targets=plan.targets,
        diffs=plan.diffs,
        check=plan.check,
        plan_file=str(path.resolve()),
        signed=signed.to_dict(),
    )
    return plan


def verified_request(plan: Plan, verifier: Verifier, policy: Policy) -> tuple[str | None, Problem | None]:
    """The plan's requester as its signature says, or why there is none."""
    requests = [s for s in plan.signed("request") if s.statement.plan_hash == plan.hash]
    if not requests:
        return None, Problem(UNSIGNED, f"plan {plan.id} carries no signed request for its content")
    try:
        principal = verifier.principal(requests[0].statement.message(), requests[0].signature)
    except SignatureError as exc:
        return None, Problem(UNSIGNED, f"the request's signature does not verify: {exc}")
    if not policy.may_request(principal):
        return None, Problem(POLICY, f"{principal} may not request remediation (policy {policy.path})")
    return principal, None


def approve_plan(
    path: str | Path,
    signer: Signer,
    policy: Policy,
    *,
    break_glass: str | None = None,
    as_name: str | None = None,
    audit: AuditLog | None = None,
    ttl_s: float | None = None,
    now: str | None = None,
) -> tuple[Plan, Approval]:
    """Sign an approval of the plan's hash, store it in the plan and the audit log; refusals are audited."""
    audit = audit or AuditLog(policy.audit_log, policy.checkpoint_file)
    verifier = Verifier(policy.signers_path())
    plan = load_plan(path)
    if break_glass is not None and not break_glass.strip():
        raise UsageError("--break-glass needs a REASON")
    when = now or utcnow()
    ttl = policy.approval_ttl_s if ttl_s is None else min(ttl_s, policy.approval_ttl_s)
    expires = (parse_instant(when) + _dt.timedelta(seconds=ttl)).isoformat(timespec="milliseconds")
    statement = new_statement(
        "break-glass" if break_glass else "approve",
        plan,
        now=when,
        expires=expires.replace("+00:00", "Z"),
        reason=break_glass.strip() if break_glass else None,
    )
    try:
        signed = sign_statement(statement, signer, verifier, as_name=as_name)
    except SignatureError as exc:  # an unlisted key, a label that is not the key's: refused and audited
        audit.append(
            "approve-refused",
            actor="unverified",
            kind=UNSIGNED,
            plan_id=plan.id,
            plan_hash=plan.hash,
            reason=str(exc),
        )
        raise
    name = signed.principal

    def refuse(kind: str, reason: str) -> NoReturn:
        audit.append(
            "approve-refused", actor=name, kind=kind, plan_id=plan.id, plan_hash=plan.hash, reason=reason
        )
        raise Refused(f"refused: {reason}")

    if plan.compute_hash() != plan.hash:
        refuse(CHANGED, "plan was modified after it was written (hash mismatch); plan again")
    requester, problem = verified_request(plan, verifier, policy)
    if problem is not None or requester is None:
        refuse(problem.kind if problem else UNSIGNED, problem.text if problem else "no requester")
    if break_glass:
        if not policy.may_break_glass(name):
            refuse(POLICY, f"{name} may not break glass (policy {policy.path})")
        if not (policy.may_approve(name, plan.action) or policy.may_request(name)):
            refuse(POLICY, f"{name} may not approve {plan.action} (policy {policy.path})")
    else:
        if name == requester:
            refuse(
                SELF_APPROVED,
                f"{name} requested this plan and cannot approve it; a second person must "
                "(or --break-glass REASON by a break-glass principal, which is audited)",
            )
        if not policy.may_approve(name, plan.action):
            refuse(POLICY, f"{name} may not approve {plan.action} (policy {policy.path})")
    audit.append(
        "approve",
        actor=name,
        plan_id=plan.id,
        plan_hash=plan.hash,
        action=plan.action,
        targets=plan.targets,
        requester=requester,
        approver=name,
        break_glass=statement.reason,
        expires=statement.expires,
        signed=signed.to_dict(),
    )
    if break_glass:
        audit.append(
            "break-glass",
            actor=name,
            plan_id=plan.id,
            plan_hash=plan.hash,
            reason=statement.reason,
            self_approved=name == requester,
            signed=signed.to_dict(),
        )
    plan.requester = requester
    plan.statements.append(signed.to_dict())
    save_plan(plan, Path(path))
    return plan, Approval(signed, name, requester)


def approval_problem(
    plan: Plan, policy: Policy, verifier: Verifier, audit: AuditLog, *, ttl_s: float, now: str | None = None
) -> tuple[Approval | None, Problem | None]:
    """The approval that lets this plan run now, or the reason it may not (the newest approval's problem)."""
    if plan.compute_hash() != plan.hash:
        return None, Problem(
            CHANGED, "plan was modified after it was written (its content no longer matches its hash)"
        )
    requester, problem = verified_request(plan, verifier, policy)
    if problem is not None or requester is None:
        return None, problem or Problem(UNSIGNED, "no requester")
    candidates = [s for s in plan.signed("approve", "break-glass")]
    if not candidates:
        return None, Problem(
            UNAPPROVED,
            f"plan {plan.id} is not approved (collector approve PLAN, by someone other than {requester})",
        )
    current = parse_instant(now or utcnow())
    recorded = {str((r.get("signed") or {}).get("signature", "")).strip() for r in audit.approvals(plan.hash)}
    first: Problem | None = None
    for signed in reversed(candidates):  # the newest approval first
        found = _approval_check(plan, signed, requester, policy, verifier, audit, recorded, current, ttl_s)
        if isinstance(found, Approval):
            return found, None
        first = first or found
    return None, first


def _approval_check(
    plan: Plan,
    signed: Signed,
    requester: str,
    policy: Policy,
    verifier: Verifier,
    audit: AuditLog,
    recorded: set[str],
    current: _dt.datetime,
    ttl_s: float,
) -> Approval | Problem:
    st = signed.statement
    if st.plan_hash != plan.hash or st.plan_id != plan.id:
        return Problem(
            CHANGED, "the approval is for different plan content (plan hash differs); approve again"
        )
    try:
        name = verifier.principal(st.message(), signed.signature)
    except SignatureError as exc:
        return Problem(UNSIGNED, f"the approval's signature does not verify: {exc}")
    if st.role == "break-glass":
        if not policy.may_break_glass(name):
            return Problem(POLICY, f"{name} may not break glass (policy {policy.path})")
    elif name == requester:
        return Problem(SELF_APPROVED, f"plan is approved by its own requester {name} without break-glass")
    elif not policy.may_approve(name, plan.action):
        return Problem(POLICY, f"{name} may not approve {plan.action} (policy {policy.path})")
    if signed.signature.strip() not in recorded:
        return Problem(UNAPPROVED, f"the approval by {name} is not recorded in the audit log {audit.path}")
    try:
        approved, expires = parse_instant(st.time), parse_instant(str(st.expires))
    except ValueError:
        return Problem(UNSIGNED, f"the approval by {name} carries no valid time or expiry")
    if approved > current + _dt.timedelta(seconds=CLOCK_SKEW_S):
        return Problem(EXPIRED, f"the approval by {name} is dated in the future ({st.time})")
    deadline = min(expires, approved + _dt.timedelta(seconds=ttl_s))
    if current >= deadline:
        return Problem(
            EXPIRED,
            f"the approval by {name} expired at {deadline.isoformat(timespec='seconds')}; approve again",
        )
    used = audit.consumed(signed.digest)
    if used is not None:
        return Problem(
            CONSUMED,
            f"the approval by {name} was already used by the apply at {used.get('time')} "
            f"(audit record {used.get('seq')}); an approval authorises one apply: approve again",
        )
    return Approval(signed, name, requester)


def _triage_said(raw: Any, plan: Plan) -> list[str]:
    """Triage's severity and whether it suggested this plan's action (findings.json read as Findings)."""
    try:
        findings = Findings.from_dict(raw)
    except UsageError as exc:
        return [f"  findings.json unreadable: {exc}"]
    suggested = [(f, m) for f in findings.findings if (m := f.mitigation) is not None]
    match = [(f, m) for f, m in suggested if m.action == plan.action]
    lines = [
        f"  triage said {findings.severity}; "
        + (
            f"this action was suggested by {', '.join(f.id for f, _ in match)}"
            if match
            else "this action was NOT among triage's suggestions ("
            + (", ".join(sorted({m.action for _, m in suggested})) or "none")
            + ")"
        )
    ]
    for _, m in match[:1]:
        differs = {k: v for k, v in m.params.items() if str(plan.params.get(k)) != str(v)}
        if differs:
            lines.append(
                "  parameters differ from the suggestion: "
                + ", ".join(f"{k}={plan.params.get(k)} (suggested {v})" for k, v in differs.items())
            )
    return lines


def since_bundle(plan: Plan) -> list[str]:
    """What differs between the incident's bundle (the evidence) and this plan: age, hosts, findings, past
    actions."""
    if not plan.bundle:
        return ["bundle    none given: no evidence is tied to this plan (--bundle when planning)"]

    folder = Path(plan.bundle)
    lines: list[str] = []

    def read(name: str) -> Any:
        return read_json(folder / name)

    manifest = read("manifest.json")
    if not isinstance(manifest, dict):
        return [f"bundle    {folder}: no readable manifest.json (the evidence is missing)"]
    finished = str(manifest.get("finished") or manifest.get("started") or "")
    try:
        age = (parse_instant(plan.created) - parse_instant(finished)).total_seconds()
        lines.append(f"evidence  collected {finished}, {age / 60:.0f} min before this plan")
    except ValueError:
        lines.append("evidence  collection time unknown")
    hosts = sorted(manifest.get("hosts") or {})
    outside = [t for t in plan.targets if t not in hosts]
    if outside:
        lines.append(f"  targets not in the evidence (no data collected from them): {', '.join(outside)}")
    raw = read("findings.json")
    if raw is not None:
        lines += _triage_said(raw, plan)
    raw = read("actions.json")
    if isinstance(raw, dict) and raw.get("actions"):
        try:
            records = [ActionRecord.from_dict(a, "actions.json record") for a in raw["actions"]]
        except UsageError as exc:
            lines.append(f"  actions.json unreadable: {exc}")
        else:
            done = [f"{r.action} at {r.applied_finished}" for r in records]
            lines.append(f"  already applied for this incident: {'; '.join(done)}")
    return lines
