"""The ansible engine's own artifacts (job events carry each probe's raw output, base64-encoded, before the
controller redacts it) live in a private temporary folder that is gone when the run ends, unless a caller
asked to keep them (`private_dir`)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.times import wait_until
from collector.transport.ansible import collect_playbook, run_playbook

REPO = Path(__file__).resolve().parents[2]
CODE = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"

SECRET = "s3cret-Value-4711-xq"


def test_the_engine_removes_its_artifacts_with_the_secrets_they_carry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {"all": {"hosts": {"here": {"ansible_connection": "local", "collector_api_token": SECRET}}}}
        )
    )
    # An app that prints its own secret (as app1's .env capture does): the output is evidence until redacted.
    probes = [
        {
            "name": "leaky",
            "roles": ["all"],
            "command": 'printf "%s" "$T"',
            "env": {"T": "collector_api_token"},
        }
    ]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen: list[dict[str, Any]] = []
    during: set[str] = set()

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        during.update(str(p.relative_to(scratch)).split("/")[0] for p in scratch.rglob("job_events/*.json"))

    run = run_playbook(
        collect_playbook(), str(inventory), "here", {"collector_probes": probes}, event_handler=on_event
    )
    assert run.rc == 0, run.hosts
    encoded = base64.b64encode(SECRET.encode()).decode()
    # The leak this guards: ansible-runner's events do hold the output (so they must not outlive the run).
    assert any(encoded in json.dumps(event) for event in seen)
    assert during and all(name.startswith("collector-ansible-") for name in during), (
        during
    )  # the events were there
    assert run.artifacts_dir is None
    left = list(scratch.rglob("*"))
    assert left == [], left


def test_a_stopped_ansible_collect_stops_ansible_and_leaves_no_artifacts(tmp_path: Path) -> None:
    """SIGTERM during `collect --engine ansible`: ansible-playbook does not keep probing the hosts on its own,
    and its artifacts folder (raw host output) does not stay behind in the temp dir."""
    started = tmp_path / "slow-probe-started"
    catalogue = tmp_path / "probes.yml"
    catalogue.write_text(
        "collector_probes:\n"
        "  - {name: quick, command: echo quick-done, timeout_s: 5, description: fast}\n"
        f"  - {{name: slow, command: 'touch {started}; sleep 8', timeout_s: 20, description: hangs}}\n"
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CODE,
            "--engine",
            "ansible",
            "--hosts",
            "local",
            "-i",
            str(REPO / "inventory/local.yml"),
            "--out",
            str(tmp_path / "out"),
            "--json",
            "--catalogue",
            str(catalogue),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert wait_until(started.exists, 90, 0.05), "the slow probe never started"
    assert any(p.name.startswith("collector-ansible-") for p in scratch.iterdir())
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 1 and json.loads(stdout)["interrupted"] is True, stderr[-1000:]

    # ansible-runner's cancel kills ansible-playbook's process group; a worker in its own session finishes the
    # module it runs (bounded by the probe's timeout) and goes. Nothing of the run is left to write artifacts.
    def ansible_gone() -> bool:
        found = subprocess.run(
            ["pgrep", "-f", f"ansible-playbook .*{scratch}"], capture_output=True, check=False
        )
        return not found.stdout.split()

    assert wait_until(ansible_gone, 60, 0.2), "ansible-playbook still runs long after collect stopped"
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("collector-ansible-")]
