"""A real MTA (Debian's exim4 on 127.0.0.1:25, local delivery to /var/mail) and a loopback chat webhook
receiver, for tests that check where incident comms arrive. Use: `from comms_fixtures import mta, chat,
read_mail, ...`.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import mailbox
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

MAIL_USER = "collector-oncall"  # a local user; its mailbox is /var/mail/collector-oncall
MAIL_ADDRESS = f"{MAIL_USER}@localhost"
EXIM_CONF = Path("/etc/exim4/update-exim4.conf.conf")


# ---------------------------------------------------------------- the MTA


def _smtp_up() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 25), timeout=1) as sock:
        return sock.recv(64).startswith(b"220")
    return False


def _configure_exim() -> None:
    """Local delivery only, listening on 127.0.0.1 only (Debian's update-exim4.conf reads this file)."""
    text = EXIM_CONF.read_text() if EXIM_CONF.exists() else ""
    wanted = {
        "dc_eximconfig_configtype": "'local'",
        "dc_local_interfaces": "'127.0.0.1'",
        "dc_relay_nets": "''",
        "dc_smarthost": "''",
        "dc_localdelivery": "'mail_spool'",
    }
    lines = [ln for ln in text.splitlines() if ln.split("=", 1)[0] not in wanted]
    new = "\n".join([*lines, *(f"{k}={v}" for k, v in wanted.items())]) + "\n"
    if new != text:
        EXIM_CONF.write_text(new)
        subprocess.run(["update-exim4.conf"], check=True, timeout=60)


@pytest.fixture(scope="session")
def mta() -> Iterator[Path]:
    """exim4 (Debian's exim4-daemon-light) delivering to /var/mail on 127.0.0.1:25; yields the mailbox
    path."""
    if shutil.which("exim4") is None:
        pytest.skip("exim4 is not installed (apt-get install exim4-daemon-light; install-test.sh does)")
    if os.geteuid() != 0:
        pytest.skip("the MTA test configures exim4 and a local user: run as root")
    try:
        user = pwd.getpwnam(MAIL_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--home-dir",
                f"/var/lib/{MAIL_USER}",
                "--shell",
                "/usr/sbin/nologin",
                MAIL_USER,
            ],
            check=True,
            timeout=30,
        )
        user = pwd.getpwnam(MAIL_USER)
    home = Path(user.pw_dir)
    if not home.is_dir():  # exim's local delivery changes into the user's home first
        home.mkdir(mode=0o700, parents=True)
        os.chown(home, user.pw_uid, user.pw_gid)
    started: int | None = None
    if not _smtp_up():
        _configure_exim()
        # No systemd here: the daemon is started by hand (-bd listens, -q1m runs the queue each minute).
        subprocess.run(["exim4", "-bd", "-q1m"], check=True, timeout=30)
        deadline = time.monotonic() + 20
        while not _smtp_up():
            assert time.monotonic() < deadline, "exim4 did not start listening on 127.0.0.1:25"
            time.sleep(0.2)
        pid_file = Path("/run/exim4/exim.pid")
        started = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
    yield Path("/var/mail") / MAIL_USER
    if started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(started, 15)


def read_mail(box: Path, token: str, timeout: float = 30.0) -> email.message.EmailMessage:
    """The message of the local mailbox whose subject or body holds `token` (polled until it arrives)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if box.exists():
            for raw in mailbox.mbox(str(box), create=False):
                msg = email.message_from_bytes(raw.as_bytes(), policy=email.policy.default)
                assert isinstance(msg, email.message.EmailMessage)
                part = msg.get_body(("plain",))
                body = part.get_content() if part is not None else ""
                if token in str(msg["Subject"]) or token in body:
                    return msg
        time.sleep(0.3)
    raise AssertionError(f"no mail with {token!r} in {box} after {timeout:.0f} s")


def mail_body(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(("plain",))
    return str(part.get_content()) if part is not None else ""


# ---------------------------------------------------------------- the chat webhook


class ChatReceiver:
    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.posts.append((dict(self.headers), json.loads(self.rfile.read(length) or b"{}")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/incidents"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def find(self, token: str) -> tuple[dict[str, str], dict[str, Any]]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for headers, body in self.posts:
                if token in json.dumps(body):
                    return headers, body
            time.sleep(0.1)
        raise AssertionError(f"no chat post with {token!r}: {self.posts}")


@pytest.fixture
def chat() -> Iterator[ChatReceiver]:
    receiver = ChatReceiver()
    yield receiver
    receiver.server.shutdown()
