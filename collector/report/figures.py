"""The report's key figures (with the runbook's thresholds) and Prometheus range series as sparklines."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from collector.report.timeline import _safe_monitoring, monitoring_names

# Key figures as the report shows them: key, label, unit, the runbook's "bad" threshold.
FIGURES: tuple[tuple[str, str, str, float | None], ...] = (
    ("error_ratio", "5xx ratio", "ratio", 0.10),
    ("p95_s", "p95 latency", "seconds", 0.200),
    ("pg_connections", "PostgreSQL connections", "count", None),
    ("pg_max_connections", "PostgreSQL max_connections", "count", None),
    ("mem_used_pct", "Memory used", "pct", 90.0),
    ("disk_max_pct", "Fullest disk", "pct", 90.0),
    ("redis_used_memory", "Redis used memory", "bytes", None),
    ("redis_maxmemory", "Redis maxmemory", "bytes", None),
    ("cpu_busy_pct", "CPU busy", "pct", 90.0),
    ("load_per_core", "Load per core (1 min)", "count", 1.0),
    ("io_util_max_pct", "Busiest disk (I/O utilisation)", "pct", 90.0),
    ("io_await_max_ms", "Worst disk await (ms)", "count", None),
    ("pg_db_bytes", "Database size", "bytes", None),
    ("pg_db_growth_bytes", "Database growth since the previous bundle", "bytes", None),
)


@dataclass(frozen=True)
class FigureRow:
    """One key figure (possibly of one host), formatted, with whether it crosses the runbook's threshold."""

    key: str
    label: str
    host: str
    value: str
    bad: bool
    raw: Any = None
    detail: str = ""  # every known host's value, worst first, when there is more than one


@dataclass(frozen=True)
class Chart:
    """One Prometheus range series drawn as a sparkline."""

    title: str
    svg: Markup
    text: str  # unicode block sparkline for Markdown and plain text
    first: str
    last: str
    peak: str
    points: int


# ---------------------------------------------------------------- figures and charts


def fmt_figure(unit: str, value: Any) -> str:
    """A key figure as a person reads it: 12.5 %, 340 ms, 1.2 GiB."""
    if value is None:
        return "unknown"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if unit == "ratio":
        return f"{value * 100:.1f} %"
    if unit == "seconds":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "pct":
        return f"{value:.1f} %"
    if unit == "bytes":
        return fmt_bytes(value)
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"


def fmt_bytes(value: float) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _figure_spec(key: str) -> tuple[str, str, float | None]:
    for fkey, label, unit, threshold in FIGURES:
        if fkey == key:
            return label, unit, threshold
    return key.replace("_", " "), "count", None


_PAIRS = {"pg_connections": "pg_max_connections", "redis_used_memory": "redis_maxmemory"}
_DETAIL_HOSTS = 12


def figure_rows(figures: dict[str, Any]) -> list[FigureRow]:
    """One row per key figure in the runbook's order: the worst host's value first, every known host after.

    Connections and Redis memory are shown against their maximum ("98 / 100 (98 %)").
    """
    known = {f[0] for f in FIGURES}
    keys = [k for k, *_ in FIGURES if k in figures] + sorted(k for k in figures if k not in known)
    rows = []
    for key in keys:
        if key in _PAIRS.values() and any(pk in figures for pk, lk in _PAIRS.items() if lk == key):
            continue  # shown with the figure it limits
        label, unit, threshold = _figure_spec(key)
        value = figures[key]
        if not isinstance(value, dict):
            rows.append(
                FigureRow(
                    key, label, "", fmt_figure(unit, value), _over(key, value, threshold, figures, ""), value
                )
            )
            continue
        cells = []
        for host, raw in sorted(value.items(), key=lambda kv: str(kv[0])):
            if raw is None:
                continue
            text, level = _figure_cell(key, unit, raw, figures, str(host))
            cells.append((str(host), text, level, _over(key, raw, threshold, figures, str(host)), raw))
        if not cells:
            rows.append(FigureRow(key, label, "", "unknown", False, None))
            continue
        worst = max(cells, key=lambda c: c[2])
        detail = ""
        if len(cells) > 1:
            shown = sorted(cells, key=lambda c: -c[2])[:_DETAIL_HOSTS]
            detail = ", ".join(f"{h} {t}" for h, t, *_ in shown) + (
                f", … {len(cells) - _DETAIL_HOSTS} more" if len(cells) > _DETAIL_HOSTS else ""
            )
        rows.append(FigureRow(key, label, worst[0], worst[1], any(c[3] for c in cells), worst[4], detail))
    return rows


