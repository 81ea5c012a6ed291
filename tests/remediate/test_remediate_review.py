"""Gaps found reviewing issues 13 and 14: a key behind a folder the caller may not enter is one line; the
audit log's journal checkpoint degrades to the checkpoint file when journald is gone or its client breaks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import collector.remediate.audit as audit_mod
from collector.remediate.audit import AuditLog

NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to nobody")
def test_a_key_the_caller_cannot_reach_is_one_line() -> None:
    # Not tmp_path: pytest's root folder is 0700, so nobody could reach neither key.
    tmp_path = Path(tempfile.mkdtemp(prefix="collector-keytest-"))
    try:
        _check_keys(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _check_keys(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)  # root's: nobody may not enter it
    (closed / "id_ed25519").write_text("key\n")
    unreadable = tmp_path / "open" / "id_ed25519"
    unreadable.parent.mkdir(mode=0o755)
    unreadable.write_text("key\n")
    unreadable.chmod(0o600)
    os.chmod(tmp_path, 0o755)  # nobody reaches open/ but not closed/
    code = (
        "import sys\n"
        "from collector.remediate.signing import SignatureError, signer_for\n"
        "try:\n"
        "    signer_for(sys.argv[1])\n"
        "except SignatureError as exc:\n"
        "    print(exc)\n"
    )
    for key, message in (
        (closed / "id_ed25519", "is not readable (a folder on its path is closed to you)"),
        (unreadable, "is not readable"),
    ):
        proc = subprocess.run(
            [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
                str(key),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd="/",
        )
        assert "Traceback" not in proc.stderr, proc.stderr[-1500:]
        assert proc.stdout.strip() == f"signing key {key} {message}", proc.stdout + proc.stderr[-500:]


def test_a_gone_or_broken_journal_still_checkpoints_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = tmp_path / "journal.socket"
    socket.touch()  # journald's socket path exists, journald does not: the real systemd-cat fails
    monkeypatch.setattr(audit_mod, "_JOURNAL_SOCKET", socket)
    log = AuditLog(tmp_path / "audit.jsonl", tmp_path / "checkpoints.log")
    first = log.append("verify", actor="alice")
    assert log.checkpoints() == [f"{first['seq']}:{first['hash']}"]
    # A journal client that cannot even start (not an executable: ENOEXEC) is not a traceback either.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    broken = bin_dir / "systemd-cat"
    broken.write_bytes(b"\x7fELF not really")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))  # alone: exec would fall through to the real one
    second = log.append("verify", actor="alice")
    assert log.checkpoints()[-1] == f"{second['seq']}:{second['hash']}"
    assert [r["seq"] for r in log.records()] == [1, 2]


def test_an_audit_log_left_readable_by_an_older_version_is_tightened(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", tmp_path / "checkpoints.log")
    log.append("verify", actor="alice")
    for path in (log.path, tmp_path / "checkpoints.log"):
        path.chmod(0o644)  # as main wrote them before issue 14
    log.append("verify", actor="alice")
    assert [oct(p.stat().st_mode & 0o777) for p in (log.path, tmp_path / "checkpoints.log")] == ["0o600"] * 2


def test_the_audit_head_of_an_apply_reaches_actions_json_the_reports_and_the_ticket_note(
    tmp_path: Path,
) -> None:
    from collector.bundle import write_bundle
    from collector.config import Settings
    from collector.core import ActionRecord, HostResult, ProbeResult, RunResult
    from collector.remediate.apply import _render_reports, write_actions

    started = "2026-11-28T05:00:00.000Z"
    probe = ProbeResult("app1", "uptime", "uptime", "ok", 0, started, 0.1, b"up\n", bytes=3)
    run = RunResult(
        "",
        "prod",
        "inv",
        "ssh",
        [],
        started,
        finished=started,
        hosts={"app1": HostResult("app1", "ok", None, [probe], ("app",))},
    )
    folder = write_bundle(run, Settings(), out_dir=tmp_path / "bundles")
    head = "12:" + "ab" * 32
    record = ActionRecord(
        action="restart",
        params={},
        plan_id="p-1",
        plan_hash="h" * 64,
        requester="alice",
        requested=started,
        approver="bob",
        approved=started,
        break_glass=None,
        applier="alice",
        applied_started=started,
        applied_finished=started,
        hosts={"app1": {"status": "changed", "changed": True, "msg": ""}},
        stopped=None,
        verify={"passed": True, "checks": []},
        audit_head=head,
    ).to_dict()
    notes: list[str] = []
    write_actions(str(folder), record, notes)
    _render_reports(str(folder), notes)
    assert notes == []
    for name in ("actions.json", "report.md", "report.html", "TICKET.md"):  # TICKET.md is attach's note
        assert head in (folder / name).read_text(), name
