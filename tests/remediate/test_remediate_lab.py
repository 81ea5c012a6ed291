"""Mitigations against the lab: each fixes its fault and verify turns green; idempotence; check mode;
refusals change nothing; a failing canary stops the rollout; no secret in plan, diff, log or audit.

Every test holds the lab lock and heals what it broke. Plans and the audit log live in tmp_path; alice
requests and applies, bob approves, each signing with the lab's keys (lab.signers). An approval
authorises one apply, so each re-run for idempotence is approved again.
"""
from __future__ import annotations

import dataclasses
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

    with urllib.request.urlopen(f"{lab.alertmanager_url}/api/v2/alerts?active=true&silenced=false", timeout=5) as r:
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
    policy = dataclasses.replace(load_policy(lab.signers.policy_file), audit_log=str(tmp_path / "audit.jsonl"),
                                 checkpoint_file=str(tmp_path / "checkpoints.log"), restart_min_interval_s=0.0)
    settings = dataclasses.replace(lab.settings, plans_dir=str(tmp_path / "plans"), inventory=str(lab.inventory))
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
    plan = make_plan(action, pattern, params, rs.settings, inventory=inventory or rs.inventory,
                     playbooks_dir=rs.policy.playbooks_dir)
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
    count = ("runuser -u postgres -- psql -XAt -c \"SELECT count(*) FROM pg_stat_activity "
             "WHERE application_name = 'sergas-batch-export'\"")
    with _fault_ctx(lab, "pool-exhausted"):
        held = int(db_host.check_output(count))
        assert held > 5
        path = _plan(rs, "kill-idle-connections", "db", {"minutes": "0", "application": "sergas-batch-export"})
        plan = load_plan(path)
        assert plan.check["db1"]["changed"] and f"-{held} idle" in "".join(plan.diffs["db1"]).replace(" idle\n", " idle")
        assert int(db_host.check_output(count)) >= held - 1  # check mode only counted
        _approve(rs, path)
        result = _apply(rs, path)
        assert "kill_idle_connections_terminated" not in result.hosts["db1"]["msg"] or result.hosts["db1"]["changed"]
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
        f"-DATABASE_POOL_SIZE={original}", f"+DATABASE_POOL_SIZE={original + 5}"]  # no other .env line
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
    signed["statements"][1]["statement"]["expires"] = "2099-01-01T00:00:00.000Z"  # the signature no longer fits
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


def test_memory_limit_is_written_and_shown(lab: Any, rs: RS, app_host: Any) -> None:
    dropin = "/etc/systemd/system/sergas-app.service.d/50-collector-memory.conf"
    try:
        path = _plan(rs, "memory-limit", "app", {"max": "768M"})
        assert not app_host.file(dropin).exists  # check mode wrote nothing
        assert "+MemoryMax=768M" in "".join(load_plan(path).diffs["app1"])
        _approve(rs, path)
        result = _apply(rs, path)
        _assert_fixed(result)
        assert app_host.file(dropin).contains("^MemoryMax=768M$")
        # Only checked as written: the lab's containers accept MemoryMax= but do not enforce it.
        assert app_host.check_output("systemctl show -p MemoryMax --value sergas-app") == str(768 * 2**20)
        assert _changed(_apply(rs, _approve(rs, path))) == []
    finally:
        app_host.run(f"rm -f {dropin} && systemctl daemon-reload && systemctl restart sergas-app")
        app_host.run("for i in $(seq 30); do curl -sf http://127.0.0.1:8000/health >/dev/null && break; sleep 1; done")


