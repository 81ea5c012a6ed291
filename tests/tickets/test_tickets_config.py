"""Ticket settings, evidence gathering and idempotence keys: pure functions, no server."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from collector import report
from collector.bundle import Bundle
from collector.core import UsageError
from collector.tickets import RemoteFile, Upload, load_ticket_config, parse_priorities
from collector.tickets.evidence import archive_files, gather

MakeBundle = Callable[..., Path]  # the make_bundle fixture (conftest.py)

KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("URL", "API_KEY", "API_KEY_FILE", "PRIORITIES", "TIMEOUT_S", "TRACKER", "TEXT_FORMAT"):
        monkeypatch.delenv(f"COLLECTOR_REDMINE_{name}", raising=False)
    monkeypatch.delenv("COLLECTOR_TICKETS_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


def test_env_gives_url_key_and_default_priorities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_REDMINE_URL", "http://127.0.0.1:3000/")
    monkeypatch.setenv("COLLECTOR_REDMINE_API_KEY", KEY)
    config = load_ticket_config("redmine")
    assert config.url == "http://127.0.0.1:3000"
    assert config.api_key == KEY
    assert config.priorities == {"P0": "Immediate", "P1": "Urgent", "P2": "High", "P3": "Normal"}
    assert KEY not in repr(config)
    assert config.scrub(f"oops {KEY} leaked") == "oops «api-key» leaked"


def test_explicit_url_beats_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "tickets.yml").write_text("redmine: {url: 'http://127.0.0.1:1', api_key: k}\n")
    monkeypatch.setenv("COLLECTOR_REDMINE_URL", "http://127.0.0.1:2")
    assert load_ticket_config("redmine", url="http://127.0.0.1:3").url == "http://127.0.0.1:3"
    assert load_ticket_config("redmine").url == "http://127.0.0.1:2"


def test_config_file_with_key_file_priorities_and_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "redmine.key"
    key_file.write_text(KEY + "\n")
    config_file = tmp_path / "elsewhere.yml"
    config_file.write_text(
        f"redmine:\n  url: https://redmine.example.invalid\n  api_key_file: {key_file}\n"
        "  priorities: {P0: Urgent, P3: Low}\n  text_format: textile\n  timeout_s: 5\n"
    )
    monkeypatch.setenv("COLLECTOR_TICKETS_CONFIG", str(config_file))
    config = load_ticket_config("redmine")
    assert config.api_key == KEY and config.timeout_s == 5.0 and config.text_format == "textile"
    assert config.priorities["P0"] == "Urgent" and config.priorities["P3"] == "Low"
    assert config.priorities["P1"] == "Urgent"  # unmapped severities keep their default


def test_missing_key_names_the_variables_not_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_REDMINE_URL", "http://127.0.0.1:3000")
    with pytest.raises(UsageError, match="COLLECTOR_REDMINE_API_KEY.*never taken from the command line"):
        load_ticket_config("redmine")


@pytest.mark.parametrize("url", ["127.0.0.1:3000", "ftp://x", ""])
def test_bad_or_missing_url_is_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("COLLECTOR_REDMINE_API_KEY", KEY)
    with pytest.raises(UsageError, match="URL"):
        load_ticket_config("redmine", url=url or None)


def test_priorities_parse_and_refuse_unknown_severity() -> None:
    assert parse_priorities("P0=Immediate, P2=High", "env") == {"P0": "Immediate", "P2": "High"}
    assert parse_priorities({"P1": 4}, "file") == {"P1": "4"}
    with pytest.raises(UsageError, match="unknown severity 'P5'"):
        parse_priorities("P5=Low", "env")
    with pytest.raises(UsageError, match="P0=Immediate"):
        parse_priorities("Immediate", "env")


def test_unknown_system_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown ticket system 'jira'"):
        load_ticket_config("jira")


def test_same_as_needs_name_size_and_recorded_sha256(tmp_path: Path) -> None:
    upload = Upload(path=tmp_path / "a.tar.gz", filename="a.tar.gz", size=10, sha256="ab" * 32)
    same = RemoteFile(id="1", filename="a.tar.gz", size=10, description=upload.description, url="")
    assert same.same_as(upload) and same.sha256 == "ab" * 32
    assert not RemoteFile("2", "a.tar.gz", 10, "sha256:" + "cd" * 32, "").same_as(upload)
    assert not RemoteFile("3", "a.tar.gz", 10, "uploaded by hand", "").same_as(upload)
    assert not RemoteFile("4", "b.tar.gz", 10, upload.description, "").same_as(upload)


def test_archive_files_checks_the_archive_against_its_sha256(make_bundle: MakeBundle, tmp_path: Path) -> None:
    folder = make_bundle()
    archive, sums = archive_files(folder)
    assert archive.sha256 == hashlib.sha256((tmp_path / f"{folder.name}.tar.gz").read_bytes()).hexdigest()
    assert sums.filename == f"{folder.name}.tar.gz.sha256"
    with (tmp_path / f"{folder.name}.tar.gz").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(UsageError, match="does not match"):
        archive_files(folder)
    (tmp_path / f"{folder.name}.tar.gz").unlink()
    with pytest.raises(UsageError, match="is missing: the bundle is not sealed"):
        archive_files(folder)


def test_gather_uses_ticket_md_and_builds_the_subject(make_bundle: MakeBundle, tmp_path: Path) -> None:
    folder = make_bundle(severity="P2", ticket_md="# Summary\nDB pool exhausted on db1.\n")
    evidence = gather(folder)
    assert evidence.ticket_md and evidence.severity == "P2"
    assert evidence.subject == f"[P2] {folder.name}: App health check failing"
    assert evidence.body.startswith("# Summary\nDB pool exhausted on db1.")
    assert f"sha256 `{evidence.files[0].sha256}`" in evidence.body
    assert str(folder.resolve()) in evidence.body
    assert gather(tmp_path / f"{folder.name}.tar.gz").incident == folder.name  # the archive path works too


def test_without_ticket_md_the_body_is_the_ticket_template_report_writes(make_bundle: MakeBundle) -> None:
    folder = make_bundle(severity="P1")  # triaged, but `collector report` has not run: no TICKET.md
    evidence = gather(folder)
    assert not evidence.ticket_md
    report.render_reports(folder)  # what `collector report` would have written as TICKET.md
    written = (folder / "TICKET.md").read_text().strip()
    assert written.startswith("# [P1] App health check failing")
    assert evidence.body.startswith(written + "\n\n---\nEvidence attached by `collector attach`")
    untriaged = gather(make_bundle(severity=None))
    assert untriaged.body.startswith("# [unknown] Incident ") and "Triage has not run yet." in untriaged.body
    assert untriaged.severity is None and untriaged.subject.endswith(": incident evidence")


def test_a_findings_json_of_another_schema_is_refused_not_posted_empty(make_bundle: MakeBundle) -> None:
    folder = make_bundle(severity="P1")
    bundle = Bundle.open(folder)
    doc = bundle.read_json("findings.json")
    doc["schema"] = "incident-collector/findings/v1"
    bundle.write_json("findings.json", doc)
    bundle.seal()
    with pytest.raises(UsageError, match="findings/v1"):
        gather(folder)


def test_unredacted_bundle_is_refused_unless_allowed(make_bundle: MakeBundle) -> None:
    folder = make_bundle(redact=False)
    assert folder.name.endswith("-UNREDACTED")
    with pytest.raises(UsageError, match="collected without redaction: refusing"):
        gather(folder)
    assert gather(folder, allow_unredacted=True).incident == folder.name


def test_hand_edited_ticket_md_is_redacted_before_posting(make_bundle: MakeBundle) -> None:
    folder = make_bundle()
    (folder / "TICKET.md").write_text("DB_PASSWORD=hunter2-very-secret\nsee logs\n")  # bypasses Bundle
    evidence = gather(folder)
    assert "hunter2-very-secret" not in evidence.body
    assert "«REDACTED:" in evidence.body and "see logs" in evidence.body
