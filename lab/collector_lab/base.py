"""The lab's base rootfs: Debian bookworm from debootstrap, built once, cached by a hash of its recipe.

The recipe is the package list (ours plus `lab/provision/PACKAGES`, one package a line, for
anything the role scripts need), the suite and the configuration steps below. Every package any
role needs is in the base, so first-boot provisioning needs no network. The mirror is read from this
machine's apt sources (deb822 `/etc/apt/sources.list.d/*.sources` or `sources.list`).

The base is shared read-only by every host through a per-host overlayfs (collector_lab.hosts).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from collector.config import Settings
from collector.core import UsageError

from collector_lab import assets
from collector_lab.lock import cache_lock

SUITE = "bookworm"
RECIPE_VERSION = "3"  # bump when the configuration steps below change

# Installed by debootstrap itself (minbase + these).
BOOTSTRAP_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "iproute2",
    "procps",
    "sysstat",
    "curl",
    "git",
    "python3",
    "sudo",
    "ca-certificates",
)
# Installed afterwards with apt inside the rootfs (the machine's network, at build time only).
APT_PACKAGES = (
    "postgresql-15",
    "postgresql-client-15",
    "redis-server",
    "redis-tools",
    "python3-psycopg2",
    "python3-redis",
    "util-linux",
    "e2fsprogs",
    "lsof",
    "iputils-ping",
    "netcat-openbsd",
    "less",
    "kmod",
    "psmisc",
    "strace",
    "jq",
    "nginx-light",
)
# Role services stay disabled in the base: the provisioning hook enables each on its own host.
DISABLED_UNITS = (
    "postgresql.service",
    "redis-server.service",
    "nginx.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-timesyncd.service",
)


@dataclass(frozen=True)
class AptSource:
    """One (uri, suite) pair of this machine's apt sources."""

    uri: str
    suite: str
    components: tuple[str, ...]


def apt_sources(sources_dir: Path = Path("/etc/apt")) -> list[AptSource]:
    """This machine's Debian apt sources, deb822 files first, then one-line sources.list files."""
    found: list[AptSource] = []
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        found.extend(_parse_deb822(path.read_text()))
    one_line = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            found.extend(_parse_one_line(path.read_text()))
    return found


