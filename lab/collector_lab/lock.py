"""The lab lock: /tmp/collector-lab.lock, held by anything that breaks, heals or changes a lab host.

One lock for every lab user: `collector-lab up|down|reset|break|heal|demo`, the tests' `lab_lock`
fixture and `flock /tmp/collector-lab.lock ...` from a shell. It is re-entrant for a holder that is
this process or one of its parents (a test holding it that breaks a fault, `demo` running
`collector-lab heal`, `flock ... collector-lab break`), so no lab step ever waits for itself.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "/tmp/collector-lab.lock"
DEFAULT_TIMEOUT_S = 900.0


class LockTimeout(RuntimeError):
    """Another lab user held the lock for longer than we were willing to wait."""


def holders(path: str | None = None) -> list[int]:
    """PIDs holding a flock on the lock file (from /proc/locks); [] when nobody does."""
    try:
        st = os.stat(path or LOCK_FILE)
    except OSError:
        return []
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found = []
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        # "->" marks a waiter, not a holder.
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev and "->" not in line:
            found.append(int(parts[4]))
    return found


def _ancestors() -> set[int]:
    """This process and its parents up to init."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def held_by_us() -> bool:
    """Whether this process or one of its parents holds the lab lock."""
    return bool(set(holders(LOCK_FILE)) & _ancestors())


@contextmanager
def lab_lock(timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold the lab lock; re-entrant for a holder that is this process or one of its parents."""
    if held_by_us():
        yield
        return
    with open(LOCK_FILE, "a") as fh:
        _flock(fh.fileno(), timeout_s)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (the base image cache's own lock: one build at a time per state dir).

    Separate from the lab lock: building a base under another state dir must not wait for lab users.
    """
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _flock(fd: int, timeout_s: float) -> None:
    """A blocking flock (queued like flock(1)'s waiters), bounded by SIGALRM in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        fcntl.flock(fd, fcntl.LOCK_EX)
        return

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(max(1, int(timeout_s)))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except TimeoutError:
        who = ",".join(map(str, holders(LOCK_FILE))) or "?"
        raise LockTimeout(
            f"the lab lock {LOCK_FILE} is held by pid {who} for over {timeout_s:.0f}s"
        ) from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
