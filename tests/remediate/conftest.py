"""Fixtures for the remediate tests: a throw-away inventory, settings pointing into tmp_path, plans."""
from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import Settings
from collector.remediate.plan import Plan

INVENTORY = """\
all:
  children:
    app:
      hosts:
        app1: {ansible_host: 127.0.0.1, collector_service: sergas-app}
        app2: {ansible_host: 127.0.0.1, collector_service: sergas-app}
    db:
      hosts:
        db1: {ansible_host: 127.0.0.1, collector_service: postgresql}
    web:
      hosts:
        web01: {ansible_host: 127.0.0.1, collector_service: ssh}
"""


@pytest.fixture()
def inventory_file(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY)
    return path


@pytest.fixture()
def settings(tmp_path: Path, inventory_file: Path) -> Settings:
    return Settings(inventory=str(inventory_file), plans_dir=str(tmp_path / "plans"),
                    audit_log=str(tmp_path / "audit" / "audit.jsonl"), approval_ttl_s=3600.0, blast_radius=10)


@pytest.fixture()
def plan(inventory_file: Path) -> Plan:
    made = Plan(id="20261128T060000Z-pool-resize-abc123", action="pool-resize", params={"size": 20}, pattern="app",
                inventory=str(inventory_file), targets=["app1", "app2"], requester="alice",
                created="2026-11-28T06:00:00.000Z",
                check={"app1": {"status": "changed", "changed": True, "msg": ""},
                       "app2": {"status": "changed", "changed": True, "msg": ""}},
                diffs={"app1": ["-DATABASE_POOL_SIZE=5\n+DATABASE_POOL_SIZE=20\n"]})
    made.hash = made.compute_hash()
    return made
