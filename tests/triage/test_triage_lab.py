"""Triage against real bundles from the lab: each `lab break` fault yields its finding and severity,
and the healed lab yields no finding above P3. Holds the lab lock while a fault is in."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector import report
from collector.bundle import Bundle
from collector.collect import collect
from collector.core import SEVERITIES
from collector.times import iso_z, wait_until
from collector.triage import read_findings, triage_bundle

pytestmark = [pytest.mark.lab]

QUIET_WAIT_S = 330  # Prometheus' 5-minute rates and their alerts outlive a healed fault by up to this long
DEVELOP_S = 90  # a fault's findings show up within this long (each collect + triage of the lab takes a few s)


def _rank(severity: str) -> int:
    return len(SEVERITIES) - SEVERITIES.index(severity) if severity in SEVERITIES else 0


def _triage_lab(tmp_path: Path, lab: Any, since: str | None = "2m") -> dict[str, Any]:
    """Collect the whole lab (the real collect API, ssh engine; since None: the default window) and triage."""
    outcome = collect(
        "lab", inventory=str(lab.inventory), since=since, out_dir=str(tmp_path / "bundles"), after=False
    )
    assert outcome.bundle is not None
    findings = triage_bundle(outcome.bundle, seal=False)
    report.render_reports(outcome.bundle, ["md"])
    assert (
        read_findings(Bundle.open(outcome.bundle)) == findings
    )  # findings.json reads back as what triage returned
    return findings.to_dict() | {"rules": findings.rules}


def _drive(lab: Any, seconds: float = 8.0, rps: float = 10.0, orders_only: bool = False) -> dict[int, int]:
    """Bounded traffic at the app on its bridge address (the demo's driver: orders of random customers,
    customers)."""
    from collector_lab.demo import drive_traffic

    return drive_traffic(
        f"http://{lab.ips[lab.groups['app'][0]]}:8000", seconds, rps, orders_only=orders_only
    )


def _until_orders_answer(lab: Any, timeout_s: float = 60.0) -> None:
    """Wait (bounded) until a short burst of orders requests all answer 200."""
    wait_until(lambda: set(_drive(lab, 1.0, 8.0, orders_only=True)) == {200}, timeout_s, 1.0)


@contextlib.contextmanager
def _traffic(lab: Any, rps: float = 10.0, orders_only: bool = False) -> Iterator[None]:
    """Requests at the app while the block runs (as in a real incident: blocked queries exist only then)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            _drive(lab, 2.0, rps, orders_only=orders_only)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=30)


def _triage_until_fired(
    tmp_path: Path, lab: Any, rules: Iterable[str], timeout_s: float = DEVELOP_S, since: str = "2m"
) -> dict[str, Any]:
    """Collect and triage the lab until every one of `rules` fires (the fault has developed), or time is up:
    then the last triage, for the assertions to show what was found instead."""
    wanted, tries, last = set(rules), iter(range(1_000)), {}

    def attempt() -> dict[str, Any] | None:
        last.clear()
        last.update(_triage_lab(tmp_path / f"try{next(tries)}", lab, since=since))
        return last if wanted <= {f["rule"] for f in last["findings"]} else None

    return wait_until(attempt, timeout_s, 1.0) or dict(last)


def _alerts(lab: Any) -> list[str]:
    try:
        with urllib.request.urlopen(
            f"{lab.alertmanager_url}/api/v2/alerts?active=true&silenced=false&inhibited=false", timeout=5
        ) as response:
            return [a["labels"].get("alertname", "?") for a in json.loads(response.read())]
    except (OSError, ValueError):
        return []


def _prometheus(lab: Any, expr: str) -> float | None:
    query = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"{lab.prometheus_url}/api/v1/query?{query}", timeout=5) as response:
            result = json.loads(response.read())["data"]["result"]
        value = float(result[0]["value"][1]) if result else None
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return None if value is None or math.isnan(value) else value


def _quiet(lab: Any) -> bool:
    """No active alert, 5xx ratio and p95 under the runbook's thresholds (or no traffic at all), and no Zoho
    call refused or short-circuited in the last 2 minutes (triage's live sign of rate limiting)."""
    from collector.monitoring import RUNBOOK_INSTANT_QUERIES

    ratio = _prometheus(lab, lab.settings.promql_error_ratio)
    p95 = _prometheus(lab, lab.settings.promql_p95)
    throttled = _prometheus(lab, RUNBOOK_INSTANT_QUERIES["zoho_throttled_2m"])
    return (
        not _alerts(lab)
        and (ratio is None or ratio <= 0.10)
        and (p95 is None or p95 <= 0.2)
        and (throttled is None or throttled < 3)
    )


