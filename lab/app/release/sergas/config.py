"""Settings from the release's .env file; secrets are masked wherever the config is shown."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_env(text: str) -> dict[str, str]:
    """KEY=value lines; blank lines and '#' comments skipped, one level of quotes removed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


@dataclass
class Config:
    database_url: str
    redis_url: str
    api_token: str
    pool_size: int = 10
    pool_timeout_s: float = 5.0
    pool_max_lifetime_s: float = 30.0  # connections are reopened this often (picks up role settings)
    statement_timeout_ms: int = 5000
    zoho_rate_limit: int = 120  # upstream calls per minute the background sync may make
    zoho_api_url: str = "http://127.0.0.1:8001"
    cache_ttl_s: int = 60
    data_dir: str = "/var/lib/sergas"
    listen: str = "0.0.0.0"
    port: int = 8000
    version: str = "unknown"
    secrets: list[str] = field(default_factory=list)

    def public(self) -> dict[str, object]:
        """What /admin/config shows: every setting, secrets masked."""
        return {
            "DATABASE_URL": mask_url(self.database_url),
            "DATABASE_POOL_SIZE": self.pool_size,
            "DATABASE_POOL_TIMEOUT": self.pool_timeout_s,
            "DATABASE_POOL_MAX_LIFETIME": self.pool_max_lifetime_s,
            "DATABASE_STATEMENT_TIMEOUT_MS": self.statement_timeout_ms,
            "REDIS_URL": mask_url(self.redis_url),
            "ZOHO_API_URL": self.zoho_api_url,
            "ZOHO_API_TOKEN": "***" if self.api_token else "",
            "ZOHO_RATE_LIMIT": self.zoho_rate_limit,
            "CACHE_TTL": self.cache_ttl_s,
            "DATA_DIR": self.data_dir,
            "LISTEN": f"{self.listen}:{self.port}",
            "VERSION": self.version,
        }


def _secrets_of(*urls: str) -> list[str]:
    found = []
    for url in urls:
        password = urlsplit(url).password
        if password:
            found.append(password)
    return found


def load(env_file: Path, release_dir: Path) -> Config:
    """Read .env (the process environment wins, as systemd's EnvironmentFile would)."""
    values = parse_env(env_file.read_text()) if env_file.is_file() else {}
    values.update({k: v for k, v in os.environ.items() if k in _KEYS})
    version_file = release_dir / "VERSION"
    version = version_file.read_text().strip() if version_file.is_file() else "unknown"
    missing = [k for k in ("DATABASE_URL", "REDIS_URL", "ZOHO_API_TOKEN") if not values.get(k)]
    if missing:
        raise SystemExit(f"ERROR: {env_file}: missing {', '.join(missing)}")
    cfg = Config(
        database_url=values["DATABASE_URL"],
        redis_url=values["REDIS_URL"],
        api_token=values["ZOHO_API_TOKEN"],
        pool_size=int(values.get("DATABASE_POOL_SIZE", 10)),
        pool_timeout_s=float(values.get("DATABASE_POOL_TIMEOUT", 5)),
        pool_max_lifetime_s=float(values.get("DATABASE_POOL_MAX_LIFETIME", 30)),
        statement_timeout_ms=int(values.get("DATABASE_STATEMENT_TIMEOUT_MS", 5000)),
        zoho_rate_limit=int(values.get("ZOHO_RATE_LIMIT", 120)),
        zoho_api_url=values.get("ZOHO_API_URL", "http://127.0.0.1:8001"),
        cache_ttl_s=int(values.get("CACHE_TTL", 60)),
        data_dir=values.get("DATA_DIR", "/var/lib/sergas"),
        listen=values.get("LISTEN_ADDRESS", "0.0.0.0"),
        port=int(values.get("PORT", 8000)),
        version=version,
    )
    cfg.secrets = _secrets_of(cfg.database_url, cfg.redis_url) + [cfg.api_token]
    return cfg


_KEYS = {
    "DATABASE_URL", "DATABASE_POOL_SIZE", "DATABASE_POOL_TIMEOUT", "DATABASE_POOL_MAX_LIFETIME", "DATABASE_STATEMENT_TIMEOUT_MS",
    "REDIS_URL", "ZOHO_API_TOKEN", "ZOHO_RATE_LIMIT", "ZOHO_API_URL", "CACHE_TTL", "DATA_DIR",
    "LISTEN_ADDRESS", "PORT",
}
