"""Fixtures for the remediate tests: SSH keys and an allowed_signers file made with ssh-keygen for this
session (alice requests, bob approves, carol may break glass, mallory is not listed), a policy and an
audit log per test in tmp_path, a throw-away inventory and requested plans.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from collector.config import Settings
from collector.core import Plan
from collector.inventory import load_inventory
from collector.paths import resource
from collector.remediate.actions import get_action
from collector.remediate.approve import request_plan
from collector.remediate.audit import AuditLog
from collector.remediate.plan import compute_binding
from collector.remediate.policy import Policy
from collector.remediate.signing import NAMESPACE, Signer

INVENTORY = """\
all:
  children:
    app:
      hosts:
        app1: {ansible_host: 127.0.0.1, collector_service: sergas-app}
        app2: {ansible_host: 127.0.0.1, collector_service: sergas-app}
    db:
      hosts:
        db1: {ansible_host: 127.0.0.1, collector_service: postgresql}
    web:
      hosts:
        web01: {ansible_host: 127.0.0.1, collector_service: ssh}
"""
PEOPLE = ("alice", "bob", "carol")  # listed in allowed_signers
UNLISTED = "mallory"


@dataclass(frozen=True)
class Keys:
    folder: Path
    allowed_signers: Path

    def key(self, name: str) -> Path:
        return self.folder / name

    def signer(self, name: str) -> Signer:
        return Signer(self.key(name), label=name)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("signers")
    folder.chmod(0o700)
    lines = []
    for name in (*PEOPLE, UNLISTED):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(folder / name)],
            check=True,
        )
        if name != UNLISTED:
            kind, blob = (folder / f"{name}.pub").read_text().split()[:2]
            lines.append(f'{name} namespaces="{NAMESPACE}" {kind} {blob}')
    allowed = folder / "allowed_signers"
    allowed.write_text("\n".join(lines) + "\n")
    allowed.chmod(0o644)
    return Keys(folder, allowed)


@pytest.fixture()
def policy(tmp_path: Path, keys: Keys) -> Policy:
    return Policy(
        path=str(tmp_path / "policy.yml"),
        allowed_signers=str(keys.allowed_signers),
        audit_log=str(tmp_path / "audit" / "audit.jsonl"),
        checkpoint_file=str(tmp_path / "checkpoints" / "audit-head.log"),
        requesters=PEOPLE,
        approvers={"*": ("bob", "carol")},
        break_glass=("carol",),
        approval_ttl_s=3600.0,
        blast_radius=10,
        max_hosts=20,
        batch_size=2,
        restart_min_interval_s=60.0,
    )


@pytest.fixture()
def audit(policy: Policy) -> AuditLog:
    return AuditLog(policy.audit_log, policy.checkpoint_file)


@pytest.fixture()
def inventory_file(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY)
    return path


@pytest.fixture()
def settings(tmp_path: Path, inventory_file: Path) -> Settings:
    return Settings(inventory=str(inventory_file), plans_dir=str(tmp_path / "plans"))


def unsigned_plan(inventory_file: Path, **changes: object) -> Plan:
    made = Plan(
        id="20261128T060000Z-pool-resize-abc123",
        action="pool-resize",
        params={"size": 20},
        pattern="app",
        inventory=str(inventory_file),
        targets=["app1", "app2"],
        created="2026-11-28T06:00:00.000Z",
        check={
            "app1": {"status": "changed", "changed": True, "msg": ""},
            "app2": {"status": "changed", "changed": True, "msg": ""},
        },
        diffs={"app1": ["-DATABASE_POOL_SIZE=5\n+DATABASE_POOL_SIZE=20\n"]},
    )
    made = replace(made, **changes)  # type: ignore[arg-type]
    made.binding = compute_binding(
        get_action(made.action), load_inventory(str(inventory_file)), made.targets, resource("playbooks")
    )
    made.hash = made.compute_hash()
    return made


@pytest.fixture()
def make_plan() -> Callable[..., Plan]:
    """An unsigned pool-resize plan over an inventory file (keyword arguments change its fields)."""
    return unsigned_plan


@pytest.fixture()
def plan(inventory_file: Path) -> Plan:
    return unsigned_plan(inventory_file)


@pytest.fixture()
def plan_path(plan: Plan, tmp_path: Path, keys: Keys, policy: Policy, audit: AuditLog) -> Path:
    """The plan requested (signed) by alice and saved."""
    path = tmp_path / "plans" / f"{plan.id}.json"
    request_plan(plan, path, keys.signer("alice"), policy, audit)
    return path