def _heal_leftovers() -> None:
    """Heal faults some earlier run left in; one that will not heal is left (its findings only add to
    ours)."""
    from collector_lab import faults

    for name, active in faults.active_faults().items():
        if active:
            try:
                faults.heal_fault(name)
            except faults.FaultError:
                pass


def _summary(doc: dict[str, Any]) -> str:
    return "; ".join(f"{f['severity']} {f['id']} {f['hosts']}" for f in doc["findings"]) or "no finding"


def test_healed_lab_has_no_finding_above_p3(lab: Any, lab_lock: None, tmp_path: Path) -> None:
    _heal_leftovers()
    wait_until(lambda: _quiet(lab), QUIET_WAIT_S, 5.0)  # earlier faults' 5-minute rates and alerts fade
    # The window starts now, as an ISO time: it cannot reach back into a fault healed a moment ago. A few
    # seconds of healthy traffic give the log rules something to read.
    since = iso_z(_dt.datetime.now(_dt.UTC))
    assert set(_drive(lab, 6.0, 10.0)) == {200}
    doc = _triage_lab(tmp_path, lab, since=since)
    above = [f for f in doc["findings"] if _rank(f["severity"]) > _rank("P3")]
    assert above == [], _summary(doc)
    assert doc["severity"] in ("none", "P3")
    assert doc["questions"]["down_or_degraded"]["answer"] in ("healthy", "minor issues")
    assert doc["security"]["suspected"] is False
    for rule in (
        "app-down",
        "database-down",
        "redis-down",
        "pg-connections-near-max",
        "disk-full",
        "host-unreachable",
    ):
        assert doc["rules"][rule] == "passed", (rule, doc["unknown"])
    figures = doc["figures"]
    assert figures["pg_max_connections"] and all(v and v > 0 for v in figures["pg_max_connections"].values())
    assert figures["redis_maxmemory"] and all(v and v > 0 for v in figures["redis_maxmemory"].values())


# fault → (rules that must fire with their severity, the least overall severity, traffic during collection).
# A fault that takes time to develop (pool-exhausted: idle pool connections are reaped after 5 s, so traffic
# must open new ones and is refused; rate-limited and error-storm: their log lines pile up) is collected
# again until its rules fire, up to DEVELOP_S.
CASES: dict[str, tuple[dict[str, str], str, bool]] = {
    "app-down": ({"app-down": "P0", "service-inactive": "P1"}, "P0", False),
    "pool-exhausted": ({"pg-connections-near-max": "P1", "too-many-connections-logged": "P1"}, "P1", True),
    "lock-contention": ({"lock-contention": "P2"}, "P2", True),
    # the 429 lines are history: the open breaker (live) is what makes them P2 now
    "rate-limited": (
        {"rate-limited": "P2", "circuit-breaker-open": "P2", "zoho-breaker-open": "P2"},
        "P2",
        False,
    ),
    # the logged 5xx are history: Prometheus's live 5xx ratio is what makes them P1 now
    "error-storm": ({"error-storm": "P2", "access-log-5xx-ratio": "P1", "high-5xx-ratio": "P1"}, "P1", False),
    # the export job was killed and is gone: an OOM kill in the window with nothing live is recovered, P3
    "oom": ({"oom-kill": "P3"}, "P3", False),
    # /var/lib/sergas is a 16 MiB tmpfs: df sees it full, the app logs ENOSPC, /health fails
    "disk-full": ({"disk-exhausted": "P1", "no-space-logged": "P1", "app-down": "P0"}, "P0", True),
    "redis-memory": ({"redis-near-maxmemory": "P2"}, "P2", True),
    "host-down": ({"host-unreachable": "P1"}, "P1", False),
}


@pytest.mark.destructive
@pytest.mark.parametrize("fault", list(CASES))
def test_fault_yields_its_finding(fault: str, lab: Any, lab_lock: None, tmp_path: Path) -> None:
    from collector_lab import faults

    expected, least, traffic = CASES[fault]
    _heal_leftovers()
    _until_orders_answer(
        lab
    )  # a previous fault's aftermath (e.g. connections still held) must not mask this one
    faults.break_fault(fault)
    try:
        if traffic:
            _drive(lab, 5.0, 10.0)  # the fault's errors reach the logs first
        with _traffic(lab) if traffic else contextlib.nullcontext():
            doc = _triage_until_fired(tmp_path, lab, expected)
    finally:
        faults.heal_fault(fault)
    fired = {f["rule"]: f for f in doc["findings"]}
    for rule, severity in expected.items():
        assert rule in fired, f"{fault}: {rule} did not fire; got {_summary(doc)}; unknown {doc['unknown']}"
        assert fired[rule]["severity"] == severity, _summary(doc)
        assert fired[rule]["evidence"], f"{rule} has no evidence"
        for ev in fired[rule]["evidence"]:
            assert ev["path"] and ev["excerpt"], ev
    assert _rank(doc["severity"]) >= _rank(least), _summary(doc)


