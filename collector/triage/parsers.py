"""Pure parsers for probe outputs: text in, plain values out, never an exception on odd input.

Each parser accepts the formats the usual tool flags produce (e.g. `df -P` and `df -h`,
aligned and unaligned `psql`), because the catalogue may change flags without telling triage.
Line numbers are 1-based, so evidence can cite `file:line`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from collector import times

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "ki": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mi": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gi": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "ti": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


@dataclass(frozen=True)
class Line:
    """One line of a probe's output, with its 1-based number."""

    number: int
    text: str


def lines(text: str) -> list[Line]:
    """Every line of `text`, numbered from 1."""
    return [Line(i, t) for i, t in enumerate(text.splitlines(), start=1)]


def decode(data: bytes | None) -> str:
    """Bytes to text; bytes that are not UTF-8 become U+FFFD instead of failing."""
    return (data or b"").decode("utf-8", errors="replace")


def size_to_bytes(token: str) -> float | None:
    """'1.5G', '512Mi', '2048' (no unit: as is) → bytes; None when not a size."""
    match = re.fullmatch(r"\s*([0-9]+(?:[.,][0-9]+)?)\s*([A-Za-z]*)\s*", token or "")
    if not match:
        return None
    unit = match.group(2).lower()
    if unit not in _UNITS:
        return None
    return float(match.group(1).replace(",", ".")) * _UNITS[unit]


def to_number(token: Any) -> float | None:
    """A number from a token ('12', '3.5', '42%'), else None."""
    if isinstance(token, (int, float)) and not isinstance(token, bool):
        return float(token)
    try:
        return float(str(token).strip().rstrip("%"))
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- df


@dataclass(frozen=True)
class DfRow:
    """One filesystem line of `df`."""

    filesystem: str
    used_pct: float
    mount: str
    line: int
    inodes: bool = False  # a row of `df -i` (inode use), not of space


def parse_df(text: str) -> list[DfRow]:
    """Filesystems from `df`, `df -P`, `df -h`, `df -T` (wrapped long device names joined)."""
    rows: list[DfRow] = []
    pending: tuple[str, int] | None = None
    inodes = False
    for ln in lines(text):
        tokens = ln.text.split()
        if not tokens:
            continue
        if tokens[0] == "Filesystem":
            inodes = "IUse%" in tokens or "Inodes" in tokens
            continue
        if len(tokens) == 1:  # plain `df` wraps a long device name onto its own line
            pending = (tokens[0], ln.number)
            continue
        if pending is not None:
            tokens = [pending[0], *tokens]
            pending = None
        pct_at = next((i for i, t in enumerate(tokens) if re.fullmatch(r"\d+(\.\d+)?%", t)), None)
        if pct_at is None:
            continue  # "-" use% (pseudo filesystems of size 0)
        rows.append(
            DfRow(
                tokens[0],
                float(tokens[pct_at][:-1]),
                " ".join(tokens[pct_at + 1 :]) or "?",
                ln.number,
                inodes,
            )
        )
    return rows


# ---------------------------------------------------------------- free


@dataclass(frozen=True)
class Memory:
    """`free` summarised as percentages, so the unit flag (-b/-m/-h) does not matter."""

    mem_total: float
    mem_used_pct: float
    swap_total: float
    swap_used_pct: float
    mem_line: int
    swap_line: int | None


def parse_free(text: str) -> Memory | None:
    """`free` (any unit flag) → used memory % (total - available) and swap used %."""
    header: list[str] = []
    mem: tuple[list[float | None], int] | None = None
    swap: tuple[list[float | None], int] | None = None
    for ln in lines(text):
        tokens = ln.text.split()
        if not tokens:
            continue
        if tokens[0] in ("total", "used") or "total" in tokens[:2]:
            header = tokens
        elif tokens[0].lower().startswith("mem"):
            mem = ([size_to_bytes(t) for t in tokens[1:]], ln.number)
        elif tokens[0].lower().startswith("swap"):
            swap = ([size_to_bytes(t) for t in tokens[1:]], ln.number)
    if mem is None or not mem[0] or not mem[0][0]:
        return None
    values, mem_line = mem
    total = values[0] or 0.0
    col = {name: i for i, name in enumerate(header)}
    available = values[col["available"]] if "available" in col and col["available"] < len(values) else None
    used = values[col.get("used", 1)] if len(values) > col.get("used", 1) else None
    used_bytes = total - available if available is not None else (used or 0.0)
    swap_total, swap_pct, swap_line = 0.0, 0.0, None
    if swap is not None and swap[0]:
        swap_total = swap[0][0] or 0.0
        swap_used = swap[0][1] if len(swap[0]) > 1 else 0.0
        swap_pct = 100.0 * (swap_used or 0.0) / swap_total if swap_total else 0.0
        swap_line = swap[1]
    return Memory(
        total, 100.0 * used_bytes / total if total else 0.0, swap_total, swap_pct, mem_line, swap_line
    )


