"""`collect` against the real lab hosts, with both engines: evidence, failures, caps, read-only, ingest."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_lab.lock import lab_lock as hold_lab_lock

from collector.config import load_settings
from collector.inventory import resolve
from collector.times import wait_until
from collector.transport import Payload, Target
from collector.transport.ssh import run as run_ssh

pytestmark = pytest.mark.lab

ENGINES = ("ssh", "ansible")
CODE = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"
ROLE_HOSTS = "app:db:redis"


def collect(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CODE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def collect_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    proc = collect(*args, "--json", env=env)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def manifest(bundle: str | Path) -> dict[str, Any]:
    return json.loads((Path(bundle) / "manifest.json").read_text())


def text(bundle: str | Path, host: str, probe: str) -> str:
    entry = manifest(bundle)["hosts"][host]["probes"][probe]
    return (Path(bundle) / entry["path"]).read_bytes().decode(errors="replace")


def lab_cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from collector_lab.cli import main; sys.argv[0] = 'collector-lab'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module", params=ENGINES)
def full(
    request: pytest.FixtureRequest, lab: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One collection of app/db/redis per engine, holding the lab lock so no fault is half-applied."""
    out = tmp_path_factory.mktemp(f"full-{request.param}")
    with hold_lab_lock():
        rc, summary, _ = collect_json(
            "--hosts",
            ROLE_HOSTS,
            "-i",
            str(lab.inventory),
            "--out",
            str(out),
            "--engine",
            request.param,
            "--since",
            "30m",
        )
    summary["rc"] = rc
    summary["engine_param"] = request.param
    return summary


def test_full_bundle_holds_the_runbook_evidence(full: dict[str, Any], lab: Any) -> None:
    bundle = full["bundle"]
    m = manifest(bundle)
    assert m["engine"] == full["engine_param"]
    assert set(m["hosts"]) == {lab.groups["app"][0], lab.groups["db"][0], lab.groups["redis"][0]}
    app, db, redis = lab.groups["app"][0], lab.groups["db"][0], lab.groups["redis"][0]
    for host in (app, db, redis):
        probes = m["hosts"][host]["probes"]
        assert m["hosts"][host]["status"] != "unreachable"
        for name in ("uptime", "free", "df", "ps_mem", "top", "iostat"):
            assert probes[name]["status"] == "ok", (host, name, probes[name])
        assert "load average" in text(bundle, host, "uptime")
        assert (
            len(probes["uptime"]["sha256"]) == 64 and probes["uptime"]["path"] == f"hosts/{host}/uptime.txt"
        )
    assert m["hosts"][redis]["roles"] == ["redis"]
    assert text(bundle, redis, "redis_ping").strip() == "PONG"
    assert "used_memory:" in text(bundle, redis, "redis_info_memory")
    assert "connected_clients:" in text(bundle, redis, "redis_info_clients")
    assert "maxmemory" in text(bundle, redis, "redis_maxmemory")
    activity = text(bundle, db, "pg_activity")
    assert activity.startswith("pid|usename|datname") and "rows)" in activity and "(0 rows)" not in activity
    assert "max_connections" in text(bundle, db, "pg_connections")
    assert "postgresql" in text(bundle, db, "service_status")
    assert "v1." in text(bundle, app, "deploy_log")  # the release tags of the git-deployed app
    assert (
        "sergas_" in text(bundle, app, "app_metrics")
        or m["hosts"][app]["probes"]["app_metrics"]["status"] != "ok"
    )


def test_postgres_log_holds_the_window_only(lab: Any, tmp_path: Path) -> None:
    """pg_log: a line PostgreSQL logged a moment ago is in; no timestamped line is older than --since."""
    db = lab.groups["db"][0]
    marker = f"collector-marker-{os.getpid()}-{time.time_ns()}"
    logged = lab.host(db).run(
        f"runuser -u postgres -- psql -X -q -d postgres -c \"DO \\$\\$BEGIN RAISE LOG '{marker}'; END\\$\\$\""
    )
    assert logged.rc == 0, logged.stderr
    started = time.time()
    _rc, summary, _ = collect_json(
        "--hosts", db, "-i", str(lab.inventory), "--out", str(tmp_path), "--since", "1m"
    )
    entry = manifest(summary["bundle"])["hosts"][db]["probes"]["pg_log"]
    assert entry["status"] == "ok", entry
    log = text(summary["bundle"], db, "pg_log")
    assert marker in log
    window_start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started - 60 - 5))  # 5 s of clock slack
    stamps = [line[:19] for line in log.splitlines() if line[:4].isdigit() and line[4:5] == "-"]
    assert stamps and min(stamps) >= window_start, (min(stamps), window_start)


