"""The lab's faults: the catalogue as data, the lock, and — on the running lab — each fault visible
after `break` (seen the way an on-call engineer sees it: over ssh, in the journal, in PostgreSQL and
Redis) and gone after `heal`."""

from __future__ import annotations

import fcntl
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from collector_lab import faults
from collector_lab import lock as lab_lock_module

from collector.core import UsageError

EXPECTED = [
    "app-down",
    "bad-deploy",
    "pool-exhausted",
    "lock-contention",
    "slow-queries",
    "rate-limited",
    "error-storm",
    "oom",
    "disk-full",
    "redis-memory",
    "host-down",
]
# The Docker Compose host's faults: their host is compose1 (this machine's engine), tested with it in
# tests/lab/test_compose_lab.py.
COMPOSE = ["compose-app-down", "compose-bad-deploy", "compose-oom"]


# ---------------------------------------------------------------------------- the catalogue


def test_the_catalogue_holds_every_runbook_fault() -> None:
    assert faults.known() == EXPECTED + COMPOSE


@pytest.mark.parametrize("name", EXPECTED)
def test_each_fault_is_complete_data(name: str) -> None:
    fault = faults.get(name)
    assert fault.description and fault.evidence
    assert fault.break_steps and fault.heal_steps and fault.check
    assert fault.host in ("app1", "db1", "redis1") and fault.group in ("app", "db", "redis")
    for step in (*fault.break_steps, *fault.heal_steps):
        if step.host == "machine":
            assert step.script in faults.MACHINE_ACTIONS
        else:
            assert step.host in ("app1", "db1", "redis1") and step.script.strip()
    if fault.check.startswith("machine:"):
        assert fault.check.split(":", 1)[1] in faults.MACHINE_CHECKS


def test_fault_processes_are_bounded_units() -> None:
    for fault in faults.FAULTS.values():
        for step in fault.break_steps:
            if "systemd-run" in step.script:
                assert f"RuntimeMaxSec={faults.UNIT_MAX_S}" in step.script
                assert f"--unit=lab-fault-{fault.name}" in step.script


def test_an_unknown_fault_is_a_usage_error_listing_the_known_ones() -> None:
    with pytest.raises(UsageError) as info:
        faults.break_fault("nosuch")
    message = str(info.value)
    assert "nosuch" in message and all(name in message for name in EXPECTED)
    with pytest.raises(UsageError):
        faults.heal_fault("nosuch")


def test_the_lock_is_reentrant_for_its_holder_and_exclusive_for_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "lab.lock"
    monkeypatch.setattr(lab_lock_module, "LOCK_FILE", str(lock))
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as `flock(1)` in a parent shell does
        started = time.monotonic()
        with lab_lock_module.lab_lock(timeout_s=5):
            pass
        assert time.monotonic() - started < 1  # no deadlock on our own lock
        fcntl.flock(held, fcntl.LOCK_UN)
    with lab_lock_module.lab_lock(timeout_s=5), open(lock, "a") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


# ---------------------------------------------------------------------------- on the lab


def sh(host: Any, command: str) -> str:
    """Run over ssh (testinfra) from /; its stdout, whatever the exit status."""
    return str(host.run(f"cd / && {command}").stdout).strip()


