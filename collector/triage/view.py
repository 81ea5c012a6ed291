"""What a measure reads and returns: the bundle as triage sees it, a Measure, and Unknown.

Shared by the engine (which evaluates rules) and the measures (which read probes), so neither
imports the other's internals: engine → measures → view, no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.core import Evidence

MONITORING_HOST = "monitoring"  # the pseudo-host of the control machine's Prometheus/Alertmanager answers


class BundleView(Protocol):
    """What triage needs from a bundle (collector.bundle.Bundle provides it)."""

    manifest: dict[str, Any]

    @property
    def hosts(self) -> list[str]: ...

    def probe(self, host: str, probe: str) -> dict[str, Any] | None: ...

    def read(self, host: str, probe: str) -> bytes | None: ...

    def read_file(self, relpath: str) -> bytes | None: ...


@dataclass
class Measure:
    """One observed value on one host (or of the monitoring), with the lines it came from.

    `key` groups measures into findings (default: one finding per rule); `fields` feed the
    message template and the mitigation's parameter templates.
    """

    host: str
    value: Any
    evidence: list[Evidence] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    severity: str | None = None  # a measure may carry its own severity (an alert's label)


class Unknown(Exception):
    """A measure could not be taken: the reason is reported, the rule is 'unknown' for that host."""


def host_roles(bundle: BundleView, host: str) -> tuple[str, ...]:
    """A host's roles from the manifest (`roles`), else its inventory groups if recorded."""
    entry = (bundle.manifest.get("hosts") or {}).get(host) or {}
    roles = entry.get("roles") or entry.get("groups") or ()
    return tuple(str(r) for r in roles)
