"""An interrupted apply records its outcome: SIGTERM/SIGINT/SIGHUP → `apply-interrupted` (signed); a killed
one is found by the next command and recorded as `apply-dangling`. A real ansible-runner run on this machine
(connection local) of a stand-in playbook that sleeps, from a playbooks folder the test's policy names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.config import Settings
from collector.remediate.approve import approve_plan, request_plan
from collector.remediate.audit import AuditLog
from collector.remediate.plan import make_plan
from collector.remediate.policy import Policy
from collector.remediate.signing import Verifier

SLOW = """\
- name: Stand-in restart that takes a while.
  hosts: "{{ restart_hosts }}"
  gather_facts: false
  tasks:
    - name: Sleep like a slow restart.
      ansible.builtin.command: sleep 60
"""
RUNNER = """\
import sys
from collector.remediate import policy
policy.POLICY_PATH = sys.argv[1]
from collector.cli import main
main(sys.argv[2:])
"""


@pytest.fixture()
def slow_plan(tmp_path: Path, keys: Any, policy: Policy) -> Callable[[], tuple[Path, Path, Policy]]:
    books = tmp_path / "playbooks" / "remediate"
    books.mkdir(parents=True)
    (books / "restart.yml").write_text(SLOW)
    inventory = tmp_path / "local.yml"
    inventory.write_text(
        f"all:\n  children:\n    app:\n      hosts:\n        app1: {{ansible_connection: local, "
        f"ansible_python_interpreter: {sys.executable}}}\n"
    )
    own = Policy(
        **{**policy.__dict__, "playbooks_dir": str(tmp_path / "playbooks"), "restart_min_interval_s": 0.0}
    )
    policy_file = tmp_path / "policy.yml"
    policy_file.write_text(
        yaml.safe_dump(
            {
                "allowed_signers": own.allowed_signers,
                "audit_log": own.audit_log,
                "checkpoint_file": own.checkpoint_file,
                "requesters": list(own.requesters),
                "approvers": {"*": ["bob"]},
                "playbooks_dir": own.playbooks_dir,
                "restart_min_interval_s": 0,
            }
        )
    )

    def make() -> tuple[Path, Path, Policy]:
        settings = Settings(inventory=str(inventory), plans_dir=str(tmp_path / "plans"))
        plan = make_plan("restart", "app1", {}, settings, playbooks_dir=own.playbooks_dir)
        path = tmp_path / "plans" / f"{plan.id}.json"
        audit = AuditLog(own.audit_log, own.checkpoint_file)
        request_plan(plan, path, keys.signer("alice"), own, audit)
        approve_plan(path, keys.signer("bob"), own, audit=audit)
        return path, policy_file, own

    return make


def _apply(path: Path, policy_file: Path, keys: Any, tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "run.py"
    script.write_text(RUNNER)
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(policy_file),
            "remediate",
            "apply",
            str(path),
            "--key",
            str(keys.key("alice")),
            "--no-after-bundle",
            "--verify-wait",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )


def _wait_for(audit: AuditLog, event: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(r["event"] == event for r in audit.records()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {event} record after {timeout_s} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_during_apply_records_apply_interrupted(
    signum: int, slow_plan: Any, keys: Any, tmp_path: Path
) -> None:
    path, policy_file, policy = slow_plan()
    audit = AuditLog(policy.audit_log, policy.checkpoint_file)
    proc = _apply(path, policy_file, keys, tmp_path)
    _wait_for(audit, "apply-start")
    time.sleep(1.0)  # ansible-playbook is running its sleep now
    started = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - started < 30  # the 60 s sleep was cancelled, not waited for
    assert proc.returncode == 1, out + err
    assert f"interrupted by {signal.Signals(signum).name}; recorded as apply-interrupted" in err
    last = list(audit.records())[-1]
    assert last["event"] == "apply-interrupted" and last["actor"] == "alice" and last["signed"]
    check = audit.verify(verifier=Verifier(policy.signers_path()))
    assert check.ok, check.reason


def test_a_killed_apply_is_recorded_as_dangling_by_the_next_command(
    slow_plan: Any, keys: Any, tmp_path: Path
) -> None:
    path, policy_file, policy = slow_plan()
    audit = AuditLog(policy.audit_log, policy.checkpoint_file)
    proc = _apply(path, policy_file, keys, tmp_path)
    _wait_for(audit, "apply-start")
    os.killpg(proc.pid, signal.SIGKILL)  # the apply and the ansible-playbook it started: its own session
    proc.communicate(timeout=30)
    script = tmp_path / "run.py"
    verify = subprocess.run(
        [sys.executable, str(script), str(policy_file), "audit", "verify"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert "recorded apply-dangling" in verify.stderr, verify.stdout + verify.stderr
    events = [r["event"] for r in audit.records()]
    assert events[-1] == "apply-dangling" and events.count("apply-dangling") == 1
    assert verify.returncode == 0, verify.stdout
