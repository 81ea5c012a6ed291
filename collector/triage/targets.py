"""The runbook's numbers for mitigations, overridable per deployment in the inventory.

rules.yml's mitigation params name them as `{target_...}` fields. Each is the runbook's value unless
the target host's inventory vars set its `collector_..._target` variable: a deployment whose database
takes 200 connections sets `collector_pool_size_target: 80` on its app hosts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from collector.triage.view import BundleView

# field in rules.yml -> (inventory host var, the runbook's value)
RUNBOOK_TARGETS: dict[str, tuple[str, str]] = {
    "target_idle_minutes": ("collector_idle_minutes_target", "5"),  # kill idle connections older than 5 min
    "target_pool_size": ("collector_pool_size_target", "30"),  # the long-term pool size
    "target_pool_size_scaled": ("collector_pool_size_scaled_target", "50"),  # when scaling up
    "target_zoho_rate_limit": ("collector_zoho_rate_limit_target", "50"),  # ZOHO_RATE_LIMIT
    "target_cache_ttl": ("collector_cache_ttl_target", "1800"),  # cache TTL, seconds
    "target_memory_limit": ("collector_memory_limit_target", "4G"),  # the unit's MemoryLimit
}

HostVars = Callable[[], Mapping[str, Mapping[str, Any]]]


def targets_for(hosts: list[str], hostvars: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The target values for a mitigation on `hosts`: the first host's inventory override, else the
    runbook's."""
    values: dict[str, str] = {}
    for name, (var, default) in RUNBOOK_TARGETS.items():
        found = next(
            (hostvars[h][var] for h in hosts if h in hostvars and hostvars[h].get(var) not in (None, "")),
            None,
        )
        values[name] = str(found) if found is not None else default
    return values


def inventory_hostvars(bundle: BundleView) -> Callable[[], Mapping[str, Mapping[str, Any]]]:
    """A lazy reader of the host vars of the inventory the bundle was collected with (empty when it cannot be
    read: the runbook's values then apply). Lazy: the inventory is parsed only when a mitigation needs it."""
    cache: list[Mapping[str, Mapping[str, Any]]] = []

    def read() -> Mapping[str, Mapping[str, Any]]:
        if not cache:
            cache.append(_load(str(bundle.manifest.get("inventory") or "")))
        return cache[0]

    return read


def _load(source: str) -> Mapping[str, Mapping[str, Any]]:
    if not source:
        return {}
    from pathlib import Path

    from collector.core import UsageError
    from collector.inventory import load_inventory

    if not Path(source).exists():
        return {}
    try:
        return load_inventory(source).hosts
    except (UsageError, OSError):
        return {}
