"""The evidence bundle: layout, manifest, redaction, checksums, private modes, deterministic archive.

`BundleWriter` builds `DIR/<incident>/` in a hidden temporary folder beside it, writing each host's
results as they arrive (so a full disk or a signal keeps what came in), and renames it into place when
the manifest is written. `write_bundle` does all of that for a finished RunResult. Later steps open the
bundle with `Bundle.open`, add derived files (findings, reports, actions) and the last step of each
command calls `.seal()` once: checksums, then `<incident>.tar.gz` and its `.sha256` beside the folder.

Evidence is private: folders 0700, files 0600, archive and .sha256 0600 (0750/0640 and the group when the
`evidence_group` setting names one; a bundle folder's own mode and group carry that choice to later steps).
Reading never leaves the folder: every read goes through `open_inside` (no absolute path, no `..`, no
symlink followed), and sealing skips anything that is not a regular file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import grp
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from collector import __version__, envfile
from collector.config import Settings
from collector.core import BUNDLE_SCHEMA, HostResult, ProbeResult, RunResult, UsageError, utcnow
from collector.probes import load_entries
from collector.redact import Redactor
from collector.times import instant_or_none

REDACTION_SCHEMA = "incident-collector/redaction/v1"
SUMS = "SHA256SUMS"
MANIFEST = "manifest.json"
REDACTION = "redaction.json"
LOG = "collector.log"
UNREDACTED_SUFFIX = "-UNREDACTED"
TRUNCATION_MARKER = (
    b"\n\n[... incident-collector: output truncated: %d bytes omitted, head and tail kept (cap %d bytes) ...]"
    b"\n\n"
)
_MARKER_WORD = b"output truncated"  # the runner's marker and ours both say it; tests and people grep for it
# Files later steps may not replace: the evidence and the bundle's own bookkeeping.
_PROTECTED = (MANIFEST, SUMS, REDACTION)
_PROTECTED_DIRS = ("hosts/", "monitoring/")
_CHUNK = 1024 * 1024


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe lower-case slug: 'prod:&db' → 'prod-db'."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return out or "hosts"


def _safe_name(text: str) -> str:
    """One path component from a host or probe name (no separators, no dot-dot)."""
    out = re.sub(r"[^A-Za-z0-9._@+-]+|\.{2,}", "_", text).lstrip(".")
    return out or "_"


def incident_id(pattern: str, started: str | None = None) -> str:
    """The default incident id: inc-YYYYMMDDTHHMMSSZ-<pattern-slug>."""
    when = instant_or_none(started) or _dt.datetime.now(_dt.UTC)
    return f"inc-{when.astimezone(_dt.UTC):%Y%m%dT%H%M%SZ}-{slug(pattern)}"


def cap_output(data: bytes, cap: int) -> tuple[bytes, bool]:
    """Keep head and tail of `data` within `cap` bytes with a visible marker between them."""
    if cap <= 0 or len(data) <= cap:
        return data, False
    marker = TRUNCATION_MARKER % (len(data) - cap, cap)
    keep = max(cap - len(marker), 0)
    head = keep // 2
    return data[:head] + marker + data[len(data) - (keep - head) :], True


class OutsideBundle(ValueError):
    """A bundle path that would leave the bundle: absolute, with `..`, or through a symlink."""


class BundleWriteFailed(Exception):
    """The disk failed even the bundle's bookkeeping (the reserve was not enough): one line for the user."""


@dataclass(frozen=True)
class Privacy:
    """The modes (and group) evidence gets: owner-only, or owner + a team group."""

    gid: int | None = None

    @property
    def dir_mode(self) -> int:
        return 0o750 if self.gid is not None else 0o700

    @property
    def file_mode(self) -> int:
        return 0o640 if self.gid is not None else 0o600

    @classmethod
    def from_settings(cls, settings: Settings) -> Privacy:
        """The `evidence_group` setting: "" = owner only; an unknown group is bad input."""
        name = (settings.evidence_group or "").strip()
        if not name:
            return cls()
        try:
            return cls(int(name) if name.isdigit() else grp.getgrnam(name).gr_gid)
        except KeyError:
            raise UsageError(f"setting evidence_group: no group {name!r} on this machine") from None

    @classmethod
    def of(cls, root: Path) -> Privacy:
        """What a written bundle chose: its folder's group when the folder is group-readable."""
        info = os.stat(root)
        return cls(info.st_gid if info.st_mode & 0o050 else None)

    def fix(self, target: int | Path, directory: bool) -> None:
        """Give a file descriptor or path its mode (and group)."""
        mode = self.dir_mode if directory else self.file_mode
        if isinstance(target, int):
            os.fchmod(target, mode)
            if self.gid is not None:
                os.fchown(target, -1, self.gid)
        else:
            os.chmod(target, mode)
            if self.gid is not None:
                os.chown(target, -1, self.gid)


