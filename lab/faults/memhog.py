#!/usr/bin/env python3
"""A runaway export: once told (SIGUSR1), allocate and touch memory in 16 MiB steps until killed.

It waits for the signal so the machine can first move it into a small v1 memory cgroup; the kernel's
cgroup OOM killer then kills it (dmesg: "Memory cgroup out of memory: Killed process N (sergas-export)").
argv[1] is a marker the machine finds it by; nothing happens if no signal comes within 60 s.
"""
from __future__ import annotations

import signal
import sys
import time

go = False


def _go(signum: int, frame: object) -> None:
    global go
    go = True


def main() -> None:
    signal.signal(signal.SIGUSR1, _go)
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as fh:
            fh.write("sergas-export")
    except OSError:
        pass
    print(f"export job {sys.argv[1] if len(sys.argv) > 1 else ''} waiting to start", flush=True)
    deadline = time.monotonic() + 60
    while not go and time.monotonic() < deadline:
        time.sleep(0.05)
    if not go:
        print("export job never started", flush=True)
        return
    print("export job started: buffering every order in memory", flush=True)
    chunks = []
    for _ in range(512):  # 8 GiB at most: the cgroup limit ends it long before
        chunk = bytearray(16 * 2**20)
        for i in range(0, len(chunk), 4096):
            chunk[i] = 1
        chunks.append(chunk)
        time.sleep(0.02)
    print("export job finished without being killed (no memory limit?)", flush=True)


if __name__ == "__main__":
    main()