@pytest.mark.destructive
def test_slow_queries_fault_and_a_query_over_5s(lab: Any, lab_lock: None, tmp_path: Path) -> None:
    """The slow-queries fault (each order lookup scans and JIT-compiles, ~100 ms) plus a report query that
    runs 15 s on db1: the runbook's > 5 s rule names that query; latency rules judge the rest."""
    from collector_lab import faults

    db = lab.groups["db"][0]
    _heal_leftovers()
    faults.break_fault("slow-queries")
    report = subprocess.Popen(  # a real long query on the real database, ends by itself
        [
            "ssh",
            "-F",
            str(lab.ssh_config),
            db,
            "runuser -u postgres -- psql -X -q -d sergas -c 'SELECT pg_sleep(15)'",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    psql = "runuser -u postgres -- psql -X -At -d sergas -c"
    over_5s = (
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(15)%' "
        "AND now() - query_start > interval '5 seconds'"
    )

    def ran_5s() -> bool:
        return str(lab.host(db).run(f'{psql} "{over_5s}"').stdout).strip() == "1"

    try:
        with _traffic(lab, 15.0, orders_only=True):
            # The runbook's rule is about queries running over 5 s: collect once the report query has.
            assert wait_until(ran_5s, 15, 0.25), "the report query never ran for 5 s"
            doc = _triage_lab(tmp_path, lab)
    finally:
        faults.heal_fault("slow-queries")
        try:
            report.wait(timeout=20)
        except subprocess.TimeoutExpired:
            report.kill()
    fired = {f["rule"]: f for f in doc["findings"]}
    assert "slow-queries" in fired, _summary(doc)
    slow = fired["slow-queries"]
    assert slow["severity"] == "P2" and slow["hosts"] == [db]
    assert any("pg_sleep(15)" in ev["excerpt"] for ev in slow["evidence"]), slow["evidence"]
    assert slow["mitigation"]["action"] == "extend-cache-ttl"


@pytest.mark.destructive
def test_bad_deploy_names_the_release_and_the_rollback_first(
    lab: Any, lab_lock: None, tmp_path: Path
) -> None:
    from collector_lab import faults

    _heal_leftovers()
    _until_orders_answer(lab)
    faults.break_fault("bad-deploy")
    try:
        _drive(lab, 5.0, 10.0)  # the release's 500s reach the journal
        with _traffic(lab):
            doc = _triage_until_fired(tmp_path, lab, ["deploy-before-errors"])
    finally:
        faults.heal_fault("bad-deploy")
    first = doc["findings"][0]
    assert first["rule"] == "deploy-before-errors", _summary(doc)
    assert (
        first["title"].startswith("Release v1.1.0 deployed at ")
        and "min before the errors began" in first["title"]
    )
    assert first["severity"] == "P1" and first["basis"] == "live"
    assert "the app reports 1.1.0" in first["message"] and "previous release v1.0.0" in first["message"]
    assert first["mitigation"]["action"] == "rollback" and first["mitigation"]["params"] == {"tag": "v1.0.0"}
    assert first["mitigation"]["command"].endswith("rollback --hosts app1 --param tag=v1.0.0")


@pytest.mark.destructive
def test_faults_healed_one_after_another_leave_at_most_a_recovered_p3(
    lab: Any, lab_lock: None, tmp_path: Path
) -> None:
    """oom, pool-exhausted and rate-limited broken and healed in a row: once the live state is quiet, the
    default window still holds their log lines; they are history (recovered, P3) and the report says so."""
    from collector_lab import faults

    _heal_leftovers()
    _until_orders_answer(lab)
    app = lab.host(lab.groups["app"][0])

    def rate_limited_thrice() -> bool:  # the rule wants 3 lines; break returns at the first
        out = app.run("journalctl -u sergas-app --since '-2min' --no-pager -q | grep -c 'rate limit'")
        return int(str(out.stdout).strip() or 0) >= 3

    for fault in ("oom", "pool-exhausted", "rate-limited"):
        faults.break_fault(fault)  # returns once the fault's evidence is there (its check holds)
        try:
            if fault == "rate-limited":
                assert wait_until(rate_limited_thrice, 60, 1.0), "no 3 rate-limit lines in the app's journal"
        finally:
            faults.heal_fault(fault)
    assert not any(faults.active_faults().values())
    # live state back to normal: no alert, Prometheus's current rates under the runbook's thresholds
    assert wait_until(lambda: _quiet(lab), QUIET_WAIT_S, 5.0), "the lab did not quieten after healing"
    assert set(_drive(lab, 4.0, 10.0)) == {200}
    doc = _triage_lab(tmp_path, lab, since=None)  # the default window (10 minutes) holds all three faults
    assert doc["severity"] in ("none", "P3"), _summary(doc)
    assert all(f["severity"] == "P3" for f in doc["findings"]), _summary(doc)
    earlier = {f["rule"]: f for f in doc["findings"] if f["recovered"]}
    assert {"oom-kill", "too-many-connections-logged", "rate-limited"} <= set(earlier), _summary(doc)
    for finding in earlier.values():
        assert finding["basis"] == "history" and finding["message"].startswith("recovered: ")
    # The three faults' lines carry times; a count with none (5xx by endpoint over the hour) has no "last at".
    for rule in ("oom-kill", "too-many-connections-logged", "rate-limited"):
        assert earlier[rule]["last_seen"] and " the last at " in earlier[rule]["message"], _summary(doc)
    bundle = next(p for p in (tmp_path / "bundles").iterdir() if p.is_dir())
    text = (bundle / "report.md").read_text()
    assert "history, recovered: earlier in the window (last at " in text
    assert "oom-kill" in text and "rate-limited" in text


def _until_prometheus(lab: Any, expr: str, above: float, timeout_s: float = 180.0) -> float:
    """Poll Prometheus until its own answer to `expr` is above `above` (its rate window has filled)."""
    seen: list[float | None] = []

    def over() -> float | None:
        value = _prometheus(lab, expr)
        seen.append(value)
        return value if value is not None and value > above else None

    value = wait_until(over, timeout_s, 2.0)
    assert value is not None, f"Prometheus never measured {expr} above {above}: last {seen[-3:]}"
    return float(value)


@pytest.mark.destructive
def test_prometheus_measures_a_5xx_ratio_over_10_percent_and_triage_fires_on_it(
    lab: Any, lab_lock: None, tmp_path: Path
) -> None:
    from collector_lab import faults

    _heal_leftovers()
    faults.break_fault("error-storm")  # 25 malformed requests a second, each a real 500
    try:
        with _traffic(lab):
            measured = _until_prometheus(lab, lab.settings.promql_error_ratio, 0.10)
            doc = _triage_until_fired(tmp_path, lab, ["high-5xx-ratio"])
    finally:
        faults.heal_fault("error-storm")
    fired = {f["rule"]: f for f in doc["findings"]}
    assert "high-5xx-ratio" in fired, _summary(doc)
    high = fired["high-5xx-ratio"]
    assert high["severity"] == "P1" and high["basis"] == "live" and high["hosts"] == ["monitoring"]
    assert high["evidence"][0]["probe"] == "error_ratio" and high["evidence"][0]["path"].startswith(
        "monitoring/"
    )
    assert doc["figures"]["error_ratio"] is not None and doc["figures"]["error_ratio"] > 0.10, (
        measured,
        doc["figures"],
    )


@pytest.mark.destructive
def test_prometheus_measures_a_p95_over_200ms_and_triage_fires_on_it(
    lab: Any, lab_lock: None, tmp_path: Path
) -> None:
    """A migration's lock makes every customers request wait for the statement timeout: Prometheus's own p95
    over real traffic crosses 200 ms (and 2 s: the severe twin then speaks for the 200 ms check). The lab's
    slow-queries fault does not do it here: its order lookups stay at 25-35 ms p95 even at 40 requests/s."""
    from collector_lab import faults

    _heal_leftovers()
    faults.break_fault("lock-contention")
    try:
        with _traffic(lab):
            measured = _until_prometheus(lab, lab.settings.promql_p95, 0.2)
            doc = _triage_until_fired(tmp_path, lab, ["severe-latency"], timeout_s=60)
    finally:
        faults.heal_fault("lock-contention")
    fired = {f["rule"]: f for f in doc["findings"]}
    assert doc["rules"]["high-p95-latency"] in ("fired", "suppressed"), (measured, _summary(doc))
    p95 = fired.get("high-p95-latency") or fired["severe-latency"]
    assert p95["basis"] == "live" and p95["evidence"][0]["probe"] == "p95_latency"
    assert p95["evidence"][0]["path"].startswith("monitoring/")
    assert doc["figures"]["p95_s"] is not None and doc["figures"]["p95_s"] > 0.2, (measured, doc["figures"])