def eventually(what: str, probe: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 1.0) -> Any:
    """Poll `probe` until it returns something truthy; fail with `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every_s)
    pytest.fail(f"{what}: not seen within {timeout_s:.0f}s (last: {str(last)[:300]})")


def health(app: Any) -> dict[str, Any]:
    out = sh(app, "curl -s -m 10 http://127.0.0.1:8000/health")
    try:
        return json.loads(out)
    except ValueError:
        return {"status": "no answer", "raw": out[:200]}


def status_code(app: Any, path: str) -> str:
    return sh(app, f"curl -s -m 10 -o /dev/null -w '%{{http_code}}' 'http://127.0.0.1:8000{path}'")


def journal(host: Any, unit: str, since: str = "-60s") -> str:
    return sh(host, f"journalctl -u {unit} --since '{since}' --no-pager -q -o cat")


def psql(db: Any, sql: str) -> str:
    return sh(db, f'runuser -u postgres -- psql -X -tAq -d sergas -c "{sql}"')


REDIS_CLI = "REDISCLI_AUTH=\"$(sed -n 's/^requirepass //p' /etc/redis/lab.conf)\" redis-cli -h 127.0.0.1"


def redis_memory(redis: Any) -> tuple[int, int]:
    info = sh(redis, f"{REDIS_CLI} info memory")
    used = int(re.search(r"^used_memory:(\d+)", info, re.MULTILINE).group(1))  # type: ignore[union-attr]
    limit = int(re.search(r"^maxmemory:(\d+)", info, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return used, limit


def burst(app: Any, n: int = 24) -> list[str]:
    """n concurrent cache-missing order lookups on the app host; their status codes."""
    base = int(time.time()) % 400
    cmd = (
        f"for i in $(seq {base + 1} {base + n}); do curl -s -m 15 -o /dev/null -w '%{{http_code}}\\n' "
        '"http://127.0.0.1:8000/api/orders?customer_id=$i" & done; wait'
    )
    return sh(app, cmd).split()


# Each fault: what the engineer sees while it is active, and after heal.


def seen_app_down(lab: Any) -> None:
    app = lab.host("app1")
    assert not app.service("sergas-app").is_running
    assert status_code(app, "/health") == "000"
    assert "sergas-app.service" in sh(app, "systemctl --no-pager status sergas-app")


def seen_bad_deploy(lab: Any) -> None:
    app = lab.host("app1")
    assert sh(app, "git -C /opt/sergas/app describe --tags") == "v1.1.0"
    assert eventually("/api/orders 500", lambda: status_code(app, "/api/orders?customer_id=7") == "500")
    log = journal(app, "sergas-app")
    assert "discount_code" in log and "path=/api/orders status=500" in log
    assert health(app)["version"] == "1.1.0"


def seen_pool_exhausted(lab: Any) -> None:
    app, db = lab.host("app1"), lab.host("db1")
    held = int(
        psql(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sergas-batch-export'")
    )
    max_conn = int(psql(db, "SHOW max_connections"))
    assert held >= max_conn - 3 - 2  # every non-reserved slot but the app's own
    codes = eventually("500s under concurrency", lambda: [c for c in burst(app) if c == "500"], timeout_s=40)
    assert codes
    assert re.search(r"remaining connection slots are reserved|too many clients", journal(app, "sergas-app"))


def seen_lock_contention(lab: Any) -> None:
    app, db = lab.host("app1"), lab.host("db1")
    assert (
        psql(
            db,
            "SELECT count(*) FROM pg_locks WHERE relation = 'customers'::regclass "
            "AND mode = 'AccessExclusiveLock' AND granted",
        )
        == "1"
    )
    # A customers read that misses the cache queues behind the migration until statement_timeout.
    sh(lab.host("redis1"), f"{REDIS_CLI} del cache:customers")
    sh(
        app,
        "rm -f /tmp/lc.code; setsid -f sh -c \"curl -s -m 20 -o /dev/null -w '%{http_code}' "
        'http://127.0.0.1:8000/api/customers > /tmp/lc.code" </dev/null >/dev/null 2>&1',
    )
    eventually(
        "a query waiting on the lock",
        lambda: (
            int(psql(db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") or 0) >= 1
        ),
        every_s=0.5,
    )
    assert (
        eventually("the blocked request's answer", lambda: sh(app, "cat /tmp/lc.code"), timeout_s=20) == "500"
    )
    assert "canceling statement due to statement timeout" in journal(app, "sergas-app")


def seen_slow_queries(lab: Any) -> None:
    app, db = lab.host("app1"), lab.host("db1")
    assert (
        psql(db, "SELECT count(*) FROM pg_indexes WHERE tablename = 'orders' AND indexname <> 'orders_pkey'")
        == "0"
    )
    settings = psql(db, "SELECT setconfig FROM pg_db_role_setting WHERE setrole = 'sergas'::regrole")
    assert "jit_above_cost=0" in settings and "max_parallel_workers_per_gather=0" in settings
    plan = psql(
        db, "EXPLAIN SELECT o.id FROM orders o WHERE o.customer_id = 42 ORDER BY o.created_at DESC LIMIT 20"
    )
    assert "Seq Scan on orders" in plan

    def slow() -> bool:
        base = int(time.time() * 10) % 450
        times = [
            float(
                sh(
                    app,
                    "curl -s -m 10 -o /dev/null -w '%{time_total}' "
                    f"'http://127.0.0.1:8000/api/orders?customer_id={base + i}'",
                )
                or 0
            )
            for i in range(5)
        ]
        return sorted(times)[2] >= 0.01  # healthy: ~2 ms

    # The pool reopens connections within 30 s; new ones carry the role's settings.
    eventually("order lookups slower than 10 ms", slow, timeout_s=45, every_s=2)


def seen_rate_limited(lab: Any) -> None:
    app = lab.host("app1")
    log = journal(app, "sergas-app")
    assert "upstream rate limit exceeded (HTTP 429" in log
    metrics = sh(app, "curl -s http://127.0.0.1:8000/metrics")
    assert re.search(r'sergas_zoho_requests_total\{outcome="429"\} [1-9]', metrics)
    eventually(
        "the circuit breaker open",
        lambda: "sergas_zoho_circuit_breaker_state 1" in sh(app, "curl -s http://127.0.0.1:8000/metrics"),
        timeout_s=20,
    )


def seen_error_storm(lab: Any) -> None:
    app = lab.host("app1")

    def errors_in_3s() -> int:
        return journal(app, "sergas-app", "-3s").count("ERROR: GET /api/orders failed: ValueError")

    assert eventually(
        "30 ValueError 500s within 3 s (25 a second)", lambda: errors_in_3s() >= 30, timeout_s=15, every_s=0.5
    )


def seen_oom(lab: Any) -> None:
    app = lab.host("app1")
    assert re.search(
        r"Memory cgroup out of memory: Killed process \d+ \(sergas-export\)", sh(app, "dmesg | tail -n 400")
    )
    assert "status=9/KILL" in journal(app, "lab-fault-oom", "-5min")
    assert faults._oom_kills(faults._oom_cgroup(lab.settings, faults.get("oom"))) >= 1


def seen_disk_full(lab: Any) -> None:
    app = lab.host("app1")
    assert int(sh(app, "df --output=avail /var/lib/sergas | tail -1")) < 1024
    report = health(app)
    assert report["status"] == "unhealthy" and report["checks"]["disk"]["status"] == "fail"
    assert status_code(app, "/api/orders?customer_id=3") == "500"
    assert "No space left on device" in journal(app, "sergas-app")


def seen_redis_memory(lab: Any) -> None:
    used, limit = redis_memory(lab.host("redis1"))
    assert limit == 64 * 2**20 and used >= 0.9 * limit
    report = eventually(
        "app unhealthy on redis", lambda: (r := health(lab.host("app1")))["status"] == "unhealthy" and r
    )
    assert report["checks"]["redis"]["status"] == "fail" and "OOM" in report["checks"]["redis"]["error"]


def seen_host_down(lab: Any) -> None:
    from collector_lab import hosts

    assert not hosts.port_open(lab.ips["redis1"], 22, timeout=2)
    assert not hosts.is_running(lab.settings, "redis1")
    report = eventually(
        "app unhealthy on redis", lambda: (r := health(lab.host("app1")))["status"] == "unhealthy" and r
    )
    assert report["checks"]["redis"]["status"] == "fail"


def rest_of_lab(lab: Any, host: str) -> dict[str, Any]:
    """What healing a fault on `host` must not change:
    other hosts' processes, monitoring, inventory, state."""
    from collector_lab import hosts, lab_state

    state = lab_state(lab.settings)
    pids = hosts.nspawn_pids(lab.settings)
    return {
        "hosts": {n: sorted(p) for n, p in pids.items() if n != host},
        "monitoring": state.get("monitoring"),
        "up_at": state.get("up_at"),
        "inventory": lab.inventory.stat().st_mtime_ns,
    }


