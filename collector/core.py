"""The contracts every step shares: result values and status words.

Each step hands the next one plain values from this module (see ARCHITECTURE in the README).
A failing host or probe is one of these values, never an exception that ends the run.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Literal

ProbeStatus = Literal["ok", "failed", "timeout", "not_found", "skipped"]
HostStatus = Literal["ok", "partial", "unreachable", "failed"]

PROBE_STATUSES: tuple[str, ...] = ("ok", "failed", "timeout", "not_found", "skipped")
HOST_STATUSES: tuple[str, ...] = ("ok", "partial", "unreachable", "failed")

# Exit codes shared by every command.
EXIT_OK = 0
EXIT_PARTIAL = 1  # ran, but some host or check failed
EXIT_USAGE = 2  # bad input: one clear line, nothing written

BUNDLE_SCHEMA = "incident-collector/bundle/v1"
FINDINGS_SCHEMA = "incident-collector/findings/v1"


class UsageError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits 2."""


def utcnow() -> str:
    """The current time as an ISO 8601 UTC string with millisecond precision."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Probe:
    """One entry of the probe catalogue (playbooks/vars/probes.yml)."""

    name: str
    command: str  # shell command; {var} placeholders are filled on the host, shlex-quoted
    roles: tuple[str, ...] = ("all",)
    timeout_s: float = 20.0
    cap_bytes: int = 25 * 1024 * 1024
    env: dict[str, str] = field(default_factory=dict)  # env var name -> host var holding its value
    requires: tuple[str, ...] = ()  # executables; a missing one makes the probe not_found
    parser: str | None = None
    description: str = ""


@dataclass
class ProbeResult:
    """What one probe did on one host. `output` is the raw (possibly capped) bytes."""

    host: str
    probe: str
    command: str
    status: ProbeStatus
    rc: int | None
    started: str
    duration_s: float
    output: bytes = b""
    truncated: bool = False
    bytes: int = 0  # bytes the command produced, before the cap
    error: str | None = None


@dataclass
class HostResult:
    """All probes of one host, or why there are none (unreachable, auth failure...)."""

    host: str
    status: HostStatus
    error: str | None = None
    probes: list[ProbeResult] = field(default_factory=list)
    roles: tuple[str, ...] = ()


@dataclass
class RunResult:
    """One collection run: every host's result plus the control-machine monitoring queries."""

    incident: str
    pattern: str
    inventory: str
    engine: str
    command_line: list[str]
    started: str
    finished: str = ""
    interrupted: bool = False
    since: str = ""  # the journal window asked for (`10m` or a timestamp); triage reads its window from it
    hosts: dict[str, HostResult] = field(default_factory=dict)
    monitoring: list[ProbeResult] = field(default_factory=list)  # host == "monitoring"

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h, r in self.hosts.items() if r.status != "ok"]


def host_status(probes: list[ProbeResult]) -> HostStatus:
    """A reachable host is ok when every probe is ok, not_found or skipped, else partial."""
    if not probes:
        return "failed"
    bad = [p for p in probes if p.status in ("failed", "timeout")]
    return "partial" if bad else "ok"
