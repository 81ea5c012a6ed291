"""`collect` end to end on this machine (connection local): bundle, exit codes, Ctrl-C, both engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.times import wait_until

REPO = Path(__file__).resolve().parents[2]
LOCAL = str(REPO / "inventory" / "local.yml")
HERE = Path(__file__).parent / "inventories"
CODE = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"


def collect(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    code = CODE
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def manifest(bundle: str | Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((Path(bundle) / "manifest.json").read_text())
    return loaded


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
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True, check=False
    )
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_leaves_a_valid_bundle_marked_interrupted(tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl-C, a `kill` and a dropped SSH session (SIGHUP) all end the same way: the bundle, exit 1."""
    started = tmp_path / "slow-probe-started"
    catalogue = tmp_path / "probes.yml"
    catalogue.write_text(
        "collector_probes:\n"
        "  - {name: quick, command: echo quick-done, timeout_s: 5, description: fast}\n"
        f"  - {{name: slow, command: 'touch {started}; sleep 60', timeout_s: 90, description: hangs}}\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CODE,
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
    assert wait_until(started.exists, 60, 0.05), "the slow probe never started"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] is True
    bundle = Path(summary["bundle"])
    m = manifest(bundle)
    assert m["interrupted"] is True
    assert m["hosts"]["local"]["status"] in ("failed", "partial")
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, check=False)
    assert check.returncode == 0
    assert Path(f"{bundle}.tar.gz").is_file() and Path(f"{bundle}.tar.gz.sha256").is_file()
    log = (bundle / "collector.log").read_text()
    assert "interrupted" in log and (sig.name in log or sig == signal.SIGINT)


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
        check=False,
    )
    assert proc.returncode == 2 and "no ansible-runner artifacts" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_what_was_written_and_says_what_is_missing(
    tmp_path: Path, small_disk: Path
) -> None:
    catalogue = tmp_path / "probes.yml"
    catalogue.write_text(
        "collector_probes:\n"
        "  - {name: a_small, command: echo small-evidence-kept, timeout_s: 5, description: fits}\n"
        "  - {name: b_big, command: 'head -c 3000000 /dev/zero | tr \"\\\\0\" x', timeout_s: 20,"
        " description: does not fit}\n"
        "  - {name: c_after, command: echo after-the-big-one, timeout_s: 5, description: comes after}\n"
    )
    proc = collect(
        "--hosts", "local", "-i", LOCAL, "--out", str(small_disk), "--json", "--catalogue", str(catalogue)
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "INCOMPLETE" in lines[0] and "No space left on device" in lines[0], proc.stderr
    summary = json.loads(proc.stdout)
    bundle = Path(summary["bundle"])
    m = manifest(bundle)
    missing = m["incomplete"]["missing"]
    assert missing[:2] == ["hosts/local/b_big.txt", "hosts/local/c_after.txt"]
    assert all(p.startswith("monitoring/") for p in missing[2:])  # written after the hosts: missing too
    assert m["incomplete"]["archive"] is False and "No space left" in m["incomplete"]["reason"]
    assert (bundle / "hosts/local/a_small.txt").read_text() == "small-evidence-kept\n"
    assert m["hosts"]["local"]["probes"]["b_big"]["path"] is None
    assert m["hosts"]["local"]["probes"]["b_big"]["status"] == "ok"  # collected fine; only the disk failed
    check = subprocess.run(
        ["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "INCOMPLETE" in (bundle / "collector.log").read_text()
    assert not list(small_disk.glob(".*"))  # no hidden temporary left behind


def test_each_host_is_written_as_it_answers_and_kept_when_the_run_is_stopped(tmp_path: Path) -> None:
    """The fast host's evidence is on disk while the slow one still works; SIGTERM then keeps it whole."""
    started = tmp_path / "slow-started"
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        "all:\n  hosts:\n"
        "    fast: {ansible_connection: local}\n"
        "    slow: {ansible_connection: local, collector_slow_s: 60}\n"
    )
    catalogue = tmp_path / "probes.yml"
    catalogue.write_text(
        "collector_probes:\n"
        "  - {name: quick, command: echo quick-done, timeout_s: 5, description: fast}\n"
        f"  - {{name: slow, command: 'touch {started}; sleep {{collector_slow_s}}', timeout_s: 90,"
        " description: only where collector_slow_s is set}\n"
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CODE,
            "--hosts",
            "all",
            "-i",
            str(inventory),
            "--out",
            str(out),
            "--json",
            "--catalogue",
            str(catalogue),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    written = wait_until(
        lambda: list(out.glob(".*.tmp/hosts/fast/quick.txt")) if started.exists() else [], 60, 0.05
    )
    assert written, "the fast host's evidence was not on disk while the slow host was still running"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    bundle = Path(json.loads(stdout)["bundle"])
    m = manifest(bundle)
    assert m["interrupted"] is True
    assert m["hosts"]["fast"]["status"] == "ok" and m["hosts"]["slow"]["status"] == "failed"
    assert (bundle / "hosts/fast/quick.txt").read_text() == "quick-done\n"
    assert (
        subprocess.run(
            ["sha256sum", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, check=False
        ).returncode
        == 0
    )


def test_a_dropped_terminal_still_leaves_the_bundle(tmp_path: Path) -> None:
    """The SSH session dies: the kernel hangs up the terminal (SIGHUP to the job, output to a dead tty)."""
    import fcntl
    import termios

    started = tmp_path / "slow-probe-started"
    catalogue = tmp_path / "probes.yml"
    catalogue.write_text(
        "collector_probes:\n"
        "  - {name: quick, command: echo quick-done, timeout_s: 5, description: fast}\n"
        f"  - {{name: slow, command: 'touch {started}; sleep 60', timeout_s: 90, description: hangs}}\n"
    )
    out = tmp_path / "out"
    master, slave = os.openpty()

    def controlling_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CODE,
            "--hosts",
            "local",
            "-i",
            LOCAL,
            "--out",
            str(out),
            "--catalogue",
            str(catalogue),
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_terminal,  # noqa: PLW1509 - the only way to give the child a controlling tty
    )
    os.close(slave)
    try:
        assert wait_until(started.exists, 60, 0.05), "the slow probe never started"
    finally:
        os.close(master)  # the hang-up
    assert proc.wait(timeout=60) == 1
    bundles = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(bundles) == 1
    m = manifest(bundles[0])
    assert m["interrupted"] is True and "SIGHUP" in (bundles[0] / "collector.log").read_text()
    assert Path(f"{bundles[0]}.tar.gz").is_file()
