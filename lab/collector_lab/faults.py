"""The lab's faults as data: what each breaks, how it heals, and how to tell it is active.

A fault is a name, a description, the host it acts on, break steps, heal steps and a check.
A step is a shell script run inside a host (through `hosts.run_in`, i.e. nsenter: it works even
when sshd or the network is the thing that is broken) or a named action on this machine (the
memory cgroup of the `oom` fault, powering a host off and on). A check is a shell script whose
exit status 0 means "the fault is active", or a named check on this machine.

Long-running fault processes are transient systemd units `lab-fault-<name>` inside the host,
bounded by RuntimeMaxSec, so nothing outlives the lab. `break_fault`/`heal_fault` hold the lab lock
(collector_lab.lock; re-entrant for a parent that already holds it).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from collector.config import Settings, load_settings
from collector.core import UsageError
from collector.times import wait_until

from collector_lab import compose, hosts, lab_state
from collector_lab.lock import lab_lock

HELPERS = "/srv/lab/faults"  # lab/faults as every host sees it (read-only bind mount)
APP_DIR = "/opt/sergas/app"
APP_URL = "http://127.0.0.1:8000"
UNIT_MAX_S = 3600  # every fault process ends by itself after an hour at most


class FaultError(RuntimeError):
    """A break or heal step failed; the message says which and why."""


@dataclass(frozen=True)
class Step:
    """One thing to do: a shell script inside `host`, or (host == "machine") a named machine action."""

    host: str
    script: str
    timeout_s: float = 60.0


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    host: str  # the host it acts on
    group: str  # that host's group
    break_steps: tuple[Step, ...]
    heal_steps: tuple[Step, ...]
    check: str  # shell run on `host`: exit 0 while the fault is active; "machine:<name>" for a machine check
    evidence: str  # what an on-call engineer sees
    settle_s: float = 30.0  # how long break waits for the check to turn active


# ---------------------------------------------------------------------------- shell snippets


def _unit(name: str, command: str, *, user: str = "root") -> str:
    """Start `command` as transient unit lab-fault-<name> (any earlier one stopped first).

    The unit gets /run/lab-fault-<name>/ (owned by `user`) for its state files.
    """
    unit = f"lab-fault-{name}"
    return (
        f"systemctl stop {unit} >/dev/null 2>&1 || true; "
        f"systemctl reset-failed {unit} >/dev/null 2>&1 || true\n"
        f"systemd-run --quiet --unit={unit} --uid={user} --property=RuntimeMaxSec={UNIT_MAX_S} "
        f"--property=RuntimeDirectory={unit} "
        f"--description={shlex.quote('lab fault ' + name)} {command}\n"
    )


def _stop_unit(name: str) -> str:
    unit = f"lab-fault-{name}"
    return (
        f"systemctl stop {unit} >/dev/null 2>&1 || true; "
        f"systemctl reset-failed {unit} >/dev/null 2>&1 || true\n"
    )


def _wait(condition: str, seconds: int, what: str) -> str:
    """Poll a shell condition every 0.25 s; fail with `what` when it never holds.

    Steps run under `set -o pipefail`: end a pipeline with `grep -c ... >/dev/null`, not `grep -q`
    (which exits at the first match and fails the pipeline with the writer's SIGPIPE).
    """
    tries = seconds * 4
    return (
        f"for _ in $(seq 1 {tries}); do if {condition}; then break; fi; sleep 0.25; done\n"
        f"if ! {condition}; then echo {shlex.quote('timed out: ' + what)} >&2; exit 1; fi\n"
    )


_APP_HEALTHY = f"curl -fs -o /dev/null {APP_URL}/health"
_APP_LISTENS = f"curl -s -o /dev/null {APP_URL}/health"
_PSQL = "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d sergas"
_PSQL_VALUE = "runuser -u postgres -- psql -X -tAq -d sergas -c"
# The app holds no connection and every slot but the superusers' reserve is taken (this psql, a superuser,
# then sits in the reserve: more client backends than max_connections - superuser_reserved_connections).
_NO_SLOT_FOR_THE_APP = (
    "SELECT (SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sergas-app') = 0 "
    "AND (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') > "
    "current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int"
)
_REDIS_CLI = "REDISCLI_AUTH=\"$(sed -n 's/^requirepass //p' /etc/redis/lab.conf)\" redis-cli -h 127.0.0.1"
_ENV_RATE = f"$(sed -n 's/^ZOHO_RATE_LIMIT=//p' {APP_DIR}/.env | tail -1)"

# ---------------------------------------------------------------------------- the catalogue

FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault(
            name="app-down",
            description="sergas-app is stopped on app1: nothing listens on :8000.",
            host="app1",
            group="app",
            break_steps=(Step("app1", "systemctl stop sergas-app\n"),),
            heal_steps=(
                Step(
                    "app1",
                    "systemctl is-active --quiet sergas-app || systemctl start sergas-app\n"
                    + _wait(_APP_LISTENS, 30, "sergas-app answering"),
                ),
            ),
            check="! systemctl is-active --quiet sergas-app",
            evidence=(
                "systemctl: sergas-app inactive; port 8000 closed; "
                "Prometheus target down (alert SergasAppDown)."
            ),
        ),
        Fault(
            name="bad-deploy",
            description="Release v1.1.0 deployed on app1 and restarted: its orders query names a column that "
            "does not exist, so /api/orders answers 500.",
            host="app1",
            group="app",
            break_steps=(
                Step(
                    "app1",
                    f"git -C {APP_DIR} checkout -q v1.1.0\nsystemctl restart sergas-app\n"
                    + _wait(_APP_LISTENS, 30, "sergas-app answering"),
                ),
            ),
            # Restart whenever the running app is not the checked-out release (a checkout without a restart).
            heal_steps=(
                Step(
                    "app1",
                    f'if [ "$(git -C {APP_DIR} describe --tags --exact-match 2>/dev/null)" != v1.0.0 ]; '
                    f"then git -C {APP_DIR} checkout -q v1.0.0; fi\n"
                    f"curl -sS -m 5 http://127.0.0.1:8000/health 2>/dev/null | grep -q "
                    f'"\\"version\\": \\"$(cat {APP_DIR}/VERSION)\\"" || systemctl restart sergas-app\n'
                    + _wait(_APP_LISTENS, 30, "sergas-app answering"),
                ),
            ),
            check=f'[ "$(git -C {APP_DIR} describe --tags --exact-match 2>/dev/null)" = v1.1.0 ]',
            evidence="git describe: v1.1.0; journal: 'ERROR: GET /api/orders failed: UndefinedColumn: column "
            "o.discount_code does not exist'; 5xx ratio up; /health still healthy (version 1.1.0).",
        ),
        Fault(
            name="pool-exhausted",
            description=(
                "A leaking batch job on app1 holds every PostgreSQL connection db1 allows (idle, as the "
                "app's user) and grabs each one that frees up; the app's connections are cut and its pool "
                "cannot reconnect."
            ),
            host="app1",
            group="app",
            break_steps=(
                Step(
                    "app1",
                    _unit(
                        "pool-exhausted",
                        f"/usr/bin/python3 {HELPERS}/hold_connections.py "
                        f"{APP_DIR}/.env {UNIT_MAX_S} /run/lab-fault-pool-exhausted/held",
                        user="sergas",
                    )
                    + _wait(
                        "[ -s /run/lab-fault-pool-exhausted/held ]",
                        30,
                        "the batch job filling max_connections",
                    ),
                ),
                # A pool kept busy never idles its connections out: cut them, as a failover or a
                # recycle would, so the app must reconnect. The app and the job race for each freed
                # slot, and an app that wins one keeps it (its pool reconnects the moment it recycles):
                # cut again until the job holds every slot a non-superuser can take.
                Step(
                    "db1",
                    _wait(
                        f'{{ {_PSQL_VALUE} "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity '
                        f"WHERE application_name = 'sergas-app'\" >/dev/null; sleep 0.5; "
                        f'[ "$({_PSQL_VALUE} "{_NO_SLOT_FOR_THE_APP}")" = t ]; }}',
                        10,
                        "the batch job holding every slot the app could take",
                    ),
                ),
            ),
            heal_steps=(Step("app1", _stop_unit("pool-exhausted")),),
            check="systemctl is-active --quiet lab-fault-pool-exhausted",
            evidence=(
                "db1 pg_stat_activity: connections = max_connections - reserved, ~all idle from app1 "
                "(application_name sergas-batch-export); postgres log 'FATAL: remaining connection slots "
                "are reserved for non-replication superuser connections'; "
                "under load the app journal 'ERROR: ... remaining connection slots are reserved', 500s."
            ),
        ),
        Fault(
            name="lock-contention",
            description="A schema migration on db1 opened a transaction, took an ACCESS EXCLUSIVE lock on "
            "customers (ALTER TABLE) and sits idle in transaction: every query on customers waits.",
            host="db1",
            group="db",
            break_steps=(
                Step(
                    "db1",
                    _unit(
                        "lock-contention",
                        "/bin/sh -c "
                        + shlex.quote(
                            "{ echo 'BEGIN;'; "
                            "echo 'ALTER TABLE customers ADD COLUMN loyalty_points integer;'; "
                            f"sleep {UNIT_MAX_S}; }} | PGAPPNAME=sergas-migrate "
                            "runuser -u postgres -- psql -X -q -d sergas"
                        ),
                    )
                    + _wait(
                        f'[ "$({_PSQL_VALUE} "SELECT count(*) FROM pg_stat_activity WHERE application_name = '
                        f"'sergas-migrate' AND state = 'idle in transaction'\")\" -ge 1 ]",
                        20,
                        "the migration holding its lock",
                    ),
                ),
                # The migration's deploy drops the customers answer from the cache (TTL 60 s), so the
                # next read reaches the locked table at once rather than within a minute.
                Step("redis1", f"{_REDIS_CLI} del cache:customers >/dev/null\n"),
            ),
            heal_steps=(
                Step(
                    "db1",
                    _stop_unit("lock-contention")
                    + _wait(
                        f'[ "$({_PSQL_VALUE} "SELECT count(*) FROM pg_stat_activity WHERE '
                        f"application_name = 'sergas-migrate'\")\" -eq 0 ]",
                        20,
                        "the migration gone",
                    ),
                ),
            ),
            check=(
                f'[ "$({_PSQL_VALUE} "SELECT count(*) FROM pg_stat_activity WHERE application_name = '
                f"'sergas-migrate' AND state LIKE 'idle in transaction%'\" 2>/dev/null)\" -ge 1 ]"
            ),
            evidence=(
                "pg_locks: AccessExclusiveLock on customers granted to an 'idle in transaction' backend, "
                "others waiting; postgres log 'still waiting for AccessShareLock'; app journal "
                "'canceling statement due to statement timeout'; /api/customers 500 after 5 s."
            ),
        ),
        Fault(
            name="slow-queries",
            description="A migration dropped the orders indexes and a tuning change set the app's role to no "
            "parallel workers and JIT for every query: each order lookup scans and sorts 300k rows.",
            host="db1",
            group="db",
            break_steps=(
                Step(
                    "db1",
                    f"{_PSQL} <<'SQL'\n"
                    "DROP INDEX IF EXISTS orders_customer_id_idx;\n"
                    "DROP INDEX IF EXISTS orders_created_at_idx;\n"
                    "ALTER ROLE sergas SET max_parallel_workers_per_gather = 0;\n"
                    "ALTER ROLE sergas SET jit = on;\n"
                    "ALTER ROLE sergas SET jit_above_cost = 0;\n"
                    "ALTER ROLE sergas SET jit_inline_above_cost = 0;\n"
                    "ALTER ROLE sergas SET jit_optimize_above_cost = 0;\nSQL\n",
                ),
            ),
            heal_steps=(
                Step(
                    "db1",
                    f"{_PSQL} <<'SQL'\n"
                    "CREATE INDEX IF NOT EXISTS orders_customer_id_idx "
                    "ON orders (customer_id, created_at DESC);\n"
                    "CREATE INDEX IF NOT EXISTS orders_created_at_idx ON orders (created_at DESC);\n"
                    "ALTER ROLE sergas RESET ALL;\nSQL\n",
                    timeout_s=120,
                ),
            ),
            check=(
                f'[ "$({_PSQL_VALUE} "SELECT count(*) FROM pg_indexes WHERE indexname = '
                f"'orders_customer_id_idx'\" 2>/dev/null)\" = 0 ]"
            ),
            evidence=(
                "EXPLAIN of the app's order lookup: Seq Scan on orders; \\d orders has no index but the "
                "primary key; pg_db_role_setting for sergas: jit_above_cost=0, "
                "max_parallel_workers_per_gather=0; "
                "order lookups ~10x slower, p95 up and DB CPU saturated under load (alert SergasLatencyHigh)."
            ),
        ),
        Fault(
            name="rate-limited",
            description="The Zoho upstream's quota drops to 20 calls a minute while the app syncs at "
            "ZOHO_RATE_LIMIT=120/min: HTTP 429s, 'rate limit' errors, the circuit breaker opens.",
            host="app1",
            group="app",
            break_steps=(
                Step(
                    "app1",
                    "echo 20 > /etc/zoho-mock/quota\n"
                    + _wait(
                        "journalctl -u sergas-app --since '-30s' --no-pager -q "
                        "| grep -c 'rate limit' >/dev/null",
                        30,
                        "429s in the app's journal",
                    ),
                ),
            ),
            heal_steps=(
                Step(
                    "app1",
                    "echo 600 > /etc/zoho-mock/quota\n"
                    f"curl -fs -o /dev/null -X POST -H 'Content-Type: application/json' "
                    f'-d "{{\\"ZOHO_RATE_LIMIT\\": {_ENV_RATE}}}" {APP_URL}/admin/config || true\n'
                    f"curl -fs -o /dev/null -X POST {APP_URL}/admin/circuit-breaker/zoho/close || true\n",
                ),
            ),
            check='[ "$(cat /etc/zoho-mock/quota 2>/dev/null || echo 600)" -lt 600 ]',
            evidence="app journal 'ERROR: zoho sync failed: upstream rate limit exceeded (HTTP 429 ...)' and "
            "'zoho circuit breaker opened'; sergas_zoho_circuit_breaker_state 1 (alert); "
            'sergas_zoho_requests_total{outcome="429"} rising; /api/zoho/sync 502/503.',
        ),
        Fault(
            name="error-storm",
            description="A misbehaving client on app1 sends 25 malformed /api/orders requests a second; "
            "each one is a 500 with an ERROR line (the app does not validate customer_id).",
            host="app1",
            group="app",
            break_steps=(
                Step(
                    "app1",
                    _unit(
                        "error-storm",
                        f"/usr/bin/python3 {HELPERS}/error_storm.py 25 {UNIT_MAX_S}",
                        user="nobody",
                    )
                    + _wait(
                        "journalctl -u sergas-app --since '-20s' --no-pager -q | grep -c "
                        "'ERROR: GET /api/orders failed: ValueError' >/dev/null",
                        20,
                        "500s in the app's journal",
                    ),
                ),
            ),
            heal_steps=(Step("app1", _stop_unit("error-storm")),),
            check="systemctl is-active --quiet lab-fault-error-storm",
            evidence=(
                "app journal floods with 'ERROR: GET /api/orders failed: ValueError: customer_id must be an "
                "integer' and 'path=/api/orders status=500'; 5xx ratio > 10 % (alert SergasHighErrorRate)."
            ),
        ),
        Fault(
            name="oom",
            description=(
                "A runaway export job on app1 (process sergas-export) grows until the kernel's memory "
                "cgroup OOM killer kills it: a real OOM kill, seen in dmesg."
            ),
            host="app1",
            group="app",
            break_steps=(Step("machine", "oom_break", timeout_s=90),),
            heal_steps=(Step("machine", "oom_heal"),),
            check="machine:oom_active",
            evidence="dmesg 'Memory cgroup out of memory: Killed process N (sergas-export)'; app1 journal "
            "'lab-fault-oom.service: Main process exited, code=killed, status=9/KILL'.",
        ),
        Fault(
            name="disk-full",
            description=(
                "A runaway orders export filled app1's 16 MiB data filesystem /var/lib/sergas: the app "
                "cannot write its audit trail (ENOSPC) and reports unhealthy."
            ),
            host="app1",
            group="app",
            break_steps=(
                Step(
                    "app1",
                    "f=/var/lib/sergas/exports/orders-export-$(date -u +%Y%m%d).csv\n"
                    "mkdir -p /var/lib/sergas/exports\n"
                    'dd if=/dev/zero of="$f" bs=1M count=64 status=none 2>/dev/null || true\n'
                    'chown sergas:sergas "$f"\n'
                    + _wait(
                        '[ "$(df --output=avail /var/lib/sergas | tail -1)" -lt 256 ]',
                        5,
                        "/var/lib/sergas full",
                    ),
                ),
            ),
            heal_steps=(Step("app1", "rm -f /var/lib/sergas/exports/orders-export-*.csv\n"),),
            check='[ "$(df --output=avail /var/lib/sergas 2>/dev/null | tail -1)" -lt 1024 ]',
            evidence=(
                "df: /var/lib/sergas 100 % used; "
                "app journal 'ERROR: ... [Errno 28] No space left on device'; "
                "/health unhealthy (disk); /api/orders 500."
            ),
        ),
        Fault(
            name="redis-memory",
            description="Session keys without a TTL fill redis1 up to maxmemory (64 MB, noeviction): Redis "
            "refuses writes ('OOM command not allowed').",
            host="redis1",
            group="redis",
            break_steps=(Step("redis1", f"/usr/bin/python3 {HELPERS}/redis_fill.py fill\n", timeout_s=120),),
            heal_steps=(Step("redis1", f"/usr/bin/python3 {HELPERS}/redis_fill.py clear\n", timeout_s=120),),
            check=(
                _REDIS_CLI + " info memory | awk -F: '/^used_memory:/{u=$2} /^maxmemory:/{m=$2} "
                "END{exit !(m > 0 && u >= 0.9 * m)}'"
            ),
            evidence=(
                "redis INFO memory: used_memory at maxmemory, ~800 sess:legacy:* keys without TTL; "
                "app journal 'ERROR: redis cache write failed ... OOM command not allowed'; "
                "/health unhealthy (redis at 98 %+)."
            ),
        ),
        Fault(
            name="host-down",
            description="redis1 is powered off (its container halted): unreachable over ssh, the app's Redis "
            "checks fail.",
            host="redis1",
            group="redis",
            break_steps=(Step("machine", "host_down_break", timeout_s=60),),
            heal_steps=(Step("machine", "host_down_heal", timeout_s=180),),
            check="machine:host_down_active",
            evidence="ssh to redis1 times out / unreachable; app journal 'ERROR: redis cache read failed'; "
            "/health unhealthy (redis).",
        ),
        # The compose host (collector_lab.compose): this machine's Docker Engine, project sergas.
        Fault(
            name="compose-app-down",
            description="The compose project's app container is stopped (docker-compose stop app) and stays "
            "down: nothing answers on 10.203.58.10:8000.",
            host=compose.HOST,
            group=compose.GROUP,
            break_steps=(Step("machine", "compose_app_down_break", timeout_s=60),),
            heal_steps=(Step("machine", "compose_app_down_heal", timeout_s=120),),
            check="machine:compose_app_down_active",
            evidence="docker ps -a: sergas_app_1 Exited (0); docker-compose ps: app Exit 0; "
            "http://10.203.58.10:8000/health refused.",
        ),
        Fault(
            name="compose-bad-deploy",
            description="Release v1.1.0 deployed on the compose host (git checkout v1.1.0 && docker-compose up "
            "-d --build): a new image and container whose orders query names a missing column.",
            host=compose.HOST,
            group=compose.GROUP,
            break_steps=(Step("machine", "compose_bad_deploy_break", timeout_s=150),),
            heal_steps=(Step("machine", "compose_bad_deploy_heal", timeout_s=150),),
            check="machine:compose_bad_deploy_active",
            evidence="git describe: v1.1.0; a new sergas_app image and container created moments ago; "
            "docker logs 'ERROR: GET /api/orders failed: UndefinedColumn: column o.discount_code does not "
            "exist'; /api/orders 500; /health healthy, version 1.1.0.",
        ),
        Fault(
            name="compose-oom",
            description="The compose app's process grows past the container's 256 MiB memory limit and the "
            "kernel OOM-kills it; docker restarts the container (restart: unless-stopped).",
            host=compose.HOST,
            group=compose.GROUP,
            break_steps=(Step("machine", "compose_oom_break", timeout_s=120),),
            heal_steps=(Step("machine", "compose_oom_heal", timeout_s=120),),
            check="machine:compose_oom_active",
            evidence="docker inspect sergas_app_1: State.OOMKilled true, RestartCount 1, ExitCode 137 before "
            "the restart; dmesg 'Memory cgroup out of memory: Killed process N (python3)'; docker event oom.",
        ),
    )
}


def known() -> list[str]:
    """Every fault's name, in catalogue order."""
    return list(FAULTS)


def get(name: str) -> Fault:
    """The fault called `name`; UsageError listing the known ones otherwise."""
    fault = FAULTS.get(name)
    if fault is None:
        raise UsageError(f"unknown fault {name!r}; known faults: {', '.join(FAULTS)}")
    return fault


# ---------------------------------------------------------------------------- running steps


def _run_sh(settings: Settings, host: str, script: str, timeout_s: float) -> tuple[int, str]:
    res = hosts.run_in(settings, host, ["/bin/bash", "-c", "set -o pipefail\n" + script], timeout=timeout_s)
    return res.returncode, (res.stdout + res.stderr).strip()


def _run_step(settings: Settings, fault: Fault, step: Step) -> str:
    if step.host == "machine":
        return MACHINE_ACTIONS[step.script](settings, fault, step.timeout_s)
    rc, out = _run_sh(settings, step.host, step.script, step.timeout_s)
    if rc != 0:
        raise FaultError(f"{fault.name}: step on {step.host} failed (rc {rc}): {out.splitlines()[-1:] or ''}")
    return out


def is_active(settings: Settings, fault: Fault) -> bool:
    """Whether `fault` is active now (its check holds); a host that is down answers no."""
    if fault.check.startswith("machine:"):
        return bool(MACHINE_CHECKS[fault.check.split(":", 1)[1]](settings, fault))
    if not hosts.is_running(settings, fault.host):
        return False
    rc, _ = _run_sh(settings, fault.host, fault.check, 20)
    return rc == 0


def active_faults(settings: Settings | None = None) -> dict[str, bool]:
    """Every fault and whether it is active now (checked in parallel)."""
    settings = settings or load_settings()
    with ThreadPoolExecutor(max_workers=6) as pool:
        states = list(pool.map(lambda f: _safe_active(settings, f), FAULTS.values()))
    return dict(zip(FAULTS, states))


def _safe_active(settings: Settings, fault: Fault) -> bool:
    try:
        return is_active(settings, fault)
    except (OSError, subprocess.SubprocessError, ValueError):  # status must not crash on one odd host
        return False


def break_fault(name: str, settings: Settings | None = None) -> str:
    """Inject fault `name`; waits until its check says active. Returns a one-line summary."""
    fault = get(name)
    settings = settings or load_settings()
    _require_lab(settings)
    with lab_lock():
        started = time.monotonic()
        outputs = [_run_step(settings, fault, step) for step in fault.break_steps]
        if not wait_until(lambda: is_active(settings, fault), fault.settle_s, 0.5):
            raise FaultError(f"{name}: broke, but its check never turned active within {fault.settle_s:.0f}s")
    detail = " ".join(o.splitlines()[-1] for o in outputs if o)[:200]
    return f"broke {name} on {fault.host} in {time.monotonic() - started:.1f}s" + (
        f": {detail}" if detail else ""
    )


def heal_fault(name: str, settings: Settings | None = None) -> str:
    """Remove fault `name` (or every fault with `all`) and return the hosts to healthy."""
    settings = settings or load_settings()
    if name == "all":
        _require_lab(settings)
        # host-down first: the other heals need every host running.
        order = sorted(FAULTS.values(), key=lambda f: f.name != "host-down")
        with lab_lock():
            lines = [_heal_one(settings, f) for f in order]
            lines.append(_app_health(settings))
        return "\n".join(lines)
    fault = get(name)
    _require_lab(settings)
    with lab_lock():
        return _heal_one(settings, fault) + "; " + _app_health(settings)


def _app_health(settings: Settings, wait_s: float = 30.0) -> str:
    """Wait (best effort) for app1's /health to say healthy; says what it saw."""
    if not hosts.is_running(settings, "app1"):
        return "app1 not running"
    script = (
        f"for _ in $(seq 1 {int(wait_s * 2)}); do {_APP_HEALTHY} && exit 0; sleep 0.5; done; "
        f"curl -s {APP_URL}/health; exit 1"
    )
    rc, out = _run_sh(settings, "app1", script, wait_s + 10)
    return "app healthy" if rc == 0 else f"app still unhealthy: {out[:300]}"


def _heal_one(settings: Settings, fault: Fault) -> str:
    started = time.monotonic()
    if fault.name != "host-down" and not MACHINE_CHECKS["host_running"](settings, fault):
        if fault.group == compose.GROUP:
            return f"{fault.name}: the compose host is not running"
        return f"{fault.name}: {fault.host} is not running (heal host-down first)"
    for step in fault.heal_steps:
        _run_step(settings, fault, step)
    if is_active(settings, fault):
        raise FaultError(f"{fault.name}: healed, but its check still says active")
    return f"healed {fault.name} on {fault.host} in {time.monotonic() - started:.1f}s"


def _require_lab(settings: Settings) -> None:
    if not lab_state(settings).get("hosts"):
        raise UsageError("the lab is not up: run `collector-lab up` first")


# ---------------------------------------------------------------------------- machine-side actions


def _oom_cgroup(settings: Settings, fault: Fault) -> Path:
    return hosts.memory_cgroup(fault.host) / "lab-fault-oom"


def _hog_pid(marker: str) -> int | None:
    """PID (here) of the memory hog started with `marker`, or None while it is not running yet."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        # The hog renames itself once running; systemd-run's own argv holds the marker too.
        if comm == "sergas-export" and marker.encode() in argv:
            return int(entry.name)
    return None


def _oom_break(settings: Settings, fault: Fault, timeout_s: float) -> str:
    """Start the hog in the host, move it into a 96 MiB child memory cgroup, let it grow until killed."""
    cg = _oom_cgroup(settings, fault)
    _oom_heal(settings, fault, timeout_s)
    marker = f"oom-{uuid.uuid4().hex[:12]}"
    rc, out = _run_sh(
        settings, fault.host, _unit("oom", f"/usr/bin/python3 {HELPERS}/memhog.py {marker}"), 30
    )
    if rc != 0:
        raise FaultError(f"oom: could not start the memory hog on {fault.host}: {out}")
    pid = wait_until(lambda: _hog_pid(marker), 10.0, 0.1)
    if pid is None:
        raise FaultError(f"oom: the memory hog did not show up on this machine (marker {marker})")
    cg.mkdir(exist_ok=True)
    limit = str(96 * 2**20)
    (cg / "memory.limit_in_bytes").write_text(limit)
    memsw = cg / "memory.memsw.limit_in_bytes"
    if memsw.exists():  # with swap accounting the hog must not escape into swap
        memsw.write_text(limit)
    (cg / "cgroup.procs").write_text(str(pid))
    os.kill(pid, signal.SIGUSR1)
    if not wait_until(lambda: _oom_kills(cg) > 0, timeout_s):
        raise FaultError(f"oom: no OOM kill in {cg} within {timeout_s:.0f}s")
    return f"sergas-export (pid {pid} here) OOM-killed in memory cgroup {cg}"


def _oom_kills(cg: Path) -> int:
    try:
        for line in (cg / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _oom_heal(settings: Settings, fault: Fault, timeout_s: float) -> str:
    """Stop the unit, empty and remove the child cgroup."""
    if hosts.is_running(settings, fault.host):
        _run_sh(settings, fault.host, _stop_unit("oom"), 30)
    cg = _oom_cgroup(settings, fault)
    if cg.exists():
        for _ in range(50):
            try:
                pids = [int(p) for p in (cg / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    return "oom healed"


def _oom_active(settings: Settings, fault: Fault) -> bool:
    return _oom_kills(_oom_cgroup(settings, fault)) > 0


def _host_down_break(settings: Settings, fault: Fault, timeout_s: float) -> str:
    hosts.stop_host(settings, fault.host, timeout=timeout_s)
    return f"{fault.host} powered off"


def _host_down_heal(settings: Settings, fault: Fault, timeout_s: float) -> str:
    """Boot that one host again (its overlay kept); the rest of the lab is not touched."""
    if hosts.is_running(settings, fault.host):
        return f"{fault.host} already running"
    try:
        seconds = hosts.boot_stopped_host(settings, fault.host, timeout=timeout_s)
    except RuntimeError as exc:
        raise FaultError(f"host-down: could not bring {fault.host} back: {exc}") from None
    return f"{fault.host} booted again in {seconds}s"


def _host_down_active(settings: Settings, fault: Fault) -> bool:
    return not MACHINE_CHECKS["host_running"](settings, fault)


def _host_running(settings: Settings, fault: Fault) -> bool:
    if fault.group == compose.GROUP:
        return compose.is_running(settings)
    return hosts.is_running(settings, fault.host)


def _compose_action(action: Callable[[Settings], str]) -> MachineAction:
    """A compose fault's step on this machine; the compose host must be up."""

    def run(settings: Settings, fault: Fault, timeout_s: float) -> str:
        if not compose.is_running(settings):
            raise FaultError(f"{fault.name}: the compose host is not up (collector-lab up starts it)")
        try:
            return action(settings)
        except RuntimeError as exc:
            raise FaultError(f"{fault.name}: {exc}") from None

    return run


def _compose_check(check: Callable[[Settings], bool]) -> Callable[[Settings, Fault], bool]:
    """A compose fault's check: never active while the engine is down (as a stopped host answers no)."""
    return lambda settings, fault: compose.is_running(settings) and check(settings)


MachineAction = Callable[[Settings, Fault, float], str]
MACHINE_ACTIONS: dict[str, MachineAction] = {
    "oom_break": _oom_break,
    "oom_heal": _oom_heal,
    "host_down_break": _host_down_break,
    "host_down_heal": _host_down_heal,
    "compose_app_down_break": _compose_action(compose.app_down_break),
    "compose_app_down_heal": _compose_action(compose.app_down_heal),
    "compose_bad_deploy_break": _compose_action(compose.bad_deploy_break),
    "compose_bad_deploy_heal": _compose_action(compose.bad_deploy_heal),
    "compose_oom_break": _compose_action(compose.oom_break),
    "compose_oom_heal": _compose_action(compose.oom_heal),
}
MACHINE_CHECKS: dict[str, Callable[[Settings, Fault], bool]] = {
    "oom_active": _oom_active,
    "host_down_active": _host_down_active,
    "host_running": _host_running,
    "compose_app_down_active": _compose_check(compose.app_down_active),
    "compose_bad_deploy_active": _compose_check(compose.bad_deploy_active),
    "compose_oom_active": _compose_check(compose.oom_active),
}
