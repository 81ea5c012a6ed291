"""The runbook's mitigations as data: name, playbook, parameters (type, check, default), target group.

Each action's playbook lives in playbooks/remediate/<name>.yml; a parameter `p` of action `a-b`
reaches it as the Ansible variable `a_b_p`, and the play's hosts as `a_b_hosts`.

How the app is deployed on a host (its inventory variable `collector_deploy`: systemd, the default, or
compose) picks the playbook that carries a mitigation out there: `restart` on a Compose host runs
compose-restart.yml. The inventory decides, never a flag, and the plan's binding records it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.core import UsageError
from collector.paths import resource


@dataclass(frozen=True)
class Param:
    """One parameter: `kind` is int, str or choice; `default` None means required."""

    name: str
    kind: str
    help: str
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)  # accepted spelling → canonical value

    @property
    def required(self) -> bool:
        return self.default is None

    def describe(self) -> str:
        """A short text for tables: type, range or choices, default."""
        if self.kind == "choice":
            text = "|".join(self.choices)
        elif self.kind == "int":
            lo = "" if self.minimum is None else str(self.minimum)
            hi = "" if self.maximum is None else str(self.maximum)
            text = f"int {lo}..{hi}" if (lo or hi) else "int"
        else:
            text = "text"
        return text + (" (required)" if self.required else f" (default {self.default})")


@dataclass(frozen=True)
class Action:
    """One mitigation: what it does, which playbook, which group its targets must belong to."""

    name: str
    summary: str
    groups: tuple[str, ...]
    params: tuple[Param, ...] = ()
    restarts: bool = False  # a change on a host restarts its service (rate-limited per host)
    request_time_var: str | None = None  # gets the plan's creation time (epoch s), see restart.yml
    pin_from_check: str | None = None  # param resolved by the check run and pinned in the plan
    # Alerts the mitigation itself raises (param, value, alertname): verify does not count them.
    caused_alerts: tuple[tuple[str, str, str], ...] = ()
    # Deployment kind (collector_deploy) -> playbook name in playbooks/remediate ("" = <name>.yml); a kind
    # missing here is one this mitigation does not support.
    deploys: Mapping[str, str] = field(default_factory=lambda: {"systemd": ""})

    @property
    def prefix(self) -> str:
        return self.name.replace("-", "_")

    @property
    def playbook(self) -> Path:
        """The shipped playbook for the first deployment kind it supports (systemd, else compose)."""
        return resource("playbooks") / "remediate" / self.playbook_name(next(iter(self.deploys)))

    def playbook_name(self, deploy: str) -> str:
        """The playbook file (in playbooks/remediate) for hosts deployed as `deploy`; UsageError if none."""
        if deploy not in self.deploys:
            raise UsageError(
                f"{self.name} has no playbook for {deploy} deployments "
                f"(it supports: {', '.join(self.deploys)})"
            )
        return f"{self.deploys[deploy] or self.name}.yml"

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def expected_alerts(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """Alert names this action raises on purpose with these parameters."""
        return tuple(alert for param, value, alert in self.caused_alerts if str(params.get(param)) == value)

    def extravars(self, params: Mapping[str, Any], hosts_pattern: str) -> dict[str, Any]:
        """The Ansible variables for a run: prefixed params plus the play's hosts pattern."""
        extra = {f"{self.prefix}_{k}": v for k, v in params.items()}
        extra[f"{self.prefix}_hosts"] = hosts_pattern
        return extra


