"""Compose mitigations: the host's collector_deploy in the inventory picks the playbook, the plan's binding
records that choice (so the approver's hash covers it), and the compose playbooks keep the house style."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.core import Plan, UsageError
from collector.inventory import load_inventory
from collector.paths import resource
from collector.remediate.actions import ACTIONS, deploy_of, get_action, plan_deploy
from collector.remediate.plan import binding_changes, compute_binding, describe, playbook_path, targets_for
from collector.triage.engine import load_rules

INVENTORY = """\
all:
  children:
    app:
      hosts:
        app1: {ansible_host: 127.0.0.1, collector_service: sergas-app}
    compose:
      hosts:
        compose1:
          ansible_connection: local
          collector_deploy: DEPLOY
          collector_compose_dir: /srv/sergas
          collector_compose_project: sergas
          collector_compose_service: app
          collector_docker_host: unix:///run/iclab-docker/docker.sock
          collector_app_url: http://10.203.58.10:8000
"""
PLAYBOOKS = resource("playbooks")
COMPOSE_ACTIONS = {
    "restart": "compose-restart",
    "scale": "compose-scale",
    "rollback": "compose-rollback",
    "memory-limit": "compose-memory-limit",
}


def inventory(tmp_path: Path, deploy: str = "compose") -> Any:
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY.replace("DEPLOY", deploy))
    return load_inventory(str(path))


def test_the_inventory_says_how_a_host_is_deployed() -> None:
    assert deploy_of({}) == "systemd"
    assert deploy_of({"collector_deploy": "Compose"}) == "compose"
    with pytest.raises(UsageError, match="collector_deploy 'kubernetes' is not a deployment kind"):
        deploy_of({"collector_deploy": "kubernetes"})


@pytest.mark.parametrize(("action", "book"), sorted(COMPOSE_ACTIONS.items()))
def test_a_compose_host_runs_the_compose_playbook(action: str, book: str, tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    act = get_action(action)
    targets = targets_for(act, inv, "compose1")
    assert targets == ["compose1"] and inv.roles("compose1") == ("compose",)
    kind = plan_deploy(act, inv.hosts, targets)
    assert kind == "compose"
    assert playbook_path(act, PLAYBOOKS, kind) == PLAYBOOKS / "remediate" / f"{book}.yml"
    assert (PLAYBOOKS / "remediate" / f"{book}.yml").is_file()


def test_systemd_hosts_keep_their_playbooks_and_scale_is_compose_only(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    restart = get_action("restart")
    assert playbook_path(restart, PLAYBOOKS, plan_deploy(restart, inv.hosts, ["app1"])).name == "restart.yml"
    with pytest.raises(UsageError, match="scale acts on hosts in group compose; pattern 'app1' matches none"):
        targets_for(get_action("scale"), inv, "app1")
    with pytest.raises(UsageError, match="scale has no playbook for systemd deployments"):
        plan_deploy(get_action("scale"), {"web1": {}}, ["web1"])


def test_one_plan_never_mixes_deployment_kinds(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    targets = targets_for(get_action("restart"), inv, "app1:compose1")
    with pytest.raises(UsageError, match=r"deployed differently \(compose: compose1; systemd: app1\)"):
        plan_deploy(get_action("restart"), inv.hosts, targets)


def test_the_binding_records_the_deploy_kind_and_the_compose_playbook_files(tmp_path: Path) -> None:
    action = get_action("restart")
    binding = compute_binding(action, inventory(tmp_path), ["compose1"], PLAYBOOKS)
    assert binding["deploy"] == "compose"
    assert {
        "remediate/compose-restart.yml",
        "remediate/tasks/compose_state.yml",
        "remediate/tasks/compose_wait.yml",
    } <= set(binding["playbook_files"])
    assert "remediate/restart.yml" not in binding["playbook_files"]
    # someone flips the host to systemd after approval: apply sees what would run differently
    (tmp_path / "other").mkdir()
    changed = compute_binding(action, inventory(tmp_path / "other", "systemd"), ["compose1"], PLAYBOOKS)
    said = binding_changes(binding, changed)
    assert "the targets' deployment kind (collector_deploy) changed (compose -> systemd)" in said
    assert "playbook file remediate/compose-restart.yml is gone" in said
    assert any(s.startswith("connection/collector_* variables of compose1") for s in said)


def test_the_approver_reads_the_deploy_kind(tmp_path: Path) -> None:
    binding = compute_binding(get_action("scale"), inventory(tmp_path), ["compose1"], PLAYBOOKS)
    plan = Plan(
        id="p1",
        action="scale",
        params={"replicas": 2},
        pattern="compose1",
        inventory=str(tmp_path / "inventory.yml"),
        targets=["compose1"],
        created="2026-12-01T21:00:00Z",
        binding=binding,
    )
    assert "deploy    compose (the targets' collector_deploy in the inventory)" in describe(plan)


def test_every_compose_finding_suggests_a_mitigation_with_a_compose_playbook() -> None:
    rules = [r for r in load_rules() if "compose" in r.roles]
    assert rules
    for rule in rules:
        for mitigation in ([rule.mitigation] if rule.mitigation else []) + list(rule.alternatives):
            action = get_action(mitigation.action)
            assert "compose" in action.groups and "compose" in action.deploys, (rule.id, action.name)


def _tasks(doc: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    todo = list(doc)
    while todo:
        task = todo.pop(0)
        if "block" in task:
            todo += list(task["block"])
        else:
            out.append(task)
    return out


@pytest.mark.parametrize("action", sorted(COMPOSE_ACTIONS))
def test_compose_playbooks_follow_house_style(action: str) -> None:
    act = ACTIONS[action]
    book = PLAYBOOKS / "remediate" / act.playbook_name("compose")
    plays = yaml.safe_load(book.read_text())
    assert len(plays) == 1 and plays[0]["hosts"].startswith("{{ " + act.prefix + "_hosts")
    assert "DOCKER_HOST" in plays[0]["environment"]
    tasks = _tasks(plays[0]["tasks"])
    included = [t["ansible.builtin.include_tasks"] for t in tasks if "ansible.builtin.include_tasks" in t]
    assert included[0] == "tasks/compose_state.yml" and "tasks/compose_wait.yml" in included
    for task in tasks + [
        t for name in set(included) for t in _tasks(yaml.safe_load((book.parent / name).read_text()))
    ]:
        assert re.match(r"^[A-Z].*\.$", task["name"]), f"{action}: not a sentence: {task['name']}"
        if "register" in task:
            assert task["register"].startswith((f"__{act.prefix}_", "__compose_")), task["register"]
        module = next(k for k in task if "." in k or k.startswith("collector_"))
        if module in ("ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.uri"):
            assert "changed_when" in task, f"{action}: {task['name']} has no changed_when"
            mutating = task.get("changed_when") is True
            # every command that changes something is skipped in check mode (the plan is check + diff)
            assert not mutating or "not ansible_check_mode" in task.get("when", []), task["name"]
    for var in plays[0].get("vars") or {}:
        assert var.startswith((act.prefix + "_", "__" + act.prefix + "_")), var
