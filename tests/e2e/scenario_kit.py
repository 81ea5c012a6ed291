"""What the e2e scenario tests share: a shell running the installed commands that keeps what was typed."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector_lab import demo, faults

from collector.times import wait_until


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


def heal_leftovers(lab: Any) -> None:
    """Heal every fault someone left in (the caller holds the lab lock, so an active fault is a leftover)."""
    for name, active in faults.active_faults(lab.settings).items():
        if active:
            try:
                faults.heal_fault(name, lab.settings)
            except faults.FaultError:  # e.g. Redis frees UNLINKed keys in the background: it heals by itself
                healed = wait_until(lambda n=name: not faults.is_active(lab.settings, faults.get(n)), 10, 0.5)
                assert healed, f"leftover fault {name} does not heal"


REQUESTER, APPROVER = "alice", "bob"


@dataclass(frozen=True)
class Expect:
    """What the runbook says a fault looks like and how it is fixed."""

    finding: str  # rule id triage must name
    severity: str  # that finding's severity
    least: str  # the verdict is at least this severe
    action: str  # the mitigation that finding suggests
    params: dict[str, str]  # parameters the suggestion must carry


def approve_and_apply(
    sh: Shell, lab: Any, plan: Path, *, verify_wait: int, timeout: float, after_bundle: bool = True
) -> str:
    """bob approves the plan with his lab key, then alice applies it with hers; the apply's stdout."""
    ok(sh("collector", "approve", str(plan), "--key", str(lab.signers.key(APPROVER)), "--yes"))
    argv = ["remediate", "apply", str(plan), "--key", str(lab.signers.key(REQUESTER))]
    argv += ["--verify-wait", str(verify_wait), *([] if after_bundle else ["--no-after-bundle"])]
    return ok(sh("collector", *argv, timeout=timeout))


def assert_report_tells_it(bundle: Path, finding: dict[str, Any], expect: Expect) -> None:
    """report.md names the finding, and its timeline the request, the approval, the apply and the verify."""
    report = (bundle / "report.md").read_text()
    assert finding["title"] in report and expect.finding in report
    timeline = demo.timeline_section(report)
    for text in (
        f"Plan {expect.action} requested by {REQUESTER}",
        f"Plan {expect.action} approved by {APPROVER}",
        f"Applied {expect.action}",
        "Verification passed",
    ):
        assert text in timeline, f"timeline lacks {text!r}:\n{timeline}"