# ---------------------------------------------------------------- psql


@dataclass(frozen=True)
class Row:
    """One result row of a psql query: column name → text, and its line in the output."""

    values: dict[str, str]
    line: int

    def get(self, *names: str, index: int | None = None) -> str | None:
        """The first column present among `names` (then positional `index`), else None."""
        for name in names:
            if name in self.values:
                return self.values[name]
        if index is not None:
            return self.values.get(str(index))
        return None


_PSQL_FOOTER = re.compile(r"^\(\d+ rows?\)$")
_PSQL_RULE = re.compile(r"^-[-+]*$")
_IDENT = re.compile(r"[A-Za-z_?][A-Za-z0-9_ ?]*")


def parse_psql_tables(text: str) -> list[list[Row]]:
    """Result tables of psql output, one per query.

    Reads aligned output (default), unaligned `-A` (| or tab separated) and `--csv`, several
    queries in one output (each ends with its `(N rows)` footer), and tuples-only `-t` output
    (no header: columns are named by position "0", "1", ...; they are always named so too).
    """
    numbered = lines(text)
    tables: list[list[Row]] = []
    segment: list[Line] = []
    for ln in numbered:
        if _PSQL_FOOTER.match(ln.text.strip()):
            tables.append(_table(segment, footer=True))
            segment = []
        elif ln.text.strip():
            segment.append(ln)
        elif segment and not any(_PSQL_RULE.match(s.text.strip()) for s in segment[:2]):
            # a blank line ends a footer-less (tuples-only or CSV) table; aligned tables end with their footer
            tables.append(_table(segment, footer=False))
            segment = []
    if segment:
        tables.append(_table(segment, footer=False))
    return tables


def parse_psql(text: str) -> list[Row]:
    """Every row of every result table of a psql output (see parse_psql_tables)."""
    return [row for table in parse_psql_tables(text) for row in table]


def _table(segment: list[Line], *, footer: bool) -> list[Row]:
    if not segment:
        return []
    if len(segment) >= 2 and _PSQL_RULE.match(segment[1].text.strip()):  # aligned: header, rule, rows
        header = [h.strip() for h in segment[0].text.split("|")]
        return [_row(header, [c.strip() for c in ln.text.split("|")], ln.number) for ln in segment[2:]]
    first = _split_cells(segment[0].text)
    looks_header = all(_IDENT.fullmatch(c or "") for c in first) and (
        footer or (len(segment) > 1 and not all(_is_number(c) for c in first))
    )
    header = first if looks_header else []
    body = segment[1:] if looks_header else segment
    return [_row(header, _split_cells(ln.text), ln.number) for ln in body]


def _row(header: list[str], cells: list[str], number: int) -> Row:
    named = dict(zip(header, cells))
    return Row(named | {str(k): v for k, v in enumerate(cells)}, number)


def _split_cells(text: str) -> list[str]:
    for sep in ("|", "\t", ","):
        if sep in text:
            return [c.strip() for c in text.split(sep)]
    return [text.strip()]


def _is_number(token: str) -> bool:
    return to_number(token) is not None


# ---------------------------------------------------------------- redis


