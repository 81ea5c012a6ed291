"""The audit log: hash chain, signatures, checkpoints; edit, removal, reorder, tail cut, recomputed rewrite,
torn lines, lines that are not records, dangling applies."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from collector.remediate.apply import record_dangling
from collector.remediate.approve import approve_plan
from collector.remediate.audit import GENESIS, AuditLog, NotARecord, record_hash
from collector.remediate.policy import Policy
from collector.remediate.signing import Verifier


def _log(tmp_path: Path, n: int = 4) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl", tmp_path / "checkpoints.log")
    for i in range(n):
        log.append("apply-host", actor="alice", host=f"app{i}", restarted=True, status="changed")
    return log


def _rewrite(log: AuditLog, records: list[dict[str, Any]]) -> None:
    """Recompute the whole chain over edited records, as someone with write access would."""
    prev, lines = GENESIS, []
    for seq, record in enumerate(records, start=1):
        record = dict(record, seq=seq, prev=prev)
        record["hash"] = record_hash(record)
        prev = record["hash"]
        lines.append(json.dumps(record, sort_keys=True))
    log.path.write_text("\n".join(lines) + "\n")


def test_chain_links_every_record_and_checkpoints_its_head(tmp_path: Path) -> None:
    log = _log(tmp_path)
    records = list(log.records())
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    check = log.verify()
    assert check.ok and check.records == 4 and check.head == f"4:{records[-1]['hash']}"
    assert log.last_checkpoint() == check.head
    assert f"audit head {check.head} log={log.path.resolve()}" in (tmp_path / "checkpoints.log").read_text()
    assert (tmp_path / "checkpoints.log").stat().st_mode & 0o777 == 0o600


def test_an_edited_record_is_named(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = log.path.read_text().splitlines()
    record = json.loads(lines[2])
    record["actor"] = "mallory"
    lines[2] = json.dumps(record, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    check = log.verify()
    assert not check.ok and check.first_bad == 3 and "edited" in check.reason


def test_a_removed_or_reordered_record_is_seen(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert log.verify().first_bad == 2
    log.path.write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")
    assert log.verify().first_bad == 2


def test_a_cut_tail_is_caught_by_the_checkpoint_and_by_expect(tmp_path: Path) -> None:
    log = _log(tmp_path)
    head = log.verify().head
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:2]) + "\n")
    check = log.verify()
    assert (
        not check.ok
        and "is not in the log: its tail was cut off" in check.reason
        and "checkpoint" in check.reason
    )
    log.append("plan", actor="mallory")  # new records after the cut do not hide it
    assert not log.verify().ok and "is not in the log" in log.verify().reason
    log.path.write_text("\n".join(lines[:2]) + "\n")
    plain = AuditLog(log.path)  # no checkpoint file at hand: --expect still sees it
    assert plain.verify().ok
    assert "(--expect) is not in the log" in plain.verify(expect=head).reason


def test_a_recomputed_rewrite_is_caught_by_expect_and_by_signatures(
    plan_path: Path, keys: Any, policy: Policy, audit: AuditLog
) -> None:
    approve_plan(plan_path, keys.signer("bob"), policy, audit=audit)
    verifier = Verifier(policy.signers_path())
    head = audit.verify(verifier=verifier).head
    assert audit.verify(verifier=verifier, expect=head).ok and audit.verify(verifier=verifier).signed == 2
    records = list(audit.records())
    records[1]["actor"] = "carol"  # "carol approved", chain recomputed
    records[1]["approver"] = "carol"
    _rewrite(audit, records)
    assert AuditLog(audit.path).verify().ok  # the chain alone is fooled...
    caught = AuditLog(audit.path).verify(verifier=verifier)
    assert (
        not caught.ok and caught.first_bad == 2 and "names actor 'carol' but 'bob' signed it" in caught.reason
    )
    assert "(--expect) is not in the log" in AuditLog(audit.path).verify(expect=head).reason
    # A forged record with no signature at all is named too.
    del records[1]["signed"]
    _rewrite(audit, records)
    assert "approve record carries no signature" in AuditLog(audit.path).verify(verifier=verifier).reason


def test_a_torn_last_line_is_reported_and_the_next_record_starts_on_its_own_line(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    with open(log.path, "a") as fh:
        fh.write('{"schema": "incident-collector/audit/v1", "seq": 3, "ev')  # killed mid-write
    check = log.verify()
    assert check.torn == (3,) and check.ok and check.records == 2
    log.append("plan", actor="alice")
    lines = log.path.read_text().splitlines()
    assert lines[2].endswith('"ev') and json.loads(lines[3])["seq"] == 3
    check = log.verify()
    assert check.ok and check.records == 3 and check.torn == (3,)


def test_json_that_is_not_a_record_is_one_clear_error(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    with open(log.path, "a") as fh:
        fh.write('{"hello": "world"}\n')
    with pytest.raises(
        NotARecord, match=f"audit log {log.path} line 3 is valid JSON but not an audit record"
    ):
        log.verify()


def test_a_dangling_apply_start_is_recorded_once(policy: Policy, audit: AuditLog) -> None:
    audit.append("apply-start", actor="bob", plan_id="p", plan_hash="h" * 64, run="r1", approval="x")
    audit.append("apply-start", actor="bob", plan_id="q", plan_hash="g" * 64, run="r2", approval="y")
    audit.append("apply-finish", actor="bob", plan_id="q", plan_hash="g" * 64, run="r2")
    found = record_dangling(audit, policy)
    assert [f["run"] for f in found] == ["r1"] and found[0]["event"] == "apply-dangling"
    assert record_dangling(audit, policy) == []


def test_last_restart_reads_apply_records(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    log.append("apply-host", host="app1", restarted=False)
    assert log.last_restart("app1") is not None
    assert log.last_restart("app9") is None
    assert AuditLog(tmp_path / "none.jsonl").verify().ok
