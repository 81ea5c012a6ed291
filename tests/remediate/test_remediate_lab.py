"""Mitigations against the lab: each fixes its fault and verify turns green; idempotence; check mode;
refusals change nothing; a failing canary stops the rollout; no secret in plan, diff, log or audit.

Every test holds the lab lock and heals what it broke. Plans and the audit log live in tmp_path; alice
requests and applies, bob approves, each signing with the lab's keys (lab.signers). An approval
authorises one apply, so each re-run for idempotence is approved again.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.config import Settings
from collector.remediate import Refused
from collector.remediate.apply import ApplyResult, apply_plan
from collector.remediate.approve import approve_plan, request_plan
from collector.remediate.audit import AuditLog
from collector.remediate.plan import load_plan, make_plan
from collector.remediate.policy import Policy, load_policy
from collector.remediate.signing import Signer

pytestmark = [pytest.mark.lab, pytest.mark.destructive, pytest.mark.slow]

VERIFY_WAIT_S = 60.0
# Alerts already firing before a test broke anything (raised by something else): verify does not count
# those. Rate-window alerts whose condition has cleared are verify's own business ("resolving").
_PREEXISTING: tuple[str, ...] = ()


def _active_alerts(lab: Any) -> tuple[str, ...]:
    import urllib.request

    with urllib.request.urlopen(
        f"{lab.alertmanager_url}/api/v2/alerts?active=true&silenced=false", timeout=5
    ) as r:
        return tuple(sorted({a["labels"]["alertname"] for a in json.load(r)}))


@dataclasses.dataclass(frozen=True)
class RS:
    """What one test remediates with: settings, the lab's policy (own audit log), the lab's keys."""

    settings: Settings
    policy: Policy
    lab: Any

    @property
    def plans_dir(self) -> str:
        return self.settings.plans_dir

    @property
    def inventory(self) -> str:
        return self.settings.inventory

    @property
    def audit_log(self) -> str:
        return self.policy.audit_log

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self.policy.audit_log, self.policy.checkpoint_file)

    def signer(self, name: str) -> Signer:
        return Signer(self.lab.signers.key(name), label=name)

    def with_policy(self, **changes: Any) -> RS:
        return dataclasses.replace(self, policy=dataclasses.replace(self.policy, **changes))


@pytest.fixture()
def rs(lab: Any, lab_lock: None, tmp_path: Path) -> RS:
    """Remediate for one test: its own plans dir and audit log, the lab inventory, policy and keys."""
    policy = dataclasses.replace(
        load_policy(lab.signers.policy_file),
        audit_log=str(tmp_path / "audit.jsonl"),
        checkpoint_file=str(tmp_path / "checkpoints.log"),
        restart_min_interval_s=0.0,
    )
    settings = dataclasses.replace(
        lab.settings, plans_dir=str(tmp_path / "plans"), inventory=str(lab.inventory)
    )
    return RS(settings, policy, lab)


@pytest.fixture(autouse=True)
def _baseline(lab: Any, lab_lock: None) -> Iterator[None]:
    """Start from a healthy lab (heal faults another test left behind) and note the alerts already firing."""
    from collector_lab import faults

    global _PREEXISTING
    for name, active in faults.active_faults(lab.settings).items():
        if active:
            try:
                faults.heal_fault(name, lab.settings)
            except faults.FaultError as exc:  # the lab's own heal tests say more; try the mitigation anyway
                print(f"baseline: {exc}")
    _PREEXISTING = _active_alerts(lab)
    yield
    _PREEXISTING = ()


def _plan(rs: RS, action: str, pattern: str, params: dict[str, str], inventory: str | None = None) -> Path:
    plan = make_plan(
        action,
        pattern,
        params,
        rs.settings,
        inventory=inventory or rs.inventory,
        playbooks_dir=rs.policy.playbooks_dir,
    )
    path = Path(rs.plans_dir) / f"{plan.id}.json"
    request_plan(plan, path, rs.signer("alice"), rs.policy, rs.audit)
    return path


def _approve(rs: RS, path: Path, who: str = "bob") -> Path:
    approve_plan(path, rs.signer(who), rs.policy, audit=rs.audit)
    return path


def _apply(rs: RS, path: Path, **kw: Any) -> ApplyResult:
    kw.setdefault("collect_after", False)
    kw.setdefault("verify_wait_s", VERIFY_WAIT_S)
    kw.setdefault("allowed_alerts", _PREEXISTING)
    return apply_plan(path, rs.settings, signer=rs.signer("alice"), policy=rs.policy, **kw)


def _approved(rs: RS, action: str, pattern: str, params: dict[str, str]) -> Path:
    return _approve(rs, _plan(rs, action, pattern, params))


def _failed_checks(result: ApplyResult) -> list[str]:
    return [f"{c.host} {c.name}: {c.detail}" for c in result.checks if not c.passed]


def _assert_fixed(result: ApplyResult) -> None:
    assert result.stopped is None, (result.stopped, result.hosts)
    assert all(h["status"] in ("ok", "changed") for h in result.hosts.values()), result.hosts
    assert result.verified, _failed_checks(result)


def _changed(result: ApplyResult) -> list[str]:
    return [h for h, o in result.hosts.items() if o["changed"]]


def _fault(lab: Any, name: str) -> Iterator[None]:
    from collector_lab import faults

    faults.break_fault(name, lab.settings)
    try:
        yield
    finally:
        faults.heal_fault(name, lab.settings)


def _active(lab: Any, name: str) -> bool:
    from collector_lab import faults

    return faults.is_active(lab.settings, faults.get(name))


def _since(host: Any, service: str) -> str:
    return host.check_output(f"systemctl show -p ActiveEnterTimestamp --value {service}")


def _env_value(host: Any, key: str) -> str:
    return host.check_output(f"grep -E '^{key}=' /opt/sergas/app/.env").split("=", 1)[1]


def _app_json(host: Any, path: str) -> Any:
    return json.loads(host.check_output(f"curl -sS --max-time 5 http://127.0.0.1:8000{path}"))


def _secrets_absent(lab: Any, *texts: str) -> None:
    secrets = [s for s in lab.secrets.values() if s and len(s) >= 6]
    assert secrets
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_restart_fixes_app_down_and_check_mode_changes_nothing(lab: Any, rs: RS, app_host: Any) -> None:
    with _fault_ctx(lab, "app-down"):
        path = _plan(rs, "restart", "app", {})
        plan = load_plan(path)
        assert plan.check["app1"]["changed"] is True
        assert not app_host.service("sergas-app").is_running  # the check run started nothing
        _approve(rs, path)
        result = _apply(rs, path)
        _assert_fixed(result)
        assert _changed(result) == ["app1"] and app_host.service("sergas-app").is_running
        assert not _active(lab, "app-down")
        again = _apply(rs, _approve(rs, path))  # same plan, approved again: the restart is already done
        assert _changed(again) == [] and again.verified


def test_rollback_fixes_bad_deploy_with_the_pinned_previous_tag(lab: Any, rs: RS, app_host: Any) -> None:
    with _fault_ctx(lab, "bad-deploy"):
        path = _plan(rs, "rollback", "app", {})
        plan = load_plan(path)
        assert plan.params["tag"] == "v1.0.0"  # 'previous' resolved while planning and pinned
        assert any("+v1.0.0" in d for d in plan.diffs["app1"])
        assert app_host.check_output("git -C /opt/sergas/app describe --tags --exact-match") == "v1.1.0"
        _approve(rs, path)
        result = _apply(rs, path)
        _assert_fixed(result)
        assert app_host.check_output("git -C /opt/sergas/app describe --tags --exact-match") == "v1.0.0"
        assert not _active(lab, "bad-deploy")
        assert _changed(_apply(rs, _approve(rs, path))) == []


def test_kill_idle_connections_fixes_pool_exhausted(lab: Any, rs: RS, db_host: Any) -> None:
    count = (
        'runuser -u postgres -- psql -XAt -c "SELECT count(*) FROM pg_stat_activity '
        "WHERE application_name = 'sergas-batch-export'\""
    )
    with _fault_ctx(lab, "pool-exhausted"):
        held = int(db_host.check_output(count))
        assert held > 5
        path = _plan(
            rs, "kill-idle-connections", "db", {"minutes": "0", "application": "sergas-batch-export"}
        )
        plan = load_plan(path)
        assert plan.check["db1"]["changed"] and f"-{held} idle" in "".join(plan.diffs["db1"]).replace(
            " idle\n", " idle"
        )
        assert int(db_host.check_output(count)) >= held - 1  # check mode only counted
        _approve(rs, path)
        result = _apply(rs, path)
        assert (
            "kill_idle_connections_terminated" not in result.hosts["db1"]["msg"]
            or result.hosts["db1"]["changed"]
        )
        deadline = time.monotonic() + 20
        while _active(lab, "pool-exhausted") and time.monotonic() < deadline:
            time.sleep(1)  # the leaking job notices its dead connections on its next ping and exits
        assert not _active(lab, "pool-exhausted")
        _assert_fixed(result)
        assert int(db_host.check_output(count)) == 0
        assert _changed(_apply(rs, _approve(rs, path))) == []


def test_rate_limit_and_breaker_close_fix_rate_limited(lab: Any, rs: RS, app_host: Any) -> None:
    with _fault_ctx(lab, "rate-limited"):
        limit = _approved(rs, "rate-limit", "app", {"value": "15"})
        first = _apply(rs, limit, verify_wait_s=0)
        assert _changed(first) == ["app1"]
        assert _app_json(app_host, "/admin/config")["ZOHO_RATE_LIMIT"] == 15
        close = _approved(rs, "circuit-breaker", "app", {"state": "closed"})
        result = _apply(rs, close)
        _assert_fixed(result)
        assert _app_json(app_host, "/admin/circuit-breaker/status")["zoho"]["state"] == "closed"
        assert _changed(_apply(rs, _approve(rs, limit), verify_wait_s=0)) == []
        assert _changed(_apply(rs, _approve(rs, close), verify_wait_s=0)) == []


def test_circuit_breaker_open_is_idempotent_and_its_alert_expected(lab: Any, rs: RS, app_host: Any) -> None:
    try:
        path = _approved(rs, "circuit-breaker", "app", {"state": "open"})
        result = _apply(rs, path)
        _assert_fixed(result)
        status = _app_json(app_host, "/admin/circuit-breaker/status")["zoho"]
        assert status["state"] == "open" and status["forced"] is True
        assert _changed(_apply(rs, _approve(rs, path))) == []
    finally:
        close = _approved(rs, "circuit-breaker", "app", {"state": "closed"})
        _apply(rs, close, verify_wait_s=0)
    assert _app_json(app_host, "/admin/circuit-breaker/status")["zoho"]["state"] == "closed"


def test_pool_resize_refusals_check_mode_apply_and_secrets(lab: Any, rs: RS, app_host: Any) -> None:
    original = int(_env_value(app_host, "DATABASE_POOL_SIZE"))
    env_sum = app_host.check_output("sha256sum /opt/sergas/app/.env")
    started = _since(app_host, "sergas-app")
    path = _plan(rs, "pool-resize", "app", {"size": str(original + 5)})
    plan = load_plan(path)
    diff = "".join(plan.diffs["app1"])
    assert f"-DATABASE_POOL_SIZE={original}" in diff and f"+DATABASE_POOL_SIZE={original + 5}" in diff
    assert [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("---", "+++"))] == [
        f"-DATABASE_POOL_SIZE={original}",
        f"+DATABASE_POOL_SIZE={original + 5}",
    ]  # no other .env line
    # Check mode changed nothing: same file, same process.
    assert app_host.check_output("sha256sum /opt/sergas/app/.env") == env_sum
    assert _since(app_host, "sergas-app") == started

    def refused(target: Path, why: str, policy: Policy = rs.policy) -> None:
        with pytest.raises(Refused, match=why):
            apply_plan(target, rs.settings, signer=rs.signer("alice"), policy=policy, collect_after=False)
        assert app_host.check_output("sha256sum /opt/sergas/app/.env") == env_sum
        assert _since(app_host, "sergas-app") == started

    refused(path, "not approved")
    with pytest.raises(Refused, match="cannot approve"):
        _approve(rs, path, "alice")
    refused(path, "not approved")
    _approve(rs, path)
    refused(path, "expired", dataclasses.replace(rs.policy, approval_ttl_s=0.0))
    tampered = Path(rs.plans_dir) / "tampered.json"
    doc = json.loads(path.read_text())
    doc["params"]["size"] = 1
    tampered.write_text(json.dumps(doc))
    refused(tampered, "modified")
    signed = json.loads(path.read_text())
    signed["statements"][1]["statement"]["expires"] = (
        "2099-01-01T00:00:00.000Z"  # the signature no longer fits
    )
    tampered.write_text(json.dumps(signed))
    refused(tampered, "does not verify")

    try:
        result = _apply(rs, path)
        _assert_fixed(result)
        assert _changed(result) == ["app1"]
        assert int(_env_value(app_host, "DATABASE_POOL_SIZE")) == original + 5
        assert _since(app_host, "sergas-app") != started  # restarted to load it
        assert _changed(_apply(rs, _approve(rs, path))) == []
    finally:
        back = _approved(rs, "pool-resize", "app", {"size": str(original)})
        _apply(rs, back, verify_wait_s=0)
    assert app_host.check_output("sha256sum /opt/sergas/app/.env") == env_sum
    texts = [p.read_text() for p in Path(rs.plans_dir).glob("*.json")] + [Path(rs.audit_log).read_text()]
    _secrets_absent(lab, *texts)
    assert rs.audit.verify().ok


def _unit_times(host: Any, service: str) -> dict[str, float]:
    """When systemd last stopped (InactiveEnter) and started (ActiveEnter) the unit, as Unix times (µs)."""
    out = host.check_output(
        "systemctl show -p InactiveEnterTimestamp -p ActiveEnterTimestamp -p MainPID --timestamp=us+utc "
        + service
    )
    times: dict[str, float] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key == "MainPID":
            times[key] = float(value)
        elif value:
            moment = _dt.datetime.strptime(value.split(" ", 1)[1], "%Y-%m-%d %H:%M:%S.%f UTC")
            times[key] = moment.replace(tzinfo=_dt.UTC).timestamp()
    return times


def test_memory_limit_stops_edits_reloads_and_starts(lab: Any, rs: RS, app_host: Any) -> None:
    """The runbook's order (stop, edit the unit, daemon-reload, start; not a restart after the edit), the
    lab inventory's 1G (the runbook's 4G is more than the lab host has), check mode, idempotence."""
    dropin = "/etc/systemd/system/sergas-app.service.d/50-collector-memory.conf"
    try:
        before = _unit_times(app_host, "sergas-app")
        path = _plan(rs, "memory-limit", "app", {"max": "1G"})
        assert not app_host.file(dropin).exists  # check mode wrote nothing...
        assert _unit_times(app_host, "sergas-app")["MainPID"] == before["MainPID"]  # ...and stopped nothing
        diff = "".join(load_plan(path).diffs["app1"])
        assert "+MemoryLimit=1G" in diff and "+MemoryMax=1G" in diff
        _approve(rs, path)
        result = _apply(rs, path)
        _assert_fixed(result)
        assert app_host.file(dropin).contains("^MemoryLimit=1G$")
        assert app_host.file(dropin).contains("^MemoryMax=1G$")
        # Only checked as written: the lab's containers accept the limit but do not enforce it.
        assert app_host.check_output("systemctl show -p MemoryLimit --value sergas-app") == str(2**30)
        after = _unit_times(app_host, "sergas-app")
        written = float(app_host.check_output(f"stat -c %.6Y {dropin}"))
        # Stopped before the drop-in was written, started after it: a restart after the edit would have
        # stopped the service after the write.
        assert before["ActiveEnterTimestamp"] < after["InactiveEnterTimestamp"] < written
        assert written < after["ActiveEnterTimestamp"] and after["MainPID"] != before["MainPID"]
        again = _apply(rs, _approve(rs, path))
        assert _changed(again) == [] and again.verified, _failed_checks(again)
        assert _unit_times(app_host, "sergas-app") == after  # the second apply stopped nothing
    finally:
        app_host.run(f"rm -f {dropin} && systemctl daemon-reload && systemctl restart sergas-app")
        app_host.run(
            "for i in $(seq 30); do curl -sf http://127.0.0.1:8000/health >/dev/null && break; sleep 1; done"
        )


def test_extend_cache_ttl_sends_the_runbooks_body(lab: Any, rs: RS, app_host: Any) -> None:
    """The runbook's 1800 s as {"ttl": 1800}; the app no longer takes the old {"seconds": N}."""
    original = _app_json(app_host, "/admin/config")["CACHE_TTL"]
    post = "curl -s -o /dev/null -w '%{{http_code}}' -X POST -H 'Content-Type: application/json' -d {} " + (
        "http://127.0.0.1:8000/admin/cache/extend-ttl"
    )
    try:
        if original == 1800:  # start from another value, so the plan has a change to make
            assert app_host.check_output(post.format("'{\"ttl\": 60}'")) == "200"
        path = _plan(rs, "extend-cache-ttl", "app", {})
        assert "+CACHE_TTL=1800" in "".join(load_plan(path).diffs["app1"])
        _approve(rs, path)
        _assert_fixed(_apply(rs, path))
        assert _app_json(app_host, "/admin/config")["CACHE_TTL"] == 1800
        assert app_host.check_output(post.format("'{\"seconds\": 5}'")) == "400"
        assert _app_json(app_host, "/admin/config")["CACHE_TTL"] == 1800
        assert _changed(_apply(rs, _approve(rs, path))) == []
    finally:
        app_host.run(post.format(f"'{{\"ttl\": {original}}}'"))


