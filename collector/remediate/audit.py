"""The audit log: append-only JSON lines, hash-chained, signed where a person acts, checkpointed outside the
file.

Each record carries the hash of the record before it, so an edit, a removal or a reordering breaks the
chain at that record. Records a person makes carry their SSH-signed statement (request, approval,
apply, and the apply's closing statement that vouches for every record of that run by hash), so a
whole log rewritten with a recomputed chain still fails on the signatures. After each append the
chain head (`SEQ:HASH`) is checkpointed outside the file: to the controller's journal or syslog when
one listens, and always to the policy's root-only checkpoint file; `verify` compares the log with the
last checkpoint (and with `--expect HEAD`), which catches a cut-off tail.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.core import Signed, UsageError, canonical_json, utcnow

GENESIS = "0" * 64
SCHEMA = "incident-collector/audit/v1"
SYSLOG_ID = "incident-collector-audit"
_JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
_SYSLOG_SOCKET = Path("/dev/log")


class NotARecord(UsageError):
    """A line of the audit log is valid JSON but not an audit record: one line naming it, exit 2."""


def record_hash(record: dict[str, Any]) -> str:
    """The sha256 of a record's canonical JSON, without its own `hash` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def head_text(seq: int, digest: str) -> str:
    return f"{seq}:{digest}"


def parse_head(text: str) -> tuple[int | None, str]:
    """`SEQ:HASH` or a bare HASH → (seq or None, hash); anything else → UsageError."""
    seq_text, sep, digest = text.strip().rpartition(":")
    if not sep:
        seq_text, digest = "", text.strip()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UsageError(
            f"--expect {text!r} is not an audit head (SEQ:HASH as printed by `collector audit verify`)"
        )
    if seq_text and not seq_text.isdigit():
        raise UsageError(f"--expect {text!r}: {seq_text!r} is not a record number")
    return (int(seq_text) if seq_text else None), digest


@dataclass(frozen=True)
class ChainCheck:
    """The outcome of verifying the log: `first_bad` is a 1-based line number, or None."""

    ok: bool
    records: int
    first_bad: int | None = None
    reason: str = ""
    last_hash: str = GENESIS
    torn: tuple[int, ...] = ()  # lines that are not JSON (an interrupted write); reported, skipped
    signed: int = 0  # signatures checked
    checkpoint: str | None = None  # the head the checkpoint file last recorded for this log

    @property
    def head(self) -> str:
        return head_text(self.records, self.last_hash)


def _is_record(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and doc.get("schema") == SCHEMA
        and isinstance(doc.get("seq"), int)
        and isinstance(doc.get("event"), str)
        and isinstance(doc.get("hash"), str)
    )


def _owner_only(fd: int) -> None:
    """A log of ours that an older version (or a hand) left readable by others is tightened to 0600.

    Only the file: its folder may be a shared one the policy names (/var/log), which is not ours to change.
    """
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077:
        os.fchmod(fd, 0o600)


