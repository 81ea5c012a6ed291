"""Mitigations on the lab as a reviewer attacks them (issue 14): a hostile deploy checkout under rollback,
symlinked clean-disk folders and a symlinked .env under pool-resize.

The playbooks run through the one front door to Ansible (collector.transport.ansible.run_playbook), first as
the plan runs them (check + diff), then as apply does (check=False). Each test builds its hostile setup on
the app host, holds the lab lock and removes what it made.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.remediate.actions import get_action
from collector.transport.ansible import PlaybookRun, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.destructive]


def inventory_with(lab: Any, path: Path, host: str, overrides: dict[str, Any]) -> Path:
    doc = yaml.safe_load(Path(lab.inventory).read_text())
    for group in doc["all"]["children"]["lab"]["children"].values():
        if host in (group.get("hosts") or {}):
            group["hosts"][host].update(overrides)
    path.write_text(yaml.safe_dump(doc))
    return path


def play(action: str, inventory: Path, host: str, params: dict[str, Any], *, check: bool) -> PlaybookRun:
    act = get_action(action)
    return run_playbook(
        act.playbook, str(inventory), host, act.extravars(params, host), check=check, diff=check
    )


@pytest.fixture()
def base(lab: Any, lab_lock: None, app_host: Any) -> Iterator[str]:
    """A scratch folder on the app host (and one in its data dir), removed afterwards."""
    path = f"/tmp/collector-hostile-{uuid.uuid4().hex[:8]}"
    assert app_host.run(f"mkdir -m 0755 {path}").rc == 0
    try:
        yield path
    finally:
        app_host.run(f"rm -rf {path} /var/lib/sergas/{Path(path).name}")


# The checkout of tests/collect/test_collect_security_lab.py: owned by the app's user, with a config naming
# programs (gpg.program, core.fsmonitor) and a post-checkout hook; each writes marker-<uid that ran it>.
def make_hostile_checkout(app_host: Any, base: str) -> str:
    script = (Path(__file__).parents[1] / "collect" / "hostile_checkout.sh").read_text()
    made = app_host.run(script.format(base=base, owner="sergas"))
    assert made.rc == 0, made.stderr
    return f"{base}/repo"


def test_rollback_never_runs_the_checkout_owners_programs_as_root(
    lab: Any, base: str, app_host: Any, tmp_path: Path
) -> None:
    app = lab.groups["app"][0]
    repo = make_hostile_checkout(app_host, base)
    inv = inventory_with(lab, tmp_path / "inv.yml", app, {"collector_deploy_dir": repo})
    tag = "v1.0.0"
    planned = play("rollback", inv, app, {"tag": tag}, check=True)
    assert planned.hosts[app].status == "changed", planned.hosts[app]
    applied = play("rollback", inv, app, {"tag": tag}, check=False)
    marker = app_host.file(f"{base}/marks/marker-0")
    assert not marker.exists, "rollback ran the checkout owner's hook or fsmonitor as root"
    assert applied.hosts[app].status == "changed", applied.hosts[app]
    head = app_host.run(f"runuser -u sergas -- git -C {repo} describe --tags --exact-match HEAD")
    assert head.stdout.strip() == tag
    owners = app_host.run(f"find {repo} -not -user sergas | head -5").stdout.strip()
    assert owners == "", f"the checkout left files not owned by its user: {owners}"
    again = play("rollback", inv, app, {"tag": tag}, check=False)
    assert again.hosts[app].status == "ok" and not again.hosts[app].changed  # idempotent
    # Control: the checkout as root with safe.directory='*' (what the playbook did) runs the hook.
    app_host.run(f"git -c safe.directory='*' -C {repo} checkout -q v1.1.0")
    assert app_host.file(f"{base}/marks/marker-0").exists, "the hostile checkout did not trigger"


def test_clean_disk_refuses_a_symlinked_folder_and_removes_as_the_owner(
    lab: Any, base: str, app_host: Any, tmp_path: Path
) -> None:
    app = lab.groups["app"][0]
    name = Path(base).name
    setup = f"""set -e
    mkdir {base}/victim
    for f in a.csv b.csv; do echo keep > {base}/victim/$f; touch -d '-2 hours' {base}/victim/$f; done
    install -d -o sergas -g sergas /var/lib/sergas/{name} /var/lib/sergas/{name}/real
    ln -s {base}/victim /var/lib/sergas/{name}/lnk
    ln -s {base} /var/lib/sergas/{name}/via
    echo old > /var/lib/sergas/{name}/real/old.csv; touch -d '-2 hours' /var/lib/sergas/{name}/real/old.csv
    chown -h sergas: /var/lib/sergas/{name}/* /var/lib/sergas/{name}/real/old.csv
    """
    made = app_host.run(setup)
    assert made.rc == 0, made.stderr
    victims = app_host.run(f"sha256sum {base}/victim/*").stdout
    for subdir in (f"{name}/lnk", f"{name}/via/victim"):  # is a symlink; passes through one
        for check in (True, False):  # the plan's check run, then apply
            run = play(
                "clean-disk",
                lab.inventory,
                app,
                {"subdir": subdir, "pattern": "*.csv", "minutes": 0},
                check=check,
            )
            outcome = run.hosts[app]
            assert outcome.status == "failed" and "symlink" in outcome.msg, (subdir, check, outcome)
            assert app_host.run(f"sha256sum {base}/victim/*").stdout == victims
    real = f"{name}/real"
    cleaned = play(
        "clean-disk", lab.inventory, app, {"subdir": real, "pattern": "*.csv", "minutes": 0}, check=False
    )
    assert cleaned.hosts[app].status == "changed", cleaned.hosts[app]
    assert not app_host.file(f"/var/lib/sergas/{real}/old.csv").exists
    again = play(
        "clean-disk", lab.inventory, app, {"subdir": real, "pattern": "*.csv", "minutes": 0}, check=False
    )
    assert again.hosts[app].status == "ok" and not again.hosts[app].changed


def test_pool_resize_refuses_a_symlinked_env_file(lab: Any, base: str, app_host: Any, tmp_path: Path) -> None:
    app = lab.groups["app"][0]
    setup = f"""set -e
    printf 'DATABASE_POOL_SIZE=3\\nOTHER=keep\\n' > {base}/victim.env
    mkdir {base}/app {base}/real
    ln -s {base}/victim.env {base}/app/.env
    cp {base}/victim.env {base}/real/.env
    ln -s {base}/real {base}/applink
    """
    assert app_host.run(setup).rc == 0
    sums = app_host.run(f"sha256sum {base}/victim.env {base}/real/.env").stdout
    for env_file in (f"{base}/app/.env", f"{base}/applink/.env"):  # is a symlink; passes through one
        inv = inventory_with(lab, tmp_path / "inv.yml", app, {"collector_env_file": env_file})
        for check in (True, False):
            run = play("pool-resize", inv, app, {"size": 7}, check=check)
            outcome = run.hosts[app]
            assert outcome.status == "failed" and "symlink" in outcome.msg, (env_file, check, outcome)
            assert app_host.run(f"sha256sum {base}/victim.env {base}/real/.env").stdout == sums
