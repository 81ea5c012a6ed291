"""Typed settings, resolved in one place: explicit argument → environment → config file → default.

Each setting has a type, a default and an environment variable `COLLECTOR_<NAME>`.
The config file is YAML (`$COLLECTOR_CONFIG`, else `./collector.yml`, else
`~/.config/collector/config.yml`), a flat mapping of the same names in lower case.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from collector.core import UsageError


@dataclass(frozen=True)
class Settings:
    inventory: str = "inventory"
    out_dir: str = "bundles"
    engine: str = "ssh"
    timeout_s: float = 30.0  # per-probe default timeout
    connect_timeout_s: float = 10.0
    since: str = "10m"
    cap_bytes: int = 25 * 1024 * 1024
    redact: bool = True
    redact_patterns: tuple[str, ...] = ()  # extra user regexes; group 1 (or the whole match) is secret
    prometheus_url: str = "http://127.0.0.1:9090"
    alertmanager_url: str = "http://127.0.0.1:9093"
    promql_error_ratio: str = (
        'sum(rate(sergas_http_requests_total{status=~"5.."}[5m])) / sum(rate(sergas_http_requests_total[5m]))'
    )
    promql_p95: str = (
        "histogram_quantile(0.95, sum(rate(sergas_http_request_duration_seconds_bucket[5m])) by (le))"
    )
    plans_dir: str = "plans"
    audit_log: str = "audit/audit.jsonl"
    approval_ttl_s: float = 3600.0
    batch_size: int = 1
    blast_radius: int = 10
    restart_min_interval_s: float = 60.0
    state_dir: str = "/var/lib/incident-collector"  # lab base image cache and lab state
    user: str = ""


def _config_file() -> Path | None:
    explicit = os.environ.get("COLLECTOR_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"COLLECTOR_CONFIG points to {path}, which is not a file")
        return path
    for candidate in (Path("collector.yml"), Path.home() / ".config" / "collector" / "config.yml"):
        if candidate.is_file():
            return candidate
    return None


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in (bool, "bool"):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return lowered in ("1", "true", "yes", "on")
            return bool(value)
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        if kind in ("tuple[str, ...]",):
            if isinstance(value, str):
                return tuple(v for v in value.split("\n") if v)
            return tuple(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError):
        raise UsageError(f"setting {name}: {value!r} is not a valid {kind}") from None


def load_settings(**explicit: Any) -> Settings:
    """Resolve every setting; `explicit` holds the command line's values (None = not given)."""
    path = _config_file()
    from_file: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"config file {path} is unreadable: {exc}".splitlines()[0]) from None
        if not isinstance(loaded, dict):
            raise UsageError(f"config file {path} must be a mapping of setting names")
        from_file = loaded
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(from_file) - known)
    if unknown:
        raise UsageError(f"config file {path}: unknown setting {unknown[0]!r}")
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if explicit.get(f.name) is not None:
            raw = explicit[f.name]
        elif f"COLLECTOR_{f.name.upper()}" in os.environ:
            raw = os.environ[f"COLLECTOR_{f.name.upper()}"]
        elif f.name in from_file:
            raw = from_file[f.name]
        else:
            continue
        values[f.name] = _coerce(f.name, f.type, raw)
    return Settings(**values)
