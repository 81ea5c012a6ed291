"""Apply an approved plan: refuse what is unsafe, canary first, batches with a health gate, verify, record.

Nothing touches a host before every refusal rule has passed: the audit log verifies, the plan's
content and binding (inventory, host vars, playbooks, versions) are what was approved, the request
and approval signatures verify against the policy's allowed_signers, the approval is unexpired and
unused, the applier's key signs the apply, and the per-plan lock is ours. A failed batch (or a
failed health gate) stops the rollout and the remaining hosts stay untouched. Afterwards the step 5
checklist runs, an after-bundle is collected, and the whole story goes to the audit log (closed by
the applier's signature over every record of the run) and actions.json.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from collector.config import Settings
from collector.core import ActionRecord, Plan, Signed, UsageError, canonical_json, utcnow
from collector.inventory import Inventory, load_inventory
from collector.jsonfile import read_json
from collector.redact import Redactor
from collector.remediate import Refused
from collector.remediate.actions import Action, get_action, validate_params
from collector.remediate.approve import (
    BROKEN_LOG,
    CHANGED,
    LOCKED,
    POLICY,
    UNSIGNED,
    Approval,
    approval_problem,
    new_statement,
    sign_statement,
)
from collector.remediate.audit import AuditLog
from collector.remediate.plan import (
    binding_changes,
    compute_binding,
    load_plan,
    plan_extravars,
    plans_root,
    play_summary,
    playbook_path,
)
from collector.remediate.policy import Limits, Policy, load_policy
from collector.remediate.signing import SignatureError, Signer, Verifier
from collector.times import parse_instant
from collector.verify import Check, passed, verify

ACTIONS_SCHEMA = "incident-collector/actions/v1"
Echo = Callable[[str], None]


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived during an apply; `apply-interrupted` is recorded."""


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
    approval: Approval | None = None
    applier: str = ""
    apply_signed: Signed | None = None
    finish_signed: Signed | None = None
    audit_head: str | None = None

    @property
    def verified(self) -> bool:
        return passed(self.checks)

    @property
    def ok(self) -> bool:
        return (
            self.stopped is None
            and self.verified
            and all(h["status"] in ("ok", "changed") for h in self.hosts.values())
        )


def batches(targets: list[str], batch_size: int) -> list[list[str]]:
    """The canary (first target) alone, then the rest in batches of `batch_size`."""
    if not targets:
        return []
    size = max(1, int(batch_size))
    rest = targets[1:]
    return [targets[:1]] + [rest[i : i + size] for i in range(0, len(rest), size)]


def restart_blocked(
    action: Action, targets: list[str], audit: AuditLog, min_interval_s: float, now: float | None = None
) -> dict[str, float]:
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


def _refuse(audit: AuditLog, plan: Plan, kind: str, reason: str, actor: str = "unverified") -> NoReturn:
    audit.append(
        "apply-refused",
        actor=actor,
        kind=kind,
        plan_id=plan.id,
        plan_hash=plan.hash,
        action=plan.action,
        targets=plan.targets,
        reason=reason,
    )
    raise Refused(f"refused: {reason} — nothing was changed")


