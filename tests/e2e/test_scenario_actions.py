"""The mitigations the scenarios added, on the lab: check mode changes nothing (testinfra looks), the
real run changes what it says, a second run reports no change, and no secret shows in any output.
Each test holds the lab lock and puts the host back as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest

from collector.remediate.actions import get_action, validate_params
from collector.transport.ansible import PlaybookRun, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.destructive]


def _run(lab: Any, action: str, host: str, params: dict[str, str], *, check: bool = False) -> PlaybookRun:
    act = get_action(action)
    extra = act.extravars(validate_params(act, params), host)
    return run_playbook(act.playbook, str(lab.inventory), host, extra, check=check, diff=True)


def _outcome(run: PlaybookRun, host: str) -> tuple[str, bool]:
    play = run.hosts[host]
    assert play.status in ("ok", "changed"), (play.status, play.msg)
    return play.status, play.changed


def _no_secret(lab: Any, *runs: PlaybookRun) -> None:
    text = json.dumps([[(p.msg, p.diffs, p.results) for p in r.hosts.values()] for r in runs], default=str)
    for secret in (s for s in lab.secrets.values() if s and len(s) >= 6):
        assert secret not in text


def test_clean_disk_check_mode_then_apply_then_nothing_left(lab: Any, lab_lock: None, app_host: Any) -> None:
    path = "/var/lib/sergas/exports/e2e-stale.csv"
    app_host.run(f"head -c 1048576 /dev/zero > {path} && chown sergas:sergas {path}")
    params = {"subdir": "exports", "pattern": "e2e-*.csv", "minutes": "0"}
    try:
        checked = _run(lab, "clean-disk", "app1", params, check=True)
        assert _outcome(checked, "app1")[1] is True
        assert app_host.file(path).exists  # check mode only listed it
        assert "e2e-stale.csv" in json.dumps(checked.hosts["app1"].diffs)
        assert _outcome(_run(lab, "clean-disk", "app1", params), "app1")[1] is True
        assert not app_host.file(path).exists
        assert _outcome(_run(lab, "clean-disk", "app1", params), "app1")[1] is False
    finally:
        app_host.run(f"rm -f {path}")


def test_redis_maxmemory_is_honest_idempotent_and_keeps_the_password_out(
    lab: Any, lab_lock: None, redis_host: Any
) -> None:
    def policy() -> str:
        out = redis_host.check_output(
            "REDISCLI_AUTH=\"$(sed -n 's/^requirepass //p' /etc/redis/lab.conf)\" "
            "redis-cli --no-auth-warning CONFIG GET maxmemory-policy"
        )
        return out.splitlines()[-1]

    assert policy() == "noeviction"
    try:
        checked = _run(lab, "redis-maxmemory", "redis1", {"policy": "allkeys-lru"}, check=True)
        assert _outcome(checked, "redis1")[1] is True and policy() == "noeviction"
        applied = _run(lab, "redis-maxmemory", "redis1", {"policy": "allkeys-lru"})
        assert _outcome(applied, "redis1")[1] is True and policy() == "allkeys-lru"
        again = _run(lab, "redis-maxmemory", "redis1", {"policy": "allkeys-lru"})
        assert _outcome(again, "redis1")[1] is False
        _no_secret(lab, checked, applied, again)
    finally:
        back = _run(lab, "redis-maxmemory", "redis1", {"policy": "noeviction"})
        assert back.hosts["redis1"].status in ("ok", "changed") and policy() == "noeviction"


def test_block_client_cuts_one_address_only_and_lifts(lab: Any, lab_lock: None, app_host: Any) -> None:
    probe = (
        "python3 -c \"import http.client as h, sys; c = h.HTTPConnection('127.0.0.1', 8000, timeout=3, "
        "source_address=(sys.argv[1], 0)); c.request('GET', '/health'); print(c.getresponse().status)\" "
    )
    address = {"address": "127.0.0.3"}
    try:
        assert _outcome(_run(lab, "block-client", "app1", address, check=True), "app1")[1] is True
        assert app_host.run(probe + "127.0.0.3").rc == 0  # check mode blocked nothing
        assert _outcome(_run(lab, "block-client", "app1", address), "app1")[1] is True
        assert app_host.run(probe + "127.0.0.3").rc != 0
        assert app_host.run(probe + "127.0.0.1").rc == 0  # the host's own health checks still get through
        assert _outcome(_run(lab, "block-client", "app1", address), "app1")[1] is False
        lifted = _run(lab, "block-client", "app1", {**address, "state": "lifted"})
        assert _outcome(lifted, "app1")[1] is True and app_host.run(probe + "127.0.0.3").rc == 0
    finally:
        app_host.run("ip -4 route del blackhole 127.0.0.3/32 table local 2>/dev/null || true")
