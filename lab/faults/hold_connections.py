#!/usr/bin/env python3
"""A leaking batch job: hold PostgreSQL connections as the app's user until none are left, and keep them.

Reads DATABASE_URL from the app's .env (argv[1]); argv[2] bounds its life in seconds; it writes how many it
holds to argv[3] once the server refuses more. Exits when an operator terminates its connections
(pg_terminate_backend), as a real job would crash, or after --seconds.
"""
from __future__ import annotations

import sys
import time

import psycopg2

MAX_HELD = 60


def database_url(env_file: str) -> str:
    for line in open(env_file, encoding="utf-8"):
        if line.startswith("DATABASE_URL="):
            return line.split("=", 1)[1].strip()
    raise SystemExit(f"no DATABASE_URL in {env_file}")


def main() -> None:
    dsn = database_url(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3600.0
    state_file = sys.argv[3] if len(sys.argv) > 3 else "/tmp/hold_connections.held"
    held: list[psycopg2.extensions.connection] = []
    refused_logged = False
    deadline = time.monotonic() + seconds
    last_ping = time.monotonic()
    while time.monotonic() < deadline:
        if len(held) < MAX_HELD:
            try:
                held.append(psycopg2.connect(dsn, application_name="sergas-batch-export", connect_timeout=3))
                refused_logged = False
                continue  # grab the next one at once
            except psycopg2.OperationalError as exc:
                if not refused_logged:
                    reason = str(exc).strip().splitlines()[-1]
                    print(f"holding {len(held)} connections; server refuses more: {reason}", flush=True)
                    with open(state_file, "w", encoding="ascii") as fh:
                        fh.write(f"{len(held)}\n")
                    refused_logged = True
        if time.monotonic() - last_ping > 5:
            last_ping = time.monotonic()
            for conn in held:
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                    conn.rollback()  # back to idle, not idle in transaction
                except psycopg2.Error:
                    print("a connection was terminated by an administrator; batch export aborts", flush=True)
                    sys.exit(1)
        time.sleep(0.2 if len(held) < MAX_HELD else 1.0)  # quick to take a slot that frees up


if __name__ == "__main__":
    main()
