"""End to end and unattended on the lab: `collector-lab break pool-exhausted` under traffic, and nothing
typed: Prometheus fires, the lab's Alertmanager posts to `collector serve`, an incident opens with triage's
severity, a sealed bundle of the three lab hosts, and a kill-idle-connections plan that waits for a signed
approval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_fixtures import ServeProcess, alert_chain, poll, quiet_alertmanager

from collector.incidents.store import IncidentStore
from collector.times import parse_instant

pytestmark = [pytest.mark.lab, pytest.mark.destructive, pytest.mark.slow]
LAB_TOOL = str(Path(sys.executable).with_name("collector-lab"))
ROUTING = ("alertname=~Sergas.*:lab",)  # the app's alerts are about its whole stack: app, db and redis


def am_config(lab: Any) -> str:
    with urllib.request.urlopen(f"{lab.alertmanager_url}/api/v2/status", timeout=5) as resp:
        return str(json.load(resp)["config"]["original"])


def ensure_alertmanager_routes_to_serve(lab: Any) -> Path:
    """The lab's Alertmanager with this checkout's config (receiver `collector`); reloads it if older."""
    from collector_lab import lab_state, monitoring

    token_file = monitoring.serve_token_file(lab.settings)
    if "repeat_interval: 1m" not in am_config(lab):
        table = lab_state(lab.settings).get("hosts") or {}
        monitoring.start(lab.settings, {n: str(s["ip"]) for n, s in table.items() if s["group"] == "app"})
        poll(lambda: "repeat_interval: 1m" in am_config(lab), 30, "Alertmanager to load the collector route")
    return token_file


@pytest.fixture()
def lab_serve(lab: Any, lab_lock: None, tmp_path: Path) -> Iterator[ServeProcess]:
    from collector_lab.monitoring import SERVE_PORT

    token_file = ensure_alertmanager_routes_to_serve(lab)
    # an earlier alert of the same group would only be joined: start from a quiet lab
    quiet_alertmanager(lab.alertmanager_url, lab.prometheus_url)
    serve = ServeProcess(
        tmp_path,
        inventory=str(lab.inventory),
        fallback="lab",
        max_collections=2,
        host_labels=ROUTING,
        port=SERVE_PORT,
        token_file=token_file,
        # the window starts 90 s before the alert: the shared lab's earlier faults stay out
        # the service requests its plans with the lab's requester key; a person approves
        env={"COLLECTOR_SERVE_LOOKBACK_S": "90", "COLLECTOR_SIGNING_KEY": str(lab.signers.key("alice"))},
    )
    serve.start(timeout_s=120)
    yield serve
    serve.stop()


def test_pool_exhausted_opens_incident_unattended(lab: Any, lab_serve: ServeProcess, tmp_path: Path) -> None:
    store = IncidentStore(lab_serve.db)
    load_log = tmp_path / "load.log"
    with load_log.open("wb") as sink:
        load = subprocess.Popen(
            [LAB_TOOL, "load", "--seconds", "300", "--rps", "10"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    t0 = time.time()
    try:
        broke = subprocess.run(
            [LAB_TOOL, "break", "pool-exhausted"], capture_output=True, text=True, timeout=180, check=False
        )
        assert broke.returncode == 0, broke.stderr[-2000:]
        t_broken = time.time()

        def opened() -> Any:
            # a Sergas alert still firing from before the break may be posted again (repeat_interval): only
            # an incident declared once the break began counts (its 5xx start inside the break, which may
            # outlast the rule's `for:`), so its evidence is of this fault
            return [
                i
                for i in store.list()
                if i.labels.get("alertname", "").startswith("Sergas")
                and parse_instant(i.opened_at).timestamp() >= t0 - 1
            ]

        def chain() -> str:
            return (
                f"--- t0 {t0:.0f}, broken {t_broken:.0f} (break took {t_broken - t0:.1f} s)\n"
                f"--- the load (exit {load.poll()}): {load_log.read_text(errors='replace')[-1000:]}\n"
                + alert_chain(lab.alertmanager_url, lab.prometheus_url, lab_serve)
            )

        incident = poll(
            opened, 300, "Alertmanager to post a Sergas alert and serve to open an incident", 0.5, chain
        )[0]
        t_open = time.time()
        poll(
            lambda: [
                w for w in store.work(incident.id) if w.kind == "collect" and w.state in ("done", "failed")
            ],
            300,
            "the incident's collection, triage, report and plan",
            0.5,
        )
        inc = store.get(incident.id)
        assert inc is not None
        events = store.events(inc.id)
        kinds = [e.kind for e in events]
        assert {"alert-fired", "declared", "routed", "collected", "triaged", "planned"} <= set(kinds), kinds
        # triage's severity for the runbook's pool exhaustion (tests/e2e EXPECTED: pg-connections-near-max,
        # P1)
        triaged = next(e for e in events if e.kind == "triaged").detail or {}
        assert "pg-connections-near-max" in triaged["findings"], triaged
        # the incident carries triage's verdict (the alert's `critical` said P1 until then)
        assert inc.severity == triaged["severity"] and inc.severity in ("P0", "P1") and inc.state == "open"
        assert next(e for e in events if e.kind == "declared").detail == {
            "group_key": inc.group_key,
            "severity": "P1",
        }
        # a sealed bundle of the three lab hosts
        assert len(inc.bundles) == 1
        bundle = Path(inc.bundles[0])
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert sorted(manifest["hosts"]) == sorted(lab.names)
        archive = Path(f"{bundle}.tar.gz")
        digest = Path(f"{bundle}.tar.gz.sha256").read_text().split()[0]
        import hashlib

        assert hashlib.sha256(archive.read_bytes()).hexdigest() == digest
        assert sorted(inc.hosts) == sorted(lab.names)
        # the suggested mitigation, planned in check mode, unsigned: it waits for a request and an approval
        assert inc.plan and Path(inc.plan).is_file()
        plan = json.loads(Path(inc.plan).read_text())
        # the runbook's answer for the cause: kill the idle connections. The app is down (/health fails on its
        # database), but a restart would meet the same full database: it is only an alternative (caused_by)
        assert plan["action"] == "kill-idle-connections" and plan["hash"]
        assert plan["requester"] == "alice" and [s["statement"]["role"] for s in plan["statements"]] == [
            "request"
        ]
        assert plan["bundle"] == str(bundle.resolve())
        planned = next(e for e in events if e.kind == "planned").detail or {}
        assert planned["requester"] == "alice" and planned["awaiting"].startswith("a signed approval")
        assert "plan-approved" not in kinds and "applied" not in kinds
        # the timeline starts at Prometheus' startsAt, before we declared
        fired = next(e for e in events if e.kind == "alert-fired")
        declared = next(e for e in events if e.kind == "declared")
        collected = next(e for e in events if e.kind == "collected")
        assert parse_instant(fired.at) <= parse_instant(declared.at) <= parse_instant(collected.at)
        parts = {
            "break (fault injected)": t_broken - t0,
            "startsAt → declared (group_wait + post + ours)": (
                parse_instant(declared.at) - parse_instant(fired.at)
            ).total_seconds(),
            "declared → collected (sealed bundle)": (
                parse_instant(collected.at) - parse_instant(declared.at)
            ).total_seconds(),
            "broken → incident seen open": t_open - t_broken,
        }
        if parse_instant(fired.at).timestamp() >= t_broken:
            parts["broken → alert startsAt (scrape + rule for:)"] = (
                parse_instant(fired.at).timestamp() - t_broken
            )
        else:  # the shared lab's earlier faults kept the alert firing; Alertmanager's repeat brought it here
            print(
                "\n  the alert was already firing before the break (startsAt " + fired.at + "): parts below "
                "include Alertmanager's repeat_interval"
            )
        print("\n" + "\n".join(f"  {k}: {v:.1f} s" for k, v in parts.items()))
    finally:
        os.killpg(load.pid, signal.SIGTERM)
        load.wait(timeout=30)
        healed = subprocess.run(
            [LAB_TOOL, "heal", "pool-exhausted"], capture_output=True, text=True, timeout=300, check=False
        )
        store.close()
        assert healed.returncode == 0, healed.stderr[-2000:]
