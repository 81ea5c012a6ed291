"""Time in one place: durations (`30s`, `10m`, `2h`, `1d`, `1w`), ISO 8601 and ctime instants, the `--since`
window, and polling a condition until a deadline.

Every instant this module returns is timezone-aware UTC. A naive ISO time is taken as UTC (the
collector's own clock and the lab's hosts run UTC; bundles record UTC). The on-host probe runner
(playbooks/files/probe_runner.py) cannot import this package and keeps a minimal copy of the
duration and ISO rules; tests/test_times.py checks that both agree.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
# An ISO 8601 instant anywhere in a text: date, T or space, time, optional fraction (any digits,
# e.g. Go's nanoseconds) and an optional zone (Z, UTC, +HH:MM or +HHMM).
_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?P<frac>[.,]\d+)?"
    r"\s?(?P<tz>Z|UTC|[+-]\d{2}:?\d{2})?(?![\d:])"
)


def parse_duration(text: str) -> float:
    """Seconds in a duration like `30s`, `10m`, `2h`, `1d`, `1w`; anything else → ValueError."""
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f"not a duration (like 30s, 10m, 2h, 1d): {text!r}")
    return float(int(match.group(1)) * UNIT_SECONDS[match.group(2)])


def is_duration(text: str) -> bool:
    """True for `10m`-style durations."""
    return _DURATION.match(str(text)) is not None


def _from_match(match: re.Match[str]) -> _dt.datetime:
    frac = (match.group("frac") or "").replace(",", ".")[:7]  # fromisoformat takes at most microseconds
    tz = match.group("tz") or "+00:00"
    if tz in ("Z", "UTC"):
        tz = "+00:00"
    elif ":" not in tz:
        tz = f"{tz[:3]}:{tz[3:]}"
    parsed = _dt.datetime.fromisoformat(f"{match.group('date')}T{match.group('time')}{frac}{tz}")
    return parsed.astimezone(_dt.UTC)


def parse_instant(text: str) -> _dt.datetime:
    """An ISO 8601 instant (`2026-11-28T05:00`, `...Z`, `+01:00`, nanoseconds) as aware UTC, or ValueError."""
    stripped = str(text).strip()
    match = _ISO.fullmatch(stripped)
    if match is None:
        raise ValueError(f"not an ISO 8601 time (like 2026-11-28T05:00:00Z): {text!r}")
    return _from_match(match)


def instant_or_none(value: object) -> _dt.datetime | None:
    """parse_instant for values that may be missing or bad (manifest fields, records): None then.

    Epoch seconds (int or float) are instants too.
    """
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _dt.datetime.fromtimestamp(float(value), _dt.UTC)
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
    try:
        return parse_instant(str(value))
    except ValueError:
        return None


def find_instant(text: str) -> _dt.datetime | None:
    """The first ISO 8601 instant inside a text (a log line, a git log entry), or None."""
    match = _ISO.search(text)
    if match is None:
        return None
    try:
        return _from_match(match)
    except ValueError:  # 2026-13-45: looks like a date, is not one
        return None


# ctime's form, as `dmesg -T` and git's default date print it: `Sat Nov 28 05:57:10 2026`, git adding `+0100`.
_CTIME = re.compile(
    r"(?:[A-Z][a-z]{2} )?(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<clock>\d{2}:\d{2}:\d{2}) "
    r"(?P<year>\d{4})"
    r"(?: (?P<zone>[+-]\d{4}))?"
)
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


def find_ctime(text: str) -> _dt.datetime | None:
    """The first ctime-style instant inside a text, or None; without a zone it is UTC (dmesg -T prints
    local time, and the hosts here run UTC)."""
    for match in _CTIME.finditer(text):
        month = _MONTHS.get(match["mon"])
        if month is None:
            continue
        stamp = (
            f"{match['year']}-{month:02d}-{int(match['day']):02d} {match['clock']} "
            f"{match['zone'] or '+0000'}"
        )
        try:
            return _dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S %z").astimezone(_dt.UTC)
        except ValueError:  # Nov 31: looks like a date, is not one
            return None
    return None


# nginx's two stamps: the access log's [$time_local] `[01/Dec/2026:21:05:33 +0000]` (Common Log Format), and
# the error log's `2026/12/01 21:05:33` at the start of a line (local time, no zone: UTC, as for dmesg -T).
_NGINX_ACCESS = re.compile(
    r"\[(?P<day>\d{2})/(?P<mon>[A-Z][a-z]{2})/(?P<year>\d{4}):(?P<clock>\d{2}:\d{2}:\d{2}) "
    r"(?P<zone>[+-]\d{4})\]"
)
_NGINX_ERROR = re.compile(r"^(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2}) (?P<clock>\d{2}:\d{2}:\d{2}) ")


def find_nginx_time(text: str) -> _dt.datetime | None:
    """The stamp of an nginx access-log ([$time_local]) or error-log line, as UTC; else None."""
    match = _NGINX_ACCESS.search(text)
    if match is not None and match["mon"] in _MONTHS:
        stamp = f"{match['year']}-{_MONTHS[match['mon']]:02d}-{match['day']} {match['clock']} {match['zone']}"
    else:
        match = _NGINX_ERROR.match(text)
        if match is None:
            return None
        stamp = f"{match['year']}-{match['month']}-{match['day']} {match['clock']} +0000"
    try:
        return _dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S %z").astimezone(_dt.UTC)
    except ValueError:  # 31/Nov: looks like a date, is not one
        return None


# syslog's yearless stamp at the start of a line: `Nov 28 05:40:01 app1 kernel: ...` (a weekday may lead).
_SYSLOG = re.compile(
    r"^(?:[A-Z][a-z]{2} )?(?P<mon>[A-Z][a-z]{2})\s+(?P<day>\d{1,2}) "
    r"(?P<clock>\d{2}:\d{2}:\d{2})"
)


def syslog_time(text: str, year: int) -> _dt.datetime | None:
    """The syslog stamp a line starts with, in `year` (syslog writes none), as UTC; else None."""
    match = _SYSLOG.search(text)
    month = _MONTHS.get(match["mon"]) if match else None
    if match is None or month is None:
        return None
    try:
        stamp = _dt.datetime.strptime(f"{year}-{month:02d}-{int(match['day']):02d} {match['clock']}",
                                      "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return stamp.replace(tzinfo=_dt.UTC)


def window_start(since: str, now: _dt.datetime) -> _dt.datetime:
    """Where a `--since` window starts: `now` minus a duration, or the ISO instant itself; else ValueError."""
    text = str(since).strip()
    if is_duration(text):
        aware = now if now.tzinfo else now.replace(tzinfo=_dt.UTC)
        return aware.astimezone(_dt.UTC) - _dt.timedelta(seconds=parse_duration(text))
    try:
        return parse_instant(text)
    except ValueError:
        raise ValueError(
            f"--since {since!r}: give a duration like 10m, 2h, 1d or a time like 2026-11-28T05:00"
        ) from None


def iso_z(moment: _dt.datetime) -> str:
    """An instant as our records write it: UTC, milliseconds, a Z (`2026-11-28T05:00:00.000Z`)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)
    return aware.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wait_until(
    condition: Callable[[], T],
    timeout_s: float,
    interval_s: float = 0.2,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `condition` until it returns something truthy or `timeout_s` has gone by; return its last value.

    It is always called at least once, and once more at the deadline, so a slow poller never gives up
    without a last look. Exceptions from `condition` propagate (catch inside it to retry on them).
    """
    deadline = clock() + max(0.0, timeout_s)
    while True:
        value = condition()
        remaining = deadline - clock()
        if value or remaining <= 0:
            return value
        sleep(min(max(interval_s, 0.0), remaining))
