"""The ansible engine's own artifacts (job events carry each probe's raw output, base64-encoded, before the
controller redacts it) live in a private temporary folder that is gone when the run ends, unless a caller
asked to keep them (`private_dir`)."""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.transport.ansible import collect_playbook, run_playbook

SECRET = "s3cret-Value-4711-xq"


def test_the_engine_removes_its_artifacts_with_the_secrets_they_carry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump({"all": {"hosts": {"here": {"ansible_connection": "local", "collector_api_token": SECRET}}}})
    )
    # An app that prints its own secret (as app1's .env capture does): the output is evidence until redacted.
    probes = [{"name": "leaky", "roles": ["all"], "command": 'printf "%s" "$T"', "env": {"T": "collector_api_token"}}]
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
    assert during and all(name.startswith("collector-ansible-") for name in during), during  # the events were there
    assert run.artifacts_dir is None
    left = list(scratch.rglob("*"))
    assert left == [], left
