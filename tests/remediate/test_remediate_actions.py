"""The action catalogue: parameter validation, defaults, playbooks present and written to house style."""

from __future__ import annotations

import re

import pytest
import yaml

from collector.core import UsageError
from collector.remediate.actions import ACTIONS, get_action, parse_param_args, validate_params

EXPECTED = {
    "restart",
    "pool-resize",
    "memory-limit",
    "rollback",
    "kill-idle-connections",
    "circuit-breaker",
    "rate-limit",
    "extend-cache-ttl",
    "clean-disk",
    "redis-maxmemory",
    "block-client",
    "scale",
}  # block-client and the two before it: tests/e2e; scale: Compose only (tests/e2e/test_compose_scenarios.py)


def test_catalogue_has_every_runbook_mitigation() -> None:
    assert set(ACTIONS) == EXPECTED
    assert get_action("kill-idle-connections").groups == ("db",)
    assert get_action("pool-resize").groups == ("app",)


def test_unknown_action_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown action 'reboot'.*pool-resize"):
        get_action("reboot")


@pytest.mark.parametrize(
    ("action", "raw", "message"),
    [
        ("pool-resize", {}, "parameter size is required"),
        ("pool-resize", {"size": "abc"}, "must be a whole number"),
        ("pool-resize", {"size": "0"}, "must be >= 1"),
        ("pool-resize", {"size": "5000"}, "must be <= 1000"),
        ("pool-resize", {"sise": "5"}, "unknown parameter 'sise'"),
        ("restart", {"x": "1"}, "it takes no parameters"),
        ("circuit-breaker", {"state": "ajar"}, "must be one of open, closed"),
        ("memory-limit", {"max": "lots"}, "invalid value 'lots'"),
        ("rollback", {"tag": "v1;rm -rf /"}, "invalid value"),
        ("kill-idle-connections", {"minutes": "-1"}, "must be >= 0"),
        ("kill-idle-connections", {"database": "x'; DROP TABLE t; --"}, "invalid value"),
        ("rate-limit", {"value": "6001"}, "must be <= 6000"),
        ("extend-cache-ttl", {"seconds": "1.5"}, "whole number"),
    ],
)
def test_bad_parameters_are_refused_with_one_clear_line(
    action: str, raw: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message) as info:
        validate_params(get_action(action), raw)
    assert "\n" not in str(info.value)


def test_parameters_are_typed_and_defaults_filled() -> None:
    assert validate_params(get_action("pool-resize"), {"size": " 20 "}) == {"size": 20}
    assert validate_params(get_action("kill-idle-connections"), {"minutes": "0"}) == {
        "minutes": 0,
        "database": "",
        "application": "",
    }
    assert validate_params(get_action("circuit-breaker"), {"state": "Close"}) == {"state": "closed"}
    # The runbook's numbers: MemoryLimit 4G, cache TTL 1800 s.
    assert validate_params(get_action("memory-limit"), {}) == {"max": "4G"}
    assert validate_params(get_action("extend-cache-ttl"), {}) == {"seconds": 1800}
    assert validate_params(get_action("rollback"), {}) == {"tag": "previous"}


def test_param_args_parse_and_reject_malformed() -> None:
    assert parse_param_args(["size=20", "x=a=b"]) == {"size": "20", "x": "a=b"}
    with pytest.raises(UsageError, match="NAME=VALUE"):
        parse_param_args(["size"])
    with pytest.raises(UsageError, match="given twice"):
        parse_param_args(["size=1", "size=2"])


def test_extravars_are_prefixed_by_the_action() -> None:
    extra = get_action("kill-idle-connections").extravars({"minutes": 5, "database": ""}, "db1")
    assert extra == {
        "kill_idle_connections_minutes": 5,
        "kill_idle_connections_database": "",
        "kill_idle_connections_hosts": "db1",
    }
    with pytest.raises(UsageError, match="invalid value"):
        validate_params(get_action("kill-idle-connections"), {"application": "x' OR '1'='1"})
    assert get_action("circuit-breaker").expected_alerts({"state": "open"}) == (
        "SergasZohoCircuitBreakerOpen",
    )
    assert get_action("circuit-breaker").expected_alerts({"state": "closed"}) == ()


def _tasks(play: dict) -> list[dict]:
    """Every task of the play, those inside blocks (block, rescue, always) included."""
    out: list[dict] = []
    todo = list(play.get("tasks") or []) + list(play.get("handlers") or [])
    while todo:
        task = todo.pop(0)
        if "block" in task:
            todo += [t for part in ("block", "rescue", "always") for t in task.get(part) or []]
        else:
            out.append(task)
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_playbook_follows_house_style(name: str) -> None:
    action = get_action(name)
    assert action.playbook.is_file()
    plays = yaml.safe_load(action.playbook.read_text())
    assert plays[0]["hosts"].startswith("{{ " + action.prefix + "_hosts")
    for task in _tasks(plays[0]):
        assert re.match(r"^[A-Z].*\.$", task["name"]), f"{name}: task name is not a sentence: {task['name']}"
        if "register" in task:
            assert task["register"].startswith(f"__{action.prefix}_"), task["register"]
        module = next(k for k in task if "." in k or k.startswith("collector_"))
        if module in ("ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.uri"):
            assert "changed_when" in task, f"{name}: {task['name']} has no changed_when"
    for var in plays[0].get("vars") or {}:
        assert var.startswith((action.prefix + "_", "__" + action.prefix + "_")), var


def test_env_file_edits_go_through_the_module_that_never_returns_the_file() -> None:
    """The .env is edited by key with collector_safe_file (whose result holds only the key's line:
    tests/remediate/test_safe_file.py), never by a module that would log or diff it."""
    plays = yaml.safe_load(get_action("pool-resize").playbook.read_text())
    tasks = plays[0]["tasks"]
    edits = [t for t in tasks if "collector_safe_file" in t]
    assert edits and all(set(t["collector_safe_file"]) == {"path", "key", "value"} for t in edits)
    writers = ("lineinfile", "copy", "template", "blockinfile", "replace")
    assert not [t["name"] for t in tasks if any(k.endswith(f".{w}") or k == w for k in t for w in writers)]