_SIZE = r"^([0-9]+[KMGT]?|[0-9]{1,2}%|100%|infinity)$"
# How the app runs on a host: the inventory variable collector_deploy (unset: systemd).
DEPLOY_VAR = "collector_deploy"
DEPLOY_KINDS = ("systemd", "compose")
_COMPOSE = "compose"
_TAG = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$"
_DBNAME = r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$"

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            "restart",
            "restart the service (collector_service; on a Compose host the service's containers), "
            "then wait for /health healthy",
            groups=("app", "db", "redis", "compose"),
            restarts=True,
            request_time_var="restart_since",
            deploys={"systemd": "", _COMPOSE: "compose-restart"},
        ),
        Action(
            "scale",
            "run N containers of the Compose service (up -d --scale SERVICE=N), then wait for health",
            groups=("compose",),
            params=(Param("replicas", "int", "containers of the service to run", minimum=1, maximum=20),),
            deploys={_COMPOSE: "compose-scale"},
        ),
        Action(
            "pool-resize",
            "set DATABASE_POOL_SIZE in the app's .env and restart the app",
            groups=("app",),
            params=(Param("size", "int", "database connection pool size", minimum=1, maximum=1000),),
            restarts=True,
        ),
        Action(
            "memory-limit",
            "stop the service, systemd drop-in MemoryLimit=/MemoryMax=, daemon-reload, start "
            "(Compose: mem_limit in docker-compose.override.yml, up -d)",
            groups=("app", "compose"),
            params=(
                Param(
                    "max",
                    "str",
                    "MemoryLimit=/MemoryMax= value: 4G (the runbook's), 512M, 80% or infinity "
                    "(Compose: a size only)",
                    default="4G",
                    pattern=_SIZE,
                ),
            ),
            restarts=True,
            deploys={"systemd": "", _COMPOSE: "compose-memory-limit"},
        ),
        Action(
            "rollback",
            "check out an earlier release tag in the deploy dir, restart, wait for health "
            "(Compose: down, git checkout TAG, up -d --build)",
            groups=("app", "compose"),
            params=(
                Param(
                    "tag",
                    "str",
                    "release tag, or 'previous' (resolved and pinned when planning)",
                    default="previous",
                    pattern=_TAG,
                ),
            ),
            restarts=True,
            pin_from_check="tag",
            deploys={"systemd": "", _COMPOSE: "compose-rollback"},
        ),
        Action(
            "kill-idle-connections",
            "terminate PostgreSQL sessions idle longer than N minutes (never the tool's own)",
            groups=("db",),
            params=(
                Param(
                    "minutes",
                    "int",
                    "idle longer than this many minutes",
                    default=10,
                    minimum=0,
                    maximum=10080,
                ),
                Param(
                    "database",
                    "str",
                    "only sessions of this database ('' = the host's collector_pg_database)",
                    default="",
                    pattern=r"^$|" + _DBNAME,
                ),
                Param(
                    "application",
                    "str",
                    "only sessions whose application_name matches (SQL LIKE; '' = any)",
                    default="",
                    pattern=r"^[A-Za-z0-9_.%-]{0,63}$",
                ),
            ),
        ),
        Action(
            "circuit-breaker",
            "open or close the Zoho circuit breaker through the app's admin API",
            groups=("app",),
            params=(
                Param(
                    "state",
                    "choice",
                    "wanted breaker state",
                    default="open",
                    choices=("open", "closed"),
                    aliases={"close": "closed", "opened": "open"},
                ),
            ),
            caused_alerts=(("state", "open", "SergasZohoCircuitBreakerOpen"),),
        ),
        Action(
            "rate-limit",
            "set the app's ZOHO_RATE_LIMIT through the admin API",
            groups=("app",),
            params=(Param("value", "int", "Zoho calls allowed per minute", minimum=1, maximum=6000),),
        ),
        Action(
            "extend-cache-ttl",
            "extend the app's cache TTL through the admin API",
            groups=("app",),
            # Sent to the app as the runbook's body {"ttl": seconds}.
            params=(
                Param("seconds", "int", "cache TTL in seconds", default=1800, minimum=1, maximum=86400),
            ),
        ),
        # Added for the runbook scenarios disk full, Redis memory and error storm (tests/e2e).
        Action(
            "clean-disk",
            "remove files under the app's data dir (a subdir) matching a pattern, older than N minutes",
            groups=("app",),
            params=(
                Param(
                    "subdir",
                    "str",
                    "folder under the data dir (collector_data_dir, else /var/lib/sergas)",
                    default="exports",
                    pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}){0,3}$",
                ),
                Param(
                    "pattern", "str", "file name glob", default="*", pattern=r"^[A-Za-z0-9_.*?\[\]-]{1,100}$"
                ),
                Param(
                    "minutes",
                    "int",
                    "only files not modified for this many minutes",
                    default=60,
                    minimum=0,
                    maximum=525600,
                ),
            ),
        ),
        Action(
            "redis-maxmemory",
            "set Redis maxmemory-policy (and optionally maxmemory) at runtime with CONFIG SET",
            groups=("redis",),
            params=(
                Param(
                    "policy",
                    "choice",
                    "eviction policy",
                    default="allkeys-lru",
                    choices=(
                        "noeviction",
                        "allkeys-lru",
                        "allkeys-lfu",
                        "allkeys-random",
                        "volatile-lru",
                        "volatile-lfu",
                        "volatile-random",
                        "volatile-ttl",
                    ),
                ),
                Param(
                    "maxmemory",
                    "str",
                    "new maxmemory (e.g. 128mb; '' = unchanged)",
                    default="",
                    pattern=r"^$|^[1-9][0-9]{0,12}(b|kb|mb|gb)?$",
                ),
            ),
        ),
        Action(
            "block-client",
            "null-route one misbehaving client address on the app host (ip route blackhole), or lift it",
            groups=("app",),
            params=(
                # Never the host's own loopback 127.0.0.1: health checks and the admin API use it.
                Param(
                    "address",
                    "str",
                    "client IPv4 address",
                    pattern=r"^(?!127\.0\.0\.1$|0\.)(?:[0-9]{1,3}\.){3}[0-9]{1,3}$",
                ),
                Param(
                    "state",
                    "choice",
                    "blocked or lifted",
                    default="blocked",
                    choices=("blocked", "lifted"),
                    aliases={"block": "blocked", "absent": "lifted", "unblock": "lifted"},
                ),
            ),
        ),
    )
}


