"""Post a bundle's evidence to a ticket: the archive, its .sha256 and TICKET.md as the comment.

Reads the bundle and never writes to it. Idempotent: a file already on the ticket with the same
name, size and sha256 (recorded in the attachment's description) is not uploaded again.
"""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.core import SEVERITIES, IncidentSummary, UsageError
from collector.report.data import build
from collector.report.render import render_text
from collector.tickets import RemoteFile, Ticket, TicketError, TicketSystem, Upload
from collector.triage import read_findings

_HEX64 = re.compile(r"\b([0-9a-fA-F]{64})\b")
NOTE_MAX_CHARS = 60_000  # Redmine's journal notes column is a TEXT; stay well clear of any proxy limit


@dataclass(frozen=True)
class Evidence:
    """What gets posted: the files, the comment text, and the facts the ticket's fields come from."""

    incident: str
    severity: str | None  # P0..P3, or None when triage has not run / found nothing
    subject: str
    body: str
    files: tuple[Upload, ...]
    ticket_md: bool  # False: TICKET.md was missing and `body` is the ticket template rendered here


@dataclass(frozen=True)
class Outcome:
    """What `attach_bundle` did."""

    ticket: Ticket
    created: bool
    reused: bool  # --new found an existing ticket for this incident and used it
    uploaded: tuple[Upload, ...]
    already: tuple[Upload, ...]
    evidence: Evidence
    superseded: tuple[RemoteFile, ...] = ()  # older attachments of the same name, other sha256


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_bundle(path: Path) -> Any:
    from collector.bundle import Bundle  # the bundle step's own reader: schema checks live there

    return Bundle.open(path)  # accepts the folder, its manifest.json or the .tar.gz beside it


def archive_files(folder: Path) -> tuple[Upload, Upload]:
    """The bundle's tar.gz and .sha256 beside its folder, checked against each other."""
    archive = folder.parent / f"{folder.name}.tar.gz"
    sums = folder.parent / f"{folder.name}.tar.gz.sha256"
    for needed in (archive, sums):
        if needed.is_symlink():  # the archive goes to a ticket: never whatever a planted link points at
            raise UsageError(f"{needed} is a symlink, not the sealed archive: not posting it")
        if not needed.is_file():
            raise UsageError(
                f"{needed} is missing: the bundle is not sealed (re-run `collector report "
                f"{folder}` or the step that wrote it)"
            )
    match = _HEX64.search(sums.read_text(errors="replace"))
    if not match:
        raise UsageError(f"{sums} holds no sha256")
    actual = sha256_of(archive)
    if match.group(1).lower() != actual:
        raise UsageError(
            f"{archive.name} does not match {sums.name} (sha256 {actual[:12]}… vs "
            f"{match.group(1)[:12].lower()}…): the archive changed after sealing; not posting it"
        )
    return (
        Upload(path=archive, filename=archive.name, size=archive.stat().st_size, sha256=actual),
        Upload(path=sums, filename=sums.name, size=sums.stat().st_size, sha256=sha256_of(sums)),
    )


def ticket_summary(bundle: Any) -> str:
    """The TICKET.md text of the bundle: the report's ticket template, rendered (nothing written)."""
    return render_text("ticket.md.j2", build(bundle)).strip()


