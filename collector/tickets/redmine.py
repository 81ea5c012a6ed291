"""Redmine through python-redmine: the `TicketSystem` adapter `collector attach --to redmine` uses.

Every failure becomes one TicketError line that names the server, never the API key. Files are
uploaded first (unattached uploads are invisible on the ticket and Redmine prunes them), then
attached together with the note in ONE change of the ticket, so a failure never half-posts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import requests
import requests.adapters
from redminelib import Redmine
from redminelib import exceptions as rex

from collector.tickets import RemoteFile, Ticket, TicketConfig, TicketError, Upload

NOTHING_POSTED = "nothing was posted"
_TOO_BIG = re.compile(r"exceeds the maximum allowed file size \((\d+)\)")


def _mb(size: int) -> str:
    return f"{size / 1048576:.1f} MB"


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """Every request gets (connect, read) timeouts unless the caller gave its own."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return super().send(request, **kwargs)


class RedmineTickets:
    """A Redmine server reached with one user's API key (sent as a header, never in a URL)."""

    name = "redmine"

    def __init__(self, config: TicketConfig) -> None:
        self.config = config
        self.url = config.url
        self._api = Redmine(config.url, key=config.api_key, raise_attr_exception=False)
        # python-redmine sets `requests={"timeout": ...}` as a Session attribute, which requests
        # ignores: a server that accepts and never answers would hang us. The adapter applies it.
        adapter = _TimeoutAdapter(config.timeout_s)
        for scheme in ("http://", "https://"):
            self._api.engine.session.mount(scheme, adapter)
        self._priority_ids: dict[str, int] | None = None

    # -- the TicketSystem interface -------------------------------------------------------------

    def find(self, ticket: str) -> Ticket:
        """The ticket with its attachments; TicketError when it does not exist."""
        with self._errors(f"ticket #{ticket}"):
            issue = self._api.issue.get(int(ticket), include=["attachments"])
        return self._ticket(issue)

    def lookup(self, project: str, marker: str) -> Ticket | None:
        """The newest ticket (any status) of `project` whose subject contains `marker`."""
        with self._errors(f"project {project!r}"):
            found = list(
                self._api.issue.filter(
                    project_id=project, status_id="*", subject=f"~{marker}", sort="id:desc", limit=5
                )
            )
        for issue in found:
            if marker in str(getattr(issue, "subject", "")):
                return self.find(str(issue.id))
        return None

    def create(
        self, project: str, subject: str, body: str, severity: str | None, files: Sequence[Upload]
    ) -> Ticket:
        """Open a ticket in `project` with `files` attached, in one request after the uploads."""
        fields: dict[str, Any] = {
            "project_id": project,
            "subject": subject[:255],
            "description": self._text(body),
        }
        priority = self.priority_id(severity)
        if priority is not None:
            fields["priority_id"] = priority
        if self.config.tracker:
            fields["tracker_id"] = self._tracker_id(self.config.tracker)
        with self._errors(f"project {project!r}"):
            # A project that does not exist or is not visible fails here, before any upload.
            self._api.project.get(project)
        uploads = self._upload_all(files, where=f"a new ticket in project {project!r}")
        if uploads:
            fields["uploads"] = uploads
        with self._errors(f"project {project!r}", sent=bool(uploads)):
            issue = self._api.issue.create(**fields)
        return self.find(str(issue.id))

    def attach(self, ticket: str, files: Sequence[Upload], note: str) -> Ticket:
        """Attach `files` and add `note` to the ticket in one update."""
        uploads = self._upload_all(files, where=f"ticket #{ticket}")
        with self._errors(f"ticket #{ticket}", sent=True):
            self._api.issue.update(int(ticket), notes=self._text(note), uploads=uploads)
        return self.find(ticket)

    def comment(self, ticket: str, note: str) -> None:
        """Add a note to the ticket."""
        with self._errors(f"ticket #{ticket}", sent=True):
            self._api.issue.update(int(ticket), notes=self._text(note))

    def _text(self, markdown: str) -> str:
        """Markdown as is for a Markdown/CommonMark Redmine; a <pre> block keeps it legible under Textile."""
        if self.config.text_format == "textile":
            return "<pre>\n" + markdown.replace("</pre>", "</ pre>") + "\n</pre>"
        return markdown

    # -- priorities and trackers ----------------------------------------------------------------

    def priority_id(self, severity: str | None) -> int | None:
        """The Redmine priority id for a P0..P3 severity; None (server default) when unmapped."""
        if not severity or severity not in self.config.priorities:
            return None
        wanted = self.config.priorities[severity]
        if wanted.isdigit():
            return int(wanted)
        ids = self._priorities()
        for name, pid in ids.items():
            if name.lower() == wanted.lower():
                return pid
        raise TicketError(
            f"Redmine at {self.url} has no priority {wanted!r} (mapped from {severity}); "
            f"it has {', '.join(ids)}: fix COLLECTOR_REDMINE_PRIORITIES or tickets.yml; "
            f"{NOTHING_POSTED}"
        )

    def _priorities(self) -> dict[str, int]:
        if self._priority_ids is None:
            with self._errors("issue priorities"):
                found = self._api.enumeration.filter(resource="issue_priorities")
                self._priority_ids = {str(p.name): int(p.id) for p in found}
        return self._priority_ids

    def _tracker_id(self, wanted: str) -> int:
        if wanted.isdigit():
            return int(wanted)
        with self._errors("trackers"):
            trackers = {str(t.name): int(t.id) for t in self._api.tracker.all()}
        for name, tid in trackers.items():
            if name.lower() == wanted.lower():
                return tid
        raise TicketError(
            f"Redmine at {self.url} has no tracker {wanted!r} (it has {', '.join(trackers)}); "
            f"{NOTHING_POSTED}"
        )

    # -- uploads --------------------------------------------------------------------------------

    def _upload_all(self, files: Sequence[Upload], where: str) -> list[dict[str, str]]:
        """Upload each file and check Redmine's digest against ours; nothing is attached yet."""
        uploads = []
        for item in files:
            with self._errors(where, upload=item), item.path.open("rb") as stream:
                answer = self._api.upload(stream, filename=item.filename)
            token = str(answer["token"])
            # Redmine's token is "<id>.<sha256 of what it stored>": a mismatch means a damaged upload.
            digest = token.split(".", 1)[1] if "." in token else ""
            if re.fullmatch(r"[0-9a-f]{64}", digest) and digest != item.sha256:
                raise TicketError(
                    f"Redmine stored {item.filename} with sha256 {digest[:12]}… but the file "
                    f"has {item.sha256[:12]}…: upload damaged; nothing was attached to {where}"
                )
            uploads.append(
                {
                    "token": token,
                    "filename": item.filename,
                    "description": item.description,
                    "content_type": _content_type(item.filename),
                }
            )
        return uploads

    # -- values and errors ----------------------------------------------------------------------

    def _ticket(self, issue: Any) -> Ticket:
        files = tuple(
            RemoteFile(
                id=str(a.id),
                filename=str(a.filename),
                size=int(getattr(a, "filesize", 0) or 0),
                description=str(getattr(a, "description", "") or ""),
                url=str(getattr(a, "content_url", "") or ""),
            )
            for a in getattr(issue, "attachments", []) or []
        )
        priority = getattr(issue, "priority", None)
        return Ticket(
            id=str(issue.id),
            url=f"{self.url}/issues/{issue.id}",
            subject=str(getattr(issue, "subject", "")),
            priority=str(getattr(priority, "name", "") if priority is not None else ""),
            attachments=files,
        )

    @contextmanager
    def _errors(self, what: str, *, sent: bool = False, upload: Upload | None = None) -> Iterator[None]:
        """Turn python-redmine and requests failures into one TicketError line without the key."""
        try:
            yield
        except TicketError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must become one clear line
            raise TicketError(self.config.scrub(self._message(exc, what, sent, upload))) from None

    def _message(self, exc: Exception, what: str, sent: bool, upload: Upload | None) -> str:
        server = f"Redmine at {self.url}"
        outcome = NOTHING_POSTED
        if isinstance(exc, requests.Timeout) and sent:
            return (
                f"{server} did not answer within {self.config.timeout_s:g} s while updating {what}: "
                f"the outcome is unknown; look at the ticket before retrying (a retry never uploads "
                f"the same file twice)"
            )
        if isinstance(exc, requests.ConnectionError):
            return f"cannot reach {server} (connection failed: {_reason(exc)}); {outcome}"
        if isinstance(exc, requests.Timeout):
            return f"{server} did not answer within {self.config.timeout_s:g} s; {outcome}"
        if isinstance(exc, rex.AuthError):
            return (
                f"{server} refused the API key (401): check COLLECTOR_REDMINE_API_KEY and that the REST "
                f"API is enabled; {outcome}"
            )
        if isinstance(exc, rex.ForbiddenError):
            return f"{server} refused access to {what} for this API key's user (403); {outcome}"
        if isinstance(exc, rex.ResourceNotFoundError):
            return f"{what} does not exist on {server} (404); {outcome}"
        if isinstance(exc, rex.ValidationError):
            too_big = _TOO_BIG.search(str(exc))
            if too_big and upload is not None:
                limit = int(too_big.group(1))
                return (
                    f"{upload.filename} ({_mb(upload.size)}) is over {server}'s attachment limit "
                    f"({_mb(limit)}): raise Administration > Settings > Files > Maximum attachment size "
                    f"(Setting.attachment_max_size, in KB) or split the archive "
                    f"(split -b {max(limit // 1048576, 1)}M {upload.filename} {upload.filename}.part-); "
                    f"nothing was attached to {what}"
                )
            if upload is not None:
                # Another language or Redmine version words the size error differently: still say how.
                return (
                    f"{server} refused {upload.filename} ({_mb(upload.size)}): {str(exc).strip()}; if that "
                    f"is the attachment size limit, raise Setting.attachment_max_size (Administration > "
                    f"Settings > Files) or split the archive; nothing was attached to {what}"
                )
            return f"{server} rejected the change to {what}: {str(exc).strip()}; {outcome}"
        if isinstance(exc, rex.RequestEntityTooLargeError):
            name = upload.filename if upload else "the request"
            return (
                f"{name} is too large for {server} or the proxy in front of it (413): raise its body size "
                f"limit (e.g. nginx client_max_body_size) or split the archive; {outcome}"
            )
        if isinstance(exc, rex.ServerError):
            return f"{server} failed with an internal error (500) on {what}; {outcome}"
        if isinstance(exc, rex.UnknownError):
            return f"{server} answered HTTP {exc.status_code} on {what}; {outcome}"
        if isinstance(exc, rex.JSONDecodeError):
            return (
                f"{server} did not answer with JSON (is the URL right and the REST API enabled?); {outcome}"
            )
        if isinstance(exc, rex.HTTPProtocolError):
            return f"{server} redirected between http and https: use the final URL; {outcome}"
        if isinstance(exc, OSError) and upload is not None:
            return f"cannot read {upload.path}: {exc.strerror}; nothing was attached to {what}"
        return f"{server}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; {outcome}"


def _reason(exc: Exception) -> str:
    """The innermost human reason of a requests error ('Connection refused'), without URLs."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if match:
        return match.group(1).strip()
    for word in ("timed out", "Name or service not known", "refused", "reset"):
        if word in text:
            return word
    return type(exc).__name__


def _content_type(filename: str) -> str:
    if filename.endswith(".tar.gz"):
        return "application/gzip"
    if filename.endswith((".sha256", ".md", ".txt")):
        return "text/plain"
    return "application/octet-stream"
