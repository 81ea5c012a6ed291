"""collector.times: one parser for durations and ISO instants, the --since window, and wait_until."""

from __future__ import annotations

import datetime as _dt
import importlib.util
import time
from pathlib import Path
from types import ModuleType

import pytest

from collector.times import (
    find_ctime,
    find_instant,
    instant_or_none,
    iso_z,
    parse_duration,
    parse_instant,
    syslog_time,
    wait_until,
    window_start,
)

UTC = _dt.UTC
NOW = _dt.datetime(2026, 11, 28, 6, 0, 0, tzinfo=UTC)
RUNNER = Path(__file__).resolve().parents[1] / "playbooks" / "files" / "probe_runner.py"


@pytest.mark.parametrize(
    "text, seconds", [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1w", 604800), (" 5 m ", 300)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "m", "10x", "-5m", "1.5h", "10 minutes", "2026-11-28"])
def test_bad_durations_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-11-28T05:00", _dt.datetime(2026, 11, 28, 5, 0, tzinfo=UTC)),  # naive: UTC
        ("2026-11-28T05:00:00Z", _dt.datetime(2026, 11, 28, 5, 0, tzinfo=UTC)),
        ("2026-11-28 05:00:00 UTC", _dt.datetime(2026, 11, 28, 5, 0, tzinfo=UTC)),
        ("2026-11-28T06:00:00+01:00", _dt.datetime(2026, 11, 28, 5, 0, tzinfo=UTC)),
        ("2026-11-28T05:00:00-0500", _dt.datetime(2026, 11, 28, 10, 0, tzinfo=UTC)),
        (
            "2026-11-28T05:00:00.123456789Z",
            _dt.datetime(2026, 11, 28, 5, 0, 0, 123456, tzinfo=UTC),
        ),  # Go's ns
    ],
)
def test_iso_instants_are_aware_utc(text: str, expected: _dt.datetime) -> None:
    parsed = parse_instant(text)
    assert parsed == expected and parsed.utcoffset() == _dt.timedelta(0)


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2026-13-45T05:00", "05:00", "2026-11-28T05:00 junk", "10m"]
)
def test_bad_instants_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_instant_or_none_and_find_instant() -> None:
    assert instant_or_none(None) is None and instant_or_none("") is None and instant_or_none("nope") is None
    assert instant_or_none(0) == _dt.datetime(1970, 1, 1, tzinfo=UTC)
    assert instant_or_none("2026-11-28T05:00:00.000Z") == _dt.datetime(2026, 11, 28, 5, tzinfo=UTC)
    line = "2026-11-28T05:40:03+0000 app1 sergas-app[123]: ERROR boom"
    assert find_instant(line) == _dt.datetime(2026, 11, 28, 5, 40, 3, tzinfo=UTC)
    assert find_instant("no time here") is None
    assert iso_z(_dt.datetime(2026, 11, 28, 6, 0, 0, 5000, tzinfo=UTC)) == "2026-11-28T06:00:00.005Z"


@pytest.mark.parametrize(
    "since, expected",
    [
        ("10m", NOW - _dt.timedelta(minutes=10)),
        ("1d", NOW - _dt.timedelta(days=1)),
        ("2026-11-28T05:30:00Z", _dt.datetime(2026, 11, 28, 5, 30, tzinfo=UTC)),
        ("2026-11-28T05:30", _dt.datetime(2026, 11, 28, 5, 30, tzinfo=UTC)),
    ],
)
def test_window_start_takes_durations_and_iso_times(since: str, expected: _dt.datetime) -> None:
    assert window_start(since, NOW) == expected


def test_window_start_rejects_anything_else() -> None:
    with pytest.raises(ValueError, match="--since 'last tuesday'"):
        window_start("last tuesday", NOW)


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("probe_runner_under_test", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "since",
    [
        "30s",
        "10m",
        "2h",
        "1d",
        "2026-11-28T05:30:00Z",
        "2026-11-28T06:30:00+01:00",
        "2026-11-28T05:30:00.250Z",
        "2026-11-28T06:30:00+0100",
        "2026-11-28 05:30:00 UTC",
        "2026-11-28T05:30:00.123456789Z",
        "2026-11-28T05:30Z",
    ],
)
def test_the_runners_copy_agrees_with_collector_times(since: str) -> None:
    """The on-host runner cannot import the package: its minimal copy must give the same window."""
    runner = _runner()
    expected = window_start(since, NOW).strftime("%Y-%m-%d %H:%M:%S")
    assert runner.since_utc(since, NOW) == expected


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = iter([None, 0, "", "ready", "later"])
    t0 = time.monotonic()
    assert wait_until(lambda: next(calls), timeout_s=5, interval_s=0.01) == "ready"
    assert time.monotonic() - t0 < 1


def test_wait_until_gives_the_last_value_at_the_deadline_and_looks_once_more() -> None:
    clock = [0.0]
    seen: list[float] = []

    def condition() -> list[float]:
        seen.append(clock[0])
        return []

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    assert wait_until(condition, timeout_s=1.0, interval_s=0.3, clock=lambda: clock[0], sleep=sleep) == []
    assert seen == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0])  # the last look is at the deadline


def test_wait_until_with_no_time_looks_once() -> None:
    seen: list[int] = []
    assert wait_until(lambda: seen.append(1), timeout_s=0) is None
    assert seen == [1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[Sat Nov 28 05:35:12 2026] Memory cgroup out of memory",
            _dt.datetime(2026, 11, 28, 5, 35, 12, tzinfo=_dt.UTC),
        ),
        ("Date:   Sat Nov 28 06:35:12 2026 +0100", _dt.datetime(2026, 11, 28, 5, 35, 12, tzinfo=_dt.UTC)),
        ("[Nov  8 05:35:12 2026] no weekday", _dt.datetime(2026, 11, 8, 5, 35, 12, tzinfo=_dt.UTC)),
        ("[Sat Nov 31 05:35:12 2026] no such day", None),
        ("Nov 28 05:35:12 app1 kernel: syslog has no year", None),
    ],
)
def test_find_ctime_is_the_one_reader_of_dmesg_and_git_dates(
    text: str, expected: _dt.datetime | None
) -> None:
    from collector.report.timeline import line_time
    from collector.triage.parsers import parse_time

    assert find_ctime(text) == expected
    assert line_time(text) == expected  # the report's timeline and triage read them alike
    if expected is not None:
        assert parse_time(text) == expected


def test_syslog_time_takes_the_year_it_is_given() -> None:
    from collector.triage.parsers import parse_time

    line = "Nov 28 05:40:01 app1 kernel: x"
    assert (
        syslog_time(line, 2026)
        == _dt.datetime(2026, 11, 28, 5, 40, 1, tzinfo=_dt.UTC)
        == parse_time(line, 2026)
    )
    assert syslog_time("Sat Nov  8 05:40:01 app1", 2025) == _dt.datetime(
        2025, 11, 8, 5, 40, 1, tzinfo=_dt.UTC
    )
    assert syslog_time("Feb 30 05:40:01 app1", 2026) is None and syslog_time("no time", 2026) is None
