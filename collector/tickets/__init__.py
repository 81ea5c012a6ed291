"""Ticket systems: the small adapter interface, its values, its settings and the registry.

An adapter (one module per system, e.g. `collector.tickets.redmine`) implements `TicketSystem`;
`collector.tickets.evidence` posts a bundle through any of them. Only adapters that a test
exercises against a real server are registered.

Settings live apart from `collector.config` (whose file rejects unknown keys): for a system NAME,
explicit argument → `COLLECTOR_<NAME>_*` environment → `tickets.yml` (`$COLLECTOR_TICKETS_CONFIG`,
else `./tickets.yml`, else `~/.config/collector/tickets.yml`, a mapping `NAME: {url: ..., ...}`) → default.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from collector.core import SEVERITIES, UsageError

TEXT_FORMATS: tuple[str, ...] = ("markdown", "textile")
SHA256_RE = re.compile(r"sha256:([0-9a-f]{64})")

__all__ = ["SEVERITIES", "RemoteFile", "Ticket", "TicketConfig", "TicketError", "TicketSystem", "Upload"]

# name -> "module:factory"; a factory takes a TicketConfig and returns a TicketSystem.
REGISTRY: dict[str, str] = {"redmine": "collector.tickets.redmine:RedmineTickets"}

# Per-system defaults: severity -> the system's priority name.
DEFAULT_PRIORITIES: dict[str, dict[str, str]] = {
    "redmine": {"P0": "Immediate", "P1": "Urgent", "P2": "High", "P3": "Normal"},
}


class TicketError(Exception):
    """The ticket system refused or could not be reached: one line for the user, exit 1."""


@dataclass(frozen=True)
class Upload:
    """A local file to attach; its description carries `sha256:<hex>` so a re-run can recognise it."""

    path: Path
    filename: str
    size: int
    sha256: str

    @property
    def description(self) -> str:
        return f"incident collector evidence sha256:{self.sha256}"


@dataclass(frozen=True)
class RemoteFile:
    """A file already attached to a ticket."""

    id: str
    filename: str
    size: int
    description: str
    url: str

    @property
    def sha256(self) -> str | None:
        match = SHA256_RE.search(self.description or "")
        return match.group(1) if match else None

    def same_as(self, upload: Upload) -> bool:
        """Same name, same size and the same sha256 recorded in its description."""
        return self.filename == upload.filename and self.size == upload.size and self.sha256 == upload.sha256


@dataclass(frozen=True)
class Ticket:
    """A ticket as the system shows it, with its attachments."""

    id: str
    url: str
    subject: str
    priority: str = ""
    attachments: tuple[RemoteFile, ...] = ()


class TicketSystem(Protocol):
    """What `collector attach` needs from a ticket system; every failure is a TicketError."""

    name: str
    url: str

    def find(self, ticket: str) -> Ticket:
        """The ticket with its attachments; TicketError when it does not exist."""
        ...

    def lookup(self, project: str, marker: str) -> Ticket | None:
        """The newest ticket of `project` whose subject contains `marker`, or None."""
        ...

    def create(
        self, project: str, subject: str, body: str, severity: str | None, files: Sequence[Upload]
    ) -> Ticket:
        """Open a ticket with `body` as description, priority mapped from severity, `files` attached."""
        ...

    def attach(self, ticket: str, files: Sequence[Upload], note: str) -> Ticket:
        """Attach `files` and add `note`, in one change of the ticket."""
        ...

    def comment(self, ticket: str, note: str) -> None:
        """Add a note to the ticket."""
        ...


@dataclass(frozen=True)
class TicketConfig:
    """How to reach one ticket system. The API key never appears in repr()."""

    system: str
    url: str
    api_key: str = field(repr=False)
    priorities: dict[str, str] = field(default_factory=dict)
    tracker: str = ""  # name or id; empty = the project's default tracker
    timeout_s: float = 30.0
    text_format: str = "markdown"  # how the server renders notes: markdown (as is) or textile (<pre>)

    def scrub(self, text: str) -> str:
        """`text` with the API key replaced, for any message that might echo it."""
        return text.replace(self.api_key, "«api-key»") if self.api_key else text


def _tickets_file() -> Path | None:
    explicit = os.environ.get("COLLECTOR_TICKETS_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"COLLECTOR_TICKETS_CONFIG points to {path}, which is not a file")
        return path
    for candidate in (Path("tickets.yml"), Path.home() / ".config" / "collector" / "tickets.yml"):
        if candidate.is_file():
            return candidate
    return None


def _file_section(system: str) -> tuple[Path | None, dict[str, Any]]:
    path = _tickets_file()
    if path is None:
        return None, {}
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"tickets config {path} is unreadable: {exc}".splitlines()[0]) from None
    section = loaded.get(system, {}) if isinstance(loaded, dict) else None
    if not isinstance(section, dict):
        raise UsageError(f"tickets config {path}: '{system}' must be a mapping (url, api_key_file, ...)")
    return path, section


def parse_priorities(raw: Any, where: str) -> dict[str, str]:
    """`P0=Immediate,P1=Urgent` or a mapping → {severity: priority}; unknown severities are refused."""
    if isinstance(raw, str):
        pairs = [item.split("=", 1) for item in raw.replace(";", ",").split(",") if item.strip()]
        if any(len(p) != 2 for p in pairs):
            raise UsageError(f"{where}: priorities must look like P0=Immediate,P1=Urgent,P2=High,P3=Normal")
        mapping = {k.strip(): v.strip() for k, v in pairs}
    elif isinstance(raw, dict):
        mapping = {str(k).strip(): str(v).strip() for k, v in raw.items()}
    else:
        raise UsageError(f"{where}: priorities must be a mapping like {{P0: Immediate, P1: Urgent}}")
    unknown = sorted(set(mapping) - set(SEVERITIES))
    if unknown:
        raise UsageError(f"{where}: unknown severity {unknown[0]!r} in priorities (use P0..P3)")
    return mapping


def _read_key_file(path_text: str, where: str) -> str:
    path = Path(path_text).expanduser()
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"{where}: cannot read the API key file {path}: {exc.strerror}") from None
    if not key:
        raise UsageError(f"{where}: the API key file {path} is empty")
    return key


def load_ticket_config(system: str, *, url: str | None = None) -> TicketConfig:
    """Resolve url, API key, priorities, tracker and timeout for `system` (argument → env → file)."""
    if system not in REGISTRY:
        raise UsageError(f"unknown ticket system {system!r} (known: {', '.join(sorted(REGISTRY))})")
    prefix = f"COLLECTOR_{system.upper()}_"
    env = os.environ
    path, section = _file_section(system)
    where_file = f"tickets config {path}" if path else "tickets config"

    resolved_url = url or env.get(prefix + "URL") or section.get("url")
    if not resolved_url:
        raise UsageError(
            f"no {system} URL: pass --url, set {prefix}URL or '{system}: {{url: ...}}' in tickets.yml"
        )
    resolved_url = str(resolved_url).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", resolved_url):
        raise UsageError(f"{system} URL {resolved_url!r} must start with http:// or https://")

    if env.get(prefix + "API_KEY"):
        key = env[prefix + "API_KEY"].strip()
    elif env.get(prefix + "API_KEY_FILE"):
        key = _read_key_file(env[prefix + "API_KEY_FILE"], prefix + "API_KEY_FILE")
    elif section.get("api_key"):
        key = str(section["api_key"]).strip()
    elif section.get("api_key_file"):
        key = _read_key_file(str(section["api_key_file"]), where_file)
    else:
        raise UsageError(
            f"no {system} API key: set {prefix}API_KEY or {prefix}API_KEY_FILE "
            f"(or api_key_file in tickets.yml); it is never taken from the command line"
        )

    priorities = dict(DEFAULT_PRIORITIES.get(system, {}))
    if env.get(prefix + "PRIORITIES"):
        priorities.update(parse_priorities(env[prefix + "PRIORITIES"], prefix + "PRIORITIES"))
    elif "priorities" in section:
        priorities.update(parse_priorities(section["priorities"], where_file))

    raw_timeout = env.get(prefix + "TIMEOUT_S") or section.get("timeout_s") or 30.0
    try:
        timeout_s = float(raw_timeout)
    except (TypeError, ValueError):
        raise UsageError(f"{system} timeout_s: {raw_timeout!r} is not a number") from None
    tracker = str(env.get(prefix + "TRACKER") or section.get("tracker") or "")
    text_format = str(env.get(prefix + "TEXT_FORMAT") or section.get("text_format") or "markdown").lower()
    if text_format not in TEXT_FORMATS:
        raise UsageError(f"{system} text_format {text_format!r}: use one of {', '.join(TEXT_FORMATS)}")
    return TicketConfig(
        system=system,
        url=resolved_url,
        api_key=key,
        priorities=priorities,
        tracker=tracker,
        timeout_s=timeout_s,
        text_format=text_format,
    )


def open_system(config: TicketConfig) -> TicketSystem:
    """Build the adapter registered for `config.system`."""
    module_name, _, factory_name = REGISTRY[config.system].partition(":")
    factory: Callable[[TicketConfig], TicketSystem] = getattr(
        importlib.import_module(module_name), factory_name
    )
    return factory(config)