def _parse_deb822(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        comps = tuple(fields.get("components", "main").split())
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(AptSource(uri.rstrip("/"), suite, comps))
    return out


def _parse_one_line(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for line in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()  # type: ignore[assignment]
        if len(line) >= 3 and line[0] == "deb":
            out.append(AptSource(line[1].rstrip("/"), line[2], tuple(line[3:]) or ("main",)))
    return out


def mirror(sources: list[AptSource] | None = None) -> str:
    """The Debian mirror this machine's apt uses for the base suite (no host name hard-coded)."""
    sources = apt_sources() if sources is None else sources
    for src in sources:
        if src.suite == SUITE and "main" in src.components:
            return src.uri
    raise UsageError(f"no apt source for Debian {SUITE} main found in /etc/apt; cannot build the lab base")


def extra_packages() -> tuple[str, ...]:
    """Packages the role scripts ask for in lab/provision/PACKAGES (one a line, # comments)."""
    names: list[str] = []
    for fname in ("PACKAGES", "packages.txt"):
        try:
            text = (assets() / "provision" / fname).read_text()
        except (OSError, FileNotFoundError):
            continue
        names += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return tuple(sorted({n for n in names if n and re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", n)}))


def recipe() -> dict[str, object]:
    """Everything that decides the base's content; its hash names the cache entry."""
    return {
        "suite": SUITE,
        "version": RECIPE_VERSION,
        "bootstrap": list(BOOTSTRAP_PACKAGES),
        "apt": sorted((set(APT_PACKAGES) | set(extra_packages())) - set(BOOTSTRAP_PACKAGES)),
        "disabled": list(DISABLED_UNITS),
    }


def recipe_hash() -> str:
    """Short sha256 of the recipe."""
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def base_root(settings: Settings) -> Path:
    return Path(settings.state_dir) / "base"


def base_path(settings: Settings) -> Path:
    """The rootfs for the current recipe (it may not be built yet)."""
    return base_root(settings) / recipe_hash() / "rootfs"


def is_built(settings: Settings) -> bool:
    """Whether the current recipe's base is complete."""
    return (base_path(settings).parent / "recipe.json").is_file()


def _run(argv: list[str], log: Path, **kw: object) -> None:
    with log.open("ab") as out:
        out.write(("\n$ " + " ".join(argv) + "\n").encode())
        out.flush()
        proc = subprocess.run(
            argv, check=False, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw
        )  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{argv[0]} failed (rc {proc.returncode}); see {log}:\n" + "\n".join(tail))


# Runs inside the new rootfs (chroot in a private mount namespace, so nothing stays mounted).
_CONFIGURE = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
apt-get update -q
apt-get install -y -q --no-install-recommends {apt}
apt-get clean
rm -rf /var/lib/apt/lists/*
systemctl enable systemd-networkd.service
systemctl disable {disabled} 2>/dev/null || true
for u in {disabled}; do systemctl mask "$u" 2>/dev/null || true; done
systemctl unmask postgresql.service redis-server.service
systemctl enable ssh.service sysstat.service
sed -i 's/^ENABLED=.*/ENABLED="true"/' /etc/default/sysstat
mkdir -p /var/log/journal /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=persistent\nSystemMaxUse=64M\n' > /etc/systemd/journald.conf.d/lab.conf
mkdir -p /etc/ssh/sshd_config.d
printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' \
    > /etc/ssh/sshd_config.d/lab.conf
rm -f /etc/ssh/ssh_host_*
rm -f /usr/sbin/policy-rc.d
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
printf 'nameserver 127.0.0.1\n' > /etc/resolv.conf
"""


def build(settings: Settings, *, force: bool = False, log_to: Path | None = None) -> Path:
    """Build the base for the current recipe unless it is cached; returns its rootfs path."""
    root = base_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    final = base_path(settings)
    with cache_lock(root / ".lock"):
        if is_built(settings) and not force:
            return final
        if str(final) in Path("/proc/self/mounts").read_text():
            raise UsageError("lab hosts run on this base: run `collector-lab down` before rebuilding it")
        if shutil.which("debootstrap") is None:
            raise UsageError("debootstrap is not installed (apt-get install debootstrap)")
        entry = final.parent
        if entry.exists():
            shutil.rmtree(entry)
        tmp = root / f".build-{recipe_hash()}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        log = log_to or (root / f"build-{recipe_hash()}.log")
        log.write_text("")
        sources = apt_sources()
        started = time.monotonic()
        rootfs = tmp / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(BOOTSTRAP_PACKAGES),
                "--components=main",
                SUITE,
                str(rootfs),
                mirror(sources),
            ],
            log,
        )
        lines = [
            f"deb {s.uri} {s.suite} {' '.join(s.components)}"
            for s in sources
            if s.suite.split("-")[0] == SUITE
        ]
        (rootfs / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
        shutil.copy("/etc/resolv.conf", rootfs / "etc/resolv.conf")
        spec = recipe()
        script = _CONFIGURE.format(
            apt=" ".join(spec["apt"]),  # type: ignore[arg-type]
            disabled=" ".join(DISABLED_UNITS),
        )
        (rootfs / "tmp/configure.sh").write_text(script)
        shell = (
            f"mount -t proc proc {rootfs}/proc && mount --rbind /dev {rootfs}/dev && "
            f"mount -t sysfs sys {rootfs}/sys && chroot {rootfs} /bin/sh /tmp/configure.sh"
        )
        _run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", shell], log)
        (rootfs / "tmp/configure.sh").unlink()
        tmp.rename(entry)
        (entry / "recipe.json").write_text(
            json.dumps(
                {
                    **spec,
                    "hash": recipe_hash(),
                    "built_s": round(time.monotonic() - started, 1),
                    "mirror": mirror(sources),
                },
                indent=2,
            )
        )
        _prune(root, keep=entry.name)
        return final


def _prune(root: Path, keep: str) -> None:
    """Drop older cached bases and failed builds; a base in use by a mounted overlay is kept."""
    mounts = Path("/proc/self/mounts").read_text()
    for child in root.iterdir():
        if child.name in (keep, ".lock") or not child.is_dir() or str(child) in mounts:
            continue
        if child.name.startswith(".build-") or (child / "recipe.json").exists():
            shutil.rmtree(child, ignore_errors=True)