def make_private_dir(path: Path, privacy: Privacy) -> None:
    """Create `path` (and missing parents) with the evidence folder mode; an existing folder is left as it
    is."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=privacy.dir_mode)
            privacy.fix(folder, directory=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_handle(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def _parts(relpath: str) -> list[str]:
    """The components of a path inside the bundle; OutsideBundle for anything that could leave it."""
    if not isinstance(relpath, str) or not relpath or "\0" in relpath:
        raise OutsideBundle(f"{relpath!r} is not a path inside the bundle")
    if relpath.startswith(("/", "\\")):
        raise OutsideBundle(f"{relpath!r} is an absolute path, not a path inside the bundle")
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise OutsideBundle(f"{relpath!r} leaves the bundle")
    return parts


def open_inside(root: Path, relpath: str) -> IO[bytes]:
    """Open a regular file of the bundle at `root` for reading without ever leaving the folder.

    Each component is opened relative to the one before with O_NOFOLLOW, so neither `..`, an absolute
    path, nor a symlink anywhere on the way (even one planted after a check) reaches outside.
    FileNotFoundError when absent; OutsideBundle when the path is unsafe or not a regular file.
    """
    parts = _parts(relpath)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                step = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OutsideBundle(
                        f"{relpath!r}: {part} is a symlink or not a folder; not followed"
                    ) from None
                raise
            os.close(fd)
            fd = step
        try:
            handle = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutsideBundle(f"{relpath!r} is a symlink; not followed") from None
            raise
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        os.close(handle)
        raise OutsideBundle(f"{relpath!r} is not a regular file")
    return os.fdopen(handle, "rb")


def read_inside(root: Path, relpath: str) -> bytes | None:
    """The bytes of a regular file inside the bundle, or None when it is absent (OutsideBundle when
    unsafe)."""
    try:
        with open_inside(root, relpath) as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _write_atomic(path: Path, data: bytes, privacy: Privacy | None = None) -> None:
    """Write via a hidden temporary file and rename, so readers never see half a file; private mode."""
    privacy = privacy or Privacy()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            privacy.fix(handle.fileno(), directory=False)
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative POSIX path, lstat) of every entry under `root`, symlinks not followed, hidden ones
    skipped."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        base = Path(folder)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in dirs + files:
            if name.startswith("."):
                continue
            path = base / name
            yield path.relative_to(root).as_posix(), os.lstat(path)


def _bundle_files(root: Path) -> list[str]:
    """Every regular file of the bundle as a sorted POSIX relative path (no symlink, no hidden temporary)."""
    return sorted(rel for rel, info in _walk(root) if stat.S_ISREG(info.st_mode))


def _strays(root: Path) -> list[str]:
    """What is neither a regular file nor a folder (planted symlinks, fifos): never read, never archived."""
    return sorted(
        rel for rel, info in _walk(root) if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode)
    )


def _file_sha256(root: Path, rel: str) -> str:
    with open_inside(root, rel) as handle:
        return _sha256_handle(handle)


def write_sums(root: Path, privacy: Privacy | None = None) -> dict[str, str]:
    """(Re)write SHA256SUMS (sha256sum -c format) over every regular file but itself; returns path → hex."""
    sums = {rel: _file_sha256(root, rel) for rel in _bundle_files(root) if rel != SUMS}
    _write_atomic(
        root / SUMS, "".join(f"{h}  {rel}\n" for rel, h in sums.items()).encode(), privacy or Privacy.of(root)
    )
    return sums


def write_archive(root: Path, mtime: int = 0, privacy: Privacy | None = None) -> Path:
    """Write <root>.tar.gz (deterministic: sorted, fixed owner/mode/mtime, gzip mtime 0) and .sha256, both
    private."""
    privacy = privacy or Privacy.of(root)
    name = root.name
    archive = root.parent / f"{name}.tar.gz"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tar.gz.tmp", dir=root.parent)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            privacy.fix(raw.fileno(), directory=False)
            files = _bundle_files(root)
            dirs = sorted({str(Path(rel).parent.as_posix()) for rel in files} - {"."})
            dirs = sorted({p for d in dirs for p in _parents(d)})
            for rel in [""] + dirs:
                tar.addfile(_tarinfo(f"{name}/{rel}".rstrip("/"), tarfile.DIRTYPE, 0, mtime, privacy))
            for rel in files:
                with open_inside(root, rel) as handle:
                    size = os.fstat(handle.fileno()).st_size
                    tar.addfile(_tarinfo(f"{name}/{rel}", tarfile.REGTYPE, size, mtime, privacy), handle)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _write_atomic(
        root.parent / f"{name}.tar.gz.sha256", f"{sha256_file(archive)}  {archive.name}\n".encode(), privacy
    )
    return archive


def _parents(rel_dir: str) -> list[str]:
    parts = rel_dir.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _tarinfo(name: str, kind: bytes, size: int, mtime: int, privacy: Privacy) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = mtime
    info.mode = (
        privacy.dir_mode if kind == tarfile.DIRTYPE else privacy.file_mode
    )  # private once extracted too
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _archive_mtime(manifest: dict[str, Any]) -> int:
    """The archive's fixed timestamp: the run's start, so the same folder gives the same bytes."""
    started = instant_or_none(manifest.get("started"))
    return int(started.timestamp()) if started else 0


def _entry(result: ProbeResult, redactor: Redactor, path: str | None, data: bytes) -> dict[str, Any]:
    """A probe's manifest entry; sha256/bytes describe the redacted file as it lies in the bundle."""
    return {
        "command": redactor.redact_text_or_withhold(result.command or "", MANIFEST),
        "status": result.status,
        "rc": result.rc,
        "started": result.started,
        "duration_s": round(float(result.duration_s or 0.0), 3),
        "bytes": len(data),
        "output_bytes": result.bytes or len(result.output or b""),  # produced on the host, before the cap
        "truncated": bool(result.truncated),
        "sha256": hashlib.sha256(data).hexdigest(),
        "path": path,
        "error": redactor.redact_text_or_withhold(result.error, MANIFEST) if result.error else None,
    }


