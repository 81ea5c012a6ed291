"""The direct engine: fabric/paramiko, one SSH connection and ONE channel per host, `forks` hosts at a time.

The runner goes in as `python3 -` with the request prepended to its source on stdin (secrets never
reach argv). One channel per host keeps clear of sshd's MaxSessions; the runner itself runs the host's
probes concurrently. Host keys are checked against the inventory's known_hosts (UserKnownHostsFile in
ansible_ssh_common_args), never auto-added. `ansible_connection: local` runs the runner as a subprocess.

Fleets and bastions: hosts behind the same jump host (ProxyJump) share ONE authenticated connection to it,
each reaching its host over a `direct-tcpip` channel; new handshakes to any one sshd are bounded
(`handshakes_per_sshd`, below OpenSSH's MaxStartups start of 10), and a handshake cut short the way a
throttling sshd cuts it is tried again (`connect_retries`, backoff) before the host is called unreachable.
"""

from __future__ import annotations

import os
import queue
import random
import select
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

# The first retry of a throttled handshake waits this long; each next one twice as long (each jittered down
# to half, so hosts throttled together do not come back together).
RETRY_BACKOFF_S = 0.5
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


def retry_delays(retries: int) -> list[float]:
    """The waits before each retry of a throttled handshake, un-jittered: 0.5, 1, 2 s ..."""
    return [RETRY_BACKOFF_S * 2**i for i in range(max(0, retries))]


def worst_connect_s(settings: Settings) -> float:
    """The most one host's handshakes can cost before it is unreachable (README "Fleets and bastions").

    A host that does not answer or refuses costs one connect timeout (never retried); one whose sshd keeps
    cutting handshakes short costs at most this: every attempt up to its connect timeout, plus the waits.
    """
    retries = max(0, settings.connect_retries)
    return (1 + retries) * settings.connect_timeout_s + sum(retry_delays(retries))


_THROTTLED_WORDS = (
    "error reading ssh protocol banner",
    "connection reset",
    "reset by peer",
    "broken pipe",
    "eof",
    "no existing session",
)


def looks_throttled(exc: BaseException) -> bool:
    """True when a failed handshake looks like an sshd shedding load (MaxStartups, a busy bastion).

    sshd drops a connection over MaxStartups right after accept: the client reads no banner (EOF or reset) or
    loses the connection during key exchange. A timeout to connect, a refusal, a rejected key or a changed
    host key say something else about the host; retrying them would only multiply what a down host costs.
    """
    from paramiko import AuthenticationException, BadHostKeyException, ChannelException, SSHException

    if isinstance(exc, (AuthenticationException, BadHostKeyException, ChannelException)):
        return False
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, EOFError)):
        return True
    if isinstance(exc, SSHException):
        text = str(exc).lower()
        if "timeout opening channel" in text or "not found in known_hosts" in text:
            return False
        return any(word in text for word in _THROTTLED_WORDS)
    return False  # socket timeouts, refusals (NoValidConnectionsError), name errors


class JumpHostDown(Exception):
    """The jump host in front of a target could not be reached: the target is unreachable for that reason."""


