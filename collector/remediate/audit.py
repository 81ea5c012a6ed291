"""The audit log: append-only JSON lines, each record carrying the hash of the one before.

Editing, removing or reordering a record breaks the chain at that record, and `verify` names it.
(Cutting records off the end cannot be seen from the file alone; the last hash is printed by
`collector audit verify` so it can be kept elsewhere.)
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.core import utcnow

GENESIS = "0" * 64
SCHEMA = "incident-collector/audit/v1"


def record_hash(record: dict[str, Any]) -> str:
    """The sha256 of a record's canonical JSON, without its own `hash` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    """The outcome of verifying the chain: `first_bad` is a 1-based line number, or None."""

    ok: bool
    records: int
    first_bad: int | None = None
    reason: str = ""
    last_hash: str = GENESIS


class AuditLog:
    """One audit log file; appends are serialised with an exclusive lock on the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record (fields must already be redacted) and return it with its hash."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            prev, seq = GENESIS, 0
            for line in handle:
                if line.strip():
                    seq += 1
                    try:
                        prev = json.loads(line).get("hash", "")
                    except json.JSONDecodeError:
                        prev = hashlib.sha256(line.encode()).hexdigest()
            record: dict[str, Any] = {"schema": SCHEMA, "seq": seq + 1, "time": utcnow(), "event": event}
            record.update(fields)
            record["prev"] = prev
            record["hash"] = record_hash(record)
            handle.seek(0, os.SEEK_END)
            handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return record

    def records(self) -> Iterator[dict[str, Any]]:
        """Every parseable record, oldest first (verify() is the place that judges them)."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def verify(self) -> ChainCheck:
        """Walk the chain and report the first record that is unreadable, edited or out of place."""
        if not self.path.exists():
            return ChainCheck(ok=True, records=0)
        prev, count = GENESIS, 0
        with open(self.path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                count += 1
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return ChainCheck(False, count, lineno, "not valid JSON", prev)
                if not isinstance(record, dict):
                    return ChainCheck(False, count, lineno, "not a JSON object", prev)
                if record.get("hash") != record_hash(record):
                    return ChainCheck(False, count, lineno, "record edited: its hash does not match its content", prev)
                if record.get("prev") != prev:
                    return ChainCheck(
                        False, count, lineno, "chain broken: prev does not match the record before (removed or reordered)", prev
                    )
                if record.get("seq") != count:
                    return ChainCheck(False, count, lineno, f"sequence {record.get('seq')} where {count} was expected", prev)
                prev = record["hash"]
        return ChainCheck(ok=True, records=count, last_hash=prev)

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
