#!/usr/bin/env python3
"""Fill Redis with session keys that never expire until it refuses writes (`fill`), or delete them (`clear`).

The password is read from /etc/redis/lab.conf on the Redis host itself, so it never crosses argv.
"""
from __future__ import annotations

import os
import sys

import redis

CONF = "/etc/redis/lab.conf"
PREFIX = "sess:legacy:"


def client() -> redis.Redis:
    password = None
    for line in open(CONF, encoding="utf-8"):
        if line.startswith("requirepass "):
            password = line.split(None, 1)[1].strip()
    return redis.Redis(host="127.0.0.1", port=6379, password=password, socket_timeout=5)


def fill(r: redis.Redis) -> None:
    """Large values until refused, then smaller ones: at the end even a small write is refused."""
    n = 0
    refused = ""
    for size in (65536, 4096, 256, 16):
        value = b"x" * size
        while n < 200000:
            try:
                r.set(f"{PREFIX}{n:06d}", value + os.urandom(8))
            except redis.ResponseError as exc:
                refused = str(exc)
                break
            n += 1
    info = r.info("memory")
    print(f"stored {n} keys; redis refuses more: {refused or 'no, it never refused (no maxmemory?)'} "
          f"(used_memory={info['used_memory']} maxmemory={info['maxmemory']})")


def clear(r: redis.Redis) -> None:
    deleted = 0
    batch: list[bytes] = []
    for key in r.scan_iter(match=f"{PREFIX}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += r.unlink(*batch)
            batch = []
    if batch:
        deleted += r.unlink(*batch)
    print(f"deleted {deleted} keys")


if __name__ == "__main__":
    action = sys.argv[1] if len(sys.argv) > 1 else "fill"
    {"fill": fill, "clear": clear}[action](client())
