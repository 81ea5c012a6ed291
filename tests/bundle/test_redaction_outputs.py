"""Redaction covers every output of a real `collect`: bundle files, manifest, collector.log, archive, the
terminal table and `--json`, host error messages (issue 14 point 3). Runs on this machine, no lab needed."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from collector.times import wait_until

REPO = Path(__file__).resolve().parents[2]
LOCAL = str(REPO / "inventory" / "local.yml")
CODE = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"

# Secrets a process list shows on command lines (fake, each in another format). The process holds
# ~300 MB so the catalogue's ps_mem probe (top 40 by memory) lists it.
ARGV_SECRETS = {
    "https://hooks.slack.com/services/T0FAKE0E2E/B0FAKE0E2E/": "FakeSlackE2eWebhook0000x",
    "--db-password=": "FakeE2e;pw&tail,end",
    "postgresql://app:": "FakeDsn@with@ats",
    "github_pat_": "11FAKEE2E0000000000000_fakeE2eGithubPatFakeE2eGithubPatFakeE2eGithubPat0000",
    "--token ": "FakeE2eTokenValue123456",
}


def _argv() -> list[str]:
    """One command-line argument string per secret."""
    return [
        f"{prefix}{secret}@db1:5432/app" if prefix.startswith("postgresql") else f"{prefix}{secret}"
        for prefix, secret in ARGV_SECRETS.items()
    ]


def _secret_strings() -> list[str]:
    found = [ARGV_SECRETS[k] for k in ARGV_SECRETS]
    return found + [s[-8:] for s in found]  # no tail either


def collect(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-c", CODE, *args], check=False, capture_output=True, text=True, timeout=240, env=env
    )


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture()
def secret_processes(tmp_path: Path) -> Iterator[list[int]]:
    """One process per secret (ps cuts a line at 200 columns), each holding ~300 MB so ps_mem lists it."""
    short = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))  # a short path leaves the secret inside the 200
    hog = short / "h.py"
    hog.write_text("import time\nb = b'x' * (300 * 2**20)\ntime.sleep(300)\n")
    procs = [subprocess.Popen([sys.executable, str(hog), *arg.split(" ")]) for arg in _argv()]
    try:
        for proc in procs:
            wait_until(lambda p=proc: _rss_kib(p.pid) > 250_000, timeout_s=30, interval_s=0.1)  # type: ignore[misc]
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(short, ignore_errors=True)


def _everything(out: Path) -> str:
    """Every byte the run left in `out`: bundle files, archive members (unpacked), sums."""
    parts: list[bytes] = []
    for path in sorted(out.rglob("*")):
        if not path.is_file():
            continue
        parts.append(path.read_bytes())
        if path.name.endswith(".tar.gz"):
            parts.append(gzip.decompress(path.read_bytes()))
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        parts.append(handle.read())
    return b"\n".join(parts).decode("utf-8", "replace")


def _assert_clean(text: str, where: str) -> None:
    for secret in _secret_strings():
        assert secret not in text, f"{secret!r} leaked into {where}"


def test_collect_local_leaks_no_secret_of_a_process_list(tmp_path: Path, secret_processes: list[int]) -> None:
    runs = {
        "json": collect("--hosts", "local", "-i", LOCAL, "--out", str(tmp_path / "j"), "--json"),
        "table": collect("--hosts", "local", "-i", LOCAL, "--out", str(tmp_path / "t")),
    }
    for kind, proc in runs.items():
        assert proc.returncode in (0, 1), proc.stderr
        _assert_clean(proc.stdout, f"{kind} stdout")
        _assert_clean(proc.stderr, f"{kind} stderr")
    bundle = Path(json.loads(runs["json"].stdout)["bundle"])
    ps_mem = (bundle / "hosts" / "local" / "ps_mem.txt").read_text()
    lines = [
        line
        for line in ps_mem.splitlines()
        if line.split()[:1] and line.split()[0].isdigit() and int(line.split()[0]) in secret_processes
    ]
    assert len(lines) == len(ARGV_SECRETS), ps_mem  # every process was captured ...
    assert all("«REDACTED:" in line for line in lines), lines  # ... and the secret on its line replaced
    for out in (tmp_path / "j", tmp_path / "t"):
        assert list(out.glob("*.tar.gz")), "no archive written"
        _assert_clean(_everything(out), f"the files under {out}")


def test_host_error_messages_are_redacted_in_table_json_manifest_and_log(tmp_path: Path) -> None:
    """An interpreter wrapper that sets a password (`/usr/bin/env PGPASSWORD=... python3`) is quoted back by
    the host's error when it cannot start; a secret host variable rides along as a known secret."""
    secret = "FakeIntPw;9&tail"
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "local": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": (
                                f"/usr/bin/env PGPASSWORD={secret} /nonexistent/python3"
                            ),
                            "collector_api_token": "FakeKnownInventoryTok9",
                        }
                    }
                }
            }
        )
    )
    as_json = collect("--hosts", "local", "-i", str(inventory), "--out", str(tmp_path / "j"), "--json")
    table = collect("--hosts", "local", "-i", str(inventory), "--out", str(tmp_path / "t"))
    assert as_json.returncode == 1 and table.returncode == 1, as_json.stderr + table.stderr
    doc = json.loads(as_json.stdout)
    error = doc["hosts"]["local"]["error"]
    assert doc["hosts"]["local"]["status"] == "failed"
    assert "cannot start /usr/bin/env PGPASSWORD=«REDACTED:" in error  # the message is there, scrubbed
    assert "PGPASSWORD=«REDACTED:" in table.stdout
    for text, where in (
        (as_json.stdout + as_json.stderr, "--json"),
        (table.stdout + table.stderr, "table"),
        (_everything(tmp_path / "j") + _everything(tmp_path / "t"), "bundle files and archives"),
    ):
        assert secret not in text and "9&tail" not in text and "FakeKnownInventoryTok9" not in text, where
    manifest = json.loads((Path(doc["bundle"]) / "manifest.json").read_text())
    assert "PGPASSWORD=«REDACTED:" in manifest["hosts"]["local"]["error"]


