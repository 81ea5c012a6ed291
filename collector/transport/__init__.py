"""How the probe runner reaches a host: one small interface, two engines (`ssh`, `ansible`).

    run(hosts, payload, settings, progress) -> {host: HostResult}

`hosts` maps each host name to a Target (its vars and roles); `payload` is what every host's runner
gets in common (catalogue entries, --since, cap, default timeout). Engines never raise for one host:
an unreachable or failing host is a HostResult with the error.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.config import Settings
from collector.core import HostResult, ProbeResult, UsageError, host_status, utcnow
from collector.probes import build_request, request_json, runner_source

ENGINES = ("ssh", "ansible")
# progress(host, event, detail): events "connecting", "running", "probe" (detail: probe, status), "done"
# (detail: status, error, result: the HostResult, which collect writes into the bundle as it arrives)
Progress = Callable[[str, str, dict[str, Any]], None]
_PROGRESS_LINE = re.compile(rb"^@@probe (\S+) (\S+)\s*$")


@dataclass
class Target:
    """One host to collect from: its inventory vars and roles."""

    name: str
    hostvars: dict[str, Any]
    roles: tuple[str, ...] = ()


@dataclass
class Payload:
    """What every host's runner receives in common."""

    entries: list[dict[str, Any]]
    since: str = "10m"
    cap_bytes: int = 25 * 1024 * 1024
    default_timeout_s: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)

    def request(self, target: Target) -> dict[str, Any]:
        """The runner request for one host."""
        return build_request(
            self.entries,
            target.hostvars,
            target.roles,
            since=self.since,
            cap_bytes=self.cap_bytes,
            default_timeout_s=self.default_timeout_s,
        )


class Transport(Protocol):
    def __call__(
        self, hosts: dict[str, Target], payload: Payload, settings: Settings, progress: Progress
    ) -> dict[str, HostResult]: ...


def no_progress(host: str, event: str, detail: dict[str, Any]) -> None:
    """A progress callback that ignores everything."""


def runner_script(request: dict[str, Any]) -> str:
    """The runner source with the request prepended, for `python3 -` (secrets stay off argv)."""
    return f"_REQUEST = {request_json(request)!r}\n" + runner_source()


def progress_lines(chunk: bytes, host: str, progress: Progress) -> None:
    """Turn the runner's `@@probe NAME STATUS` stderr lines into progress events."""
    for line in chunk.splitlines():
        match = _PROGRESS_LINE.match(line)
        if match:
            progress(host, "probe", {"probe": match.group(1).decode(), "status": match.group(2).decode()})


def _probe_result(host: str, item: dict[str, Any]) -> ProbeResult:
    output = base64.b64decode(item.get("output_b64") or "")
    return ProbeResult(
        host=host,
        probe=str(item["probe"]),
        command=str(item.get("command", "")),
        status=item.get("status", "failed"),
        rc=item.get("rc"),
        started=str(item.get("started") or utcnow()),
        duration_s=float(item.get("duration_s") or 0.0),
        output=output,
        truncated=bool(item.get("truncated")),
        bytes=int(item.get("bytes") or len(output)),
        error=item.get("error"),
    )


def parse_response(host: str, roles: tuple[str, ...], document: str | bytes | dict[str, Any]) -> HostResult:
    """The runner's JSON answer as a HostResult; an unreadable answer is a failed host, not an exception."""
    try:
        data = document if isinstance(document, dict) else json.loads(document)
        if not isinstance(data, dict) or not isinstance(data.get("probes"), list):
            raise TypeError("no probes list")
    except (ValueError, TypeError) as exc:
        head = document[:200] if isinstance(document, (str, bytes)) else repr(document)[:200]
        return HostResult(host, "failed", f"runner answered no JSON ({exc}): {head!r}", roles=roles)
    if data.get("error"):
        return HostResult(host, "failed", f"runner: {data['error']}", roles=roles)
    probes = [_probe_result(host, item) for item in data["probes"]]
    roles = roles or tuple(str(r) for r in data.get("roles") or ())  # ingest knows roles only from here
    return HostResult(host, host_status(probes), None, probes, roles=roles)


def failed_host(host: str, roles: tuple[str, ...], status: str, error: str) -> HostResult:
    """A host with no probe results (unreachable, runner could not start...)."""
    return HostResult(host, status, error.strip()[:2000] or status, [], roles=roles)  # type: ignore[arg-type]


def get_transport(engine: str) -> Transport:
    """The engine's run function; unknown engine → UsageError."""
    if engine == "ssh":
        from collector.transport.ssh import run as ssh_run

        return ssh_run
    if engine == "ansible":
        from collector.transport.ansible import run as ansible_run

        return ansible_run
    raise UsageError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")


class Interrupted(Exception):
    """Ctrl-C during a run: carries the hosts that had finished (the rest are marked failed)."""

    def __init__(self, results: dict[str, HostResult]) -> None:
        super().__init__("interrupted")
        self.results = results
