"""`collector serve`: time from Alertmanager's POST to the sealed bundle, and the webhook's answer times in \
a storm.

Every figure is measured in this run against a real `collector serve` process on a loopback port:

  post→sealed   a v4 notification for a new group, POSTed the way Alertmanager does, until the incident's
                `collected` event (the bundle written, triaged, reported and sealed). On the lab (when up):
                the three lab hosts (fallback pattern `lab`); else this machine (`local`).
  storm         200 alerts in 10 s over 3 groups, one POST per alert on its own thread (Alertmanager sends
                groups concurrently): answer time p50/p99/max, incidents opened, alerts recorded, and the most
                collections that ran at once (the store's start/finish times; the limit is --max-collections).

    .venv/bin/python bench/bench_serve.py                  # lab if up, else local; 3 runs of post→sealed
    .venv/bin/python bench/bench_serve.py --runs 5 --local

  break→open   (--break, lab only, takes the lab lock) `collector-lab break pool-exhausted` under 10 req/s
                with the lab's Alertmanager posting to a serve on 127.0.0.1:9095, until the open incident and
                its sealed bundle, in parts: the break itself, detection (scrape 5 s + rule evaluation 5 s +
                the 5xx ratio crossing 10 % over its 5 m rate: Prometheus' activeAt), the rule's `for:`
                (activeAt → startsAt), Alertmanager's group_wait and POST (startsAt → declared), ours
                (declared → sealed). Heals the fault afterwards.

    .venv/bin/python bench/bench_serve.py --break           # the above plus break→open on the lab
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

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
        doc = notification(
            f"bench-sealed-{i}-{time.time()}",
            [
                alert(
                    "BenchSealed",
                    f"bs-{i}-{time.time()}",
                    now_iso(),
                    severity="critical",
                    instance="nowhere:1",
                )
            ],
        )
        started = time.time()
        status, body, answered = serve.post(doc)
        assert status == 200, body
        inc_id = json.loads(body)["incident"]
        event = poll(
            lambda inc_id=inc_id: next((e for e in store.events(inc_id) if e.kind == "collected"), None),
            300,
            "the collected event",
            0.02,
        )
        sealed = parse_instant(event.at).timestamp() - started
        hosts = len((event.detail or {}).get("hosts") or [])
        bundle = Path((event.detail or {})["bundle"])
        assert Path(f"{bundle}.tar.gz.sha256").is_file(), "bundle not sealed"
        out.append((sealed, answered, hosts))
        # let its triage/report/plan finish so the next run measures a collection, not a queue
        poll(
            lambda inc_id=inc_id: [w for w in store.work(inc_id) if w.state in ("done", "failed")],
            300,
            "the work to end",
            0.1,
        )
    return out


def storm(
    serve: ServeProcess, store: IncidentStore, alerts: int = 200, seconds: float = 10.0
) -> dict[str, float]:
    times: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    tag = f"{time.time():.0f}"

    def send(i: int) -> None:
        doc = notification(
            f"bench-storm-{tag}-{i % 3}",
            [alert(f"Storm{i % 3}", f"st-{tag}-{i}", now_iso(), instance=f"ghost{i}:9100")],
        )
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
        poll(
            lambda inc=inc: [
                w for w in store.work(inc.id) if w.kind == "collect" and w.state in ("done", "failed")
            ],
            600,
            "the storm's collections",
            0.2,
        )
    spans = [
        (w.started_at, w.finished_at) for i in incidents for w in store.work(i.id) if w.kind == "collect"
    ]
    edges = sorted([(s, 1) for s, _ in spans if s] + [(f, -1) for _, f in spans if f])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    ordered = sorted(times)
    return {
        "posts": len(times),
        "ok": statuses.count(200),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000,
        "max_ms": ordered[-1] * 1000,
        "incidents": len(incidents),
        "alerts": sum(len(store.alerts(i.id)) for i in incidents),
        "peak_collections": peak,
    }


ROUTING = (
    "alertname=~Sergas.*:lab",
)  # as tests/incidents/test_serve_lab.py: the app's alerts cover its stack


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def break_to_open(work: Path) -> dict[str, float]:
    """One `collector-lab break pool-exhausted` → open incident → sealed bundle, in parts (seconds)."""
    from collector_lab import monitoring
    from collector_lab.lock import lab_lock

    from collector.config import load_settings

    settings = load_settings()
    lab_tool = str(Path(sys.executable).with_name("collector-lab"))
    am, prom = settings.alertmanager_url, settings.prometheus_url

    def sergas_active() -> bool:
        return any(
            a["labels"].get("alertname", "").startswith("Sergas") for a in _get_json(f"{am}/api/v2/alerts")
        )

    with lab_lock():
        # an alert still firing from an earlier fault would be this group's open incident already
        poll(lambda: not sergas_active(), 600, "earlier Sergas alerts to resolve", 2.0)
        serve = ServeProcess(
            work,
            inventory=str(lab_inventory()),
            fallback="lab",
            host_labels=ROUTING,
            port=monitoring.SERVE_PORT,
            token_file=monitoring.serve_token_file(settings),
            env={"COLLECTOR_SERVE_LOOKBACK_S": "90"},
        ).start(timeout_s=120)
        store = IncidentStore(serve.db)
        load = subprocess.Popen(
            [lab_tool, "load", "--seconds", "400", "--rps", "10"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            t0 = time.time()
            broke = subprocess.run(
                [lab_tool, "break", "pool-exhausted"],
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert broke.returncode == 0, broke.stderr[-1000:]
            t_broken = time.time()
            active_at: list[float] = []

            def opened() -> Any:
                for a in _get_json(f"{prom}/api/v1/alerts")["data"]["alerts"]:
                    if (
                        a["labels"].get("alertname", "").startswith("Sergas")
                        and a.get("activeAt")
                        and not active_at
                    ):
                        active_at.append(parse_instant(a["activeAt"]).timestamp())
                return [i for i in store.list() if i.labels.get("alertname", "").startswith("Sergas")]

            inc = poll(opened, 600, "the incident", 0.5)[0]
            t_open = time.time()

            def sealed() -> Any:
                found = store.events(inc.id)
                return found if any(e.kind == "collected" for e in found) else None

            events = poll(sealed, 300, "the sealed bundle", 0.2)
            at = {e.kind: parse_instant(e.at).timestamp() for e in reversed(events)}
            fired = at["alert-fired"]
            active = active_at[0] if active_at else fired
            return {
                "break (fault injected)": t_broken - t0,
                "detection: broken → Prometheus activeAt (scrape, evaluation, 5xx ratio over 10 %)": active
                - t_broken,
                "rule for: (activeAt → startsAt)": fired - active,
                "group_wait + POST (startsAt → declared)": at["declared"] - fired,
                "ours (declared → sealed bundle)": at["collected"] - at["declared"],
                "break → incident open (seen)": t_open - t0,
                "break → sealed bundle": at["collected"] - t0,
            }
        finally:
            os.killpg(load.pid, signal.SIGTERM)
            load.wait(timeout=30)
            serve.stop()
            store.close()
            healed = subprocess.run(
                [lab_tool, "heal", "pool-exhausted"], capture_output=True, text=True, timeout=300, check=False
            )
            if healed.returncode != 0:
                print(f"HEAL FAILED: {healed.stderr[-500:]}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--local", action="store_true", help="collect from this machine even when the lab is up"
    )
    parser.add_argument("--max-collections", type=int, default=2)
    parser.add_argument(
        "--break",
        dest="lab_break",
        action="store_true",
        help="also measure `collector-lab break pool-exhausted` → open incident (lab lock, heals)",
    )
    args = parser.parse_args()
    lab = None if args.local else lab_inventory()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        (work / "sealed").mkdir()
        (work / "storm").mkdir()
        inventory, fallback = (lab, "lab") if lab else (str(ROOT / "inventory" / "local.yml"), "local")
        serve = ServeProcess(
            work / "sealed", inventory=inventory, fallback=fallback, max_collections=args.max_collections
        ).start(timeout_s=120)
        store = IncidentStore(serve.db)
        try:
            runs = post_to_sealed(serve, store, args.runs)
        finally:
            serve.stop()
            store.close()
        sealed = [r[0] for r in runs]
        print(
            f"post→sealed bundle ({'lab: ' if lab else 'local: '}{runs[0][2]} host(s), n={len(runs)}): "
            f"min {min(sealed):.2f} s, median {statistics.median(sealed):.2f} s, max {max(sealed):.2f} s "
            f"(goal ≤ 5 s); webhook answered in {statistics.median(r[1] for r in runs) * 1000:.0f} ms median"
        )
        serve = ServeProcess(
            work / "storm",
            inventory=str(ROOT / "inventory" / "local.yml"),
            fallback="local",
            max_collections=args.max_collections,
        ).start()
        store = IncidentStore(serve.db)
        try:
            result = storm(serve, store)
        finally:
            serve.stop()
            store.close()
        print(
            f"storm: {result['posts']} alerts in 10 s over 3 groups → {result['ok']} answered 200, "
            f"p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, max {result['max_ms']:.0f} ms; "
            f"{result['incidents']} incidents, {result['alerts']} alerts recorded, at most "
            f"{result['peak_collections']} collections at once (limit {args.max_collections})"
        )
        if args.lab_break and lab:
            (work / "break").mkdir()
            parts = break_to_open(work / "break")
            print("break→open (pool-exhausted, lab):")
            print("\n".join(f"  {k}: {v:.1f} s" for k, v in parts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
