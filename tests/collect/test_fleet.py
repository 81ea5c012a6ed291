"""Fleets without a lab: which failed handshakes count as throttling (real exceptions from real loopback
sockets), the retries and their bound, the per-sshd handshake gate, `forks`, and the ansible engine's
generated ssh_config. The lab test (test_bastion_lab.py) runs them against real sshds behind a bastion."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from paramiko import AuthenticationException, BadHostKeyException, ChannelException
from paramiko.ed25519key import Ed25519Key

from collector.config import Settings, check_fleet_settings, load_settings
from collector.core import UsageError
from collector.transport import Payload, Target
from collector.transport.ansible import jump_ssh_config, mentions_jump_hosts, run_ssh_config
from collector.transport.ssh import (
    Fleet,
    _Live,
    looks_throttled,
    retry_delays,
    run,
    worst_connect_s,
)

REPO = Path(__file__).resolve().parents[2]
CODE = "import sys; from collector.cli import collect_main; sys.argv[0] = 'collect'; collect_main()"


class FakeSshd:
    """A loopback TCP listener that behaves like an sshd shedding load: each accepted connection gets
    `answer(conn)` (close at once, reset, banner then EOF...). Counts connections, and the most open at once.
    """

    def __init__(self, answer: Callable[[socket.socket], None], hold_s: float = 0.0) -> None:
        self.answer = answer
        self.hold_s = hold_s
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.open_now = 0
        self.most_open = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open_now += 1
                self.most_open = max(self.most_open, self.open_now)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            if self.hold_s:
                time.sleep(self.hold_s)
            self.answer(conn)
        finally:
            with self.lock:
                self.open_now -= 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def close_at_once(conn: socket.socket) -> None:
    """What sshd does to a connection over MaxStartups: accept, then close before the banner."""


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def banner_then_eof(conn: socket.socket) -> None:
    """A banner, then gone during key exchange."""
    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n")
    conn.recv(4096)


@pytest.fixture()
def fake_sshd() -> Iterator[Callable[..., FakeSshd]]:
    made: list[FakeSshd] = []

    def make(answer: Callable[[socket.socket], None], hold_s: float = 0.0) -> FakeSshd:
        made.append(FakeSshd(answer, hold_s))
        return made[-1]

    yield make
    for server in made:
        server.close()


def _target(name: str, port: int, known_hosts: Path, **extra: Any) -> Target:
    return Target(
        name,
        {
            "ansible_host": "127.0.0.1",
            "ansible_port": port,
            "ansible_user": "root",
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
            **extra,
        },
    )


def _handshake_error(port: int, settings: Settings, known_hosts: Path) -> BaseException:
    fleet = Fleet(settings, _Live())
    try:
        fleet.connect(_target("h", port, known_hosts))
    except Exception as exc:  # noqa: BLE001 - the exception is what the test looks at
        return exc
    raise AssertionError("connected to a fake sshd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the classifier


@pytest.mark.parametrize("answer", [close_at_once, reset, banner_then_eof], ids=lambda f: f.__name__)
def test_an_sshd_cutting_the_handshake_short_looks_throttled(
    answer: Callable[[socket.socket], None], fake_sshd: Callable[..., FakeSshd], tmp_path: Path
) -> None:
    server = fake_sshd(answer)
    exc = _handshake_error(server.port, Settings(connect_timeout_s=3, connect_retries=0), tmp_path / "kh")
    assert looks_throttled(exc), repr(exc)
    assert server.accepted == 1


def test_a_banner_that_never_comes_looks_throttled(
    fake_sshd: Callable[..., FakeSshd], tmp_path: Path
) -> None:
    server = fake_sshd(lambda conn: time.sleep(3))
    exc = _handshake_error(server.port, Settings(connect_timeout_s=1, connect_retries=0), tmp_path / "kh")
    # paramiko says it either way, depending on which of its threads notices first
    assert any(m in str(exc) for m in ("Error reading SSH protocol banner", "No existing session")), exc
    assert looks_throttled(exc)


def test_refused_timeouts_keys_and_channel_failures_are_not_throttling(tmp_path: Path) -> None:
    settings = Settings(connect_timeout_s=2, connect_retries=0)
    refused = _handshake_error(_free_port(), settings, tmp_path / "kh")
    assert not looks_throttled(refused), repr(refused)
    key = Ed25519Key.from_private_key_file(str(_keypair(tmp_path)))
    for exc in (
        TimeoutError("timed out"),
        ConnectionRefusedError(111, "Connection refused"),
        AuthenticationException("Authentication failed."),
        BadHostKeyException("h", key, key),
        ChannelException(2, "Connect failed"),
    ):
        assert not looks_throttled(exc), repr(exc)
    for exc in (ConnectionResetError(104, "Connection reset by peer"), EOFError()):
        assert looks_throttled(exc), repr(exc)


def _keypair(tmp_path: Path) -> Path:
    path = tmp_path / "id"
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


# ---------------------------------------------------------------- retries, their bound, the gate


def test_retry_schedule_and_the_documented_worst_case() -> None:
    assert retry_delays(3) == [0.5, 1.0, 2.0]
    assert retry_delays(0) == []
    assert worst_connect_s(Settings(connect_timeout_s=10, connect_retries=3)) == 43.5
    assert worst_connect_s(Settings(connect_timeout_s=5, connect_retries=0)) == 5


def test_a_throttled_host_is_tried_again_with_backoff_then_unreachable(
    fake_sshd: Callable[..., FakeSshd], tmp_path: Path
) -> None:
    server = fake_sshd(close_at_once)
    settings = Settings(connect_timeout_s=3, connect_retries=2)
    started = time.monotonic()
    exc = _handshake_error(server.port, settings, tmp_path / "kh")
    took = time.monotonic() - started
    assert server.accepted == 3  # the first attempt and two retries
    assert "after 3 attempts" in str(exc)
    # jittered waits: each between half and all of 0.5 s and 1 s
    assert 0.75 <= took < sum(retry_delays(2)) + 1.0


def test_a_refusing_host_is_tried_once_and_costs_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    exc = _handshake_error(_free_port(), Settings(connect_timeout_s=3, connect_retries=3), tmp_path / "kh")
    assert time.monotonic() - started < 0.5, exc
    assert "attempts" not in str(exc)


def test_handshakes_to_one_sshd_are_bounded_and_forks_bound_the_hosts(
    fake_sshd: Callable[..., FakeSshd], tmp_path: Path
) -> None:
    """20 hosts on one sshd: at most handshakes_per_sshd connections to it at once; every host is a value."""
    server = fake_sshd(close_at_once, hold_s=0.3)
    other = fake_sshd(close_at_once, hold_s=0.3)
    hosts = {f"h{n}": _target(f"h{n}", server.port, tmp_path / "kh") for n in range(20)}
    hosts |= {
        f"o{n}": _target(f"o{n}", other.port, tmp_path / "kh", ansible_host="localhost") for n in range(4)
    }
    settings = Settings(connect_timeout_s=3, connect_retries=0, handshakes_per_sshd=3, forks=50)
    results = run(hosts, Payload([]), settings, lambda *a: None)
    assert {r.status for r in results.values()} == {"unreachable"}
    assert server.accepted == 20 and server.most_open == 3
    assert other.accepted == 4  # another sshd (another address) has its own gate
    few = fake_sshd(close_at_once, hold_s=0.3)
    hosts = {f"f{n}": _target(f"f{n}", few.port, tmp_path / "kh") for n in range(6)}
    run(hosts, Payload([]), Settings(connect_timeout_s=3, connect_retries=0, forks=2), lambda *a: None)
    assert few.accepted == 6 and few.most_open == 2  # forks: two hosts at a time


# ---------------------------------------------------------------- settings


def test_forks_and_handshake_settings_resolve_like_every_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "collector.yml"
    config.write_text("forks: 12\nhandshakes_per_sshd: 4\nconnect_retries: 1\n")
    monkeypatch.setenv("COLLECTOR_CONFIG", str(config))
    monkeypatch.delenv("COLLECTOR_FORKS", raising=False)
    assert (load_settings().forks, load_settings().handshakes_per_sshd, load_settings().connect_retries) == (
        12,
        4,
        1,
    )
    monkeypatch.setenv("COLLECTOR_FORKS", "7")
    assert load_settings().forks == 7
    assert load_settings(forks=3).forks == 3
    assert Settings().forks == 50 and Settings().handshakes_per_sshd == 8 and Settings().connect_retries == 3
    for bad in (Settings(forks=0), Settings(handshakes_per_sshd=0), Settings(connect_retries=-1)):
        with pytest.raises(UsageError):
            check_fleet_settings(bad)


def test_collect_refuses_forks_zero_with_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CODE, "--hosts", "local", "--forks", "0", "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "COLLECTOR_FORKS"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "forks must be at least 1" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- the ansible engine's ssh_config


def test_run_ssh_config_makes_every_hop_a_shared_master(tmp_path: Path) -> None:
    targets = [
        Target(
            "db1",
            {
                "ansible_ssh_private_key_file": "/k/id",
                "ansible_ssh_common_args": "-o UserKnownHostsFile=/k/kh -o StrictHostKeyChecking=yes "
                "-o ProxyJump=ops@bastion.example:2222",
            },
        ),
        Target("db2", {"ansible_ssh_common_args": "-o ProxyJump=ops@bastion.example:2222"}),
        Target("web", {"ansible_ssh_extra_args": "-J 10.0.0.1"}),
        Target("direct", {}),
    ]
    jumps = jump_ssh_config(targets)
    assert jumps == (
        "Host bastion.example\n    IdentityFile /k/id\n    IdentitiesOnly yes\n"
        "    UserKnownHostsFile /k/kh\n    StrictHostKeyChecking yes\n"
        "Host 10.0.0.1\n"
    )
    text = run_ssh_config(tmp_path / "cp", jumps)
    lines = text.splitlines()
    assert lines.index("Host bastion.example") < lines.index("Host *")  # first value wins in ssh_config
    assert "    ControlMaster auto" in lines and "    ControlPersist 60s" in lines
    assert f"    ControlPath {tmp_path / 'cp'}/j-%C" in lines
    assert lines[-2:] == ["    Include ~/.ssh/config", "    Include /etc/ssh/ssh_config"]
    config = tmp_path / "ssh_config"
    config.write_text(text)
    # OpenSSH reads it as we mean it: the hop gets the key, the known_hosts and a shared master.
    proc = subprocess.run(
        ["ssh", "-G", "-F", str(config), "-p", "2222", "-l", "ops", "bastion.example"],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert seen["identityfile"] == "/k/id" and seen["userknownhostsfile"] == "/k/kh"
    assert seen["controlmaster"] == "auto" and seen["controlpersist"] == "60"
    assert seen["controlpath"].startswith(f"{tmp_path / 'cp'}/j-")


def test_an_inventory_with_a_proxyjump_is_recognised(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yml"
    plain.write_text("all:\n  hosts:\n    a: {ansible_host: 10.0.0.2}\n")
    assert not mentions_jump_hosts([str(plain)])
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("ansible_ssh_common_args: '-o ProxyJump=ops@b'\n")
    assert mentions_jump_hosts([str(plain)])
    other = tmp_path / "other"
    other.mkdir()
    ini = other / "hosts.ini"
    ini.write_text("a ansible_ssh_extra_args='-J ops@b'\n")
    assert mentions_jump_hosts([str(ini)])
