"""The benchmarks that need no lab still run against today's schemas (a bench that rots says nothing).
Only that they finish and print their ratio: their numbers are for bench/RESULTS.md, never asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_the_report_benchmark_runs_on_a_small_bundle() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_report.py"), "--hosts", "4", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "render_reports, 4 hosts" in done.stdout and "x the 3-host render" in done.stdout
