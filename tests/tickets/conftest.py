"""A real Redmine (Debian's redmine + redmine-sqlite + thin) on 127.0.0.1 for the ticket tests.

The session gets its own Redmine instance: a throwaway folder holding a copy of the packaged,
already migrated SQLite database, its own tmp/, log/ and files/ (www-data cannot write
/usr/share/redmine/tmp), linked in as /var/lib/redmine/<instance> because Debian's Redmine finds
an instance's folders there. The packaged database is never touched, so every session starts clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from collector.bundle import Bundle, write_bundle
from collector.config import Settings
from collector.core import (
    AffectedAnswer,
    Answer,
    Finding,
    Findings,
    HostResult,
    MitigationSuggestion,
    ProbeResult,
    Questions,
    RunResult,
    SecurityFlag,
    utcnow,
)

REDMINE_ROOT = Path("/usr/share/redmine")
INSTANCES = Path("/var/lib/redmine")
PACKAGED_DB_YML = Path("/etc/redmine/default/database.yml")
INSTANCE_PREFIX = "collector-test-"
READY_TIMEOUT_S = 180.0  # a loaded CI machine (lab booting alongside) is slow
RUNNER_TIMEOUT_S = 300.0

# One `rails runner` call (about 4 s of boot): REST API on, login required (else a bad key is read as
# anonymous and GETs succeed), an admin API key, a project, and a user outside that project.
SETUP_RB = """
Setting.rest_api_enabled = "1"
Setting.login_required = "1"
Setting.text_formatting = "common_mark" if Redmine::WikiFormatting.format_names.include?("common_mark")
admin = User.find_by_login("admin")
project = Project.create!(name: "Collector tickets", identifier: ARGV[0], is_public: false)
outsider = User.new(firstname: "Out", lastname: "Sider", mail: "outsider@example.invalid")
outsider.login = "outsider"
outsider.password = outsider.password_confirmation = SecureRandom.hex(12)
outsider.save!
# A project member whose Redmine speaks German: its error messages are not the English ones.
german = User.new(firstname: "Deutsch", lastname: "Member", mail: "german@example.invalid", language: "de")
german.login = "german"
german.password = german.password_confirmation = SecureRandom.hex(12)
german.save!
Member.create!(user: german, project: project, roles: [Role.find_by!(name: "Manager")])
puts "COLLECTOR_JSON=" + {
  admin_key: admin.api_key, outsider_key: outsider.api_key, german_key: german.api_key,
  project: project.identifier,
  priorities: IssuePriority.order(:position).pluck(:name),
  attachment_max_kb: Setting.attachment_max_size.to_i,
}.to_json
"""


@dataclass(frozen=True)
class RedmineServer:
    """A running test Redmine: where it is and the credentials the setup created."""

    url: str
    admin_key: str
    outsider_key: str
    german_key: str
    project: str
    priorities: tuple[str, ...]
    attachment_max_kb: int
    folder: Path


def _installed() -> str | None:
    """Why the Redmine tests cannot run here, or None."""
    if not (REDMINE_ROOT / "config.ru").is_file():
        return (
            "Debian's redmine is not installed (install.sh, or apt-get install redmine redmine-sqlite thin)"
        )
    if shutil.which("thin") is None:
        return "thin is not installed (apt-get install thin)"
    if not PACKAGED_DB_YML.is_file():
        return (
            f"redmine is installed but not configured ({PACKAGED_DB_YML} missing): dpkg-reconfigure redmine"
        )
    return None


def _as_www_data(cmd: list[str]) -> list[str]:
    """Run as www-data when we are root (the packaged files are group www-data); else as ourselves."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "www-data", "--", *cmd]
    return cmd


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _packaged_db() -> Path | None:
    config = yaml.safe_load(PACKAGED_DB_YML.read_text()) or {}
    prod = config.get("production", {}) or {}
    if prod.get("adapter") != "sqlite3":
        return None
    path = Path(str(prod.get("database", "")))
    return path if path.is_file() else None