def parse_redis_info(text: str) -> dict[str, tuple[str, int]]:
    """`redis-cli info ...` (and `CONFIG GET` pairs) → key → (value, line)."""
    info: dict[str, tuple[str, int]] = {}
    numbered = lines(text)
    for idx, ln in enumerate(numbered):
        stripped = ln.text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if ":" in stripped:
            key, _, value = stripped.partition(":")
            info.setdefault(key.strip(), (value.strip(), ln.number))
        elif stripped in ("maxmemory", "maxmemory-policy") and idx + 1 < len(numbered):
            # CONFIG GET prints the name and the value on two lines
            info.setdefault(
                stripped.replace("-", "_"), (numbered[idx + 1].text.strip(), numbered[idx + 1].number)
            )
    return info


# ---------------------------------------------------------------- journal / log lines


def parse_time(text: str, year: int | None = None) -> _dt.datetime | None:
    """The first timestamp in a line (nginx's, ISO 8601, git's default, or syslog's yearless) as aware UTC."""
    stamp = times.find_nginx_time(text)  # first: a request line's URL may hold an ISO date
    if stamp is not None:
        return stamp
    stamp = times.find_instant(text)
    if stamp is not None:
        return stamp
    stamp = times.find_ctime(text)  # dmesg -T, git's default date
    if stamp is not None:
        return stamp
    return times.syslog_time(text, year or _dt.datetime.now(_dt.UTC).year)


def grep(text: str, pattern: str, *, ignore_case: bool = True) -> list[Line]:
    """Lines matching a regular expression (the runbook's greps), numbered."""
    regex = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    return [ln for ln in lines(text) if regex.search(ln.text)]


def is_journal_noise(text: str) -> bool:
    """journalctl's own chatter ('-- No entries --', '-- Boot ... --'), not log content."""
    stripped = text.strip()
    return (
        not stripped
        or (stripped.startswith("--") and stripped.endswith("--"))
        or stripped.startswith("Hint:")
    )


# ---------------------------------------------------------------- git log / reflog


@dataclass(frozen=True)
class Deploy:
    """One entry of the deploy history: when, what ref, which tags, and its line."""

    when: _dt.datetime | None
    ref: str
    tags: tuple[str, ...]
    moved_from: str | None
    moved_to: str | None
    line: int
    text: str


_TAGS = re.compile(r"tag: ([^,)\s]+)")
_MOVE = re.compile(r"(?:checkout|reset): moving (?:from|to) (\S+)(?: to (\S+))?")


def parse_git_log(text: str) -> list[Deploy]:
    """`git log` (default, --oneline --decorate, custom --format) or `git reflog --date=iso` entries.

    Newest first, as git prints them. A default-format commit spans several lines; its
    entry points at the `commit` line and takes the date from the `Date:` line.
    """
    entries: list[Deploy] = []
    current: dict[str, Any] | None = None
    for ln in lines(text):
        stripped = ln.text.strip()
        if stripped.startswith("commit ") and re.match(r"commit [0-9a-f]{7,}", stripped):
            if current:
                entries.append(_deploy(current))
            current = {
                "ref": stripped.split()[1],
                "tags": tuple(_TAGS.findall(stripped)),
                "when": None,
                "line": ln.number,
                "text": stripped,
                "from": None,
                "to": None,
            }
            continue
        if current is not None and stripped.startswith("Date:"):
            current["when"] = parse_time(stripped)
            continue
        if current is not None and (
            not stripped or stripped.startswith(("Author:", "Merge:")) or ln.text.startswith("    ")
        ):
            continue
        match = re.match(r"^([0-9a-f]{7,40})\b", stripped)
        if not match:
            continue
        if current:
            entries.append(_deploy(current))
            current = None
        move = _MOVE.search(stripped)
        moved_from = moved_to = None
        if move:
            moved_from, moved_to = (move.group(1), move.group(2)) if move.group(2) else (None, move.group(1))
        entries.append(
            Deploy(
                parse_time(stripped),
                match.group(1),
                tuple(_TAGS.findall(stripped)),
                moved_from,
                moved_to,
                ln.number,
                stripped,
            )
        )
    if current:
        entries.append(_deploy(current))
    return entries


def _deploy(c: dict[str, Any]) -> Deploy:
    return Deploy(c["when"], c["ref"], c["tags"], c["from"], c["to"], c["line"], c["text"])