def _visible_cap(result: ProbeResult, cap: int) -> tuple[bytes, bool]:
    """The output to store: capped here if a transport did not, and never truncated without a marker."""
    data = result.output or b""
    if cap > 0 and len(data) > cap + 4096:  # the runner's own marker may overshoot its cap a little
        data, _ = cap_output(data, cap)
        return data, True
    if result.truncated and _MARKER_WORD not in data:
        produced = result.bytes or len(data)
        data += (
            b"\n[... incident-collector: output truncated on the host: %d bytes produced, %d kept ...]\n"
            % (produced, len(data))
        )
    return data, bool(result.truncated)


def _claim_dir(out_dir: Path, name: str) -> str:
    """A free bundle name, claimed by creating its empty folder (mkdir is atomic): two runs that start in the
    same second, in two processes, never end up with the same name. The full bundle replaces the empty
    folder."""
    candidate, n = name, 1
    while True:
        if not (out_dir / f"{candidate}.tar.gz").exists():
            try:
                (out_dir / candidate).mkdir(mode=0o700)
                return candidate
            except FileExistsError:
                pass
        n += 1
        candidate = f"{name}-{n}"


def _free_path(root: Path, stem: str, suffix: str) -> str:
    """`stem+suffix`, or `stem-2+suffix`... when two names clean up to the same file name."""
    rel, n = f"{stem}{suffix}", 1
    while (root / rel).exists():
        n += 1
        rel = f"{stem}-{n}{suffix}"
    return rel


def _summary(run: RunResult) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for result in run.hosts.values():
        by_status[result.status] = by_status.get(result.status, 0) + 1
    return {
        "hosts": len(run.hosts),
        "by_status": dict(sorted(by_status.items())),
        "failed_hosts": sorted(run.failed_hosts),
    }


