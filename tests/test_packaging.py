"""What a user gets from `pip install .`: the wheel, in a fresh venv, runs `collect` and `verify`.

Offline and hermetic: the wheel is built with the test venv's hatchling (no build isolation), and the
fresh venv installs it with `--no-index` from a wheelhouse packed from the distributions installed in
the test venv. Test-only packages sit in that wheelhouse too, so a runtime dependency that is declared
only as a test extra (testinfra was) is not installed and the command that needs it fails here.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# Ours (the wheel under test, the lab) and the installers themselves.
_NOT_PACKED = {"incident-collector", "collector-lab", "pip", "setuptools"}
_SKIPPED_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}

pytestmark = pytest.mark.slow


def _pack(dist: metadata.Distribution, site: Path, dest: Path) -> None:
    """An installed distribution as a wheel again: its files under site-packages plus its dist-info."""
    info = Path(str(dist._path))  # type: ignore[attr-defined]  # the .dist-info folder
    wheel_info = (info / "WHEEL").read_text().splitlines()
    tags = [ln.split(":", 1)[1].strip() for ln in wheel_info if ln.startswith("Tag:")]
    tag = next((t for t in tags if not t.startswith("py2")), "py3-none-any")
    name = str(dist.metadata["Name"]).replace("-", "_").replace(".", "_")
    records = []
    target = dest / f"{name}-{dist.version}-{tag}.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for rel in dist.files or []:
            text = str(rel)
            if text.startswith("..") or "__pycache__" in text or Path(text).name in _SKIPPED_FILES:
                continue  # console scripts are made again from entry_points.txt; byte code is compiled again
            path = site / rel
            if not path.is_file():
                continue
            data = path.read_bytes()
            zf.writestr(text, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{text},sha256={digest},{len(data)}")
        records.append(f"{info.name}/RECORD,,")
        zf.writestr(f"{info.name}/RECORD", "\n".join(records) + "\n")


def _wheelhouse(dest: Path) -> Path:
    dest.mkdir()
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for dist in metadata.distributions():
        where = Path(str(dist._path)).resolve().parent  # type: ignore[attr-defined]
        if where == site and str(dist.metadata["Name"]).lower() not in _NOT_PACKED:
            _pack(dist, site, dest)
    return dest


def _run(*argv: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh venv holding only the wheel and its declared dependencies."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling is not installed (the test extras: bash install-test.sh)")
    root = tmp_path_factory.mktemp("packaging")
    dist = root / "dist"
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        dist,
        REPO,
        cwd=root,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = dist.glob("incident_collector-*.whl")
    venv.create(root / "venv", with_pip=True)
    bin_dir = root / "venv" / "bin"
    house = _wheelhouse(root / "house")
    done = _run(
        bin_dir / "python", "-m", "pip", "install", "--no-index", "--find-links", house, wheel, cwd=root
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return bin_dir


def test_the_wheel_ships_no_test_lab_and_no_test_extra_is_installed(installed: Path) -> None:
    listed = _run(installed / "python", "-m", "pip", "list", "--format", "json", cwd=installed)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "incident-collector" in names
    assert not names & {"collector-lab", "mypy", "ruff", "ansible-lint", "pillow", "hatchling"}, names


def test_collect_local_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    proc = _run(installed / "collect", "--hosts", "local", "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    [manifest] = (tmp_path / "out").glob("*/manifest.json")
    doc: dict[str, Any] = json.loads(manifest.read_text())
    assert doc["hosts"]["local"]["probes"]["uptime"]["status"] == "ok"
    assert list((tmp_path / "out").glob("*.tar.gz")), "no archive beside the bundle"


@pytest.mark.lab
def test_verify_a_lab_host_from_the_installed_wheel(installed: Path, lab: Any, tmp_path: Path) -> None:
    proc = _run(
        installed / "collector", "verify", "--hosts", "db1", "-i", lab.inventory, "--json", cwd=tmp_path
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert "ModuleNotFoundError" not in proc.stdout, proc.stdout
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"] if c["host"] == "db1"}
    assert checks["SELECT 1"]["passed"], checks


def _apt_list(script: str) -> set[str]:
    text = (REPO / script).read_text()
    block = text[text.index("APT_PACKAGES=(") + len("APT_PACKAGES=(") :]
    return set(block[: block.index(")")].split())


def _package_of(executable: str) -> str | None:
    """The Debian package that ships an executable (with /usr merged, dpkg may know it as /bin/x)."""
    where = shutil.which(executable)
    if where is None:
        return None
    name = Path(where).name
    merged = (f"{d}/{name}" for d in ("/bin", "/usr/bin", "/sbin", "/usr/sbin"))
    for path in (str(Path(where).resolve()), where, *merged):
        found = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout:
            return found.stdout.split(":", 1)[0]
    return None


def _base_system(package: str) -> bool:
    shown = subprocess.run(
        ["dpkg-query", "-W", "-f=${Essential} ${Priority}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.stdout.split()[:1] == ["yes"] or shown.stdout.endswith(("required", "important"))


@pytest.mark.skipif(not Path("/usr/bin/dpkg").exists(), reason="Debian packages: needs dpkg")
def test_install_sh_installs_what_the_local_probes_need_and_nothing_for_the_tests() -> None:
    import yaml

    runtime, test = _apt_list("install.sh"), _apt_list("install-test.sh")
    assert not runtime & {
        "chromium",
        "redmine",
        "prometheus",
        "prometheus-alertmanager",
        "systemd-container",
        "debootstrap",
        "ruby",
        "thin",
    }, runtime
    assert {"chromium", "redmine", "prometheus", "systemd-container", "debootstrap"} <= test
    catalogue = yaml.safe_load((REPO / "playbooks" / "vars" / "probes.yml").read_text())["collector_probes"]

    # The probes that run on `local`: every-host ones whose placeholders the runner fills itself.
    def runs_here(probe: dict[str, Any]) -> bool:
        names = set(re.findall(r"(?<![$%])\{([A-Za-z_]\w*)\}", str(probe["command"])))
        return "all" in (probe.get("roles") or ["all"]) and names <= {"since", "since_utc"}

    needed = {exe for p in catalogue if runs_here(p) for exe in p.get("requires") or []}
    assert {"iostat", "free", "dmesg"} <= needed
    for exe in sorted(needed):
        package = _package_of(exe)
        assert package is not None, f"{exe}: not installed on this machine"
        assert package in runtime or _base_system(package), f"{exe} comes from {package}: not in install.sh"
    assert "${COLLECTOR_EDITABLE:-0}" in (REPO / "install.sh").read_text()
    assert "[test" not in (REPO / "install.sh").read_text()
    assert '".[test' in (REPO / "install-test.sh").read_text()
    assert "bash ./install-test.sh" in (REPO / "run-tests.sh").read_text()
