#!/usr/bin/env python3
"""A stand-in for the Zoho CRM API on 127.0.0.1:8001 with a per-minute request quota.

The quota (requests per rolling 60 s) is read from QUOTA_FILE on every request, so the
`rate-limited` lab fault can lower it without a restart; over quota the answer is HTTP 429.
"""
from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUOTA_FILE = os.environ.get("ZOHO_MOCK_QUOTA_FILE", "/etc/zoho-mock/quota")
DEFAULT_QUOTA = 600
_calls: collections.deque[float] = collections.deque()
_lock = threading.Lock()


def quota() -> int:
    try:
        with open(QUOTA_FILE, encoding="ascii") as fh:
            return max(0, int(fh.read().strip()))
    except (OSError, ValueError):
        return DEFAULT_QUOTA


def admit() -> tuple[bool, int]:
    """Record a call; (allowed, seconds until the oldest call leaves the window)."""
    now = time.monotonic()
    limit = quota()
    with _lock:
        while _calls and now - _calls[0] > 60.0:
            _calls.popleft()
        if len(_calls) >= limit:
            wait = int(60.0 - (now - _calls[0])) + 1 if _calls else 60
            return False, wait
        _calls.append(now)
        return True, 0


class Handler(BaseHTTPRequestHandler):
    server_version = "zoho-mock"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/crm/v2/Contacts"):
            return self._send(404, {"code": "INVALID_URL_PATTERN"})
        if not self.headers.get("Authorization", "").startswith("Zoho-oauthtoken "):
            return self._send(401, {"code": "INVALID_TOKEN"})
        allowed, wait = admit()
        if not allowed:
            print(f"WARNING: 429 rate limit exceeded, quota={quota()}/min retry-after={wait}s", flush=True)
            return self._send(429, {"code": "TOO_MANY_REQUESTS", "message": "API rate limit exceeded"},
                              {"Retry-After": str(wait)})
        page = 1
        if "page=" in self.path:
            try:
                page = int(self.path.split("page=", 1)[1].split("&", 1)[0])
            except ValueError:
                page = 1
        data = [{"id": 1 + (page * 10 + i) % 500, "tier": ("standard", "gold", "platinum")[(page + i) % 3]}
                for i in range(10)]
        self._send(200, {"data": data, "info": {"page": page, "per_page": 10}})

    def _send(self, status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8001
    # Loopback on app1; the compose variant's stand-in listens on its container network (ZOHO_MOCK_LISTEN).
    listen = os.environ.get("ZOHO_MOCK_LISTEN", "127.0.0.1")
    server = ThreadingHTTPServer((listen, port), Handler)
    server.daemon_threads = True
    print(f"zoho-mock listening on {listen}:{port}, quota file {QUOTA_FILE}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