def test_extend_cache_ttl_through_the_cli_signed_end_to_end(
    lab: Any, rs: RS, app_host: Any, tmp_path: Path
) -> None:
    """The happy path as people type it (system policy = the lab's): request, approve, apply, verify; every
    signature checked by the test with ssh-keygen -Y verify itself."""
    from collector.remediate.policy import POLICY_PATH

    assert lab.signers.installed, f"{POLICY_PATH} is not the lab's policy"
    original = _app_json(app_host, "/admin/config")["CACHE_TTL"]
    env = {
        "COLLECTOR_PLANS_DIR": rs.plans_dir,
        "COLLECTOR_INVENTORY": rs.inventory,
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
    }
    cli = [str(Path(sys.executable).parent / "collector")]
    key = {name: str(lab.signers.key(name)) for name in ("alice", "bob")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli + list(args),
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    try:
        planned = run(
            "remediate",
            "extend-cache-ttl",
            "--hosts",
            "app",
            "--param",
            f"seconds={original + 60}",
            "--key",
            key["alice"],
            "--as",
            "alice",
        )
        assert planned.returncode == 0, planned.stderr
        plan_path = planned.stdout.strip().splitlines()[-1]
        assert plan_path.endswith(".json") and Path(tmp_path, plan_path).is_file()
        assert f"+CACHE_TTL={original + 60}" in planned.stdout and "requester alice" in planned.stdout
        assert run("remediate", "apply", plan_path, "--key", key["alice"]).returncode == 2  # not approved yet
        assert _app_json(app_host, "/admin/config")["CACHE_TTL"] == original
        approved = run("approve", plan_path, "--key", key["bob"], "--yes")
        assert approved.returncode == 0, approved.stderr
        assert (
            "approved  by bob (verified key)" in approved.stdout
            and "action    extend-cache-ttl" in approved.stdout
        )
        allow = [arg for name in _PREEXISTING for arg in ("--allow-alert", name)]
        applied = run(
            "remediate",
            "apply",
            plan_path,
            "--key",
            key["alice"],
            "--no-after-bundle",
            "--verify-wait",
            str(VERIFY_WAIT_S),
            *allow,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "APPLIED and VERIFIED" in applied.stdout and "changed=1" in applied.stdout
        assert _app_json(app_host, "/admin/config")["CACHE_TTL"] == original + 60
        head = applied.stdout.split("audit head ")[1].split()[0]
        # Every signature, checked with OpenSSH by the test: request and approval in the plan, apply in the
        # log.
        plan_doc = json.loads(Path(tmp_path, plan_path).read_text())
        records = list(AuditLog(load_policy().audit_log).records())
        start = next(
            r for r in reversed(records) if r["event"] == "apply-start" and r["plan_id"] == plan_doc["id"]
        )
        signed = [*plan_doc["statements"], start["signed"]]
        assert [s["statement"]["role"] for s in signed] == ["request", "approve", "apply"]
        for item, who in zip(signed, ("alice", "bob", "alice"), strict=True):
            sig = tmp_path / "s.sig"
            sig.write_text(item["signature"])
            message = json.dumps(item["statement"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            done = subprocess.run(
                [
                    "ssh-keygen",
                    "-Y",
                    "verify",
                    "-f",
                    str(lab.signers.allowed_signers),
                    "-I",
                    who,
                    "-n",
                    "incident-collector",
                    "-s",
                    str(sig),
                ],
                input=message.encode(),
                capture_output=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert item["statement"]["plan_hash"] == plan_doc["hash"]
        again = run("remediate", "apply", plan_path, "--key", key["alice"], "--no-after-bundle")
        assert (
            again.returncode == 2 and "already used" in again.stdout + again.stderr
        )  # one approval, one run
        verified = run("verify", "--hosts", "lab", "--json")
        assert json.loads(verified.stdout)["passed"] is (verified.returncode == 0)
        audit = run("audit", "verify", "--expect", head)
        assert audit.returncode == 0 and "chain intact" in audit.stdout, audit.stdout + audit.stderr
        _secrets_absent(lab, planned.stdout, applied.stdout, again.stdout, approved.stdout)
    finally:
        app_host.run(
            f"curl -s -X POST -H 'Content-Type: application/json' -d '{{\"CACHE_TTL\": {original}}}' "
            "http://127.0.0.1:8000/admin/config"
        )


def test_a_failing_canary_stops_the_rollout(lab: Any, rs: RS, app_host: Any, tmp_path: Path) -> None:
    doc = yaml.safe_load(Path(rs.inventory).read_text())
    app_hosts = doc["all"]["children"]["lab"]["children"]["app"]["hosts"]
    canary = dict(app_hosts["app1"], collector_env_file="/nonexistent/.env")
    doc["all"]["children"]["lab"]["children"]["app"]["hosts"] = {"app1-canary": canary, **app_hosts}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    env_sum = app_host.check_output("sha256sum /opt/sergas/app/.env")
    original = int(_env_value(app_host, "DATABASE_POOL_SIZE"))
    path = _plan(rs, "pool-resize", "app", {"size": str(original + 3)}, inventory=str(inventory))
    plan = load_plan(path)
    assert plan.targets == ["app1-canary", "app1"] and plan.failed_hosts == ["app1-canary"]
    _approve(rs, path)
    result = _apply(rs, path, verify_wait_s=0)
    assert result.hosts["app1-canary"]["status"] == "failed"
    assert result.hosts["app1"]["status"] == "not-run"
    assert result.stopped and "canary failed" in result.stopped
    assert app_host.check_output("sha256sum /opt/sergas/app/.env") == env_sum
    events = [r["event"] for r in AuditLog(rs.audit_log).records()]
    assert "apply-stopped" in events and events.count("apply-host") == 1


def test_restarts_are_rate_limited_per_host(lab: Any, rs: RS) -> None:
    limited = rs.with_policy(restart_min_interval_s=600.0)
    first = _approved(limited, "restart", "app", {})
    assert _changed(_apply(limited, first, verify_wait_s=30)) == ["app1"]
    second = _approved(limited, "restart", "app", {})
    with pytest.raises(Refused, match="minimum interval"):
        apply_plan(
            second,
            limited.settings,
            signer=limited.signer("alice"),
            policy=limited.policy,
            collect_after=False,
        )
    # Re-applying the plan that already ran (approved again) is allowed: its check shows no restart would
    # happen.
    assert _changed(_apply(limited, _approve(limited, first), verify_wait_s=0)) == []


@contextmanager
def _fault_ctx(lab: Any, name: str) -> Iterator[None]:
    yield from _fault(lab, name)


# ---- issue 13: approvals that prove who approved, bound to exactly what runs ------------------------------


def _host_state(host: Any) -> tuple[str, str, str]:
    """The app's MainPID, its .env and the deployed release: a refused apply changes none of them."""
    release = host.run("cat /opt/sergas/app/VERSION; git -C /opt/sergas/app rev-parse HEAD").stdout
    return (
        host.check_output("systemctl show -p MainPID --value sergas-app"),
        host.check_output("sha256sum /opt/sergas/app/.env"),
        release,
    )


def _refused(
    rs: RS, path: Path, match: str, app_host: Any, state: tuple[str, str, str], who: str = "alice"
) -> None:
    with pytest.raises(Refused, match=match):
        apply_plan(path, rs.settings, signer=rs.signer(who), policy=rs.policy, collect_after=False)
    assert _host_state(app_host) == state


def _forge(rs: RS, path: Path, key: str, out: Path, *, into_log: bool) -> Path:
    """An approval 'by bob' signed with `key`, written by hand into a copy of the plan and into the audit
    log."""
    from collector.core import Signed
    from collector.remediate.approve import new_statement

    plan = load_plan(path)
    statement = new_statement("approve", plan, expires="2099-01-01T00:00:00.000Z")
    signed = Signed(statement, rs.signer(key).sign(statement.message()), "bob").to_dict()
    doc = json.loads(path.read_text())
    doc["statements"].append(signed)
    out.write_text(json.dumps(doc))
    if into_log:
        rs.audit.append(
            "approve", actor="bob", plan_id=plan.id, plan_hash=plan.hash, approver="bob", signed=signed
        )
    return out


def test_identity_refusals_change_nothing_on_the_host(
    lab: Any, rs: RS, app_host: Any, tmp_path: Path
) -> None:
    from collector.remediate.signing import SignatureError

    state = _host_state(app_host)
    original = int(_env_value(app_host, "DATABASE_POOL_SIZE"))
    path = _plan(rs, "pool-resize", "app", {"size": str(original + 5)})
    # Self-approval under another name: the key says alice, whatever the label.
    with pytest.raises(SignatureError, match="--as bob does not match the key's principal alice"):
        approve_plan(path, rs.signer("alice"), rs.policy, audit=rs.audit, as_name="bob")
    with pytest.raises(Refused, match="alice requested this plan and cannot approve it"):
        _approve(rs, path, "alice")
    # A key nobody listed signs nothing, neither an approval nor an apply.
    with pytest.raises(SignatureError, match="not in allowed_signers"):
        _approve(rs, path, "mallory")
    assert len(load_plan(path).statements) == 1
    _refused(rs, path, "is not approved", app_host, state)
    # Forged approvals written by hand, with mallory's key and with alice's own key claiming to be bob: into
    # the plan and the audit log (the log's signature check fails), or into the plan alone (the approval's
    # does).
    clean = Path(rs.audit_log).read_text()
    for key in ("mallory", "alice"):
        for into_log in (True, False):
            copy = rs.with_policy(
                audit_log=str(tmp_path / f"audit-{key}-{into_log}.jsonl"),
                checkpoint_file=str(tmp_path / f"cp-{key}-{into_log}.log"),
            )
            Path(copy.audit_log).write_text(clean)
            forged = _forge(copy, path, key, tmp_path / f"forged-{key}.json", into_log=into_log)
            _refused(
                copy,
                forged,
                "audit log .* does not verify" if into_log else "not in allowed_signers|its own requester",
                app_host,
                state,
            )
    # Revived expiry: a 1-second approval runs out; editing its expiry breaks its signature.
    approve_plan(path, rs.signer("bob"), rs.policy, audit=rs.audit, ttl_s=1.0)
    time.sleep(1.2)
    _refused(rs, path, "expired", app_host, state)
    doc = json.loads(path.read_text())
    doc["statements"][-1]["statement"]["expires"] = "2099-01-01T00:00:00.000Z"
    path.write_text(json.dumps(doc))
    _refused(rs, path, "signature does not verify", app_host, state)
    events = [r["event"] for r in rs.audit.records()]
    assert events.count("apply-refused") >= 3 and "approve-refused" in events


def test_edits_after_approval_are_refused_naming_what_changed(
    lab: Any, rs: RS, app_host: Any, db_host: Any, tmp_path: Path
) -> None:
    import shutil

    from collector.paths import resource

    state = _host_state(app_host)
    db_pid = db_host.check_output("systemctl show -p MainPID --value postgresql")
    original = int(_env_value(app_host, "DATABASE_POOL_SIZE"))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(Path(rs.inventory).read_text())
    books = tmp_path / "playbooks"
    shutil.copytree(resource("playbooks"), books)
    own = rs.with_policy(playbooks_dir=str(books))
    path = _approve(
        own, _plan(own, "pool-resize", "app", {"size": str(original + 5)}, inventory=str(inventory))
    )
    text = inventory.read_text()
    doc = yaml.safe_load(text)
    app1 = doc["all"]["children"]["lab"]["children"]["app"]["hosts"]["app1"]
    edits = {
        "ansible_host": dict(app1, ansible_host=lab.ips["db1"]),  # the same playbook would have run on db1
        "ProxyCommand": dict(
            app1,
            ansible_ssh_common_args=str(app1.get("ansible_ssh_common_args", ""))
            + f" -o ProxyCommand='touch {tmp_path}/proxied; nc %h %p'",
        ),
        "collector_env_file": dict(app1, collector_env_file="/opt/sergas/app/.env.other"),
    }
    for name, changed in edits.items():
        doc["all"]["children"]["lab"]["children"]["app"]["hosts"]["app1"] = changed
        inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        _refused(
            own,
            path,
            r"changed since the plan was approved: inventory file .* changed; "
            r"connection/collector_\* variables of app1 changed",
            app_host,
            state,
        )
        assert not (tmp_path / "proxied").exists(), name
    inventory.write_text(text)
    assert db_host.check_output("systemctl show -p MainPID --value postgresql") == db_pid
    book = books / "remediate" / "pool-resize.yml"
    kept = book.read_text()
    book.write_text(kept.replace("Ensure", "Make sure", 1))
    _refused(own, path, "playbook file remediate/pool-resize.yml changed", app_host, state)
    book.write_text(kept)
    task = books / "remediate" / "tasks" / "wait_healthy.yml"
    task.write_text(task.read_text() + "\n")
    _refused(own, path, "playbook file remediate/tasks/wait_healthy.yml changed", app_host, state)
    assert [r["kind"] for r in own.audit.records() if r["event"] == "apply-refused"] == ["changed-plan"] * 5


def test_jinja_in_a_parameter_never_runs_on_the_controller(
    lab: Any, rs: RS, app_host: Any, tmp_path: Path
) -> None:
    from collector.core import UsageError

    marker = tmp_path / "marker"
    state = _host_state(app_host)
    with pytest.raises(UsageError, match="Jinja template marker"):
        _plan(rs, "memory-limit", "app", {"max": f"{{{{ lookup('pipe', 'touch {marker}') }}}}"})
    # Written into an approved plan by hand (hash recomputed): the signatures name the old content.
    path = _approved(rs, "memory-limit", "app", {"max": "768M"})
    doc = json.loads(path.read_text())
    doc["params"]["max"] = f"{{{{ lookup('pipe', 'touch {marker}') }}}}"
    plan = load_plan(path)
    plan.params = doc["params"]
    plan.hash = plan.compute_hash()
    from collector.remediate.plan import save_plan

    save_plan(plan, path)
    _refused(rs, path, "parameters no longer validate: .*Jinja", app_host, state)
    assert not marker.exists()


def test_an_approval_runs_once_and_two_concurrent_applies_restart_once(
    lab: Any, rs: RS, app_host: Any, tmp_path: Path
) -> None:
    """Two `collector remediate apply` of one approved restart plan at once: one runs, one is refused."""
    from collector.remediate.apply import locks_dir, plan_lock

    assert lab.signers.installed
    system = load_policy()
    env = {
        "COLLECTOR_PLANS_DIR": str(tmp_path / "plans"),
        "COLLECTOR_INVENTORY": rs.inventory,
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
    }
    cli = str(Path(sys.executable).parent / "collector")
    planned = subprocess.run(
        [cli, "remediate", "restart", "--hosts", "app", "--key", str(lab.signers.key("alice"))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert planned.returncode == 0, planned.stderr
    path = planned.stdout.strip().splitlines()[-1]
    approved = subprocess.run(
        [cli, "approve", path, "--key", str(lab.signers.key("bob")), "--yes"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert approved.returncode == 0, approved.stderr
    plan = load_plan(Path(tmp_path, path))
    # The lock names its holder (held here by the test, standing in for carol's apply).
    state = _host_state(app_host)
    with plan_lock(
        locks_dir(system), plan.hash, {"principal": "carol", "pid": 4242, "host": "ctl", "since": "now"}
    ):
        held = subprocess.run(
            [cli, "remediate", "apply", path, "--key", str(lab.signers.key("alice"))],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
    assert held.returncode == 2 and "is being applied by carol (pid 4242 on ctl" in held.stderr + held.stdout
    assert _host_state(app_host) == state
    since = app_host.check_output("date +%s")
    procs = [
        subprocess.Popen(
            [
                cli,
                "remediate",
                "apply",
                path,
                "--key",
                str(lab.signers.key(who)),
                "--no-after-bundle",
                "--verify-wait",
                "30",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for who in ("alice", "bob")
    ]
    outs = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = [rc for rc, _, _ in outs]
    assert codes.count(2) == 1 and set(codes) - {2} <= {0, 1}, (
        outs
    )  # one ran (1: verify disagreed), one refused
    loser = next(out + err for rc, out, err in outs if rc == 2)
    assert "is being applied by" in loser or "already used" in loser, loser
    starts = app_host.check_output(
        f"journalctl -u sergas-app --since @{since} -o cat | grep -c '^Started' || true"
    )
    assert starts == "1", starts
    records = [r for r in AuditLog(system.audit_log).records() if r.get("plan_hash") == plan.hash]
    assert [r["event"] for r in records].count("apply-start") == 1
    assert sum(1 for r in records if r["event"] == "apply-host" and r.get("restarted")) == 1
    # And the approval is spent: a third apply is refused, the app is not restarted again.
    state = _host_state(app_host)
    third = subprocess.run(
        [cli, "remediate", "apply", path, "--key", str(lab.signers.key("alice"))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert third.returncode == 2 and "already used" in third.stderr + third.stdout
    assert _host_state(app_host) == state


def test_audit_tampering_is_caught_and_a_loosened_limit_has_no_effect(
    lab: Any, rs: RS, app_host: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collector.config import load_settings
    from collector.remediate.audit import GENESIS, record_hash
    from collector.remediate.signing import Verifier

    done = _approved(rs, "restart", "app", {})
    result = _apply(rs, done, verify_wait_s=30)
    assert _changed(result) == ["app1"] and result.audit_head
    head = rs.audit.head()
    verifier = Verifier(rs.policy.signers_path())
    assert rs.audit.verify(verifier=verifier, expect=head).ok
    # A limit loosened through the environment has no effect: the policy's 600 s restart interval holds.
    monkeypatch.setenv("COLLECTOR_RESTART_MIN_INTERVAL_S", "0")
    monkeypatch.setenv("COLLECTOR_BLAST_RADIUS", "1000")
    monkeypatch.setenv("COLLECTOR_AUDIT_LOG", str(tmp_path / "elsewhere.jsonl"))
    loose = dataclasses.replace(
        rs.with_policy(restart_min_interval_s=600.0),
        settings=dataclasses.replace(load_settings(), plans_dir=rs.plans_dir, inventory=rs.inventory),
    )
    again = _approve(loose, _plan(loose, "restart", "app", {}))
    state = _host_state(app_host)
    _refused(loose, again, "minimum interval", app_host, state)
    radius = dataclasses.replace(loose, policy=dataclasses.replace(loose.policy, blast_radius=0))
    _refused(radius, again, "more than the blast-radius limit of 0", app_host, state)
    assert not (tmp_path / "elsewhere.jsonl").exists()
    monkeypatch.delenv("COLLECTOR_AUDIT_LOG")
    head = rs.audit.head()
    assert rs.audit.verify(verifier=verifier, expect=head).ok
    full = Path(rs.audit_log).read_text()
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    cli = str(Path(sys.executable).parent / "collector")

    def audit_verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cli, "audit", "verify", "--log", rs.audit_log, "--expect", head],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    # Tail truncation: the last records cut off; apply refuses (the checkpoint file saw them), verify names
    # it.
    Path(rs.audit_log).write_text("".join(full.splitlines(keepends=True)[:-3]))
    cut = audit_verify()
    assert cut.returncode == 1 and "tail was cut off" in cut.stdout, cut.stdout + cut.stderr
    _refused(rs, again, "audit log .* does not verify: head .*checkpoint", app_host, state)
    # A whole-log rewrite with a recomputed chain: apply-host "changed" flipped, every hash redone.
    records = [json.loads(line) for line in full.splitlines() if line.strip()]
    prev, lines = GENESIS, []
    for record in records:
        if record["event"] == "apply-host":
            record["changed"], record["status"] = False, "ok"
        record["prev"] = prev
        record["hash"] = record_hash(record)
        prev = record["hash"]
        lines.append(json.dumps(record, sort_keys=True))
    Path(rs.audit_log).write_text("\n".join(lines) + "\n")
    assert AuditLog(rs.audit_log).verify().ok  # the chain alone is fooled
    rewritten = audit_verify()
    assert rewritten.returncode == 1 and "apply vouched for" in rewritten.stdout, rewritten.stdout
    assert "vouched for" in AuditLog(rs.audit_log).verify(verifier=verifier).reason
    assert "(--expect) is not in the log" in AuditLog(rs.audit_log).verify(expect=head).reason
    assert _host_state(app_host) == state
