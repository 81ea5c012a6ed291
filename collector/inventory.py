"""Ansible inventories and host patterns, read with Ansible's own inventory code (never re-parsed).

A source is a YAML/INI file or a directory of them (group_vars/host_vars included). Inside a
directory, `example-*` files and `*known_hosts*` / `*ssh_config*` files are documentation and SSH data.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.core import UsageError
from collector.paths import resource
from collector.redact import secret_name

# Files in an inventory directory that are not inventory sources (beside Ansible's own ignore list).
_NOT_INVENTORY = re.compile(
    r"^example-|known_hosts|ssh_config|^README|\.(md|txt|orig|bak|swp|retry|cfg|pyc)$|~$|^\."
)
_NOT_INVENTORY_DIRS = {"group_vars", "host_vars", "vars_plugins"}

# The roles the catalogue, the rules and verify know; a host's groups among these are its roles.
ROLES: tuple[str, ...] = ("app", "db", "redis", "web", "compose")

# Host variables whose values are secrets (collector_redis_password, ansible_become_pass, an API token,
# db_credentials): redaction scrubs their values wherever they appear. Whether a name is a secret's is judged
# in one place, collector.redact.secret_name (a name ending in _file/_path/_dir/_url says where a secret
# lives, not the secret). Shorter values would scrub ordinary words and numbers.
MIN_SECRET_LEN = 4


@dataclass
class Inventory:
    """A parsed inventory: its sources, and per host its groups and (templated) vars."""

    source: str  # what the user named (file or directory), absolute
    files: list[str]  # the files Ansible parsed
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> hostvars
    groups: dict[str, list[str]] = field(default_factory=dict)  # host -> group names
    _manager: Any = None

    def match(self, pattern: str) -> list[str]:
        """Hosts matching an Ansible pattern (`prod`, `app`, `prod:&db`, `web0*`, `!db`); none: UsageError."""
        if not pattern or not pattern.strip():
            raise UsageError("--hosts needs a host pattern (e.g. prod, app, prod:&db, web0*)")
        try:
            with _quiet():
                found = self._manager.get_hosts(pattern=pattern)
        except Exception as exc:  # noqa: BLE001 - AnsibleError, or whatever a malformed pattern raises inside
            raise UsageError(f"host pattern {pattern!r} is invalid: {_one_line(exc)}") from None
        names = [h.name for h in found]
        if not names:
            raise UsageError(f"host pattern {pattern!r} matches no host in {self.source}")
        return names

    def roles(self, host: str) -> tuple[str, ...]:
        """The one answer to "what is this host?": collect, plan and verify all ask here.

        `collector_roles` when set (a list, or a comma-separated string such as "app,db"), else the
        host's groups among ROLES. An unknown host has no roles.
        """
        return roles_from(self.groups.get(host, []), self.hosts.get(host, {}))

    def secret_values(self, hosts: Iterable[str] | None = None) -> list[str]:
        """Values of the secret host variables of `hosts` (every host when None), sorted, for redaction."""
        names = list(self.hosts) if hosts is None else [h for h in hosts if h in self.hosts]
        return secret_values_in({h: self.hosts[h] for h in names})


def roles_from(groups: Iterable[str], hostvars: Mapping[str, Any]) -> tuple[str, ...]:
    """Inventory.roles for a host's groups and vars (for callers that hold only those)."""
    explicit = hostvars.get("collector_roles")
    if explicit:
        items = explicit.split(",") if isinstance(explicit, str) else explicit
        if not isinstance(items, (list, tuple)):
            items = [items]
        roles = (str(r).strip() for r in items)
        return tuple(dict.fromkeys(r for r in roles if r))
    member = set(groups)
    return tuple(r for r in ROLES if r in member)


def is_secret_var(name: str) -> bool:
    """True when a variable's name says its value is a secret: the redactor's judgement of names, so a host
    variable is scrubbed exactly when the same name in a file or log would be."""
    return secret_name(name)