def test_extend_cache_ttl_through_the_cli_signed_end_to_end(lab: Any, rs: RS, app_host: Any,
                                                             tmp_path: Path) -> None:
    """The happy path as people type it (system policy = the lab's): request, approve, apply, verify; every
    signature checked by the test with ssh-keygen -Y verify itself."""
    from collector.remediate.policy import POLICY_PATH

    assert lab.signers.installed, f"{POLICY_PATH} is not the lab's policy"
    original = _app_json(app_host, "/admin/config")["CACHE_TTL"]
    env = {"COLLECTOR_PLANS_DIR": rs.plans_dir, "COLLECTOR_INVENTORY": rs.inventory,
           "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    cli = [str(Path(sys.executable).parent / "collector")]
    key = {name: str(lab.signers.key(name)) for name in ("alice", "bob")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli + list(args), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
                              stdin=subprocess.DEVNULL, check=False)

    try:
        planned = run("remediate", "extend-cache-ttl", "--hosts", "app", "--param", f"seconds={original + 60}",
                      "--key", key["alice"], "--as", "alice")
        assert planned.returncode == 0, planned.stderr
        plan_path = planned.stdout.strip().splitlines()[-1]
        assert plan_path.endswith(".json") and Path(tmp_path, plan_path).is_file()
        assert f"+CACHE_TTL={original + 60}" in planned.stdout and "requester alice" in planned.stdout
        assert run("remediate", "apply", plan_path, "--key", key["alice"]).returncode == 2  # not approved yet
        assert _app_json(app_host, "/admin/config")["CACHE_TTL"] == original
        approved = run("approve", plan_path, "--key", key["bob"], "--yes")
        assert approved.returncode == 0, approved.stderr
        assert "approved  by bob (verified key)" in approved.stdout and "action    extend-cache-ttl" in approved.stdout
        allow = [arg for name in _PREEXISTING for arg in ("--allow-alert", name)]
        applied = run("remediate", "apply", plan_path, "--key", key["alice"], "--no-after-bundle", "--verify-wait",
                      str(VERIFY_WAIT_S), *allow)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "APPLIED and VERIFIED" in applied.stdout and "changed=1" in applied.stdout
        assert _app_json(app_host, "/admin/config")["CACHE_TTL"] == original + 60
        head = applied.stdout.split("audit head ")[1].split()[0]
        # Every signature, checked with OpenSSH by the test: request and approval in the plan, apply in the log.
        plan_doc = json.loads(Path(tmp_path, plan_path).read_text())
        records = list(AuditLog(load_policy().audit_log).records())
        start = next(r for r in reversed(records) if r["event"] == "apply-start" and r["plan_id"] == plan_doc["id"])
        signed = [*plan_doc["statements"], start["signed"]]
        assert [s["statement"]["role"] for s in signed] == ["request", "approve", "apply"]
        for item, who in zip(signed, ("alice", "bob", "alice"), strict=True):
            sig = tmp_path / "s.sig"
            sig.write_text(item["signature"])
            message = json.dumps(item["statement"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            done = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(lab.signers.allowed_signers), "-I", who,
                                   "-n", "incident-collector", "-s", str(sig)], input=message.encode(),
                                  capture_output=True, check=False)
            assert done.returncode == 0, done.stderr
            assert item["statement"]["plan_hash"] == plan_doc["hash"]
        again = run("remediate", "apply", plan_path, "--key", key["alice"], "--no-after-bundle")
        assert again.returncode == 2 and "already used" in again.stdout + again.stderr  # one approval, one run
        verified = run("verify", "--hosts", "lab", "--json")
        assert json.loads(verified.stdout)["passed"] is (verified.returncode == 0)
        audit = run("audit", "verify", "--expect", head)
        assert audit.returncode == 0 and "chain intact" in audit.stdout, audit.stdout + audit.stderr
        _secrets_absent(lab, planned.stdout, applied.stdout, again.stdout, approved.stdout)
    finally:
        app_host.run(f"curl -s -X POST -H 'Content-Type: application/json' -d '{{\"CACHE_TTL\": {original}}}' "
                     "http://127.0.0.1:8000/admin/config")


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
        apply_plan(second, limited.settings, signer=limited.signer("alice"), policy=limited.policy,
                   collect_after=False)
    # Re-applying the plan that already ran (approved again) is allowed: its check shows no restart would happen.
    assert _changed(_apply(limited, _approve(limited, first), verify_wait_s=0)) == []




@contextmanager
def _fault_ctx(lab: Any, name: str) -> Iterator[None]:
    yield from _fault(lab, name)
