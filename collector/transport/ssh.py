"""The direct engine: fabric, one SSH connection and ONE channel per host, all hosts at once.

The runner goes in as `python3 -` with the request prepended to its source on stdin (secrets never
reach argv). One channel per host keeps clear of sshd's MaxSessions; the runner itself runs the host's
probes concurrently. Host keys are checked against the inventory's known_hosts (UserKnownHostsFile in
ansible_ssh_common_args), never auto-added. `ansible_connection: local` runs the runner as a subprocess.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from collector.config import Settings
from collector.core import HostResult
from collector.transport import (
    Interrupted,
    Payload,
    Progress,
    Target,
    failed_host,
    parse_response,
    progress_lines,
    runner_script,
)

MAX_THREADS = 128
# The runner answers within its slowest probe's timeout; past that plus this grace the host is failed.
GRACE_S = 15.0
_CHUNK = 1 << 16
# After the exit status, how long stdout may still take to reach its EOF.
EOF_GRACE_S = 5.0


def _ssh_args(hostvars: dict[str, Any]) -> list[list[str]]:
    """ansible_ssh_common_args and ansible_ssh_extra_args, each split as a shell would."""
    return [
        shlex.split(str(hostvars.get(var) or ""))
        for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args")
    ]


def ssh_options(hostvars: dict[str, Any]) -> dict[str, str]:
    """`-o Key=Value` options from ansible_ssh_common_args / ansible_ssh_extra_args (keys lower-cased)."""
    options: dict[str, str] = {}
    for words in _ssh_args(hostvars):
        for i, word in enumerate(words):
            text = None
            if word == "-o" and i + 1 < len(words):
                text = words[i + 1]
            elif word.startswith("-o") and len(word) > 2:
                text = word[2:]
            if text and "=" in text:
                key, value = text.split("=", 1)
                options[key.strip().lower()] = value.strip()
            elif text and " " in text:
                key, value = text.split(None, 1)
                options[key.strip().lower()] = value.strip()
    return options


def known_hosts_files(hostvars: dict[str, Any]) -> list[Path]:
    """The known_hosts files to trust: the inventory's UserKnownHostsFile, else the user's and system's."""
    named = ssh_options(hostvars).get("userknownhostsfile")
    if named:
        return [Path(os.path.expanduser(p)) for p in named.split()]
    return [Path.home() / ".ssh" / "known_hosts", Path("/etc/ssh/ssh_known_hosts")]


def _strict(hostvars: dict[str, Any]) -> bool:
    value = ssh_options(hostvars).get("stricthostkeychecking", "yes").lower()
    return value not in ("no", "off", "false")