def preflight(
    plan: Plan,
    action: Action,
    policy: Policy,
    limits: Limits,
    audit: AuditLog,
    verifier: Verifier,
    *,
    max_hosts: int | None,
    inv: Inventory,
    now: str | None = None,
) -> Approval:
    """Every refusal rule that needs no host and no lock; returns the approval to use, else Refused
    (audited)."""
    # Parameters are checked again: a plan file is data from disk, whatever its hash says.
    try:
        valid = validate_params(action, plan.params)
    except UsageError as exc:
        _refuse(audit, plan, CHANGED, f"the plan's parameters no longer validate: {exc}")
    if canonical_json(valid) != canonical_json(plan.params):
        _refuse(audit, plan, CHANGED, "the plan's parameters are not in their validated form")
    approval, problem = approval_problem(plan, policy, verifier, audit, ttl_s=limits.approval_ttl_s, now=now)
    if problem is not None or approval is None:
        _refuse(
            audit, plan, problem.kind if problem else UNSIGNED, problem.text if problem else "no approval"
        )
    current = compute_binding(action, inv, plan.targets, plans_root(policy.playbooks_dir))
    changes = binding_changes(plan.binding, current)
    if changes:
        more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
        _refuse(
            audit,
            plan,
            CHANGED,
            "what would run changed since the plan was approved: " + "; ".join(changes[:3]) + more,
        )
    if not plan.targets:
        _refuse(audit, plan, POLICY, "the plan has no target host")
    if max_hosts is not None and max_hosts > limits.max_hosts:
        _refuse(
            audit, plan, POLICY, f"--max-hosts {max_hosts} is above the policy's max_hosts {limits.max_hosts}"
        )
    limit = max_hosts if max_hosts is not None else limits.blast_radius
    if len(plan.targets) > limit:
        _refuse(
            audit,
            plan,
            POLICY,
            f"the plan targets {len(plan.targets)} hosts, more than the blast-radius limit "
            f"of {limit}; raise it explicitly with --max-hosts {len(plan.targets)}",
        )
    missing = [h for h in plan.targets if h not in inv.hosts]
    if missing:
        _refuse(audit, plan, CHANGED, f"target {missing[0]} is no longer in the inventory {plan.inventory}")
    return approval


def _host_outcome(play: Any, redactor: Redactor) -> dict[str, Any]:
    if play is None:
        return {"status": "failed", "changed": False, "msg": "no result from the playbook run"}
    return {
        "status": play.status,
        "changed": bool(play.changed),
        "msg": redactor.redact_text(play_summary(play), "apply")[:500],
    }


def _check_rate_limited(
    plan: Plan, action: Action, book: Path, blocked: dict[str, float], audit: AuditLog, actor: str
) -> None:
    """Rate-limited hosts may still be applied when a check run shows no restart would happen (idempotent
    re-run)."""
    from collector.transport.ansible import run_playbook

    run = run_playbook(
        book, plan.inventory, ",".join(blocked), plan_extravars(plan), check=True, unsafe_vars=True
    )
    would = [h for h in blocked if (run.hosts.get(h) is None or run.hosts[h].changed or run.hosts[h].failed)]
    if would:
        host = would[0]
        _refuse(
            audit,
            plan,
            POLICY,
            f"{host} was restarted by this tool less than the minimum interval ago; "
            f"wait {blocked[host]:.0f} s (restart_min_interval_s) before restarting it again",
            actor,
        )


# ---- the per-plan lock, dangling applies ------------------------------------------------------------------


def locks_dir(policy: Policy) -> Path:
    """Beside the audit log (a fixed, root-only place): every copy of a plan file shares its lock."""
    return Path(policy.audit_log).parent / "locks"