def test_bundle_checksums_verify_and_no_lab_secret_is_in_the_archive(full: dict[str, Any], lab: Any) -> None:
    bundle = Path(full["bundle"])
    check = subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    archive = Path(f"{bundle}.tar.gz")
    raw = gzip.decompress(archive.read_bytes())
    secrets = [v for v in lab.secrets.values() if isinstance(v, str) and len(v) >= 6]
    assert secrets, "the lab has no secrets to look for"
    for secret in secrets:
        assert secret.encode() not in raw, "a lab secret leaked into the archive"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.endswith("manifest.json") for n in names) and any(
        n.endswith("redaction.json") for n in names
    )
    digest = Path(f"{archive}.sha256").read_text().split()[0]
    assert digest == hashlib.sha256(archive.read_bytes()).hexdigest()


def _write_inventory(
    lab: Any,
    path: Path,
    extra_hosts: dict[str, dict[str, Any]] | None = None,
    only: str | None = None,
    override: dict[str, Any] | None = None,
) -> Path:
    """A copy of the lab inventory with extra (broken) hosts or overridden host vars."""
    doc = yaml.safe_load(Path(lab.inventory).read_text())
    groups = doc["all"]["children"]["lab"]["children"]
    for group in groups.values():
        for name, hv in list((group.get("hosts") or {}).items()):
            if override and (only is None or name == only):
                hv.update(override)
    if extra_hosts:
        doc["all"]["children"]["broken"] = {"hosts": extra_hosts}
    path.write_text(yaml.safe_dump(doc))
    return path


