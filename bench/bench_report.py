"""Benchmark (not a test): render the report of a synthetic 33-host bundle; target < 2 s.

Builds realistic bundles with collector.bundle.write_bundle (app/db/redis + N web hosts, each with the
probe catalogue's outputs: a 2,000-line journal, top, ps, df, free, deploy log...), adds findings.json and
actions.json, then times `render_reports` (HTML + Markdown + TICKET.md + re-seal: SHA256SUMS and the
deterministic tar.gz). Baselines measured in the same run: the same render of a 3-host bundle, and a
plain `json.dumps` of the 33-host manifest.

    .venv/bin/python bench/bench_report.py [--hosts 33] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from collector import report
from collector.bundle import Bundle, write_bundle
from collector.config import Settings
from collector.core import HostResult, ProbeResult, RunResult
from collector.triage import triage_bundle

TARGET_S = 2.0
START = 1795844400  # 2026-11-28T05:00:00Z


def _iso(offset_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(START + offset_s))


def _probe(host: str, name: str, text: str, status: str = "ok") -> ProbeResult:
    data = text.encode()
    return ProbeResult(
        host,
        name,
        f"run {name}",
        status,
        0 if status == "ok" else 1,  # type: ignore[arg-type]
        _iso(2400),
        0.1,
        output=data,
        bytes=len(data),
    )


def _common(host: str, errors: bool) -> list[ProbeResult]:
    journal = "".join(
        f"{_iso(600 + i)} {host} sergas-app[311]: "
        + (
            f"ERROR: request failed path=/api/orders/{i} status=500\n"
            if errors and i % 3 == 0
            else f"path=/api/items/{i} status=200 ms={i % 40}\n"
        )
        for i in range(2000)
    )
    ps = "  PID  PPID USER %CPU %MEM   RSS COMMAND\n" + "".join(
        f"{1000 + i:5d}     1 root  0.{i % 10}  0.{i % 7} {4000 + i * 13:5d} proc{i}\n" for i in range(40)
    )
    return [
        _probe(host, "service_status", "● unit.service\n   Active: active (running)\n" + "log line\n" * 20),
        _probe(host, "journal_errors", journal if errors else ""),
        _probe(host, "service_journal", journal),
        _probe(
            host,
            "error_summary",
            "    120 ERROR: request failed path=/api/orders/N status=N\n" if errors else "",
        ),
        _probe(host, "uptime", " 05:40:01 up 1 day,  2:03,  0 users,  load average: 0.52, 0.48, 0.40\n"),
        _probe(host, "top", "top - 05:40:01 up 1 day\nTasks: 120 total\n" + ps),
        _probe(
            host,
            "free",
            "               total        used        free      shared  buff/cache   available\n"
            "Mem:     25000000000  6000000000  9000000000     1000000 10000000000 19000000000\n"
            "Swap:             0           0           0\n",
        ),
        _probe(
            host,
            "df",
            "Filesystem     Type 1024-blocks  Used Available Capacity Mounted on\n"
            "/dev/sda1      ext4   41152736 16461094 24691642      40% /\n",
        ),
        _probe(host, "iostat", "Device r/s w/s %util\nsda 1.0 2.0 0.5\n"),
        _probe(host, "ps_mem", ps),
        _probe(host, "oom_events", ""),
        _probe(
            host,
            "deploy_log",
            f"9f1c2ab {_iso(300)} Deployer (HEAD, tag: v1.1.0) Release 1.1.0\n"
            f"41d0e77 {_iso(-40000)} Deployer (tag: v1.0.0) Release 1.0.0\n\nv1.1.0\n",
        ),
    ]


def _range(values: list[float]) -> bytes:
    return json.dumps(
        {
            "kind": "range",
            "series": [{"metric": {}, "values": [[START + 30 * i, v] for i, v in enumerate(values)]}],
        }
    ).encode()


def make_run(n_hosts: int) -> RunResult:
    """app1, db1, redis1 and n_hosts - 3 web hosts; 60-point range series and one alert."""
    hosts = {
        "app1": HostResult("app1", "ok", probes=_common("app1", True), roles=("app",)),
        "db1": HostResult(
            "db1",
            "ok",
            probes=_common("db1", False)
            + [_probe("db1", "pg_connections", "state|connections|max_connections\nidle|98|100\n")],
            roles=("db",),
        ),
        "redis1": HostResult("redis1", "ok", probes=_common("redis1", False), roles=("redis",)),
    }
    for i in range(max(0, n_hosts - 3)):
        name = f"web{i + 1:02d}"
        hosts[name] = HostResult(name, "ok", probes=_common(name, False), roles=("web",))
    alerts = {
        "alerts": [
            {
                "name": "HighErrorRatio",
                "state": "active",
                "severity": "critical",
                "starts_at": _iso(900),
                "summary": "5xx ratio above 10 %",
                "labels": {},
                "annotations": {},
            }
        ]
    }
    wave = [0.01 * (i % 7) + (0.3 if i > 30 else 0.0) for i in range(60)]
    monitoring = [
        ProbeResult(
            "monitoring", "alerts", "GET", "ok", None, _iso(2400), 0.1, output=json.dumps(alerts).encode()
        ),
        ProbeResult(
            "monitoring", "error_ratio_range", "GET", "ok", None, _iso(2400), 0.1, output=_range(wave)
        ),
        ProbeResult(
            "monitoring",
            "p95_latency_range",
            "GET",
            "ok",
            None,
            _iso(2400),
            0.1,
            output=_range([v * 2 for v in wave]),
        ),
    ]
    return RunResult(
        incident=f"bench-{n_hosts}",
        pattern="lab",
        inventory="inventory/lab.yml",
        engine="ssh",
        command_line=["collect", "--hosts", "lab"],
        started=_iso(2400),
        finished=_iso(2403),
        hosts=hosts,
        monitoring=monitoring,
    )


def build(out: Path, n_hosts: int) -> Path:
    """The synthetic bundle, triaged by the real rules (findings in the schema the report reads)."""
    path = write_bundle(make_run(n_hosts), Settings(), out_dir=out)
    triage_bundle(path)
    return path


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` calls (the first warms imports and the template cache)."""
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=33)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        big = build(out, args.hosts)
        small = build(out, 3)
        size = sum(p.stat().st_size for p in big.rglob("*") if p.is_file())
        manifest = json.loads((big / "manifest.json").read_text())
        t_json = timed(lambda: json.dumps(manifest, indent=2), args.repeat)
        t_small = timed(lambda: report.render_reports(small), args.repeat)
        t_big = timed(lambda: report.render_reports(big), args.repeat)
        t_build = timed(lambda: report.build(Bundle.open(big)), args.repeat)
        html_kb = (big / "report.html").stat().st_size / 1024
        print(f"bundle: {args.hosts} hosts, {size / 2**20:.1f} MiB; report.html {html_kb:.0f} KiB")
        print(f"baseline json.dumps(manifest):          {t_json * 1000:8.1f} ms")
        print(f"baseline render_reports, 3 hosts:       {t_small * 1000:8.1f} ms")
        print(
            f"render_reports, {args.hosts} hosts (incl. seal): {t_big * 1000:8.1f} ms"
            f"   = {t_big / t_small:.1f}x the 3-host render, {t_big / t_json:.0f}x json.dumps"
        )
        print(f"  of which gathering the data (build):  {t_build * 1000:8.1f} ms")
        verdict = "PASS" if t_big < TARGET_S else "FAIL"
        print(f"target < {TARGET_S:.0f} s: {verdict}")
        return 0 if verdict == "PASS" else 1
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