@contextmanager
def plan_lock(folder: Path, plan_hash: str, holder: dict[str, Any]) -> Iterator[None]:
    """Hold the plan's lock for one apply; a second apply gets LockHeld naming who holds it."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{plan_hash}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(_holder_text(path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        os.fsync(fd)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class LockHeld(Exception):
    """Another apply of the same plan holds the lock."""


def _holder_text(path: Path) -> str:
    who = read_json(path, {}, want=dict)
    return (
        f"{who.get('principal', 'someone')} (pid {who.get('pid', '?')} on {who.get('host', '?')}, "
        f"since {who.get('since', '?')})"
    )


def lock_is_free(folder: Path, plan_hash: str) -> bool:
    path = folder / f"{plan_hash}.lock"
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def record_dangling(audit: AuditLog, policy: Policy) -> list[dict[str, Any]]:
    """Record `apply-dangling` for every apply-start without an outcome whose lock nobody holds (a killed
    apply)."""
    found = []
    for start in audit.dangling():
        if lock_is_free(locks_dir(policy), str(start.get("plan_hash"))):
            found.append(
                audit.append(
                    "apply-dangling",
                    actor="collector",
                    plan_id=start.get("plan_id"),
                    plan_hash=start.get("plan_hash"),
                    run=start.get("run"),
                    started=start.get("time"),
                    started_by=start.get("actor"),
                    reason="the apply ended without recording its outcome (killed?); "
                    "check the hosts: some may have been changed",
                )
            )
    return found


@contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP set `stop` (the playbook run is cancelled); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise Interrupted(signal.Signals(signum).name)
        stop.set()
        stop.signal_name = signal.Signals(signum).name  # type: ignore[attr-defined]

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


# ---- apply ------------------------------------------------------------------------------------------------


def apply_plan(
    path: str | Path,
    settings: Settings,
    *,
    signer: Signer,
    policy: Policy | None = None,
    as_name: str | None = None,
    max_hosts: int | None = None,
    batch_size: int | None = None,
    bundle: str | None = None,
    verify_wait_s: float = 60.0,
    verify_window: str = "30s",
    collect_after: bool = True,
    allowed_alerts: tuple[str, ...] = (),
    echo: Echo = lambda line: None,
) -> ApplyResult:
    """Apply an approved plan file; see the module docstring for the order of things."""
    policy = policy or load_policy()
    limits = policy.limits(settings)
    verifier = Verifier(policy.signers_path())
    audit = AuditLog(policy.audit_log, policy.checkpoint_file)
    if max_hosts is not None and max_hosts < 1:
        raise UsageError("--max-hosts must be at least 1")
    if batch_size is not None and batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    plan = load_plan(path)
    action = get_action(plan.action)
    record_dangling(audit, policy)
    chain = audit.verify(verifier=verifier, signatures_of=plan.hash)
    if not chain.ok:
        where = f" (line {chain.first_bad})" if chain.first_bad else ""
        _refuse(audit, plan, BROKEN_LOG, f"the audit log {audit.path} does not verify{where}: {chain.reason}")
    inv = load_inventory(plan.inventory)
    approval = preflight(plan, action, policy, limits, audit, verifier, max_hosts=max_hosts, inv=inv)
    try:
        apply_signed = sign_statement(
            new_statement("apply", plan, approval=approval.digest), signer, verifier, as_name=as_name
        )
    except SignatureError as exc:
        audit.append(
            "apply-refused",
            actor="unverified",
            kind=UNSIGNED,
            plan_id=plan.id,
            plan_hash=plan.hash,
            action=plan.action,
            reason=f"the apply could not be signed: {exc}",
        )
        raise
    actor = apply_signed.principal
    if not policy.may_apply(actor):
        _refuse(audit, plan, POLICY, f"{actor} may not apply plans (policy {policy.path})", actor)
    holder = {"principal": actor, "pid": os.getpid(), "host": socket.gethostname(), "since": utcnow()}
    try:
        with plan_lock(locks_dir(policy), plan.hash, holder):
            # Checked again under the lock: the apply that held it before us may have used the approval.
            approval = preflight(plan, action, policy, limits, audit, verifier, max_hosts=max_hosts, inv=inv)
            if approval.digest != apply_signed.statement.approval:
                _refuse(audit, plan, CHANGED, "the approval changed while waiting for the lock", actor)
            return _run(
                plan,
                action,
                approval,
                apply_signed,
                policy,
                limits,
                audit,
                verifier,
                settings,
                inv,
                batch_size=batch_size,
                bundle=bundle,
                verify_wait_s=verify_wait_s,
                verify_window=verify_window,
                collect_after=collect_after,
                allowed_alerts=allowed_alerts,
                echo=echo,
                signer=signer,
            )
    except LockHeld as held:
        _refuse(audit, plan, LOCKED, f"plan {plan.id} is being applied by {held}", actor)


def _run(
    plan: Plan,
    action: Action,
    approval: Approval,
    apply_signed: Signed,
    policy: Policy,
    limits: Limits,
    audit: AuditLog,
    verifier: Verifier,
    settings: Settings,
    inv: Inventory,
    *,
    batch_size: int | None,
    bundle: str | None,
    verify_wait_s: float,
    verify_window: str,
    collect_after: bool,
    allowed_alerts: tuple[str, ...],
    echo: Echo,
    signer: Signer,
) -> ApplyResult:
    from collector.transport.ansible import run_playbook

    actor = apply_signed.principal
    # The deploy kind the approved binding names (preflight found it unchanged in the inventory).
    deploy = str(plan.binding.get("deploy") or "systemd")
    book = playbook_path(action, plans_root(policy.playbooks_dir), deploy)
    blocked = restart_blocked(action, plan.targets, audit, limits.restart_min_interval_s)
    if blocked:
        _check_rate_limited(plan, action, book, blocked, audit, actor)
    redactor = Redactor(
        settings.redact_patterns, inv.secret_values()
    )  # every host's: app .env holds db/redis ones
    result = ApplyResult(
        plan=plan, started=utcnow(), approval=approval, applier=actor, apply_signed=apply_signed
    )
    run_id = apply_signed.digest[:16]
    covered: list[str] = []

    def record(event: str, **fields: Any) -> dict[str, Any]:
        written = audit.append(event, actor=actor, plan_id=plan.id, plan_hash=plan.hash, run=run_id, **fields)
        covered.append(str(written["hash"]))
        return written

    record(
        "apply-start",
        action=plan.action,
        params=plan.params,
        targets=plan.targets,
        requester=approval.requester,
        approver=approval.approver,
        break_glass=approval.break_glass,
        approval=approval.digest,
        diffs=plan.diffs,
        signed=apply_signed.to_dict(),
    )
    stop = threading.Event()
    try:
        with _signals(stop):
            size = min(batch_size, limits.batch_size) if batch_size else limits.batch_size
            groups = batches(plan.targets, size)
            for index, batch in enumerate(groups):
                label = "canary" if index == 0 else f"batch {index}"
                echo(f"{label}: applying {plan.action} on {', '.join(batch)}")
                run = run_playbook(
                    book,
                    plan.inventory,
                    ",".join(batch),
                    plan_extravars(plan),
                    diff=True,
                    cancel=stop,
                    unsafe_vars=True,
                )
                for host in batch:
                    outcome = _host_outcome(run.hosts.get(host), redactor)
                    result.hosts[host] = outcome
                    record(
                        "apply-host",
                        action=plan.action,
                        host=host,
                        status=outcome["status"],
                        changed=outcome["changed"],
                        msg=outcome["msg"],
                        restarted=bool(action.restarts and outcome["changed"]),
                    )
                    echo(
                        f"  {host}: {outcome['status']}"
                        + (f" — {outcome['msg']}" if outcome["status"] not in ("ok", "changed") else "")
                    )
                if stop.is_set():
                    raise Interrupted(getattr(stop, "signal_name", "signal"))
                bad = [h for h in batch if result.hosts[h]["status"] not in ("ok", "changed")]
                if bad:
                    result.stopped = f"{label} failed on {', '.join(bad)}; the rollout stopped"
                elif index < len(groups) - 1:
                    gate = verify(inv, batch, settings, monitoring=False, only_health=True, wait_s=30)
                    if not passed(gate):
                        failing = "; ".join(f"{c.host} {c.name}: {c.detail}" for c in gate if not c.passed)
                        result.stopped = f"health gate after {label} failed ({failing}); the rollout stopped"
                if result.stopped:
                    untouched = [h for later in groups[index + 1 :] for h in later]
                    for host in untouched:
                        result.hosts[host] = {
                            "status": "not-run",
                            "changed": False,
                            "msg": "left untouched: the rollout stopped",
                        }
                    record("apply-stopped", reason=result.stopped, untouched=untouched)
                    echo(result.stopped + (f"; untouched: {', '.join(untouched)}" if untouched else ""))
                    break
            echo("verify: running the recovery checklist")
            result.checks = verify(
                inv,
                _verify_hosts(inv, plan),
                settings,
                window=verify_window,
                wait_s=verify_wait_s,
                allowed_alerts=action.expected_alerts(plan.params) + tuple(allowed_alerts),
            )
            if stop.is_set():
                raise Interrupted(getattr(stop, "signal_name", "signal"))
            record("verify", passed=result.verified, checks=[c.as_dict() for c in result.checks])
    except (Interrupted, KeyboardInterrupt) as exc:
        untouched = [h for h in plan.targets if h not in result.hosts]
        reason = f"interrupted by {exc or 'SIGINT'}"
        finish = _sign_finish(plan, covered, signer, verifier, actor)
        audit.append(
            "apply-interrupted",
            actor=actor,
            plan_id=plan.id,
            plan_hash=plan.hash,
            run=run_id,
            reason=reason,
            hosts=result.hosts,
            untouched=untouched,
            **({"signed": finish.to_dict()} if finish else {}),
        )
        raise Interrupted(
            f"apply of plan {plan.id} {reason}; recorded as apply-interrupted "
            f"(done: {', '.join(result.hosts) or 'none'}; untouched: {', '.join(untouched) or 'none'})"
        ) from None

    before = bundle or plan.bundle
    if collect_after:
        out_dir = str(Path(before).resolve().parent) if before else settings.out_dir
        result.after_bundle = _after_bundle(plan, out_dir, result.notes)
    if before and result.after_bundle:
        result.before_after = before_after(before, result.after_bundle, result.notes)
    result.finished = utcnow()
    result.finish_signed = _sign_finish(plan, covered, signer, verifier, actor)
    written = audit.append(
        "apply-finish",
        actor=actor,
        plan_id=plan.id,
        plan_hash=plan.hash,
        run=run_id,
        action=plan.action,
        hosts=result.hosts,
        stopped=result.stopped,
        verified=result.verified,
        after_bundle=result.after_bundle,
        **({"signed": result.finish_signed.to_dict()} if result.finish_signed else {}),
    )
    result.audit_head = f"{written['seq']}:{written['hash']}"
    target_bundle = before or result.after_bundle
    if target_bundle:
        result.actions_json = write_actions(target_bundle, action_record(result), result.notes)
        _render_reports(target_bundle, result.notes)
    return result


def _sign_finish(
    plan: Plan, covered: list[str], signer: Signer, verifier: Verifier, actor: str
) -> Signed | None:
    """The applier's signature over every record of this run (so no record of it can be changed unseen)."""
    try:
        return sign_statement(
            new_statement("apply-finish", plan, records=tuple(covered)), signer, verifier, as_name=actor
        )
    except SignatureError:
        return (
            None  # the key went away mid-apply: the outcome is still recorded, unsigned (verify reports it)
        )