# ---------------------------------------------------------------- JSON answers


def parse_json(text: str) -> Any:
    """JSON, or the first JSON object/array in the text (curl -i, trailing status lines), else None."""
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        pass
    for opener in ("{", "["):
        start = text.find(opener)
        if start >= 0:
            try:
                value, _ = json.JSONDecoder().raw_decode(text[start:])
                return value
            except ValueError:
                continue
    return None


@dataclass(frozen=True)
class Health:
    """The app's /health answer: overall status and the failing dependency checks."""

    healthy: bool
    status: str
    failing: tuple[str, ...]
    line: int
    text: str


def parse_health(text: str) -> Health | None:
    """/health JSON ({"status": "healthy"|"unhealthy", "checks": {...}}) → Health; None if no JSON."""
    data = parse_json(text)
    if not isinstance(data, dict):
        return None
    status = str(data.get("status", "unknown"))
    failing: list[str] = []
    checks = data.get("checks") or data.get("dependencies") or {}
    if isinstance(checks, dict):
        for name, check in checks.items():
            value = check.get("status") if isinstance(check, dict) else check
            if str(value).lower() not in ("ok", "healthy", "up", "true", "pass"):
                failing.append(str(name))
    number = next((ln.number for ln in lines(text) if '"status"' in ln.text), 1)
    excerpt = next((ln.text for ln in lines(text) if ln.number == number), text[:200])
    return Health(
        status.lower() in ("healthy", "ok", "up", "pass"),
        status,
        tuple(failing),
        number,
        excerpt.strip()[:300],
    )


@dataclass(frozen=True)
class Sample:
    """One Prometheus exposition sample."""

    name: str
    labels: dict[str, str]
    value: float
    line: int


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[Sample]:
    """Prometheus text exposition → samples (comments and malformed lines skipped)."""
    samples = []
    for ln in lines(text):
        if not ln.text or ln.text.startswith("#"):
            continue
        match = _SAMPLE.match(ln.text.strip())
        if not match:
            continue
        value = to_number(match.group(4).replace("+Inf", "inf").replace("NaN", "nan"))
        if value is None:
            continue
        samples.append(Sample(match.group(1), dict(_LABEL.findall(match.group(3) or "")), value, ln.number))
    return samples


def prom_scalar(data: Any) -> float | None:
    """A Prometheus /api/v1/query answer → its single value (first series), None if empty or NaN."""
    if not isinstance(data, dict):
        return None
    if data.get("kind") == "instant" or ("value" in data and "data" not in data):
        # the collector's shaped answer (collector.monitoring.shape_instant): {"value": float|None}
        number = to_number(data.get("value")) if data.get("value") is not None else None
        return (
            None
            if number is None or math.isnan(number) or number in (float("inf"), float("-inf"))
            else number
        )
    result = (data.get("data") or {}).get("result") if isinstance(data.get("data"), dict) else None
    value: Any = None
    if isinstance(result, list) and result:
        value = (result[0] or {}).get("value")
    elif isinstance(result, list):
        return None
    elif (data.get("data") or {}).get("resultType") == "scalar":
        value = data["data"].get("result")
    if isinstance(value, list) and len(value) == 2:
        number = to_number(value[1])
        if number is None or math.isnan(number) or number in (float("inf"), float("-inf")):
            return None
        return number
    return None


@dataclass(frozen=True)
class Alert:
    """One Alertmanager alert."""

    name: str
    state: str
    severity: str
    labels: dict[str, str]
    summary: str
    starts_at: str


def parse_alerts(data: Any) -> list[Alert]:
    """Alertmanager /api/v2/alerts (a list) or v1 ({"data": [...]}) → alerts that are firing (active)."""
    if isinstance(data, dict):
        data = data.get("alerts") or data.get("data") or []
    if not isinstance(data, list):
        return []
    alerts = []
    for item in data:
        if not isinstance(item, dict):
            continue
        labels = {str(k): str(v) for k, v in (item.get("labels") or {}).items()}
        status = item.get("status", item.get("state"))
        state = status.get("state", "active") if isinstance(status, dict) else str(status or "active")
        if state not in ("active", "firing"):
            continue  # suppressed/silenced alerts are not news
        annotations = item.get("annotations") or {}
        summary = str(annotations.get("summary") or annotations.get("description") or "")
        summary = summary or str(item.get("summary") or "")
        name = labels.get("alertname") or str(item.get("name") or "?")
        severity = labels.get("severity") or str(item.get("severity") or "")
        alerts.append(
            Alert(
                name,
                state,
                severity,
                labels,
                summary,
                str(item.get("startsAt") or item.get("starts_at") or ""),
            )
        )
    return alerts


