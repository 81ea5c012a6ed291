"""collect hands triage's verdict on as the typed `Findings` (issue 12, point 1): the CLI's headline and
--json read its fields, not a dict whatever its shape, and it is the same value findings.json holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from collector.cli.collect import headline, summary
from collector.collect import collect
from collector.core import Findings

REPO = Path(__file__).resolve().parents[2]
LOCAL = str(REPO / "inventory" / "local.yml")
CODE = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"


def test_collect_outcome_carries_the_typed_findings_that_findings_json_holds(tmp_path: Path) -> None:
    outcome = collect("local", inventory=LOCAL, out_dir=str(tmp_path))
    assert outcome.bundle is not None and isinstance(outcome.findings, Findings), outcome.notes
    on_disk = Findings.from_dict(json.loads((outcome.bundle / "findings.json").read_text()))
    assert outcome.findings == on_disk
    doc = summary(outcome)
    assert (doc["severity"], doc["headline"]) == (on_disk.severity, headline(outcome.findings))
    line = headline(outcome.findings)
    assert line is not None and line.startswith(on_disk.summary) and on_disk.summary


def test_headline_is_none_without_a_verdict() -> None:
    assert headline(None) is None


DF_97 = (
    "Filesystem     Type 1024-blocks  Used Available Capacity Mounted on\n"
    "/dev/loop3     ext4      99800    96806     2994      97% /opt/sergas/data\n"
)


def test_collect_headline_names_the_severitys_response_time(tmp_path: Path) -> None:
    """`collect` on this machine with a df that says 97 % full: a P2, and the headline says respond within
    1 hour (the runbook's response time); monitoring points at a closed loopback port, so only df speaks."""
    df = tmp_path / "df.txt"
    df.write_text(DF_97)
    catalogue = tmp_path / "probes.yml"
    catalogue.write_text(
        "collector_probes:\n"
        f"  - {{name: df, roles: [all], command: 'cat {df}', timeout_s: 5, description: disk use}}\n"
    )
    env = {
        **os.environ,
        "COLLECTOR_PROMETHEUS_URL": "http://127.0.0.1:9",
        "COLLECTOR_ALERTMANAGER_URL": "http://127.0.0.1:9",
    }
    args = ["--hosts", "local", "-i", LOCAL, "--catalogue", str(catalogue)]
    proc = subprocess.run(
        [sys.executable, "-c", CODE, *args, "--out", str(tmp_path / "text")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("findings: ")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("findings: P2: A filesystem is over 90 % full"), lines[0]
    assert lines[0].endswith(" · P2 — respond within 1 hour"), lines[0]
    doc = subprocess.run(
        [sys.executable, "-c", CODE, *args, "--out", str(tmp_path / "json"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    summary_doc = json.loads(doc.stdout)
    assert (summary_doc["severity"], summary_doc["respond"]) == ("P2", "respond within 1 hour")
    assert summary_doc["headline"].endswith(" · P2 — respond within 1 hour")
