"""`collect` on the lab as a reviewer attacks it (issue 14): a hostile deploy checkout, hostile host vars in
every placeholder, and the secrets that must never reach ansible-runner's records.

Each test builds its hostile setup on the host itself and removes it afterwards (holding the lab lock).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.config import load_settings
from collector.inventory import load_inventory
from collector.probes import load_entries
from collector.transport import Payload, Target
from collector.transport.ansible import run as run_ansible

pytestmark = pytest.mark.lab

ENGINES = ("ssh", "ansible")
CODE = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"


def collect(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CODE, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


def manifest(bundle: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((Path(bundle) / "manifest.json").read_text())
    return doc


def probe_text(bundle: str, host: str, probe: str) -> str:
    entry = manifest(bundle)["hosts"][host]["probes"][probe]
    return (Path(bundle) / entry["path"]).read_bytes().decode(errors="replace")


def inventory_with(lab: Any, path: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    """A copy of the lab inventory with some hosts' vars overridden."""
    doc = yaml.safe_load(Path(lab.inventory).read_text())
    for group in doc["all"]["children"]["lab"]["children"].values():
        for name, hostvars in (group.get("hosts") or {}).items():
            hostvars.update(overrides.get(name, {}))
    path.write_text(yaml.safe_dump(doc))
    return path


# A checkout owned by the app's user whose config names programs git would run, and a hook. Each writes
# marker-<uid of whoever ran it> into a world-writable folder: marker-0 means root ran the user's code.
HOSTILE_CHECKOUT = (Path(__file__).parent / "hostile_checkout.sh").read_text()


@pytest.fixture()
def hostile_checkout(lab: Any, lab_lock: None, app_host: Any) -> Iterator[Path]:
    """/tmp/collector-hostile-<id>/repo on the app host, owned by the app's user (sergas)."""
    base = Path(f"/tmp/collector-hostile-{uuid.uuid4().hex[:8]}")
    made = app_host.run(HOSTILE_CHECKOUT.format(base=base, owner="sergas"))
    assert made.rc == 0, made.stderr
    try:
        yield base
    finally:
        app_host.run(f"rm -rf {base}")


def root_ran(app_host: Any, base: Path) -> bool:
    return bool(app_host.file(f"{base}/marks/marker-0").exists)


@pytest.mark.parametrize("engine", ENGINES)
def test_deploy_log_never_runs_the_checkout_owners_programs_as_root(
    engine: str, lab: Any, hostile_checkout: Path, app_host: Any, tmp_path: Path
) -> None:
    app = lab.groups["app"][0]
    repo = hostile_checkout / "repo"
    # The hostile config really runs its program when git runs as root without the collector's care.
    inv = inventory_with(lab, tmp_path / "inv.yml", {app: {"collector_deploy_dir": str(repo)}})
    summary = collect("--hosts", app, "-i", str(inv), "--out", str(tmp_path / "out"), "--engine", engine)
    host = manifest(summary["bundle"])["hosts"][app]
    assert "deploy_log" in host["probes"], host
    entry = host["probes"]["deploy_log"]
    assert not root_ran(app_host, hostile_checkout), f"{engine}: root ran the checkout owner's gpg.program"
    assert entry["status"] == "ok", entry
    log = probe_text(summary["bundle"], app, "deploy_log")
    assert "release two" in log and "release one" in log and "v1.1.0" in log.split("\n\n")[-1]
    # Control: the same git as root with safe.directory='*' (what the probe did) runs it.
    app_host.run(f"git -c safe.directory='*' -C {repo} log -n 1 >/dev/null 2>&1")
    assert root_ran(app_host, hostile_checkout), (
        "the hostile checkout did not trigger: the test proves nothing"
    )


# Every metacharacter class the issue names; no value starts with "-" (those are refused up front, so the
# command would not even run) and the URL stays on the host's loopback.
def hostile_value(marker: str, name: str) -> str:
    tail = f"$(touch {marker}-1)`touch {marker}-2`'\"; touch {marker}-3; \"'\ntouch {marker}-4\n*"
    if name.endswith("_url"):
        return f"http://127.0.0.1:8000/x{tail}"
    return f"x{tail}"


