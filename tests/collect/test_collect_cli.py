"""`collect` end to end on this machine (connection local): bundle, exit codes, Ctrl-C, both engines."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LOCAL = str(REPO / "inventory" / "local.yml")
HERE = Path(__file__).parent / "inventories"
CODE = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"


def collect(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    code = CODE
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def manifest(bundle: str | Path) -> dict[str, Any]:
    return json.loads((Path(bundle) / "manifest.json").read_text())


def test_collect_local_writes_a_verified_bundle(tmp_path: Path) -> None:
    proc = collect("--hosts", "local", "-i", LOCAL, "--out", str(tmp_path), "--json", "--incident", "INC-1")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    bundle = Path(summary["bundle"])
    assert bundle.name == "INC-1" and summary["hosts"]["local"]["status"] == "ok"
    m = manifest(bundle)
    assert m["incident"] == "INC-1" and m["pattern"] == "local" and m["engine"] == "ssh"
    assert m["interrupted"] is False and m["redacted"] is True
    probes = m["hosts"]["local"]["probes"]
    assert probes["uptime"]["status"] == "ok" and probes["uptime"]["rc"] == 0
    assert b"load average" in (bundle / probes["uptime"]["path"]).read_bytes()
    assert probes["service_status"]["status"] == "skipped"  # no collector_service for `local`
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (tmp_path / "INC-1.tar.gz").is_file() and (tmp_path / "INC-1.tar.gz.sha256").is_file()


def test_human_output_has_the_host_table_and_bundle_path_without_colour(tmp_path: Path) -> None:
    proc = collect("--hosts", "local", "-i", LOCAL, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "local" in proc.stdout and "ok" in proc.stdout
    assert f"bundle: {tmp_path}" in proc.stdout
    assert "\x1b[" not in proc.stdout and "\x1b[" not in proc.stderr  # not a TTY: no colour, no live redraw


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hosts", "local", "-i", str(HERE / "malformed.yml")], "malformed"),
        (["--hosts", "nosuch", "-i", LOCAL], "matches no host"),
        (["--hosts", "local", "-i", "/nonexistent/inventory.yml"], "does not exist"),
        (["--hosts", "local", "-i", LOCAL, "--since", "yesterday-ish"], "--since"),
        (["--hosts", "local", "-i", LOCAL, "--engine", "telnet"], "telnet"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    proc = collect(*args, "--out", str(out))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_both_engines_give_the_same_probes_and_statuses(tmp_path: Path) -> None:
    results = {}
    for engine in ("ssh", "ansible"):
        proc = collect(
            "--hosts", "local", "-i", LOCAL, "--out", str(tmp_path / engine), "--json", "--engine", engine
        )
        assert proc.returncode == 0, proc.stderr
        m = manifest(json.loads(proc.stdout)["bundle"])
        assert m["engine"] == engine
        results[engine] = {p: e["status"] for p, e in m["hosts"]["local"]["probes"].items()}
    assert results["ssh"] == results["ansible"]
    assert results["ssh"]["free"] == "ok"


def test_ctrl_c_leaves_a_valid_bundle_marked_interrupted(tmp_path: Path) -> None:
    catalogue = tmp_path / "probes.yml"
    catalogue.write_text(
        "collector_probes:\n"
        "  - {name: quick, command: echo quick-done, timeout_s: 5, description: fast}\n"
        "  - {name: slow, command: sleep 60, timeout_s: 90, description: hangs}\n"
    )
    code = CODE
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "--hosts",
            "local",
            "-i",
            LOCAL,
            "--out",
            str(tmp_path / "out"),
            "--json",
            "--catalogue",
            str(catalogue),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] is True
    m = manifest(summary["bundle"])
    assert m["interrupted"] is True
    assert m["hosts"]["local"]["status"] in ("failed", "partial")
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=summary["bundle"], capture_output=True)
    assert check.returncode == 0


def test_timeout_option_caps_every_probe_and_marks_the_host_partial(tmp_path: Path) -> None:
    proc = collect("--hosts", "local", "-i", LOCAL, "--out", str(tmp_path), "--json", "--timeout", "0.5")
    assert proc.returncode == 1, proc.stderr  # iostat samples for 1 s: killed at 0.5 s
    summary = json.loads(proc.stdout)
    probes = manifest(summary["bundle"])["hosts"]["local"]["probes"]
    assert probes["iostat"]["status"] == "timeout" and probes["iostat"]["rc"] == 124
    assert probes["iostat"]["duration_s"] < 3
    assert probes["uptime"]["status"] == "ok"
    assert summary["hosts"]["local"]["status"] == "partial"


def test_secret_host_vars_never_reach_the_bundle_and_no_redact_marks_it(tmp_path: Path) -> None:
    import gzip

    secret = "tok-Zq81-secret-value-4471"
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        f"all:\n  hosts:\n    local:\n      ansible_connection: local\n      collector_api_token: {secret}\n"
    )
    catalogue = tmp_path / "probes.yml"
    catalogue.write_text(
        yaml.safe_dump(
            {
                "collector_probes": [
                    {
                        "name": "leak",
                        "description": "prints a secret on purpose",
                        "command": 'echo "token in output: $COLLECTOR_API_TOKEN"; echo {collector_api_token}',
                        "env": {"COLLECTOR_API_TOKEN": "collector_api_token"},
                    }
                ]
            }
        )
    )
    proc = collect(
        "--hosts",
        "local",
        "-i",
        str(inventory),
        "--out",
        str(tmp_path / "r"),
        "--json",
        "--catalogue",
        str(catalogue),
    )
    assert proc.returncode == 0, proc.stderr
    bundle = Path(json.loads(proc.stdout)["bundle"])
    assert "token in output:" in (bundle / "hosts/local/leak.txt").read_text()
    archive = gzip.decompress(Path(f"{bundle}.tar.gz").read_bytes())
    assert secret.encode() not in archive
    assert secret not in proc.stdout
    raw = collect(
        "--hosts",
        "local",
        "-i",
        str(inventory),
        "--out",
        str(tmp_path / "n"),
        "--json",
        "--catalogue",
        str(catalogue),
        "--no-redact",
    )
    assert raw.returncode == 0, raw.stderr
    unredacted = Path(json.loads(raw.stdout)["bundle"])
    assert unredacted.name.endswith("UNREDACTED") and manifest(unredacted)["redacted"] is False
    assert secret in (unredacted / "hosts/local/leak.txt").read_text()


def test_ingest_of_a_folder_without_artifacts_exits_2(tmp_path: Path) -> None:
    code = "import sys; from collector.cli import main; sys.argv[0] = 'collector'; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "ingest", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no ansible-runner artifacts" in proc.stderr
    assert not (tmp_path / "o").exists()
