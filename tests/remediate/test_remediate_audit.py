"""The audit log: hash chain, tamper detection (edit, delete, reorder, garbage), restart history."""
from __future__ import annotations

import json
from pathlib import Path

from collector.remediate.audit import GENESIS, AuditLog, record_hash


def _log(tmp_path: Path, n: int = 4) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(n):
        log.append("apply-host", actor="alice", host=f"app{i}", restarted=True, status="changed")
    return log


def test_chain_links_every_record(tmp_path: Path) -> None:
    log = _log(tmp_path)
    records = list(log.records())
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(records, records[1:]))
    assert all(r["hash"] == record_hash(r) for r in records)
    check = log.verify()
    assert check.ok and check.records == 4 and check.last_hash == records[-1]["hash"]


def test_an_edited_record_is_named(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = log.path.read_text().splitlines()
    record = json.loads(lines[2])
    record["actor"] = "mallory"
    lines[2] = json.dumps(record, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    check = log.verify()
    assert not check.ok and check.first_bad == 3 and "edited" in check.reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = log.path.read_text().splitlines()
    record = json.loads(lines[1])
    record["status"] = "ok"
    record["hash"] = record_hash(record)
    lines[1] = json.dumps(record, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    check = log.verify()
    assert not check.ok and check.first_bad == 3 and "chain broken" in check.reason


def test_a_removed_or_reordered_record_is_seen(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert log.verify().first_bad == 2
    log.path.write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")
    assert log.verify().first_bad == 2


def test_garbage_is_reported_and_appends_continue_the_chain(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    with open(log.path, "a") as fh:
        fh.write("not json\n")
    check = log.verify()
    assert not check.ok and check.first_bad == 3 and "JSON" in check.reason


def test_last_restart_reads_apply_records(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    log.append("apply-host", host="app1", restarted=False)
    assert log.last_restart("app1") is not None
    assert log.last_restart("app9") is None
    assert AuditLog(tmp_path / "none.jsonl").verify().ok
