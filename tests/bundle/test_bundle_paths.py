"""Reading a bundle never leaves its folder (crafted manifest paths, planted symlinks), and actions.json
updates are locked (two processes appending at once both keep their records)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from collector.bundle import Bundle, OutsideBundle, open_inside, write_bundle
from collector.config import Settings
from collector.core import ActionRecord, HostResult, ProbeResult, RunResult

REPO = Path(__file__).resolve().parents[2]
COLLECTOR = "import sys; from collector.cli import main; sys.argv[0] = 'collector'; main()"
STARTED = "2026-11-28T05:00:00.000Z"
MARKER = "OUTSIDE-THE-BUNDLE-7f3a"
OOM = f"2026-11-28T05:00:01+0000 app1 kernel: Out of memory: Killed process 4242 (python3) {MARKER}\n"


def _probe(host: str, name: str, output: bytes) -> ProbeResult:
    return ProbeResult(host, name, f"run {name}", "ok", 0, STARTED, 0.1, output, bytes=len(output))


def _bundle(tmp_path: Path) -> Path:
    app = HostResult(
        "app1",
        "ok",
        None,
        [_probe("app1", "journal", b"quiet\n"), _probe("app1", "uptime", b"up\n")],
        ("app",),
    )
    db = HostResult("db1", "ok", None, [_probe("db1", "journal", b"quiet\n")], ("db",))
    run = RunResult("", "prod", "inv", "ssh", [], STARTED, finished=STARTED, hosts={"app1": app, "db1": db})
    return write_bundle(run, Settings(), out_dir=tmp_path / "bundles")


def _craft(folder: Path, outside: Path) -> None:
    """A manifest whose paths point out of the bundle, and symlinks planted inside it."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["hosts"]["app1"]["probes"]["journal"]["path"] = f"../../{outside.name}/journal.txt"
    manifest["hosts"]["app1"]["probes"]["uptime"]["path"] = "/etc/shadow"
    manifest["hosts"]["db1"]["probes"]["journal"]["path"] = "hosts/db1/linked.txt"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "hosts/db1/linked.txt").symlink_to(outside / "journal.txt")
    (folder / "notes.txt").symlink_to("/etc/shadow")
    (folder / "findings.json").symlink_to(outside / "findings.json")
    (folder / "etc").symlink_to("/etc", target_is_directory=True)


@pytest.fixture()
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "journal.txt").write_text(OOM * 3)
    (outside / "findings.json").write_text(json.dumps({"schema": "x", "summary": MARKER}))
    folder = _bundle(tmp_path)
    _craft(folder, outside)
    return folder, outside


def _archive_blob(folder: Path) -> tuple[bytes, list[str]]:
    with tarfile.open(folder.parent / f"{folder.name}.tar.gz") as tar:
        members = tar.getmembers()
        assert all(m.isfile() or m.isdir() for m in members)  # no link in the archive
        return b"".join(tar.extractfile(m).read() for m in members if m.isfile()), [m.name for m in members]  # type: ignore[union-attr]


def test_the_reader_api_refuses_every_way_out(crafted: tuple[Path, Path]) -> None:
    folder, _ = crafted
    bundle = Bundle.open(folder)
    assert bundle.read("app1", "journal") is None  # ../
    assert bundle.read("app1", "uptime") is None  # absolute
    assert bundle.read("db1", "journal") is None  # a symlink inside the bundle
    assert bundle.read_file("notes.txt") is None and bundle.read_json("findings.json") is None
    assert bundle.read_file("etc/shadow") is None  # through a symlinked folder
    assert len(bundle.refused) == 6
    for rel in ("../x", "/etc/shadow", "etc/passwd", "notes.txt"):
        with pytest.raises(OutsideBundle):
            open_inside(folder, rel)
    problems = "\n".join(bundle.verify())
    assert "notes.txt: not a regular file" in problems and "manifest app1/uptime" in problems


def test_seal_report_and_triage_never_read_outside(crafted: tuple[Path, Path]) -> None:
    folder, outside = crafted
    shadow = Path("/etc/shadow").read_bytes() if os.access("/etc/shadow", os.R_OK) else b"root:"
    for command in (["triage", str(folder)], ["report", str(folder)]):
        proc = subprocess.run(
            [sys.executable, "-c", COLLECTOR, *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        assert MARKER not in proc.stdout + proc.stderr
    blob, names = _archive_blob(folder)
    assert MARKER.encode() not in blob and shadow not in blob
    assert f"{folder.name}/notes.txt" not in names and f"{folder.name}/etc" not in names
    for name in ("report.md", "report.html", "TICKET.md", "SHA256SUMS"):
        text = (folder / name).read_text()
        assert MARKER not in text and "notes.txt" not in text.split("SHA256SUMS")[0], name
    assert (outside / "findings.json").read_text().count(MARKER) == 1  # the planted link's target untouched


def test_concurrent_actions_writers_lose_no_record(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    script = (
        "import sys, time\n"
        "from collector.remediate.apply import write_actions\n"
        "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # every writer starts at once\n"
        "notes = []\n"
        "for i in range(6):\n"
        "    write_actions(sys.argv[1], {'writer': sys.argv[2], 'n': i}, notes)\n"
        "print(notes)\n"
    )
    start = str(time.time() + 2.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(folder), str(w), start],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(5)
    ]
    answers = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, [err[-300:] for _, err in answers]
    assert all(out.strip() == "[]" for out, _ in answers), answers
    records = json.loads((folder / "actions.json").read_text())["actions"]
    assert sorted((r["writer"], r["n"]) for r in records) == [(str(w), i) for w in range(5) for i in range(6)]


def test_a_planted_archive_link_is_never_posted_to_a_ticket(tmp_path: Path) -> None:
    from collector.core import UsageError
    from collector.tickets.evidence import archive_files

    folder = _bundle(tmp_path)
    Bundle.open(folder).seal()
    archive = folder.parent / f"{folder.name}.tar.gz"
    archive.unlink()
    archive.symlink_to("/etc/shadow")
    with pytest.raises(UsageError, match="symlink"):
        archive_files(folder)


def test_apply_hands_its_record_to_the_bundle_and_seals_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import collector.bundle as bundle_mod
    from collector.remediate.apply import _render_reports, write_actions

    folder = _bundle(tmp_path)
    archives: list[Path] = []
    real = bundle_mod.write_archive

    def counting(root: Path, mtime: int = 0, privacy: bundle_mod.Privacy | None = None) -> Path:
        archives.append(root)
        return real(root, mtime, privacy)

    monkeypatch.setattr(bundle_mod, "write_archive", counting)
    notes: list[str] = []
    record = ActionRecord(
        action="restart",
        params={},
        plan_id="p-1",
        plan_hash="h" * 64,
        requester="alice",
        requested=STARTED,
        approver="bob",
        approved=STARTED,
        break_glass=None,
        applier="alice",
        applied_started=STARTED,
        applied_finished=STARTED,
        hosts={"app1": {"status": "changed", "changed": True, "msg": ""}},
        stopped=None,
        verify={"passed": True, "checks": []},
    ).to_dict()
    assert write_actions(str(folder), record, notes) == str(folder / "actions.json")
    _render_reports(str(folder), notes)
    assert archives == [folder] and notes == [], notes  # actions.json, then the reports, then one seal
    _, names = _archive_blob(folder)
    assert {f"{folder.name}/actions.json", f"{folder.name}/report.md", f"{folder.name}/TICKET.md"} <= set(
        names
    )
    assert Bundle.open(folder).verify() == []
