"""The report of a real bundle collected from the lab: facts present, the lab's secrets absent."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collector import report
from collector.bundle import Bundle
from collector.core import response_time_text

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def lab_bundle(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`collect --hosts lab` as a person types it (read-only: no lock needed);
    it renders the reports itself."""
    out = tmp_path_factory.mktemp("lab-bundles")
    result = subprocess.run(
        [str(BIN / "collect"), "--hosts", "lab", "-i", str(lab.inventory), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    bundles = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(bundles) == 1, result.stdout[-2000:]
    return bundles[0]


@pytest.mark.lab
def test_collect_writes_reports_with_every_host_and_no_secret(lab: Any, lab_bundle: Path) -> None:
    for name in ("report.html", "report.md", "TICKET.md"):
        assert (lab_bundle / name).is_file(), name
    html_text = (lab_bundle / "report.html").read_text()
    md = (lab_bundle / "report.md").read_text()
    manifest = json.loads((lab_bundle / "manifest.json").read_text())
    findings = json.loads((lab_bundle / "findings.json").read_text())
    for host in lab.names:
        assert f"<th>{host}</th>" in html_text and f"| {host} |" in md, host
    assert f'id="severity">{findings["severity"]}<' in html_text
    assert md.startswith(f"# Incident Report: {manifest['incident']}\n")
    assert f"**[{findings['severity']}] " in md
    # the runbook's milestones: investigation began when this collection did; nothing was applied
    started = report.fmt_time(report.parse_time(manifest["started"]))
    assert f"| Investigating | {started} |" in md and "| Mitigated | unknown |" in md
    assert "## Post-mortem meeting" in md and "(not resolved yet)" in md
    if findings["severity"] in ("P0", "P1", "P2", "P3"):
        assert response_time_text(findings["severity"]) in md
    for finding in findings["findings"]:
        assert report.md_inline(finding["title"]) in md
    assert "Evidence collection started (lab," in md
    assert report.fmt_time(report.parse_time(manifest["started"])) in md
    secrets = [v for v in lab.secrets.values() if v and len(v) >= 6]
    assert secrets, "the lab exposes its seeded secrets"
    texts = [html_text, md, (lab_bundle / "TICKET.md").read_text()]
    texts += [report.render_comms(lab_bundle, stage) for stage in report.STAGES]
    for text in texts:
        for secret in secrets:
            assert secret not in text


@pytest.mark.lab
def test_rerendering_a_lab_bundle_keeps_the_archive_byte_identical(lab_bundle: Path) -> None:
    archive = lab_bundle.parent / f"{lab_bundle.name}.tar.gz"
    before = archive.read_bytes()
    report.render_reports(lab_bundle)
    assert archive.read_bytes() == before
    assert Bundle.open(lab_bundle).verify() == []
    digest = (lab_bundle.parent / f"{archive.name}.sha256").read_text().split()[0]
    assert digest == hashlib.sha256(before).hexdigest()
