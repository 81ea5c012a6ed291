"""collect hands triage's verdict on as the typed `Findings` (issue 12, point 1): the CLI's headline and
--json read its fields, not a dict whatever its shape, and it is the same value findings.json holds."""

from __future__ import annotations

import json
from pathlib import Path

from collector.cli.collect import headline, summary
from collector.collect import collect
from collector.core import Findings

REPO = Path(__file__).resolve().parents[2]
LOCAL = str(REPO / "inventory" / "local.yml")


def test_collect_outcome_carries_the_typed_findings_that_findings_json_holds(tmp_path: Path) -> None:
    outcome = collect("local", inventory=LOCAL, out_dir=str(tmp_path))
    assert outcome.bundle is not None and isinstance(outcome.findings, Findings), outcome.notes
    on_disk = Findings.from_dict(json.loads((outcome.bundle / "findings.json").read_text()))
    assert outcome.findings == on_disk
    doc = summary(outcome)
    assert (doc["severity"], doc["headline"]) == (on_disk.severity, on_disk.summary)
    assert headline(outcome.findings) == on_disk.summary and on_disk.summary


def test_headline_is_none_without_a_verdict() -> None:
    assert headline(None) is None
