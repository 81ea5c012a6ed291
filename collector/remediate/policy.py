"""The remediation policy: who may request, approve, apply and break glass, and the safety limits.

It is read from one fixed system path (POLICY_PATH; change it only here, at build time), never from the
caller's environment or working directory. Run as root, the tool refuses a policy or allowed_signers
file that is not root-owned or that group or others can write (as sudo does with sudoers). Settings from
the environment or ./collector.yml may tighten a limit here, never loosen it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from collector.config import Settings
from collector.core import UsageError

POLICY_PATH = "/etc/incident-collector/policy.yml"
DEFAULT_AUDIT_LOG = "/var/lib/incident-collector/audit/audit.jsonl"
DEFAULT_CHECKPOINTS = "/var/log/incident-collector/audit-head.log"


class PolicyError(UsageError):
    """The policy (or a file it names) is missing, malformed or not safely owned: one line, exit 2."""


@dataclass(frozen=True)
class Limits:
    """The safety limits in force for one command: the policy's, tightened by settings."""

    approval_ttl_s: float
    blast_radius: int
    max_hosts: int
    batch_size: int
    restart_min_interval_s: float


@dataclass(frozen=True)
class Policy:
    """One parsed policy file (see README: Policy)."""

    path: str
    allowed_signers: str
    audit_log: str = DEFAULT_AUDIT_LOG
    checkpoint_file: str = DEFAULT_CHECKPOINTS
    requesters: tuple[str, ...] = ()
    approvers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # action (or "*") -> principals
    appliers: tuple[str, ...] | None = None  # None: anyone who may request or approve
    break_glass: tuple[str, ...] = ()
    approval_ttl_s: float = 3600.0
    blast_radius: int = 10
    max_hosts: int = 50  # the most --max-hosts may raise blast_radius to
    batch_size: int = 1
    restart_min_interval_s: float = 60.0
    playbooks_dir: str | None = None  # None: the playbooks shipped with the tool

    def may_request(self, principal: str) -> bool:
        return principal in self.requesters

    def approvers_for(self, action: str) -> tuple[str, ...]:
        return tuple(self.approvers.get(action, ())) + tuple(self.approvers.get("*", ()))

    def may_approve(self, principal: str, action: str) -> bool:
        return principal in self.approvers_for(action)

    def may_apply(self, principal: str) -> bool:
        if self.appliers is not None:
            return principal in self.appliers
        everyone = set(self.requesters) | {p for names in self.approvers.values() for p in names}
        return principal in everyone

    def may_break_glass(self, principal: str) -> bool:
        return principal in self.break_glass

    def limits(self, settings: Settings | None = None) -> Limits:
        """The policy's limits; a setting given in the environment or config file only tightens one."""
        s = settings or Settings()
        ttl = (
            self.approval_ttl_s
            if s.approval_ttl_s is None
            else min(self.approval_ttl_s, float(s.approval_ttl_s))
        )
        radius = self.blast_radius if s.blast_radius is None else min(self.blast_radius, int(s.blast_radius))
        batch = self.batch_size if s.batch_size is None else max(1, min(self.batch_size, int(s.batch_size)))
        interval = (
            self.restart_min_interval_s
            if s.restart_min_interval_s is None
            else max(self.restart_min_interval_s, float(s.restart_min_interval_s))
        )
        return Limits(
            approval_ttl_s=max(0.0, ttl),
            blast_radius=max(0, radius),
            max_hosts=self.max_hosts,
            batch_size=batch,
            restart_min_interval_s=interval,
        )

    def signers_path(self) -> Path:
        return Path(self.allowed_signers)


