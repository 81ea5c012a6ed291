"""`lab load`: bounded in count and time, only to the lab or loopback, and it really sends traffic."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from collector_lab import load

from collector.core import UsageError


@pytest.fixture()
def local_app() -> Iterator[tuple[str, list[str]]]:
    """A tiny HTTP server on loopback: /health 200, /api/orders 500 every third call, the rest 200."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            status = 500 if self.path.startswith("/api/orders") and len(seen) % 3 == 0 else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()


def test_plan_has_exactly_seconds_times_rps_requests_from_the_mix() -> None:
    paths = load.plan(2.5, 10, seed=7)
    assert len(paths) == 25
    assert {p.split("?")[0] for p in paths} <= {"/api/orders", "/api/customers", "/api/zoho/sync", "/health"}
    assert load.plan(2.5, 10, seed=7) == paths  # reproducible with a seed


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8000", "http://192.168.1.1:8000", "http://8.8.8.8", "http://example.org"]
)
def test_targets_outside_the_lab_and_loopback_are_refused(url: str) -> None:
    with pytest.raises(UsageError):
        load.check_target(url)


def test_lab_and_loopback_targets_are_allowed() -> None:
    load.check_target("http://127.0.0.1:8000")
    load.check_target("http://10.203.57.11:8000")


def test_bad_rates_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        load.run_load(seconds=0, rps=5, target="http://127.0.0.1:1")
    with pytest.raises(UsageError):
        load.run_load(seconds=5, rps=5000, target="http://127.0.0.1:1")


def test_load_sends_the_planned_requests_within_its_time(local_app: tuple[str, list[str]]) -> None:
    url, seen = local_app
    started = time.monotonic()
    summary = load.run_load(seconds=2, rps=25, target=url, seed=3)
    elapsed = time.monotonic() - started
    assert elapsed < 2 + load.REQUEST_TIMEOUT_S
    assert summary["planned"] == 50
    assert 45 <= summary["sent"] <= 50 and summary["sent"] == len(seen)
    assert sum(summary["by_status"].values()) == summary["sent"]
    assert summary["by_status"].get("500", 0) >= 1 and summary["by_status"]["200"] >= 30
    assert 0 < summary["error_ratio"] < 0.5
    assert summary["p95_ms"] is not None and summary["p95_ms"] < 1000


def test_an_unreachable_app_is_counted_not_raised() -> None:
    summary = load.run_load(seconds=0.5, rps=10, target="http://127.0.0.1:9")  # discard port: refused
    assert summary["sent"] >= 1 and summary["by_status"] == {"error": summary["sent"]}
    assert summary["error_ratio"] == 1.0
