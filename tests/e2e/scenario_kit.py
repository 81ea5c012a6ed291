"""What the e2e scenario tests share: a shell running the installed commands that keeps what was typed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from collector_lab import demo


class Shell:
    """Runs the installed commands in one working directory and keeps what was typed."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.typed: list[str] = []

    def __call__(self, *argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        self.typed.append(" ".join(argv))
        return subprocess.run(
            [demo.tool(argv[0]), *argv[1:]],
            cwd=self.cwd,
            text=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """The command's stdout; its exit status, stdout and stderr tails when it did not exit 0."""
    assert proc.returncode == 0, (
        f"{proc.args[1:]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout
