"""Redaction on real lab evidence: the files where the lab seeds its secrets, read over SSH, bundled."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector import envfile
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
        result = ProbeResult(
            host,
            probe,
            command,
            "ok" if done.rc == 0 else "failed",
            done.rc,
            utcnow(),
            0.1,
            done.stdout_bytes + done.stderr_bytes,
        )
        hosts.setdefault(host, HostResult(host, "ok", None, [], (host.rstrip("0123456789"),))).probes.append(
            result
        )
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

    run = RunResult(
        "", "lab", str(lab.inventory), "ssh", ["collect", "--hosts", "lab"], utcnow(), hosts=hosts
    )
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
    assert (
        subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=folder, check=False).returncode == 0
    )

    # With the inventory's secret vars as known secrets, as collect passes them.
    inventory_secrets = secrets_from_vars(yaml.safe_load(Path(lab.inventory).read_text()))
    assert secrets["redis_password"] in inventory_secrets
    folder = write_bundle(run, Settings(), out_dir=tmp_path / "known", known_secrets=inventory_secrets)
    assert secrets["redis_password"].encode() not in _archive_bytes(folder)


COLLECT = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"
ENV_FILE = "/opt/sergas/app/.env"


def _collect_app(lab: Any, out: Path, key: Path) -> Path:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            COLLECT,
            "--hosts",
            lab.groups["app"][0],
            "-i",
            str(lab.inventory),
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLLECTOR_FINGERPRINT_KEY": str(key)},
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return Path(json.loads(proc.stdout)["bundle"])


def _settings(bundle: Path, host: str) -> dict[str, str]:
    text = (bundle / "hosts" / host / "app_config.txt").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


@pytest.mark.lab
def test_lab_app_env_keeps_keys_and_knobs_fingerprints_secrets_and_everything_is_private(
    lab: Any, lab_lock: None, tmp_path: Path
) -> None:
    host = lab.groups["app"][0]
    app = lab.host(host)
    original = app.file(ENV_FILE).content_string
    secrets = [lab.secrets[k] for k in ("db_password", "redis_password", "api_token")]
    assert all(s in original for s in secrets)  # the file really holds them, or this test proves nothing
    key = tmp_path / "controller.key"
    first = _collect_app(lab, tmp_path / "out", key)
    second = _collect_app(lab, tmp_path / "out", key)

    raw = (first / "hosts" / host / "app_config.txt").read_bytes()
    archive = gzip.decompress(Path(f"{first}.tar.gz").read_bytes())
    for secret in secrets:
        assert secret.encode() not in raw and secret.encode() not in archive
    values = _settings(first, host)
    names = [
        line.split("=", 1)[0] for line in original.splitlines() if "=" in line and not line.startswith("#")
    ]
    assert list(values) == names  # every key, in the file's order
    assert values["DATABASE_POOL_SIZE"] == "10" and values["CACHE_TTL"] == "60"  # the knobs, readable
    assert values["ZOHO_RATE_LIMIT"].isdigit() and values["PORT"].isdigit()
    for name in ("DATABASE_URL", "REDIS_URL", "ZOHO_API_TOKEN", "ZOHO_API_URL"):
        assert values[name].startswith(envfile.FINGERPRINT_OPEN), name
    assert _settings(second, host) == values  # same controller, same values: same fingerprints

    # Change one value on the host (and put the file back exactly as it was: same inode, owner, mode).
    backup = "/root/.env.collector-test"
    try:
        app.run_expect(
            [0],
            f"cp -p {ENV_FILE} {backup} && "
            f"sed 's#^ZOHO_API_URL=.*#ZOHO_API_URL=http://127.0.0.1:8009#' {backup} > {ENV_FILE}",
        )
        changed = _settings(_collect_app(lab, tmp_path / "out", key), host)
    finally:
        app.run_expect([0], f"cat {backup} > {ENV_FILE} && rm -f {backup}")
    assert app.file(ENV_FILE).content_string == original
    assert changed["ZOHO_API_URL"] != values["ZOHO_API_URL"]
    assert {k: v for k, v in changed.items() if k != "ZOHO_API_URL"} == {
        k: v for k, v in values.items() if k != "ZOHO_API_URL"
    }

    # Every folder and file of these lab collections is private.
    wrong = {}
    for path in [tmp_path / "out", *(tmp_path / "out").rglob("*")]:
        info = path.lstat()
        expected = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        if stat.S_IMODE(info.st_mode) != expected:
            wrong[str(path)] = oct(stat.S_IMODE(info.st_mode))
    assert wrong == {}
