"""playbooks/collect.yml run here (ansible_connection: local) through the one front door: secret host vars
reach the probes' environments, never a job event or artifact, and Ansible's masking never corrupts the
answer."""

from __future__ import annotations

from pathlib import Path

import yaml

from collector.transport import Target
from collector.transport.ansible import (
    collect_playbook,
    host_results_from_events,
    read_artifact_events,
    run_playbook,
)

LONG_SECRET = "s3cret-Value-4711-xq"
SHORT_SECRET = "ok"  # a weak password that is also a word of every answer ("status": "ok")


def test_secrets_reach_the_probes_but_no_ansible_record(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "here": {
                            "ansible_connection": "local",
                            "collector_service_token": LONG_SECRET,
                            "collector_redis_password": SHORT_SECRET,
                            "collector_label": "plain",
                        }
                    }
                }
            }
        )
    )
    probes = [
        {
            "name": "token",
            "roles": ["all"],
            "command": 'printf "%s|%s" "$TOKEN" {collector_label}',
            "env": {"TOKEN": "collector_service_token"},
        },
        {
            "name": "redis_like",
            "roles": ["all"],
            "command": 'printf "%s" "$REDISCLI_AUTH"; echo " ok"',
            "env": {"REDISCLI_AUTH": "collector_redis_password"},
        },
    ]
    private = tmp_path / "private"
    run = run_playbook(
        collect_playbook(), str(inventory), "here", {"collector_probes": probes}, private_dir=private
    )
    assert run.rc == 0, run.hosts
    events = list(read_artifact_events(Path(run.artifacts_dir or "")))
    result = host_results_from_events(events, {"here": Target("here", {}, ())})["here"]
    by = {p.probe: p for p in result.probes}
    assert by["token"].status == "ok" and by["token"].output == f"{LONG_SECRET}|plain".encode()
    assert (
        by["redis_like"].status == "ok" and by["redis_like"].output == b"ok ok\n"
    )  # answer intact, not masked
    hits = [str(p) for p in private.rglob("*") if p.is_file() and LONG_SECRET.encode() in p.read_bytes()]
    assert hits == []
    assert any(
        b"VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in p.read_bytes() for p in private.rglob("job_events/*.json")
    )
