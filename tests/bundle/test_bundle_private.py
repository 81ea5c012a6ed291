"""Evidence is private: every folder and file a `collect` produces (and later steps add) is 0700/0600,
or 0750/0640 with the team's group when `evidence_group` names one; never readable by other users."""

from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCAL = str(REPO / "inventory" / "local.yml")
COLLECT = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"
COLLECTOR = "import sys; from collector.cli import main; sys.argv[0] = 'collector'; main()"


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def modes(root: Path) -> dict[str, tuple[int, int, str]]:
    """(permission bits, gid, kind) of `root` and everything under it (symlinks not followed)."""
    found = {".": (stat.S_IMODE(root.lstat().st_mode), root.lstat().st_gid, "dir")}
    for path in root.rglob("*"):
        info = path.lstat()
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "other"
        found[path.relative_to(root).as_posix()] = (stat.S_IMODE(info.st_mode), info.st_gid, kind)
    return found


def _team_group() -> grp.struct_group:
    """A group other than root's own that exists on every Debian system."""
    for name in ("adm", "staff", "users", "daemon"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    pytest.skip("no non-root group to test with")


@pytest.mark.parametrize("extra", [[], ["--no-redact"]], ids=["redacted", "unredacted"])
def test_every_file_of_a_collect_is_owner_only(tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "out"
    proc = _run(COLLECT, "--hosts", "local", "-i", LOCAL, "--out", str(out), "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    bundle = Path(json.loads(proc.stdout)["bundle"])
    assert bundle.name.endswith("UNREDACTED") == bool(extra)
    found = modes(out)
    # the folder, the evidence, the derived files of triage and report, the archive and its .sha256
    for rel in (
        ".",
        bundle.name,
        f"{bundle.name}/manifest.json",
        f"{bundle.name}/hosts/local/uptime.txt",
        f"{bundle.name}/findings.json",
        f"{bundle.name}/report.html",
        f"{bundle.name}/TICKET.md",
        f"{bundle.name}.tar.gz",
        f"{bundle.name}.tar.gz.sha256",
    ):
        assert rel in found, rel
    wrong = {
        rel: oct(mode)
        for rel, (mode, _, kind) in found.items()
        if mode != {"dir": 0o700, "file": 0o600}.get(kind)
    }
    assert wrong == {}, wrong
    with tarfile.open(f"{bundle}.tar.gz") as tar:
        assert {m.mode for m in tar.getmembers()} == {0o700, 0o600}  # private once extracted, too


def test_a_team_group_gets_group_read_and_later_steps_keep_it(tmp_path: Path) -> None:
    team = _team_group()
    out = tmp_path / "out"
    env = {"COLLECTOR_EVIDENCE_GROUP": team.gr_name}
    proc = _run(COLLECT, "--hosts", "local", "-i", LOCAL, "--out", str(out), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    bundle = Path(json.loads(proc.stdout)["bundle"])
    (bundle / "report.md").unlink()  # a later command (without the setting) writes it again
    report = _run(COLLECTOR, "report", str(bundle))
    assert report.returncode == 0, report.stderr
    assert (bundle / "report.md").is_file()
    found = modes(out)
    wrong = {
        rel: (oct(mode), gid)
        for rel, (mode, gid, kind) in found.items()
        if mode != {"dir": 0o750, "file": 0o640}.get(kind) or gid != team.gr_gid
    }
    assert wrong == {}, wrong


def test_an_unknown_group_is_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(
        COLLECT,
        "--hosts",
        "local",
        "-i",
        LOCAL,
        "--out",
        str(out),
        env={"COLLECTOR_EVIDENCE_GROUP": "no-such-group-xyz"},
    )
    assert proc.returncode == 2 and "no-such-group-xyz" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists() or not any(out.iterdir())