def _verify_hosts(inv: Inventory, plan: Plan) -> list[str]:
    """The targets plus the app's dependencies (db, redis groups) when the inventory has them."""
    hosts = list(plan.targets)
    for host in inv.hosts:
        if host not in hosts and {"db", "redis"} & set(inv.roles(host)):
            hosts.append(host)
    return hosts


def action_record(result: ApplyResult) -> dict[str, Any]:
    """One entry of actions.json: verified names, signature digests and the audit head after this apply."""
    plan, approval = result.plan, result.approval
    signatures = {s.statement.role: s.digest for s in plan.signed("request")[:1]}
    if approval is not None:
        signatures[approval.signed.statement.role] = approval.digest
    for role, signed in (("apply", result.apply_signed), ("apply-finish", result.finish_signed)):
        if signed is not None:
            signatures[role] = signed.digest
    return ActionRecord(
        action=plan.action,
        params=plan.params,
        plan_id=plan.id,
        plan_hash=plan.hash,
        requester=plan.requester,
        requested=plan.created,
        approver=approval.approver if approval else None,
        approved=approval.approved if approval else None,
        break_glass=approval.break_glass if approval else None,
        applier=result.applier,
        applied_started=result.started,
        applied_finished=result.finished,
        hosts=result.hosts,
        stopped=result.stopped,
        verify={"passed": result.verified, "checks": [c.as_dict() for c in result.checks]},
        after_bundle=result.after_bundle,
        before_after=result.before_after,
        audit_head=result.audit_head,
        signatures=signatures,
    ).to_dict()


