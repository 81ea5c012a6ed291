"""Bundle writing and reading: layout, manifest, checksums, deterministic archive, atomicity, errors."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import collector.bundle as bundle_mod
from collector.bundle import Bundle, cap_output, incident_id, write_archive, write_bundle
from collector.config import Settings
from collector.core import BUNDLE_SCHEMA, HostResult, ProbeResult, RunResult, UsageError

SECRET_PW = "Zq8-lab-redis-pw"
STARTED = "2026-11-28T05:00:00.000Z"


def _probe(
    host: str, name: str, output: bytes, status: str = "ok", rc: int | None = 0, **kw: object
) -> ProbeResult:
    return ProbeResult(
        host=host,
        probe=name,
        command=kw.pop("command", f"run {name}"),
        status=status,  # type: ignore[arg-type]
        rc=rc,
        started=STARTED,
        duration_s=0.25,
        output=output,
        bytes=len(output),
        **kw,
    )  # type: ignore[arg-type]


def _run(**overrides: object) -> RunResult:
    app = HostResult(
        "app1",
        "ok",
        None,
        [
            _probe("app1", "env", b"DB_PASSWORD=dbpw-123\nDEBUG=0\n", command="cat /opt/sergas/app/.env"),
            _probe(
                "app1",
                "journal",
                b"started\n\xff\xfe not utf-8 \xc3\x28\nconnect redis with " + SECRET_PW.encode() + b"\n",
            ),
            _probe("app1", "iostat", b"", status="not_found", rc=127, error="iostat: command not found"),
        ],
        ("app",),
    )
    redis = HostResult(
        "redis1",
        "partial",
        None,
        [
            _probe("redis1", "ping", b"PONG\n", command="redis-cli -a " + SECRET_PW + " ping"),
            _probe("redis1", "big", b"head...tail", status="timeout", rc=124, truncated=True),
        ],
        ("redis",),
    )
    db = HostResult(
        "db1", "unreachable", "ssh: connect to host 10.0.0.9 port 22: Connection timed out", [], ("db",)
    )
    monitoring = [
        _probe(
            "monitoring", "error_ratio", b'{"value": 0.12, "url": "http://u:monpw@127.0.0.1:9090"}', rc=None
        )
    ]
    values: dict[str, object] = {
        "incident": "",
        "pattern": "prod:&app",
        "inventory": "inventory/",
        "engine": "ssh",
        "command_line": ["collect", "--hosts", "prod:&app", "--api-token=cli-tok"],
        "started": STARTED,
        "finished": "2026-11-28T05:00:03.000Z",
        "hosts": {"app1": app, "redis1": redis, "db1": db},
        "monitoring": monitoring,
    }
    values.update(overrides)
    return RunResult(**values)  # type: ignore[arg-type]


@pytest.fixture()
def written(tmp_path: Path) -> Path:
    return write_bundle(
        _run(),
        Settings(),
        out_dir=tmp_path,
        log_lines=["collect start token=logtok", "done"],
        known_secrets=[SECRET_PW],
    )


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_layout_and_archive_beside_the_folder(written: Path) -> None:
    assert written.name == "inc-20261128T050000Z-prod-app"
    files = sorted(p.relative_to(written).as_posix() for p in written.rglob("*") if p.is_file())
    assert files == [
        "SHA256SUMS",
        "collector.log",
        "hosts/app1/env.txt",
        "hosts/app1/iostat.txt",
        "hosts/app1/journal.txt",
        "hosts/redis1/big.txt",
        "hosts/redis1/ping.txt",
        "manifest.json",
        "monitoring/error_ratio.json",
        "redaction.json",
    ]
    archive = written.parent / f"{written.name}.tar.gz"
    sha_line = (written.parent / f"{written.name}.tar.gz.sha256").read_text()
    assert sha_line == f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  {archive.name}\n"
    assert [p.name for p in written.parent.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_manifest_fields(written: Path) -> None:
    manifest = json.loads((written / "manifest.json").read_text())
    for key in (
        "schema",
        "incident",
        "tool_version",
        "command_line",
        "pattern",
        "inventory",
        "engine",
        "redacted",
        "started",
        "finished",
        "interrupted",
        "hosts",
        "monitoring",
    ):
        assert key in manifest, key
    assert manifest["schema"] == BUNDLE_SCHEMA
    assert manifest["incident"] == written.name
    assert manifest["redacted"] is True and manifest["interrupted"] is False
    assert manifest["command_line"][:3] == ["collect", "--hosts", "prod:&app"]
    assert "cli-tok" not in json.dumps(manifest)
    assert manifest["hosts"]["db1"]["status"] == "unreachable"
    assert "Connection timed out" in manifest["hosts"]["db1"]["error"]
    assert manifest["hosts"]["app1"]["roles"] == ["app"]
    env = manifest["hosts"]["app1"]["probes"]["env"]
    assert set(env) >= {
        "command",
        "status",
        "rc",
        "started",
        "duration_s",
        "bytes",
        "truncated",
        "sha256",
        "path",
        "error",
    }
    data = (written / env["path"]).read_bytes()
    assert env["bytes"] == len(data) and env["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["hosts"]["app1"]["probes"]["iostat"]["status"] == "not_found"
    assert manifest["hosts"]["app1"]["probes"]["iostat"]["rc"] == 127
    big = manifest["hosts"]["redis1"]["probes"]["big"]
    assert (big["status"], big["rc"], big["truncated"]) == ("timeout", 124, True)
    ping = manifest["hosts"]["redis1"]["probes"]["ping"]
    assert SECRET_PW not in ping["command"] and "«REDACTED:" in ping["command"]
    assert manifest["monitoring"]["error_ratio"]["path"] == "monitoring/error_ratio.json"
    assert manifest["summary"]["failed_hosts"] == ["db1", "redis1"]


def test_no_secret_anywhere_in_folder_or_archive(written: Path) -> None:
    archive = written.parent / f"{written.name}.tar.gz"
    with tarfile.open(archive) as tar:
        unpacked = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    for blob in (_all_bytes(written), unpacked):
        for secret in (SECRET_PW, "dbpw-123", "cli-tok", "logtok", "monpw"):
            assert secret.encode() not in blob, secret


def test_non_utf8_output_is_kept_byte_for_byte(written: Path) -> None:
    journal = (written / "hosts/app1/journal.txt").read_bytes()
    assert b"\xff\xfe not utf-8 \xc3\x28\n" in journal
    assert journal.endswith(b"connect redis with \xc2\xabREDACTED:known_secret:1\xc2\xbb\n")


def test_redaction_counts_per_rule_and_file(written: Path) -> None:
    doc = json.loads((written / "redaction.json").read_text())
    assert doc["enabled"] is True
    assert doc["counts"]["known_secret"] == {"hosts/app1/journal.txt": 1, "manifest.json": 1}
    assert (
        sum(files.get("hosts/app1/env.txt", 0) for files in doc["counts"].values()) == 1
    )  # rule names: redact.py
    assert doc["counts"]["api_token"]["collector.log"] == 1
    assert doc["counts"]["url_password"]["monitoring/error_ratio.json"] == 1
    assert doc["total"] == sum(n for files in doc["counts"].values() for n in files.values())
    assert "«REDACTED:api_token:1»" in (written / "collector.log").read_text()


def test_sha256sums_verifies_with_coreutils(written: Path) -> None:
    done = subprocess.run(
        ["sha256sum", "-c", "--strict", "SHA256SUMS"],
        cwd=written,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = [line.split("  ", 1)[1] for line in (written / "SHA256SUMS").read_text().splitlines()]
    assert "SHA256SUMS" not in listed and "manifest.json" in listed and len(listed) == 9
    (written / "hosts/app1/env.txt").write_bytes(b"tampered")
    assert (
        subprocess.run(
            ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=written, capture_output=True, check=False
        ).returncode
        == 1
    )
    assert Bundle.open(written).verify() == ["hosts/app1/env.txt: checksum mismatch"]


def test_archive_is_byte_identical_when_written_twice(written: Path, tmp_path: Path) -> None:
    archive = written.parent / f"{written.name}.tar.gz"
    first = archive.read_bytes()
    copy = tmp_path / "elsewhere" / written.name
    shutil.copytree(written, copy)
    for path in copy.rglob("*"):
        path.touch()  # other mtimes must not matter
    second = write_archive(copy, mtime=1795842000).read_bytes()
    assert second == first
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == written.name and names == [written.name] + sorted(
        names[1:], key=lambda n: (not members[names.index(n)].isdir(), n)
    )
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "root", "root")}
    assert {m.mtime for m in members} == {1795842000}
    assert {m.mode for m in members if m.isfile()} == {0o600}
    assert first[4:8] == b"\0\0\0\0"  # gzip header mtime


def test_unredacted_bundle_is_marked(tmp_path: Path) -> None:
    folder = write_bundle(_run(), Settings(redact=False), out_dir=tmp_path, known_secrets=[SECRET_PW])
    assert folder.name.endswith("-UNREDACTED")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["redacted"] is False
    assert SECRET_PW.encode() in (folder / "hosts/app1/journal.txt").read_bytes()
    assert json.loads((folder / "redaction.json").read_text())["enabled"] is False


def test_interrupted_run_gives_a_valid_marked_bundle(tmp_path: Path) -> None:
    run = _run(interrupted=True, finished="")
    run.hosts["redis1"].probes = []
    folder = write_bundle(run, Settings(), out_dir=tmp_path)
    bundle = Bundle.open(folder)
    assert bundle.manifest["interrupted"] is True
    assert bundle.manifest["finished"]
    assert bundle.verify() == []


def test_explicit_incident_and_name_collision(tmp_path: Path) -> None:
    first = write_bundle(_run(incident="inc-42"), Settings(), out_dir=tmp_path)
    second = write_bundle(_run(incident="inc-42"), Settings(), out_dir=tmp_path)
    assert (first.name, second.name) == ("inc-42", "inc-42-2")
    assert json.loads((second / "manifest.json").read_text())["incident"] == "inc-42-2"


def test_runs_started_in_the_same_second_in_two_processes_never_share_a_name(tmp_path: Path) -> None:
    """Two on-call engineers, one shared bundles folder: every collection keeps its own bundle, whole."""
    script = (
        "import sys, time, tests.bundle.test_bundle as t\n"
        "from collector.bundle import write_bundle\n"
        "from collector.config import Settings\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all four start writing at once\n"
        "for _ in range(5):\n"
        "    print(write_bundle(t._run(), Settings(), out_dir=sys.argv[1]).name)\n"
    )
    root = Path(__file__).resolve().parents[2]
    start = str(time.time() + 2.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), start],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    answers = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err[-300:] for _, err in answers]
    names = [name for out, _ in answers for name in out.split()]
    assert len(names) == 20 and len(set(names)) == 20
    assert all(Bundle.open(tmp_path / n).verify() == [] for n in names)


def test_a_bug_midway_leaves_no_half_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error (not the disk: see the tmpfs tests) leaves no half bundle behind and no claim."""
    real = bundle_mod.write_sums

    def boom(root: Path, privacy: object = None) -> dict[str, str]:
        assert (root / "manifest.json").is_file()  # the files were being written...
        raise RuntimeError("a bug")  # ...when something that is not the disk broke

    monkeypatch.setattr(bundle_mod, "write_sums", boom)
    with pytest.raises(RuntimeError):
        write_bundle(_run(), Settings(), out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(bundle_mod, "write_sums", real)
    assert write_bundle(_run(), Settings(), out_dir=tmp_path).is_dir()


def test_bundle_reading_api(written: Path) -> None:
    bundle = Bundle.open(written)
    assert bundle.incident == written.name
    assert bundle.hosts == ["app1", "db1", "redis1"]
    assert bundle.host("db1")["status"] == "unreachable" and bundle.host("nope") == {}
    assert bundle.probes("app1") == ["env", "iostat", "journal"]
    assert bundle.probe("redis1", "ping")["rc"] == 0  # type: ignore[index]
    assert bundle.probe("redis1", "nope") is None
    assert bundle.read("redis1", "ping") == b"PONG\n"
    assert bundle.read("db1", "ping") is None
    assert "\ufffd" in (bundle.text("app1", "journal") or "")
    assert bundle.monitoring("error_ratio")["value"] == 0.12
    assert bundle.monitoring("missing") is None
    assert Bundle.open(written / "manifest.json").path == written
    assert Bundle.open(written.parent / f"{written.name}.tar.gz").path == written


def test_derived_files_are_redacted_and_sealed(written: Path) -> None:
    bundle = Bundle.open(written, known_secrets=[SECRET_PW])
    bundle.write_json("findings.json", {"evidence": f"auth with {SECRET_PW}", "ok": "password=derived-pw"})
    bundle.write_text("report.md", "# Report\nredis password=derived-pw\n")
    with pytest.raises(UsageError):
        bundle.write_text("hosts/app1/env.txt", "x")
    with pytest.raises(UsageError):
        bundle.write_text("../escape.txt", "x")
    archive = bundle.seal()
    findings = (written / "findings.json").read_text()
    assert SECRET_PW not in findings and "derived-pw" not in findings
    # numbering continues after the collection's placeholders instead of reusing their numbers
    assert "password=«REDACTED:" in findings and "«REDACTED:known_secret:2»" in findings
    assert (
        subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=written, check=False).returncode == 0
    )
    with tarfile.open(archive) as tar:
        assert f"{written.name}/findings.json" in tar.getnames()
    counts = json.loads((written / "redaction.json").read_text())["counts"]
    assert sum(files.get("report.md", 0) for files in counts.values()) == 1
    before = archive.read_bytes()
    Bundle.open(written).seal()
    assert archive.read_bytes() == before  # sealing the same folder again gives the same archive


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a bundle"):
        Bundle.open(tmp_path)
    with pytest.raises(UsageError, match="is not a bundle"):
        Bundle.open(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(UsageError, match="is not a bundle"):
        Bundle.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "incident-collector/bundle/v9"}))
    with pytest.raises(UsageError, match="bundle schema 'incident-collector/bundle/v9' not supported"):
        Bundle.open(tmp_path)


