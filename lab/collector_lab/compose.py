"""The compose host: the lab's own Docker Engine running the sample app as a Docker Compose project.

The runbook's second deployment kind ("Docker Compose: git checkout vX && docker-compose up -d --build")
on this machine, as `compose1` in the inventory (`ansible_connection: local`). What it starts:

    dockerd     Debian's docker.io started by hand (no systemd as PID 1): no iptables, no default bridge,
                no ip_forward of its own; data root under the state dir, exec root /run/iclab-docker,
                socket unix:///run/iclab-docker/docker.sock, containers' cgroups under /iclab-docker
    iclab/base  `docker import` of the lab's read-only base rootfs, re-imported when its recipe changes
                (no registry is reachable: every image is built FROM it)
    sergas      a git checkout (tags v1.0.0 and v1.1.0, from lab/app's releases plus lab/compose's
                Dockerfile and docker-compose.yml) with services `app` (10.203.58.10:8000, mem_limit,
                healthcheck, restart unless-stopped) and `zoho-mock` on network iclab-compose
                (bridge iclab-c0, 10.203.58.0/24)
    routing     ip_forward on while it runs, but only between iclab-c0 and iclab0 (every other interface
                keeps forwarding off, and a policy table sends anything else from those two nowhere);
                db1 and redis1 route 10.203.58.0/24 via the machine, db1's pg_hba accepts it

`stop` leaves no process, mount, socket, bridge, cgroup or routing rule; `start` first clears what a
killed session left (stale pidfile, socket, mounts under the exec root, shims, cgroups). Callers
(lifecycle.up/down, the tests' fixtures) hold the lab lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.config import Settings
from collector.times import wait_until

from collector_lab import (
    BRIDGE,
    BRIDGE_IP,
    COMPOSE_SUBNET,
    SUBNET,
    assets,
    base,
    hosts,
    lab_dir,
    lab_secrets,
    lab_state,
)
from collector_lab.hosts import CGROUP_ROOT, Log, _quiet, kill_cgroup, remove_cgroup_tree, run_in

HOST = "compose1"
GROUP = "compose"
PROJECT = "sergas"
SERVICE = "app"
COMPOSE_FILE = "docker-compose.yml"
COMPOSE_GATEWAY = "10.203.58.1"
COMPOSE_BRIDGE = "iclab-c0"
NETWORK = "iclab-compose"
APP_IP = "10.203.58.10"
APP_PORT = 8000
APP_URL = f"http://{APP_IP}:{APP_PORT}"
MEMORY_LIMIT = 256 * 2**20  # docker-compose.yml's mem_limit of `app`
MEMORY_LIMIT_TARGET = "512M"  # what the memory-limit mitigation sets in the lab (above the OOM-ing 256m)
BASE_IMAGE = "iclab/base"
BASE_LABEL = "io.incident-collector.lab.base"
EXEC_ROOT = Path("/run/iclab-docker")
SOCKET = EXEC_ROOT / "docker.sock"
PIDFILE = EXEC_ROOT / "dockerd.pid"
DOCKER_HOST = f"unix://{SOCKET}"
CGROUP_PARENT = "iclab-docker"
ROUTE_TABLE = "10203"
RULE_PREFS = ("10203", "10204")
RELEASES = ("1.0.0", "1.1.0")
GOOD, BAD = "v1.0.0", "v1.1.0"
ENGINE_TIMEOUT_S = 60.0
HEALTHY_TIMEOUT_S = 90.0
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def docker_bin() -> str:
    """Debian's docker CLI (the engine's own version); another `docker` earlier on PATH may be newer."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def data_root(settings: Settings) -> Path:
    return lab_dir(settings) / "docker"


def compose_dir(settings: Settings) -> Path:
    """lab/compose under the state dir: the checkout, the zoho-mock files, dockerd's log, state.json."""
    return lab_dir(settings) / "compose"


def project_dir(settings: Settings) -> Path:
    """The git checkout the project runs from (docker-compose.yml, Dockerfile, .env)."""
    return compose_dir(settings) / PROJECT


def log_path(settings: Settings) -> Path:
    return compose_dir(settings) / "dockerd.log"


# ---------------------------------------------------------------------------- small helpers