def _after_bundle(plan: Plan, out_dir: str, notes: list[str]) -> str | None:
    """Collect a fresh bundle from the plan's pattern (the evidence after the fix), beside the before-bundle.

    collect's own public function does all of it: triage, reports and the bundle's one seal.
    """
    from collector.collect import collect  # late: `plan` and `approve` need none of the collect step

    try:
        outcome = collect(
            plan.pattern,
            inventory=plan.inventory,
            out_dir=out_dir,
            command_line=["collector", "remediate", "apply", plan.id, "(after-bundle)"],
        )
        notes.extend(outcome.notes)
        return str(outcome.bundle) if outcome.bundle else None
    except Exception as exc:  # noqa: BLE001 - the fix is done; a failed collection is a note, not a failed apply
        notes.append(f"after-bundle failed: {type(exc).__name__}: {exc}"[:300])
        return None


def before_after(before: str, after: str, notes: list[str]) -> dict[str, Any]:
    """{figure: [before, after]} from the key figures triage stored in both bundles."""
    from collector.triage import bundle_figures

    try:
        first, second = bundle_figures(before).to_dict(), bundle_figures(after).to_dict()
    except Exception as exc:  # noqa: BLE001 - the apply is done; a bundle we cannot read is a note
        notes.append(f"before/after failed: {type(exc).__name__}: {exc}"[:300])
        return {}
    return {key: [first.get(key), second.get(key)] for key in sorted(set(first) | set(second))}