def test_hostile_values_in_every_placeholder_run_nothing_on_the_hosts(lab: Any, tmp_path: Path) -> None:
    hosts = [lab.groups[g][0] for g in ("app", "db", "redis")]
    marker = f"/tmp/collector-hostile-marker-{uuid.uuid4().hex[:8]}"
    placeholders = {name for e in load_entries() for name in _names(e["command"])} - {"since", "since_utc"}
    inv_doc = load_inventory(str(lab.inventory))
    overrides: dict[str, dict[str, Any]] = {}
    for host in hosts:
        # Every placeholder the catalogue has, on every host, hostile (secrets keep their real values).
        overrides[host] = {name: hostile_value(marker, name) for name in placeholders}
        assert not set(overrides[host]) & {k for k in inv_doc.hosts[host] if "password" in k}
    inv = inventory_with(lab, tmp_path / "hostile.yml", overrides)
    try:
        for engine in ENGINES:
            summary = collect(
                "--hosts",
                ":".join(hosts),
                "-i",
                str(inv),
                "--out",
                str(tmp_path / engine),
                "--engine",
                engine,
                "--since",
                "2m",
            )
            m = manifest(summary["bundle"])
            ran = [
                p
                for h in hosts
                for p, e in m["hosts"][h]["probes"].items()
                if e["status"] not in ("skipped",)
            ]
            assert len(ran) > 20, (
                engine,
                ran,
            )  # the hostile commands ran (and failed), they were not skipped
            for host in hosts:
                found = lab.host(host).run(f"ls -d {marker}* 2>/dev/null")
                assert found.stdout.strip() == "", f"{engine}: {host} ran a host var: {found.stdout}"
    finally:
        for host in hosts:
            lab.host(host).run(f"rm -f {marker}*")


def _names(command: str) -> set[str]:
    from collector.probes import runner_module

    return set(runner_module()._PLACEHOLDER.findall(command))


def _files_holding(folder: Path, secrets: list[str]) -> list[str]:
    hits = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits += [
            f"{path.relative_to(folder)}: secret #{i}" for i, s in enumerate(secrets) if s.encode() in data
        ]
    return hits


def test_no_secret_reaches_ansible_runners_artifacts(lab: Any, tmp_path: Path) -> None:
    """Both ways the playbook runs: the engine behind `collect --engine ansible`, artifacts kept, and plain
    ansible-runner as AWX runs it for `collector ingest`; every file of both artifact folders is searched."""
    app, db, redis = (lab.groups[g][0] for g in ("app", "db", "redis"))
    secrets = [v for v in lab.secrets.values() if isinstance(v, str) and len(v) >= 6]
    assert len(secrets) >= 3
    # Seed every lab secret as a host var the probes can use (the API token is the circuit breaker's).
    inv = inventory_with(
        lab,
        tmp_path / "inv.yml",
        {
            app: {
                "collector_api_token": lab.secrets["api_token"],
                "collector_db_password": lab.secrets["db_password"],
            },
            db: {"collector_pg_password": lab.secrets["db_password"]},
            redis: {"collector_redis_password": lab.secrets["redis_password"]},
        },
    )
    inventory = load_inventory(str(inv))
    targets = {h: Target(h, inventory.hosts[h], inventory.roles(h)) for h in (app, db, redis)}
    private = tmp_path / "engine"
    payload = Payload(
        load_entries(),
        since="5m",
        cap_bytes=1 << 22,
        default_timeout_s=30,
        extra={"inventory_files": [str(inv)], "ansible_private_dir": str(private)},
    )
    results = run_ansible(targets, payload, load_settings(inventory=str(inv)), lambda *_: None)
    assert results[redis].status == "ok" and results[app].status in ("ok", "partial"), results
    ping = next(p for p in results[redis].probes if p.probe == "redis_ping")
    assert ping.output.strip() == b"PONG"  # the password reached redis-cli
    breaker = next(p for p in results[app].probes if p.probe == "circuit_breaker")
    assert b"HTTP 200" in breaker.output, breaker.output[-300:]
    assert list(private.rglob("job_events/*.json")), "the engine kept no artifacts"
    assert _files_holding(private, secrets) == []

    elsewhere = tmp_path / "runner"
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(tmp_path / "ah"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "at"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp"),
        "ANSIBLE_PIPELINING": "True",
        "MAX_EVENT_RES": str(1 << 31),
    }
    from collector.paths import resource

    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-runner"),
            "run",
            str(elsewhere),
            "-p",
            str(resource("playbooks") / "collect.yml"),
            "--inventory",
            str(inv),
            "--limit",
            f"{app}:{db}:{redis}",
            "--ident",
            "awx",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert list(elsewhere.rglob("job_events/*.json"))
    assert _files_holding(elsewhere, secrets) == []
    assert not any(s in proc.stdout + proc.stderr for s in secrets)
    # ...and `collector ingest` still builds the bundle from those artifacts.
    code = "import sys; from collector.cli import main; sys.argv[0] = 'collector'; main()"
    ing = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "ingest",
            str(elsewhere / "artifacts" / "awx"),
            "--out",
            str(tmp_path / "ing"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ing.returncode in (0, 1), ing.stderr
    bundle = json.loads(ing.stdout)["bundle"]
    assert probe_text(bundle, redis, "redis_ping").strip() == "PONG"
