"""The lab's monitoring: Debian's Prometheus and Alertmanager, run by `lab up` on loopback only.

Each gets its own config and data folder under `<state_dir>/lab/monitoring/`; the templates
live in `lab/monitoring/` (prometheus.yml, rules.yml, alertmanager.yml). Prometheus scrapes the
app hosts' `/metrics` over the lab bridge and evaluates the runbook's alert rules.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import string
import subprocess
import time
import urllib.request
from pathlib import Path

from collector.config import Settings
from collector.times import wait_until

from collector_lab import assets, lab_dir

PROMETHEUS_ADDR = "127.0.0.1:9090"
ALERTMANAGER_ADDR = "127.0.0.1:9093"
SERVE_PORT = 9095  # where the lab's Alertmanager posts: `collector serve`'s default listen port
BINARIES = {"prometheus": "/usr/bin/prometheus", "alertmanager": "/usr/bin/prometheus-alertmanager"}


def mon_dir(settings: Settings) -> Path:
    return lab_dir(settings) / "monitoring"


def render_configs(settings: Settings, apps: dict[str, str]) -> dict[str, Path]:
    """Write prometheus.yml, rules.yml and alertmanager.yml for `apps` (name -> ip); returns their paths."""
    src = assets() / "monitoring"
    out = mon_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    rules = out / "rules.yml"
    rules.write_text((src / "rules.yml").read_text())
    # JSON is YAML: one static config per app host, labelled with the host's name.
    targets = json.dumps([{"targets": [f"{ip}:8000"], "labels": {"host": name}} for name, ip in apps.items()])
    prom = out / "prometheus.yml"
    prom.write_text(
        string.Template((src / "prometheus.yml").read_text()).safe_substitute(
            rules_file=str(rules), app_static_configs=targets
        )
    )
    am = out / "alertmanager.yml"
    am.write_text(
        string.Template((src / "alertmanager.yml").read_text()).safe_substitute(
            serve_port=str(SERVE_PORT), token_file=str(serve_token_file(settings))
        )
    )
    return {"prometheus": prom, "rules": rules, "alertmanager": am}


def serve_token_file(settings: Settings) -> Path:
    """The bearer token the lab's Alertmanager sends to `collector serve` (made once, 0600): start serve with
    `--token-file` this path."""
    path = mon_dir(settings) / "serve-token"
    if not path.is_file() or not path.read_text().strip():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    return path


def _argv(settings: Settings, name: str) -> list[str]:
    d = mon_dir(settings)
    if name == "prometheus":
        return [
            BINARIES[name],
            f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'prometheus-data'}",
            f"--web.listen-address={PROMETHEUS_ADDR}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=2d",
        ]
    return [
        BINARIES[name],
        f"--config.file={d / 'alertmanager.yml'}",
        f"--storage.path={d / 'alertmanager-data'}",
        f"--web.listen-address={ALERTMANAGER_ADDR}",
        "--cluster.listen-address=",
        f"--web.external-url=http://{ALERTMANAGER_ADDR}/",
    ]


def pids(settings: Settings) -> dict[str, list[int]]:
    """Running Prometheus/Alertmanager processes that use this lab's config files."""
    marker = str(mon_dir(settings)) + "/"
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not any(marker.encode() in a for a in argv):
            continue
        exe = argv[0].decode(errors="replace")
        for name, binary in BINARIES.items():
            if exe == binary:
                found.setdefault(name, []).append(int(entry.name))
    return found


def ready(name: str, timeout: float = 1.0) -> bool:
    """Whether the loopback service answers its readiness endpoint."""
    addr = PROMETHEUS_ADDR if name == "prometheus" else ALERTMANAGER_ADDR
    try:
        with urllib.request.urlopen(f"http://{addr}/-/ready", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start(settings: Settings, apps: dict[str, str], timeout: float = 30.0) -> dict[str, int]:
    """Start (or keep, reloading its config) Prometheus and Alertmanager; returns their pids."""
    for name, binary in BINARIES.items():
        if not Path(binary).exists():
            raise RuntimeError(f"{binary} is missing: apt-get install prometheus prometheus-alertmanager")
    render_configs(settings, apps)
    running = pids(settings)
    started: dict[str, int] = {}
    for name in ("alertmanager", "prometheus"):
        if running.get(name):
            pid = running[name][0]
            os.kill(pid, signal.SIGHUP)  # both reload their config on SIGHUP
            started[name] = pid
            continue
        if ready(name, timeout=0.3):
            addr = PROMETHEUS_ADDR if name == "prometheus" else ALERTMANAGER_ADDR
            raise RuntimeError(f"{addr} is taken by another {name} (not the lab's); stop it first")
        (mon_dir(settings) / f"{name}-data").mkdir(parents=True, exist_ok=True)
        log = (mon_dir(settings) / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            _argv(settings, name),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        log.close()
        started[name] = proc.pid
    deadline = time.monotonic() + timeout
    for name in started:
        if not wait_until(functools.partial(ready, name), deadline - time.monotonic()):
            raise RuntimeError(f"{name} did not become ready; see {mon_dir(settings) / (name + '.log')}")
    # Ready is not yet scraping: service discovery publishes the targets a few seconds later.
    jobs = {"prometheus", "alertmanager"} | ({"sergas-app"} if apps else set())
    if not wait_until(lambda: jobs <= active_jobs(), deadline - time.monotonic()):
        raise RuntimeError(f"prometheus lists no targets for {', '.join(sorted(jobs - active_jobs()))}")
    return started


def active_jobs() -> set[str]:
    """The jobs of Prometheus' active scrape targets (empty when it does not answer)."""
    try:
        with urllib.request.urlopen(
            f"http://{PROMETHEUS_ADDR}/api/v1/targets?state=active", timeout=1
        ) as resp:
            targets = json.loads(resp.read())["data"]["activeTargets"]
        return {str(t["labels"]["job"]) for t in targets}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _running(pid: int) -> bool:
    """A live process (a zombie's cmdline is empty; a reaped one has no /proc entry)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def stop(settings: Settings, timeout: float = 10.0) -> None:
    """Stop this lab's Prometheus and Alertmanager (SIGTERM, then SIGKILL)."""
    victims = [p for plist in pids(settings).values() for p in plist]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def gone() -> bool:
        nonlocal victims
        victims = [p for p in victims if _running(p)]
        return not victims

    wait_until(gone, timeout, 0.1)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def drop_data(settings: Settings) -> None:
    """Forget the stopped services' data: a silence or a firing alert of an earlier lab (a test that
    acknowledged an incident and never resolved it) would otherwise mute the next lab's alerts."""
    for name in BINARIES:
        shutil.rmtree(mon_dir(settings) / f"{name}-data", ignore_errors=True)


def status(settings: Settings) -> dict[str, dict[str, object]]:
    """Each monitoring service: pid(s), whether it answers, its loopback URL."""
    running = pids(settings)
    return {
        "prometheus": {
            "pids": running.get("prometheus", []),
            "ready": ready("prometheus"),
            "url": f"http://{PROMETHEUS_ADDR}",
        },
        "alertmanager": {
            "pids": running.get("alertmanager", []),
            "ready": ready("alertmanager"),
            "url": f"http://{ALERTMANAGER_ADDR}",
        },
    }
