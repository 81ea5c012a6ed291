"""Inventories and host patterns through Ansible's own inventory code; bad input is one clear UsageError."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.core import UsageError
from collector.inventory import default_inventory, load_inventory

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


ROLES_INV = str(HERE / "roles.yml")


@pytest.mark.parametrize(
    "host, roles",
    [
        ("app1", ("app",)),
        ("both", ("app", "db")),  # "app,db" is two roles, never the characters a, p, p, ",", d, b
        ("db1", ("db",)),
        ("listed", ("redis", "web")),
        ("spaced", ("db", "redis")),
        ("plain", ()),
        ("no-such-host", ()),
    ],
)
def test_inventory_roles_is_the_one_answer(host: str, roles: tuple[str, ...]) -> None:
    assert load_inventory(ROLES_INV).roles(host) == roles


def test_groups_give_roles_where_collector_roles_is_unset() -> None:
    inv = load_inventory(str(HERE / "prod.yml"))
    assert inv.roles("db01") == ("db",)
    assert inv.roles("web10") == ("web",)
    assert inv.roles("db09") == ("db",)  # staging host, collector_roles
    assert inv.hosts["app01"]["collector_prometheus_url"] == "http://127.0.0.1:9090"  # group `all` vars


def test_secret_values_are_found_by_name_in_every_hosts_vars() -> None:
    inv = load_inventory(ROLES_INV)
    everything = inv.secret_values()
    assert everything == ["become-pw", "dbhost-redis-pw", "tok-all-hosts"]
    # Only the hosts asked about; paths, URLs, short values and untemplated Jinja are not secrets.
    assert inv.secret_values(["app1"]) == ["become-pw", "tok-all-hosts"]
    assert "/var/lib/collector/id_ed25519" not in everything and "abc" not in everything


def test_secret_var_names() -> None:
    from collector.inventory import is_secret_var, secret_values_in

    for name in (
        "collector_redis_password",
        "ansible_become_pass",
        "collector_api_token",
        "collector_api_key",
        "PGPASSWORD",
        "collector_smtp_auth",
        "collector_ssh_passphrase",
        "aws_secret",
        "db_credentials",  # the redactor's judgement too (was a second regex that missed these)
        "sentry_dsn",
    ):
        assert is_secret_var(name), name
    for name in (
        "ansible_ssh_private_key_file",
        "collector_token_file",
        "collector_app_url",
        "collector_service",
        "collector_password_dir",
        "collector_token_ttl",  # a setting about a secret, not one
        "collector_password_policy",
    ):
        assert not is_secret_var(name), name
    nested = {
        "redis1": {"collector_redis_password": "lab-redis-pw", "collector_redis_port": 6379},
        "app1": {"nested": {"db_password": "nested-pw"}, "tokens": {"api_token": ["tok-1", "tok-2"]}},
    }
    assert secret_values_in(nested) == ["lab-redis-pw", "nested-pw", "tok-1", "tok-2"]
