"""Bad input to remediate/approve/verify/audit: one clear line, exit 2, nothing planned or written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.remediate.audit import AuditLog


@pytest.fixture()
def env(tmp_path: Path, inventory_file: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"COLLECTOR_PLANS_DIR": str(tmp_path / "plans"), "COLLECTOR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
              "COLLECTOR_INVENTORY": str(inventory_file), "COLLECTOR_CONFIG": ""}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COLLECTOR_CONFIG", raising=False)
    return {k: v for k, v in values.items() if v}


@pytest.mark.parametrize(("args", "message"), [
    (["remediate", "reboot", "--hosts", "app"], "unknown action 'reboot'"),
    (["remediate", "pool-resize", "--hosts", "app", "--param", "size=lots"], "must be a whole number"),
    (["remediate", "pool-resize", "--hosts", "app"], "parameter size is required"),
    (["remediate", "pool-resize", "--hosts", "nosuch*", "--param", "size=5"], "matches no host"),
    (["remediate", "kill-idle-connections", "--hosts", "app"], "matches none of them"),
    (["remediate", "restart", "--hosts", "app", "--param", "x=1"], "takes no parameters"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(args: list[str], message: str, env: dict[str, str],
                                                          tmp_path: Path) -> None:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([ln for ln in result.output.splitlines() if ln.strip()]) == 1
    assert not (tmp_path / "plans").exists() and not (tmp_path / "audit.jsonl").exists()


def test_approve_and_apply_refusals_exit_2(env: dict[str, str], tmp_path: Path, plan) -> None:  # type: ignore[no-untyped-def]
    from collector.remediate.plan import save_plan

    path = save_plan(plan, tmp_path / "plans" / "p.json")
    result = CliRunner().invoke(main, ["approve", str(path), "--as", "alice"], env=env)
    assert result.exit_code == 2 and "cannot approve it" in result.output
    result = CliRunner().invoke(main, ["remediate", "apply", str(path)], env=env)
    assert result.exit_code == 2 and "not approved" in result.output and "nothing was changed" in result.output
    result = CliRunner().invoke(main, ["approve", str(path), "--as", "alice", "--break-glass", "pager storm"], env=env)
    assert result.exit_code == 0, result.output
    assert "BREAK-GLASS" in result.output and "pager storm" in result.output
    assert json.loads(path.read_text())["approval"]["break_glass"] == "pager storm"


def test_audit_verify_reports_the_first_edited_record(env: dict[str, str], tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for n in range(3):
        log.append("plan", actor="alice", n=n)
    result = CliRunner().invoke(main, ["audit", "verify"], env=env)
    assert result.exit_code == 0 and "3 record(s), chain intact" in result.output
    lines = log.path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["n"] = 7
    lines[1] = json.dumps(edited, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["audit", "verify", "--log", str(log.path)], env=env)
    assert result.exit_code == 1 and "BROKEN at record 2 (line 2)" in result.output


def test_verify_rejects_a_bad_window(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["verify", "--hosts", "app", "--window", "soon"], env=env)
    assert result.exit_code == 2 and "--window" in result.output
