"""`collector triage BUNDLE [--json]`: the printed verdict, and bad input → one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from triage_synth import healthy, make_bundle

from collector.cli import main
from collector.core import FINDINGS_SCHEMA


def _app_down_bundle(tmp_path: Path) -> Path:
    probes = healthy()
    probes["app1"]["app_health"] = {
        "output": "curl: (7) Failed to connect to 127.0.0.1 port 8000: Connection refused\nHTTP 000 0.000s\n",
        "status": "failed",
        "rc": 7,
    }
    return make_bundle(tmp_path, probes)


def test_prints_severity_answers_evidence_and_a_ready_command(tmp_path: Path) -> None:
    bundle = _app_down_bundle(tmp_path)
    result = CliRunner().invoke(main, ["triage", str(bundle)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("severity P0")
    for question in (
        "How many users/hosts affected",
        "Is data at risk",
        "Down or degraded: down",
        "Security incident: no sign",
    ):
        assert question in out
    assert "P0 app-down [app1]" in out
    assert 'evidence hosts/app1/app_health.txt:1  "curl: (7) Failed to connect' in out
    assert "mitigate: collector remediate restart --hosts app1" in out
    assert json.loads((bundle / "findings.json").read_text())["severity"] == "P0"


def test_json_prints_the_findings_document(tmp_path: Path) -> None:
    bundle = _app_down_bundle(tmp_path)
    result = CliRunner().invoke(main, ["triage", str(bundle), "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["schema"] == FINDINGS_SCHEMA and doc["severity"] == "P0"
    assert doc["findings"][0]["mitigation"]["command"] == "collector remediate restart --hosts app1"


def test_not_a_bundle_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    result = CliRunner().invoke(main, ["triage", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "is not a bundle" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]  # nothing written


def test_other_schema_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["schema"] = "incident-collector/bundle/v99"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(main, ["triage", str(bundle)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "v99" in result.output
    assert not (bundle / "findings.json").exists()


def test_unknown_rules_are_listed_with_their_reason(tmp_path: Path) -> None:
    probes = healthy()
    probes["db1"]["pg_blocking_locks"] = {"output": "", "status": "timeout", "rc": 124}
    result = CliRunner().invoke(main, ["triage", str(make_bundle(tmp_path, probes))])
    assert result.exit_code == 0
    assert "could not evaluate 1 rule(s):" in result.output
    assert "? lock-contention: probe pg_blocking_locks timed out on db1" in result.output


def test_one_unreachable_host_is_one_unknown_line_naming_every_rule(tmp_path: Path) -> None:
    probes = healthy()
    del probes["redis1"]
    bundle = make_bundle(
        tmp_path, probes, unreachable={"redis1": "ssh: connect to host redis1 port 22: No route to host"}
    )
    result = CliRunner().invoke(main, ["triage", str(bundle)])
    lines = [ln for ln in result.output.splitlines() if "host redis1 is unreachable" in ln]
    assert len(lines) == 1 and "redis-down" in lines[0] and "disk-full" in lines[0]
    assert "P1 host-unreachable [redis1]" in result.output