def secret_values_in(variables: Mapping[str, Any]) -> list[str]:
    """Secret values in vars (host -> vars, or one host's vars; nested mappings and lists are searched)."""
    found: set[str] = set()

    def visit(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                visit(str(key), inner)
        elif isinstance(value, (list, tuple)):
            for inner in value:
                visit(name, inner)
        elif isinstance(value, (str, int)) and not isinstance(value, bool) and is_secret_var(name):
            text = str(value)
            # An untemplated Jinja expression (a vault not given) names a secret; it is not one.
            if len(text) >= MIN_SECRET_LEN and "{{" not in text:
                found.add(text)

    for key, value in variables.items():
        visit(str(key), value)
    return sorted(found)


def default_inventory() -> str:
    """./inventory when it exists, else the inventory shipped with the tool."""
    local = Path("inventory")
    if local.exists():
        return str(local.resolve())
    return str(resource("inventory"))


def inventory_files(source: str) -> list[str]:
    """The inventory files a source stands for; unreadable or empty → UsageError."""
    path = Path(source).expanduser()
    if not path.exists():
        raise UsageError(f"inventory {source} does not exist")
    if path.is_file():
        if not os.access(path, os.R_OK):
            raise UsageError(f"inventory {source} is not readable")
        return [str(path.resolve())]
    files = []
    for child in sorted(path.iterdir()):
        if child.name in _NOT_INVENTORY_DIRS or _NOT_INVENTORY.search(child.name):
            continue
        if child.is_dir():
            files.extend(inventory_files(str(child)))
        elif child.is_file():
            if not os.access(child, os.R_OK):
                raise UsageError(f"inventory file {child} is not readable")
            files.append(str(child.resolve()))
    if not files:
        raise UsageError(f"inventory directory {source} holds no inventory file")
    return files


@contextlib.contextmanager
def _quiet() -> Any:
    """Ansible prints warnings to stderr; we report one clear line of our own instead."""
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(io.StringIO()):
        yield sink


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _plain(value: Any) -> Any:
    """Ansible's tagged/lazy containers and strings as plain Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _host_vars(manager: Any, variables: Any, loader: Any, host: Any) -> dict[str, Any]:
    from ansible.template import Templar

    raw = variables.get_vars(host=host, include_hostvars=False)
    templar = Templar(loader=loader, variables=raw)
    wanted = {
        k: v
        for k, v in raw.items()
        if k.startswith(("collector_", "ansible_")) or k in ("inventory_hostname",)
    }
    out: dict[str, Any] = {}
    for key, value in wanted.items():
        try:
            out[key] = _plain(templar.template(value))
        except Exception:  # noqa: BLE001, S112 - an undefined variable (a vault not given) leaves the var unset
            continue
    return out


_PRIVATE_HOME: list[str] = []


def _private_ansible_home() -> None:
    """Point Ansible's in-process state (local temp, ANSIBLE_HOME) at a temp dir, not ~/.ansible."""
    if _PRIVATE_HOME or "ansible.constants" in sys.modules:
        return
    home = tempfile.mkdtemp(prefix="collector-ansible-home-")
    _PRIVATE_HOME.append(home)
    os.environ.setdefault("ANSIBLE_HOME", home)
    os.environ.setdefault("ANSIBLE_LOCAL_TEMP", os.path.join(home, "tmp"))
    atexit.register(shutil.rmtree, home, True)


def load_inventory(source: str | None = None) -> Inventory:
    """Parse an inventory with Ansible; malformed or unparsable → UsageError (one line)."""
    source = source or default_inventory()
    files = inventory_files(source)
    _private_ansible_home()
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    with _quiet() as noise:
        try:
            manager = InventoryManager(loader=loader, sources=files)
        except AnsibleError as exc:
            raise UsageError(f"inventory {source} is malformed: {_one_line(exc)}") from None
    processed = {os.path.realpath(p) for p in manager._inventory.processed_sources}
    for path in files:
        if os.path.realpath(path) not in processed:
            detail = _parse_error(noise.getvalue())
            raise UsageError(
                f"inventory {path} is malformed or not an inventory{': ' + detail if detail else ''}"
            )
    variables = VariableManager(loader=loader, inventory=manager)
    inv = Inventory(source=str(Path(source).expanduser().resolve()), files=files, _manager=manager)
    with _quiet():
        for host in manager.get_hosts(pattern="all"):
            inv.hosts[host.name] = _host_vars(manager, variables, loader, host)
            inv.groups[host.name] = sorted(
                g.name for g in host.get_groups() if g.name not in ("all", "ungrouped")
            )
    return inv


def _parse_error(noise: str) -> str:
    """The most telling line of Ansible's parse warnings."""
    lines = [ln.strip() for ln in noise.splitlines() if ln.strip()]
    for line in lines:
        lowered = line.lower()
        if (
            "error" in lowered or "expected" in lowered or "invalid" in lowered
        ) and "failed to parse" not in lowered:
            return re.sub(r"^\[?(WARNING|ERROR)\]?:?\s*", "", line)[:200]
    return ""


def resolve(pattern: str, source: str | None = None) -> tuple[Inventory, list[str]]:
    """Parse the inventory and the pattern: (inventory, matching host names in inventory order)."""
    inv = load_inventory(source)
    return inv, inv.match(pattern)
