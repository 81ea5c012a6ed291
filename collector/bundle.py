"""The evidence bundle: layout, manifest, redaction, checksums, atomic write, deterministic archive.

`write_bundle` turns a RunResult into `DIR/<incident>/` (built in a hidden temporary folder beside
it and renamed into place, so a bundle exists whole or not at all), then writes
`<incident>.tar.gz` and its `.sha256` beside the folder. Later steps open it with `Bundle.open`,
add derived files (findings, reports, actions) and call `.seal()` to refresh checksums and archive.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import gzip
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from collector import __version__
from collector.config import Settings
from collector.core import BUNDLE_SCHEMA, ProbeResult, RunResult, UsageError, utcnow
from collector.redact import Redactor
from collector.times import instant_or_none

REDACTION_SCHEMA = "incident-collector/redaction/v1"
SUMS = "SHA256SUMS"
MANIFEST = "manifest.json"
REDACTION = "redaction.json"
LOG = "collector.log"
UNREDACTED_SUFFIX = "-UNREDACTED"
TRUNCATION_MARKER = b"\n\n[... incident-collector: output truncated: %d bytes omitted, head and tail kept (cap %d bytes) ...]\n\n"
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
    when = instant_or_none(started) or _dt.datetime.now(_dt.timezone.utc)
    return f"inc-{when.astimezone(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{slug(pattern)}"


def cap_output(data: bytes, cap: int) -> tuple[bytes, bool]:
    """Keep head and tail of `data` within `cap` bytes with a visible marker between them."""
    if cap <= 0 or len(data) <= cap:
        return data, False
    marker = TRUNCATION_MARKER % (len(data) - cap, cap)
    keep = max(cap - len(marker), 0)
    head = keep // 2
    return data[:head] + marker + data[len(data) - (keep - head):], True


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a hidden temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would differ from the files written directly
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()


def _bundle_files(root: Path) -> list[str]:
    """Every file of the bundle as a sorted POSIX relative path, hidden temporaries excluded."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        found.append(rel.as_posix())
    return sorted(found)


def write_sums(root: Path) -> dict[str, str]:
    """(Re)write SHA256SUMS (sha256sum -c format) over every file but itself; returns path → hex."""
    sums = {rel: sha256_file(root / rel) for rel in _bundle_files(root) if rel != SUMS}
    _write_atomic(root / SUMS, "".join(f"{h}  {rel}\n" for rel, h in sums.items()).encode())
    return sums


