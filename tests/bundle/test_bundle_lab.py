"""Redaction on real lab evidence: the files where the lab seeds its secrets, read over SSH, bundled."""
from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.bundle import Bundle, write_bundle
from collector.config import Settings
from collector.core import HostResult, ProbeResult, RunResult, utcnow
from collector.redact import secrets_from_vars

# Where lab/provision/*.sh put the secrets (app: .env with DSNs and the API token; redis: requirepass).
EVIDENCE = {
    ("app1", "env_file"): "cat /opt/sergas/app/.env",
    ("app1", "ps"): "ps auxww",
    ("app1", "journal"): "journalctl -n 300 --no-pager -o short-iso",
    ("redis1", "redis_conf"): "cat /etc/redis/lab.conf",
    ("redis1", "journal"): "journalctl -n 300 --no-pager -o short-iso",
}


def _evidence(lab: Any) -> dict[str, HostResult]:
    hosts: dict[str, HostResult] = {}
    for (host, probe), command in EVIDENCE.items():
        done = lab.host(host).run(command)
        result = ProbeResult(host, probe, command, "ok" if done.rc == 0 else "failed", done.rc, utcnow(), 0.1,
                             done.stdout_bytes + done.stderr_bytes)
        hosts.setdefault(host, HostResult(host, "ok", None, [], (host.rstrip("0123456789"),))).probes.append(result)
    return hosts


def _archive_bytes(folder: Path) -> bytes:
    archive = folder.parent / f"{folder.name}.tar.gz"
    with tarfile.open(archive) as tar:
        return b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]


@pytest.mark.lab
def test_seeded_lab_secrets_never_reach_the_archive(lab: Any, tmp_path: Path) -> None:
    secrets = {k: v for k, v in lab.secrets.items() if k in ("db_password", "redis_password", "api_token")}
    assert len(secrets) == 3, "the lab records db_password, redis_password and api_token"
    hosts = _evidence(lab)
    raw = b"".join(p.output for h in hosts.values() for p in h.probes)
    for name, value in secrets.items():  # the evidence really holds them, or this test proves nothing
        assert value.encode() in raw, f"lab secret {name} not found in the raw evidence"

    run = RunResult("", "lab", str(lab.inventory), "ssh", ["collect", "--hosts", "lab"], utcnow(), hosts=hosts)
    # Patterns alone (no known secrets): .env DSNs, the API token and requirepass must all go.
    folder = write_bundle(run, Settings(), out_dir=tmp_path / "patterns")
    blob = _archive_bytes(folder)
    for name, value in secrets.items():
        assert value.encode() not in blob, f"{name} leaked into the archive"
    bundle = Bundle.open(folder)
    env = bundle.text("app1", "env_file") or ""
    assert "postgresql://sergas:«REDACTED:url_password:" in env and "ZOHO_API_TOKEN=«REDACTED:" in env
    raw_env = next(p.output for p in hosts["app1"].probes if p.probe == "env_file").decode()
    plain = [line for line in raw_env.splitlines() if not any(v in line for v in secrets.values())]
    assert plain and all(line in env.splitlines() for line in plain)  # the rest stays readable
    assert "requirepass «REDACTED:" in (bundle.text("redis1", "redis_conf") or "")
    counts = json.loads((folder / "redaction.json").read_text())["counts"]
    assert counts["url_password"]["hosts/app1/env_file.txt"] == 2
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=folder, check=False).returncode == 0

    # With the inventory's secret vars as known secrets, as collect passes them.
    inventory_secrets = secrets_from_vars(yaml.safe_load(Path(lab.inventory).read_text()))
    assert secrets["redis_password"] in inventory_secrets
    folder = write_bundle(run, Settings(), out_dir=tmp_path / "known", known_secrets=inventory_secrets)
    assert secrets["redis_password"].encode() not in _archive_bytes(folder)
