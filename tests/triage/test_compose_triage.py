"""Compose hosts in triage: the compose probes' outputs parsed and judged, from real captures.

compose_fixtures/ holds what the catalogue's compose probes printed against the lab's Docker Engine 20.10:
`sergas_*` from the lab's compose project `sergas` (its app container unhealthy: Redis out of reach at the
time), `crashloop_*` from a throwaway project `cwtest` run on the same engine (an app container OOM-killed
under a 32 MiB limit and restarted by its policy, a web container that exited 3), its kernel OOM lines
from the machine's dmesg.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from triage_synth import findings_by_rule

from collector.bundle import write_bundle
from collector.config import Settings
from collector.core import HostResult, ProbeResult, RunResult, host_status
from collector.triage import parsers as p
from collector.triage import triage_bundle
from collector.triage.engine import load_rules

FIXTURES = Path(__file__).parent / "compose_fixtures"
HOST = "compose1"
UTC = dt.UTC


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


HEALTHY_JSON = (
    '{"status": "healthy", "version": "1.0.0", "checks": {"database": {"status": "ok"}}}\nHTTP 200 0.004s\n'
)


def compose_probes(**changes: str) -> dict[str, str]:
    """A compose host's probe outputs: the lab's project with its app healthy, then `changes`."""
    healthy = fixture("unhealthy_containers.txt").replace(
        '"health":"unhealthy", "failing_streak":93', '"health":"healthy", "failing_streak":0'
    )
    outputs = {
        "compose_containers": healthy,
        # the start-up lines (the captured app's later /health answers were 503s: Redis was out of reach)
        "compose_logs": "".join(
            ln for ln in fixture("sergas_logs.txt").splitlines(True) if "status=503" not in ln
        ),
        "compose_events": "",
        "compose_stats": fixture("sergas_stats.txt"),
        "compose_images": fixture("sergas_images.txt"),
        "compose_deploy_log": fixture("sergas_v1.0.0_deploy_log.txt"),
        "app_health": HEALTHY_JSON,
        "app_metrics": 'sergas_zoho_circuit_breaker_state{name="zoho"} 0\n',
        "oom_events": "",
    }
    return outputs | changes


def bundle(tmp: Path, outputs: dict[str, str], started: str, since: str = "10m") -> Path:
    """A real bundle (the bundle writer) of one host with the compose role."""
    results = [
        ProbeResult(HOST, name, f"<{name}>", "ok", 0, started, 0.1, text.encode(), len(text.encode()))
        for name, text in outputs.items()
    ]
    run = RunResult(
        incident="inc-compose",
        pattern=HOST,
        inventory="synthetic/no-inventory.yml",
        engine="ssh",
        command_line=["collect", "--hosts", HOST, "--since", since],
        started=started,
        since=since,
        finished=started,
        hosts={HOST: HostResult(HOST, host_status(results), None, results, ("compose",))},
        monitoring=[],
    )
    return write_bundle(run, Settings(), out_dir=tmp, archive=False)


def judged(tmp: Path, outputs: dict[str, str], started: str, since: str = "10m") -> dict[str, Any]:
    return triage_bundle(bundle(tmp, outputs, started, since)).to_dict()


# ------------------------------------------------------------------------------------------ parsers


def test_containers_parse_state_restarts_oom_and_limits() -> None:
    web, app = p.parse_containers(fixture("crashloop_containers.txt"))
    assert (app.name, app.service, app.status, app.restarting, app.oom_killed) == (
        "cwtest_app_1",
        "app",
        "restarting",
        True,
        True,
    )
    assert (app.exit_code, app.restart_count, app.memory_limit, app.restart_policy) == (
        137,
        6,
        32 * 1024**2,
        "unless-stopped",
    )
    assert app.started_at == dt.datetime(2026, 12, 1, 21, 25, 21, 940742, tzinfo=UTC)
    assert app.state == "restarting (137, OOM-killed)" and app.line == 2
    assert app.id.startswith("9f8258d810b8") and len(app.id) == 64
    assert (web.status, web.exit_code, web.health, web.completed) == ("exited", 3, None, False)
    assert web.state == "exited (3)"


def test_containers_parse_health_and_go_zero_time() -> None:
    app, mock = p.parse_containers(fixture("unhealthy_containers.txt"))
    assert (app.health, app.failing_streak, app.state) == ("unhealthy", 93, "running (unhealthy)")
    assert app.finished_at is None  # Go's zero time: never stopped
    assert mock.health is None and mock.service == "zoho-mock"
    assert p.parse_containers("no container of compose project sergas\n") == []


def test_docker_events_parse_actions_exit_codes_and_times() -> None:
    events = p.parse_docker_events(fixture("crashloop_events.txt"))
    actions = [e.action for e in events]
    assert (len(events), actions.count("die"), actions.count("oom"), actions.count("start")) == (20, 6, 5, 7)
    web_die = next(e for e in events if e.action == "die" and e.service == "web")
    assert (web_die.container, web_die.exit_code) == ("cwtest_web_1", 3)
    assert {e.exit_code for e in events if e.action == "die" and e.service == "app"} == {137}
    assert all(e.when and e.when.date() == dt.date(2026, 12, 1) for e in events)
    assert web_die.describe().startswith(
        "2026-12-01T21:25:00Z container die cwtest_web_1 (service web) exitCode=3"
    )


def test_docker_stats_parse_memory_percent() -> None:
    app, mock = p.parse_docker_stats(fixture("sergas_stats.txt"))
    assert (app.name, app.mem_pct, app.mem_usage) == ("sergas_app_1", 8.27, "21.16MiB / 256MiB")
    assert mock.name == "sergas_zoho-mock_1" and mock.cpu_pct == 0.24


# ------------------------------------------------------------------------------------------ rules


def test_healthy_compose_host_passes_every_compose_rule(tmp_path: Path) -> None:
    doc = judged(tmp_path, compose_probes(), "2026-12-01T21:25:00.000Z")
    states = {r["rule"]: r["state"] for r in doc["rules"]}
    compose_rules = {r.id for r in load_rules() if "compose" in r.roles}
    assert {rule: states[rule] for rule in compose_rules} == {rule: "passed" for rule in compose_rules}
    assert not [f for f in doc["findings"] if f["rule"].startswith("compose-")]
    # the systemd rules are not judged on a compose host, nor the compose rules on a systemd one
    assert states["service-inactive"] == "not_applicable"


def test_crash_looping_oom_killed_container_is_live_p1_with_restart_and_memory_limit(tmp_path: Path) -> None:
    outputs = compose_probes(
        compose_containers=fixture("crashloop_containers.txt"),
        compose_events=fixture("crashloop_events.txt"),
        compose_stats=fixture("crashloop_stats.txt"),
        oom_events=fixture("crashloop_oom_events.txt"),
    )
    doc = judged(tmp_path, outputs, "2026-12-01T21:25:30.000Z")
    found = findings_by_rule(doc)
    loop = found["compose-crash-loop"][0]
    assert (loop["severity"], loop["hosts"]) == ("P1", [HOST])
    assert "container cwtest_app_1 (service app) died 6 time(s)" in loop["message"]
    assert "restarting (137, OOM-killed)" in loop["message"]
    assert loop["mitigation"]["command"] == f"collector remediate restart --hosts {HOST}"
    assert [a["action"] for a in loop["alternatives"]] == ["rollback"]
    oom = found["compose-oom-killed"][0]
    assert oom["severity"] == "P2" and "memory limit 32M" in oom["message"]
    assert (oom["mitigation"]["action"], oom["mitigation"]["params"]) == ("memory-limit", {"max": "4G"})
    history = found["compose-oom-history"][0]
    assert (
        "3 OOM kill(s) in the window (the kernel log), the last in container cwtest_app_1"
        in history["message"]
    )
    assert any("Killed process 31678 (python3)" in e["excerpt"] for e in history["evidence"])
    down = found["compose-container-down"][0]  # the web container exited 3 (restart: no): a service down
    assert "container cwtest_web_1 (service web) is exited (3)" in down["message"]
    assert doc["severity"] == "P1" and doc["questions"]["down_or_degraded"]["answer"] != "healthy"


def test_long_after_the_crash_loop_nothing_is_live_and_the_kills_are_out_of_the_window(
    tmp_path: Path,
) -> None:
    outputs = compose_probes(
        compose_containers=fixture("crashloop_containers.txt").replace(
            '"status":"restarting","running":true,"restarting":true',
            '"status":"running","running":true,"restarting":false',
        ),
        compose_events=fixture("crashloop_events.txt"),
        oom_events=fixture("crashloop_oom_events.txt"),
    )
    found = findings_by_rule(judged(tmp_path, outputs, "2026-12-01T21:45:00.000Z", since="10m"))
    assert "compose-crash-loop" not in found  # last start 20 min before the collection: not looping now
    assert "compose-oom-history" not in found  # kills at 21:25, the window starts at 21:35
    assert "compose-oom-killed" in found  # the current instance still carries OOMKilled: live


def test_an_iso_since_window_bounds_the_compose_kills(tmp_path: Path) -> None:
    outputs = compose_probes(
        compose_containers=fixture("crashloop_containers.txt"),
        compose_events=fixture("crashloop_events.txt"),
        oom_events=fixture("crashloop_oom_events.txt"),
    )
    found = findings_by_rule(
        judged(tmp_path, outputs, "2026-12-01T21:25:30.000Z", since="2026-12-01T21:25:16Z")
    )
    assert "2 OOM kill(s) in the window (the kernel log)" in found["compose-oom-history"][0]["message"]


def test_docker_oom_events_count_when_the_kernel_log_is_silent(tmp_path: Path) -> None:
    outputs = compose_probes(
        compose_containers=fixture("crashloop_containers.txt"),
        compose_events=fixture("crashloop_events.txt"),
        oom_events="",
    )
    found = findings_by_rule(judged(tmp_path, outputs, "2026-12-01T21:25:30.000Z"))
    history = found["compose-oom-history"][0]
    assert "5 OOM kill(s) in the window (docker events)" in history["message"]
    assert history["evidence"][0]["excerpt"].startswith("2026-12-01T21:25:")


def test_kills_in_other_containers_are_not_the_projects(tmp_path: Path) -> None:
    other = fixture("crashloop_oom_events.txt").replace(
        "9f8258d810b8649872ca90998a7e50e5a193ae14a0833351dfa4c502b5112f58", "0" * 64
    )
    found = findings_by_rule(judged(tmp_path, compose_probes(oom_events=other), "2026-12-01T21:25:30.000Z"))
    assert "compose-oom-history" not in found


def test_unhealthy_container_and_failing_health_are_p1_restart(tmp_path: Path) -> None:
    unhealthy = '{"status": "unhealthy", "checks": {"redis": {"status": "fail"}}}\nHTTP 503 2.0s\n'
    outputs = compose_probes(compose_containers=fixture("unhealthy_containers.txt"), app_health=unhealthy)
    found = findings_by_rule(judged(tmp_path, outputs, "2026-12-01T21:25:00.000Z"))
    down = found["compose-container-down"][0]
    assert down["severity"] == "P1" and "sergas_app_1 (service app) is running (unhealthy)" in down["message"]
    assert down["mitigation"]["action"] == "restart"
    assert [(a["action"], a["params"]) for a in down["alternatives"]] == [("scale", {"replicas": "2"})]
    assert "failing: redis" in found["compose-app-down"][0]["message"]


def test_no_container_at_all_is_down(tmp_path: Path) -> None:
    outputs = compose_probes(compose_containers="no container of compose project sergas\n")
    found = findings_by_rule(judged(tmp_path, outputs, "2026-12-01T21:25:00.000Z"))
    assert "is no container" in found["compose-container-down"][0]["message"]


def test_release_deployed_before_the_errors_suggests_rolling_back(tmp_path: Path) -> None:
    deploy_log = (
        "5c0ffee 2026-11-28T21:13:13+00:00 Sergas Release Bot (HEAD, tag: v1.1.0) "
        "Release 1.1.0: order discounts\n"
        + fixture("sergas_v1.0.0_deploy_log.txt")
        .replace("(HEAD, tag: v1.0.0)", "(tag: v1.0.0)")
        .replace("\nv1.0.0", "\nv1.1.0")
    )
    # the container was created (up -d --build) at 21:20; the 500s began a minute later
    containers = fixture("unhealthy_containers.txt").replace(
        "2026-12-01T21:13:15.287495944Z", "2026-12-01T21:20:00.5Z"
    )
    errors = "".join(
        f"2026-12-01T21:21:{s:02d}.000000000Z ERROR: GET /api/orders failed: "
        "column o.discount_code does not exist\n"
        f"2026-12-01T21:21:{s:02d}.100000000Z INFO: path=/api/orders status=500 method=GET "
        "duration_ms=3.1 client=10.203.58.1\n"
        for s in range(10, 40, 5)
    )
    outputs = compose_probes(
        compose_deploy_log=deploy_log,
        compose_containers=containers,
        compose_logs=fixture("sergas_logs.txt") + errors,
        app_health=HEALTHY_JSON.replace("1.0.0", "1.1.0"),
    )
    found = findings_by_rule(judged(tmp_path, outputs, "2026-12-01T21:25:00.000Z", since="15m"))
    deploy = found["compose-deploy-before-errors"][0]
    assert deploy["severity"] == "P1"
    assert "v1.1.0 deployed at 2026-12-01T21:20:00.500000+00:00 (the app reports 1.1.0)" in deploy["message"]
    assert "12 errors began 1.2 min later; roll back to the previous release v1.0.0" in deploy["message"]
    assert (deploy["mitigation"]["action"], deploy["mitigation"]["params"]) == ("rollback", {"tag": "v1.0.0"})
    assert any("created 2026-12-01T21:20:00.500000+00:00" in e["excerpt"] for e in deploy["evidence"])


def test_stops_restarts_and_recreations_are_not_a_crash_loop(tmp_path: Path) -> None:
    """The lab's own events: `docker-compose stop`, `restart` (the mitigation) and three `up -d` recreations
    (kill → die → stop each time, new ids) within a minute; the app runs healthy. Nothing crashed."""
    outputs = compose_probes(
        compose_containers=fixture("stopped_recreated_containers.txt"),
        compose_events=fixture("stopped_recreated_events.txt"),
    )
    events = p.parse_docker_events(fixture("stopped_recreated_events.txt"))
    assert [e.action for e in events].count("die") == 4 and len({e.id for e in events}) == 4
    doc = judged(tmp_path, outputs, "2026-12-01T21:52:51.000Z")
    assert {r["rule"]: r["state"] for r in doc["rules"]}["compose-crash-loop"] == "passed"
    # the same dies without a kill before them, all of the instance that still runs: crashes
    current = p.parse_containers(fixture("stopped_recreated_containers.txt"))[0].id
    crashes = "".join(
        ln.replace(e.id, current)
        for ln, e in zip(fixture("stopped_recreated_events.txt").splitlines(True), events, strict=True)
        if e.action != "kill"
    )
    again = compose_probes(
        compose_containers=fixture("stopped_recreated_containers.txt"), compose_events=crashes
    )
    found = findings_by_rule(judged(tmp_path / "2", again, "2026-12-01T21:52:51.000Z"))
    assert "died 4 time(s)" in found["compose-crash-loop"][0]["message"]