def _deadline(request: dict[str, Any]) -> float:
    timeouts = [float(p.get("timeout_s") or request["default_timeout_s"]) for p in request["probes"]]
    waves = max(1, -(-len(timeouts) // max(1, int(request.get("concurrency") or 5))))
    # The runner's pool runs probes in waves: the worst case is every wave hitting the longest timeout.
    return (max(timeouts) if timeouts else 0.0) * waves + GRACE_S


class _Spool:
    """Runner stdout spooled to a temp file: the controller never holds more than one host's answer."""

    def __init__(self) -> None:
        # Open for the spool's life: read() closes it.
        self.file: IO[bytes] = tempfile.TemporaryFile(prefix="collector-spool-")  # noqa: SIM115
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def read(self) -> bytes:
        self.file.seek(0)
        data = self.file.read()
        self.file.close()
        return data


def _pump(
    chan: Any, spool: _Spool, host: str, progress: Progress, deadline: float
) -> tuple[int | None, bytes]:
    """Read a channel's stdout and stderr until the runner exits.

    Returns (exit status or None on timeout, stderr tail). sshd may send the exit status before the last
    of stdout (it reaps the runner while the pipe still holds data), so the answer is complete only at the
    channel's EOF; a runner whose stray child keeps stdout open gets EOF_GRACE_S after its exit status.
    """
    err_tail = b""
    exited_at: float | None = None
    poller = select.poll()  # not select(): hundreds of hosts pass FD_SETSIZE (each channel adds a pipe)
    poller.register(chan.fileno(), select.POLLIN)
    while True:
        if time.monotonic() > deadline:
            return None, err_tail
        readable = poller.poll(500)
        got = False
        while chan.recv_ready():
            data = chan.recv(_CHUNK)
            if not data:
                break
            spool.write(data)
            got = True
        while chan.recv_stderr_ready():
            data = chan.recv_stderr(_CHUNK)
            if not data:
                break
            err_tail = (err_tail + data)[-8192:]
            progress_lines(data, host, progress)
            got = True
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            exited_at = exited_at or time.monotonic()
            if chan.eof_received or time.monotonic() - exited_at > EOF_GRACE_S:
                return int(chan.recv_exit_status()), err_tail
        if not got and not readable and chan.closed:
            return int(chan.recv_exit_status()), err_tail


def jump_hosts(hostvars: dict[str, Any]) -> list[tuple[str | None, str, int | None]]:
    """The ProxyJump chain (`-J` or `-o ProxyJump=`) as (user, host, port) hops, first hop first."""
    spec = ssh_options(hostvars).get("proxyjump")
    for words in _ssh_args(hostvars):
        for i, word in enumerate(words):
            if word == "-J" and i + 1 < len(words):
                spec = words[i + 1]
            elif word.startswith("-J") and len(word) > 2:
                spec = word[2:]
    if not spec or spec.lower() == "none":
        return []
    hops: list[tuple[str | None, str, int | None]] = []
    for hop in (h.strip() for h in spec.split(",")):
        if not hop:
            continue
        hop = hop.removeprefix("ssh://")
        user, _, address = hop.rpartition("@")
        host, port = address, None
        if address.startswith("["):  # [v6]:port
            host, _, rest = address[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
        elif address.count(":") == 1:
            host, _, tail = address.partition(":")
            port = int(tail) if tail.isdigit() else None
        hops.append((user or None, host, port))
    return hops


def _connection(target: Target, settings: Settings) -> Any:
    """A fabric Connection for the host, host keys checked at every hop against the inventory's known_hosts.

    Through a ProxyCommand (run as ssh would, %h/%p filled) or else the ProxyJump hops, as OpenSSH does.
    """
    from fabric import Connection
    from paramiko import RejectPolicy, WarningPolicy

    hv = target.hostvars
    key = hv.get("ansible_ssh_private_key_file") or hv.get("ansible_private_key_file")
    password = hv.get("ansible_password") or hv.get("ansible_ssh_pass")
    connect_kwargs: dict[str, Any] = {
        "banner_timeout": settings.connect_timeout_s,
        "auth_timeout": settings.connect_timeout_s,
        "channel_timeout": settings.connect_timeout_s,
    }
    if key:
        connect_kwargs.update(
            key_filename=os.path.expanduser(str(key)), look_for_keys=False, allow_agent=False
        )
    user = str(hv.get("ansible_user") or hv.get("ansible_ssh_user") or os.environ.get("USER", "root"))

    def checked(conn: Any) -> Any:
        for path in known_hosts_files(hv):
            if path.is_file():
                conn.client.load_host_keys(str(path))
        # Fabric's default is AutoAddPolicy: an unknown key would be trusted silently. Not here.
        conn.client.set_missing_host_key_policy(RejectPolicy() if _strict(hv) else WarningPolicy())
        return conn

    proxy_command = ssh_options(hv).get("proxycommand")
    gateway: Any = proxy_command if proxy_command and proxy_command.lower() != "none" else None
    for hop_user, hop_host, hop_port in (
        [] if gateway else jump_hosts(hv)
    ):  # a hop authenticates with the same key, never a password
        gateway = checked(
            Connection(
                host=hop_host,
                user=hop_user or user,
                port=hop_port or 22,
                connect_timeout=max(1, int(settings.connect_timeout_s)),
                connect_kwargs=dict(connect_kwargs),
                gateway=gateway,
            )
        )
    if password:
        connect_kwargs["password"] = str(password)
    return checked(
        Connection(
            host=str(hv.get("ansible_host") or target.name),
            user=user,
            port=int(hv.get("ansible_port") or hv.get("ansible_ssh_port") or 22),
            connect_timeout=max(1, int(settings.connect_timeout_s)),
            connect_kwargs=connect_kwargs,
            gateway=gateway,
        )
    )


def _close(conn: Any) -> None:
    """Close a connection and every jump host behind it (fabric leaves gateways open)."""
    while conn is not None:
        conn.close()
        conn = conn.gateway if not isinstance(conn.gateway, str) else None


def _describe(exc: BaseException) -> str:
    from paramiko import AuthenticationException, BadHostKeyException, SSHException

    if isinstance(exc, BadHostKeyException):
        return f"host key changed: {exc}"
    if isinstance(exc, AuthenticationException):
        return f"authentication failed: {exc}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"connect timeout: {exc or 'no answer'}"
    if isinstance(exc, SSHException) and "not found in known_hosts" in str(exc):
        return f"host key unknown (not in known_hosts): {exc}"
    return f"{type(exc).__name__}: {exc}"


def _python(target: Target) -> str:
    interpreter = str(target.hostvars.get("ansible_python_interpreter") or "")
    if not interpreter or interpreter.startswith("auto") or "{{" in interpreter:
        return "python3"
    return interpreter


def run_ssh_host(
    target: Target, payload: Payload, settings: Settings, progress: Progress, live: _Live
) -> HostResult:
    """One host over one SSH connection; every failure is a HostResult."""
    request = payload.request(target)
    progress(target.name, "connecting", {})
    conn = None
    try:
        conn = _connection(target, settings)
        live.add(lambda: _close(conn))
        conn.open()
    except Exception as exc:  # noqa: BLE001 - paramiko/socket/key errors: host unreachable, run goes on
        _close(conn)  # a jump host that answered is not left open
        result = failed_host(target.name, target.roles, "unreachable", _describe(exc))
        progress(target.name, "done", {"status": result.status, "error": result.error, "result": result})
        return result
    try:
        return _run_over(conn, target, request, progress)
    finally:
        _close(conn)


def _run_over(conn: Any, target: Target, request: dict[str, Any], progress: Progress) -> HostResult:
    progress(target.name, "running", {})
    spool = _Spool()
    try:
        chan = conn.transport.open_session(timeout=conn.connect_timeout)
        chan.exec_command(f"{shlex.quote(_python(target))} -")
        chan.sendall(runner_script(request).encode())
        chan.shutdown_write()
        status, stderr = _pump(chan, spool, target.name, progress, time.monotonic() + _deadline(request))
    except Exception as exc:  # noqa: BLE001 - any session failure is this host's result, not the run's
        spool.read()
        result = failed_host(target.name, target.roles, "failed", f"session failed: {_describe(exc)}")
        progress(target.name, "done", {"status": result.status, "error": result.error, "result": result})
        return result
    return _finish(target, spool.read(), status, stderr, progress)


def _finish(target: Target, out: bytes, status: int | None, stderr: bytes, progress: Progress) -> HostResult:
    if status is None:
        result = failed_host(target.name, target.roles, "failed", "runner did not finish within its deadline")
    elif status == -1 and not out:
        result = failed_host(
            target.name,
            target.roles,
            "failed",
            "the SSH session closed without an exit status (host went away mid-run?)",
        )
    elif out.lstrip().startswith(b"{"):
        result = parse_response(target.name, target.roles, out)
    else:
        errors = b"\n".join(ln for ln in stderr.splitlines() if not ln.startswith(b"@@probe"))
        detail = errors.decode(errors="replace").strip() or out[:500].decode(errors="replace")
        result = failed_host(
            target.name, target.roles, "failed", f"probe runner failed (exit {status}): {detail}"
        )
    progress(target.name, "done", {"status": result.status, "error": result.error, "result": result})
    return result


def run_local_host(
    target: Target, payload: Payload, settings: Settings, progress: Progress, live: _Live
) -> HostResult:
    """`ansible_connection: local`: the runner as a subprocess of this machine."""
    request = payload.request(target)
    progress(target.name, "running", {})
    interpreter = _python(target)
    if interpreter == "python3":
        interpreter = sys.executable or "python3"
    with tempfile.TemporaryFile(prefix="collector-spool-") as out:
        try:
            proc = subprocess.Popen(
                [interpreter, "-"], stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE
            )
        except OSError as exc:
            return failed_host(target.name, target.roles, "failed", f"cannot start {interpreter}: {exc}")
        assert proc.stdin is not None and proc.stderr is not None
        live.add(proc.terminate)  # the runner's SIGTERM handler kills its probes' process groups
        proc.stdin.write(runner_script(request).encode())
        proc.stdin.close()
        stderr_tail = b""
        for line in proc.stderr:  # progress lines arrive as each probe finishes
            progress_lines(line, target.name, progress)
            stderr_tail = (stderr_tail + line)[-8192:]
        status = proc.wait()
        out.seek(0)
        return _finish(target, out.read(), status, stderr_tail, progress)


def run_host(
    target: Target, payload: Payload, settings: Settings, progress: Progress, live: _Live | None = None
) -> HostResult:
    """Dispatch on ansible_connection: local runs here, anything else goes over SSH."""
    live = live or _Live()
    try:
        if str(target.hostvars.get("ansible_connection") or "ssh") == "local":
            return run_local_host(target, payload, settings, progress, live)
        return run_ssh_host(target, payload, settings, progress, live)
    except Exception as exc:  # noqa: BLE001 - a bug must cost one host, not the run
        return failed_host(target.name, target.roles, "failed", f"collector error: {exc!r}")


class _Live:
    """What a run has open (local runner processes, SSH connections), so Ctrl-C can close it at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closers: list[Callable[[], Any]] = []

    def add(self, closer: Callable[[], Any]) -> None:
        with self.lock:
            self.closers.append(closer)

    def close_all(self) -> None:
        with self.lock:
            closers, self.closers = self.closers, []
        for close in closers:
            try:
                close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort: the bundle still gets written
                pass


def run(
    hosts: dict[str, Target], payload: Payload, settings: Settings, progress: Progress
) -> dict[str, HostResult]:
    """Every host at once, one thread and one connection per host (at most MAX_THREADS at a time)."""
    results: dict[str, HostResult] = {}
    live = _Live()
    gate = threading.BoundedSemaphore(MAX_THREADS)

    def work(target: Target) -> None:
        with gate:
            results[target.name] = run_host(target, payload, settings, progress, live)

    # Daemon threads, not a pool: after Ctrl-C the process must not wait for hosts still talking.
    threads = [
        threading.Thread(target=work, args=(t,), name=f"collect-{n}", daemon=True) for n, t in hosts.items()
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        live.close_all()
        done = dict(results)
        for name, target in hosts.items():
            done.setdefault(
                name, failed_host(name, target.roles, "failed", "interrupted before this host answered")
            )
        raise Interrupted({n: done[n] for n in hosts}) from None
    return {name: results[name] for name in hosts}
