#!/usr/bin/env python3
"""A misbehaving partner client: malformed /api/orders requests to the local app at a fixed rate.

Every one is a 500 with an `ERROR:` line in the app's journal. Bounded: at most argv[1] requests per
second for argv[2] seconds (defaults 25/s, 3600 s); loopback only. It sends from its own loopback
address 127.0.0.2 (a partner with its own address), so it can be told apart from, and blocked
without, the host's own 127.0.0.1 health checks.
"""
from __future__ import annotations

import http.client
import sys
import time

PATH = "/api/orders?customer_id=C-{n:05d}"
SOURCE = ("127.0.0.2", 0)


def main() -> None:
    rps = float(sys.argv[1]) if len(sys.argv) > 1 else 25.0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3600.0
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        n += 1
        try:
            conn = http.client.HTTPConnection("127.0.0.1", 8000, timeout=2, source_address=SOURCE)
            conn.request("GET", PATH.format(n=n % 100000))
            conn.getresponse().read()
            conn.close()
        except (http.client.HTTPException, OSError):
            pass  # blocked or the app is down: a misbehaving client just keeps trying
        next_at = started + n / rps
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    main()
