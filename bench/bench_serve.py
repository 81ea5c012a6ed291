"""`collector serve`: time from Alertmanager's POST to the sealed bundle, and the webhook's answer times in a storm.

Every figure is measured in this run against a real `collector serve` process on a loopback port:

  post→sealed   a v4 notification for a new group, POSTed the way Alertmanager does, until the incident's
                `collected` event (the bundle written, triaged, reported and sealed). On the lab (when up):
                the three lab hosts (fallback pattern `lab`); else this machine (`local`).
  storm         200 alerts in 10 s over 3 groups, one POST per alert on its own thread (Alertmanager sends
                groups concurrently): answer time p50/p99/max, incidents opened, alerts recorded, and the most
                collections that ran at once (the store's start/finish times; the limit is --max-collections).

    .venv/bin/python bench/bench_serve.py                  # lab if up, else local; 3 runs of post→sealed
    .venv/bin/python bench/bench_serve.py --runs 5 --local

The lab's own break → incident path (scrape, rule `for:`, group_wait, ours) is measured and printed by
tests/incidents/test_serve_lab.py, which breaks pool-exhausted under the lab lock.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "incidents"))

from serve_fixtures import ServeProcess, alert, notification, poll

from collector.incidents.store import IncidentStore
from collector.times import parse_instant


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def lab_inventory() -> str | None:
    try:
        from collector_lab import hosts, lifecycle

        from collector.config import load_settings

        settings = load_settings()
        if lifecycle.is_up(settings):
            return str(hosts.inventory_path(settings))
    except Exception:  # noqa: BLE001 - no lab: the local figures still stand
        return None
    return None


def post_to_sealed(serve: ServeProcess, store: IncidentStore, runs: int) -> list[tuple[float, float, int]]:
    """(seconds POST → sealed bundle, seconds of the POST's answer, hosts) per run."""
    out = []
    for i in range(runs):
        doc = notification(f"bench-sealed-{i}-{time.time()}", [alert("BenchSealed", f"bs-{i}-{time.time()}", now_iso(),
                                                                     severity="critical", instance="nowhere:1")])
        started = time.time()
        status, body, answered = serve.post(doc)
        assert status == 200, body
        inc_id = json.loads(body)["incident"]
        event = poll(lambda inc_id=inc_id: next((e for e in store.events(inc_id) if e.kind == "collected"), None), 300,
                     "the collected event", 0.02)
        sealed = parse_instant(event.at).timestamp() - started
        hosts = len((event.detail or {}).get("hosts") or [])
        bundle = Path((event.detail or {})["bundle"])
        assert Path(f"{bundle}.tar.gz.sha256").is_file(), "bundle not sealed"
        out.append((sealed, answered, hosts))
        # let its triage/report/plan finish so the next run measures a collection, not a queue
        poll(lambda inc_id=inc_id: [w for w in store.work(inc_id) if w.state in ("done", "failed")], 300, "the work to end", 0.1)
    return out


def storm(serve: ServeProcess, store: IncidentStore, alerts: int = 200, seconds: float = 10.0) -> dict[str, float]:
    times: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    tag = f"{time.time():.0f}"

    def send(i: int) -> None:
        doc = notification(f"bench-storm-{tag}-{i % 3}",
                           [alert(f"Storm{i % 3}", f"st-{tag}-{i}", now_iso(), instance=f"ghost{i}:9100")])
        status, _, took = serve.post(doc)
        with lock:
            times.append(took)
            statuses.append(status)

    threads = []
    start = time.monotonic()
    for i in range(alerts):
        t = threading.Thread(target=send, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(max(0.0, start + (i + 1) * seconds / alerts - time.monotonic()))
    for t in threads:
        t.join(60)
    incidents = [i for i in store.list(limit=1000) if i.group_key.startswith(f"bench-storm-{tag}-")]
    for inc in incidents:
        poll(lambda inc=inc: [w for w in store.work(inc.id) if w.kind == "collect" and w.state in ("done", "failed")],
             600, "the storm's collections", 0.2)
    spans = [(w.started_at, w.finished_at) for i in incidents for w in store.work(i.id) if w.kind == "collect"]
    edges = sorted([(s, 1) for s, _ in spans if s] + [(f, -1) for _, f in spans if f])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    ordered = sorted(times)
    return {"posts": len(times), "ok": statuses.count(200), "p50_ms": ordered[len(ordered) // 2] * 1000,
            "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, "max_ms": ordered[-1] * 1000,
            "incidents": len(incidents), "alerts": sum(len(store.alerts(i.id)) for i in incidents),
            "peak_collections": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--local", action="store_true", help="collect from this machine even when the lab is up")
    parser.add_argument("--max-collections", type=int, default=2)
    args = parser.parse_args()
    lab = None if args.local else lab_inventory()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        (work / "sealed").mkdir()
        (work / "storm").mkdir()
        inventory, fallback = (lab, "lab") if lab else (str(ROOT / "inventory" / "local.yml"), "local")
        serve = ServeProcess(work / "sealed", inventory=inventory, fallback=fallback,
                             max_collections=args.max_collections).start(timeout_s=120)
        store = IncidentStore(serve.db)
        try:
            runs = post_to_sealed(serve, store, args.runs)
        finally:
            serve.stop()
            store.close()
        sealed = [r[0] for r in runs]
        print(f"post→sealed bundle ({'lab: ' if lab else 'local: '}{runs[0][2]} host(s), n={len(runs)}): "
              f"min {min(sealed):.2f} s, median {statistics.median(sealed):.2f} s, max {max(sealed):.2f} s "
              f"(goal ≤ 5 s); webhook answered in {statistics.median(r[1] for r in runs) * 1000:.0f} ms median")
        serve = ServeProcess(work / "storm", inventory=str(ROOT / "inventory" / "local.yml"), fallback="local",
                             max_collections=args.max_collections).start()
        store = IncidentStore(serve.db)
        try:
            result = storm(serve, store)
        finally:
            serve.stop()
            store.close()
        print(f"storm: {result['posts']} alerts in 10 s over 3 groups → {result['ok']} answered 200, "
              f"p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, max {result['max_ms']:.0f} ms; "
              f"{result['incidents']} incidents, {result['alerts']} alerts recorded, at most "
              f"{result['peak_collections']} collections at once (limit {args.max_collections})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
