"""A small, real PostgreSQL connection pool: bounded size, checkout timeout, idle reaping, recycling.

Like most production pools it keeps no idle connection forever (min idle 0): a connection idle for
`idle_timeout_s` or older than `max_lifetime_s` is closed, and opened again when next needed.
"""
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
                 max_lifetime_s: float = 30.0, idle_timeout_s: float = 5.0) -> None:
        self.dsn = dsn
        self.size = size
        self.timeout_s = timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self.max_lifetime_s = max_lifetime_s
        self.idle_timeout_s = idle_timeout_s
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[tuple[float, float, psycopg2.extensions.connection]] = []  # (born, idle since, conn)
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
                born, _, conn = self._idle.pop()
            if conn.closed or now - born > self.max_lifetime_s:
                conn.close()
                continue
            return born, conn

    def reap(self) -> int:
        """Close idle connections past their idle timeout or lifetime; returns how many."""
        now = time.monotonic()
        def stale(born: float, since: float, conn: psycopg2.extensions.connection) -> bool:
            return bool(conn.closed) or now - since > self.idle_timeout_s or now - born > self.max_lifetime_s

        with self._lock:
            drop = [entry[2] for entry in self._idle if stale(*entry)]
            self._idle = [entry for entry in self._idle if not stale(*entry)]
        for conn in drop:
            conn.close()
        return len(drop)

    def start_reaper(self, every_s: float = 1.0) -> threading.Thread:
        def loop() -> None:
            while True:
                time.sleep(every_s)
                self.reap()
        thread = threading.Thread(target=loop, name="db-pool-reaper", daemon=True)
        thread.start()
        return thread

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
                        self._idle.append((born, time.monotonic(), conn))
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
        for _, _, conn in idle:
            conn.close()
