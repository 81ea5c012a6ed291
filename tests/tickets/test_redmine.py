"""`collector attach --to redmine` against a real Redmine on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import socket
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from redminelib import Redmine

from collector.bundle import Bundle

MakeBundle = Callable[..., Path]  # the make_bundle fixture (conftest.py)

pytestmark = pytest.mark.slow


# -- helpers -----------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file of the bundle, its archive and .sha256: to prove nothing was touched."""
    paths = [p for p in folder.rglob("*") if p.is_file()]
    paths += [folder.parent / f"{folder.name}.tar.gz", folder.parent / f"{folder.name}.tar.gz.sha256"]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() + f":{p.stat().st_mtime_ns}" for p in paths}


def run_attach(
    args: list[str], cwd: Path, *, url: str | None, key: str | None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, with the key given only through the environment."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("COLLECTOR_REDMINE_", "COLLECTOR_TICKETS"))
    }
    env["HOME"] = str(cwd)  # no ~/.config/collector/tickets.yml from the developer's own home
    if url is not None:
        env["COLLECTOR_REDMINE_URL"] = url
    if key is not None:
        env["COLLECTOR_REDMINE_API_KEY"] = key
    env.update(extra_env or {})
    script = Path(sys.executable).parent / "collector"
    cmd = (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "from collector.cli import main; main()"]
    )
    return subprocess.run(
        [*cmd, "attach", *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def attach_ticket(
    redmine: Any, folder: Path, issue_id: int, cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`collector attach FOLDER --to redmine --ticket ISSUE` with the admin's key."""
    return run_attach(
        [str(folder), "--to", "redmine", "--ticket", str(issue_id)],
        cwd,
        url=redmine.url,
        key=redmine.admin_key,
        extra_env=extra_env,
    )


def api(server: Any, key: str | None = None) -> Redmine:
    return Redmine(server.url, key=key or server.admin_key, requests={"timeout": 30})


def issue_of(server: Any, issue_id: int) -> Any:
    return api(server).issue.get(issue_id, include=["attachments", "journals"])


def new_issue(server: Any, subject: str = "collector test ticket") -> int:
    return int(api(server).issue.create(project_id=server.project, subject=subject).id)


def ticket_id_from(stdout: str) -> int:
    for word in stdout.replace(":", " ").split():
        if word.startswith("#") and word[1:].isdigit():
            return int(word[1:])
    raise AssertionError(f"no ticket id in {stdout!r}")


def assert_no_key(server: Any, *texts: str) -> None:
    for text in texts:
        assert server.admin_key not in text
        assert server.outsider_key not in text


# -- the happy paths ---------------------------------------------------------------------------------


def test_new_ticket_has_mapped_priority_files_and_summary(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    folder = make_bundle(severity="P1")
    before = snapshot(folder)
    done = run_attach(
        [str(folder), "--to", "redmine", "--new", "--project", redmine.project],
        tmp_path,
        url=redmine.url,
        key=redmine.admin_key,
    )
    assert done.returncode == 0, done.stderr
    assert "created redmine ticket #" in done.stdout
    issue = issue_of(redmine, ticket_id_from(done.stdout))
    assert issue.priority.name == "Urgent"  # default mapping P1 → Urgent
    assert folder.name in issue.subject and issue.subject.startswith("[P1]")
    assert "App health check failing" in issue.subject
    names = sorted(a.filename for a in issue.attachments)
    assert names == [f"{folder.name}.tar.gz", f"{folder.name}.tar.gz.sha256"]
    archive_sha = hashlib.sha256((tmp_path / f"{folder.name}.tar.gz").read_bytes()).hexdigest()
    tar = next(a for a in issue.attachments if a.filename.endswith(".tar.gz"))
    assert f"sha256:{archive_sha}" in tar.description
    # No TICKET.md in this bundle: the description is the ticket template, rendered by attach.
    assert issue.description.startswith("# [P1] App health check failing")
    assert "no TICKET.md" in done.stdout
    assert snapshot(folder) == before
    assert_no_key(redmine, done.stdout, done.stderr)


def test_priority_mapping_is_configurable(make_bundle: MakeBundle, redmine: Any, tmp_path: Path) -> None:
    folder = make_bundle(severity="P3")
    done = run_attach(
        [str(folder), "--to", "redmine", "--new", "--project", redmine.project],
        tmp_path,
        url=redmine.url,
        key=redmine.admin_key,
        extra_env={"COLLECTOR_REDMINE_PRIORITIES": "P3=Low,P0=Immediate"},
    )
    assert done.returncode == 0, done.stderr
    assert issue_of(redmine, ticket_id_from(done.stdout)).priority.name == "Low"


def test_unknown_priority_name_is_one_clear_line(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    folder = make_bundle(severity="P0")
    done = run_attach(
        [str(folder), "--to", "redmine", "--new", "--project", redmine.project],
        tmp_path,
        url=redmine.url,
        key=redmine.admin_key,
        extra_env={"COLLECTOR_REDMINE_PRIORITIES": "P0=Panic"},
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "no priority 'Panic'" in done.stderr and "Immediate" in done.stderr
    found = api(redmine).issue.filter(project_id=redmine.project, status_id="*", subject=f"~{folder.name}")
    assert len(list(found)) == 0


def test_attach_to_existing_ticket_posts_ticket_md(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    folder = make_bundle(ticket_md="# Incident summary\n\nSeverity **P1**: app1 health failing.\n")
    issue_id = new_issue(redmine)
    done = attach_ticket(redmine, folder, issue_id, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"attached {folder.name}.tar.gz" in done.stdout
    issue = issue_of(redmine, issue_id)
    assert len(issue.attachments) == 2
    notes = [j.notes for j in issue.journals if getattr(j, "notes", "")]
    assert len(notes) == 1
    assert "Severity **P1**: app1 health failing." in notes[0]
    assert f"sha256sum -c {folder.name}.tar.gz.sha256" in notes[0]
    assert "no TICKET.md" not in done.stdout


def test_second_attach_uploads_nothing_and_says_so(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    folder = make_bundle()
    issue_id = new_issue(redmine)
    args = [str(folder), "--to", "redmine", "--ticket", str(issue_id)]
    first = run_attach(args, tmp_path, url=redmine.url, key=redmine.admin_key)
    assert first.returncode == 0, first.stderr
    second = run_attach(args, tmp_path, url=redmine.url, key=redmine.admin_key)
    assert second.returncode == 0, second.stderr
    assert "already on" in second.stdout and "attached " not in second.stdout
    issue = issue_of(redmine, issue_id)
    assert sorted(a.filename for a in issue.attachments) == [
        f"{folder.name}.tar.gz",
        f"{folder.name}.tar.gz.sha256",
    ]
    last_note = [j.notes for j in issue.journals if getattr(j, "notes", "")][-1]
    assert "already attached" in last_note and "nothing uploaded again" in last_note


def test_new_twice_reuses_the_incident_ticket(make_bundle: MakeBundle, redmine: Any, tmp_path: Path) -> None:
    folder = make_bundle(severity="P2")
    args = [str(folder), "--to", "redmine", "--new", "--project", redmine.project]
    first = run_attach(args, tmp_path, url=redmine.url, key=redmine.admin_key)
    second = run_attach(args, tmp_path, url=redmine.url, key=redmine.admin_key)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert ticket_id_from(first.stdout) == ticket_id_from(second.stdout)
    assert "found redmine ticket" in second.stdout and "already on" in second.stdout
    found = list(
        api(redmine).issue.filter(project_id=redmine.project, status_id="*", subject=f"~{folder.name}")
    )
    assert len(found) == 1
    assert len(issue_of(redmine, found[0].id).attachments) == 2


def test_downloaded_attachment_matches_sha256_file(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    folder = make_bundle()
    issue_id = new_issue(redmine)
    done = attach_ticket(redmine, folder, issue_id, tmp_path)
    assert done.returncode == 0, done.stderr
    sums_text = (tmp_path / f"{folder.name}.tar.gz.sha256").read_text()
    expected = sums_text.split()[0]
    files = {a.filename: a for a in issue_of(redmine, issue_id).attachments}
    headers = {"X-Redmine-API-Key": redmine.admin_key}
    archive = requests.get(files[f"{folder.name}.tar.gz"].content_url, headers=headers, timeout=30)
    sums = requests.get(files[f"{folder.name}.tar.gz.sha256"].content_url, headers=headers, timeout=30)
    assert archive.status_code == 200 and sums.status_code == 200
    assert hashlib.sha256(archive.content).hexdigest() == expected
    assert sums.text == sums_text


# -- failures: one line, non-zero, bundle untouched, nothing posted ------------------------------------


def _assert_one_line_failure(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_ticket_is_404_line(make_bundle: MakeBundle, redmine: Any, tmp_path: Path) -> None:
    folder = make_bundle()
    before = snapshot(folder)
    done = run_attach(
        [str(folder), "--to", "redmine", "--ticket", "987654"],
        tmp_path,
        url=redmine.url,
        key=redmine.admin_key,
    )
    _assert_one_line_failure(done, "ticket #987654 does not exist", "404", "nothing was posted")
    assert snapshot(folder) == before


def test_refused_key_is_401_line_without_the_key(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    folder = make_bundle()
    issue_id = new_issue(redmine)
    before = snapshot(folder)
    wrong = secrets.token_hex(20)
    done = run_attach(
        [str(folder), "--to", "redmine", "--ticket", str(issue_id)], tmp_path, url=redmine.url, key=wrong
    )
    _assert_one_line_failure(done, "refused the API key (401)", "nothing was posted")
    assert wrong not in done.stderr
    issue = issue_of(redmine, issue_id)
    assert len(issue.attachments) == 0 and len(issue.journals) == 0
    assert snapshot(folder) == before


def test_key_of_a_user_outside_the_project_is_403_line(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    folder = make_bundle()
    issue_id = new_issue(redmine)
    done = run_attach(
        [str(folder), "--to", "redmine", "--ticket", str(issue_id)],
        tmp_path,
        url=redmine.url,
        key=redmine.outsider_key,
    )
    _assert_one_line_failure(done, "(403)", "nothing was posted")
    assert_no_key(redmine, done.stderr)
    assert len(issue_of(redmine, issue_id).attachments) == 0


def test_oversize_archive_says_how_to_raise_the_limit(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    limit = redmine.attachment_max_kb * 1024
    folder = make_bundle(big_bytes=limit + 512 * 1024)
    issue_id = new_issue(redmine)
    before = snapshot(folder)
    done = attach_ticket(redmine, folder, issue_id, tmp_path)
    _assert_one_line_failure(
        done,
        f"{folder.name}.tar.gz",
        "attachment limit",
        "attachment_max_size",
        "split -b",
        f"nothing was attached to ticket #{issue_id}",
    )
    issue = issue_of(redmine, issue_id)
    assert len(issue.attachments) == 0 and len(issue.journals) == 0  # not half-posted: no .sha256 alone
    assert snapshot(folder) == before


def test_unreachable_server_is_one_line(make_bundle: MakeBundle, tmp_path: Path) -> None:
    folder = make_bundle()
    before = snapshot(folder)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # bound, never listening: connections are refused
        key = secrets.token_hex(20)
        done = run_attach(
            [str(folder), "--to", "redmine", "--ticket", "1"],
            tmp_path,
            url=f"http://127.0.0.1:{closed}",
            key=key,
        )
    _assert_one_line_failure(done, "cannot reach Redmine", "Connection refused", "nothing was posted")
    assert key not in done.stderr
    assert snapshot(folder) == before


def test_api_key_never_in_output_log_or_bundle(make_bundle: MakeBundle, redmine: Any, tmp_path: Path) -> None:
    folder = make_bundle()
    issue_id = new_issue(redmine)
    outputs = []
    for key in (redmine.admin_key, redmine.admin_key, secrets.token_hex(20)):
        done = run_attach(
            [str(folder), "--to", "redmine", "--ticket", str(issue_id)], tmp_path, url=redmine.url, key=key
        )
        outputs.append((key, done.stdout + done.stderr))
    for key, text in outputs:
        assert key not in text
    blobs = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert all(redmine.admin_key.encode() not in blob for blob in blobs)
    notes = " ".join(str(getattr(j, "notes", "")) for j in issue_of(redmine, issue_id).journals)
    assert redmine.admin_key not in notes


def test_api_key_is_not_a_command_line_option(make_bundle: MakeBundle, tmp_path: Path) -> None:
    folder = make_bundle()
    done = run_attach(
        [str(folder), "--to", "redmine", "--ticket", "1", "--api-key", "x" * 40],
        tmp_path,
        url="http://127.0.0.1:9",
        key=None,
    )
    assert done.returncode == 2 and "No such option" in done.stderr and "--api-key" in done.stderr


def test_textile_servers_get_the_summary_in_a_pre_block(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    folder = make_bundle(ticket_md="## Summary\n\n* P1 on app1\n")
    issue_id = new_issue(redmine)
    done = attach_ticket(
        redmine, folder, issue_id, tmp_path, extra_env={"COLLECTOR_REDMINE_TEXT_FORMAT": "textile"}
    )
    assert done.returncode == 0, done.stderr
    note = [j.notes for j in issue_of(redmine, issue_id).journals if getattr(j, "notes", "")][-1]
    assert note.startswith("<pre>\n## Summary\n\n* P1 on app1") and note.endswith("</pre>")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ticket", "abc"], "ticket id 'abc' is not a number"),
        (["--new"], "--new needs --project P"),
        (["--ticket", "1", "--new", "--project", "p"], "give exactly one of --ticket ID or --new"),
        ([], "give exactly one of --ticket ID or --new"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    make_bundle: MakeBundle, tmp_path: Path, args: list[str], message: str
) -> None:
    folder = make_bundle()
    done = run_attach(
        [str(folder), "--to", "redmine", *args], tmp_path, url="http://127.0.0.1:9", key="k" * 40
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr


def test_not_a_bundle_exits_2(tmp_path: Path) -> None:
    done = run_attach(
        [str(tmp_path), "--to", "redmine", "--ticket", "1"], tmp_path, url="http://127.0.0.1:9", key="k"
    )
    assert done.returncode == 2 and "is not a bundle" in done.stderr


def test_resealed_bundle_is_uploaded_again_and_says_it_supersedes(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    folder = make_bundle()
    issue_id = new_issue(redmine)
    args = [str(folder), "--to", "redmine", "--ticket", str(issue_id)]
    assert run_attach(args, tmp_path, url=redmine.url, key=redmine.admin_key).returncode == 0
    bundle = Bundle.open(folder)
    bundle.write_text("TICKET.md", "# Updated after remediation\n")
    bundle.seal()  # new archive bytes, same file name
    again = run_attach(args, tmp_path, url=redmine.url, key=redmine.admin_key)
    assert again.returncode == 0, again.stderr
    assert f"attached {folder.name}.tar.gz" in again.stdout and "another sha256" in again.stdout
    issue = issue_of(redmine, issue_id)
    assert [a.filename for a in issue.attachments].count(f"{folder.name}.tar.gz") == 2
    note = [j.notes for j in issue.journals if getattr(j, "notes", "")][-1]
    assert note.startswith("# Updated after remediation") and "Supersedes the earlier" in note


def test_server_that_never_answers_times_out_in_one_line(make_bundle: MakeBundle, tmp_path: Path) -> None:
    folder = make_bundle()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        done = run_attach(
            [str(folder), "--to", "redmine", "--ticket", "1"],
            tmp_path,
            url=f"http://127.0.0.1:{silent.getsockname()[1]}",
            key=secrets.token_hex(20),
            extra_env={"COLLECTOR_REDMINE_TIMEOUT_S": "1.5"},
        )
    _assert_one_line_failure(done, "did not answer within 1.5 s", "nothing was posted")


def test_report_then_attach_posts_the_reports_ticket_md(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    """The real chain: `collector report` writes TICKET.md and re-seals, `collector attach` posts it."""
    folder = make_bundle(severity="P1")
    script = Path(sys.executable).parent / "collector"
    cmd = (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "from collector.cli import main; main()"]
    )
    report = subprocess.run(
        [*cmd, "report", str(folder)], capture_output=True, text=True, timeout=120, check=False
    )
    assert report.returncode == 0, report.stderr
    ticket_md = (folder / "TICKET.md").read_text().strip()
    done = run_attach(
        [str(folder), "--to", "redmine", "--new", "--project", redmine.project],
        tmp_path,
        url=redmine.url,
        key=redmine.admin_key,
    )
    assert done.returncode == 0, done.stderr
    assert "no TICKET.md" not in done.stdout
    issue = issue_of(redmine, ticket_id_from(done.stdout))
    assert issue.description.replace("\r\n", "\n").startswith(ticket_md[:200])  # Redmine stores CRLF
    archive = next(a for a in issue.attachments if a.filename.endswith(".tar.gz"))
    got = requests.get(archive.content_url, headers={"X-Redmine-API-Key": redmine.admin_key}, timeout=30)
    with tarfile.open(fileobj=io.BytesIO(got.content), mode="r:gz") as tar:
        assert f"{folder.name}/TICKET.md" in tar.getnames()


def test_oversize_in_another_language_still_says_how(
    make_bundle: MakeBundle, redmine: Any, tmp_path: Path
) -> None:
    folder = make_bundle(big_bytes=redmine.attachment_max_kb * 1024 + 256 * 1024)
    issue_id = new_issue(redmine)
    done = run_attach(
        [str(folder), "--to", "redmine", "--ticket", str(issue_id)],
        tmp_path,
        url=redmine.url,
        key=redmine.german_key,
    )
    _assert_one_line_failure(
        done, "attachment_max_size", "split", f"nothing was attached to ticket #{issue_id}"
    )
    assert "Datei" in done.stderr  # Redmine's own (German) reason is kept
    assert redmine.german_key not in done.stderr
    assert len(issue_of(redmine, issue_id).attachments) == 0
