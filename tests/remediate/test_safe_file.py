"""collector_safe_file, the module pool-resize and compose-memory-limit write with: refusals, what it keeps
(owner, mode, the other lines) and a symlink swapped in while it edits, run on real files of this machine."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from types import ModuleType

import pytest

LIBRARY = Path(__file__).parents[2] / "playbooks" / "remediate" / "library" / "collector_safe_file.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("collector_safe_file", LIBRARY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


safe = _load()


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / ".env").write_text("SECRET=hunter2\nDATABASE_POOL_SIZE=3\nOTHER=keep\n")
    (tmp_path / "victim").write_text("DATABASE_POOL_SIZE=99\nroot-only\n")
    return tmp_path


def test_sets_the_key_keeps_the_rest_the_owner_and_the_mode(tree: Path) -> None:
    env = tree / "app" / ".env"
    os.chown(env, 1234, 5678)
    env.chmod(0o640)
    done = safe.edit(str(env), key="DATABASE_POOL_SIZE", value="20")
    assert done.changed and env.read_text() == "SECRET=hunter2\nDATABASE_POOL_SIZE=20\nOTHER=keep\n"
    info = env.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (1234, 5678, 0o640)
    assert not safe.edit(str(env), key="DATABASE_POOL_SIZE", value="20").changed  # idempotent
    assert sorted(p.name for p in env.parent.iterdir()) == [".env"]  # no temporary file left


def test_check_mode_changes_nothing_and_a_missing_key_is_appended(tree: Path) -> None:
    env = tree / "app" / ".env"
    before = env.read_text()
    assert safe.edit(str(env), key="NEW", value="1", check=True).changed and env.read_text() == before
    safe.edit(str(env), key="NEW", value="1")
    assert env.read_text() == before + "NEW=1\n"
    with pytest.raises(safe.Refused, match="spans lines"):
        safe.edit(str(env), key="NEW", value="1\nEVIL=1")


@pytest.mark.parametrize("how", ["file", "folder"])
def test_a_symlink_on_the_path_is_refused_in_check_mode_and_in_apply(tree: Path, how: str) -> None:
    victim = tree / "victim"
    before = victim.read_text()
    if how == "file":
        (tree / "app" / "link.env").symlink_to(victim)
        path = tree / "app" / "link.env"
    else:
        (tree / "via").symlink_to(tree)
        path = tree / "via" / "victim"
    for check in (True, False):
        with pytest.raises(safe.Refused, match="symlink"):
            safe.edit(str(path), key="DATABASE_POOL_SIZE", value="7", check=check)
    assert victim.read_text() == before


def test_a_hard_link_and_a_non_file_are_refused(tree: Path) -> None:
    os.link(tree / "victim", tree / "app" / "hard.env")
    with pytest.raises(safe.Refused, match="hard links"):
        safe.edit(str(tree / "app" / "hard.env"), key="DATABASE_POOL_SIZE", value="7")
    with pytest.raises(safe.Refused, match="not a plain file"):
        safe.edit(str(tree / "app"), content="x")
    with pytest.raises(safe.Refused, match="does not exist"):
        safe.edit(str(tree / "app" / "none.env"), key="A", value="1")


def test_content_creates_the_file_as_the_folders_owner(tree: Path) -> None:
    os.chown(tree / "app", 4321, 8765)
    target = tree / "app" / "docker-compose.override.yml"
    done = safe.edit(str(target), content="services: {}\n", mode=0o644)
    assert done.changed and done.before is None and target.read_text() == "services: {}\n"
    info = target.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (4321, 8765, 0o644)
    assert not safe.edit(str(target), content="services: {}\n").changed


def test_a_symlink_swapped_in_while_it_edits_is_replaced_never_followed(tree: Path) -> None:
    """The folder's owner flips .env between a plain file and a symlink to root's file as fast as it can;
    check-then-write code (stat, then lineinfile) loses this race. The victim is never read or changed."""
    victim = tree / "victim"
    before = victim.read_text()
    env = tree / "app" / ".env"
    spare = tree / "app" / "spare"
    stop = threading.Event()

    def attacker() -> None:
        while not stop.is_set():
            try:
                spare.write_text("DATABASE_POOL_SIZE=1\n")
                os.replace(spare, env)  # a plain file...
                spare.unlink(missing_ok=True)
                spare.symlink_to(victim)
                os.replace(spare, env)  # ...then a symlink to root's file
            except OSError:
                pass

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    outcomes = {"changed": 0, "refused": 0}
    read: list[str] = []
    try:
        for i in range(400):
            try:
                read.append(safe.edit(str(env), key="DATABASE_POOL_SIZE", value=str(i + 2)).before)
                outcomes["changed"] += 1
            except safe.Refused:
                outcomes["refused"] += 1
            except FileNotFoundError:
                pass
    finally:
        stop.set()
        thread.join()
    assert victim.read_text() == before, outcomes
    assert not [text for text in read if "root-only" in text], "root's file was read through the symlink"
    assert outcomes["changed"] and outcomes["refused"], outcomes  # both sides of the race were met


def test_a_key_edit_returns_only_the_keys_line_never_the_file(tree: Path) -> None:
    env = tree / "app" / ".env"
    done = safe.edit(str(env), key="DATABASE_POOL_SIZE", value="9")
    result = safe.result_of(done, str(env), "DATABASE_POOL_SIZE", diff=True)
    assert result == {
        "changed": True,
        "path": str(env),
        "created": False,
        "line_before": "DATABASE_POOL_SIZE=3",
    }
    override = tree / "app" / "override.yml"
    made = safe.edit(str(override), content="services: {}\n")
    assert safe.result_of(made, str(override), None, diff=True)["diff"] == {
        "before": "",
        "after": "services: {}\n",
        "before_header": str(override),
    }
