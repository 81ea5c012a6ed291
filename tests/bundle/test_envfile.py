""".env captures: key names and operational values stay, every other value becomes a keyed fingerprint."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from collector import envfile
from collector.bundle import Bundle, write_bundle
from collector.config import Settings
from collector.core import HostResult, ProbeResult, RunResult

KEY = b"k" * 32
ENV = """# sergas-app settings
DATABASE_URL=postgresql://sergas:Pw-1x9@10.0.0.2:5432/sergas
DATABASE_POOL_SIZE=10
export ZOHO_RATE_LIMIT="120"
ZOHO_API_TOKEN='tok_live_abc123'
LOG_LEVEL=info
APP_VERSION=2.4.1
FEATURE_NEW_CHECKOUT=true
CACHE_TTL=60
TOKEN_TTL=3600
SESSION_SECRET=hunter2
ADMIN_PIN=4821
EMPTY=
# OLD_DATABASE_URL=postgresql://sergas:OldPw-77@10.0.0.2/sergas
TLS_KEY="-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASC
-----END PRIVATE KEY-----"
PORT=8000
"""
SECRETS = (
    "Pw-1x9",
    "tok_live_abc123",
    "hunter2",
    "4821",
    "OldPw-77",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    "BEGIN PRIVATE KEY",
)


def test_keys_stay_operational_values_stay_secrets_become_fingerprints() -> None:
    text, replaced = envfile.filter_text(ENV, KEY)
    for secret in SECRETS:
        assert secret not in text, secret
    lines = text.splitlines()
    for kept in (
        "DATABASE_POOL_SIZE=10",
        "export ZOHO_RATE_LIMIT=120",
        "LOG_LEVEL=info",
        "APP_VERSION=2.4.1",
        "FEATURE_NEW_CHECKOUT=true",
        "CACHE_TTL=60",
        "TOKEN_TTL=3600",
        "EMPTY=",
        "PORT=8000",
        "# sergas-app settings",
    ):
        assert kept in lines, kept
    for name in ("DATABASE_URL", "ZOHO_API_TOKEN", "SESSION_SECRET", "ADMIN_PIN", "TLS_KEY"):
        line = next(ln for ln in lines if ln.startswith(f"{name}="))
        assert line.startswith(f"{name}={envfile.FINGERPRINT_OPEN}"), line
        assert len(line.split(envfile.FINGERPRINT_OPEN)[1]) == 9  # 8 hex digits and the closing mark
    old = next(ln for ln in lines if "OLD_DATABASE_URL" in ln)
    assert old.startswith(f"# OLD_DATABASE_URL={envfile.FINGERPRINT_OPEN}")
    assert replaced == 6
    assert len(lines) == len(ENV.splitlines()) - 2  # the PEM's three lines are one fingerprinted value


def test_a_fingerprint_answers_did_it_change_and_needs_the_key() -> None:
    first = envfile.filter_text("DATABASE_URL=postgresql://u:a@h/db\n", KEY)[0]
    again = envfile.filter_text("DATABASE_URL=postgresql://u:a@h/db\n", KEY)[0]
    changed = envfile.filter_text("DATABASE_URL=postgresql://u:b@h/db\n", KEY)[0]
    other_key = envfile.filter_text("DATABASE_URL=postgresql://u:a@h/db\n", b"x" * 32)[0]
    assert first == again and first != changed and first != other_key
    # the same value under two names does not look equal
    assert envfile.fingerprint(KEY, "A_PASSWORD", "same") != envfile.fingerprint(KEY, "B_PASSWORD", "same")


@pytest.mark.parametrize(
    "name, value, kept",
    [
        ("DATABASE_POOL_SIZE", "25", True),
        ("HTTP_TIMEOUT_MS", "1500", True),
        ("NODE_ENV", "production", True),
        ("MAX_UPLOAD_MB", "20", True),
        ("PASSWORD_MIN_LENGTH", "12", True),
        ("SECRET_LEVEL", "hunter2", False),
        ("DATABASE_PASSWORD", "12345", False),
        ("ZOHO_RATE_LIMIT", "a very long sentence", False),
        ("DATA_DIR", "/var/lib/sergas", False),
        ("LOG_LEVEL", "postgres://u:p@h", False),
    ],
)
def test_the_allow_list(name: str, value: str, kept: bool) -> None:
    assert envfile.is_operational(name, value) is kept


def test_the_controller_key_is_created_once_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fingerprint.key"
    key = envfile.load_key(path)
    assert len(key) == 32 and envfile.load_key(path) == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def _run(env_text: bytes) -> RunResult:
    probe = ProbeResult(
        "app1",
        "app_config",
        "cat .env",
        "ok",
        0,
        "2026-11-28T05:00:00.000Z",
        0.1,
        env_text,
        bytes=len(env_text),
    )
    return RunResult(
        "",
        "app",
        "inv",
        "ssh",
        [],
        "2026-11-28T05:00:00.000Z",
        hosts={"app1": HostResult("app1", "ok", None, [probe], ("app",))},
    )


def test_the_shipped_catalogue_marks_app_config_and_the_bundle_filters_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTOR_FINGERPRINT_KEY", str(tmp_path / "key"))
    from collector.config import load_settings

    folder = write_bundle(_run(ENV.encode()), load_settings(), out_dir=tmp_path / "b")
    text = Bundle.open(folder).text("app1", "app_config") or ""
    assert "DATABASE_POOL_SIZE=10" in text and f"DATABASE_URL={envfile.FINGERPRINT_OPEN}" in text
    # the redaction that runs afterwards leaves the fingerprints of secret-named keys as they are
    assert (
        f"ZOHO_API_TOKEN={envfile.FINGERPRINT_OPEN}" in text
        and f"SESSION_SECRET={envfile.FINGERPRINT_OPEN}" in text
    )
    for secret in SECRETS:
        assert secret not in text
    doc = json.loads((folder / "redaction.json").read_text())["fingerprints"]
    assert doc["probes"] == ["app_config"] and doc["values"] == 6
    assert doc["key_id"] == envfile.key_id((tmp_path / "key").read_bytes())
    # --no-redact keeps the file as it was on the host (the bundle is named and marked UNREDACTED)
    raw = write_bundle(_run(ENV.encode()), Settings(redact=False), out_dir=tmp_path / "raw")
    assert "Pw-1x9" in (Bundle.open(raw).text("app1", "app_config") or "")