class AuditLog:
    """One audit log file; appends are serialised with an exclusive lock on the file."""

    def __init__(self, path: str | Path, checkpoint_file: str | Path | None = None) -> None:
        self.path = Path(path)
        self.checkpoint_file = Path(checkpoint_file) if checkpoint_file else None

    # ---- reading -----------------------------------------------------------------------------------------
    def lines(self) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
        """(line number, record or None when the line is torn, raw line) for every non-empty line."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    yield lineno, None, line
                    continue
                if not _is_record(doc):
                    raise NotARecord(
                        f"audit log {self.path} line {lineno} is valid JSON but not an audit record"
                    )
                yield lineno, doc, line

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, oldest first (torn lines skipped; verify() is the place that judges them)."""
        for _, record, _ in self.lines():
            if record is not None:
                yield record

    def head(self) -> str:
        """`SEQ:HASH` of the last record (0:GENESIS for an empty log)."""
        last: dict[str, Any] | None = None
        for record in self.records():
            last = record
        return head_text(int(last["seq"]), str(last["hash"])) if last else head_text(0, GENESIS)

    # ---- writing -----------------------------------------------------------------------------------------
    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record (fields must already be redacted), checkpoint the new head, return the record."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        _owner_only(fd)
        with os.fdopen(fd, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            prev, seq, ends_clean = GENESIS, 0, True
            for line in handle:
                ends_clean = line.endswith("\n")
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line: reported by verify, skipped by the chain
                if _is_record(doc):
                    prev, seq = str(doc["hash"]), int(doc["seq"])
            record: dict[str, Any] = {"schema": SCHEMA, "seq": seq + 1, "time": utcnow(), "event": event}
            record.update(fields)
            record["prev"] = prev
            record["hash"] = record_hash(record)
            # A torn last line (disk full, kill) never glues onto the next record.
            text = (
                ("" if ends_clean else "\n") + json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
            )
            handle.seek(0, os.SEEK_END)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
            self._checkpoint(head_text(record["seq"], record["hash"]))
        return record

    def _checkpoint(self, head: str) -> None:
        """The head outside the file: journal or syslog when one listens, and the root-only checkpoint
        file."""
        line = f"audit head {head} log={self.path.resolve()}"
        # The record is already written: a journal or syslog that fails or hangs costs that copy only,
        # never the checkpoint file nor a traceback after a done append.
        try:
            if _JOURNAL_SOCKET.exists() and shutil.which("systemd-cat"):
                subprocess.run(
                    ["systemd-cat", "-t", SYSLOG_ID], input=line, text=True, check=False, timeout=10
                )
            elif _SYSLOG_SOCKET.exists() and shutil.which("logger"):
                subprocess.run(["logger", "-t", SYSLOG_ID, "--", line], check=False, timeout=10)
        except (OSError, subprocess.SubprocessError):
            pass
        if self.checkpoint_file is None:
            return
        self.checkpoint_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.checkpoint_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _owner_only(fd)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(f"{utcnow()} {line}\n")

    def checkpoints(self) -> list[str]:
        """Every head checkpointed for this log, oldest first ([] when the file has none or can't be read)."""
        if self.checkpoint_file is None or not self.checkpoint_file.exists():
            return []
        me, found = f"log={self.path.resolve()}", []
        try:
            with open(self.checkpoint_file, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    words = line.split()
                    if len(words) >= 5 and words[1:3] == ["audit", "head"] and words[4] == me:
                        found.append(words[3])
        except OSError:
            return []
        return found

    def last_checkpoint(self) -> str | None:
        found = self.checkpoints()
        return found[-1] if found else None

    # ---- verifying ---------------------------------------------------------------------------------------
    def verify(
        self, *, verifier: Any = None, expect: str | None = None, signatures_of: str | None = None
    ) -> ChainCheck:
        """Walk the chain, check signatures (when given a Verifier), compare the head with checkpoints.

        Reports the first record that is edited, out of place, wrongly signed, or a tail that is gone.
        A torn line is reported in `torn` and skipped. A JSON line that is not a record raises NotARecord.
        `signatures_of` (a plan hash) checks only that plan's signatures: each costs ~10 ms of ssh-keygen, so
        apply checks the records that authorise it and `collector audit verify` checks them all.
        """
        prev, count, signed = GENESIS, 0, 0
        torn: list[int] = []
        by_hash: dict[str, dict[str, Any]] = {}
        seen: list[tuple[int, dict[str, Any]]] = []
        kept = self.checkpoints()
        checkpoint = kept[-1] if kept else None

        def bad(lineno: int, reason: str) -> ChainCheck:
            return ChainCheck(False, count, lineno, reason, prev, tuple(torn), signed, checkpoint)

        for lineno, record, _ in self.lines():
            if record is None:
                torn.append(lineno)
                continue
            count += 1
            if record.get("hash") != record_hash(record):
                return bad(lineno, "record edited: its hash does not match its content")
            if record.get("prev") != prev:
                return bad(
                    lineno, "chain broken: prev does not match the record before (removed or reordered)"
                )
            if record.get("seq") != count:
                return bad(lineno, f"sequence {record.get('seq')} where {count} was expected")
            prev = str(record["hash"])
            by_hash[prev] = record
            seen.append((lineno, record))
        if verifier is not None:
            for lineno, record in seen:
                if signatures_of is not None and record.get("plan_hash") != signatures_of:
                    continue
                problem = _signature_problem(record, verifier, by_hash)
                if problem:
                    count = int(record["seq"])
                    return bad(lineno, problem)
                signed += 1 if record.get("signed") else 0
        # Every head ever checkpointed must still be in the log: a cut tail, or a cut tail with new records
        # appended after it, or a rewritten log all lose one.
        seqs = {int(r["seq"]): str(r["hash"]) for r in by_hash.values()}
        wanted = [(h, f"checkpoint {self.checkpoint_file}") for h in kept] + (
            [(expect, "--expect")] if expect else []
        )
        for head, source in wanted:
            seq, digest = parse_head(head)
            present = seqs.get(seq) == digest if seq is not None else digest in by_hash
            if not present:
                return ChainCheck(
                    False,
                    count,
                    None,
                    f"head {head} ({source}) is not in the log: its tail was cut "
                    "off or the whole log rewritten",
                    prev,
                    tuple(torn),
                    signed,
                    checkpoint,
                )
        return ChainCheck(True, count, None, "", prev, tuple(torn), signed, checkpoint)

    # ---- questions apply asks ----------------------------------------------------------------------------
    def last_restart(self, host: str) -> str | None:
        """When the tool last restarted `host` (ISO time), read from the apply records."""
        last: str | None = None
        for record in self.records():
            if record.get("event") == "apply-host" and record.get("host") == host and record.get("restarted"):
                last = record.get("time")
        return last

    def approvals(self, plan_hash: str) -> list[dict[str, Any]]:
        """The approval records for one plan hash."""
        return [r for r in self.records() if r.get("event") == "approve" and r.get("plan_hash") == plan_hash]

    def consumed(self, approval_digest: str) -> dict[str, Any] | None:
        """The apply-start record that used this approval, if any (an approval authorises one apply)."""
        return next(
            (
                r
                for r in self.records()
                if r.get("event") == "apply-start" and r.get("approval") == approval_digest
            ),
            None,
        )

    def dangling(self) -> list[dict[str, Any]]:
        """apply-start records with no outcome recorded (finished, interrupted, or found dangling before)."""
        starts: dict[str, dict[str, Any]] = {}
        for record in self.records():
            run = record.get("run")
            if not run:
                continue
            if record.get("event") == "apply-start":
                starts[str(run)] = record
            elif record.get("event") in ("apply-finish", "apply-interrupted", "apply-dangling"):
                starts.pop(str(run), None)
        return list(starts.values())


def _signature_problem(
    record: dict[str, Any], verifier: Any, by_hash: dict[str, dict[str, Any]]
) -> str | None:
    raw = record.get("signed")
    if not raw:
        if record.get("event") in ("plan", "approve", "break-glass", "apply-start", "apply-finish"):
            return f"{record.get('event')} record carries no signature"
        return None
    try:
        signed = Signed.from_dict(raw, "audit record statement")
        principal = verifier.principal(signed.statement.message(), signed.signature)
    except UsageError as exc:
        return f"signature does not verify: {exc}"
    if principal != record.get("actor"):
        return f"record names actor {record.get('actor')!r} but {principal!r} signed it"
    if signed.statement.plan_hash != record.get("plan_hash"):
        return "the signed statement is for another plan hash"
    for covered in signed.statement.records:
        target = by_hash.get(covered)
        if target is None or target.get("run") != record.get("run"):
            return f"a record this apply vouched for ({covered[:12]}…) is missing or was changed"
    return None
