"""The lab's people: SSH keys, an allowed_signers file and a remediation policy, in the lab state dir.

alice requests, bob approves, carol may break glass (and approve), mallory has a key nobody listed.
The policy is also installed at the tool's fixed system path when none is there, or when the one
there is an earlier lab's (marked by LAB_MARK): on a production controller nothing is overwritten.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml
from collector.config import Settings
from collector.remediate import policy as product_policy
from collector.remediate.signing import NAMESPACE

from collector_lab import lab_dir

REQUESTER, APPROVER, BREAK_GLASS, UNLISTED = "alice", "bob", "carol", "mallory"
PEOPLE = (REQUESTER, APPROVER, BREAK_GLASS)
LAB_MARK = "# Written by collector-lab (the lab's demo identities). Replace it with your own policy."


@dataclass(frozen=True)
class LabSigners:
    """Where the lab's keys and policy are."""

    folder: Path
    allowed_signers: Path
    policy_file: Path
    installed: bool  # the policy is the one at the system path

    def key(self, name: str) -> Path:
        return self.folder / name


def lab_policy(folder: Path) -> dict[str, object]:
    """The lab's policy. restart_min_interval_s is 0 because the tests restart the app back to back."""
    return {
        "allowed_signers": str(folder / "allowed_signers"),
        "audit_log": product_policy.DEFAULT_AUDIT_LOG,
        "checkpoint_file": product_policy.DEFAULT_CHECKPOINTS,
        "requesters": list(PEOPLE),
        "approvers": {"*": [APPROVER, BREAK_GLASS]},
        "break_glass": [BREAK_GLASS],
        "approval_ttl_s": 3600,
        "blast_radius": 10,
        "max_hosts": 120,
        "batch_size": 5,
        "restart_min_interval_s": 0,
    }


def _write(path: Path, text: str, mode: int) -> None:
    """Atomically, and only when the content differs (test sessions of several people call ensure() at
    once)."""
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure(settings: Settings | None = None, *, install: bool = True) -> LabSigners:
    """Create what is missing (keys are kept across runs) and return where it is."""
    folder = lab_dir(settings) / "signers"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o755)  # allowed_signers and the policy are read by everyone; the keys are 0600
    lines = []
    for name in (*PEOPLE, UNLISTED):
        key = folder / name
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@lab", "-f", str(key)],
                check=True,
                capture_output=True,
            )
        if name != UNLISTED:
            kind, blob = (folder / f"{name}.pub").read_text().split()[:2]
            lines.append(f'{name} namespaces="{NAMESPACE}" {kind} {blob}')
    _write(folder / "allowed_signers", "\n".join(lines) + "\n", 0o644)
    text = LAB_MARK + "\n" + yaml.safe_dump(lab_policy(folder), sort_keys=False)
    policy_file = folder / "policy.yml"
    _write(policy_file, text, 0o644)
    system = Path(product_policy.POLICY_PATH)
    installed = False
    if install:
        current = system.read_text() if system.exists() else None
        if current is None or current.startswith(LAB_MARK):
            system.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            _write(system, text, 0o644)
            installed = True
    return LabSigners(folder, folder / "allowed_signers", policy_file, installed)


def key_path(name: str, settings: Settings | None = None) -> Path:
    """The lab key of `name` (made by ensure())."""
    return lab_dir(settings) / "signers" / name