def test_incident_id_and_cap() -> None:
    assert incident_id("web0*", "2026-11-28T05:06:07.123Z") == "inc-20261128T050607Z-web0"
    assert incident_id("", "2026-11-28T05:06:07Z") == "inc-20261128T050607Z-hosts"
    data = b"H" * 1000 + b"T" * 1000
    capped, truncated = cap_output(data, 500)
    assert truncated and len(capped) <= 500
    assert capped.startswith(b"H") and capped.endswith(b"T") and b"bytes omitted" in capped
    assert cap_output(b"small", 500) == (b"small", False)


def test_truncated_output_is_never_silent(tmp_path: Path) -> None:
    run = _run()
    huge = b"H" * 50_000 + b"password=in-the-middle\n" + b"T" * 50_000
    run.hosts["app1"].probes.append(_probe("app1", "huge", huge))  # a transport that did not cap
    folder = write_bundle(run, Settings(cap_bytes=10_000), out_dir=tmp_path)
    bundle = Bundle.open(folder)
    kept = bundle.read("app1", "huge") or b""
    assert len(kept) <= 10_000 and kept.startswith(b"HHH") and kept.endswith(b"TTT")
    assert b"output truncated" in kept
    assert bundle.probe("app1", "huge")["truncated"] is True  # type: ignore[index]
    assert bundle.probe("app1", "huge")["output_bytes"] == len(huge)  # type: ignore[index]
    big = bundle.read("redis1", "big") or b""  # truncated by the host runner without a marker we know
    assert big.startswith(b"head...tail") and b"output truncated on the host" in big


def test_odd_names_stay_inside_the_bundle_and_apart(tmp_path: Path) -> None:
    run = _run()
    run.hosts["app1"].probes += [
        _probe("app1", "../../etc/passwd", b"one"),
        _probe("app1", "etc/passwd", b"two"),
    ]
    bundle = Bundle.open(write_bundle(run, Settings(), out_dir=tmp_path))
    paths = {bundle.probe("app1", n)["path"] for n in ("../../etc/passwd", "etc/passwd")}  # type: ignore[index]
    assert len(paths) == 2 and all(p.startswith("hosts/app1/") and ".." not in p.split("/") for p in paths)
    assert bundle.read("app1", "../../etc/passwd") == b"one" and bundle.read("app1", "etc/passwd") == b"two"


def test_a_disk_that_fails_the_manifest_keeps_the_evidence_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def full(self: bundle_mod.BundleWriter, run: RunResult, log_lines: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundle_mod.BundleWriter, "_bookkeeping", full)
    with pytest.raises(bundle_mod.BundleWriteFailed, match="No space left on device"):
        write_bundle(_run(incident="inc-full"), Settings(), out_dir=tmp_path)
    assert (tmp_path / "inc-full" / "hosts/redis1/ping.txt").read_bytes() == b"PONG\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
