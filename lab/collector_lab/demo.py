"""Play one runbook scenario on the lab for a person to watch, with the very commands an engineer types.

    collector-lab demo error-storm

break the fault → (reproduce the symptom with a little traffic) → collect → read the verdict →
plan the suggested mitigation signed with the lab key of `alice` → approve it signed with the lab key of
`bob` (said loudly: in a real incident a second person does this with their own key) → apply → verify →
show the report's
timeline → heal the fault and undo the mitigation's lab side effects, whatever happened.

The whole run holds the lab lock (/tmp/collector-lab.lock); the commands it starts inherit it.
Plans and bundles go under the working directory, as they would for a person; the audit log is the policy's.
"""

from __future__ import annotations

import datetime as _dt
import json
import random
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.config import Settings, load_settings
from collector.core import UsageError

from collector_lab import hosts, lab_state, load, signers
from collector_lab.lock import lab_lock

REQUESTER = signers.REQUESTER
DEMO_APPROVER = signers.APPROVER
Say = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    """One runbook scenario: the lab fault behind it, the finding triage should name, the action it
    suggests."""

    name: str
    title: str
    fault: str
    finding: str  # rule id of the finding whose mitigation is played
    action: str  # the action that finding suggests
    traffic_s: float = 0.0  # seconds of requests to reproduce the symptom (0: the fault shows by itself)
    traffic_during_collect: bool = False  # keep requests in flight while collecting (blocked queries)
    settle_s: float = 0.0  # let the fault run this long before collecting (an error storm needs to pile up)
    undo: tuple[tuple[str, str], ...] = ()  # (host, shell) to undo the mitigation's lab side effects


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "pool-exhausted",
            "Connection pool exhausted",
            "pool-exhausted",
            "pg-connections-near-max",
            "kill-idle-connections",
        ),
        Scenario(
            "rate-limited",
            "Rate limiting (HTTP 429 from the upstream)",
            "rate-limited",
            "rate-limited",
            "circuit-breaker",
            settle_s=5.0,  # the sync retries twice a second: a handful of 429s
            undo=(
                (
                    "app1",
                    (
                        "curl -fs -o /dev/null -X POST"
                        " http://127.0.0.1:8000/admin/circuit-breaker/zoho/close || true"
                    ),
                ),
            ),
        ),
        Scenario(
            "oom",
            "Out of memory",
            "oom",
            "oom-kill",
            "memory-limit",
            undo=(
                (
                    "app1",
                    (
                        "rm -f /etc/systemd/system/sergas-app.service.d/50-collector-memory.conf && "
                        "systemctl daemon-reload"
                    ),
                ),
            ),
        ),
        Scenario(
            "bad-deploy",
            "Outage by a bad deploy (rollback)",
            "bad-deploy",
            "deploy-before-errors",
            "rollback",
            traffic_s=4.0,
        ),
        Scenario(
            "lock-contention",
            "Lock contention",
            "lock-contention",
            "lock-contention",
            "kill-idle-connections",
            traffic_s=8.0,
            traffic_during_collect=True,
        ),
        Scenario("disk-full", "Disk full", "disk-full", "no-space-logged", "clean-disk", traffic_s=3.0),
        Scenario(
            "redis-memory",
            "Redis memory",
            "redis-memory",
            "redis-near-maxmemory",
            "redis-maxmemory",
            undo=(
                (
                    "redis1",
                    (
                        "REDISCLI_AUTH=\"$(sed -n 's/^requirepass //p' /etc/redis/lab.conf)\" "
                        "redis-cli --no-auth-warning CONFIG SET maxmemory-policy noeviction >/dev/null"
                    ),
                ),
            ),
        ),
        Scenario(
            "error-storm",
            "Error storm (one misbehaving client)",
            "error-storm",
            "error-storm-client",
            "block-client",
            settle_s=6.0,
            undo=(("app1", "ip -4 route del blackhole 127.0.0.2/32 table local 2>/dev/null || true"),),
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`; UsageError listing them otherwise."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UsageError(f"unknown scenario {name!r}; scenarios: {', '.join(SCENARIOS)}") from None


def tool(name: str) -> str:
    """Path of an installed command (`collector`, `collect`, `collector-lab`): beside this Python first,
    else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise UsageError(f"the `{name}` command is not installed (pip install the collector)")
    return found


# ---------------------------------------------------------------------------- lab helpers


def app_base_url(settings: Settings) -> str:
    """http://<app host's bridge IP>:8000 from the lab state (the lab's own host only)."""
    table = lab_state(settings).get("hosts") or {}
    for spec in table.values():
        if spec.get("group") == "app":
            return f"http://{spec['ip']}:8000"
    raise UsageError("the lab has no app host: is it up? (collector-lab status)")


def drive_traffic(
    base_url: str, seconds: float, rps: float = 10.0, workers: int = 8, orders_only: bool = False
) -> dict[int, int]:
    """Bounded requests at the app (orders of random customers, customers): status code → count."""
    count = max(1, int(seconds * rps))
    paths = [
        f"/api/orders?customer_id={random.randint(1, load.CUSTOMERS)}" if orders_only or i % 3 else "/api/customers"
        for i in range(count)
    ]

    def hit(path: str) -> int:
        try:
            with urllib.request.urlopen(base_url + path, timeout=7) as response:  # the lab's own host
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    statuses: dict[int, int] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []
        for path in paths:
            futures.append(pool.submit(hit, path))
            time.sleep(1.0 / rps)
        for future in futures:
            code = future.result()
            statuses[code] = statuses.get(code, 0) + 1
    return statuses


def undo_side_effects(scenario: Scenario, settings: Settings) -> list[str]:
    """Run the scenario's undo steps inside the lab hosts (nsenter: works whatever the network does)."""

    done = []
    for host, script in scenario.undo:
        try:
            res = hosts.run_in(settings, host, ["/bin/bash", "-c", script], timeout=30)
            done.append(f"{host}: undo rc {res.returncode}")
        except Exception as exc:  # noqa: BLE001 - cleanup must go on to the next step
            done.append(f"{host}: undo failed: {type(exc).__name__}: {exc}")
    return done


def pick_mitigation(findings: dict[str, Any], scenario: Scenario) -> dict[str, Any] | None:
    """The scenario's finding and its suggested mitigation (the finding's, else the first suggesting the
    action)."""
    items: list[dict[str, Any]] = findings.get("findings") or []
    for item in items:
        if scenario.finding in (item.get("id"), item.get("rule")) and item.get("mitigation"):
            return item
    for item in items:
        if (item.get("mitigation") or {}).get("action") == scenario.action:
            return item
    return None


def plan_argv(
    mitigation: dict[str, Any], inventory: str, plan: str, bundle: str, requester: str = REQUESTER
) -> list[str]:
    """The `collector remediate ...` argv from a finding's mitigation (the same as its ready command line)."""
    argv = [tool("collector"), "remediate", str(mitigation["action"]), "--hosts", str(mitigation["hosts"])]
    for key, value in (mitigation.get("params") or {}).items():
        argv += ["--param", f"{key}={value}"]
    return argv + [
        "-i",
        inventory,
        "--key",
        str(signers.key_path(requester)),
        "--plan",
        plan,
        "--bundle",
        bundle,
    ]


def journal_since(back_s: float = 5.0) -> str:
    """A `--since` timestamp a few seconds ago, in the form journalctl reads (UTC, space-separated)."""
    return (_dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=back_s)).strftime("%Y-%m-%d %H:%M:%S")


def bundle_path(collect_stdout: str, cwd: Path) -> str:
    """The bundle folder named by collect's `bundle: PATH` line (relative to `cwd`)."""
    for line in collect_stdout.splitlines():
        if line.startswith("bundle: "):
            return str(cwd / line.split(": ", 1)[1].strip())
    raise Step("collect printed no `bundle:` line")


def expected_alerts(mitigation: dict[str, Any]) -> tuple[str, ...]:
    """Alerts the mitigation raises on purpose (an open circuit breaker's), from the action catalogue."""
    from collector.remediate.actions import get_action

    return get_action(str(mitigation["action"])).expected_alerts(mitigation.get("params") or {})


def timeline_section(report_md: str) -> str:
    """The `## Timeline` section of a report.md."""
    start = report_md.find("## Timeline")
    if start < 0:
        return ""
    end = report_md.find("\n## ", start + 5)
    return report_md[start : end if end > 0 else None]


# ---------------------------------------------------------------------------- the show


class Step(RuntimeError):
    """A demo step failed; the message says which."""


def _run(argv: Sequence[str], say: Say, *, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    shown = " ".join(shlex.quote(a if i else Path(a).name) for i, a in enumerate(argv))
    say(f"\n$ {shown}")
    proc = subprocess.run(
        list(argv), cwd=cwd, text=True, capture_output=True, stdin=subprocess.DEVNULL, check=False
    )
    for line in (proc.stdout + proc.stderr).rstrip().splitlines():
        say(f"  {line}")
    if check and proc.returncode != 0:
        raise Step(f"`{shown}` exited {proc.returncode}")
    return proc


def demo(
    name: str,
    settings: Settings | None = None,
    *,
    workdir: str | Path = ".",
    say: Say = print,
    verify_wait_s: float = 75.0,
) -> bool:
    """Play scenario `name` step by step, printing each command first; True when verify passed."""
    scenario = get_scenario(name)
    settings = settings or load_settings()
    inventory = str(hosts.inventory_path(settings))
    cwd = Path(workdir).resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    collector = tool("collector")
    lab_cmd = tool("collector-lab")
    started = time.monotonic()
    say(f"=== scenario {scenario.name}: {scenario.title} (lab fault `{scenario.fault}`) ===")
    say(f"working directory {cwd} (bundles/, plans/)")
    signers.ensure(settings)  # the lab's keys, allowed_signers and policy
    say("waiting for the lab lock (other lab users finish first) ...")
    with lab_lock():
        say("holding the lab lock for the whole run")
        try:
            return _play(scenario, settings, inventory, cwd, collector, lab_cmd, say, verify_wait_s)
        finally:
            say(f"\n--- cleanup: heal the fault{' and undo the mitigation' if scenario.undo else ''} ---")
            _run([lab_cmd, "heal", scenario.fault], say, cwd=cwd, check=False)
            for line in undo_side_effects(scenario, settings):
                say(f"  {line}")
            say(f"=== {scenario.name} took {time.monotonic() - started:.0f} s ===")


def _play(
    scenario: Scenario,
    settings: Settings,
    inventory: str,
    cwd: Path,
    collector: str,
    lab_cmd: str,
    say: Say,
    verify_wait_s: float,
) -> bool:
    since = journal_since()
    say("\n--- 1. something breaks ---")
    _run([lab_cmd, "break", scenario.fault], say, cwd=cwd)
    background: threading.Thread | None = None
    if scenario.settle_s:
        say(f"\n--- the fault runs for {scenario.settle_s:.0f} s (the on-call engineer gets paged) ---")
        time.sleep(scenario.settle_s)
    if scenario.traffic_s:
        base = app_base_url(settings)
        say(f"\n--- users hit the app: {scenario.traffic_s:.0f} s of requests at {base} ---")
        if scenario.traffic_during_collect:
            background = threading.Thread(target=drive_traffic, args=(base, scenario.traffic_s), daemon=True)
            background.start()
            time.sleep(min(3.0, scenario.traffic_s))
        else:
            say(f"  responses: {drive_traffic(base, scenario.traffic_s)}")
    say("\n--- 2. collect the evidence from every lab host at once (triage and report run at the end) ---")
    out = _run([tool("collect"), "--hosts", "lab", "-i", inventory, "--since", since], say, cwd=cwd)
    if background is not None:
        background.join()
    bundle = bundle_path(out.stdout, cwd)
    findings = json.loads((Path(bundle) / "findings.json").read_text())
    say(f"\n--- 3. the verdict: severity {findings.get('severity')} ---")
    _run([collector, "triage", bundle], say, cwd=cwd)
    chosen = pick_mitigation(findings, scenario)
    if chosen is None:
        raise Step(f"triage suggested no mitigation for {scenario.finding}")
    say(
        f"\n--- 4. plan the suggested mitigation of {chosen['id']} as {REQUESTER}"
        " (check mode, nothing changes) ---"
    )
    plan = str(cwd / "plans" / f"{scenario.name}-{int(time.time())}.json")
    _run(plan_argv(chosen["mitigation"], inventory, plan, bundle), say, cwd=cwd)
    say("\n" + "!" * 78)
    say(
        f"!!! APPROVING WITH THE LAB KEY OF `{DEMO_APPROVER}`:"
        " a DEMO identity standing in for your colleague."
    )
    say("!!! In a real incident a second person reads the plan above and runs this command.")
    say("!" * 78)
    _run(
        [collector, "approve", plan, "--key", str(signers.key_path(DEMO_APPROVER, settings)), "--yes"],
        say,
        cwd=cwd,
    )
    say("\n--- 5. apply: canary first, then verify, after-bundle, actions.json, report ---")
    _run(
        [
            collector,
            "remediate",
            "apply",
            plan,
            "--key",
            str(signers.key_path(REQUESTER, settings)),
            "--verify-wait",
            str(verify_wait_s),
        ],
        say,
        cwd=cwd,
        check=False,
    )
    say("\n--- 6. verify on its own: the runbook's step 5 checklist ---")
    allowed = expected_alerts(chosen["mitigation"])
    if allowed:
        say(
            f"  ({', '.join(allowed)} is raised by the mitigation on purpose:"
            " told to verify with --allow-alert)"
        )
    ok = (
        _run(
            [
                collector,
                "verify",
                "--hosts",
                "lab",
                "-i",
                inventory,
                "--wait",
                "30",
                *[arg for alert in allowed for arg in ("--allow-alert", alert)],
            ],
            say,
            cwd=cwd,
            check=False,
        ).returncode
        == 0
    )
    report = Path(bundle) / "report.md"
    say(f"\n--- 7. the report: {report} (and report.html beside it); its timeline ---")
    for line in timeline_section(report.read_text() if report.exists() else "").splitlines():
        say(f"  {line}")
    say(f"\nRESULT: {'RECOVERED (verify passed)' if ok else 'NOT RECOVERED (verify failed)'}")
    return ok