class _SilentServer:
    """A TCP listener on loopback that accepts and never speaks SSH: a host that hangs at connect."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_unreachable_hosts_are_recorded_and_cost_at_most_the_connect_timeout(
    engine: str, lab: Any, lab_lock: None, tmp_path: Path
) -> None:
    server = _SilentServer()
    key = Path(lab.inventory).parent / "lab_known_hosts"
    common = f"-o UserKnownHostsFile={key} -o StrictHostKeyChecking=yes"
    broken = {
        "refused": {
            "ansible_host": "127.0.0.1",
            "ansible_port": 1,
            "ansible_user": "root",
            "ansible_ssh_common_args": common,
        },
        "hanging": {
            "ansible_host": "127.0.0.1",
            "ansible_port": server.port,
            "ansible_user": "root",
            "ansible_ssh_common_args": common,
        },
    }
    inv = _write_inventory(lab, tmp_path / "inv.yml", extra_hosts=broken)
    try:
        started = time.monotonic()
        rc, summary, _ = collect_json(
            "--hosts",
            f"{lab.groups['redis'][0]}:broken",
            "-i",
            str(inv),
            "--out",
            str(tmp_path / "out"),
            "--engine",
            engine,
            env={"COLLECTOR_CONNECT_TIMEOUT_S": "3"},
        )
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert rc == 1
    m = manifest(summary["bundle"])
    assert m["hosts"]["refused"]["status"] == "unreachable" and m["hosts"]["refused"]["error"]
    assert m["hosts"]["hanging"]["status"] == "unreachable" and m["hosts"]["hanging"]["error"]
    redis = lab.groups["redis"][0]
    assert m["hosts"][redis]["status"] == "ok"
    assert text(summary["bundle"], redis, "redis_ping").strip() == "PONG"
    assert elapsed < 45, f"unreachable hosts cost {elapsed:.1f}s"


def _ssh_accepted_from(lab: Any, host: str, since_epoch: str) -> str:
    """sshd's 'Accepted publickey ... from ADDR' lines on `host` since an epoch (its own clock)."""
    return str(
        lab.host(host)
        .run(f"journalctl --no-pager -o cat -u ssh --since @{since_epoch} | grep Accepted")
        .stdout
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_host_behind_a_proxycommand_is_reached_through_it(engine: str, lab: Any, tmp_path: Path) -> None:
    app, db = lab.groups["app"][0], lab.groups["db"][0]
    checked = f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes"
    via_app = f"ssh -i {lab.key} {checked} -W %h:%p root@{lab.ips[app]}"
    inv = _write_inventory(
        lab,
        tmp_path / "proxy.yml",
        only=db,
        override={"ansible_ssh_common_args": f"{checked} -o 'ProxyCommand={via_app}'"},
    )
    since = lab.host(db).run("date +%s").stdout.strip()
    rc, summary, _ = collect_json(
        "--hosts", db, "-i", str(inv), "--out", str(tmp_path / "a"), "--engine", engine
    )
    m = manifest(summary["bundle"])
    assert rc == 0 and m["hosts"][db]["status"] == "ok", m["hosts"][db]
    accepted = _ssh_accepted_from(lab, db, since)
    assert f"from {lab.ips[app]} " in accepted and f"from {lab.ips[db]} " not in accepted, accepted


def test_proxyjump_hops_and_a_dead_jump_host(lab: Any, tmp_path: Path) -> None:
    """ssh engine: ProxyJump through app1 with the inventory's key and known_hosts; a jump host that
    refuses costs only the hosts behind it."""
    app, db, redis = lab.groups["app"][0], lab.groups["db"][0], lab.groups["redis"][0]
    checked = f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes"
    inv = _write_inventory(
        lab,
        tmp_path / "jump.yml",
        only=db,
        override={"ansible_ssh_common_args": f"{checked} -J root@{lab.ips[app]}"},
    )
    since = lab.host(db).run("date +%s").stdout.strip()
    rc, summary, _ = collect_json("--hosts", db, "-i", str(inv), "--out", str(tmp_path / "a"))
    assert rc == 0 and manifest(summary["bundle"])["hosts"][db]["status"] == "ok"
    assert f"from {lab.ips[app]} " in _ssh_accepted_from(lab, db, since)
    dead = _write_inventory(
        lab,
        tmp_path / "dead.yml",
        only=db,
        override={"ansible_ssh_common_args": f"{checked} -o ProxyJump=root@{lab.ips[app]}:2"},
    )
    rc, summary, _ = collect_json("--hosts", f"{db}:{redis}", "-i", str(dead), "--out", str(tmp_path / "b"))
    m = manifest(summary["bundle"])
    assert rc == 1 and m["hosts"][db]["status"] == "unreachable" and m["hosts"][db]["error"]
    assert m["hosts"][redis]["status"] == "ok"


@pytest.mark.parametrize("engine", ENGINES)
def test_changed_host_key_and_refused_key_are_unreachable_with_the_reason(
    engine: str, lab: Any, tmp_path: Path
) -> None:
    db = lab.groups["db"][0]
    wrong_keys = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other_pub = (tmp_path / "other.pub").read_text().split()
    wrong_keys.write_text(f"{lab.ips[db]} {other_pub[0]} {other_pub[1]}\n")
    inv = _write_inventory(
        lab,
        tmp_path / "hostkey.yml",
        only=db,
        override={
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={wrong_keys} -o StrictHostKeyChecking=yes"
        },
    )
    rc, summary, _ = collect_json(
        "--hosts",
        f"{db}:{lab.groups['redis'][0]}",
        "-i",
        str(inv),
        "--out",
        str(tmp_path / "a"),
        "--engine",
        engine,
    )
    m = manifest(summary["bundle"])
    assert rc == 1 and m["hosts"][db]["status"] == "unreachable"
    assert (
        "host key" in m["hosts"][db]["error"].lower()
        or "REMOTE HOST IDENTIFICATION" in m["hosts"][db]["error"]
    )
    assert m["hosts"][lab.groups["redis"][0]]["status"] == "ok"
    inv2 = _write_inventory(
        lab,
        tmp_path / "badkey.yml",
        only=db,
        override={"ansible_ssh_private_key_file": str(tmp_path / "other")},
    )
    rc, summary, _ = collect_json(
        "--hosts", db, "-i", str(inv2), "--out", str(tmp_path / "b"), "--engine", engine
    )
    m = manifest(summary["bundle"])
    assert rc == 1 and m["hosts"][db]["status"] == "unreachable"
    assert any(w in m["hosts"][db]["error"].lower() for w in ("authentication", "permission denied"))


def _catalogue(tmp_path: Path, probes: list[dict[str, Any]]) -> Path:
    for probe in probes:
        probe.setdefault("description", "test probe")
    path = tmp_path / "probes.yml"
    path.write_text(yaml.safe_dump({"collector_probes": probes}))
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_a_blocked_query_times_out_with_its_output_so_far(
    engine: str, lab: Any, lab_lock: None, tmp_path: Path
) -> None:
    # The lock: its 7-8 s statements land in db1's PostgreSQL log, which the healed-lab triage test reads.
    db = lab.groups["db"][0]
    psql = "runuser -u postgres -- psql -X -A -d {collector_pg_database}"
    catalogue = _catalogue(
        tmp_path,
        [
            {
                "name": "holder",
                "roles": ["db"],
                "timeout_s": 12,
                "command": f"{psql} -c 'SELECT pg_advisory_lock(424242), pg_sleep(8)'",
            },
            {
                "name": "blocked",
                "roles": ["db"],
                "timeout_s": 3,
                "command": f"sleep 1; echo waiting-for-lock; {psql} -c 'SELECT pg_advisory_lock(424242)'",
            },
        ],
    )
    rc, summary, _ = collect_json(
        "--hosts",
        db,
        "-i",
        str(lab.inventory),
        "--out",
        str(tmp_path / "o"),
        "--engine",
        engine,
        "--catalogue",
        str(catalogue),
    )
    probes = manifest(summary["bundle"])["hosts"][db]["probes"]
    assert probes["blocked"]["status"] == "timeout" and probes["blocked"]["rc"] == 124
    assert 2.5 <= probes["blocked"]["duration_s"] < 8
    assert text(summary["bundle"], db, "blocked").startswith("waiting-for-lock\n")
    assert probes["holder"]["status"] == "ok"
    assert rc == 1


def test_the_whole_answer_arrives_even_when_sshd_reports_the_exit_first(lab: Any) -> None:
    """sshd can send the runner's exit status while the last of its stdout is still on its way.

    Reading stopped at the exit status lost the tail about once in 30 host runs (ci: "runner answered
    no JSON (Unterminated string ...)"); the channel's EOF is the end of the answer. 240 host runs here:
    four connections to each lab host at once, twenty times, each answer checked to the byte.
    """
    inv, names = resolve(ROLE_HOSTS, str(lab.inventory))
    command = "head -c 200000 /dev/zero | base64"
    expected = base64.encodebytes(bytes(200000))  # GNU base64's 76-column lines, as the host prints them
    entries = [{"name": f"zeros{i}", "roles": ["all"], "command": command} for i in (1, 2)]
    payload = Payload(entries, since="-10m", cap_bytes=1 << 24, default_timeout_s=30, extra={})
    settings = load_settings(inventory=str(lab.inventory))
    wrong: list[str] = []
    for _ in range(20):
        targets = {f"{n}-{k}": Target(f"{n}-{k}", inv.hosts[n], ("all",)) for n in names for k in range(4)}
        for name, result in run_ssh(targets, payload, settings, lambda *_: None).items():
            outputs = [p.output for p in result.probes]
            if result.status != "ok" or outputs != [expected, expected]:
                wrong.append(f"{name}: {result.status} {result.error or ''}"[:160])
    assert wrong == []


def _children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_one_gib_of_output_is_capped_with_bounded_controller_memory(
    engine: str, lab: Any, tmp_path: Path
) -> None:
    app = lab.groups["app"][0]
    catalogue = _catalogue(
        tmp_path,
        [
            {
                "name": "flood",
                "roles": ["app"],
                "timeout_s": 120,
                "command": "head -c 1073741824 /dev/zero | tr '\\0' 'z'",
            }
        ],
    )
    # A fresh interpreter per run: RUSAGE_CHILDREN's peak then belongs to this collection alone.
    probe_script = (
        "import json, resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'rc': p.returncode, 'out': p.stdout, 'err': p.stderr[-2000:],"
        " 'peak_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            probe_script,
            sys.executable,
            "-c",
            CODE,
            "--hosts",
            app,
            "-i",
            str(lab.inventory),
            "--out",
            str(tmp_path / "o"),
            "--engine",
            engine,
            "--json",
            "--catalogue",
            str(catalogue),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = json.loads(proc.stdout)
    assert report["rc"] == 0, report["out"][-3000:] + report["err"]
    summary = json.loads(report["out"])
    entry = manifest(summary["bundle"])["hosts"][app]["probes"]["flood"]
    assert entry["status"] == "ok" and entry["truncated"] is True
    assert entry.get("output_bytes", entry["bytes"]) == 1 << 30  # what the command produced
    data = (Path(summary["bundle"]) / entry["path"]).read_bytes()
    assert len(data) < 26 * 1024 * 1024 and data.startswith(b"zzzz") and data.endswith(b"zzzz")
    assert b"truncated" in data or b"omitted" in data
    peak_mb = report["peak_kb"] / 1024
    assert peak_mb < 300, f"controller peak RSS {peak_mb:.0f} MB"


STATE_PROBE = (
    "find /etc /opt /root /home /usr /srv /var/tmp -xdev \\( -path /root/.cache -prune \\) -o "
    "-printf '%p %T@ %s\\n' 2>/dev/null | sort | sha256sum; "
    "systemctl list-units --type=service --state=active --no-legend --plain "
    "| awk '{print $1}' | sort | sha256sum"
)


def _host_state(lab: Any, host: str) -> str:
    out = lab.host(host).run(STATE_PROBE)
    assert out.rc == 0, out.stderr
    return str(out.stdout)


@pytest.mark.parametrize("engine", ENGINES)
def test_collection_changes_nothing_on_the_hosts(
    engine: str, lab: Any, lab_lock: None, tmp_path: Path
) -> None:
    hosts = [lab.groups["app"][0], lab.groups["db"][0], lab.groups["redis"][0]]
    before = {h: _host_state(lab, h) for h in hosts}
    _rc, summary, _ = collect_json(
        "--hosts", ROLE_HOSTS, "-i", str(lab.inventory), "--out", str(tmp_path), "--engine", engine
    )
    assert set(summary["hosts"]) == set(hosts)
    after = {h: _host_state(lab, h) for h in hosts}
    assert after == before


def test_collect_playbook_reports_changed_0_even_in_check_mode(lab: Any) -> None:
    from collector.transport.ansible import collect_playbook, run_playbook

    for check in (False, True):
        outcome = run_playbook(
            collect_playbook(),
            str(lab.inventory),
            ROLE_HOSTS,
            {"collector_since": "5m"},
            check=check,
            diff=check,
        )
        assert outcome.rc == 0, outcome.hosts
        assert not any(outcome.stats.get("changed", {}).values())
        assert all(play.status == "ok" and not play.changed for play in outcome.hosts.values())
        assert len(outcome.hosts) == 3


def test_ingest_of_a_plain_ansible_runner_run_equals_collect_engine_ansible(lab: Any, tmp_path: Path) -> None:
    """The scale path: the playbook run elsewhere (plain ansible-runner), the bundle built here."""
    from collector.paths import resource as shipped

    private = tmp_path / "runner"
    private.mkdir()
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(tmp_path / "ah"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "at"),
        "ANSIBLE_PIPELINING": "True",
        "MAX_EVENT_RES": str(1 << 31),
    }  # as the README says: or ansible-runner drops answers over 700 kB
    runner_bin = Path(sys.executable).parent / "ansible-runner"
    proc = subprocess.run(
        [
            str(runner_bin),
            "run",
            str(private),
            "-p",
            str(shipped("playbooks") / "collect.yml"),
            "--inventory",
            str(lab.inventory),
            "--limit",
            ROLE_HOSTS,
            "--ident",
            "elsewhere",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    artifacts = private / "artifacts" / "elsewhere"
    code = "import sys; from collector.cli import main; sys.argv[0] = 'collector'; main()"
    ing = subprocess.run(
        [sys.executable, "-c", code, "ingest", str(artifacts), "--out", str(tmp_path / "ing"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ing.returncode in (0, 1), ing.stderr
    ingested = manifest(json.loads(ing.stdout)["bundle"])
    _, direct_summary, _ = collect_json(
        "--hosts",
        ROLE_HOSTS,
        "-i",
        str(lab.inventory),
        "--out",
        str(tmp_path / "direct"),
        "--engine",
        "ansible",
    )
    direct = manifest(direct_summary["bundle"])
    assert ingested["pattern"] == ROLE_HOSTS and ingested["engine"] == "ansible-ingest"

    def shape(m: dict[str, Any]) -> dict[str, Any]:
        return {
            h: (v["status"], v["roles"], {p: e["status"] for p, e in v["probes"].items()})
            for h, v in m["hosts"].items()
        }

    assert shape(ingested) == shape(direct)
    redis = lab.groups["redis"][0]
    assert text(json.loads(ing.stdout)["bundle"], redis, "redis_ping").strip() == "PONG"
    check = subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=json.loads(ing.stdout)["bundle"], check=False
    )
    assert check.returncode == 0


@pytest.fixture()
def fault(lab: Any, lab_lock: None) -> Iterator[Any]:
    """Break a lab fault for one test and always heal it afterwards (holding the lab lock)."""
    broken: list[str] = []

    def apply(name: str) -> None:
        proc = lab_cli("break", name)
        assert proc.returncode == 0, proc.stderr
        broken.append(name)

    yield apply
    for name in reversed(broken):
        lab_cli("heal", name)


@pytest.mark.destructive
def test_faults_show_up_in_the_bundle(lab: Any, fault: Any, tmp_path: Path) -> None:
    """One break, both engines: the storm's journal errors and the bad deploy's tag are in the evidence."""
    app = lab.groups["app"][0]
    broken_at = int(time.time())  # the hosts share this machine's clock
    fault("error-storm")
    fault("bad-deploy")
    storm = f"journalctl --no-pager --quiet --since @{broken_at} -o cat | grep -cE 'ERROR|FATAL|Traceback'"
    # The storm's errors are in the journal before we collect (what journal_errors and error_summary read).
    assert wait_until(lambda: int(lab.host(app).run(storm).stdout.strip() or 0) >= 3, 30, 0.2)
    for engine in ENGINES:
        _rc, summary, _ = collect_json(
            "--hosts",
            app,
            "-i",
            str(lab.inventory),
            "--out",
            str(tmp_path / engine),
            "--engine",
            engine,
            "--since",
            "10m",
        )
        bundle = summary["bundle"]
        errors = text(bundle, app, "journal_errors") + text(bundle, app, "service_journal")
        assert "ERROR" in errors, engine
        assert text(bundle, app, "error_summary").strip(), f"{engine}: the top-10 error summary is empty"
        log = text(bundle, app, "deploy_log")
        assert "v1.1.0" in log.split("\n\n")[-1], f"{engine}: {log[-300:]}"


@pytest.mark.destructive
def test_a_powered_off_host_is_unreachable_and_the_others_complete(
    lab: Any, fault: Any, tmp_path: Path
) -> None:
    fault("host-down")  # powers off redis1
    redis, db = lab.groups["redis"][0], lab.groups["db"][0]
    for engine in ENGINES:
        started = time.monotonic()
        rc, summary, _ = collect_json(
            "--hosts",
            ROLE_HOSTS,
            "-i",
            str(lab.inventory),
            "--out",
            str(tmp_path / engine),
            "--engine",
            engine,
            env={"COLLECTOR_CONNECT_TIMEOUT_S": "5"},
        )
        elapsed = time.monotonic() - started
        m = manifest(summary["bundle"])
        assert rc == 1 and m["hosts"][redis]["status"] == "unreachable" and m["hosts"][redis]["error"], engine
        assert (
            m["hosts"][db]["status"] in ("ok", "partial")
            and m["hosts"][db]["probes"]["uptime"]["status"] == "ok"
        )
        assert elapsed < 60, f"{engine}: {elapsed:.1f}s with one host down"
