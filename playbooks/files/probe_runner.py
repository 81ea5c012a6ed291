#!/usr/bin/env python3
"""The on-host probe runner: runs one host's probes concurrently, each under its own timeout and cap.

Standard library only, Python 3.9+. Reads ONE JSON request (see CONTRACTS.md) from the global
`_REQUEST` when a transport prepends it to this source (`python3 -`), else from stdin; writes ONE JSON
document to stdout. It never raises for a probe: every outcome is a recorded status.
"""

import base64
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

RUNNER_VERSION = 1
DEFAULT_CAP = 25 * 1024 * 1024
READ_CHUNK = 65536
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_UTC = datetime.timezone.utc  # noqa: UP017 - hosts run Python 3.9+: datetime.UTC is 3.11+
# {name} is a host var; ${...} (shell) and %{...} (curl -w) are left alone. No doubled braces:
# Ansible templates the catalogue too (playbooks/collect.yml), so it must never look like Jinja.
_PLACEHOLDER = re.compile(r"(?<![$%])\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Durations and ISO times as collector/times.py reads them. This file runs on the hosts with the standard
# library only and cannot import the package, so it keeps this minimal copy; tests/test_times.py checks
# that both give the same window. One difference on purpose: an ISO time without an offset is this host's
# local time here (as journalctl takes it), UTC on the control machine.
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?P<frac>[.,]\d+)?"
    r"\s?(?P<tz>Z|UTC|[+-]\d{2}:?\d{2})?"
)
_LIVE_GROUPS = set()  # process groups still running: killed if the runner itself is told to stop
_LIVE_LOCK = threading.Lock()