def _redaction_doc(redactor: Redactor, fingerprints: dict[str, Any] | None = None) -> dict[str, Any]:
    counts = {rule: dict(sorted(files.items())) for rule, files in sorted(redactor.counts.items())}
    doc = {
        "schema": REDACTION_SCHEMA,
        "enabled": redactor.enabled,
        "placeholder": "«REDACTED:<rule>:<n>» — the same value gets the same placeholder within the bundle",
        "rules": redactor.describe(),
        "counts": counts,
        "issued": dict(sorted(redactor.issued.items())),
        "total": redactor.total(),
        "failures": list(redactor.failures),  # withheld (fail closed): where and why
    }
    if fingerprints is not None:
        doc["fingerprints"] = fingerprints
    return doc


def _is_disk_error(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS)


# Room kept free on the bundle's filesystem for the manifest, checksums and log when the disk fills up
# (released only then): a fixed base plus a share per host.
_RESERVE_BASE = 192 * 1024
_RESERVE_PER_HOST = 48 * 1024
_RESERVE_MAX = 32 * 1024 * 1024


class BundleWriter:
    """One bundle being written: host results go in as they arrive, `finish` writes the manifest and renames.

    Thread-safe (transports report hosts from their own threads). A write that fails with a disk error
    (full disk, quota, I/O error) stops further evidence writes: what is written stays, and the manifest
    says `incomplete` with the reason and every file that is missing.
    """

    def __init__(
        self,
        run: RunResult,
        settings: Settings,
        *,
        out_dir: Path | str | None = None,
        known_secrets: Iterable[str] = (),
        redactor: Redactor | None = None,
        dotenv_probes: Collection[str] | None = None,
        hosts_hint: int = 1,
    ) -> None:
        self.settings = settings
        self.privacy = Privacy.from_settings(settings)
        self.out = Path(out_dir if out_dir is not None else settings.out_dir)
        make_private_dir(self.out, self.privacy)
        self.redactor = redactor or Redactor(settings.redact_patterns, known_secrets, enabled=settings.redact)
        self.dotenv_probes = frozenset(
            dotenv_probes if dotenv_probes is not None else envfile.capture_probes(load_entries())
        )
        self.key: bytes | None = None
        if self.redactor.enabled and self.dotenv_probes:
            try:
                self.key = envfile.load_key(settings.fingerprint_key or None)
            except (OSError, ValueError) as exc:
                raise UsageError(f"setting fingerprint_key: {exc}".splitlines()[0]) from None
        self.fingerprinted = 0
        name = run.incident or incident_id(run.pattern, run.started)
        if not self.redactor.enabled and not name.endswith(UNREDACTED_SUFFIX):
            name += UNREDACTED_SUFFIX
        self.name = _claim_dir(self.out, _safe_name(name))
        self.final = self.out / self.name
        self.lock = threading.Lock()
        self.hosts: dict[str, dict[str, Any]] = {}
        self.monitoring: dict[str, Any] = {}
        self.missing: list[str] = []
        self.disk_error: str | None = None
        self.finished = False
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.name}.", suffix=".tmp", dir=self.out))
            self.privacy.fix(self.tmp, directory=True)
        except BaseException:
            with contextlib.suppress(OSError):
                self.final.rmdir()
            raise
        self.reserve = self.tmp / ".reserve"
        self._reserve(min(_RESERVE_BASE + _RESERVE_PER_HOST * max(1, hosts_hint), _RESERVE_MAX))

    # -- writing ---------------------------------------------------------------------------------
    def _reserve(self, size: int) -> None:
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError:  # no room even for that, or no fallocate: the bookkeeping takes its chances
            self.reserve.unlink(missing_ok=True)

    def _mkdirs(self, rel: str) -> None:
        folder = self.tmp
        for part in Path(rel).parent.parts:
            folder = folder / part
            if not folder.is_dir():
                folder.mkdir(mode=self.privacy.dir_mode)
                self.privacy.fix(folder, directory=True)

    def _store(self, rel: str, data: bytes) -> bool:
        """Write one evidence file; False (and noted as missing) once the disk has failed us."""
        if self.disk_error is None:
            try:
                self._mkdirs(rel)
                _write_atomic(self.tmp / rel, data, self.privacy)
                return True
            except OSError as exc:
                if not _is_disk_error(exc):
                    raise
                self.disk_error = f"{exc.strerror or exc} while writing {rel}"
        self.missing.append(rel)
        return False

    def _evidence(self, probe: ProbeResult, rel: str) -> tuple[bytes, bool, str | None]:
        raw, truncated = _visible_cap(probe, self.settings.cap_bytes)
        if self.key is not None and probe.probe in self.dotenv_probes and raw:
            raw, replaced = envfile.filter_bytes(raw, self.key)
            self.fingerprinted += replaced
        data, withheld = self.redactor.redact_or_withhold(
            raw, rel
        )  # fail closed: a placeholder, never clear text
        return data, truncated, withheld

    def add_host(self, result: HostResult) -> None:
        """Write one host's evidence now (a host already written is left as it is)."""
        with self.lock:
            if result.host in self.hosts or self.finished:
                return
            probes: dict[str, Any] = {}
            for probe in sorted(result.probes, key=lambda p: p.probe):
                rel = _free_path(
                    self.tmp, f"hosts/{_safe_name(result.host)}/{_safe_name(probe.probe)}", ".txt"
                )
                data, truncated, withheld = self._evidence(probe, rel)
                stored = self._store(rel, data)
                probes[probe.probe] = _entry(probe, self.redactor, rel if stored else None, data)
                probes[probe.probe]["truncated"] = truncated
                if withheld:
                    probes[probe.probe]["redaction_error"] = withheld
            self.hosts[result.host] = {
                "status": result.status,
                "error": self.redactor.redact_text_or_withhold(result.error, MANIFEST)
                if result.error
                else None,
                "roles": list(result.roles),
                "probes": probes,
            }

    def _add_monitoring(self, queries: Iterable[ProbeResult]) -> None:
        for query in sorted(queries, key=lambda p: p.probe):
            rel = _free_path(self.tmp, f"monitoring/{_safe_name(query.probe)}", ".json")
            data, withheld = self.redactor.redact_or_withhold(query.output or b"", rel)
            stored = self._store(rel, data)
            self.monitoring[query.probe] = _entry(query, self.redactor, rel if stored else None, data)
            if withheld:
                self.monitoring[query.probe]["redaction_error"] = withheld

    @property
    def incomplete(self) -> dict[str, Any] | None:
        """None, or why the bundle is incomplete and which of its files are missing."""
        if self.disk_error is None:
            return None
        return {"reason": f"disk error: {self.disk_error}", "missing": list(self.missing), "archive": False}

    def _bookkeeping(self, run: RunResult, log_lines: Iterable[str]) -> None:
        log = "".join(f"{line.rstrip(chr(10))}\n" for line in log_lines)
        if self.disk_error is not None:
            log += (
                f"{utcnow()} bundle INCOMPLETE: {self.disk_error}; {len(self.missing)} file(s) not written\n"
            )
        self.reserve.unlink(missing_ok=True)  # the room kept for exactly this
        _write_atomic(
            self.tmp / LOG,
            self.redactor.redact_text_or_withhold(log, LOG).encode("utf-8", "surrogateescape"),
            self.privacy,
        )
        manifest = {
            "schema": BUNDLE_SCHEMA,
            "incident": self.name,
            "tool_version": __version__,
            "command_line": [
                self.redactor.redact_text_or_withhold(arg, MANIFEST) for arg in run.command_line
            ],
            "pattern": run.pattern,
            "inventory": self.redactor.redact_text_or_withhold(run.inventory, MANIFEST),
            "engine": run.engine,
            "since": run.since,
            "redacted": self.redactor.enabled,
            "started": run.started,
            "finished": run.finished or utcnow(),
            "interrupted": bool(run.interrupted),
            "incomplete": self.incomplete,
            "summary": _summary(run),
            "hosts": {h: self.hosts[h] for h in sorted(self.hosts)},
            "monitoring": self.monitoring,
        }
        _write_atomic(self.tmp / MANIFEST, _json_bytes(manifest), self.privacy)
        fingerprints = None
        if self.key is not None:
            fingerprints = {
                "method": (
                    "HMAC-SHA256(controller key, 'NAME=value'), first 8 hex digits: equal within the key"
                ),
                "key_id": envfile.key_id(self.key),
                "probes": sorted(self.dotenv_probes),
                "values": self.fingerprinted,
            }
        _write_atomic(
            self.tmp / REDACTION, _json_bytes(_redaction_doc(self.redactor, fingerprints)), self.privacy
        )
        write_sums(self.tmp, self.privacy)

    def finish(self, run: RunResult, log_lines: Iterable[str] = (), *, archive: bool = False) -> Path:
        """Write the hosts not yet written, the monitoring answers, log, manifest, checksums; rename into
        place.

        The archive is the last step of the command (`Bundle.seal`); `archive=True` writes it here, unless
        the bundle is incomplete (a full disk has no room for a second copy).
        """
        try:
            for host in sorted(run.hosts):
                self.add_host(run.hosts[host])
            with self.lock:
                self.finished = True
                self._add_monitoring(run.monitoring)
                try:
                    self._bookkeeping(run, log_lines)
                except OSError as exc:
                    if not _is_disk_error(exc):
                        raise
                    os.rename(self.tmp, self.final)  # keep the evidence in sight even without its manifest
                    raise BundleWriteFailed(
                        f"disk error writing the bundle's manifest ({exc.strerror or exc}): {self.final} "
                        "holds the evidence written so far, without a manifest"
                    ) from None
                os.rename(
                    self.tmp, self.final
                )  # atomic, over the claimed empty folder: the bundle appears whole
        except BundleWriteFailed:
            raise
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.final.rmdir()  # only while it is still the empty claim
            raise
        self.privacy.fix(self.final, directory=True)
        if archive and self.incomplete is None:
            with open_inside(self.final, MANIFEST) as handle:
                write_archive(self.final, _archive_mtime(json.loads(handle.read())), self.privacy)
        return self.final