def _drop_stale_instances() -> None:
    """Links left by a session that was killed before its teardown."""
    if not INSTANCES.is_dir():
        return
    for link in INSTANCES.glob(INSTANCE_PREFIX + "*"):
        if link.is_symlink() and not link.exists():
            link.unlink()


def _make_instance(folder: Path, name: str) -> None:
    for sub in ("config", "tmp/pids", "tmp/cache", "tmp/sessions", "tmp/sockets", "log", "files", "public"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    db = folder / "redmine.sqlite3"
    (folder / "config" / "database.yml").write_text(
        yaml.safe_dump(
            {"production": {"adapter": "sqlite3", "database": str(db), "encoding": "utf8", "timeout": 10000}}
        )
    )
    (folder / "config" / "secret_key.txt").write_text(secrets.token_hex(32) + "\n")
    packaged = _packaged_db()
    if packaged is not None:
        shutil.copyfile(packaged, db)
    if os.geteuid() == 0:
        www = pwd.getpwnam("www-data")
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, www.pw_uid, www.pw_gid)
    folder.chmod(0o755)  # mkdtemp makes 0700: www-data must be able to enter
    (INSTANCES / name).symlink_to(folder)


def _env(name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUNDLE_", "GEM_", "RUBY"))}
    env.update(REDMINE_INSTANCE=name, RAILS_ENV="production", HOME=str(INSTANCES / name), LANG="C.UTF-8")
    return env


def _rails(args: list[str], name: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_www_data(["env", f"REDMINE_INSTANCE={name}", "RAILS_ENV=production", "ruby", *args]),
        check=False,
        cwd=REDMINE_ROOT,
        env=_env(name),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _migrate_if_empty(folder: Path, name: str) -> None:
    """No packaged database to copy (another adapter, or none yet): build one (slow, about a minute)."""
    if (folder / "redmine.sqlite3").is_file():
        return
    for task in (["bin/rake", "db:migrate"], ["bin/rake", "redmine:load_default_data"]):
        done = subprocess.run(
            # SCHEMA: the dump after migrating goes to our folder, not to /usr/share/redmine/db.
            _as_www_data(
                [
                    "env",
                    f"REDMINE_INSTANCE={name}",
                    "RAILS_ENV=production",
                    "REDMINE_LANG=en",
                    f"SCHEMA={folder / 'schema.rb'}",
                    "ruby",
                    *task,
                ]
            ),
            check=False,
            cwd=REDMINE_ROOT,
            env=_env(name),
            capture_output=True,
            text=True,
            timeout=RUNNER_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(task)} failed: {done.stderr[-2000:]}")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"thin exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/login", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(
        f"Redmine not ready after {READY_TIMEOUT_S:.0f} s: {log.read_text(errors='replace')[-2000:]}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the thin we started (its own process group, led by its pid)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def redmine() -> Iterator[RedmineServer]:
    """A fresh Redmine on 127.0.0.1 with REST on, login required, an admin key and a project."""
    missing = _installed()
    if missing:
        pytest.skip(missing)
    with running_redmine() as server:
        yield server


@contextlib.contextmanager
def running_redmine() -> Iterator[RedmineServer]:
    """Start a throwaway Redmine instance, yield it, and remove every trace of it afterwards."""
    _drop_stale_instances()
    name = f"{INSTANCE_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    folder = Path(tempfile.mkdtemp(prefix="collector-redmine-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        _make_instance(folder, name)
        _migrate_if_empty(folder, name)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = folder / "log" / "thin.out"
        with log.open("wb") as out:
            # thin boots (about 4 s) while the runner (about 4 s) writes the settings: the running
            # server reads settings from the database, so no restart is needed.
            proc = subprocess.Popen(
                _as_www_data(
                    [
                        "env",
                        f"REDMINE_INSTANCE={name}",
                        "thin",
                        "start",
                        "-R",
                        "config.ru",
                        "-e",
                        "production",
                        "-a",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "--pid",
                        str(folder / "tmp/pids/thin.pid"),
                        "--log",
                        str(folder / "log/thin.log"),
                        "--timeout",
                        "60",
                    ]
                ),
                cwd=REDMINE_ROOT,
                env=_env(name),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        script = folder / "setup.rb"
        script.write_text(SETUP_RB)
        script.chmod(0o644)
        project = f"collector-{secrets.token_hex(3)}"
        done = _rails(["bin/rails", "runner", str(script), project], name, RUNNER_TIMEOUT_S)
        lines = [line for line in done.stdout.splitlines() if line.startswith("COLLECTOR_JSON=")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"rails runner failed ({done.returncode}): {done.stderr[-2000:]}")
        facts = json.loads(lines[-1].split("=", 1)[1])
        _wait_ready(url, proc, log)
        yield RedmineServer(
            url=url,
            admin_key=facts["admin_key"],
            outsider_key=facts["outsider_key"],
            german_key=facts["german_key"],
            project=facts["project"],
            priorities=tuple(facts["priorities"]),
            attachment_max_kb=int(facts["attachment_max_kb"]),
            folder=folder,
        )
    finally:
        if proc is not None:
            _stop(proc)
        link = INSTANCES / name
        if link.is_symlink():
            link.unlink()
        shutil.rmtree(folder, ignore_errors=True)


# -- bundles -----------------------------------------------------------------------------------------


def build_bundle(
    out: Path,
    *,
    severity: str | None = "P1",
    ticket_md: str | None = None,
    big_bytes: int = 0,
    redact: bool = True,
) -> Path:
    """A sealed bundle from a crafted RunResult, with findings.json (and TICKET.md) when asked."""
    incident = f"inc-{secrets.token_hex(4)}"
    started = utcnow()
    health = ProbeResult(
        host="app1",
        probe="app_health",
        command="curl -s http://127.0.0.1:8000/health",
        status="failed",
        rc=22,
        started=started,
        duration_s=0.2,
        output=b"HTTP 503 Service Unavailable\n",
        bytes=29,
    )
    probes = [health]
    if big_bytes:
        noise = os.urandom(big_bytes)  # incompressible, so the archive is really this big
        probes.append(
            ProbeResult(
                host="app1",
                probe="journal",
                command="journalctl -n 100000",
                status="ok",
                rc=0,
                started=started,
                duration_s=1.0,
                output=noise,
                bytes=len(noise),
            )
        )
    run = RunResult(
        incident=incident,
        pattern="app1",
        inventory="inventory/lab.yml",
        engine="ssh",
        command_line=["collect", "--hosts", "app1"],
        started=started,
        finished=utcnow(),
        hosts={"app1": HostResult(host="app1", status="partial", probes=probes, roles=("app",))},
    )
    folder = write_bundle(run, Settings(redact=redact), out_dir=out)
    bundle = Bundle.open(folder)
    if severity is not None:
        bundle.write_json("findings.json", _findings(incident, severity).to_dict())
    if ticket_md is not None:
        bundle.write_text("TICKET.md", ticket_md)
    bundle.seal()
    return folder


def _findings(incident: str, severity: str) -> Findings:
    """What triage writes for an app whose health check fails (typed, as collector.triage makes it)."""
    fix = MitigationSuggestion("restart", "app1", {}, "collector remediate restart --hosts app1")
    finding = Finding(
        "app-down",
        "app-down",
        "App health check failing",
        severity,
        "app down",  # type: ignore[arg-type]
        ("app1",),
        "app1: HTTP 503",
        (),
        fix,
    )
    return Findings(
        incident=incident,
        generated=utcnow(),
        severity=severity,
        summary=f"{severity}: App health check failing",
        questions=Questions(
            AffectedAnswer("1 of 1 hosts", "hosts named by findings above P3", ("app1",), 1),
            Answer("no", "no sign"),
            Answer("degraded", "App health check failing"),
            Answer("no sign", "no security rule fired"),
        ),
        security=SecurityFlag(False),
        findings=(finding,),
    )


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    """build_bundle bound to the test's tmp_path: make_bundle(severity=..., ticket_md=..., big_bytes=...)."""
    return lambda **kwargs: build_bundle(tmp_path, **kwargs)
