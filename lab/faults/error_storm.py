#!/usr/bin/env python3
"""A misbehaving partner client: malformed /api/orders requests to the local app at a fixed rate.

Every one is a 500 with an `ERROR:` line in the app's journal. Bounded: at most argv[1] requests per
second for argv[2] seconds (defaults 25/s, 3600 s); loopback only.
"""
from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request

URL = "http://127.0.0.1:8000/api/orders?customer_id=C-{n:05d}"


def main() -> None:
    rps = float(sys.argv[1]) if len(sys.argv) > 1 else 25.0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3600.0
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        n += 1
        try:
            urllib.request.urlopen(URL.format(n=n % 100000), timeout=2).read()
        except (urllib.error.URLError, OSError):
            pass
        next_at = started + n / rps
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    main()
