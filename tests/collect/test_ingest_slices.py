"""`collector ingest DIR [DIR...]`: several AWX job slices / ansible-runner runs of playbooks/collect.yml make
ONE bundle, each host once, the same manifest as a direct collection; a host in two slices with different
results is one line and exit 2, with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collector.collect import merge_slices
from collector.core import HostResult, ProbeResult, UsageError

CLI = "import sys; from collector.cli import main; sys.argv[0] = 'collector'; main()"
COLLECT = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"
SINCE = "7m"


def _cli(*args: str, code: str = CLI) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False
    )


def _host(name: str, output: bytes = b"up 3 days\n", status: str = "ok") -> HostResult:
    probe = ProbeResult(
        name, "uptime", "uptime", "ok", 0, "2026-01-01T00:00:00Z", 0.01, output, bytes=len(output)
    )
    return HostResult(name, status, None, [probe], roles=("web",))  # type: ignore[arg-type]


# ---------------------------------------------------------------- the merge rule (pure function)


def test_merge_keeps_each_host_once_and_identical_duplicates() -> None:
    merged = merge_slices(
        [
            ("slice-1", {"web02": _host("web02"), "web01": _host("web01")}),
            ("slice-2", {"web01": _host("web01")}),
        ]
    )
    assert list(merged) == ["web01", "web02"]
    assert merged["web01"] == _host("web01")


def test_merge_refuses_a_host_with_two_different_results_naming_both_slices() -> None:
    with pytest.raises(UsageError) as err:
        merge_slices(
            [
                ("slice-1", {"web01": _host("web01")}),
                ("slice-2", {"web02": _host("web02")}),
                ("slice-3", {"web01": _host("web01", b"up 4 days\n")}),
            ]
        )
    message = str(err.value)
    assert "web01" in message and "slice-1" in message and "slice-3" in message and "\n" not in message
    with pytest.raises(UsageError, match="web01"):  # a status that differs is a different result too
        merge_slices([("a", {"web01": _host("web01")}), ("b", {"web01": _host("web01", status="partial")})])


def test_ingest_of_a_folder_holding_neither_artifacts_nor_awx_pages_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.json").write_text('{"hello": 1}')
    proc = _cli("ingest", str(tmp_path / "empty"), str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    assert "no ansible-runner artifacts" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- real ansible-runner runs on the lab


def _runner(lab: Any, tmp: Path, name: str, limit: str, extra: str = "") -> Path:
    """One plain ansible-runner run of the shipped playbook, as AWX runs each slice; its artifacts folder."""
    from collector.paths import resource

    private = tmp / name
    private.mkdir()
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(tmp / "ah"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "at"),
        "ANSIBLE_PIPELINING": "True",
        "MAX_EVENT_RES": str(1 << 31),
    }
    argv = [str(Path(sys.executable).parent / "ansible-runner"), "run", str(private)]
    argv += ["-p", str(resource("playbooks") / "collect.yml"), "--inventory", str(lab.inventory)]
    argv += ["--limit", limit, "--ident", "slice", "--cmdline", f"-e collector_since={SINCE} {extra}".strip()]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return private / "artifacts" / "slice"


def _manifest(bundle: str | Path) -> dict[str, Any]:
    return json.loads((Path(bundle) / "manifest.json").read_text())


def _shape(m: dict[str, Any]) -> dict[str, Any]:
    host_keys = {tuple(sorted(h)) for h in m["hosts"].values()}
    probe_keys = {tuple(sorted(p)) for h in m["hosts"].values() for p in h["probes"].values()}
    return {"top": sorted(m), "host": host_keys, "probe": probe_keys}


@pytest.mark.lab
def test_two_real_slices_make_one_bundle_like_a_direct_collection(lab: Any, tmp_path: Path) -> None:
    app, db, redis = lab.groups["app"][0], lab.groups["db"][0], lab.groups["redis"][0]
    first = _runner(lab, tmp_path, "slice1", app)
    second = _runner(lab, tmp_path, "slice2", f"{db},{redis}")
    # The same slice named twice is an identical duplicate: fine.
    ing = _cli("ingest", str(first), str(second), str(first), "--out", str(tmp_path / "ing"), "--json")
    assert ing.returncode in (0, 1), ing.stderr
    bundle = Path(json.loads(ing.stdout)["bundle"])
    merged = _manifest(bundle)
    assert sorted(merged["hosts"]) == sorted([app, db, redis])
    assert merged["engine"] == "ansible-ingest" and merged["pattern"] == f"{app}:{db},{redis}"
    assert merged["since"] == SINCE and merged["inventory"] == str(lab.inventory)
    assert merged["summary"]["hosts"] == 3
    assert (bundle / "hosts" / redis / "redis_ping.txt").read_text().strip() == "PONG"
    assert (
        subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, check=False).returncode == 0
    )
    log = (bundle / "collector.log").read_text()
    assert "merged 3 slices: 3 host(s)" in log

    direct = _cli(
        "--hosts", f"{app}:{db}:{redis}", "-i", str(lab.inventory), "--since", SINCE,
        "--out", str(tmp_path / "direct"), "--json", code=COLLECT,
    )  # fmt: skip
    assert direct.returncode in (0, 1), direct.stderr
    reference = _manifest(json.loads(direct.stdout)["bundle"])
    assert _shape(merged) == _shape(reference)
    assert {h: sorted(v["probes"]) for h, v in merged["hosts"].items()} == {
        h: sorted(v["probes"]) for h, v in reference["hosts"].items()
    }
    assert {h: v["roles"] for h, v in merged["hosts"].items()} == {
        h: v["roles"] for h, v in reference["hosts"].items()
    }

    # AWX: the same slice's events as `GET /api/v2/jobs/N/job_events/` pages (results lists, one per page).
    events = [json.loads(p.read_text()) for p in sorted((second / "job_events").glob("*.json"))]
    awx = tmp_path / "awx-job-2"
    awx.mkdir()
    half = len(events) // 2
    for page, chunk in enumerate((events[:half], events[half:]), start=1):
        body = {"count": len(events), "next": None, "previous": None, "results": chunk}
        (awx / f"page-{page}.json").write_text(json.dumps(body))
    from_awx = _cli("ingest", str(first), str(awx), "--out", str(tmp_path / "awx"), "--json")
    assert from_awx.returncode in (0, 1), from_awx.stderr
    assert sorted(_manifest(json.loads(from_awx.stdout)["bundle"])["hosts"]) == sorted([app, db, redis])

    # A second run of the first slice's host: its result differs (times, output): one line, exit 2, no bundle.
    again = _runner(lab, tmp_path, "slice3", app)
    clash = _cli("ingest", str(first), str(second), str(again), "--out", str(tmp_path / "clash"))
    assert clash.returncode == 2, clash.stdout + clash.stderr
    assert f"host {app} is in two slices with different results" in clash.stderr
    assert str(first) in clash.stderr and str(again) in clash.stderr
    assert clash.stderr.strip().count("\n") == 0
    assert not (tmp_path / "clash").exists()


@pytest.mark.lab
def test_a_sealed_slice_from_real_hosts_opens_with_its_key_only(lab: Any, tmp_path: Path) -> None:
    """Sealed on db1 and redis1 themselves (their openssl), opened here: the same hosts, host statuses and
    probes as an unsealed run, and no probe output in the artifacts."""
    import yaml

    key, cert = tmp_path / "ingest-key.pem", tmp_path / "ingest-cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-days", "30", "-subj", "/CN=ingest"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    seal = tmp_path / "seal.yml"
    seal.write_text(yaml.safe_dump({"collector_output_recipient": cert.read_text()}))
    db, redis = lab.groups["db"][0], lab.groups["redis"][0]
    sealed = _runner(lab, tmp_path, "sealed", f"{db},{redis}", extra=f"-e @{seal}")
    results = [
        e["event_data"]["res"]
        for e in (json.loads(p.read_text()) for p in (sealed / "job_events").glob("*.json"))
        if e.get("event") == "runner_on_ok"
    ]
    assert len(results) == 2 and all(r["sealed"] and "stdout" not in r for r in results), results
    refused = _cli("ingest", str(sealed), "--out", str(tmp_path / "no-key"))
    assert refused.returncode == 2 and "--unseal-key" in refused.stderr, refused.stderr
    opened = _cli("ingest", str(sealed), "--out", str(tmp_path / "ing"), "--unseal-key", str(key), "--json")
    assert opened.returncode in (0, 1), opened.stderr
    bundle = Path(json.loads(opened.stdout)["bundle"])
    assert (bundle / "hosts" / redis / "redis_ping.txt").read_text().strip() == "PONG"
    plain = _runner(lab, tmp_path, "plain", f"{db},{redis}")
    reference = _cli("ingest", str(plain), "--out", str(tmp_path / "plain-ing"), "--json")
    assert reference.returncode in (0, 1), reference.stderr
    probes = {h: (v["status"], sorted(v["probes"])) for h, v in _manifest(bundle)["hosts"].items()}
    expected = {
        h: (v["status"], sorted(v["probes"]))
        for h, v in _manifest(json.loads(reference.stdout)["bundle"])["hosts"].items()
    }
    assert probes == expected
