"""The circuit breaker in front of the Zoho upstream: opens on repeated failures or by hand."""
from __future__ import annotations

import threading
import time

STATES = {"closed": 0, "open": 1, "half_open": 2}


class CircuitBreaker:
    """closed → open after `threshold` consecutive failures → half_open after `cooldown_s` → closed on success."""

    def __init__(self, name: str, threshold: int = 5, cooldown_s: float = 30.0) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._state = "closed"
        self.forced = False  # opened by an operator: stays open until closed by hand
        self.failures = 0
        self.opened_at: float | None = None
        self.last_change = time.time()

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == "open" and not self.forced and self.opened_at is not None:
                if time.monotonic() - self.opened_at >= self.cooldown_s:
                    self._set("half_open")
            return self._state

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.last_change = time.time()

    def allow(self) -> bool:
        return self.state != "open"

    def success(self) -> None:
        with self._lock:
            if self.forced:
                return
            self.failures = 0
            self._set("closed")

    def failure(self) -> bool:
        """Count a failure; True when this one opened the breaker."""
        with self._lock:
            self.failures += 1
            if self._state == "half_open" or (self._state == "closed" and self.failures >= self.threshold):
                self._set("open")
                self.opened_at = time.monotonic()
                return True
            return False

    def force_open(self) -> None:
        with self._lock:
            self.forced = True
            self._set("open")
            self.opened_at = time.monotonic()

    def force_close(self) -> None:
        with self._lock:
            self.forced = False
            self.failures = 0
            self._set("closed")

    def status(self) -> dict[str, object]:
        state = self.state
        return {"state": state, "value": STATES[state], "forced": self.forced, "failures": self.failures,
                "threshold": self.threshold, "cooldown_s": self.cooldown_s,
                "last_change": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_change))}
