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
    # Hosts collected at once, both engines (ssh: a pool of this many workers; ansible: --forks). 50 was the
    # fastest of 10/25/50 for 33 lab hosts, direct and behind a bastion (README "Fleets and bastions").
    forks: int = 50
    # New SSH handshakes in flight to any one sshd (an address, or a target behind a given jump host): below
    # OpenSSH's MaxStartups start value (10), so sshd never drops one of ours at random.
    handshakes_per_sshd: int = 8
    # A handshake cut short the way a throttling sshd cuts it (banner never read, reset or EOF during key
    # exchange) is tried again this many times, after 0.5, 1, 2 s ... (jittered); timeouts and refusals never.
    connect_retries: int = 3
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
    # The remediation limits live in the root-owned policy (collector/remediate/policy.py); these settings
    # can only tighten them (None = the policy's value). The audit log's path is the policy's alone:
    # `audit_log` here only names a log for `collector audit verify` to read.
    audit_log: str | None = None
    approval_ttl_s: float | None = None
    batch_size: int | None = None
    blast_radius: int | None = None
    restart_min_interval_s: float | None = None
    signing_key: str | None = None  # --key: an SSH private key, or a .pub whose key ssh-agent holds
    state_dir: str = "/var/lib/incident-collector"  # lab base image cache and lab state
    user: str = ""
    # Evidence (bundles, archives, plans, audit log) is private to its owner: 0700/0600. A team group here
    # makes bundles and archives 0750/0640 with that group (never world-readable); plans and the audit log
    # stay owner-only.
    evidence_group: str = ""
    # The controller's HMAC key for .env fingerprints (collector.envfile); "" =
    # ~/.local/state/incident-collector.
    fingerprint_key: str = ""
    # Incidents (collector serve): the store ("" = SQLite under ~/.local/state/incident-collector, a path,
    # or postgresql://), where the webhook listens (loopback by default), the bearer token Alertmanager sends,
    # how many collections run at once, alert label -> inventory pattern rules ("label=value:pattern" or
    # "label:pattern", the label's value naming hosts) and the pattern collected when no alert names a host.
    incidents_db: str = ""
    serve_listen: str = "127.0.0.1:9095"
    serve_token: str = ""
    serve_page_token: str = ""  # opens the incidents page to non-loopback clients (HTTP Basic password)
    serve_max_collections: int = 2
    serve_queue_size: int = 1000
    serve_host_labels: tuple[str, ...] = ()
    serve_fallback_hosts: str = "all"
    serve_tick_s: float = 15.0
    serve_lookback_s: float = (
        600.0  # a collection's window starts this long before the first alert's startsAt
    )
    serve_verify_wait_s: float = (
        60.0  # a resolved notification re-checks step 5 this long before it says failed
    )
    serve_verify_retry_s: float = 60.0  # a failed verify after the alerts resolved runs again this often
    serve_verify_attempts: int = 10  # ... at most this many times per resolve, then a person runs verify
    serve_ticket_system: str = ""  # e.g. redmine (tickets.yml holds its URL and key); "" = no ticket
    serve_ticket_project: str = ""
    # The public status page every status update links to (the runbook's "Status page: [URL]"); "" = the
    # updates say it is not configured.
    status_page_url: str = ""


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
        kind = {"float | None": float, "int | None": int, "str | None": str}.get(str(kind), kind)
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


def check_fleet_settings(settings: Settings) -> None:
    """forks and handshakes_per_sshd at least 1, connect_retries at least 0: else UsageError."""
    if settings.forks < 1:
        raise UsageError(f"forks must be at least 1 (got {settings.forks})")
    if settings.handshakes_per_sshd < 1:
        raise UsageError(f"handshakes_per_sshd must be at least 1 (got {settings.handshakes_per_sshd})")
    if settings.connect_retries < 0:
        raise UsageError(f"connect_retries must be 0 or more (got {settings.connect_retries})")