# ---------------------------------------------------------------- systemctl / ps


@dataclass(frozen=True)
class Unit:
    """`systemctl status UNIT`: its active state and since when."""

    active: str
    sub: str
    since: _dt.datetime | None
    line: int
    text: str


def parse_systemctl_status(text: str) -> Unit | None:
    """The `Active:` line of `systemctl status` → Unit; None when absent (unit unknown)."""
    for ln in lines(text):
        match = re.match(r"\s*Active:\s+(\S+)(?:\s+\(([^)]*)\))?(?:\s+since\s+(.*?)(?:;|$))?", ln.text)
        if match:
            return Unit(
                match.group(1),
                match.group(2) or "",
                parse_time(match.group(3) or ""),
                ln.number,
                ln.text.strip(),
            )
    return None


@dataclass(frozen=True)
class Process:
    """One `ps`/`top` row: pid, command, %mem and RSS (bytes, when shown)."""

    pid: str
    command: str
    mem_pct: float
    rss: float | None
    line: int


def parse_ps(text: str) -> list[Process]:
    """`ps aux --sort=-%mem` (or any ps with a header naming %MEM/RSS/PID/COMMAND) → processes."""
    procs: list[Process] = []
    header: list[str] = []
    for ln in lines(text):
        tokens = ln.text.split()
        if not tokens:
            continue
        if "PID" in tokens and ("%MEM" in tokens or "RSS" in tokens):
            header = tokens
            continue
        if not header or len(tokens) < len(header):
            continue
        col = {name: i for i, name in enumerate(header)}
        last = len(header) - 1
        command = " ".join(tokens[last:])
        mem = to_number(tokens[col["%MEM"]]) if "%MEM" in col else None
        rss = size_to_bytes(tokens[col["RSS"]] + "k") if "RSS" in col else None  # ps reports RSS in KiB
        procs.append(Process(tokens[col.get("PID", 0)], command, mem or 0.0, rss, ln.number))
    return procs


# ---------------------------------------------------------------- top / iostat / uptime


@dataclass(frozen=True)
class Cpu:
    """top's `%Cpu(s)` line: busy % (100 - idle), iowait % and steal %."""

    busy_pct: float
    iowait_pct: float
    steal_pct: float
    line: int


def parse_top_cpu(text: str) -> Cpu | None:
    """The last `%Cpu(s):` line of `top -b` (with two iterations the last is the measured one); None if
    absent."""
    found = None
    for ln in lines(text):
        if not re.match(r"\s*%?Cpu\(s\)", ln.text):
            continue
        values = {
            key: float(num)
            for num, key in re.findall(
                r"([0-9]+(?:[.,][0-9]+)?)\s*(us|sy|ni|id|wa|hi|si|st)\b", ln.text.replace(",", " ")
            )
        }
        if "id" in values:
            found = Cpu(
                round(100.0 - values["id"], 1), values.get("wa", 0.0), values.get("st", 0.0), ln.number
            )
    return found


@dataclass(frozen=True)
class Device:
    """One device row of `iostat -x`: utilisation % and the worst await (ms) of reads, writes, discards."""

    name: str
    util_pct: float
    await_ms: float
    line: int


def parse_iostat(text: str) -> list[Device]:
    """Device rows of `iostat -x` (sysstat's r_await/w_await/d_await/f_await columns, or the older
    `await`)."""
    devices: list[Device] = []
    header: list[str] = []
    for ln in lines(text):
        tokens = ln.text.split()
        if not tokens:
            header = [] if devices else header
            continue
        if tokens[0].rstrip(":") in ("Device", "Device:"):
            header = tokens
            continue
        if not header or len(tokens) != len(header):
            continue
        col = dict(zip(header, tokens))
        util = to_number(col.get("%util"))
        if util is None:
            continue
        waits = [
            n
            for k, v in col.items()
            if k.endswith("await") and k != "f_await" and (n := to_number(v)) is not None
        ]
        devices.append(Device(tokens[0], util, max(waits, default=0.0), ln.number))
    return devices