def write_bundle(
    run: RunResult,
    settings: Settings,
    *,
    out_dir: Path | None = None,
    log_lines: Iterable[str] = (),
    known_secrets: Iterable[str] = (),
    redactor: Redactor | None = None,
    archive: bool = True,
    dotenv_probes: Collection[str] | None = None,
) -> Path:
    """Write a finished run's bundle and return its folder; with `archive`, the sealed archive beside it."""
    writer = BundleWriter(
        run,
        settings,
        out_dir=out_dir,
        known_secrets=known_secrets,
        redactor=redactor,
        dotenv_probes=dotenv_probes,
        hosts_hint=len(run.hosts),
    )
    return writer.finish(run, log_lines, archive=archive)


class Bundle:
    """A written bundle: read its manifest and evidence, add derived files, seal it again."""

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        known_secrets: Iterable[str] = (),
        extra_patterns: Iterable[str] = (),
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.refused: list[str] = []  # paths a reader asked for that would have left the bundle
        self._lock_fd: int | None = None
        self._lock_depth = 0
        previous = self._redaction()
        self.redactor = Redactor(
            extra_patterns,
            known_secrets,
            enabled=bool(manifest.get("redacted", True)),
            start_numbers=previous.get("issued") or {},
        )

    @classmethod
    def open(
        cls, path: str | Path, *, known_secrets: Iterable[str] = (), extra_patterns: Iterable[str] = ()
    ) -> Bundle:
        """Open a bundle folder (or its manifest.json, or the .tar.gz beside it); UsageError if it is none."""
        root = Path(path)
        if root.name == MANIFEST:
            root = root.parent
        elif root.name.endswith(".tar.gz") and not root.is_dir():
            root = root.with_name(root.name[: -len(".tar.gz")])
        if not root.is_dir():
            raise UsageError(f"{path} is not a bundle (no {MANIFEST} in it)")
        try:
            data = read_inside(root, MANIFEST)
            if data is None:
                raise UsageError(f"{path} is not a bundle (no {MANIFEST} in it)")
            manifest = json.loads(data)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"{path} is not a bundle ({MANIFEST} is unreadable: {exc})".splitlines()[0]
            ) from None
        if not isinstance(manifest, dict) or "schema" not in manifest:
            raise UsageError(f"{path} is not a bundle ({MANIFEST} has no schema)")
        if manifest["schema"] != BUNDLE_SCHEMA:
            raise UsageError(
                f"bundle schema {manifest['schema']!r} not supported (this tool reads {BUNDLE_SCHEMA})"
            )
        return cls(root, manifest, known_secrets, extra_patterns)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def incident(self) -> str:
        return str(self.manifest.get("incident") or self.path.name)

    @property
    def hosts(self) -> list[str]:
        return sorted(self.manifest.get("hosts", {}))

    @property
    def redacted(self) -> bool:
        return bool(self.manifest.get("redacted", True))

    @property
    def incomplete(self) -> dict[str, Any] | None:
        """Why the bundle is incomplete and what is missing (a disk filled up while writing it), or None."""
        value = self.manifest.get("incomplete")
        return value if isinstance(value, dict) else None

    @property
    def archive_path(self) -> Path:
        return self.path.parent / f"{self.path.name}.tar.gz"

    def host(self, host: str) -> dict[str, Any]:
        """The manifest entry of a host ({} when the bundle has no such host)."""
        return dict(self.manifest.get("hosts", {}).get(host, {}))

    def probe(self, host: str, probe: str) -> dict[str, Any] | None:
        """The manifest entry of one probe on one host, or None."""
        entry = self.manifest.get("hosts", {}).get(host, {}).get("probes", {}).get(probe)
        return dict(entry) if entry is not None else None

    def probes(self, host: str) -> list[str]:
        """The probe names recorded for a host."""
        return sorted(self.manifest.get("hosts", {}).get(host, {}).get("probes", {}))

    def read_file(self, relpath: str) -> bytes | None:
        """Any regular file of the bundle by relative path, or None (absent, or a path that would leave
        it)."""
        try:
            return read_inside(self.path, relpath)
        except OutsideBundle as exc:
            self.refused.append(str(exc))
            return None

    def read(self, host: str, probe: str) -> bytes | None:
        """The (redacted) raw output of a probe, or None when it was not recorded."""
        entry = self.probe(host, probe)
        if not entry or not entry.get("path"):
            return None
        return self.read_file(str(entry["path"]))

    def text(self, host: str, probe: str) -> str | None:
        """The output of a probe as text (undecodable bytes replaced), or None."""
        data = self.read(host, probe)
        return None if data is None else data.decode("utf-8", "replace")

    @property
    def monitoring_names(self) -> list[str]:
        return sorted(self.manifest.get("monitoring", {}))

    def monitoring(self, name: str) -> Any:
        """The parsed JSON of a monitoring query, or None when missing or not JSON."""
        entry = self.manifest.get("monitoring", {}).get(name)
        if not entry or not entry.get("path"):
            return None
        data = self.read_file(str(entry["path"]))
        try:
            return None if data is None else json.loads(data)
        except ValueError:
            return None

    def read_json(self, relpath: str) -> Any:
        """A JSON file of the bundle (e.g. findings.json, actions.json), or None."""
        data = self.read_file(relpath)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    def exists(self, relpath: str) -> bool:
        """Whether the bundle holds this regular file (a symlink or a path outside it does not count)."""
        return self.read_file(relpath) is not None

    def files(self) -> list[str]:
        """Every regular file of the bundle (relative POSIX paths, sorted)."""
        return _bundle_files(self.path)

    def verify(self) -> list[str]:
        """Problems found checking SHA256SUMS against the files ([] when everything matches)."""
        try:
            sums = read_inside(self.path, SUMS)
        except OutsideBundle as exc:
            return [str(exc)]
        if sums is None:
            return [f"{SUMS} is missing"]
        problems: list[str] = []
        listed: set[str] = set()
        for line in sums.decode("utf-8", "replace").splitlines():
            digest, _, rel = line.partition("  ")
            listed.add(rel)
            try:
                if _file_sha256(self.path, rel) != digest:
                    problems.append(f"{rel}: checksum mismatch")
            except FileNotFoundError:
                problems.append(f"{rel}: missing")
            except (OutsideBundle, OSError) as exc:
                problems.append(f"{rel}: {exc}")
        problems += [f"{rel}: not in {SUMS}" for rel in self.files() if rel != SUMS and rel not in listed]
        problems += [f"{rel}: not a regular file (symlink?); never read" for rel in _strays(self.path)]
        entries = [(f"{h}/{n}", self.probe(h, n) or {}) for h in self.hosts for n in self.probes(h)]
        entries += [(f"monitoring/{n}", self.manifest["monitoring"][n] or {}) for n in self.monitoring_names]
        for where, entry in entries:
            if entry.get("path"):
                try:
                    _parts(str(entry["path"]))
                except OutsideBundle as exc:
                    problems.append(f"manifest {where}: {exc}")
        return problems

    # -- adding derived files ---------------------------------------------------------------------
    def _resolve(self, relpath: str) -> Path:
        try:
            parts = _parts(relpath)
        except OutsideBundle as exc:
            raise UsageError(str(exc)) from None
        if parts[0].startswith("."):
            raise UsageError(f"{relpath!r} is not a path inside the bundle")
        folder = self.path
        for part in parts[:-1]:  # a derived file never lands through a symlinked folder
            folder = folder / part
            if folder.is_symlink():
                raise UsageError(f"{relpath!r}: {part} is a symlink; not written through")
            if not folder.exists():
                folder.mkdir(mode=Privacy.of(self.path).dir_mode)
                Privacy.of(self.path).fix(folder, directory=True)
        return self.path.joinpath(*parts)

    def write_bytes(self, relpath: str, data: bytes) -> Path:
        """Add or replace a derived file (redacted on the way in); evidence and bookkeeping are read-only."""
        path = self._resolve(relpath)
        posix = Path(relpath).as_posix()
        if posix in _PROTECTED or posix.startswith(_PROTECTED_DIRS):
            raise UsageError(f"{posix} is part of the collected evidence and cannot be replaced")
        for files in self.redactor.counts.values():
            files.pop(posix, None)  # a rewrite replaces the file's counts, it does not add to them
        _write_atomic(path, self.redactor.redact_bytes(data, posix), Privacy.of(self.path))
        return path

    def write_placeholder(self, relpath: str, text: str) -> Path:
        """Put a constant text of ours (a fail-closed placeholder) in place of a derived file: not redacted,
        private like the rest, never through a symlink."""
        path = self._resolve(relpath)
        posix = Path(relpath).as_posix()
        if posix in _PROTECTED or posix.startswith(_PROTECTED_DIRS):
            raise UsageError(f"{posix} is part of the collected evidence and cannot be replaced")
        _write_atomic(path, text.encode("utf-8"), Privacy.of(self.path))
        return path

    def write_text(self, relpath: str, text: str) -> Path:
        """Add or replace a derived text file (UTF-8, redacted)."""
        return self.write_bytes(relpath, text.encode("utf-8", "surrogateescape"))

    def write_json(self, relpath: str, obj: Any) -> Path:
        """Add or replace a derived JSON file (redacted)."""
        return self.write_bytes(relpath, _json_bytes(obj))

    @contextlib.contextmanager
    def locked(self) -> Iterator[Bundle]:
        """Hold the bundle's lock (flock on its folder): read-modify-write of a derived file, sealing."""
        if self._lock_depth == 0:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            self._lock_fd = fd
        self._lock_depth += 1
        try:
            yield self
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_fd is not None:
                os.close(self._lock_fd)  # closing releases the flock
                self._lock_fd = None

    def update_json(self, relpath: str, update: Callable[[Any], Any]) -> Path:
        """Read a derived JSON file, change it with `update(current or None)` and write it, under the lock:
        two processes updating the same file (actions.json) both keep their change."""
        with self.locked():
            return self.write_json(relpath, update(self.read_json(relpath)))

    def _redaction(self) -> dict[str, Any]:
        try:
            data = read_inside(self.path, REDACTION)
            doc = json.loads(data) if data is not None else {}
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def seal(self) -> Path:
        """Fold new redactions into redaction.json, rewrite SHA256SUMS and the archive; returns the
        archive."""
        privacy = Privacy.of(self.path)
        with self.locked():
            if self.redactor.counts:
                doc = self._redaction() or _redaction_doc(self.redactor)
                counts: dict[str, dict[str, int]] = doc.get("counts", {})
                for rule, files in self.redactor.counts.items():
                    counts.setdefault(rule, {}).update(files)
                doc["counts"] = {r: dict(sorted(f.items())) for r, f in sorted(counts.items())}
                doc["issued"] = dict(sorted({**doc.get("issued", {}), **self.redactor.issued}.items()))
                doc["total"] = sum(n for files in doc["counts"].values() for n in files.values())
                _write_atomic(self.path / REDACTION, _json_bytes(doc), privacy)
                self.redactor.counts.clear()
            write_sums(self.path, privacy)
            return write_archive(self.path, _archive_mtime(self.manifest), privacy)


def open_bundle(path: str | Path) -> Bundle:
    """Shorthand for Bundle.open."""
    return Bundle.open(path)


__all__ = [
    "TRUNCATION_MARKER",
    "UNREDACTED_SUFFIX",
    "Bundle",
    "BundleWriteFailed",
    "BundleWriter",
    "OutsideBundle",
    "Privacy",
    "cap_output",
    "incident_id",
    "make_private_dir",
    "open_bundle",
    "open_inside",
    "read_inside",
    "write_archive",
    "write_bundle",
    "write_sums",
]
