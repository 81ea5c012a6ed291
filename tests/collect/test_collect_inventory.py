"""Inventories and host patterns through Ansible's own inventory code; bad input is one clear UsageError."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.core import UsageError
from collector.inventory import default_inventory, load_inventory
from collector.probes import host_roles

HERE = Path(__file__).parent / "inventories"


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("prod", ["app01", "app02", "db01", "web01", "web02", "web10"]),
        ("app", ["app01", "app02"]),
        ("prod:&db", ["db01"]),
        ("web0*", ["web01", "web02"]),
        ("all:!prod", ["db09"]),
        ("app01,db09", ["app01", "db09"]),
    ],
)
def test_yaml_patterns(pattern: str, expected: list[str]) -> None:
    assert sorted(load_inventory(str(HERE / "prod.yml")).match(pattern)) == expected


def test_ini_inventory_and_group_vars_dir() -> None:
    ini = load_inventory(str(HERE / "prod.ini"))
    assert sorted(ini.match("prod:&app")) == ["app01"]
    assert ini.hosts["app01"]["collector_service"] == "sergas-app"
    folder = load_inventory(str(HERE / "dir"))
    assert folder.match("redis") == ["redis01"]
    assert folder.hosts["redis01"]["collector_redis_port"] == 6380
    # An undefined vault variable leaves the var unset (the probe's env stays empty) instead of crashing.
    assert "collector_redis_password" not in folder.hosts["redis01"]


def test_roles_come_from_groups_or_collector_roles() -> None:
    inv = load_inventory(str(HERE / "prod.yml"))
    assert host_roles(inv.groups["db01"], inv.hosts["db01"]) == ("db",)
    assert host_roles(inv.groups["web10"], inv.hosts["web10"]) == ("web",)
    assert host_roles(inv.groups["db09"], inv.hosts["db09"]) == ("db",)  # staging host, collector_roles
    assert inv.hosts["app01"]["collector_prometheus_url"] == "http://127.0.0.1:9090"  # group `all` vars


@pytest.mark.parametrize("pattern", ["nosuch", "web9*", "prod:&redis"])
def test_pattern_matching_nothing_is_a_usage_error(pattern: str) -> None:
    with pytest.raises(UsageError, match="matches no host"):
        load_inventory(str(HERE / "prod.yml")).match(pattern)


def test_malformed_and_missing_inventories_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="malformed"):
        load_inventory(str(HERE / "malformed.yml"))
    with pytest.raises(UsageError, match="does not exist"):
        load_inventory(str(tmp_path / "nope.yml"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no inventory file"):
        load_inventory(str(empty))
    bad_ini = tmp_path / "hosts.ini"
    bad_ini.write_text("[web\nfoo bar baz\n")
    with pytest.raises(UsageError, match="malformed"):
        load_inventory(str(bad_ini))


def test_shipped_inventories_parse() -> None:
    shipped = Path(default_inventory())
    local = load_inventory(str(shipped / "local.yml") if shipped.is_dir() else str(shipped))
    assert "local" in local.match("local")
    assert local.hosts["local"]["ansible_connection"] == "local"
    example = load_inventory(str(Path(__file__).resolve().parents[2] / "inventory" / "example-prod.yml"))
    assert sorted(example.match("prod:&db")) == ["db01.example.internal"]
    documented = set().union(*(set(v) for v in example.hosts.values()))
    for var in (
        "collector_service",
        "collector_deploy_dir",
        "collector_app_url",
        "collector_pg_database",
        "collector_pg_os_user",
        "collector_redis_port",
        "collector_prometheus_url",
        "collector_alertmanager_url",
    ):
        assert var in documented
