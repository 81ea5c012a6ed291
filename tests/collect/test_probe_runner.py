"""The on-host probe runner, run for real as the transports run it: `python3 -` with the request on stdin."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from collector.probes import build_request, load_entries, runner_module
from collector.transport import parse_response, runner_script


def run_runner(
    probes: list[dict[str, Any]],
    hostvars: dict[str, Any] | None = None,
    roles: tuple[str, ...] = (),
    *,
    cap: int = 1 << 20,
    timeout: float = 10.0,
) -> dict[str, Any]:
    request = build_request(
        probes, hostvars or {}, roles, since="10m", cap_bytes=cap, default_timeout_s=timeout
    )
    proc = subprocess.run(
        [sys.executable, "-"],
        input=runner_script(request).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    doc["by_name"] = {p["probe"]: p for p in doc["probes"]}
    doc["stderr"] = proc.stderr.decode()
    return doc


def output(result: dict[str, Any]) -> bytes:
    return base64.b64decode(result["output_b64"])


def test_ok_probe_records_rc_output_and_timing() -> None:
    doc = run_runner([{"name": "hello", "command": "echo hello; echo oops >&2"}])
    r = doc["by_name"]["hello"]
    assert r["status"] == "ok" and r["rc"] == 0
    assert output(r) == b"hello\noops\n"
    assert r["bytes"] == 11 and r["truncated"] is False
    assert r["started"].endswith("Z") and r["duration_s"] >= 0
    assert "@@probe hello ok" in doc["stderr"]  # the progress line streaming transports read


def test_timeout_kills_the_whole_process_group_and_keeps_partial_output(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    command = f"echo before-hang; sleep 300 & echo $! > {pidfile}; sleep 300; echo never"
    started = time.monotonic()
    doc = run_runner([{"name": "hang", "command": command, "timeout_s": 1}])
    r = doc["by_name"]["hang"]
    assert time.monotonic() - started < 15
    assert r["status"] == "timeout" and r["rc"] == 124
    assert output(r) == b"before-hang\n"
    assert "timeout" in r["error"]
    background = int(pidfile.read_text())
    time.sleep(0.2)
    assert (
        not Path(f"/proc/{background}").exists()
        or "Z" in Path(f"/proc/{background}/stat").read_text().split()[2]
    )


def test_output_over_the_cap_keeps_head_and_tail_with_a_marker() -> None:
    command = "printf 'HEAD-START'; head -c 3000000 /dev/zero | tr '\\0' 'x'; printf 'TAIL-END'"
    doc = run_runner([{"name": "big", "command": command}], cap=4096)
    r = doc["by_name"]["big"]
    data = output(r)
    assert r["status"] == "ok" and r["truncated"] is True
    assert r["bytes"] == 3000000 + len("HEAD-START") + len("TAIL-END")
    assert data.startswith(b"HEAD-START") and data.endswith(b"TAIL-END")
    assert b"output truncated" in data and b"omitted" in data
    assert len(data) < 4096 + 200


def test_missing_tool_is_not_found_and_126_is_kept_apart(tmp_path: Path) -> None:
    noexec = tmp_path / "script.sh"
    noexec.write_text("#!/bin/sh\necho hi\n")
    noexec.chmod(0o644)
    doc = run_runner(
        [
            {"name": "declared", "command": "nosuch-tool-xyz --flag", "requires": ["nosuch-tool-xyz"]},
            {"name": "undeclared", "command": "nosuch-tool-xyz --flag"},
            {"name": "notexec", "command": str(noexec)},
            {"name": "fails", "command": "echo bad; exit 3"},
            {"name": "allowed", "command": "exit 3", "ok_rc": [0, 3]},
        ]
    )
    by = doc["by_name"]
    assert by["declared"]["status"] == "not_found" and by["declared"]["rc"] == 127
    assert "nosuch-tool-xyz" in by["declared"]["error"]
    assert by["undeclared"]["status"] == "not_found" and by["undeclared"]["rc"] == 127
    assert by["notexec"]["status"] == "failed" and by["notexec"]["rc"] == 126
    assert by["fails"]["status"] == "failed" and by["fails"]["rc"] == 3 and output(by["fails"]) == b"bad\n"
    assert by["allowed"]["status"] == "ok" and by["allowed"]["rc"] == 3


def test_placeholders_are_shell_quoted_and_missing_vars_skip(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"x; touch {marker}"
    doc = run_runner(
        [
            {"name": "quoted", "command": "printf '%s' {collector_thing}"},
            {"name": "missing", "command": "echo {collector_absent}"},
            {"name": "shell_vars", "command": "X=1; echo ${X} %{not_a_var}"},
        ],
        {"collector_thing": hostile},
    )
    by = doc["by_name"]
    assert output(by["quoted"]) == hostile.encode()
    assert not marker.exists()
    assert by["missing"]["status"] == "skipped" and "collector_absent" in by["missing"]["error"]
    assert output(by["shell_vars"]) == b"1 %{not_a_var}\n"


def test_secrets_reach_probes_through_env_not_argv() -> None:
    doc = run_runner(
        [
            {
                "name": "env",
                "command": 'echo "$REDISCLI_AUTH"; ps -o args= -p $$',
                "env": {"REDISCLI_AUTH": "collector_redis_password"},
            }
        ],
        {"collector_redis_password": "s3cr3t-value"},
    )
    text = output(doc["by_name"]["env"]).decode()
    first, argv = text.split("\n", 1)
    assert first == "s3cr3t-value"
    assert "s3cr3t-value" not in argv


def test_non_utf8_output_is_kept_byte_for_byte() -> None:
    doc = run_runner([{"name": "raw", "command": "printf '\\377\\376abc\\000'"}])
    assert output(doc["by_name"]["raw"]) == b"\xff\xfeabc\x00"


def test_probes_run_concurrently_and_by_role() -> None:
    probes = [{"name": f"s{i}", "command": "sleep 1", "roles": ["app"]} for i in range(5)]
    probes.append({"name": "dbonly", "command": "echo db", "roles": ["db"]})
    started = time.monotonic()
    doc = run_runner(probes, roles=("app",))
    assert time.monotonic() - started < 4.5  # five 1 s probes at once, not 5 s in a row
    assert set(doc["by_name"]) == {f"s{i}" for i in range(5)}
    assert doc["roles"] == ["app"]


def test_probes_sharing_a_serial_name_never_overlap_and_keep_their_order() -> None:
    stamp = (
        "python3 -c 'import time; print(time.time())'; sleep 0.4; "
        "python3 -c 'import time; print(time.time())'"
    )
    probes = [
        {"name": "free1", "command": stamp},
        {"name": "pg1", "command": stamp, "serial": "postgres"},
        {"name": "pg2", "command": stamp, "serial": "postgres"},
        {"name": "free2", "command": stamp},
        {"name": "pg3", "command": "exit 3", "serial": "postgres"},
    ]
    doc = run_runner(probes)
    assert [p["probe"] for p in doc["probes"]] == ["free1", "pg1", "pg2", "free2", "pg3"]
    assert doc["by_name"]["pg3"]["status"] == "failed" and doc["by_name"]["pg3"]["rc"] == 3
    spans = {
        n: [float(x) for x in output(doc["by_name"][n]).split()] for n in ("free1", "pg1", "pg2", "free2")
    }
    assert spans["pg1"][1] <= spans["pg2"][0]  # one after the other
    assert (
        spans["free1"][0] < spans["pg1"][1] and spans["pg1"][0] < spans["free1"][1]
    )  # others run beside them


def test_since_becomes_journalctl_relative_form() -> None:
    doc = run_runner([{"name": "since", "command": "echo {since}"}])
    assert output(doc["by_name"]["since"]) == b"-10m\n"


def test_parse_response_turns_the_answer_into_values() -> None:
    doc = run_runner([{"name": "a", "command": "echo a"}, {"name": "b", "command": "exit 4"}])
    doc.pop("by_name")
    doc.pop("stderr")
    result = parse_response("h1", ("app",), json.dumps(doc))
    assert result.status == "partial"
    assert [(p.probe, p.status, p.rc) for p in result.probes] == [("a", "ok", 0), ("b", "failed", 4)]
    assert result.probes[0].output == b"a\n"
    broken = parse_response("h1", (), "Traceback: nope")
    assert broken.status == "failed" and "no JSON" in (broken.error or "")


def test_shipped_catalogue_covers_the_runbook_and_never_looks_like_jinja() -> None:
    entries = load_entries()
    names = {e["name"] for e in entries}
    for needed in (
        "service_status",
        "journal_errors",
        "error_summary",
        "http_5xx_by_path",
        "uptime",
        "top",
        "free",
        "df",
        "iostat",
        "ps_mem",
        "oom_events",
        "deploy_log",
        "app_health",
        "app_metrics",
        "circuit_breaker",
        "pg_connections",
        "pg_long_queries",
        "pg_blocking_locks",
        "pg_idle_in_transaction",
        "pg_db_size",
        "redis_ping",
        "redis_info_memory",
        "redis_info_clients",
        "redis_maxmemory",
    ):
        assert needed in names
    for entry in entries:
        assert "{{" not in entry["command"] and "{%" not in entry["command"], entry["name"]
        assert entry.get("timeout_s") and entry.get("description") and "parser" not in entry
    redis = [e for e in entries if e["name"].startswith("redis_")]
    assert all(e["env"] == {"REDISCLI_AUTH": "collector_redis_password"} for e in redis)
    assert all("password" not in e["command"] for e in redis)


def test_local_catalogue_runs_here_without_errors() -> None:
    """The every-host probes on this machine: each one ok, skipped or not_found, never a crash."""
    doc = run_runner(load_entries(), {}, (), timeout=20)
    statuses = {p["probe"]: p["status"] for p in doc["probes"]}
    assert statuses["uptime"] == "ok" and b"load average" in output(doc["by_name"]["uptime"])
    assert statuses["free"] == "ok" and b"Mem:" in output(doc["by_name"]["free"])
    assert statuses["service_status"] == "skipped"
    assert "pg_connections" not in statuses  # db probes are not for a host without the db role


def test_since_becomes_a_form_journalctl_accepts() -> None:
    journal_since = runner_module().journal_since
    assert journal_since("10m") == "-10m"
    assert journal_since(" 2h ") == "-2h"
    # journalctl rejects ISO 8601's T and Z ("Failed to parse timestamp"), so they are rewritten.
    assert journal_since("2026-11-28T07:00:00Z") == "2026-11-28 07:00:00 UTC"
    assert journal_since("2026-11-28T09:30:00+02:00") == "2026-11-28 07:30:00 UTC"
    assert journal_since("2026-11-28T07:00") == "2026-11-28 07:00:00"
    assert journal_since("yesterday") == "yesterday"


def test_since_utc_is_an_absolute_utc_time_for_log_files() -> None:
    import datetime

    since_utc = runner_module().since_utc
    now = datetime.datetime(2026, 11, 28, 9, 0, 5, tzinfo=datetime.UTC)
    assert since_utc("10m", now) == "2026-11-28 08:50:05"
    assert since_utc(" 2h ", now) == "2026-11-28 07:00:05"
    assert since_utc("1d", now) == "2026-11-27 09:00:05"
    assert since_utc("2026-11-28T09:30:00+02:00") == "2026-11-28 07:30:00"
    assert since_utc("2026-11-28T07:00:00Z") == "2026-11-28 07:00:00"
    assert since_utc("yesterday") is None


def test_an_iso_since_reaches_journalctl_in_its_own_form() -> None:
    request = build_request(
        [{"name": "since", "command": "echo {since}"}],
        {},
        (),
        since="2026-11-28T07:00:00Z",
        cap_bytes=1 << 20,
        default_timeout_s=10,
    )
    proc = subprocess.run(
        [sys.executable, "-"],
        input=runner_script(request).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    (result,) = json.loads(proc.stdout)["probes"]
    assert result["status"] == "ok"
    assert output(result).strip() == b"2026-11-28 07:00:00 UTC"


def _pg_log_lines(tmp_path: Path, monkeypatch: Any, tz: str, lines: list[str]) -> list[str]:
    """The shipped pg_log probe over a log file of `lines`, on a host whose zone is `tz`, --since 10m."""
    monkeypatch.setenv("TZ", tz)  # the runner and its probes inherit it, as on a host in that zone
    (tmp_path / "postgresql-15-main.log").write_text("".join(f"{ln}\n" for ln in lines))
    entry = next(e for e in load_entries() if e["name"] == "pg_log")
    doc = run_runner([entry], {"collector_pg_log_dir": str(tmp_path)}, ("db",))
    assert doc["by_name"]["pg_log"]["status"] == "ok", doc["by_name"]["pg_log"]
    return output(doc["by_name"]["pg_log"]).decode().splitlines()


def _stamp(minutes_ago: int, tz: str) -> str:
    when = dt.datetime.now(ZoneInfo(tz)) - dt.timedelta(minutes=minutes_ago)
    return f"{when:%Y-%m-%d %H:%M:%S}.123 {when:%Z}"


def test_pg_log_keeps_the_window_in_utc_and_in_the_hosts_own_zone(tmp_path: Path, monkeypatch: Any) -> None:
    for tz in (
        "UTC",
        "Asia/Tokyo",
        "America/New_York",
    ):  # UTC+0, +9 (no DST), -5/-4: off by hours if read as UTC
        log = [
            f"{_stamp(40, tz)} [11] LOG:  old {tz}",
            f"{_stamp(2, tz)} [12] FATAL:  new {tz}",
            "\tcontinuation of the new line",
            f"{_stamp(40, 'UTC')} [13] LOG:  old utc",
            f"{_stamp(1, 'UTC')} [14] LOG:  new utc",
        ]
        kept = _pg_log_lines(tmp_path, monkeypatch, tz, log)
        assert kept == [log[1], log[2], log[4]], tz


def test_pg_log_keeps_lines_in_a_zone_it_cannot_convert(tmp_path: Path, monkeypatch: Any) -> None:
    log = ["2020-01-01 00:00:00.000 XYZ [9] LOG:  unknown zone", f"{_stamp(40, 'UTC')} [10] LOG:  old"]
    assert _pg_log_lines(tmp_path, monkeypatch, "UTC", log) == [log[0]]


# ---- placeholders: values never reach the shell's parser ----------------------------------------------

# Each carries `{m}`, the marker file it would create if the shell ran any part of it.
HOSTILE = [
    "$(touch {m})",
    "`touch {m}`",
    "x'; touch {m}; '",
    'x"; touch {m}; "',
    "x\ntouch {m}\n",
    "x; touch {m}",
    "x && touch {m} #",
    "x | touch {m}",
    "*",
    "/*",
    "$HOME${{IFS}}$(touch {m})",
    "a\\",
]
# Tools that would reach beyond this machine or read it as root: stubs that print their argv.
_STUBBED = ("curl", "runuser", "psql", "redis-cli", "systemctl", "journalctl", "git", "iostat", "dmesg")
_BENIGN = {"since": "-10m", "since_utc": "2026-11-28 07:00:00"}


def _placeholders(command: str) -> list[str]:
    return sorted(set(runner_module()._PLACEHOLDER.findall(command)))


def test_hostile_values_in_every_placeholder_of_every_catalogue_entry_run_nothing(tmp_path: Path) -> None:
    """Every catalogue command, each placeholder in turn given each hostile value, run by /bin/sh as the
    runner prepares it: no marker file, and the value reaches its command as one intact argument."""
    import os
    import stat as stat_mod
    from concurrent.futures import ThreadPoolExecutor

    runner = runner_module()
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in _STUBBED:
        stub = stubs / tool
        stub.write_text('#!/bin/sh\nprintf "<%s>" "$@"; echo\n')
        stub.chmod(stub.stat().st_mode | stat_mod.S_IXUSR)
    cases = []
    for entry in load_entries():
        names = _placeholders(entry["command"])
        for name in names:
            for i, pattern in enumerate(HOSTILE):
                marker = tmp_path / f"m-{entry['name']}-{name}-{i}"
                values = {n: _BENIGN.get(n, f"/benign/{n}") for n in names}
                values[name] = pattern.format(m=marker)
                cases.append((entry, name, values, marker))
    assert len({c[0]["name"] for c in cases}) >= 20  # the catalogue's placeholders are all covered

    def run(case: tuple[dict[str, Any], str, dict[str, str], Path]) -> str:
        entry, name, values, marker = case
        command, env, missing, error = runner.prepare(entry["command"], values)
        assert not missing and error is None, (entry["name"], missing, error)
        if len(values[name]) > 3:
            assert values[name] not in command  # the value is never pasted into the command text
        subprocess.run(
            ["/bin/sh", "-c", command],
            env={"PATH": f"{stubs}:/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            timeout=20,
            cwd=tmp_path,
            check=False,
        )
        return f"{entry['name']} {name}: {values[name]!r}" if marker.exists() else ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        ran = [r for r in pool.map(run, cases) if r]
    assert ran == [], ran
    assert not list(tmp_path.glob("m-*"))
    # The check can fail: the same value pasted into pg_log's double-quoted message, shlex-quoted as the
    # runner used to, does run.
    marker = tmp_path / "pasted"
    pasted = f'echo "no log file in {shlex.quote(f"$(touch {marker})")}"'
    subprocess.run(
        ["/bin/sh", "-c", pasted],
        capture_output=True,
        timeout=10,
        env={"PATH": os.environ["PATH"]},
        check=False,
    )
    assert marker.exists()


def test_a_hostile_value_reaches_its_command_as_one_intact_argument(tmp_path: Path) -> None:
    value = "a b\n$(x) `y` 'q' \"d\" ; * \\"
    doc = run_runner(
        [
            {"name": "bare", "command": "printf '<%s>' {collector_v}"},
            {"name": "dq", "command": 'printf "<%s>" "in {collector_v}"'},
            {"name": "glued", "command": "printf '<%s>' pre{collector_v}/post"},
        ],
        {"collector_v": value},
    )
    by = doc["by_name"]
    assert output(by["bare"]).decode() == f"<{value}>"
    assert output(by["dq"]).decode() == f"<in {value}>"
    assert output(by["glued"]).decode() == f"<pre{value}/post>"
    # The manifest's command is self-contained: rerun by hand, it does the same.
    rerun = subprocess.run(
        ["/bin/sh", "-c", by["bare"]["command"]], capture_output=True, text=True, timeout=10, check=False
    )
    assert rerun.stdout == f"<{value}>"


def test_placeholders_inside_single_quotes_or_leading_dashes_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    doc = run_runner(
        [
            {"name": "sq", "command": f"echo '{{collector_v}}'; touch {marker}"},
            {"name": "bq", "command": f"echo `echo {{collector_v}}`; touch {marker}"},
            {"name": "dash", "command": f"ls {{collector_w}}; touch {marker}"},
        ],
        {"collector_v": "x", "collector_w": "-la"},
    )
    by = doc["by_name"]
    assert by["sq"]["status"] == "failed" and "single quotes" in by["sq"]["error"]
    assert by["bq"]["status"] == "failed" and "backquotes" in by["bq"]["error"]
    assert by["dash"]["status"] == "failed" and "collector_w starts with '-'" in by["dash"]["error"]
    assert not marker.exists()


def test_a_catalogue_with_a_placeholder_inside_single_quotes_is_bad_input(tmp_path: Path) -> None:
    import pytest

    from collector.core import UsageError

    path = tmp_path / "probes.yml"
    path.write_text("collector_probes:\n  - {name: x, command: \"echo '{collector_v}'\"}\n")
    with pytest.raises(
        UsageError, match="probe x: catalogue: placeholder .collector_v. inside single quotes"
    ):
        load_entries(path)