def _figure_cell(key: str, unit: str, raw: Any, figures: dict[str, Any], host: str) -> tuple[str, float]:
    """A host's figure as text, and the number that ranks hosts (use against the maximum for pairs)."""
    level = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else 0.0
    limit_key = _PAIRS.get(key)
    limit = (figures.get(limit_key) or {}) if limit_key else {}
    limit_value = limit.get(host) if isinstance(limit, dict) else limit
    if limit_key and isinstance(limit_value, (int, float)) and limit_value > 0:
        pct = 100.0 * level / float(limit_value)
        return f"{fmt_figure(unit, raw)} / {fmt_figure(unit, limit_value)} ({pct:.0f} %)", pct
    if limit_key and limit_value == 0 and key == "redis_used_memory":
        return f"{fmt_figure(unit, raw)} (no maxmemory)", 0.0
    return fmt_figure(unit, raw), level


def _over(key: str, raw: Any, threshold: float | None, figures: dict[str, Any], host: str) -> bool:
    """Whether a figure crosses the runbook's threshold (connections and Redis: 90 % of their maximum)."""
    if not isinstance(raw, (int, float)) or isinstance(raw, bool):
        return False
    if threshold is not None:
        return raw > threshold
    if key in _PAIRS:
        limit = figures.get(_PAIRS[key])
        if isinstance(limit, dict):
            limit = limit.get(host)
        if isinstance(limit, (int, float)) and limit > 0:
            return raw >= 0.9 * limit
    return False


def range_series(data: Any) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """The (labels, [(t, v)]) series of a range query: our monitoring doc or Prometheus's raw matrix."""
    if not isinstance(data, dict):
        return []
    if data.get("kind") == "range" and isinstance(
        data.get("series"), list
    ):  # collector.monitoring.shape_range
        items = data["series"]
    else:
        body = data.get("data") if isinstance(data.get("data"), dict) else data
        if not isinstance(body, dict) or body.get("resultType") != "matrix":
            return []
        items = body.get("result") or []
    series = []
    for item in items:
        if not isinstance(item, dict):
            continue
        points = []
        for pair in item.get("values") or []:
            try:
                t, v = float(pair[0]), float(pair[1])
            except (TypeError, ValueError, IndexError):
                continue  # None/NaN: an empty rate window, not a zero
            if math.isfinite(v):
                points.append((t, v))
        if points:
            series.append((dict(item.get("metric") or {}), points))
    return series


def charts(bundle: Any, limit: int = 12) -> list[Chart]:
    """A sparkline per Prometheus range series in the bundle's monitoring answers."""
    out: list[Chart] = []
    for name in monitoring_names(bundle):
        for labels, points in range_series(_safe_monitoring(bundle, name)):
            label_text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
            title = name + (f" {{{label_text}}}" if label_text else "")
            out.append(make_chart(title, points, _unit_for(name)))
            if len(out) >= limit:
                return out
    return out


def _unit_for(name: str) -> str:
    lowered = name.lower()
    if "ratio" in lowered or "5xx" in lowered or "error" in lowered:
        return "ratio"
    if "p95" in lowered or "latency" in lowered or "duration" in lowered:
        return "seconds"
    return "count"


_BLOCKS = "▁▂▃▄▅▆▇█"


def make_chart(
    title: str, points: list[tuple[float, float]], unit: str, width: int = 240, height: int = 48
) -> Chart:
    """An inline SVG sparkline (numbers only, so it is safe markup) and a text one."""
    values = [v for _, v in points]
    t0, t1 = points[0][0], points[-1][0]
    lo, hi = min(values), max(values)
    span_t = (t1 - t0) or 1.0
    span_v = (hi - lo) or 1.0
    pad = 3.0
    coords = [
        (pad + (t - t0) / span_t * (width - 2 * pad), height - pad - (v - lo) / span_v * (height - 2 * pad))
        for t, v in points
    ]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    area = f"{coords[0][0]:.1f},{height - pad:.1f} {line} {coords[-1][0]:.1f},{height - pad:.1f}"
    last_x, last_y = coords[-1]
    label = escape(
        f"{title}: {fmt_figure(unit, values[0])} → {fmt_figure(unit, values[-1])}, "
        f"peak {fmt_figure(unit, hi)}"
    )
    svg = Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{label}" xmlns="http://www.w3.org/2000/svg">'
        f'<polygon points="{area}" class="spark-area"/>'
        f'<polyline points="{line}" class="spark-line" fill="none"/>'
        f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="2.5" class="spark-dot"/></svg>'
    )
    step = max(1, len(values) // 40)
    sampled = values[::step]
    text = "".join(
        _BLOCKS[min(len(_BLOCKS) - 1, int((v - lo) / span_v * (len(_BLOCKS) - 1) + 0.5))] for v in sampled
    )
    return Chart(
        title,
        svg,
        text,
        fmt_figure(unit, values[0]),
        fmt_figure(unit, values[-1]),
        fmt_figure(unit, hi),
        len(points),
    )
