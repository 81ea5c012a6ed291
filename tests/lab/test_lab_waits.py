"""The lab's waits poll through collector.times.wait_until (issue 12, point 3): no hand-written
deadline loop is left in the product or the lab package, and the lab's process check is right."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from collector_lab.monitoring import _running

from collector.times import wait_until

REPO = Path(__file__).resolve().parents[2]
_DEADLINE_LOOP = re.compile(r"while\s+[^\n]*time\.monotonic\(\)\s*<")


def test_no_hand_written_deadline_poll_loop_is_left() -> None:
    loops = [
        f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}"
        for root in ("collector", "lab/collector_lab")
        for path in sorted((REPO / root).rglob("*.py"))
        for text in [path.read_text()]
        for m in _DEADLINE_LOOP.finditer(text)
    ]
    assert loops == [], "use collector.times.wait_until"


def test_running_tells_a_live_process_from_a_reaped_one() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # its cmdline is empty for a moment after exec
        assert wait_until(lambda: _running(proc.pid), 5.0, 0.01)
    finally:
        proc.kill()
        proc.wait()
    assert not _running(proc.pid)