def check_owner(path: Path, what: str, *, as_root: bool | None = None) -> None:
    """Refuse a file others could have written: group/world-writable always; not root-owned when run as
    root."""
    root = os.geteuid() == 0 if as_root is None else as_root
    try:
        info = path.stat()
    except FileNotFoundError:
        raise PolicyError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise PolicyError(f"{what} {path} is unreadable: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise PolicyError(f"{what} {path} is not a regular file")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PolicyError(
            f"{what} {path} is group- or world-writable (mode {stat.S_IMODE(info.st_mode):04o}); "
            "refusing it: chmod go-w"
        )
    if root and info.st_uid != 0:
        raise PolicyError(
            f"{what} {path} is owned by uid {info.st_uid}, not root; refusing it while running as root"
        )
    parent = path.parent.stat()
    if parent.st_mode & stat.S_IWOTH and not parent.st_mode & stat.S_ISVTX:
        raise PolicyError(
            f"{what} {path} is in a world-writable folder {path.parent}; anyone could replace it"
        )
    if root and parent.st_uid != 0 and parent.st_mode & stat.S_IWUSR:
        raise PolicyError(f"{what} {path} is in a folder owned by uid {parent.st_uid}, not root; refusing it")


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PolicyError(f"{where} must be a list of principal names")
    return tuple(v.strip() for v in value)


_NUMBERS: dict[str, type] = {
    "approval_ttl_s": float,
    "blast_radius": int,
    "max_hosts": int,
    "batch_size": int,
    "restart_min_interval_s": float,
}
_TEXTS = ("allowed_signers", "audit_log", "checkpoint_file", "playbooks_dir")
_KNOWN = set(_NUMBERS) | set(_TEXTS) | {"requesters", "approvers", "appliers", "break_glass"}


def parse_policy(doc: Any, path: str) -> Policy:
    """A Policy from the parsed YAML; PolicyError naming the file and the field on anything wrong."""
    if not isinstance(doc, dict):
        raise PolicyError(f"policy {path} must be a YAML mapping")
    unknown = sorted(set(doc) - _KNOWN)
    if unknown:
        raise PolicyError(f"policy {path}: unknown field {unknown[0]!r}")
    if not doc.get("allowed_signers"):
        raise PolicyError(
            f"policy {path}: allowed_signers (path of an OpenSSH allowed_signers file) is required"
        )
    values: dict[str, Any] = {"path": path}
    for name in _TEXTS:
        if doc.get(name) is not None:
            if not isinstance(doc[name], str) or not os.path.isabs(doc[name]):
                raise PolicyError(f"policy {path}: {name} must be an absolute path")
            values[name] = doc[name]
    for name, kind in _NUMBERS.items():
        if name in doc:
            raw = doc[name]
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0:
                raise PolicyError(f"policy {path}: {name} must be a number >= 0, got {raw!r}")
            values[name] = kind(raw)
    values["requesters"] = _names(doc.get("requesters"), f"policy {path}: requesters")
    values["break_glass"] = _names(doc.get("break_glass"), f"policy {path}: break_glass")
    if doc.get("appliers") is not None:
        values["appliers"] = _names(doc["appliers"], f"policy {path}: appliers")
    approvers = doc.get("approvers") or {}
    if isinstance(approvers, list):  # a plain list approves every action
        approvers = {"*": approvers}
    if not isinstance(approvers, dict):
        raise PolicyError(f"policy {path}: approvers must map an action (or '*') to principal names")
    values["approvers"] = {str(k): _names(v, f"policy {path}: approvers.{k}") for k, v in approvers.items()}
    if values.get("batch_size", 1) < 1:
        raise PolicyError(f"policy {path}: batch_size must be at least 1")
    return Policy(**values)


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and check the policy at the fixed system path (or `path`, for tests and tools that pass one)."""
    file = Path(path or POLICY_PATH)
    if not file.exists():
        raise PolicyError(
            f"no remediation policy at {file}: plans, approvals and applies need one "
            "(README: Policy; the lab writes one with `collector-lab up`)"
        )
    check_owner(file, "policy")
    try:
        doc = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise PolicyError(f"policy {file} is unreadable: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy {file} is not valid YAML: {' '.join(str(exc).split())[:200]}") from None
    policy = parse_policy(doc, str(file))
    check_owner(Path(policy.allowed_signers), "allowed_signers")
    return policy
