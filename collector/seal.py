"""Sealed probe output: what `playbooks/collect.yml` returns when run with `collector_output_recipient`.

Run by AWX or ansible-runner, the probe runner's raw output (redacted only here, on the controller) would
sit in every job event. With a recipient certificate the module encrypts it on the host (CMS, AES-256, the
content key wrapped with the certificate's RSA key), so the events hold ciphertext; `collector ingest
--unseal-key KEY` opens it here with the matching private key. The certificate travels in the task's logged
arguments (it is public), which is how each event says what it was sealed to.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs7

from collector.core import UsageError


class SealError(Exception):
    """A sealed output that cannot be opened with the key given (one line)."""


@dataclass(frozen=True)
class Unsealer:
    """The controller's private key for sealed outputs."""

    key: rsa.RSAPrivateKey
    source: str

    @classmethod
    def from_file(cls, path: str) -> Unsealer:
        """Load an unencrypted PEM RSA private key; a missing or wrong file is bad input."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"--unseal-key {path}: {exc.strerror}") from None
        try:
            key = load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--unseal-key {path}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise UsageError(
                f"--unseal-key {path}: an RSA key is needed (CMS key transport), not {type(key).__name__}"
            )
        return cls(key, path)

    def open(self, sealed: str, certificate: str) -> bytes:
        """The plaintext of one base64 DER CMS envelope sealed to `certificate` (PEM)."""
        try:
            cert = x509.load_pem_x509_certificate(certificate.encode())
        except ValueError as exc:
            raise SealError(f"the recipient certificate in the event is not PEM: {exc}") from None
        public = cert.public_key()
        if not (
            isinstance(public, rsa.RSAPublicKey)
            and public.public_numbers() == self.key.public_key().public_numbers()
        ):
            raise SealError(f"sealed to {cert.subject.rfc4514_string()}, whose key is not {self.source}")
        try:
            return pkcs7.pkcs7_decrypt_der(base64.b64decode(sealed, validate=True), cert, self.key, [])
        except (ValueError, binascii.Error) as exc:
            raise SealError(f"the sealed output does not open: {exc}") from None


def sealed_to(res: dict[str, Any]) -> str:
    """The recipient certificate a probe-runner result names in its logged arguments ("" when none)."""
    args = (res.get("invocation") or {}).get("module_args") or {}
    return str(args.get("recipient") or "")
