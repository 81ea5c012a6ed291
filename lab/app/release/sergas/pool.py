"""A small, real PostgreSQL connection pool: bounded size, checkout timeout, connection recycling."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import psycopg2
import psycopg2.extensions


class PoolTimeout(Exception):
    """Every connection of the pool is checked out and none came back in time."""


class ConnectionPool:
    """At most `size` connections; idle ones are reused, old ones are closed and reopened."""

    def __init__(self, dsn: str, size: int, timeout_s: float, statement_timeout_ms: int,
                 max_lifetime_s: float = 30.0) -> None:
        self.dsn = dsn
        self.size = size
        self.timeout_s = timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self.max_lifetime_s = max_lifetime_s
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[tuple[float, psycopg2.extensions.connection]] = []
        self._lock = threading.Lock()
        self.in_use = 0
        self.waiting = 0
        self.timeouts = 0
        self.connect_errors = 0

    def _connect(self) -> psycopg2.extensions.connection:
        try:
            conn = psycopg2.connect(
                self.dsn, connect_timeout=3, application_name="sergas-app",
                options=f"-c statement_timeout={self.statement_timeout_ms}",
            )
        except psycopg2.Error:
            with self._lock:
                self.connect_errors += 1
            raise
        conn.autocommit = True
        return conn

    def _take_idle(self) -> tuple[float, psycopg2.extensions.connection] | None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                born, conn = self._idle.pop()
            if conn.closed or now - born > self.max_lifetime_s:
                conn.close()
                continue
            return born, conn

    @contextmanager
    def connection(self, timeout_s: float | None = None) -> Iterator[psycopg2.extensions.connection]:
        """Check a connection out for the block; broken connections are dropped, not reused."""
        with self._lock:
            self.waiting += 1
        got = self._slots.acquire(timeout=self.timeout_s if timeout_s is None else timeout_s)
        with self._lock:
            self.waiting -= 1
            if not got:
                self.timeouts += 1
        if not got:
            raise PoolTimeout(f"database pool exhausted: no connection free within "
                              f"{self.timeout_s if timeout_s is None else timeout_s:.1f}s (size={self.size})")
        try:
            taken = self._take_idle()
            born, conn = taken if taken else (time.monotonic(), self._connect())
            with self._lock:
                self.in_use += 1
            ok = False
            try:
                yield conn
                ok = True
            finally:
                with self._lock:
                    self.in_use -= 1
                if ok and not conn.closed:
                    with self._lock:
                        self._idle.append((born, conn))
                elif not conn.closed:
                    conn.close()
        finally:
            self._slots.release()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"size": self.size, "in_use": self.in_use, "idle": len(self._idle),
                    "waiting": self.waiting, "timeouts": self.timeouts, "connect_errors": self.connect_errors}

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()