class _Jump:
    """One authenticated connection to a jump host, shared by every host behind it for the whole run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: Any = None
        self.error: str | None = None


def _spec(user: str | None, host: str, port: int | None) -> str:
    return f"{user + '@' if user else ''}{host}{':' + str(port) if port else ''}"


class Fleet:
    """What hosts of one run share: jump host connections and the handshake gate of each sshd."""

    def __init__(self, settings: Settings, live: _Live) -> None:
        self.settings = settings
        self.live = live
        self.lock = threading.Lock()
        self.jumps: dict[tuple[Any, ...], _Jump] = {}
        self.gates: dict[tuple[Any, ...], threading.BoundedSemaphore] = {}

    @contextmanager
    def gate(self, key: tuple[Any, ...]) -> Iterator[None]:
        """At most `handshakes_per_sshd` unauthenticated connections to one sshd at a time."""
        with self.lock:
            gate = self.gates.get(key)
            if gate is None:
                gate = self.gates[key] = threading.BoundedSemaphore(max(1, self.settings.handshakes_per_sshd))
        with gate:
            yield

    def handshake(self, make: Callable[[], Any], gate_key: tuple[Any, ...]) -> Any:
        """An opened (authenticated) Connection from `make`, retrying a throttled handshake with backoff."""
        delays = retry_delays(self.settings.connect_retries)
        attempt = 0
        while True:
            conn = None
            try:
                with self.gate(gate_key):
                    conn = make()
                    conn.open()
                return conn
            except Exception as exc:
                _close(conn)
                if attempt >= len(delays) or not looks_throttled(exc):
                    if attempt:  # the reason says it was not a one-off
                        exc.args = (f"{exc} (after {attempt + 1} attempts)",)
                    raise
            time.sleep(delays[attempt] * random.uniform(0.5, 1.0))  # jitter: throttled hosts spread out
            attempt += 1

    def connect(self, target: Target) -> Any:
        """The target's opened Connection: direct, through its ProxyCommand, or over a jump host channel."""
        hv = target.hostvars
        host = str(hv.get("ansible_host") or target.name)
        port = int(hv.get("ansible_port") or hv.get("ansible_ssh_port") or 22)
        password = hv.get("ansible_password") or hv.get("ansible_ssh_pass")
        proxy_command = ssh_options(hv).get("proxycommand")
        if proxy_command and proxy_command.lower() != "none":
            return self.handshake(
                lambda: _connection(hv, self.settings, None, host, port, password, gateway=proxy_command),
                ("direct", host),
            )
        hops = jump_hosts(hv)
        if not hops:
            return self.handshake(
                lambda: _connection(hv, self.settings, None, host, port, password), ("direct", host)
            )
        # Each attempt asks for the jump connection again: one that died meanwhile is opened anew.
        return self.handshake(
            lambda: _connection(hv, self.settings, None, host, port, password, via=self._jump(hv, hops)[1]),
            ("via", _jump_key(hv, hops), host),
        )

    def _jump(self, hv: dict[str, Any], hops: list[tuple[str | None, str, int | None]]) -> tuple[Any, Any]:
        """(key, opened Connection) of the last of `hops`, reached through the ones before it.

        Opened once per run under its own lock: the hosts behind it wait for that one handshake instead of
        each making their own. A jump host that failed stays failed for the run (its hosts cost nothing more).
        """
        key = _jump_key(hv, hops)
        with self.lock:
            jump = self.jumps.setdefault(key, _Jump())
        with jump.lock:  # lock order: a longer chain's lock before a shorter one's, never the reverse
            if jump.error is not None:
                raise JumpHostDown(jump.error)
            if jump.conn is not None and jump.conn.transport is not None and jump.conn.transport.is_active():
                return key, jump.conn
            _close(jump.conn)  # a jump connection that died mid-run is opened again, once per failure
            user, host, port = hops[-1]
            via = self._jump(hv, hops[:-1])[1] if len(hops) > 1 else None
            gate_key = ("via", key[:-1], host) if via is not None else ("direct", host)
            try:
                jump.conn = self.handshake(
                    lambda: _connection(hv, self.settings, user, host, port or 22, None, via=via), gate_key
                )
            except JumpHostDown:
                raise
            except Exception as exc:  # noqa: BLE001 - every host behind it gets this as its reason
                jump.error = f"jump host {_spec(user, host, port)} unreachable: {_describe(exc)}"
                raise JumpHostDown(jump.error) from None
            conn = jump.conn
            self.live.add(lambda: _close(conn))
            return key, jump.conn

    def close(self) -> None:
        """Close every jump host connection (the hosts' own are closed as each finishes)."""
        with self.lock:
            jumps = list(self.jumps.values())
        for jump in jumps:
            _close(jump.conn)


