"""Each step does its own work once: a `collect` writes its bundle's archive exactly once, at the end, and
the after-steps (triage, report) hand over to that one seal instead of sealing themselves."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

import collector.bundle as bundle_mod
from collector.collect import collect

REPO = Path(__file__).resolve().parents[2]
LOCAL = str(REPO / "inventory" / "local.yml")


def test_collect_writes_the_archive_once_with_the_derived_files_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[Path] = []
    real = bundle_mod.write_archive

    def counting(root: Path, mtime: int = 0, privacy: bundle_mod.Privacy | None = None) -> Path:
        written.append(root)
        return real(root, mtime, privacy)

    monkeypatch.setattr(bundle_mod, "write_archive", counting)
    outcome = collect("local", inventory=LOCAL, out_dir=str(tmp_path))
    assert outcome.bundle is not None and outcome.exit_code == 0, outcome.notes
    assert written == [outcome.bundle]
    with tarfile.open(f"{outcome.bundle}.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {
        "findings.json",
        "report.html",
        "TICKET.md",
        "manifest.json",
    } <= names  # sealed after triage/report
    assert bundle_mod.Bundle.open(outcome.bundle).verify() == []
