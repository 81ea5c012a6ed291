"""The playbooks as a production reviewer reads them: ansible-lint's production profile, and no git that
trusts another user's repository as root."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collector.paths import resource

PLAYBOOKS = resource("playbooks")


def _texts() -> dict[str, str]:
    return {str(p.relative_to(PLAYBOOKS)): p.read_text() for p in sorted(PLAYBOOKS.rglob("*.yml"))}


def test_ansible_lint_production_profile_passes_with_no_skips() -> None:
    lint = shutil.which("ansible-lint") or str(Path(sys.executable).parent / "ansible-lint")
    if not Path(lint).exists():
        pytest.skip("ansible-lint is not installed")
    proc = subprocess.run(
        [lint, "--offline", "--profile", "production", "--nocolor", str(PLAYBOOKS)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PLAYBOOKS.parent,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "profile 'production' was required, and it passed" in (proc.stdout + proc.stderr).lower()
    for text in _texts().values():
        assert "noqa" not in text and "skip_ansible_lint" not in text


def test_no_git_trusts_every_directory_and_every_git_runs_as_the_checkouts_owner() -> None:
    with_git = 0
    for name, text in _texts().items():
        code = "\n".join(line.split("# ", 1)[0] for line in text.splitlines())  # comments may name it
        assert not re.search(r"safe\.directory\s*=", code), name
        if re.search(r"(^|[\s\[(;,])git([\s,]|$)", code, re.MULTILINE):
            with_git += 1
            for needed in (
                "runuser",
                "GIT_CONFIG_NOSYSTEM=1",
                "GIT_CONFIG_GLOBAL=/dev/null",
                "core.hooksPath=/dev/null",
                "core.fsmonitor=false",
            ):
                assert needed in code, f"{name}: git without {needed}"
    # vars/probes.yml (deploy_log, compose_deploy_log), remediate/rollback.yml, remediate/compose-rollback.yml
    assert with_git == 3