def healed(lab: Any, name: str) -> None:
    """After heal: the fault's check is off, the app answers healthy, the specific symptom is gone."""
    app = lab.host("app1")
    assert not faults.is_active(lab.settings, faults.get(name))
    report = eventually(
        "app healthy again", lambda: (r := health(app))["status"] == "healthy" and r, timeout_s=40
    )
    assert report["version"] == "1.0.0"
    assert sh(app, "git -C /opt/sergas/app describe --tags") == "v1.0.0"
    assert status_code(app, "/api/orders?customer_id=11") == "200"
    if name == "lock-contention":
        assert "loyalty_points" not in psql(
            lab.host("db1"),
            "SELECT string_agg(attname, ',') FROM pg_attribute WHERE attrelid = 'customers'::regclass",
        )
    if name == "slow-queries":
        assert (
            psql(
                lab.host("db1"),
                "SELECT count(*) FROM pg_indexes WHERE indexname IN "
                "('orders_customer_id_idx', 'orders_created_at_idx')",
            )
            == "2"
        )
    if name == "redis-memory":
        used, limit = redis_memory(lab.host("redis1"))
        assert used < 0.5 * limit
    if name == "pool-exhausted":
        assert (
            psql(
                lab.host("db1"),
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sergas-batch-export'",
            )
            == "0"
        )
    if name == "rate-limited":
        assert "sergas_zoho_circuit_breaker_state 0" in sh(app, "curl -s http://127.0.0.1:8000/metrics")
    if name == "oom":
        assert not faults._oom_cgroup(lab.settings, faults.get("oom")).exists()
    if name == "host-down":
        assert "PONG" in sh(lab.host("redis1"), f"{REDIS_CLI} ping")