@dataclass(frozen=True)
class Load:
    """`uptime`'s load averages and the cores they are judged against (`cores: N` line; None when absent)."""

    load1: float
    load5: float
    load15: float
    cores: int | None
    line: int


def parse_uptime(text: str) -> Load | None:
    """`uptime` (and the probe's `cores: N` line from nproc) → Load; None without load averages."""
    load = None
    cores = None
    for ln in lines(text):
        match = re.search(r"load averages?:\s*([0-9.,]+)[,\s]+([0-9.,]+)[,\s]+([0-9.,]+)", ln.text)
        if match:
            nums = [float(g.rstrip(",").replace(",", ".")) for g in match.groups()]
            load = (nums, ln.number)
        core = re.match(r"\s*cores:\s*(\d+)\s*$", ln.text)
        if core:
            cores = int(core.group(1))
    if load is None:
        return None
    return Load(load[0][0], load[0][1], load[0][2], cores, load[1])


@dataclass(frozen=True)
class Counted:
    """One `uniq -c` summary line: its count, its text, its line."""

    count: int
    text: str
    line: int


def parse_counted(text: str) -> list[Counted]:
    """`sort | uniq -c | sort -rn` output → (count, text) rows, most frequent first."""
    rows = []
    for ln in lines(text):
        match = re.match(r"\s*(\d+)\s+(.*\S)", ln.text)
        if match:
            rows.append(Counted(int(match.group(1)), match.group(2), ln.number))
    return sorted(rows, key=lambda r: -r.count)


# ---------------------------------------------------------------- Docker / Compose


@dataclass(frozen=True)
class Container:
    """One container of a Compose project as the compose_containers probe prints it (docker inspect)."""

    name: str
    id: str  # the full container id (its memory cgroup's name in the kernel's OOM lines)
    service: str
    status: str  # docker's State.Status: created, running, paused, restarting, removing, exited, dead
    running: bool
    restarting: bool
    oom_killed: bool
    exit_code: int
    health: str | None  # starting, healthy, unhealthy; None without a healthcheck
    failing_streak: int
    restart_count: int
    restart_policy: str
    oneoff: bool  # `docker compose run`: a one-off task, not the service
    created: _dt.datetime | None
    started_at: _dt.datetime | None
    finished_at: _dt.datetime | None
    memory_limit: int  # bytes; 0 = none
    image: str
    image_id: str
    error: str
    line: int

    @property
    def completed(self) -> bool:
        """A one-off or run-once container that exited cleanly: finished work, not a service that is down."""
        return (
            self.status == "exited"
            and self.exit_code == 0
            and (self.oneoff or self.restart_policy in ("", "no"))
        )

    @property
    def state(self) -> str:
        """How an SRE would say it: `running (healthy)`, `exited (137, OOM-killed)`, `restarting`."""
        if self.status == "running":
            return f"running ({self.health})" if self.health else "running"
        detail = [str(self.exit_code)] if self.status in ("exited", "dead", "restarting") else []
        if self.oom_killed:
            detail.append("OOM-killed")
        return f"{self.status} ({', '.join(detail)})" if detail else self.status