def write_actions(bundle_path: str, record: dict[str, Any], notes: list[str]) -> str | None:
    """Append the record to the bundle's actions.json under the bundle's lock (two appliers writing to one
    bundle both keep their record); `_render_reports` seals the bundle afterwards, once."""
    from collector.bundle import Bundle

    def append(doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict) or not isinstance(doc.get("actions"), list):
            doc = {"actions": []}
        return {**doc, "schema": ACTIONS_SCHEMA, "actions": [*doc["actions"], record]}

    try:
        return str(Bundle.open(bundle_path).update_json("actions.json", append))
    except Exception as exc:  # noqa: BLE001 - the apply is done and audited; a bundle we cannot write is a note
        notes.append(f"actions.json not written to {bundle_path}: {type(exc).__name__}: {exc}"[:300])
        return None


def _render_reports(bundle_path: str, notes: list[str]) -> None:
    """The report step's public function renders; then the bundle is sealed, once for this command."""
    from collector.bundle import Bundle
    from collector.report import render_reports  # late: Jinja2 loads only when an apply reaches its reports

    try:
        render_reports(bundle_path, seal=False)
    except Exception as exc:  # noqa: BLE001 - the apply is done and audited; a failed report is a note
        notes.append(f"report not rendered: {type(exc).__name__}: {exc}"[:300])
    try:
        Bundle.open(bundle_path).seal()
    except Exception as exc:  # noqa: BLE001 - as above: a note, and `collector report` seals it again later
        notes.append(f"bundle not sealed: {type(exc).__name__}: {exc}"[:300])
