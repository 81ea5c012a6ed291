"""Shared fixtures: the running lab (skips cleanly when it is not up) and the lab lock.

def test_x(lab):            # session-scoped; skips when `collector-lab up` has not run
    lab.inventory           # Path of inventory/lab.yml (state-dir copy, absolute paths inside)
    lab.ips["db1"]          # bridge IPs by host; lab.groups["web"] -> host names
    lab.secrets["db_password"], lab.secrets["redis_password"], lab.secrets["api_token"]
    lab.host("app1")        # testinfra host over OpenSSH with the lab key and known_hosts
    lab.ssh_config, lab.key, lab.known_hosts, lab.prometheus_url, lab.alertmanager_url

def test_y(lab, lab_lock):  # anything that breaks or changes a lab host holds the lock

def test_z(json_server):    # a loopback HTTP server answering JSON (Prometheus/Alertmanager stand-ins)
    url = json_server(lambda path, query: (200, {...}))
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from collector_lab import hosts, lab_secrets, lab_state, lifecycle, signers
from collector_lab.lock import lab_lock as hold_lab_lock

from collector.config import Settings, load_settings
from collector.core import UsageError


@dataclass
class Lab:
    """The running lab as tests see it."""

    settings: Settings
    inventory: Path
    known_hosts: Path
    ssh_config: Path
    key: Path
    ips: dict[str, str]
    groups: dict[str, list[str]]
    secrets: dict[str, str]
    signers: (
        signers.LabSigners
    )  # keys of alice (requests), bob (approves), carol (break glass), mallory (unlisted)
    prometheus_url: str = "http://127.0.0.1:9090"
    alertmanager_url: str = "http://127.0.0.1:9093"
    _hosts: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.ips)

    def host(self, name: str) -> Any:
        """A testinfra host for `name` (OpenSSH backend: the lab key, host-key checking on)."""
        if name not in self.ips:
            raise KeyError(f"{name} is not a lab host ({', '.join(self.ips)})")
        if name not in self._hosts:
            import testinfra

            self._hosts[name] = testinfra.get_host(
                f"ssh://{name}", ssh_config=str(self.ssh_config), connection_timeout=10
            )
        return self._hosts[name]


def _lab_or_reason() -> Lab | str:
    if os.geteuid() != 0:
        return "the lab needs root; not running as root"
    try:
        settings = load_settings()
        if not lifecycle.is_up(settings):
            return "lab is not up (run `collector-lab up`)"
    except (OSError, ValueError, UsageError) as exc:  # a broken environment: a skip reason here
        return f"lab state unreadable: {exc}"
    state = lab_state(settings)
    table: dict[str, Any] = state.get("hosts") or {}
    inv = hosts.inventory_path(settings)
    groups: dict[str, list[str]] = {g: [] for g in ("app", "db", "redis", "web")}
    for name, spec in table.items():
        groups.setdefault(str(spec["group"]), []).append(name)
    groups["lab"] = list(table)
    return Lab(
        settings=settings,
        inventory=inv,
        known_hosts=inv.parent / "lab_known_hosts",
        ssh_config=inv.parent / "lab_ssh_config",
        key=hosts.ssh_key(settings),
        ips={n: str(s["ip"]) for n, s in table.items()},
        groups=groups,
        secrets=lab_secrets(settings),
        signers=signers.ensure(settings),
    )


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The running lab; skips (with the reason) when it is not up."""
    found = _lab_or_reason()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture()
def lab_lock() -> Iterator[None]:
    """Exclusive hold on /tmp/collector-lab.lock (collector_lab.lock, the lock `collector-lab` takes)
    for one test.

    Waits up to an hour: a queue of other lab users (scenario tests, demos) can take a while.
    """
    with hold_lab_lock(timeout_s=3600):
        yield


@pytest.fixture(scope="session")
def app_host(lab: Lab) -> Any:
    return lab.host(lab.groups["app"][0])


@pytest.fixture(scope="session")
def db_host(lab: Lab) -> Any:
    return lab.host(lab.groups["db"][0])


@pytest.fixture(scope="session")
def redis_host(lab: Lab) -> Any:
    return lab.host(lab.groups["redis"][0])


# A route answers one GET: (path, parsed query) -> (HTTP status, JSON body).
Route = Callable[[str, dict[str, list[str]]], tuple[int, Any]]


@pytest.fixture()
def json_server() -> Iterator[Callable[[Route], str]]:
    """Start loopback HTTP servers that answer GETs (and DELETEs, routed alike) with JSON from a route;
    returns each one's base URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(route: Route) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                url = urlsplit(self.path)
                status, body = route(url.path, parse_qs(url.query))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_DELETE = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
