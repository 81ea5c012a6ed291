"""The probe catalogue (playbooks/vars/probes.yml) as values, and the runner request built from it.

The catalogue is data; the on-host runner (playbooks/files/probe_runner.py) executes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from collector.core import UsageError
from collector.paths import resource

CATALOGUE_KEY = "collector_probes"
_LOADER = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)  # libyaml when present: the catalogue is read every run
# The keys a catalogue entry may have (playbooks/vars/probes.yml documents each);
# the runner reads them as data.
CATALOGUE_KEYS = (
    "name",
    "command",
    "roles",
    "timeout_s",
    "cap_bytes",
    "env",
    "requires",
    "ok_rc",
    "serial",
    "format",
    "description",
)
# Host vars a probe may read; everything else in hostvars stays on the control machine.
_VAR_PREFIX = "collector_"
# Runs at most this many probes at once per host (sshd's MaxSessions is not involved: one channel).
RUNNER_CONCURRENCY = 5


def catalogue_path() -> Path:
    """The shipped catalogue file."""
    return resource("playbooks") / "vars" / "probes.yml"


def runner_path() -> Path:
    """The shipped on-host runner."""
    return resource("playbooks") / "files" / "probe_runner.py"


@lru_cache(maxsize=1)
def runner_source() -> str:
    """The runner's source text, sent to every host."""
    return runner_path().read_text()


def runner_module() -> Any:
    """The on-host runner imported here, for its pure helpers (`fill`, `journal_since`, `select`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("collector_probe_runner", runner_path())
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_entries(path: Path | str | None = None) -> list[dict[str, Any]]:
    """The catalogue's entries as plain dicts (what the runner receives), validated."""
    path = Path(path) if path else catalogue_path()
    try:
        doc = yaml.load(path.read_text(), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"probe catalogue {path} is unreadable: {str(exc).splitlines()[0]}") from None
    entries = doc.get(CATALOGUE_KEY) if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise UsageError(f"probe catalogue {path} has no list `{CATALOGUE_KEY}`")
    known = set(CATALOGUE_KEYS)
    seen: set[str] = set()
    prepare = runner_module().prepare  # the runner's own reading of placeholders, so both agree
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("command"):
            raise UsageError(f"probe catalogue {path}: every probe needs a name and a command")
        unknown = set(entry) - known
        if unknown:
            raise UsageError(f"probe catalogue {path}: probe {entry['name']}: unknown key {min(unknown)}")
        if entry["name"] in seen:
            raise UsageError(f"probe catalogue {path}: probe {entry['name']} is declared twice")
        error = prepare(str(entry["command"]), {})[3]
        if error:  # a placeholder the runner cannot fill safely (inside single quotes or backquotes)
            raise UsageError(f"probe catalogue {path}: probe {entry['name']}: {error}")
        seen.add(entry["name"])
    return entries


def probe_vars(hostvars: dict[str, Any]) -> dict[str, Any]:
    """The subset of a host's vars that go to the host: collector_* scalars only."""
    return {
        k: v
        for k, v in hostvars.items()
        if k.startswith(_VAR_PREFIX) and isinstance(v, (str, int, float, bool)) and k != "collector_roles"
    }


def build_request(
    entries: list[dict[str, Any]],
    hostvars: dict[str, Any],
    roles: Iterable[str],
    *,
    since: str,
    cap_bytes: int,
    default_timeout_s: float,
) -> dict[str, Any]:
    """The JSON request one host's runner gets (only the probes for its roles)."""
    wanted = set(roles) | {"all"}
    return {
        "probes": [e for e in entries if set(e.get("roles") or ["all"]) & wanted],
        "vars": probe_vars(hostvars),
        "roles": list(roles),
        "since": since,
        "cap_bytes": int(cap_bytes),
        "default_timeout_s": float(default_timeout_s),
        "concurrency": RUNNER_CONCURRENCY,
    }


def request_json(request: dict[str, Any]) -> str:
    """The request serialised for the runner."""
    return json.dumps(request, separators=(",", ":"))


def expected_names(entries: list[dict[str, Any]], roles: Iterable[str]) -> list[str]:
    """Names of the probes a host with these roles runs (progress totals)."""
    wanted = set(roles) | {"all"}
    return [e["name"] for e in entries if set(e.get("roles") or ["all"]) & wanted]