def test_ingest_redacts_the_secret_host_variables_of_the_inventory_it_is_given(tmp_path: Path) -> None:
    """A playbooks/collect.yml run made elsewhere (plain ansible-runner, this machine): the value of a secret
    host variable shows up in the process list in no pattern's format; `ingest -i` makes it a known secret."""
    from collector.paths import resource as shipped

    value = "FakeIngestKnownValue7"
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "local": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                            "collector_api_token": value,
                        }
                    }
                }
            }
        )
    )
    short = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))
    (short / "h.py").write_text("import time\nb = b'x' * (300 * 2**20)\ntime.sleep(300)\n")
    hog = subprocess.Popen([sys.executable, str(short / "h.py"), "worker", value])
    try:
        wait_until(lambda: _rss_kib(hog.pid) > 250_000, timeout_s=30, interval_s=0.1)
        private = tmp_path / "runner"
        private.mkdir()
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "ANSIBLE_HOME": str(tmp_path / "ah"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "at"),
            "MAX_EVENT_RES": str(1 << 31),
        }
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible-runner"),
                "run",
                str(private),
                "-p",
                str(shipped("playbooks") / "collect.yml"),
                "--inventory",
                str(inventory),
                "--limit",
                "local",
                "--ident",
                "elsewhere",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    finally:
        hog.kill()
        hog.wait()
        shutil.rmtree(short, ignore_errors=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    artifacts = private / "artifacts" / "elsewhere"
    code = "import sys; from collector.cli import main; sys.argv[0] = 'collector'; main()"

    def ingest(*args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        proc = subprocess.run(
            [sys.executable, "-c", code, "ingest", str(artifacts), "--out", str(out), "--json", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode in (0, 1), proc.stderr
        return proc, Path(json.loads(proc.stdout)["bundle"])

    proc, bundle = ingest("-i", str(inventory))
    assert "worker «REDACTED:known_secret:" in (bundle / "hosts/local/ps_mem.txt").read_text()
    assert value not in proc.stdout + proc.stderr + _everything(bundle.parent)
    # Without the inventory (moved away, none given) the value is only a word: it stays, so -i is what did it.
    inventory.rename(tmp_path / "elsewhere.yml")
    _, bare = ingest()
    assert f"worker {value}" in (bare / "hosts/local/ps_mem.txt").read_text()
    assert "no inventory: pass -i INVENTORY" in (bare / "collector.log").read_text()


def test_error_lines_and_tracebacks_are_redacted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An operator pastes the wrong thing into a flag: the one error line must not echo it back in clear."""
    proc = collect("--hosts", "local", "-i", LOCAL, "--since", "token=FakeSinceTok9", "--out", str(tmp_path))
    assert proc.returncode == 2 and "error: --since 'token=«REDACTED:" in proc.stderr
    assert "FakeSinceTok9" not in proc.stdout + proc.stderr
    from collector.cli import _redacting_excepthook

    try:
        raise RuntimeError("connect postgresql://app:FakeCrashPw9@db1/app failed")
    except RuntimeError as exc:
        _redacting_excepthook(RuntimeError, exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "RuntimeError: connect postgresql://app:«REDACTED:" in err and "FakeCrashPw9" not in err


def test_remediate_output_lines_are_scrubbed() -> None:
    """apply's progress lines, check details and notes quote host output: they pass the scrubber."""
    from collector.cli.remediate import _scrub

    line = "note: app1: restart failed: redis-cli -a FakeApplyPw9 ping: NOAUTH; DATABASE_URL=postgres://a:FakeDb9@db1/x"
    out = _scrub(line)
    assert "FakeApplyPw9" not in out and "FakeDb9" not in out and out.startswith("note: app1: restart failed")


def test_collect_output_is_withheld_when_its_redaction_fails(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    from collector.cli.collect import _show
    from collector.collect import CollectOutcome
    from collector.core import HostResult, RunResult
    from collector.redact import Redactor, Rule

    def broken(match: re.Match[bytes], data: bytes) -> tuple[int, int]:
        raise ValueError("scrubber bug")

    redactor = Redactor()
    redactor.rules.append(Rule("broken", re.compile(rb"refused"), judge=broken))
    run = RunResult(
        incident="x",
        pattern="db1",
        inventory="inv",
        engine="ssh",
        command_line=[],
        started="",
        hosts={"db1": HostResult("db1", "unreachable", "refused: secret FakeShowPw9 in the message")},
    )
    outcome = CollectOutcome(run, None, 1, redactor=redactor)
    for as_json in (True, False):
        _show(outcome, as_json)
        out = capsys.readouterr()
        assert "FakeShowPw9" not in out.out + out.err and "not showing the run's details" in out.err