def _jump_key(hv: dict[str, Any], hops: list[tuple[str | None, str, int | None]]) -> tuple[Any, ...]:
    """What makes two hosts' jump connections the same one: the hops, the key and the trusted host keys."""
    key = hv.get("ansible_ssh_private_key_file") or hv.get("ansible_private_key_file")
    user = hv.get("ansible_user") or hv.get("ansible_ssh_user") or os.environ.get("USER", "root")
    trusted = tuple(str(p) for p in known_hosts_files(hv))
    chain = tuple((u or str(user), h, p or 22) for u, h, p in hops)
    return (str(key or ""), trusted, _strict(hv), *chain)


def _connection(
    hv: dict[str, Any],
    settings: Settings,
    user: str | None,
    host: str,
    port: int,
    password: Any,
    *,
    gateway: str | None = None,
    via: Any = None,
) -> Any:
    """A fabric Connection (not yet opened), host keys checked against the inventory's known_hosts.

    `gateway` is a ProxyCommand (run as ssh would, %h/%p filled); `via` an opened jump host Connection, over
    which a `direct-tcpip` channel is opened now (bounded by the connect timeout: a target that does not
    answer behind a bastion must not wait for the bastion's own TCP timeout). Every hop authenticates with
    the host's key, never a password.
    """
    from fabric import Connection
    from paramiko import RejectPolicy, WarningPolicy

    key = hv.get("ansible_ssh_private_key_file") or hv.get("ansible_private_key_file")
    timeout = settings.connect_timeout_s
    connect_kwargs: dict[str, Any] = {
        "banner_timeout": timeout,
        "auth_timeout": timeout,
        "channel_timeout": timeout,
    }
    if key:
        connect_kwargs.update(
            key_filename=os.path.expanduser(str(key)), look_for_keys=False, allow_agent=False
        )
    if password:
        connect_kwargs["password"] = str(password)
    if via is not None:
        connect_kwargs["sock"] = via.transport.open_channel(
            "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
        )
    login = user or str(
        hv.get("ansible_user") or hv.get("ansible_ssh_user") or os.environ.get("USER", "root")
    )
    conn = Connection(
        host=host,
        user=login,
        port=port,
        connect_timeout=max(1, int(timeout)),
        connect_kwargs=connect_kwargs,
        gateway=gateway,
    )
    _trust_known_keys(conn.client, hv, host, port)
    # Fabric's default is AutoAddPolicy: an unknown key would be trusted silently. Not here.
    conn.client.set_missing_host_key_policy(RejectPolicy() if _strict(hv) else WarningPolicy())
    return conn


_KNOWN_HOSTS: dict[str, tuple[tuple[int, int], Any]] = {}  # path -> ((mtime_ns, size), parsed HostKeys)
_KNOWN_HOSTS_LOCK = threading.Lock()


def _parsed_known_hosts(path: Path) -> Any:
    """A known_hosts file parsed once per version of it (parsing a 1,000-line file costs ~90 ms of CPU; per
    connection that grew with the square of the fleet)."""
    from paramiko import HostKeys

    st = path.stat()
    version = (st.st_mtime_ns, st.st_size)
    with _KNOWN_HOSTS_LOCK:
        cached = _KNOWN_HOSTS.get(str(path))
        if cached is None or cached[0] != version:
            cached = (version, HostKeys(str(path)))
            _KNOWN_HOSTS[str(path)] = cached
        return cached[1]


def _trust_known_keys(client: Any, hv: dict[str, Any], host: str, port: int) -> None:
    """Give the client the trusted keys of this one host (under the name paramiko checks: `host`, or
    `[host]:port` off port 22), from every known_hosts file the inventory names."""
    name = host if port == 22 else f"[{host}]:{port}"
    mine = client.get_host_keys()
    for path in known_hosts_files(hv):
        if path.is_file():
            for keytype, key in (_parsed_known_hosts(path).lookup(name) or {}).items():
                mine.add(name, keytype, key)


