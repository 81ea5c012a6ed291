"""The incident's key figures from a bundle (5xx ratio, p95, connections, memory, disk, Redis memory).

Computed once per bundle, by triage, and stored in findings.json (`figures`); the report and
remediate's before/after read the stored ones (`collector.triage.bundle_figures`). Fleet-wide
figures are one number; host figures are {host: number}. A figure that cannot be read is None.
"""
from __future__ import annotations

from collections.abc import Callable

from collector.core import FIGURE_KEYS, HostFigure, KeyFigures
from collector.triage import measures as m
from collector.triage.view import BundleView, Measure, Unknown, host_roles

__all__ = ["FIGURE_KEYS", "key_figures"]


def _try(fn: Callable[[], list[Measure]]) -> list[Measure] | None:
    try:
        return fn()
    except Unknown:
        return None
    except Exception:  # noqa: BLE001 - a figure is a nicety: a parser bug must not cost the report
        return None


def _monitoring(bundle: BundleView, query: list[str]) -> float | None:
    taken = _try(lambda: m.prometheus_value(bundle, "monitoring", query=query))
    return round(float(taken[0].value), 6) if taken else None


def _per_host(bundle: BundleView, roles: tuple[str, ...], pick: Callable[[str], float | None]) -> HostFigure | None:
    hosts = [h for h in bundle.hosts if "all" in roles or set(host_roles(bundle, h)) & set(roles)]
    if not hosts:
        return None
    return {h: pick(h) for h in hosts}


def _pg(bundle: BundleView, host: str, field: str) -> float | None:
    taken = _try(lambda: m.pg_connections_pct(bundle, host))
    return int(taken[0].fields[field]) if taken else None


def _redis(bundle: BundleView, host: str, field: str) -> float | None:
    taken = _try(lambda: m.redis_memory_pct(bundle, host))
    return int(taken[0].fields[field]) if taken else None


def _mem(bundle: BundleView, host: str) -> float | None:
    taken = _try(lambda: m.memory_used_pct(bundle, host))
    return round(float(taken[0].value), 1) if taken else None


def _disk(bundle: BundleView, host: str) -> float | None:
    taken = _try(lambda: m.disk_used_pct(bundle, host))
    return max(float(t.value) for t in taken) if taken else None


def key_figures(bundle: BundleView) -> KeyFigures:
    """Compute the figures (triage does, once per bundle): error_ratio (0–1), p95_s, and per host
    pg_connections, pg_max_connections, mem_used_pct, disk_max_pct, redis_used_memory, redis_maxmemory."""
    return KeyFigures(
        error_ratio=_monitoring(bundle, ["error_ratio", "prometheus_error_ratio", "http_5xx_ratio"]),
        p95_s=_monitoring(bundle, ["p95_latency", "p95", "p95_s", "prometheus_p95"]),
        pg_connections=_per_host(bundle, ("db",), lambda h: _pg(bundle, h, "connections")),
        pg_max_connections=_per_host(bundle, ("db",), lambda h: _pg(bundle, h, "max_connections")),
        mem_used_pct=_per_host(bundle, ("all",), lambda h: _mem(bundle, h)),
        disk_max_pct=_per_host(bundle, ("all",), lambda h: _disk(bundle, h)),
        redis_used_memory=_per_host(bundle, ("redis",), lambda h: _redis(bundle, h, "used_memory")),
        redis_maxmemory=_per_host(bundle, ("redis",), lambda h: _redis(bundle, h, "maxmemory")),
    )