def gather(bundle_path: Path, *, allow_unredacted: bool = False) -> Evidence:
    """Everything to post for the bundle at `bundle_path` (folder or its .tar.gz)."""
    bundle = _open_bundle(bundle_path)
    folder = Path(bundle.path)
    if not bundle.redacted and not allow_unredacted:
        raise UsageError(
            f"{folder.name} was collected without redaction: refusing to post it to a ticket "
            "(pass --allow-unredacted if the ticket system may hold its secrets)"
        )
    incident = bundle.incident or folder.name
    files = archive_files(folder)
    summary = IncidentSummary.of(incident, read_findings(bundle))
    severity = summary.severity if summary.severity in SEVERITIES else None
    ticket_raw = bundle.read_file("TICKET.md")  # the bundle's safe reader: a planted symlink is not followed
    if ticket_raw is not None:
        text = ticket_raw.decode("utf-8", errors="replace").strip()
    else:
        text = ticket_summary(bundle)  # the same template `collector report` writes TICKET.md from
    archive, sums = files
    footer = (
        f"\n\n---\nEvidence attached by `collector attach`: `{archive.filename}` "
        f"({archive.size} bytes, sha256 `{archive.sha256}`) and `{sums.filename}` "
        f"(check with `sha256sum -c {sums.filename}`). "
        f"Full bundle: `{socket.gethostname()}:{folder.resolve()}`."
    )
    if bundle.redacted:
        # The files were redacted on their way into the bundle; this catches a TICKET.md edited by hand.
        text = bundle.redactor.redact_text(text, "TICKET.md")
    if len(text) > NOTE_MAX_CHARS:
        text = text[:NOTE_MAX_CHARS] + "\n\n… (cut: the full TICKET.md is in the attached archive)"
    headline = summary.headline if summary.triaged else "incident evidence"
    subject = f"[{severity}] {incident}: {headline}" if severity else f"{incident}: {headline}"
    return Evidence(
        incident=incident,
        severity=severity,
        subject=subject,
        body=text + footer,
        files=files,
        ticket_md=ticket_raw is not None,
    )


def attach_bundle(
    system: TicketSystem,
    bundle_path: Path,
    *,
    ticket: str | None = None,
    project: str | None = None,
    allow_unredacted: bool = False,
) -> Outcome:
    """Attach the bundle's evidence to `ticket`, or open one in `project` (reusing this incident's)."""
    if (ticket is None) == (project is None):
        raise UsageError("give exactly one of --ticket ID or --new --project P")
    if ticket is not None and not ticket.lstrip("#").isdigit():
        raise UsageError(f"ticket id {ticket!r} is not a number")
    evidence = gather(bundle_path, allow_unredacted=allow_unredacted)
    if ticket is not None:
        return _add_to(system, system.find(ticket.lstrip("#")), evidence, reused=False)
    assert project is not None
    found = system.lookup(project, evidence.incident)
    if found is not None:
        return _add_to(system, found, evidence, reused=True)
    created = system.create(project, evidence.subject, evidence.body, evidence.severity, evidence.files)
    _check_listed(created, evidence.files, system)
    return Outcome(created, True, False, evidence.files, (), evidence)


def _add_to(system: TicketSystem, target: Ticket, evidence: Evidence, reused: bool) -> Outcome:
    already = tuple(f for f in evidence.files if any(r.same_as(f) for r in target.attachments))
    missing = tuple(f for f in evidence.files if f not in already)
    if not missing:
        names = ", ".join(f"`{f.filename}`" for f in already)
        system.comment(
            target.id,
            f"Evidence bundle {evidence.incident} is already attached to this ticket "
            f"({names}, sha256 `{evidence.files[0].sha256}`); nothing uploaded again.",
        )
        return Outcome(target, False, reused, (), already, evidence)
    note = evidence.body
    if already:
        note += (
            "\n\nAlready attached earlier (not uploaded again): "
            + ", ".join(f"`{f.filename}`" for f in already)
            + "."
        )
    missing_names = {f.filename for f in missing}
    superseded = tuple(r for r in target.attachments if r.filename in missing_names)
    if superseded:
        # Same name, other content: the bundle was re-sealed since (report, remediation added files).
        note += (
            "\n\nSupersedes the earlier "
            + ", ".join(
                f"`{r.filename}` (attachment {r.id}, sha256 `{(r.sha256 or 'unknown')[:16]}…`)"
                for r in superseded
            )
            + ": the bundle changed since it was attached."
        )
    updated = system.attach(target.id, missing, note)
    _check_listed(updated, missing, system)
    return Outcome(updated, False, reused, missing, already, evidence, superseded)


def _check_listed(ticket: Ticket, files: tuple[Upload, ...], system: TicketSystem) -> None:
    """The server must now list every file with our sha256; say so plainly if it does not."""
    absent = [f.filename for f in files if not any(r.same_as(f) for r in ticket.attachments)]
    if absent:
        raise TicketError(
            f"{system.name} at {system.url} accepted the change to #{ticket.id} but does not "
            f"list {', '.join(absent)} with the expected sha256: check {ticket.url}"
        )
