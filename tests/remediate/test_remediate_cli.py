"""Bad input to remediate/approve/apply/audit: one clear line, exit 2, nothing planned, signed or written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from collector.cli import main
from collector.core import Plan
from collector.remediate import policy as policy_module
from collector.remediate.approve import request_plan
from collector.remediate.audit import AuditLog
from collector.remediate.policy import Policy


@pytest.fixture()
def policy_file(tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's policy at the 'system' path (the module constant, which only a build can change)."""
    path = tmp_path / "etc" / "policy.yml"
    path.parent.mkdir()
    path.write_text(
        yaml.safe_dump(
            {
                "allowed_signers": policy.allowed_signers,
                "audit_log": policy.audit_log,
                "checkpoint_file": policy.checkpoint_file,
                "requesters": list(policy.requesters),
                "approvers": {k: list(v) for k, v in policy.approvers.items()},
                "break_glass": list(policy.break_glass),
            }
        )
    )
    monkeypatch.setattr(policy_module, "POLICY_PATH", str(path))
    return path


@pytest.fixture()
def env(
    tmp_path: Path, inventory_file: Path, keys: Any, policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COLLECTOR_CONFIG", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return {
        "COLLECTOR_PLANS_DIR": str(tmp_path / "plans"),
        "COLLECTOR_INVENTORY": str(inventory_file),
        "COLLECTOR_SIGNING_KEY": str(keys.key("alice")),
    }


def _one_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["remediate", "reboot", "--hosts", "app"], "unknown action 'reboot'"),
        (["remediate", "pool-resize", "--hosts", "app", "--param", "size=lots"], "must be a whole number"),
        (["remediate", "pool-resize", "--hosts", "app"], "parameter size is required"),
        (["remediate", "pool-resize", "--hosts", "nosuch*", "--param", "size=5"], "matches no host"),
        (["remediate", "kill-idle-connections", "--hosts", "app"], "matches none of them"),
        (["remediate", "restart", "--hosts", "app", "--param", "x=1"], "takes no parameters"),
        (
            ["remediate", "memory-limit", "--hosts", "app", "--param", "max={{ lookup('pipe', 'id') }}"],
            "Jinja",
        ),
        (
            ["remediate", "restart", "--hosts", "app", "--key", "/nonexistent/key"],
            "signing key /nonexistent/key does not",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    args: list[str], message: str, env: dict[str, str], tmp_path: Path, policy: Policy
) -> None:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert message in _one_line(result.output)
    assert not (tmp_path / "plans").exists() and not Path(policy.audit_log).exists()


def test_a_missing_or_malformed_policy_is_one_line(env: dict[str, str], policy_file: Path) -> None:
    policy_file.write_text("requesters: [alice\n")
    result = CliRunner().invoke(main, ["remediate", "restart", "--hosts", "app"], env=env)
    assert result.exit_code == 2 and f"policy {policy_file} is not valid YAML" in _one_line(result.output)
    policy_file.unlink()
    result = CliRunner().invoke(main, ["approve", "p.json", "--yes"], env=env)
    assert result.exit_code == 2 and f"no remediation policy at {policy_file}" in _one_line(result.output)


def test_approve_shows_asks_and_signs(
    env: dict[str, str], tmp_path: Path, plan: Plan, keys: Any, policy: Policy, audit: AuditLog
) -> None:
    path = tmp_path / "plans" / "p.json"
    request_plan(plan, path, keys.signer("alice"), policy, audit)
    result = CliRunner().invoke(main, ["approve", str(path), "--yes"], env=env)  # alice, her own plan
    assert result.exit_code == 2 and "alice requested this plan and cannot approve it" in result.output
    result = CliRunner().invoke(main, ["remediate", "apply", str(path)], env=env)
    assert (
        result.exit_code == 2 and "not approved" in result.output and "nothing was changed" in result.output
    )
    bob = dict(env, COLLECTOR_SIGNING_KEY=str(keys.key("bob")))
    result = CliRunner().invoke(main, ["approve", str(path)], env=bob, input="")
    assert result.exit_code == 2 and "pass --yes to approve from a script" in result.output
    assert len(json.loads(path.read_text())["statements"]) == 1
    result = CliRunner().invoke(main, ["approve", str(path), "--yes", "--as", "bob"], env=bob)
    assert result.exit_code == 0, result.output
    assert "action    pool-resize" in result.output and "+DATABASE_POOL_SIZE=20" in result.output
    assert (
        "bundle    none given" in result.output and "approved  by bob (verified key) until" in result.output
    )
    carol = dict(env, COLLECTOR_SIGNING_KEY=str(keys.key("carol")))
    result = CliRunner().invoke(
        main, ["approve", str(path), "--yes", "--break-glass", "pager storm"], env=carol
    )
    assert result.exit_code == 0 and "BREAK-GLASS" in result.output and "pager storm" in result.output
    events = [r["event"] for r in audit.records()]
    assert events == ["plan", "approve-refused", "apply-refused", "approve", "approve", "break-glass"]


def test_audit_verify_head_expect_and_bad_lines(env: dict[str, str], policy: Policy, audit: AuditLog) -> None:
    for n in range(3):
        audit.append("verify", actor="alice", n=n)
    result = CliRunner().invoke(main, ["audit", "verify"], env=env)
    assert result.exit_code == 0, result.output
    assert "3 record(s), chain intact, 0 signature(s) verified" in result.output
    head = result.output.split("head ")[-1].strip()
    assert CliRunner().invoke(main, ["audit", "verify", "--expect", head], env=env).exit_code == 0
    lines = audit.path.read_text().splitlines()
    audit.path.write_text("\n".join(lines[:2]) + "\n")
    result = CliRunner().invoke(main, ["audit", "verify", "--expect", head], env=env)
    assert result.exit_code == 1 and "is not in the log: its tail was cut off" in result.output
    with open(audit.path, "a") as fh:
        fh.write("[1, 2]\n")
    result = CliRunner().invoke(main, ["audit", "verify"], env=env)
    assert result.exit_code == 2 and "line 3 is valid JSON but not an audit record" in _one_line(
        result.output
    )
    result = CliRunner().invoke(main, ["audit", "verify", "--expect", "nonsense"], env=env)
    assert result.exit_code == 2 and "is not an audit head" in _one_line(result.output)


def test_verify_rejects_a_bad_window(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["verify", "--hosts", "app", "--window", "soon"], env=env)
    assert result.exit_code == 2 and "--window" in result.output


def test_an_unsigned_plan_is_requested_then_approved(
    env: dict[str, str], tmp_path: Path, plan: Plan, audit: AuditLog
) -> None:
    from collector.remediate.plan import save_plan

    path = save_plan(plan, tmp_path / "plans" / "unsigned.json")  # as `collector serve` leaves it
    result = CliRunner().invoke(main, ["remediate", "request", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert "requester alice" in result.output and json.loads(path.read_text())["requester"] == "alice"
    again = CliRunner().invoke(main, ["remediate", "request", str(path)], env=env)
    assert again.exit_code == 2 and "already requested by alice" in _one_line(again.output)
    assert [r["event"] for r in audit.records()] == ["plan"]
