"""The lab is its own distribution (lab/, `collector-lab`): the product neither imports nor ships it,
the lab uses only the product's public API, its modules form no import cycle, the lab lock lives in
one module, and its command calls real functions (no name guessing)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import collector_lab

# the source tree (CI installs both packages non-editable, so their __file__ is in site-packages)
REPO = Path(__file__).resolve().parents[2]
PRODUCT = REPO / "collector"
LAB_PKG = REPO / "lab" / "collector_lab"
COLLECTOR_LAB = str(Path(sys.executable).parent / "collector-lab")
COLLECTOR = str(Path(sys.executable).parent / "collector")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, [imported names]) for every import in a file; `import x` gives (x, [])."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def test_the_product_does_not_import_or_hold_the_lab() -> None:
    offenders = [
        f"{p.relative_to(REPO)}: {mod}"
        for p in PRODUCT.rglob("*.py")
        for mod, _ in _imports(p)
        if mod.split(".")[0] == "collector_lab" or mod.startswith("collector.lab")
    ]
    assert offenders == []
    assert not (PRODUCT / "lab").exists() and not (PRODUCT / "cli" / "lab.py").exists()
    from collector.cli import COMMANDS

    assert "lab" not in COMMANDS


def test_the_lab_uses_only_the_products_public_api() -> None:
    private = [
        f"{p.name}: {mod}.{name}"
        for p in LAB_PKG.glob("*.py")
        for mod, names in _imports(p)
        if mod.split(".")[0] == "collector"
        for name in [*names, *mod.split(".")[1:]]
        if name.startswith("_")
    ]
    assert private == []


def test_the_lab_modules_form_no_import_cycle() -> None:
    modules = {p.stem for p in LAB_PKG.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in LAB_PKG.glob("*.py"):
        deps: set[str] = set()
        for mod, names in _imports(path):
            if mod == "collector_lab":
                deps |= {n for n in names if n in modules}
            elif mod.startswith("collector_lab."):
                deps.add(mod.split(".")[1])
        graph[path.stem] = deps - {path.stem}

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                return [*path[path.index(dep) :], dep]
            found = cycle_from(dep, [*path, dep])
            if found:
                return found
        return None

    assert [c for m in sorted(graph) if (c := cycle_from(m, [m]))] == []


def test_the_lab_lock_lives_in_one_module() -> None:
    takers = sorted(p.name for p in LAB_PKG.glob("*.py") if "fcntl" in {m for m, _ in _imports(p)})
    assert takers == ["lock.py"]
    naming = sorted(p.name for p in LAB_PKG.glob("*.py") if '"/tmp/collector-lab.lock"' in p.read_text())
    assert naming == ["lock.py"]


def test_the_lab_command_calls_real_functions() -> None:
    for name in ("cli.py", "lifecycle.py", "faults.py"):
        tree = ast.parse((LAB_PKG / name).read_text())
        calls = {
            n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert "getattr" not in calls, name
        assert "importlib" not in {m.split(".")[0] for m, _ in _imports(LAB_PKG / name)}, name


def test_the_wheels_ship_the_lab_assets_with_the_lab_only() -> None:
    product = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = product["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert not [k for k, v in shipped.items() if k.split("/")[0] == "lab" or "/lab" in v]
    lab = tomllib.loads((REPO / "lab" / "pyproject.toml").read_text())
    assert lab["project"]["name"] == "collector-lab"
    assert lab["project"]["scripts"] == {"collector-lab": "collector_lab.cli:main"}
    assets = lab["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert assets == {
        d: f"collector_lab/_data/{d}" for d in ("app", "faults", "monitoring", "provision", "compose")
    }
    assert (collector_lab.assets() / "compose" / "docker-compose.yml").is_file()
    assert (collector_lab.assets() / "provision" / "common.sh").is_file()
    assert (collector_lab.assets() / "monitoring" / "rules.yml").is_file()


def test_collector_has_no_lab_command_and_collector_lab_lists_its_own() -> None:
    old = subprocess.run(
        [COLLECTOR, "lab", "status"], capture_output=True, text=True, timeout=60, check=False
    )
    assert old.returncode == 2 and "No such command 'lab'" in old.stderr
    helped = subprocess.run(
        [COLLECTOR_LAB, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert helped.returncode == 0
    for command in ("build", "up", "down", "status", "reset", "break", "heal", "load", "demo"):
        assert f"  {command} " in helped.stdout, command


def test_bad_input_to_collector_lab_is_one_line_and_exit_2() -> None:
    for argv, says in (
        (["break", "nosuch"], "unknown fault 'nosuch'"),
        (["heal", "nosuch"], "unknown fault"),
        (["load", "--seconds", "0"], "--seconds must be in"),
        (["demo", "nosuch"], "unknown scenario 'nosuch'"),
    ):
        proc = subprocess.run([COLLECTOR_LAB, *argv], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert proc.stderr.startswith("error: ") and says in proc.stderr and proc.stderr.count("\n") == 1, (
            argv
        )
        assert proc.stdout == ""


def test_the_test_command_installs_the_lab_and_drives_it_by_its_own_command() -> None:
    script = (REPO / "run-tests.sh").read_text()
    assert ".venv/bin/pip install -q ./lab" in script and ".venv/bin/pip install -q -e ./lab" in script
    assert (
        script.index("bash ./install-test.sh")
        < script.index("pip install -q ./lab")
        < script.index("collector-lab up")
    )
    for path in (REPO / "run-tests.sh", REPO / ".ci" / "run", REPO / "README.md"):
        # the old subcommand (`collector lab up`), not a path list such as `ruff check collector lab/...`
        assert not re.search(r"\bcollector lab(?!/)", path.read_text()), path