def _env() -> dict[str, str]:
    return {
        "PATH": PATH_ENV,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "DOCKER_HOST": DOCKER_HOST,
        "DOCKER_CONFIG": "/run/iclab-docker/cli",  # the CLI's config stays under the exec root
        "COMPOSE_PROJECT_NAME": PROJECT,
    }


def _run(
    argv: list[str], *, timeout: float = 60.0, cwd: Path | None = None, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run argv with the engine's environment; never raises on rc != 0 (124 on a timeout)."""
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=_env(),
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout}s")
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def docker(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` against the lab's engine."""
    return _run([docker_bin(), *args], timeout=timeout)


def compose(settings: Settings, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """`docker-compose ARGS` in the project's checkout against the lab's engine."""
    return _run(
        ["docker-compose", "--ansi", "never", "-p", PROJECT, "-f", COMPOSE_FILE, *args],
        timeout=timeout,
        cwd=project_dir(settings),
    )


def _must(proc: subprocess.CompletedProcess[str], what: str) -> str:
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"compose: {what} failed (rc {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _read_state(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads((compose_dir(settings) / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    path = compose_dir(settings) / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.rename(path)


# ---------------------------------------------------------------------------- the engine


def engine_processes() -> list[int]:
    """dockerd, its containerd and the shims of this lab's engine (every process naming the exec root)."""
    marker = str(EXEC_ROOT)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and any(marker in arg for arg in _cmdline(int(entry.name))):
            found.append(int(entry.name))
    return found


def engine_pid() -> int | None:
    """The running dockerd of the lab, or None."""
    for pid in engine_processes():
        argv = _cmdline(pid)
        if argv and Path(argv[0]).name == "dockerd":
            return pid
    return None


def engine_answers() -> bool:
    return docker("version", "--format", "{{.Server.Version}}", timeout=10).returncode == 0


def is_running(settings: Settings | None = None) -> bool:
    """Whether the lab's Docker Engine runs and answers on its socket."""
    return engine_pid() is not None and engine_answers()


def _mounts_under(*roots: Path) -> list[str]:
    targets = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        target = parts[1].replace("\\040", " ")
        if any(target == str(r) or target.startswith(str(r) + "/") for r in roots):
            targets.append(target)
    return targets


def _container_cgroups() -> list[Path]:
    """The containers' cgroup parents (--cgroup-parent) in every hierarchy that has one."""
    return [d / CGROUP_PARENT for d in CGROUP_ROOT.iterdir() if (d / CGROUP_PARENT).is_dir()]


def _clear_leftovers(settings: Settings) -> None:
    """What a killed engine leaves: processes, container processes, mounts, cgroups, socket, pidfile."""
    for pid in engine_processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for top in _container_cgroups():
        kill_cgroup(top)
    wait_until(lambda: not engine_processes(), 10.0, 0.1)
    for target in sorted(_mounts_under(EXEC_ROOT, data_root(settings)), key=len, reverse=True):
        if subprocess.run(["umount", target], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    for top in _container_cgroups():
        remove_cgroup_tree(top)
    if _ip("link", "show", COMPOSE_BRIDGE).returncode == 0:
        _ip("link", "del", COMPOSE_BRIDGE)
    shutil.rmtree(EXEC_ROOT, ignore_errors=True)


def start_engine(settings: Settings, log: Log = _quiet) -> float:
    """Start the lab's dockerd (or keep the running one); seconds it took."""
    started = time.monotonic()
    if engine_pid() is not None and engine_answers():
        return 0.0
    if shutil.which("dockerd") is None or shutil.which("docker-compose") is None:
        raise RuntimeError("compose: docker.io and docker-compose are not installed (install-test.sh)")
    _clear_leftovers(settings)
    EXEC_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_root(settings).mkdir(mode=0o700, parents=True, exist_ok=True)
    compose_dir(settings).mkdir(parents=True, exist_ok=True)
    argv = [
        shutil.which("dockerd") or "dockerd",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",  # the lab turns forwarding on between its two bridges only (_routing_on)
        "--ip-masq=false",
        "--bridge=none",
        f"--data-root={data_root(settings)}",
        f"--exec-root={EXEC_ROOT}",
        f"--host={DOCKER_HOST}",
        f"--pidfile={PIDFILE}",
        f"--cgroup-parent=/{CGROUP_PARENT}",
        "--log-driver=json-file",
        "--shutdown-timeout=10",
    ]
    with log_path(settings).open("ab") as out:
        out.write(f"==== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={"PATH": PATH_ENV, "HOME": "/root", "LANG": "C.UTF-8"},
        )

    wait_until(lambda: proc.poll() is not None or engine_answers(), ENGINE_TIMEOUT_S, 0.2)
    if proc.poll() is not None or not engine_answers():
        tail = log_path(settings).read_text(errors="replace").strip().splitlines()[-2:]
        raise RuntimeError(f"compose: dockerd did not come up (see {log_path(settings)}): {' | '.join(tail)}")
    log(f"compose: docker engine up (pid {proc.pid})")
    return round(time.monotonic() - started, 1)


def stop_engine(settings: Settings) -> None:
    """Stop dockerd (it stops the containers) and remove every trace of it, even of a killed one."""
    pid = engine_pid()
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait_until(lambda: engine_pid() is None, 30.0, 0.2)
    _clear_leftovers(settings)


# ---------------------------------------------------------------------------- images and the checkout


def ensure_base_image(settings: Settings, log: Log = _quiet) -> float:
    """`docker import` the lab's base rootfs as iclab/base when missing or of another recipe; seconds."""
    started = time.monotonic()
    want = base.recipe_hash()
    have = docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{BASE_LABEL}"}}}}', BASE_IMAGE)
    if have.returncode == 0 and have.stdout.strip() == want:
        return 0.0
    rootfs = base.base_path(settings)
    if not rootfs.is_dir():
        raise RuntimeError(f"compose: the lab's base is not built ({rootfs}): run `collector-lab build`")
    log(f"compose: importing the base rootfs as {BASE_IMAGE} ({want})")
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        imp = subprocess.run(
            [
                docker_bin(),
                "import",
                "-c",
                f"LABEL {BASE_LABEL}={want}",
                "-c",
                'CMD ["/bin/bash"]',
                "-",
                f"{BASE_IMAGE}:latest",
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=300,
            check=False,
        )
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait(timeout=60)
    _must(imp, f"docker import of {rootfs}")
    return round(time.monotonic() - started, 1)


def repo_recipe() -> str:
    """Hash of what the checkout is made from: the app's releases and lab/compose's files."""
    digest = hashlib.sha256()
    lab = assets()
    files = sorted(p for p in (lab / "app" / "release").rglob("*") if p.is_file())
    files += sorted(p for p in (lab / "app" / "releases").rglob("*") if p.is_file())
    files += [lab / "compose" / n for n in ("Dockerfile", "docker-compose.yml", ".dockerignore")]
    for path in files:
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(lab)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": PATH_ENV, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})},
        timeout=60,
    )
    return _must(proc, f"git {' '.join(args[:2])}")


def ensure_repo(settings: Settings, log: Log = _quiet) -> bool:
    """The release checkout (tags v1.0.0, v1.1.0; v1.0.0 checked out); made anew when its recipe changed.

    An existing checkout of the same recipe is kept as it is (a release checked out by a fault or a
    mitigation stays). Returns whether it was made.
    """
    repo = project_dir(settings)
    marker = compose_dir(settings) / "repo.recipe"
    want = repo_recipe()
    if (repo / ".git").is_dir() and marker.is_file() and marker.read_text().strip() == want:
        return False
    log(f"compose: making the release checkout {repo}")
    if (repo / COMPOSE_FILE).is_file() and is_running(settings):
        compose(settings, "down", "--remove-orphans", "-t", "5")
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    lab = assets()
    shutil.copytree(
        lab / "app" / "release",
        repo,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for name in ("Dockerfile", "docker-compose.yml", ".dockerignore"):
        shutil.copy2(lab / "compose" / name, repo / name)
    ident = ["-c", "user.name=Sergas Release Bot", "-c", "user.email=release@sergas.example"]
    _git(repo, "init", "-q", "-b", "main")
    for version, message, days in (
        (RELEASES[0], "Release 1.0.0: orders, customers, Zoho contact sync", 3),
        (RELEASES[1], "Release 1.1.0: show the discount code on orders", 1),
    ):
        if version == RELEASES[1]:
            shutil.copytree(
                lab / "app" / "releases" / "v1.1.0",
                repo,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days * 86400))
        dates = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
        (repo / ".git" / "index").unlink(missing_ok=True)  # see provision/app.sh: same-size files
        _git(repo, "add", "-A")
        _git(repo, *ident, "commit", "-q", "-m", message, env=dates)
        _git(repo, *ident, "tag", "-a", f"v{version}", "-m", f"sergas-app {version}", env=dates)
    _git(repo, "checkout", "-q", GOOD)
    for version in RELEASES:
        if _git(repo, "show", f"v{version}:VERSION").strip() != version:
            raise RuntimeError(f"compose: release v{version} does not hold VERSION {version}")
    marker.write_text(want + "\n")
    return True


def write_settings(settings: Settings) -> None:
    """The project's .env (root-only: it holds the lab's secrets) and the zoho-mock's files."""
    secrets = lab_secrets(settings)
    if not {"db_password", "redis_password", "api_token"} <= set(secrets):
        raise RuntimeError("compose: the lab has no secrets yet (run `collector-lab up`)")
    mock = compose_dir(settings) / "zoho-mock"
    mock.mkdir(parents=True, exist_ok=True)
    shutil.copy2(assets() / "app" / "files" / "zoho_mock.py", mock / "zoho_mock.py")
    os.chmod(mock / "zoho_mock.py", 0o644)
    quota = mock / "quota"
    if not quota.exists():
        quota.write_text("600\n")
    os.chmod(mock, 0o755)  # the mock runs as nobody inside its container
    env = project_dir(settings) / ".env"
    text = (
        "# sergas-app settings (written by collector-lab; not in git)\n"
        f"DATABASE_URL=postgresql://sergas:{secrets['db_password']}@10.203.57.12:5432/sergas\n"
        "DATABASE_POOL_SIZE=10\n"
        "DATABASE_POOL_TIMEOUT=5\n"
        "DATABASE_STATEMENT_TIMEOUT_MS=5000\n"
        # Its own Redis db: app1's cached answers (same keys) stay apart.
        f"REDIS_URL=redis://:{secrets['redis_password']}@10.203.57.13:6379/1\n"
        f"ZOHO_API_TOKEN={secrets['api_token']}\n"
        "ZOHO_RATE_LIMIT=120\n"
        "CACHE_TTL=60\n"
        f"ZOHO_MOCK_DIR={mock}\n"
    )
    if not env.is_file() or env.read_text() != text:
        env.touch(mode=0o600)
        os.chmod(env, 0o600)
        env.write_text(text)


# ---------------------------------------------------------------------------- routing


def _sysctl(path: str, value: str | None = None) -> str:
    p = Path("/proc/sys/net/ipv4") / path
    if value is not None:
        p.write_text(value)
    return p.read_text().strip()


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def routing_on(settings: Settings) -> None:
    """Forward between iclab-c0 and iclab0 only; the first call remembers ip_forward to put back."""
    state = _read_state(settings)
    if "ip_forward_orig" not in state:
        state["ip_forward_orig"] = _sysctl("ip_forward")
        _write_state(settings, state)
    if _sysctl("ip_forward") != "1":
        _sysctl("ip_forward", "1")  # sets every interface's forwarding to 1: the loop below narrows it
    _sysctl("conf/default/forwarding", "0")
    for conf in Path("/proc/sys/net/ipv4/conf").iterdir():
        if conf.name not in ("all", "default"):
            # The kernel checks the interface a packet came in on: only the two bridges forward.
            (conf / "forwarding").write_text("1" if conf.name in (BRIDGE, COMPOSE_BRIDGE) else "0")
    # Whatever arrives on the two bridges for elsewhere than the two subnets is refused, not routed out.
    _ip("route", "replace", SUBNET, "dev", BRIDGE, "table", ROUTE_TABLE)
    _ip("route", "replace", COMPOSE_SUBNET, "dev", COMPOSE_BRIDGE, "table", ROUTE_TABLE)
    _ip("route", "replace", "unreachable", "default", "table", ROUTE_TABLE)
    rules = _ip("rule", "show").stdout
    for pref, dev in zip(RULE_PREFS, (COMPOSE_BRIDGE, BRIDGE)):
        if f"{pref}:" not in rules:
            _ip("rule", "add", "pref", pref, "iif", dev, "lookup", ROUTE_TABLE)


def routing_off(settings: Settings) -> None:
    """Remove the rules and table; ip_forward back to what it was before the first routing_on."""
    for pref in RULE_PREFS:
        for _ in range(10):
            if _ip("rule", "del", "pref", pref).returncode != 0:
                break
    _ip("route", "flush", "table", ROUTE_TABLE)
    state = _read_state(settings)
    orig = state.pop("ip_forward_orig", None)
    if orig is not None:
        # A write that changes ip_forward resets every interface's forwarding (and the default) to it;
        # through 0, so an original 1 also undoes routing_on's per-interface 0s.
        _sysctl("ip_forward", "0")
        _sysctl("ip_forward", str(orig).strip())
        _write_state(settings, state)


def open_lab_hosts(settings: Settings) -> list[str]:
    """db1 and redis1 reach 10.203.58.0/24 through the machine; db1's pg_hba lets the app's user in.

    Provisioning and the hosts' network files do the same for fresh or rebooted hosts; this brings
    hosts provisioned before the compose host existed up to date. Returns what it could not do.
    """
    problems = []
    for name in ("db1", "redis1"):
        res = run_in(settings, name, ["ip", "route", "replace", COMPOSE_SUBNET, "via", BRIDGE_IP], timeout=20)
        if res.returncode != 0:
            problems.append(f"{name}: route to {COMPOSE_SUBNET}: {res.stderr.strip()[:200]}")
    hba = (
        "f=/etc/postgresql/15/main/pg_hba.conf\n"
        "grep -q 'lab: sergas-app on compose' \"$f\" && exit 0\n"
        f"printf '%s\\n' '# lab: sergas-app on compose' 'host    sergas    sergas    {COMPOSE_SUBNET}    "
        'scram-sha-256\' >> "$f"\n'
        "systemctl reload postgresql\n"
    )
    res = run_in(settings, "db1", ["/bin/bash", "-c", hba], timeout=30)
    if res.returncode != 0:
        problems.append(f"db1: pg_hba for {COMPOSE_SUBNET}: {res.stderr.strip()[:200]}")
    return problems


# ---------------------------------------------------------------------------- the project


def container_id(settings: Settings, service: str = SERVICE) -> str | None:
    """The id of the service's container (running or not), or None."""
    res = docker(
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        f"label=com.docker.compose.project={PROJECT}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    )
    ids = res.stdout.split() if res.returncode == 0 else []
    return ids[0] if ids else None


def container_state(settings: Settings, service: str = SERVICE) -> dict[str, Any]:
    """State of the service's container: status, health, restarts, OOMKilled, pid, image; {} when none."""
    cid = container_id(settings, service)
    if cid is None:
        return {}
    res = docker("inspect", cid)
    if res.returncode != 0:
        return {}
    try:
        info = json.loads(res.stdout)[0]
    except (ValueError, IndexError):
        return {}
    st = info.get("State", {})
    return {
        "id": cid[:12],
        "name": str(info.get("Name", "")).lstrip("/"),
        "status": st.get("Status"),
        "health": (st.get("Health") or {}).get("Status"),
        "restarts": info.get("RestartCount", 0),
        "oom_killed": bool(st.get("OOMKilled")),
        "pid": st.get("Pid"),
        "exit_code": st.get("ExitCode"),
        "image": str(info.get("Image", ""))[7:19],
        "memory_limit": (info.get("HostConfig") or {}).get("Memory"),
    }


def app_health() -> dict[str, Any] | None:
    """The app's /health answer from this machine, or None when it does not answer."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{APP_URL}/health", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            return {"status": f"HTTP {exc.code}"}
    except (OSError, ValueError):
        return None


def wait_healthy(settings: Settings, version: str | None = None, timeout: float = HEALTHY_TIMEOUT_S) -> bool:
    """Until the app container is healthy (docker's healthcheck and /health), of `version` when given."""

    def ok() -> bool:
        if container_state(settings).get("health") != "healthy":
            return False
        health = app_health()
        return bool(
            health
            and health.get("status") == "healthy"
            and (version is None or health.get("version") == version)
        )

    return bool(wait_until(ok, timeout, 0.5))


def checked_out(settings: Settings) -> str | None:
    """The release tag checked out in the project dir (None when it is not exactly a tag)."""
    proc = subprocess.run(
        ["git", "-C", str(project_dir(settings)), "describe", "--tags", "--exact-match"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": PATH_ENV, "HOME": "/root"},
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def start(settings: Settings, log: Log = _quiet) -> dict[str, Any]:
    """Engine, base image, checkout, project up and healthy, routing, the lab hosts opened; timings.

    Raises RuntimeError naming the step that failed. The caller holds the lab lock.
    """
    started = time.monotonic()
    timings: dict[str, float] = {}
    timings["engine_s"] = start_engine(settings, log)
    timings["import_s"] = ensure_base_image(settings, log)
    ensure_repo(settings, log)
    write_settings(settings)
    t = time.monotonic()
    _must(compose(settings, "build", "--quiet"), "docker-compose build")
    timings["build_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    # The network (and its bridge) first, so routing names a bridge that exists when the app connects.
    _must(compose(settings, "up", "--no-start"), "docker-compose up --no-start")
    routing_on(settings)
    problems = open_lab_hosts(settings)
    if problems:
        raise RuntimeError("compose: " + "; ".join(problems))
    _must(compose(settings, "up", "-d"), "docker-compose up -d")
    if not wait_healthy(settings):
        raise RuntimeError(
            f"compose: the app container is not healthy after {HEALTHY_TIMEOUT_S:.0f}s: "
            f"{container_state(settings)} {str(app_health())[:300]}"
        )
    timings["up_s"] = round(time.monotonic() - t, 1)
    timings["seconds"] = round(time.monotonic() - started, 1)
    state = _read_state(settings)
    state.update({"up": True, "timings": timings})
    _write_state(settings, state)
    log(f"compose: {PROJECT} up and healthy at {APP_URL} in {timings['seconds']}s")
    return timings


def stop(settings: Settings) -> None:
    """Stop the engine and remove its traces and the routing; the checkout and image cache stay."""
    stop_engine(settings)
    routing_off(settings)
    state = _read_state(settings)
    if state:
        state["up"] = False
        _write_state(settings, state)


def wanted(settings: Settings) -> bool:
    """Whether the last `start` succeeded and no `stop` came after it (the inventory lists compose1)."""
    return bool(_read_state(settings).get("up"))


def status(settings: Settings) -> dict[str, Any]:
    """The engine and the project's containers, for `collector-lab status`."""
    pid = engine_pid()
    out: dict[str, Any] = {"engine": bool(pid) and engine_answers(), "engine_pid": pid, "socket": str(SOCKET)}
    if out["engine"]:
        out["containers"] = {s: container_state(settings, s) for s in (SERVICE, "zoho-mock")}
        out["release"] = checked_out(settings)
    return out


def inventory_group(settings: Settings) -> dict[str, Any]:
    """The inventory's `compose` group: compose1 is this machine (the engine runs here)."""
    return {
        "hosts": {
            HOST: {
                "ansible_connection": "local",
                "ansible_python_interpreter": "/usr/bin/python3",
                "collector_roles": GROUP,
                "collector_deploy": "compose",
                "collector_compose_dir": str(project_dir(settings)),
                "collector_compose_file": COMPOSE_FILE,
                "collector_compose_project": PROJECT,
                "collector_compose_service": SERVICE,
                "collector_docker_host": DOCKER_HOST,
                "collector_env_file": str(project_dir(settings) / ".env"),
                "collector_app_url": APP_URL,
                "collector_app_port": APP_PORT,
                "collector_memory_limit_target": MEMORY_LIMIT_TARGET,
            }
        }
    }


def refresh_inventory(settings: Settings) -> list[Path]:
    """Write the lab's inventory again, with the `compose` group while the compose host is wanted."""
    table: dict[str, dict[str, object]] = lab_state(settings).get("hosts") or {}
    if not table:
        return []
    keys = {n: (lab_dir(settings) / "hosts" / n / "host_key.pub").read_text().strip() for n in table}
    extra = {GROUP: inventory_group(settings)} if wanted(settings) else None
    return hosts.write_inventory(settings, table, keys, hosts.ensure_secrets(settings), extra)


# ---------------------------------------------------------------------------- faults (collector_lab.faults)

Waiter = Callable[[], bool]


def _need(cond: Waiter, seconds: float, what: str) -> None:
    if not wait_until(cond, seconds, 0.5):
        raise RuntimeError(f"timed out after {seconds:.0f}s: {what}")


def app_down_break(settings: Settings) -> str:
    """`docker-compose stop app`: the container stays down (a stopped container is not restarted)."""
    _must(compose(settings, "stop", "-t", "10", SERVICE), "docker-compose stop app")
    _need(
        lambda: container_state(settings).get("status") == "exited" and app_health() is None,
        30,
        "the app container down",
    )
    return f"{PROJECT}_{SERVICE} stopped"


def app_down_heal(settings: Settings) -> str:
    _must(compose(settings, "up", "-d"), "docker-compose up -d")
    if not wait_healthy(settings):
        raise RuntimeError(f"the app container is not healthy: {container_state(settings)}")
    return f"{PROJECT}_{SERVICE} up and healthy"


def app_down_active(settings: Settings) -> bool:
    return container_state(settings).get("status") not in ("running", "restarting", None)


def deploy(settings: Settings, tag: str) -> str:
    """The runbook's deploy: `git checkout TAG` and `docker-compose up -d --build`, until healthy at TAG."""
    if checked_out(settings) != tag:
        _git(project_dir(settings), "checkout", "-q", tag)
    _must(compose(settings, "up", "-d", "--build"), "docker-compose up -d --build")
    version = tag.lstrip("v")
    if not wait_healthy(settings, version):
        raise RuntimeError(f"the app is not healthy at {version}: {str(app_health())[:300]}")
    return f"{PROJECT} at {tag}"


def bad_deploy_break(settings: Settings) -> str:
    return deploy(settings, BAD)


def bad_deploy_heal(settings: Settings) -> str:
    return deploy(settings, GOOD)


def bad_deploy_active(settings: Settings) -> bool:
    return checked_out(settings) == BAD


OOM_HOG = (
    "import time\nheld = []\nwhile True:\n    held.append(b'\\x01' * (16 << 20))\n    time.sleep(0.02)\n"
)


def oom_break(settings: Settings) -> str:
    """The app's own process is OOM-killed under the container's memory limit; docker restarts it.

    A growing allocation inside the container (docker exec) fills the limit while the app process is
    marked the kernel's first choice (oom_score_adj 1000, as a leaking app would be the biggest), so
    the kernel kills the app: the container exits 137, State.OOMKilled turns true and the restart
    policy starts it again. Returns once it is running again with the flag set.
    """
    oom_heal(settings)
    before = container_state(settings)
    if before.get("status") != "running" or not before.get("pid"):
        raise RuntimeError(f"the app container is not running: {before}")
    Path(f"/proc/{before['pid']}/oom_score_adj").write_text("1000")
    # It ends with the container (its pid namespace goes when the app, its init, is killed).
    docker("exec", str(before["id"]), "python3", "-c", OOM_HOG, timeout=60)

    def restarted() -> bool:
        now = container_state(settings)
        return bool(
            now.get("oom_killed")
            and now.get("status") == "running"
            and int(now.get("restarts", 0)) > int(before.get("restarts", 0))
        )

    _need(restarted, 60, "the app container OOM-killed and restarted")
    return f"{PROJECT}_{SERVICE} OOM-killed under its {MEMORY_LIMIT // 2**20} MiB limit and restarted"


def oom_heal(settings: Settings) -> str:
    """A fresh container (OOMKilled and the restart count start over), healthy."""
    if not oom_active(settings):
        return "no OOM kill on record"
    _must(compose(settings, "up", "-d", "--force-recreate", SERVICE), "docker-compose up --force-recreate")
    if not wait_healthy(settings):
        raise RuntimeError(f"the app container is not healthy: {container_state(settings)}")
    return f"{PROJECT}_{SERVICE} recreated"


def oom_active(settings: Settings) -> bool:
    return bool(container_state(settings).get("oom_killed"))
