"""Headless Chromium for the tests that look at rendered pages (the report files, the incidents page)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Headless, no sandbox (root), and no traffic anywhere: every host name resolves to nothing.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
)
NO_HOSTS = "--host-resolver-rules=MAP * ~NOTFOUND"
# The rule maps the loopback literal too; a page served by the test itself needs it excluded.
NO_HOSTS_BUT_LOOPBACK = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def chromium(url: str, tmp: Path, *extra: str, loopback: bool = False) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once on `url` with its own throwaway profile."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [
        str(CHROMIUM),
        *FLAGS,
        NO_HOSTS_BUT_LOOPBACK if loopback else NO_HOSTS,
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
        url,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False
    )
