"""SSH signatures for requests, approvals, applies and audit records, through OpenSSH's own ssh-keygen.

A person's identity is their SSH key: `ssh-keygen -Y sign` (a key file, or ssh-agent so hardware
keys work) signs a statement in our own namespace; `ssh-keygen -Y find-principals` + `-Y verify`
check it against the policy's OpenSSH allowed_signers file and give the principal. Names come from
that verified principal, never from a flag.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from collector.core import UsageError

NAMESPACE = "incident-collector"
SIG_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_TIMEOUT_S = 120.0  # a hardware key may wait for a touch


class SignatureError(UsageError):
    """A signature could not be made or does not verify (one line naming the key, file or principal)."""


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if not found:
        raise UsageError("ssh-keygen (OpenSSH) is not installed; signing and verifying need it")
    return found


def _run(
    args: list[str], data: bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            [_ssh_keygen(), *args], input=data, capture_output=True, timeout=_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise SignatureError(f"ssh-keygen {' '.join(args[:2])} timed out after {_TIMEOUT_S:.0f} s") from None


def _last_line(raw: bytes) -> str:
    lines = [ln.strip() for ln in raw.decode(errors="replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Signing data on standard input")]
    return lines[-1] if lines else "no message"


def signature_digest(signature: str) -> str:
    """A short stable name for one signature (what 'consumed' and audit records refer to)."""
    return hashlib.sha256(signature.strip().encode()).hexdigest()


@dataclass(frozen=True)
class Signer:
    """A key to sign with: a private key file, or a public key whose private half ssh-agent holds."""

    key: Path
    agent: bool = False
    label: str = ""

    def sign(self, message: bytes) -> str:
        """The armored SSHSIG signature of `message` in our namespace; SignatureError naming the key."""
        env = dict(os.environ) if self.agent else _env_without_agent()
        done = _run(["-Y", "sign", "-n", NAMESPACE, "-f", str(self.key)], message, env)
        text = done.stdout.decode(errors="replace").strip()
        if done.returncode != 0 or not text.startswith(SIG_BEGIN):
            raise SignatureError(f"signing with {self.label or self.key} failed: {_last_line(done.stderr)}")
        return text + "\n"


def _env_without_agent() -> dict[str, str]:
    # A key file signs with that file only: an agent's other keys must not stand in for it.
    return {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}


def signer_for(key: str | None, *, allowed_signers: Path | None = None) -> Signer:
    """The signer for `--key FILE`, else the first ssh-agent key listed in allowed_signers, else the agent's
    first.

    Missing or unreadable key, no agent, an agent with no key: SignatureError (one line, exit 2).
    """
    if key:
        path = Path(key).expanduser()
        try:
            found = path.is_file()
        except PermissionError:  # a folder on the way we may not enter: is_file() raises, not False
            raise SignatureError(
                f"signing key {path} is not readable (a folder on its path is closed to you)"
            ) from None
        if not found:
            raise SignatureError(f"signing key {path} does not exist")
        if not os.access(path, os.R_OK):
            raise SignatureError(f"signing key {path} is not readable")
        if path.suffix == ".pub":  # the private half is in ssh-agent (or beside it)
            return Signer(path, agent=True, label=str(path))
        return Signer(path, label=str(path))
    sock = os.environ.get("SSH_AUTH_SOCK")
    if not sock:
        raise SignatureError(
            "no signing key: pass --key FILE (an SSH private key, or a .pub whose key is in "
            "ssh-agent) or start ssh-agent with your key (SSH_AUTH_SOCK is not set)"
        )
    listed = subprocess.run(["ssh-add", "-L"], capture_output=True, text=True, timeout=30, check=False)
    keys = [
        ln.strip() for ln in listed.stdout.splitlines() if ln.strip().startswith(("ssh-", "ecdsa-", "sk-"))
    ]
    if listed.returncode != 0 or not keys:
        raise SignatureError(f"ssh-agent at {sock} holds no key (ssh-add -l); add yours or pass --key FILE")
    wanted = _allowed_keys(allowed_signers) if allowed_signers else set()
    chosen = next((k for k in keys if _key_blob(k) in wanted), keys[0])
    handle, name = tempfile.mkstemp(prefix="collector-agent-key-", suffix=".pub")
    with os.fdopen(handle, "w") as fh:
        fh.write(chosen + "\n")
    atexit.register(lambda: Path(name).unlink(missing_ok=True))  # only the public half, but tidy
    return Signer(
        Path(name), agent=True, label=f"ssh-agent key {' '.join(chosen.split()[2:]) or chosen[:30]}"
    )


def _key_blob(line: str) -> str:
    parts = line.split()
    return parts[1] if len(parts) > 1 else ""


def _allowed_keys(path: Path) -> set[str]:
    """The base64 key blobs in an allowed_signers file (only to pick an agent key; ssh-keygen decides)."""
    blobs: set[str] = set()
    try:
        for line in path.read_text().splitlines():
            words = line.split()
            for i, word in enumerate(words):
                if word.startswith(("ssh-", "ecdsa-", "sk-")) and i + 1 < len(words):
                    blobs.add(words[i + 1])
    except OSError:
        pass
    return blobs


@dataclass
class Verifier:
    """Checks signatures against one allowed_signers file; remembers what it already checked."""

    allowed_signers: Path
    _seen: dict[tuple[bytes, str], str] = field(default_factory=dict, repr=False)

    def principal(self, message: bytes, signature: str) -> str:
        """The verified principal that signed `message`, or SignatureError saying why not."""
        key = (message, signature)
        if key in self._seen:
            return self._seen[key]
        if not signature or SIG_BEGIN not in signature:
            raise SignatureError("signature is missing or malformed (no SSH SIGNATURE block)")
        with tempfile.TemporaryDirectory(prefix="collector-verify-") as tmp:
            sig = Path(tmp) / "statement.sig"
            sig.write_text(signature)
            found = _run(
                ["-Y", "find-principals", "-s", str(sig), "-f", str(self.allowed_signers), "-n", NAMESPACE],
                b"",
            )
            if found.returncode != 0:
                why = _last_line(found.stderr)
                text = found.stderr.decode(errors="replace")
                if "parse" in text or "incomplete" in text or "invalid" in text:
                    raise SignatureError(f"signature is malformed: {text.strip().splitlines()[0]}")
                if "No principal matched" in why:
                    raise SignatureError(
                        f"the signing key is not in allowed_signers {self.allowed_signers} "
                        f"(for namespace {NAMESPACE}); {_fingerprint(signature)}"
                    )
                raise SignatureError(f"signature is malformed: {why}")
            names = [n.strip() for n in found.stdout.decode().splitlines() if n.strip()]
            if not names:
                raise SignatureError(f"the signing key is not in allowed_signers {self.allowed_signers}")
            name = names[0]
            done = _run(
                [
                    "-Y",
                    "verify",
                    "-f",
                    str(self.allowed_signers),
                    "-I",
                    name,
                    "-n",
                    NAMESPACE,
                    "-s",
                    str(sig),
                ],
                message,
            )
            if done.returncode != 0:
                raise SignatureError(f"signature by {name} does not verify: {_last_line(done.stderr)}")
        self._seen[key] = name
        return name


def _fingerprint(signature: str) -> str:
    """The signing key's fingerprint (SHA256:...), read from the SSHSIG blob, for the error line."""
    body = "".join(ln.strip() for ln in signature.splitlines() if ln.strip() and not ln.startswith("-----"))
    try:
        blob = base64.b64decode(body)
        if blob[:6] != b"SSHSIG":
            return "key unknown"
        size = int.from_bytes(blob[10:14], "big")
        public = blob[14 : 14 + size]
    except (ValueError, IndexError):
        return "key unknown"
    return "key SHA256:" + base64.b64encode(hashlib.sha256(public).digest()).decode().rstrip("=")