def now_iso():
    """UTC now, ISO 8601 with milliseconds and a Z."""
    stamp = datetime.datetime.now(_UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def journal_since(since):
    """`10m` -> `-10m` (journalctl's relative form); anything else (a timestamp) is passed as given."""
    text = str(since or "").strip()
    match = _DURATION.match(text)
    if match:
        return f"-{match.group(1)}{match.group(2)}"
    # journalctl rejects ISO 8601's "T" and "Z": give it "YYYY-MM-DD HH:MM:SS[ UTC]".
    stamp = _iso(text)
    if stamp is None:
        return text
    if stamp.tzinfo is not None:
        return stamp.astimezone(_UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def since_utc(since, now=None):
    """--since as an absolute UTC "YYYY-MM-DD HH:MM:SS", for logs that are files (PostgreSQL's).

    A duration counts back from `now` (a UTC datetime; default: this host's clock); a timestamp without
    an offset is this host's local time, as journalctl takes it; anything else gives None (no filter).
    """
    text = str(since or "").strip()
    match = _DURATION.match(text)
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        now = now or datetime.datetime.now(_UTC)
        return (now - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")
    stamp = _iso(text)
    return stamp.astimezone(_UTC).strftime("%Y-%m-%d %H:%M:%S") if stamp else None


def _iso(text):
    """An ISO 8601 timestamp (Z, UTC, +HH:MM or +HHMM, any fraction; Python 3.9's parser takes fewer),
    else None."""
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    digits = (match.group("frac") or "")[1:]
    frac = "." + digits[:6].ljust(6, "0") if digits else ""  # Python 3.9 takes 3 or 6 digits only
    tz = match.group("tz") or ""
    if tz in ("Z", "UTC"):
        tz = "+00:00"
    elif tz and ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    try:
        return datetime.datetime.fromisoformat(match.group("date") + "T" + match.group("time") + frac + tz)
    except ValueError:
        return None


# A placeholder's value reaches the shell as an environment variable with this prefix, referenced
# double-quoted: the shell never parses a value, so `$(...)`, quotes, `;`, newlines and globs in it stay text.
VAR_ENV_PREFIX = "_cv_"
# Filled by the runner itself (not host vars): they may start with "-" (journalctl's `-10m`).
_RUNNER_VALUES = ("since", "since_utc")


class CatalogueError(ValueError):
    """A catalogue command whose placeholders cannot be filled safely (e.g. one inside single quotes)."""


def _render(command, ref):
    """`command` with each placeholder replaced by ref(name, inside_double_quotes).

    Tracks the shell's quoting as it goes (single and double quotes, backslashes, `$(...)`, comments) so the
    reference fits its context: `"${_cv_x}"` where the shell would split and glob, `${_cv_x}` inside double
    quotes. A placeholder inside single quotes or backquotes cannot be referenced: CatalogueError.
    """
    out = []
    stack = ["sh"]  # "sh": unquoted (top level or inside $(...)); "dq": inside double quotes
    depth = [0]  # open parentheses per context, so the `)` that closes a $( is told from a subshell's
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        top = stack[-1]
        match = _PLACEHOLDER.match(command, i)
        if match:
            out.append(ref(match.group(1), top == "dq"))
            i = match.end()
            continue
        if c == "\\":
            out.append(command[i : i + 2])
            i += 2
            continue
        if command.startswith("$(", i):
            stack.append("sh")
            depth.append(0)
            out.append("$(")
            i += 2
            continue
        if c == "`":
            end = command.find("`", i + 1)
            inner = _PLACEHOLDER.search(command[i : end if end > 0 else n])
            if inner:
                raise CatalogueError(f"placeholder {{{inner.group(1)}}} inside backquotes: use $(...)")
        if top == "dq":
            if c == '"':
                stack.pop()
                depth.pop()
            out.append(c)
            i += 1
            continue
        if c == "'":
            end = command.find("'", i + 1)
            quoted = command[i : end + 1 if end > 0 else n]
            inner = _PLACEHOLDER.search(quoted)
            if inner:
                raise CatalogueError(
                    f"placeholder {{{inner.group(1)}}} inside single quotes cannot be filled"
                )
            out.append(quoted)
            i += len(quoted)
            continue
        if c == "#" and (i == 0 or command[i - 1] in " \t\n;&|()"):
            end = command.find("\n", i)
            end = n if end < 0 else end
            out.append(command[i:end])  # a comment: nothing in it runs
            i = end
            continue
        if c == '"':
            stack.append("dq")
            depth.append(0)
        elif c == "(":
            depth[-1] += 1
        elif c == ")":
            if depth[-1] == 0 and len(stack) > 1:
                stack.pop()
                depth.pop()
            else:
                depth[-1] = max(0, depth[-1] - 1)
        out.append(c)
        i += 1
    return "".join(out)


def prepare(command, values):
    """The command to run, the environment holding its placeholders' values, and the problems.

    Returns (command, env, missing var names, error). Each `{var}` becomes a quoted reference to the
    environment variable `_cv_<var>`; the values never enter the command text.
    """
    used = {}
    missing = []
    bad = []

    def ref(name, in_double_quotes):
        value = values.get(name)
        if value is None or value == "" or isinstance(value, (dict, list)):
            if name not in missing:
                missing.append(name)
        else:
            text = str(value)
            if text.startswith("-") and name not in _RUNNER_VALUES and name not in bad:
                bad.append(name)  # would read as an option of the command it is handed to
            used[VAR_ENV_PREFIX + name] = text
        inner = "${" + VAR_ENV_PREFIX + name + "}"
        return inner if in_double_quotes else f'"{inner}"'

    try:
        rendered = _render(command, ref)
    except CatalogueError as exc:
        return command, {}, [], f"catalogue: {exc}"
    error = f"host var {', '.join(bad)} starts with '-' (it would read as an option)" if bad else None
    return rendered, used, missing, error


def fill(command, values):
    """The command as one self-contained shell text: its values assigned shell-quoted up front, then the
    command that reads them (what the manifest records; rerunning it runs the same).
    Returns (text, missing)."""
    rendered, used, missing, error = prepare(command, values)
    if error:
        raise CatalogueError(error)
    return shown(rendered, used), missing


def shown(rendered, used):
    """A prepared command as the self-contained text recorded in the manifest."""
    return "".join(f"{name}={shlex.quote(value)}; " for name, value in sorted(used.items())) + rendered


class Capture:
    """Keeps the first and last cap/2 bytes of a stream and counts the rest."""

    def __init__(self, cap):
        self.cap = max(int(cap), 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.lock = threading.Lock()

    def feed(self, chunk):
        with self.lock:
            self.total += len(chunk)
            room = self.cap // 2 - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self.tail += chunk
                keep = self.cap - self.cap // 2
                if len(self.tail) > 2 * keep:  # trim in batches: amortised O(1) per byte
                    del self.tail[: len(self.tail) - keep]

    def result(self):
        """(bytes kept, total bytes seen, truncated?)."""
        with self.lock:
            keep = self.cap - self.cap // 2
            tail = bytes(self.tail[-keep:]) if keep else b""
            if self.total <= self.cap:
                return bytes(self.head) + bytes(self.tail), self.total, False
            dropped = self.total - len(self.head) - len(tail)
            marker = (
                f"\n\n[... collector: output truncated: {dropped:d} bytes omitted of {self.total:d}; "
                "head and tail kept ...]\n\n"
            ).encode()
            return bytes(self.head) + marker + tail, self.total, True


def _reader(stream, capture):
    try:
        while True:
            chunk = stream.read1(READ_CHUNK) if hasattr(stream, "read1") else stream.read(READ_CHUNK)
            if not chunk:
                break
            capture.feed(chunk)
    except (OSError, ValueError):
        pass


def _kill_group(pgid):
    """SIGTERM the probe's whole process group, then SIGKILL what is left."""
    for sig, pause in ((signal.SIGTERM, 0.3), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if pause:
            time.sleep(pause)


def _env(probe, values):
    env = {
        "PATH": SAFE_PATH + (":" + os.environ["PATH"] if os.environ.get("PATH") else ""),
        "HOME": os.environ.get("HOME", "/root"),
        "LC_ALL": "C",
        "LANG": "C",
        "TERM": "dumb",
        "PAGER": "cat",
        "SYSTEMD_PAGER": "cat",
        "SYSTEMD_COLORS": "0",
        "COLUMNS": "200",
    }
    if os.environ.get("TZ"):  # the host's zone as the runner sees it (journalctl --since, date, log times)
        env["TZ"] = os.environ["TZ"]
    for name, var in (probe.get("env") or {}).items():
        value = values.get(var)
        if value is not None and value != "":
            env[str(name)] = str(value)
    return env


def _result(probe, command, status, rc, started, t0, data=b"", total=0, truncated=False, error=None):
    return {
        "probe": probe["name"],
        "command": command,
        "status": status,
        "rc": rc,
        "started": started,
        "duration_s": round(time.monotonic() - t0, 3),
        "bytes": total,
        "truncated": truncated,
        "output_b64": base64.b64encode(data).decode("ascii"),
        "error": error,
    }


def _missing_tools(probe, path):
    return [tool for tool in probe.get("requires") or () if shutil.which(tool, path=path) is None]


def run_probe(probe, values, default_timeout, default_cap):
    """Run one probe in its own process group; every outcome becomes a result dict."""
    started, t0 = now_iso(), time.monotonic()
    command, placeholders, missing, error = prepare(probe["command"], values)
    recorded = shown(command, placeholders)
    if error:
        return _result(probe, recorded, "failed", None, started, t0, error=error)
    if missing:
        return _result(
            probe, recorded, "skipped", None, started, t0, error="host var not set: " + ", ".join(missing)
        )
    env = _env(probe, values)
    env.update(placeholders)
    absent = _missing_tools(probe, env["PATH"])
    if absent:
        return _result(
            probe, recorded, "not_found", 127, started, t0, error="not installed: " + ", ".join(absent)
        )
    timeout = float(probe.get("timeout_s") or default_timeout)
    capture = Capture(probe.get("cap_bytes") or default_cap)
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd="/",
        )
    except OSError as exc:
        return _result(probe, recorded, "failed", None, started, t0, error=f"cannot start: {exc}")
    with _LIVE_LOCK:
        _LIVE_GROUPS.add(proc.pid)
    reader = threading.Thread(target=_reader, args=(proc.stdout, capture), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        proc.wait()
    # A child that left the group may hold the pipe open: never wait on it past a moment.
    reader.join(timeout=2.0 if timed_out else max(2.0, timeout - (time.monotonic() - t0)))
    if reader.is_alive():
        _kill_group(proc.pid)
        reader.join(timeout=1.0)
    with _LIVE_LOCK:
        _LIVE_GROUPS.discard(proc.pid)
    data, total, truncated = capture.result()
    if timed_out:
        return _result(
            probe,
            recorded,
            "timeout",
            124,
            started,
            t0,
            data,
            total,
            truncated,
            f"killed after {timeout}s timeout",
        )
    rc = proc.returncode
    if rc < 0:  # killed by a signal from elsewhere
        return _result(
            probe,
            recorded,
            "failed",
            128 - rc,
            started,
            t0,
            data,
            total,
            truncated,
            f"killed by signal {-rc:d}",
        )
    ok_rc = probe.get("ok_rc") or [0]
    if rc in ok_rc:
        return _result(probe, recorded, "ok", rc, started, t0, data, total, truncated)
    if rc == 127:
        return _result(
            probe,
            recorded,
            "not_found",
            rc,
            started,
            t0,
            data,
            total,
            truncated,
            "command not found (exit 127)",
        )
    if rc == 126:
        return _result(
            probe,
            recorded,
            "failed",
            rc,
            started,
            t0,
            data,
            total,
            truncated,
            "command not executable (exit 126)",
        )
    return _result(probe, recorded, "failed", rc, started, t0, data, total, truncated, f"exit {rc:d}")


def _run_and_tell(probe, values, default_timeout, default_cap):
    """Run a probe, then say so on stderr (one line) so a streaming transport can show progress."""
    result = run_probe(probe, values, default_timeout, default_cap)
    with _LIVE_LOCK:
        try:
            sys.stderr.write(f"@@probe {result['probe']} {result['status']}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    return result


def _run_chain(probes, values, default_timeout, default_cap):
    """Probes that share a `serial` name, one after another (e.g. one database session at a time):
    name -> result."""
    return {p["name"]: _run_and_tell(p, values, default_timeout, default_cap) for p in probes}


def select(probes, roles):
    """The probes whose roles intersect the host's roles, or that apply to all."""
    wanted = set(roles or ()) | {"all"}
    return [p for p in probes if set(p.get("roles") or ["all"]) & wanted]


def _stop(signum, frame):
    with _LIVE_LOCK:
        groups = list(_LIVE_GROUPS)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    os._exit(128 + signum)


def run(request):
    """Run a request's probes; returns the response document."""
    values = dict(request.get("vars") or {})
    values["since"] = journal_since(request.get("since", "10m"))
    # a --since it cannot parse: no filter
    values["since_utc"] = since_utc(request.get("since", "10m")) or "0000-00-00 00:00:00"
    probes = select(request.get("probes") or [], request.get("roles") or [])
    default_timeout = float(request.get("default_timeout_s") or 30)
    default_cap = int(request.get("cap_bytes") or DEFAULT_CAP)
    workers = max(1, int(request.get("concurrency") or 5))
    started = now_iso()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chains = {}  # serial name -> its future, which runs that group's probes one after another
        futures = []
        for p in probes:
            group = p.get("serial")
            if not group:
                futures.append(pool.submit(_run_and_tell, p, values, default_timeout, default_cap))
                continue
            if group not in chains:
                members = [q for q in probes if q.get("serial") == group]
                chains[group] = pool.submit(_run_chain, members, values, default_timeout, default_cap)
            futures.append(chains[group])
        results = []
        for probe, future in zip(probes, futures):
            try:
                outcome = future.result()
                results.append(outcome[probe["name"]] if probe.get("serial") else outcome)
            except Exception as exc:  # noqa: BLE001 - a bug here must cost one probe, not the host
                results.append(
                    _result(
                        probe,
                        probe.get("command", ""),
                        "failed",
                        None,
                        now_iso(),
                        time.monotonic(),
                        error=f"runner error: {exc!r}",
                    )
                )
    return {
        "runner_version": RUNNER_VERSION,
        "host_time": started,
        "finished": now_iso(),
        "python": sys.version.split()[0],
        "roles": list(request.get("roles") or []),
        "probes": results,
    }


def read_request():
    """The request: `_REQUEST` if a transport prepended it to this source, else stdin."""
    text = globals().get("_REQUEST")
    if text is None:
        text = sys.stdin.read()
    return json.loads(text)


def main():
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _stop)
    try:
        request = read_request()
    except ValueError as exc:
        sys.stdout.write(json.dumps({"error": f"bad request: {exc}", "probes": []}))
        return 2
    out = json.dumps(run(request))
    sys.stdout.write(out)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
