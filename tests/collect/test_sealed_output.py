"""Sealed probe output (collector_output_recipient): playbooks/collect.yml run here (ansible_connection:
local) through the one front door, the runner's answer encrypted on the host to a certificate, so no job
event or artifact holds the raw output; only the matching private key opens it (collector.seal)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from collector.core import UsageError
from collector.seal import SealError, Unsealer
from collector.transport import Target
from collector.transport.ansible import (
    collect_playbook,
    host_results_from_events,
    read_artifact_events,
    run_playbook,
)

# Raw output no inventory variable names: only the controller's redaction patterns would catch it.
MARKER = "DB_PASSWORD=unlisted-Secret-0451-zz"
# (made by the command, so the logged catalogue does not spell it)
PROBES = [
    {
        "name": "leaky_log",
        "roles": ["all"],
        "command": "printf '%s=%s-%s' DB_PASSWORD unlisted Secret-0451-zz",
    }
]
CLI = "import sys; from collector.cli import main; sys.argv[0] = 'collector'; main()"


def keypair(folder: Path, name: str) -> tuple[Path, Path]:
    """An RSA key and its self-signed certificate, made by openssl as the README says."""
    key, cert = folder / f"{name}-key.pem", folder / f"{name}-cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-days", "30"]
        + ["-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return key, cert


def run_here(tmp: Path, name: str, recipient: Path | None) -> tuple[Path, list[dict[str, object]]]:
    inventory = tmp / f"{name}.yml"
    host = {"ansible_connection": "local"}
    if recipient is not None:
        host["collector_output_recipient"] = recipient.read_text()
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"here": host}}}))
    private = tmp / name
    run = run_playbook(
        collect_playbook(), str(inventory), "here", {"collector_probes": PROBES}, private_dir=private
    )
    assert run.rc == 0, run.hosts
    return private, list(read_artifact_events(Path(run.artifacts_dir or "")))


def holding(private: Path, needle: bytes) -> list[str]:
    return [str(p) for p in private.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_sealed_output_leaves_no_trace_in_the_artifacts_and_opens_only_with_its_key(tmp_path: Path) -> None:
    key, cert = keypair(tmp_path, "ingest")
    other_key, _ = keypair(tmp_path, "other")
    as_b64 = base64.b64encode(MARKER.encode())  # how an unsealed answer carries a probe's output
    here = {"here": Target("here", {}, ())}

    # control: unsealed, the events hold the output (base64), so the check below can fail
    plain, plain_events = run_here(tmp_path, "plain", None)
    assert holding(plain, as_b64), (
        "the unsealed run's events do not hold the output: the check proves nothing"
    )
    assert host_results_from_events(plain_events, here)["here"].probes[0].output == MARKER.encode()

    sealed, events = run_here(tmp_path, "sealed", cert)
    assert holding(sealed, as_b64) == [] and holding(sealed, MARKER.encode()) == []
    opened = host_results_from_events(events, here, Unsealer.from_file(str(key)))["here"]
    assert opened.status == "ok" and opened.probes[0].output == MARKER.encode()

    with pytest.raises(SealError, match="sealed .*give --unseal-key"):
        host_results_from_events(events, here)
    with pytest.raises(SealError, match="whose key is not"):
        host_results_from_events(events, here, Unsealer.from_file(str(other_key)))

    # `collector ingest` of the sealed run: no key is one line, exit 2, nothing written; the key, a bundle
    artifacts = str(next(sealed.rglob("job_events")).parent)
    out = tmp_path / "bundles"
    refused = subprocess.run(
        [sys.executable, "-c", CLI, "ingest", artifacts, "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2 and "--unseal-key" in refused.stderr and refused.stderr.count("\n") == 1
    assert not out.exists()
    done = subprocess.run(
        [sys.executable, "-c", CLI, "ingest", artifacts, "--out", str(out), "--unseal-key", str(key)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (bundle,) = [p for p in out.iterdir() if p.is_dir()]
    captured = (bundle / "hosts" / "here" / "leaky_log.txt").read_text()
    assert captured.startswith("DB_PASSWORD=") and "Secret-0451" not in captured  # opened, then redacted


def test_a_key_that_is_not_rsa_or_not_a_key_is_bad_input(tmp_path: Path) -> None:
    ed = tmp_path / "ed.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed)], check=True, capture_output=True
    )
    with pytest.raises(UsageError, match="RSA key is needed"):
        Unsealer.from_file(str(ed))
    (tmp_path / "junk.pem").write_text("not a key\n")
    with pytest.raises(UsageError, match="not an unencrypted PEM private key"):
        Unsealer.from_file(str(tmp_path / "junk.pem"))
    with pytest.raises(UsageError, match="No such file"):
        Unsealer.from_file(str(tmp_path / "missing.pem"))
