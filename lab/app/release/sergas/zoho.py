"""The Zoho CRM client and the background sync that calls it at ZOHO_RATE_LIMIT calls per minute."""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from sergas.breaker import CircuitBreaker

log = logging.getLogger("sergas.zoho")


class UpstreamError(Exception):
    """The upstream answered with an error or not at all; `status` is its HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str, retry_after: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class BreakerOpen(Exception):
    """The circuit breaker refuses the call."""


class ZohoClient:
    """Fetches a page of CRM contacts through the circuit breaker."""

    def __init__(self, base_url: str, token: str, breaker: CircuitBreaker,
                 on_outcome: Callable[[str], None]) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.breaker = breaker
        self.on_outcome = on_outcome

    def contacts(self, page: int) -> list[dict[str, Any]]:
        if not self.breaker.allow():
            self.on_outcome("breaker_open")
            raise BreakerOpen(f"zoho circuit breaker is {self.breaker.state}")
        request = urllib.request.Request(
            f"{self.base_url}/crm/v2/Contacts?page={page}",
            headers={"Authorization": f"Zoho-oauthtoken {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=3) as response:
                body = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            self.on_outcome(str(exc.code))
            opened = self.breaker.failure()
            retry = exc.headers.get("Retry-After", "") if exc.headers else ""
            if opened:
                log.error("zoho circuit breaker opened after %d consecutive failures", self.breaker.failures)
            if exc.code == 429:
                raise UpstreamError(429, "upstream rate limit exceeded (HTTP 429 Too Many Requests)", retry) from None
            raise UpstreamError(exc.code, f"upstream answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.on_outcome("unreachable")
            if self.breaker.failure():
                log.error("zoho circuit breaker opened after %d consecutive failures", self.breaker.failures)
            raise UpstreamError(0, f"upstream unreachable: {getattr(exc, 'reason', exc)}") from None
        self.on_outcome("200")
        self.breaker.success()
        return list(body.get("data", []))


class SyncLoop(threading.Thread):
    """Calls the upstream every 60/rate_limit seconds and stores what it returns."""

    def __init__(self, client: ZohoClient, rate_limit: Callable[[], int],
                 store: Callable[[list[dict[str, Any]]], None]) -> None:
        super().__init__(name="zoho-sync", daemon=True)
        self.client = client
        self.rate_limit = rate_limit
        self.store = store
        self.stop = threading.Event()
        self.page = 0

    def run(self) -> None:
        skipped_logged = False
        while not self.stop.is_set():
            limit = max(1, self.rate_limit())
            self.stop.wait(60.0 / limit)
            self.page = self.page % 50 + 1
            try:
                self.store(self.client.contacts(self.page))
                skipped_logged = False
            except BreakerOpen as exc:
                if not skipped_logged:
                    log.warning("zoho sync paused: %s", exc)
                    skipped_logged = True
            except UpstreamError as exc:
                extra = f", retry-after={exc.retry_after}s" if exc.retry_after else ""
                log.error("zoho sync failed: %s%s, ZOHO_RATE_LIMIT=%d/min", exc, extra, limit)
            except Exception as exc:  # a failed store must not end the loop
                log.error("zoho sync could not store contacts: %s", str(exc).strip())
