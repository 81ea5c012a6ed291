"""sergas-app's HTTP server: business endpoints, /health, /metrics and the operators' /admin endpoints.

Run as `python3 -m sergas.server` from the release directory; settings come from `.env`
(SERGAS_ENV_FILE overrides where it is). Logs go to stdout (the journal under systemd):
`ERROR: ...` lines for failures and one `path=... status=...` access line per request.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import random
import shutil
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import redis

from sergas import config as config_mod
from sergas import queries
from sergas.breaker import STATES, CircuitBreaker
from sergas.config import Config, mask_url
from sergas.metrics import Registry
from sergas.pool import ConnectionPool
from sergas.zoho import BreakerOpen, SyncLoop, UpstreamError, ZohoClient

log = logging.getLogger("sergas")
RELEASE_DIR = Path(__file__).resolve().parent.parent
AUDIT_MAX_BYTES = 2 * 1024 * 1024


class SecretFilter(logging.Filter):
    """Last line of defence: a secret value never reaches the journal."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = message, None
        return True


class HttpError(Exception):
    """An error the handler turns into a JSON answer with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class App:
    """Everything a request needs: settings, the DB pool, Redis, the Zoho client and metrics."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.started = time.time()
        self.metrics = Registry()
        self.pool = ConnectionPool(cfg.database_url, cfg.pool_size, cfg.pool_timeout_s, cfg.statement_timeout_ms,
                                   cfg.pool_max_lifetime_s)
        self.redis = redis.Redis.from_url(cfg.redis_url, socket_timeout=2, socket_connect_timeout=2,
                                          health_check_interval=30)
        self.breaker = CircuitBreaker("zoho")
        self.zoho = ZohoClient(cfg.zoho_api_url, cfg.api_token, self.breaker, self.metrics.zoho_call)
        self.sync = SyncLoop(self.zoho, lambda: self.cfg.zoho_rate_limit, self.store_contacts)
        self.data_dir = Path(cfg.data_dir)

    # --- dependencies -------------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            if cur.description is None:
                return []
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def cached(self, key: str, load: Callable[[], Any]) -> tuple[Any, str]:
        """Read-through cache; a Redis failure is logged and the DB answers instead."""
        try:
            hit = self.redis.get(key)
            if hit is not None:
                return json.loads(hit), "hit"
        except redis.RedisError as exc:
            log.error("redis cache read failed for %s: %s", key, exc)
        value = load()
        try:
            self.redis.set(key, json.dumps(value, default=str), ex=self.cfg.cache_ttl_s)
        except redis.RedisError as exc:
            log.error("redis cache write failed for %s: %s", key, exc)
        return value, "miss"

    def audit(self, line: str) -> None:
        """Append to the compliance trail in the data dir (rotated at 2 MiB, one old file kept)."""
        path = self.data_dir / "audit" / "requests.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > AUDIT_MAX_BYTES:
            os.replace(path, path.with_suffix(".log.1"))
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")

    def snapshot(self, name: str, rows: Any) -> None:
        """Write the latest answer for the nightly export, atomically (a new file each time: needs free space)."""
        folder = self.data_dir / "snapshots"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{threading.get_ident()}.tmp"
        try:
            tmp.write_text(json.dumps(rows, default=str))
            os.replace(tmp, folder / name)
        finally:
            tmp.unlink(missing_ok=True)

    def store_contacts(self, contacts: list[dict[str, Any]]) -> None:
        with self.pool.connection() as conn, conn.cursor() as cur:
            for contact in contacts:
                cur.execute(queries.SYNC_CUSTOMER, (contact.get("tier", "standard"), int(contact["id"])))

    # --- health ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        t0 = time.monotonic()
        try:
            with self.pool.connection(timeout_s=2.0) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            checks["database"] = {"status": "ok", "latency_ms": round((time.monotonic() - t0) * 1000, 1)}
        except Exception as exc:
            checks["database"] = {"status": "fail", "error": _one_line(exc)}
        checks["database"]["pool"] = self.pool.stats()
        t0 = time.monotonic()
        try:
            self.redis.set("health:probe", str(time.time()), ex=30)
            info = self.redis.info("memory")
            used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
            pct = round(100.0 * used / limit, 1) if limit else None
            checks["redis"] = {"status": "ok", "latency_ms": round((time.monotonic() - t0) * 1000, 1),
                               "used_memory_pct": pct}
            evicting = str(info.get("maxmemory_policy", "noeviction")) != "noeviction"
            if pct is not None and pct >= 98.0 and not evicting:
                # At maxmemory with noeviction Redis refuses writes; a lucky probe write proves nothing.
                # With an eviction policy Redis sits near maxmemory by design and keeps accepting writes.
                checks["redis"].update(status="fail", error=f"OOM: used_memory at {pct}% of maxmemory, "
                                                            "cache writes are refused")
        except redis.RedisError as exc:
            checks["redis"] = {"status": "fail", "error": _one_line(exc)}
        try:
            usage = shutil.disk_usage(self.data_dir)
            used_pct = round(100.0 * usage.used / usage.total, 1) if usage.total else 0.0
            checks["disk"] = {"status": "ok" if used_pct < 95.0 else "fail", "path": str(self.data_dir),
                              "used_pct": used_pct, "free_bytes": usage.free}
        except OSError as exc:
            checks["disk"] = {"status": "fail", "path": str(self.data_dir), "error": _one_line(exc)}
        # An open breaker degrades one feature; the app itself stays healthy.
        state = self.breaker.state
        checks["zoho"] = {"status": "ok" if state == "closed" else "degraded", "circuit_breaker": state}
        healthy = all(c["status"] != "fail" for c in checks.values())
        return {"status": "healthy" if healthy else "unhealthy", "version": self.cfg.version,
                "uptime_s": round(time.time() - self.started, 1), "checks": checks}

    def gauges(self) -> list[tuple[str, str, str, tuple[tuple[str, str], ...], float]]:
        pool = self.pool.stats()
        return [
            ("sergas_build_info", "gauge", "The running release.", (("version", self.cfg.version),), 1),
            ("sergas_zoho_circuit_breaker_state", "gauge", "Zoho circuit breaker: 0 closed, 1 open, 2 half-open.",
             (), STATES[self.breaker.state]),
            ("sergas_zoho_rate_limit", "gauge", "Upstream calls per minute the sync may make.", (),
             self.cfg.zoho_rate_limit),
            ("sergas_db_pool_size", "gauge", "Database pool size.", (), pool["size"]),
            ("sergas_db_pool_in_use", "gauge", "Database connections checked out.", (), pool["in_use"]),
            ("sergas_db_pool_waiting", "gauge", "Requests waiting for a database connection.", (), pool["waiting"]),
            ("sergas_db_pool_timeouts_total", "counter", "Checkouts that timed out.", (), pool["timeouts"]),
            ("sergas_db_connect_errors_total", "counter", "Failed database connection attempts.", (),
             pool["connect_errors"]),
            ("sergas_cache_ttl_seconds", "gauge", "TTL of cached answers.", (), self.cfg.cache_ttl_s),
            ("sergas_uptime_seconds", "gauge", "Seconds since start.", (), round(time.time() - self.started, 1)),
        ]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