def get_action(name: str) -> Action:
    """The action called `name`, or a UsageError naming the known ones."""
    try:
        return ACTIONS[name]
    except KeyError:
        raise UsageError(f"unknown action {name!r}; known actions: {', '.join(ACTIONS)}") from None


def deploy_of(hostvars: Mapping[str, Any]) -> str:
    """How the app runs on a host: its inventory's collector_deploy (unset: systemd); unknown → UsageError."""
    kind = str(hostvars.get(DEPLOY_VAR) or "systemd").strip().lower()
    if kind not in DEPLOY_KINDS:
        known = ", ".join(DEPLOY_KINDS)
        raise UsageError(f"{DEPLOY_VAR} {kind!r} is not a deployment kind this tool knows ({known})")
    return kind


def plan_deploy(action: Action, hostvars: Mapping[str, Mapping[str, Any]], targets: list[str]) -> str:
    """The one deployment kind of a plan's targets (one playbook runs per plan): mixed kinds, or a kind the
    action does not support, → UsageError naming the hosts."""
    kinds: dict[str, list[str]] = {}
    for host in targets:
        kinds.setdefault(deploy_of(hostvars.get(host, {})), []).append(host)
    if len(kinds) > 1:
        said = "; ".join(f"{kind}: {', '.join(hosts)}" for kind, hosts in sorted(kinds.items()))
        raise UsageError(
            f"{action.name}: the targets are deployed differently ({said}); "
            "plan each kind with its own --hosts"
        )
    kind = next(iter(kinds), "systemd")
    action.playbook_name(kind)  # refuses a kind the action has no playbook for
    return kind


_JINJA = ("{{", "{%", "{#")


def _coerce(action: Action, param: Param, raw: Any) -> Any:
    where = f"{action.name}: parameter {param.name}"
    if isinstance(raw, str) and any(mark in raw for mark in _JINJA):
        # Parameters are data: a template here would run on the controller when Ansible renders it.
        raise UsageError(
            f"{where} contains a Jinja template marker ({{{{, {{% or {{#); parameters are data, "
            "never templates"
        )
    if param.kind == "int":
        text = str(raw).strip()
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise UsageError(f"{where} must be a whole number, got {raw!r}")
        value: Any = int(text)
        if param.minimum is not None and value < param.minimum:
            raise UsageError(f"{where} must be >= {param.minimum}, got {value}")
        if param.maximum is not None and value > param.maximum:
            raise UsageError(f"{where} must be <= {param.maximum}, got {value}")
        return value
    value = str(raw).strip()
    if param.kind == "choice":
        value = param.aliases.get(value.lower(), value.lower())
        if value not in param.choices:
            raise UsageError(f"{where} must be one of {', '.join(param.choices)}, got {raw!r}")
        return value
    if param.pattern and not re.fullmatch(param.pattern, value):
        raise UsageError(f"{where} has an invalid value {raw!r} ({param.help})")
    return value


def validate_params(action: Action, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Typed, checked parameters with defaults filled in; UsageError on the first problem."""
    known = {p.name for p in action.params}
    for name in raw:
        if name not in known:
            hint = (
                f"; its parameters are: {', '.join(sorted(known))}" if known else "; it takes no parameters"
            )
            raise UsageError(f"{action.name}: unknown parameter {name!r}{hint}")
    values: dict[str, Any] = {}
    for param in action.params:
        if param.name in raw:
            values[param.name] = _coerce(action, param, raw[param.name])
        elif param.required:
            raise UsageError(
                f"{action.name}: parameter {param.name} is required (--param {param.name}=...: {param.help})"
            )
        else:
            values[param.name] = param.default
    return values


def parse_param_args(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`k=v` strings from the command line into a dict; UsageError on a malformed or repeated one."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--param expects NAME=VALUE, got {pair!r}")
        if key in out:
            raise UsageError(f"--param {key} is given twice")
        out[key] = value
    return out
