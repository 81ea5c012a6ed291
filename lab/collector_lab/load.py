"""`lab load`: bounded traffic at the lab's app so Prometheus has request rates and latencies.

It only ever talks to the app host of the lab (its bridge address) or to loopback; it sends at most
`seconds * rps` requests, stops after `seconds`, and waits at most one request timeout for the last ones.
"""

from __future__ import annotations

import ipaddress
import math
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from collector.config import Settings, load_settings
from collector.core import UsageError

from collector_lab import SUBNET, lab_state

APP_PORT = 8000
REQUEST_TIMEOUT_S = 5.0
MAX_WORKERS = 32

# What a day of traffic looks like: (weight, path); {c} is a customer id.
# The app keeps one export snapshot per customer asked for on its 16 MiB data filesystem: 500 customers
# fill about 2 MiB of it; 5,000 filled it over 90 % within a test run (a real disk-full finding).
CUSTOMERS = 500
MIX: tuple[tuple[int, str], ...] = (
    (45, "/api/orders?customer_id={c}"),
    (15, "/api/orders"),
    (20, "/api/customers"),
    (5, "/api/zoho/sync"),
    (15, "/health"),
)


@dataclass
class LoadResult:
    """What one run sent and got back."""

    target: str
    planned: int
    seconds: float = 0.0
    sent: int = 0
    skipped: int = 0  # not sent because every worker was busy (the app is slower than the rate)
    by_status: Counter[str] = field(default_factory=Counter)  # "200", "500", ... or "error"
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

        errors = sum(n for s, n in self.by_status.items() if s == "error" or s.startswith("5"))
        return {
            "target": self.target,
            "seconds": round(self.seconds, 1),
            "planned": self.planned,
            "sent": self.sent,
            "skipped": self.skipped,
            "by_status": dict(sorted(self.by_status.items())),
            "error_ratio": round(errors / self.sent, 3) if self.sent else None,
            "achieved_rps": round(self.sent / self.seconds, 1) if self.seconds else None,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
        }


def app_url(settings: Settings) -> str:
    """http://<app1's bridge IP>:8000 from the running lab's state; UsageError when the lab is not up."""
    table = lab_state(settings).get("hosts") or {}
    for spec in table.values():
        if spec.get("group") == "app":
            return f"http://{spec['ip']}:{APP_PORT}"
    raise UsageError("the lab is not up (no app host in its state): run `collector-lab up` first")


def check_target(url: str) -> None:
    """Only the lab's own subnet or loopback may receive load (the network rule)."""
    host = urlsplit(url).hostname or ""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"load target must be an IP address, not {host!r}") from None
    if not (addr.is_loopback or addr in ipaddress.ip_network(SUBNET)):
        raise UsageError(f"load target {addr} is neither loopback nor in the lab subnet {SUBNET}")


def plan(seconds: float, rps: float, seed: int | None = None) -> list[str]:
    """The request paths to send, in order: exactly ceil(seconds * rps) of them, drawn from MIX."""
    rng = random.Random(seed)
    weights = [w for w, _ in MIX]
    paths = [p for _, p in MIX]
    count = math.ceil(seconds * rps)
    return [rng.choices(paths, weights)[0].format(c=rng.randint(1, CUSTOMERS)) for _ in range(count)]


def _one(url: str) -> tuple[str, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
            response.read()
            status = str(response.status)
    except urllib.error.HTTPError as exc:
        status = str(exc.code)
    except (urllib.error.URLError, OSError):
        status = "error"
    return status, time.monotonic() - started


def run_load(
    settings: Settings | None = None,
    *,
    seconds: float = 30.0,
    rps: float = 20.0,
    target: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Send the planned requests at `rps` for `seconds` (never more, never longer); returns a summary."""
    if not 0 < seconds <= 3600 or not 0 < rps <= 1000:
        raise UsageError("--seconds must be in (0, 3600] and --rps in (0, 1000]")
    base = (target or app_url(settings or load_settings())).rstrip("/")
    check_target(base)
    paths = plan(seconds, rps, seed)
    result = LoadResult(target=base, planned=len(paths))
    workers = min(MAX_WORKERS, max(4, math.ceil(rps * 0.5)))
    busy = threading.Semaphore(workers)
    lock = threading.Lock()

    def send(path: str) -> None:
        try:
            status, elapsed = _one(base + path)
            with lock:
                result.by_status[status] += 1
                result.latencies.append(elapsed)
        finally:
            busy.release()

    started = time.monotonic()
    deadline = started + seconds
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lab-load") as pool:
        for i, path in enumerate(paths):
            due = started + i / rps
            now = time.monotonic()
            if due >= deadline or now >= deadline:
                break
            if due > now:
                time.sleep(due - now)
            if not busy.acquire(blocking=False):
                result.skipped += 1
                continue
            result.sent += 1
            pool.submit(send, path)
    result.seconds = time.monotonic() - started
    return result.summary()