def write_archive(root: Path, mtime: int = 0) -> Path:
    """Write <root>.tar.gz (deterministic: sorted, fixed owner/mode/mtime, gzip mtime 0) and .sha256."""
    name = root.name
    archive = root.parent / f"{name}.tar.gz"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tar.gz.tmp", dir=root.parent)
    try:
        with os.fdopen(fd, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            files = _bundle_files(root)
            dirs = sorted({str(Path(rel).parent.as_posix()) for rel in files} - {"."})
            dirs = sorted({p for d in dirs for p in _parents(d)})
            for rel in [""] + dirs:
                tar.addfile(_tarinfo(f"{name}/{rel}".rstrip("/"), tarfile.DIRTYPE, 0, mtime))
            for rel in files:
                path = root / rel
                info = _tarinfo(f"{name}/{rel}", tarfile.REGTYPE, path.stat().st_size, mtime)
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
        os.chmod(tmp, 0o644)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _write_atomic(root.parent / f"{name}.tar.gz.sha256", f"{sha256_file(archive)}  {archive.name}\n".encode())
    return archive


def _parents(rel_dir: str) -> list[str]:
    parts = rel_dir.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _tarinfo(name: str, kind: bytes, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = mtime
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
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
        "command": redactor.redact_text(result.command or "", MANIFEST),
        "status": result.status,
        "rc": result.rc,
        "started": result.started,
        "duration_s": round(float(result.duration_s or 0.0), 3),
        "bytes": len(data),
        "output_bytes": result.bytes or len(result.output or b""),  # produced on the host, before the cap
        "truncated": bool(result.truncated),
        "sha256": hashlib.sha256(data).hexdigest(),
        "path": path,
        "error": redactor.redact_text(result.error, MANIFEST) if result.error else None,
    }


def _visible_cap(result: ProbeResult, cap: int) -> tuple[bytes, bool]:
    """The output to store: capped here if a transport did not, and never truncated without a marker."""
    data = result.output or b""
    if cap > 0 and len(data) > cap + 4096:  # the runner's own marker may overshoot its cap a little
        data, _ = cap_output(data, cap)
        return data, True
    if result.truncated and _MARKER_WORD not in data:
        produced = result.bytes or len(data)
        data += (b"\n[... incident-collector: output truncated on the host: %d bytes produced, %d kept ...]\n"
                 % (produced, len(data)))
    return data, bool(result.truncated)


def _claim_dir(out_dir: Path, name: str) -> str:
    """A free bundle name, claimed by creating its empty folder (mkdir is atomic): two runs that start in the
    same second, in two processes, never end up with the same name. The full bundle replaces the empty folder."""
    candidate, n = name, 1
    while True:
        if not (out_dir / f"{candidate}.tar.gz").exists():
            try:
                (out_dir / candidate).mkdir()
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


def _fill(tmp: Path, run: RunResult, settings: Settings, name: str, redactor: Redactor,
          log_lines: Iterable[str]) -> None:
    """Write every file of the bundle into `tmp` (the temporary folder)."""
    hosts: dict[str, Any] = {}
    for host in sorted(run.hosts):
        result = run.hosts[host]
        probes: dict[str, Any] = {}
        for probe in sorted(result.probes, key=lambda p: p.probe):
            rel = _free_path(tmp, f"hosts/{_safe_name(host)}/{_safe_name(probe.probe)}", ".txt")
            raw, truncated = _visible_cap(probe, settings.cap_bytes)
            data = redactor.redact_bytes(raw, rel)
            _write_plain(tmp / rel, data)
            probes[probe.probe] = _entry(probe, redactor, rel, data)
            probes[probe.probe]["truncated"] = truncated
        hosts[host] = {
            "status": result.status,
            "error": redactor.redact_text(result.error, MANIFEST) if result.error else None,
            "roles": list(result.roles),
            "probes": probes,
        }
    monitoring: dict[str, Any] = {}
    for query in sorted(run.monitoring, key=lambda p: p.probe):
        rel = _free_path(tmp, f"monitoring/{_safe_name(query.probe)}", ".json")
        data = redactor.redact_bytes(query.output or b"", rel)
        _write_plain(tmp / rel, data)
        monitoring[query.probe] = _entry(query, redactor, rel, data)
    log = "".join(f"{line.rstrip(chr(10))}\n" for line in log_lines)
    _write_plain(tmp / LOG, redactor.redact_text(log, LOG).encode("utf-8", "surrogateescape"))
    manifest = {
        "schema": BUNDLE_SCHEMA,
        "incident": name,
        "tool_version": __version__,
        "command_line": [redactor.redact_text(arg, MANIFEST) for arg in run.command_line],
        "pattern": run.pattern,
        "inventory": redactor.redact_text(run.inventory, MANIFEST),
        "engine": run.engine,
        "since": run.since,
        "redacted": redactor.enabled,
        "started": run.started,
        "finished": run.finished or utcnow(),
        "interrupted": bool(run.interrupted),
        "summary": _summary(run),
        "hosts": hosts,
        "monitoring": monitoring,
    }
    _write_plain(tmp / MANIFEST, _json_bytes(manifest))
    _write_plain(tmp / REDACTION, _json_bytes(_redaction_doc(redactor)))
    write_sums(tmp)


def _summary(run: RunResult) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for result in run.hosts.values():
        by_status[result.status] = by_status.get(result.status, 0) + 1
    return {"hosts": len(run.hosts), "by_status": dict(sorted(by_status.items())),
            "failed_hosts": sorted(run.failed_hosts)}


def _redaction_doc(redactor: Redactor) -> dict[str, Any]:
    counts = {rule: dict(sorted(files.items())) for rule, files in sorted(redactor.counts.items())}
    return {
        "schema": REDACTION_SCHEMA,
        "enabled": redactor.enabled,
        "placeholder": "«REDACTED:<rule>:<n>» — the same value gets the same placeholder within the bundle",
        "rules": redactor.describe(),
        "counts": counts,
        "issued": dict(sorted(redactor.issued.items())),
        "total": redactor.total(),
    }


def _write_plain(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_bundle(run: RunResult, settings: Settings, *, out_dir: Path | None = None,
                 log_lines: Iterable[str] = (), known_secrets: Iterable[str] = (),
                 redactor: Redactor | None = None, archive: bool = True) -> Path:
    """Write the run's bundle atomically and return its folder; the archive follows beside it."""
    out = Path(out_dir if out_dir is not None else settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if redactor is None:
        redactor = Redactor(settings.redact_patterns, known_secrets, enabled=settings.redact)
    name = run.incident or incident_id(run.pattern, run.started)
    if not redactor.enabled and not name.endswith(UNREDACTED_SUFFIX):
        name += UNREDACTED_SUFFIX
    name = _claim_dir(out, _safe_name(name))
    final, tmp = out / name, None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out))
        _fill(tmp, run, settings, name, redactor, log_lines)
        os.rename(tmp, final)  # atomic on one filesystem, over the claimed empty folder: the bundle appears whole
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            final.rmdir()  # only while it is still the empty claim
        raise
    os.chmod(final, 0o755)
    if archive:
        write_archive(final, _archive_mtime(json.loads((final / MANIFEST).read_bytes())))
    return final


class Bundle:
    """A written bundle: read its manifest and evidence, add derived files, seal it again."""

    def __init__(self, path: Path, manifest: dict[str, Any], known_secrets: Iterable[str] = (),
                 extra_patterns: Iterable[str] = ()) -> None:
        self.path = path
        self.manifest = manifest
        previous = self._redaction()
        self.redactor = Redactor(extra_patterns, known_secrets, enabled=bool(manifest.get("redacted", True)),
                                 start_numbers=previous.get("issued") or {})

    @classmethod
    def open(cls, path: str | Path, *, known_secrets: Iterable[str] = (),
             extra_patterns: Iterable[str] = ()) -> Bundle:
        """Open a bundle folder (or its manifest.json, or the .tar.gz beside it); UsageError if it is none."""
        root = Path(path)
        if root.name == MANIFEST:
            root = root.parent
        elif root.name.endswith(".tar.gz") and not root.is_dir():
            root = root.with_name(root.name[: -len(".tar.gz")])
        manifest_path = root / MANIFEST
        if not root.is_dir() or not manifest_path.is_file():
            raise UsageError(f"{path} is not a bundle (no {MANIFEST} in it)")
        try:
            manifest = json.loads(manifest_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path} is not a bundle ({MANIFEST} is unreadable: {exc})".splitlines()[0]) from None
        if not isinstance(manifest, dict) or "schema" not in manifest:
            raise UsageError(f"{path} is not a bundle ({MANIFEST} has no schema)")
        if manifest["schema"] != BUNDLE_SCHEMA:
            raise UsageError(f"bundle schema {manifest['schema']!r} not supported (this tool reads {BUNDLE_SCHEMA})")
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

    def read(self, host: str, probe: str) -> bytes | None:
        """The (redacted) raw output of a probe, or None when it was not recorded."""
        entry = self.probe(host, probe)
        if not entry or not entry.get("path"):
            return None
        path = self.path / entry["path"]
        return path.read_bytes() if path.is_file() else None

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
        path = self.path / entry["path"]
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None

    def read_file(self, relpath: str) -> bytes | None:
        """Any file of the bundle by relative path, or None."""
        path = self._resolve(relpath)
        return path.read_bytes() if path.is_file() else None

    def read_json(self, relpath: str) -> Any:
        """A JSON file of the bundle (e.g. findings.json, actions.json), or None."""
        data = self.read_file(relpath)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    def files(self) -> list[str]:
        """Every file of the bundle (relative POSIX paths, sorted)."""
        return _bundle_files(self.path)

    def verify(self) -> list[str]:
        """Problems found checking SHA256SUMS against the files ([] when everything matches)."""
        sums_path = self.path / SUMS
        if not sums_path.is_file():
            return [f"{SUMS} is missing"]
        problems: list[str] = []
        listed: set[str] = set()
        for line in sums_path.read_text().splitlines():
            digest, _, rel = line.partition("  ")
            listed.add(rel)
            target = self.path / rel
            if not target.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_file(target) != digest:
                problems.append(f"{rel}: checksum mismatch")
        problems += [f"{rel}: not in {SUMS}" for rel in self.files() if rel != SUMS and rel not in listed]
        return problems

    # -- adding derived files ---------------------------------------------------------------------
    def _resolve(self, relpath: str) -> Path:
        rel = Path(relpath)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0].startswith("."):
            raise UsageError(f"{relpath!r} is not a path inside the bundle")
        return self.path / rel

    def write_bytes(self, relpath: str, data: bytes) -> Path:
        """Add or replace a derived file (redacted on the way in); evidence and bookkeeping are read-only."""
        path = self._resolve(relpath)
        posix = Path(relpath).as_posix()
        if posix in _PROTECTED or posix.startswith(_PROTECTED_DIRS):
            raise UsageError(f"{posix} is part of the collected evidence and cannot be replaced")
        for files in self.redactor.counts.values():
            files.pop(posix, None)  # a rewrite replaces the file's counts, it does not add to them
        _write_atomic(path, self.redactor.redact_bytes(data, posix))
        return path

    def write_text(self, relpath: str, text: str) -> Path:
        """Add or replace a derived text file (UTF-8, redacted)."""
        return self.write_bytes(relpath, text.encode("utf-8", "surrogateescape"))

    def write_json(self, relpath: str, obj: Any) -> Path:
        """Add or replace a derived JSON file (redacted)."""
        return self.write_bytes(relpath, _json_bytes(obj))

    def _redaction(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.path / REDACTION).read_bytes())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def seal(self) -> Path:
        """Fold new redactions into redaction.json, rewrite SHA256SUMS and the archive; returns the archive."""
        if self.redactor.counts:
            doc = self._redaction() or _redaction_doc(self.redactor)
            counts: dict[str, dict[str, int]] = doc.get("counts", {})
            for rule, files in self.redactor.counts.items():
                counts.setdefault(rule, {}).update(files)
            doc["counts"] = {r: dict(sorted(f.items())) for r, f in sorted(counts.items())}
            doc["issued"] = dict(sorted({**doc.get("issued", {}), **self.redactor.issued}.items()))
            doc["total"] = sum(n for files in doc["counts"].values() for n in files.values())
            _write_atomic(self.path / REDACTION, _json_bytes(doc))
            self.redactor.counts.clear()
        write_sums(self.path)
        return write_archive(self.path, _archive_mtime(self.manifest))


def open_bundle(path: str | Path) -> Bundle:
    """Shorthand for Bundle.open."""
    return Bundle.open(path)


__all__ = ["Bundle", "cap_output", "incident_id", "open_bundle", "write_archive", "write_bundle", "write_sums",
           "TRUNCATION_MARKER", "UNREDACTED_SUFFIX"]