ROUTES = (
    "/health", "/metrics", "/api/orders", "/api/customers", "/api/zoho/sync",
    "/admin/circuit-breaker/zoho/open", "/admin/circuit-breaker/zoho/close", "/admin/circuit-breaker/status",
    "/admin/config", "/admin/cache/extend-ttl",
)


class Handler(BaseHTTPRequestHandler):
    server_version = "sergas-app"
    protocol_version = "HTTP/1.1"
    app: App

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Access lines are written by `_finish`; the stdlib's own lines are dropped."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        label = path if path in ROUTES else "other"
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        status, body, ctype = 500, b"", "application/json"
        try:
            if path.startswith("/admin/"):
                self._authorize()
            handler = ENDPOINTS.get((method, path))
            if handler is None:
                known = any(p == path for _, p in ENDPOINTS)
                raise HttpError(405 if known else 404, "method not allowed" if known else "not found")
            if method == "POST":
                params.update(self._json_body())
            status, payload = handler(self.app, params)
            if isinstance(payload, str):
                body, ctype = payload.encode(), "text/plain; version=0.0.4; charset=utf-8"
            else:
                body = json.dumps(payload, default=str).encode()
        except HttpError as exc:
            status, body = exc.status, json.dumps({"error": str(exc)}).encode()
            if status >= 500:
                log.error("%s %s failed: %s", method, path, exc)
        except Exception as exc:
            status = 500
            body = json.dumps({"error": "internal server error"}).encode()
            log.error("%s %s failed: %s", method, path, _one_line(exc))
        elapsed = time.monotonic() - started
        self._send(status, body, ctype)
        if label != "/metrics":
            self.app.metrics.observe(label, status, elapsed)
        log.info("path=%s status=%d method=%s duration_ms=%.1f client=%s", path, status, method,
                 elapsed * 1000, self.client_address[0])

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client went away; nothing to tell it

    def _authorize(self) -> None:
        """Admin endpoints: from the host itself (loopback), or with `Authorization: Bearer <API token>`."""
        try:
            if ipaddress.ip_address(self.client_address[0]).is_loopback:
                return
        except ValueError:
            pass
        given = self.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip(), self.app.cfg.api_token):
            return
        raise HttpError(403, "admin endpoints need a loopback client or the API token")

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return {}
        raw = self.rfile.read(min(length, 65536))
        try:
            body = json.loads(raw)
        except ValueError:
            raise HttpError(400, "body must be JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        return body


# --- endpoints: (app, params) -> (status, JSON-able payload or text) --------------------------
Payload = tuple[int, Any]


def health(app: App, params: dict[str, Any]) -> Payload:
    report = app.health()
    return (200 if report["status"] == "healthy" else 503), report


def metrics(app: App, params: dict[str, Any]) -> Payload:
    return 200, app.metrics.render(app.gauges())


def _int_param(params: dict[str, Any], name: str) -> int | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def orders(app: App, params: dict[str, Any]) -> Payload:
    customer = _int_param(params, "customer_id")
    app.audit(f"read orders customer={customer if customer is not None else 'all'}")
    if customer is None:
        rows, cache = app.cached("cache:orders:recent", lambda: app.query(queries.RECENT_ORDERS))
    else:
        rows, cache = app.cached(f"cache:orders:{customer}", lambda: app.query(queries.CUSTOMER_ORDERS, (customer,)))
    app.snapshot(f"orders-{customer if customer is not None else 'recent'}.json", rows)
    return 200, {"orders": rows, "cache": cache}


def customers(app: App, params: dict[str, Any]) -> Payload:
    app.audit("read customers")
    rows, cache = app.cached("cache:customers", lambda: app.query(queries.CUSTOMERS))
    return 200, {"customers": rows, "cache": cache}


def zoho_sync(app: App, params: dict[str, Any]) -> Payload:
    try:
        contacts = app.zoho.contacts(random.randint(1, 50))
    except BreakerOpen as exc:
        raise HttpError(503, str(exc)) from None
    except UpstreamError as exc:
        if exc.status == 429:
            log.error("zoho sync failed: %s (rate limit), ZOHO_RATE_LIMIT=%d/min", exc, app.cfg.zoho_rate_limit)
            raise HttpError(502, "zoho upstream rate limit exceeded") from None
        raise HttpError(502, f"zoho sync failed: {exc}") from None
    app.store_contacts(contacts)
    return 200, {"synced": len(contacts)}


def breaker_open(app: App, params: dict[str, Any]) -> Payload:
    app.breaker.force_open()
    log.warning("zoho circuit breaker opened by an operator")
    return 200, {"zoho": app.breaker.status()}


def breaker_close(app: App, params: dict[str, Any]) -> Payload:
    app.breaker.force_close()
    log.warning("zoho circuit breaker closed by an operator")
    return 200, {"zoho": app.breaker.status()}


def breaker_status(app: App, params: dict[str, Any]) -> Payload:
    return 200, {"zoho": app.breaker.status()}


def config_get(app: App, params: dict[str, Any]) -> Payload:
    return 200, app.cfg.public()


def config_set(app: App, params: dict[str, Any]) -> Payload:
    """Runtime change of ZOHO_RATE_LIMIT (and CACHE_TTL); not written back to .env."""
    changed: dict[str, list[int]] = {}
    for key, attr, low, high in (("ZOHO_RATE_LIMIT", "zoho_rate_limit", 1, 6000), ("CACHE_TTL", "cache_ttl_s", 1, 86400)):
        if key not in params:
            continue
        try:
            value = int(params[key])
        except (TypeError, ValueError):
            raise HttpError(400, f"{key} must be an integer") from None
        if not low <= value <= high:
            raise HttpError(400, f"{key} must be between {low} and {high}")
        changed[key] = [getattr(app.cfg, attr), value]
        setattr(app.cfg, attr, value)
    if not changed:
        raise HttpError(400, "nothing to change: send ZOHO_RATE_LIMIT or CACHE_TTL")
    for key, (old, new) in changed.items():
        log.warning("config %s changed at runtime: %s -> %s", key, old, new)
    return 200, {"changed": changed, "config": app.cfg.public()}


def cache_extend_ttl(app: App, params: dict[str, Any]) -> Payload:
    """The runbook's `POST /admin/cache/extend-ttl {"ttl": 1800}`: every cached answer (and future ones)
    gets a TTL of `ttl` seconds."""
    if "ttl" not in params:
        raise HttpError(400, 'send the new TTL as {"ttl": seconds}')
    raw = params["ttl"]
    if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).strip().isdigit():
        raise HttpError(400, "ttl must be a whole number of seconds")
    ttl = int(raw)
    if not 1 <= ttl <= 86400:
        raise HttpError(400, "ttl must be between 1 and 86400")
    extended = 0
    try:
        for key in app.redis.scan_iter(match="cache:*", count=500):
            extended += int(bool(app.redis.expire(key, ttl)))
    except redis.RedisError as exc:
        raise HttpError(503, f"redis unavailable: {_one_line(exc)}") from None
    old, app.cfg.cache_ttl_s = app.cfg.cache_ttl_s, ttl
    log.warning("cache TTL extended: %s -> %ss, %d keys", old, ttl, extended)
    return 200, {"ttl": ttl, "ttl_s": ttl, "previous_ttl_s": old, "keys_extended": extended}