SEEN: dict[str, Callable[[Any], None]] = {
    "app-down": seen_app_down,
    "bad-deploy": seen_bad_deploy,
    "pool-exhausted": seen_pool_exhausted,
    "lock-contention": seen_lock_contention,
    "slow-queries": seen_slow_queries,
    "rate-limited": seen_rate_limited,
    "error-storm": seen_error_storm,
    "oom": seen_oom,
    "disk-full": seen_disk_full,
    "redis-memory": seen_redis_memory,
    "host-down": seen_host_down,
}


def test_every_fault_has_a_lab_test() -> None:
    assert list(SEEN) == EXPECTED


@pytest.mark.lab
@pytest.mark.destructive
@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_fault_is_visible_after_break_and_gone_after_heal(lab: Any, lab_lock: None, name: str) -> None:
    fault = faults.get(name)
    if faults.is_active(lab.settings, fault):  # a leftover of an interrupted run
        faults.heal_fault(name, lab.settings)
    assert not faults.is_active(lab.settings, fault)
    before = rest_of_lab(lab, fault.host)
    try:
        message = faults.break_fault(name, lab.settings)
        assert message.startswith(f"broke {name} on {fault.host}")
        assert faults.active_faults(lab.settings)[name] is True
        SEEN[name](lab)
    finally:
        message = faults.heal_fault(name, lab.settings)
    assert message.startswith(f"healed {name}")
    healed(lab, name)
    # Healing starts at most the fault's own host: the others, monitoring, the inventory and the
    # record of the last `up` stay as they were (healing host-down used to run the whole `lab up`).
    assert rest_of_lab(lab, fault.host) == before