def _close(conn: Any) -> None:
    """Close a connection and the jump host channel under it; None and errors are ignored.

    fabric closes only a connection that got as far as being connected: after a failed handshake the client
    and the channel it ran over must be closed here, or each retry would leave a channel open on the jump.
    """
    if conn is None:
        return
    sock = (getattr(conn, "connect_kwargs", None) or {}).get("sock")
    for close in (conn.close, conn.client.close, getattr(sock, "close", None)):
        try:
            if close is not None:
                close()
        except Exception:  # noqa: BLE001, S110 - closing is best effort
            pass


def _describe(exc: BaseException) -> str:
    from paramiko import AuthenticationException, BadHostKeyException, ChannelException, SSHException

    if isinstance(exc, JumpHostDown):
        return str(exc)
    if isinstance(exc, BadHostKeyException):
        return f"host key changed: {exc}"
    if isinstance(exc, AuthenticationException):
        return f"authentication failed: {exc}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"connect timeout: {exc or 'no answer'}"
    if isinstance(exc, ChannelException):
        return f"the jump host could not connect to it: {exc.text} (code {exc.code})"
    if isinstance(exc, SSHException) and "not found in known_hosts" in str(exc):
        return f"host key unknown (not in known_hosts): {exc}"
    return f"{type(exc).__name__}: {exc}"


def _python(target: Target) -> str:
    interpreter = str(target.hostvars.get("ansible_python_interpreter") or "")
    if not interpreter or interpreter.startswith("auto") or "{{" in interpreter:
        return "python3"
    return interpreter


def run_ssh_host(
    target: Target, payload: Payload, settings: Settings, progress: Progress, live: _Live, fleet: Fleet
) -> HostResult:
    """One host over one SSH connection; every failure is a HostResult."""
    request = payload.request(target)
    progress(target.name, "connecting", {})
    conn = None
    try:
        conn = fleet.connect(target)
        live.add(lambda: _close(conn))
    except Exception as exc:  # noqa: BLE001 - paramiko/socket/key errors: host unreachable, run goes on
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
    chan = None
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
    finally:
        if chan is not None:
            chan.close()  # paramiko closes the pipe behind fileno() only here: else 2 fds per host to the end
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
    target: Target,
    payload: Payload,
    settings: Settings,
    progress: Progress,
    live: _Live | None = None,
    fleet: Fleet | None = None,
) -> HostResult:
    """Dispatch on ansible_connection: local runs here, anything else goes over SSH."""
    live = live or _Live()
    try:
        if str(target.hostvars.get("ansible_connection") or "ssh") == "local":
            return run_local_host(target, payload, settings, progress, live)
        return run_ssh_host(target, payload, settings, progress, live, fleet or Fleet(settings, live))
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
    """Every host, `forks` at a time: a bounded pool of workers, one connection per host being collected."""
    results: dict[str, HostResult] = {}
    live = _Live()
    fleet = Fleet(settings, live)
    todo: queue.SimpleQueue[Target] = queue.SimpleQueue()
    for target in hosts.values():
        todo.put(target)

    def work() -> None:
        while True:
            try:
                target = todo.get_nowait()
            except queue.Empty:
                return
            results[target.name] = run_host(target, payload, settings, progress, live, fleet)

    # Daemon threads, not an executor: after Ctrl-C the process must not wait for hosts still talking.
    workers = [
        threading.Thread(target=work, name=f"collect-{n}", daemon=True)
        for n in range(max(1, min(settings.forks, len(hosts))))
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    except KeyboardInterrupt:
        live.close_all()
        done = dict(results)
        for name, target in hosts.items():
            done.setdefault(
                name, failed_host(name, target.roles, "failed", "interrupted before this host answered")
            )
        raise Interrupted({n: done[n] for n in hosts}) from None
    finally:
        fleet.close()
    return {name: results[name] for name in hosts}