ENDPOINTS: dict[tuple[str, str], Callable[[App, dict[str, Any]], Payload]] = {
    ("GET", "/health"): health,
    ("GET", "/metrics"): metrics,
    ("GET", "/api/orders"): orders,
    ("GET", "/api/customers"): customers,
    ("GET", "/api/zoho/sync"): zoho_sync,
    ("POST", "/api/zoho/sync"): zoho_sync,
    ("POST", "/admin/circuit-breaker/zoho/open"): breaker_open,
    ("POST", "/admin/circuit-breaker/zoho/close"): breaker_close,
    ("GET", "/admin/circuit-breaker/status"): breaker_status,
    ("GET", "/admin/config"): config_get,
    ("POST", "/admin/config"): config_set,
    ("POST", "/admin/cache/extend-ttl"): cache_extend_ttl,
}


def main() -> None:
    env_file = Path(os.environ.get("SERGAS_ENV_FILE", RELEASE_DIR / ".env"))
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s: %(message)s")
    cfg = config_mod.load(env_file, RELEASE_DIR)
    for handler in logging.getLogger().handlers:
        handler.addFilter(SecretFilter(cfg.secrets))
    log.info("sergas-app %s starting from %s", cfg.version, RELEASE_DIR)
    log.info("connecting to %s pool_size=%d", mask_url(cfg.database_url), cfg.pool_size)
    log.info("connecting to %s", mask_url(cfg.redis_url))
    app = App(cfg)
    Handler.app = app
    server = ThreadingHTTPServer((cfg.listen, cfg.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    app.sync.start()
    app.pool.start_reaper()
    log.info("listening on %s:%d, zoho sync every %.1fs", cfg.listen, cfg.port, 60.0 / max(1, cfg.zoho_rate_limit))
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        app.sync.stop.set()
        app.pool.close()
        log.info("sergas-app stopped")


if __name__ == "__main__":
    main()