def _go_time(value: Any) -> _dt.datetime | None:
    """Docker's RFC 3339 times (nanoseconds); Go's zero time (never started) is None."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    return times.find_instant(value)


def _int(value: Any) -> int:
    number = to_number(value)
    return int(number) if number is not None else 0


def _json_lines(text: str) -> list[tuple[Line, dict[str, Any]]]:
    """The lines of `text` that are one JSON object each (docker's --format json output)."""
    found = []
    for ln in lines(text):
        stripped = ln.text.strip()
        if not stripped.startswith("{"):
            continue
        try:
            value = json.loads(stripped)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append((ln, value))
    return found


def parse_containers(text: str) -> list[Container]:
    """compose_containers output (one JSON object per container) → Containers; other lines are skipped."""
    found = []
    for ln, c in _json_lines(text):
        if "status" not in c or "name" not in c:
            continue
        health = c.get("health")
        found.append(
            Container(
                name=str(c.get("name") or "").lstrip("/"),
                id=str(c.get("id") or ""),
                service=str(c.get("service") or ""),
                status=str(c.get("status") or ""),
                running=bool(c.get("running")),
                restarting=bool(c.get("restarting")),
                oom_killed=bool(c.get("oom_killed")),
                exit_code=_int(c.get("exit_code")),
                health=str(health) if health else None,
                failing_streak=_int(c.get("failing_streak")),
                restart_count=_int(c.get("restart_count")),
                restart_policy=str(c.get("restart_policy") or ""),
                oneoff=str(c.get("oneoff") or "").lower() == "true",
                created=_go_time(c.get("created")),
                started_at=_go_time(c.get("started_at")),
                finished_at=_go_time(c.get("finished_at")),
                memory_limit=_int(c.get("memory_limit")),
                image=str(c.get("image") or ""),
                image_id=str(c.get("image_id") or ""),
                error=str(c.get("error") or ""),
                line=ln.number,
            )
        )
    return found


@dataclass(frozen=True)
class DockerEvent:
    """One container event from `docker events --format '{{json .}}'` (die, oom, start, health_status...)."""

    action: str  # "die", "oom", "start", "health_status: unhealthy"
    container: str
    id: str  # the container instance (a recreated container keeps its name, not its id)
    service: str
    when: _dt.datetime | None
    exit_code: int | None  # die events only
    line: int

    def describe(self) -> str:
        """One readable line (ISO time first, so the report's timeline and triage can place it)."""
        stamp = self.when.strftime("%Y-%m-%dT%H:%M:%SZ") if self.when else "?"
        code = f" exitCode={self.exit_code}" if self.exit_code is not None else ""
        return f"{stamp} container {self.action} {self.container} (service {self.service or '?'}){code}"


def parse_docker_events(text: str) -> list[DockerEvent]:
    """compose_events output (one JSON event per line) → container events in the order given."""
    found = []
    for ln, ev in _json_lines(text):
        action = str(ev.get("Action") or ev.get("status") or "")
        if not action or str(ev.get("Type") or "container") != "container":
            continue
        attrs = (ev.get("Actor") or {}).get("Attributes") or {}
        nanos, seconds = to_number(ev.get("timeNano")), to_number(ev.get("time"))
        when = None
        if nanos:
            when = _dt.datetime.fromtimestamp(nanos / 1e9, _dt.UTC)
        elif seconds:
            when = _dt.datetime.fromtimestamp(seconds, _dt.UTC)
        code = attrs.get("exitCode")
        found.append(
            DockerEvent(
                action=action,
                container=str(attrs.get("name") or str(ev.get("id") or "")[:12]),
                id=str(ev.get("id") or (ev.get("Actor") or {}).get("ID") or ""),
                service=str(attrs.get("com.docker.compose.service") or ""),
                when=when,
                exit_code=_int(code) if code is not None else None,
                line=ln.number,
            )
        )
    return found


@dataclass(frozen=True)
class ContainerStats:
    """One row of `docker stats --no-stream --format '{{json .}}'`."""

    name: str
    cpu_pct: float | None
    mem_pct: float | None
    mem_usage: str  # "212MiB / 256MiB"
    line: int


def parse_docker_stats(text: str) -> list[ContainerStats]:
    """compose_stats output → one row per running container."""
    found = []
    for ln, row in _json_lines(text):
        if "MemPerc" not in row and "CPUPerc" not in row:
            continue
        found.append(
            ContainerStats(
                name=str(row.get("Name") or row.get("Container") or ""),
                cpu_pct=to_number(str(row.get("CPUPerc") or "").rstrip("%")),
                mem_pct=to_number(str(row.get("MemPerc") or "").rstrip("%")),
                mem_usage=str(row.get("MemUsage") or ""),
                line=ln.number,
            )
        )
    return found
