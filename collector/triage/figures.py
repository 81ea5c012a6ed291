"""The incident's key figures from a bundle (5xx ratio, p95, connections, memory, disk, Redis memory).

Computed once per bundle, by triage, and stored in findings.json (`figures`); the report and
remediate's before/after read the stored ones (`collector.triage.bundle_figures`). Fleet-wide
figures are one number; host figures are {host: number}. A figure that cannot be read is None.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from collector.core import FIGURE_KEYS, HostFigure, KeyFigures
from collector.triage import measures as m
from collector.triage.view import BundleView, Measure, Unknown, host_roles

if TYPE_CHECKING:
    from collector.bundle import Bundle

__all__ = ["FIGURE_KEYS", "key_figures", "previous_bundle"]


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


def _per_host(
    bundle: BundleView, roles: tuple[str, ...], pick: Callable[[str], float | None]
) -> HostFigure | None:
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


def _one(
    bundle: BundleView,
    host: str,
    fn: Callable[[], list[Measure]],
    pick: Callable[[list[Measure]], float],
) -> float | None:
    taken = _try(fn)
    return round(float(pick(taken)), 2) if taken else None


def _db_bytes(bundle: BundleView, host: str) -> float | None:
    try:
        return m.pg_database_bytes(bundle, host)[0]
    except Exception:  # noqa: BLE001 - Unknown or a parser bug: the figure is unknown
        return None


def previous_bundle(bundle: BundleView) -> Bundle | None:
    """The newest earlier bundle of the same hosts beside this one (the same out dir), if any."""
    from collector.bundle import Bundle

    here = getattr(bundle, "path", None)
    started = str(bundle.manifest.get("started") or "")
    if not isinstance(here, Path) or not started:
        return None
    hosts = set(bundle.hosts)
    best: tuple[str, Path] | None = None
    for other in here.parent.iterdir():  # manifests only: opening every bundle of a busy out dir is slow
        manifest = other / "manifest.json"
        if other == here or not other.is_dir() or manifest.is_symlink() or not manifest.is_file():
            continue
        try:
            doc = json.loads(manifest.read_text())
            when, theirs = str(doc.get("started") or ""), set(doc.get("hosts") or {})
        except (OSError, ValueError, AttributeError, TypeError):
            continue  # a broken neighbour is not this bundle's problem
        if when and when < started and theirs == hosts and (best is None or when > best[0]):
            best = (when, other)
    if best is None:
        return None
    try:
        return Bundle.open(best[1])
    except Exception:  # noqa: BLE001 - unreadable: no growth figure, not a failed triage
        return None


def _db_growth(bundle: BundleView, before: BundleView | None, host: str) -> float | None:
    now = _db_bytes(bundle, host)
    then = _db_bytes(before, host) if before is not None else None
    return None if now is None or then is None else now - then


def key_figures(bundle: BundleView) -> KeyFigures:
    """Compute the figures (triage does, once per bundle): error_ratio (0–1), p95_s, and per host
    pg_connections, pg_max_connections, mem_used_pct, disk_max_pct, redis_used_memory, redis_maxmemory,
    cpu_busy_pct, load_per_core, io_util_max_pct, io_await_max_ms, pg_db_bytes and pg_db_growth_bytes (against
    the previous bundle of the same hosts in the same out dir)."""
    before = previous_bundle(bundle) if any("db" in host_roles(bundle, h) for h in bundle.hosts) else None
    return KeyFigures(
        error_ratio=_monitoring(bundle, ["error_ratio", "prometheus_error_ratio", "http_5xx_ratio"]),
        p95_s=_monitoring(bundle, ["p95_latency", "p95", "p95_s", "prometheus_p95"]),
        pg_connections=_per_host(bundle, ("db",), lambda h: _pg(bundle, h, "connections")),
        pg_max_connections=_per_host(bundle, ("db",), lambda h: _pg(bundle, h, "max_connections")),
        mem_used_pct=_per_host(bundle, ("all",), lambda h: _mem(bundle, h)),
        disk_max_pct=_per_host(bundle, ("all",), lambda h: _disk(bundle, h)),
        redis_used_memory=_per_host(bundle, ("redis",), lambda h: _redis(bundle, h, "used_memory")),
        redis_maxmemory=_per_host(bundle, ("redis",), lambda h: _redis(bundle, h, "maxmemory")),
        cpu_busy_pct=_per_host(
            bundle,
            ("all",),
            lambda h: _one(bundle, h, lambda: m.cpu_busy_pct(bundle, h), lambda t: float(t[0].value)),
        ),
        load_per_core=_per_host(
            bundle,
            ("all",),
            lambda h: _one(bundle, h, lambda: m.load_per_core(bundle, h), lambda t: float(t[0].value)),
        ),
        io_util_max_pct=_per_host(
            bundle,
            ("all",),
            lambda h: _one(
                bundle, h, lambda: m.device_util_pct(bundle, h), lambda t: max(float(x.value) for x in t)
            ),
        ),
        io_await_max_ms=_per_host(
            bundle,
            ("all",),
            lambda h: _one(
                bundle,
                h,
                lambda: m.device_util_pct(bundle, h),
                lambda t: max(float(x.fields["await_ms"]) for x in t),
            ),
        ),
        pg_db_bytes=_per_host(bundle, ("db",), lambda h: _db_bytes(bundle, h)),
        pg_db_growth_bytes=_per_host(bundle, ("db",), lambda h: _db_growth(bundle, before, h)),
    )
