"""Comms that go somewhere: status updates, reminders and escalations by e-mail, chat webhook and ticket note.

Texts: the runbook's status updates are the comms templates of reports/ (`collector comms`), filled from
the incident's newest bundle with the incident's commander and its own update cadence; reminders and
escalations are a few lines built from the incident. Every text is scrubbed by collector.redact (with the
channel secrets as known secrets) before it leaves; a text the scrubber fails on is withheld, never sent.

Delivery goes through apprise: e-mail over SMTP (`mailto://` / `mailtos://`), chat webhooks as a JSON POST
(`json://` / `jsons://`, body {"title", "message", "type", ...}); notes go on the incident's ticket through
collector.tickets. Each channel's outcome is a value ("ok" or one line of error), never an exception.

Configuration (the `notify:` section of incidents.yml, see incidents.example.yml):

    notify:
      email: {host, port, mode: starttls|ssl|insecure, user, password_file, from, to: [...]}
      chat:  [{url, token_file}]          # token: sent as "Authorization: Bearer <token>"
      ticket: redmine                     # the ticket system of tickets.yml; notes go on incident.ticket

Environment: COLLECTOR_SMTP_PASSWORD, COLLECTOR_CHAT_TOKEN (secrets), COLLECTOR_CHAT_WEBHOOK (one more URL).
"""

from __future__ import annotations

import datetime as _dt
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.core import Incident, UsageError
from collector.incidents.lifecycle import UPDATE_CADENCE, Due, People, read_config, severity_of
from collector.times import iso_z

if TYPE_CHECKING:
    from collector.config import Settings
    from collector.incidents.store import IncidentStore

EMAIL_MODES = ("starttls", "ssl", "insecure")


@dataclass(frozen=True)
class Email:
    host: str
    port: int = 25
    mode: str = "starttls"
    user: str = ""
    password: str = field(default="", repr=False)
    sender: str = "incident-collector@localhost"
    to: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chat:
    url: str
    token: str = field(default="", repr=False)


@dataclass(frozen=True)
class Channels:
    """Where comms go. Secrets (SMTP password, chat tokens) never appear in repr() or in a sent text."""

    email: Email | None = None
    chat: tuple[Chat, ...] = ()
    ticket_system: str = ""  # "" = no ticket notes
    page_url: str = ""  # the incidents page, linked from every text when set
    status_page: str = ""  # the public status page the runbook's updates link to (setting status_page_url)

    @property
    def secrets(self) -> list[str]:
        found = [self.email.password] if self.email and self.email.password else []
        found += [c.token for c in self.chat if c.token]
        # a webhook URL's path is often its only secret (Slack-style hooks)
        found += [
            urllib.parse.urlsplit(c.url).path
            for c in self.chat
            if len(urllib.parse.urlsplit(c.url).path) > 12
        ]
        return found


def _secret(raw: Mapping[str, Any], key: str, env: str, where: str) -> str:
    if os.environ.get(env):
        return os.environ[env].strip()
    if raw.get(key + "_file"):
        path = Path(str(raw[key + "_file"])).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if raw.get(key):
        return str(raw[key])
    return ""


def channels_from(config: Mapping[str, Any]) -> Channels:
    """Channels from the incidents configuration mapping (and the environment)."""
    notify = config.get("notify") or {}
    if not isinstance(notify, dict):
        raise UsageError("incidents config: notify must be a mapping (email, chat, ticket)")
    email = None
    raw_email = notify.get("email")
    if raw_email:
        if not isinstance(raw_email, dict) or not raw_email.get("host"):
            raise UsageError("incidents config: notify.email needs at least host")
        mode = str(raw_email.get("mode") or "starttls").lower()
        if mode not in EMAIL_MODES:
            raise UsageError(
                f"incidents config: notify.email.mode {mode!r}: use one of {', '.join(EMAIL_MODES)}"
            )
        to = raw_email.get("to") or []
        to = [to] if isinstance(to, str) else [str(t) for t in to]
        try:
            port = int(raw_email.get("port") or (465 if mode == "ssl" else 587 if mode == "starttls" else 25))
        except ValueError:
            raise UsageError(
                f"incidents config: notify.email.port {raw_email.get('port')!r} is not a number"
            ) from None
        email = Email(
            host=str(raw_email["host"]),
            port=port,
            mode=mode,
            user=str(raw_email.get("user") or ""),
            password=_secret(raw_email, "password", "COLLECTOR_SMTP_PASSWORD", "notify.email"),
            sender=str(raw_email.get("from") or "incident-collector@localhost"),
            to=tuple(to),
        )
    raw_chat = notify.get("chat") or []
    if isinstance(raw_chat, (str, dict)):
        raw_chat = [raw_chat]
    chats = []
    for i, item in enumerate(raw_chat):
        entry = {"url": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or not str(entry.get("url", "")).startswith(("http://", "https://")):
            raise UsageError(f"incidents config: notify.chat[{i}] needs an http(s) url")
        chats.append(
            Chat(str(entry["url"]), _secret(entry, "token", "COLLECTOR_CHAT_TOKEN", f"notify.chat[{i}]"))
        )
    if os.environ.get("COLLECTOR_CHAT_WEBHOOK"):
        chats.append(Chat(os.environ["COLLECTOR_CHAT_WEBHOOK"], os.environ.get("COLLECTOR_CHAT_TOKEN", "")))
    return Channels(
        email=email,
        chat=tuple(chats),
        ticket_system=str(notify.get("ticket") or ""),
        page_url=str(notify.get("page_url") or ""),
    )


def load_channels(settings: Settings | None = None) -> Channels:
    """Channels from incidents.yml; the ticket system defaults to `serve_ticket_system` (the receiver's)."""
    channels = channels_from(read_config())
    fallback = str(getattr(settings, "serve_ticket_system", "") or "")
    if not channels.ticket_system and fallback:
        channels = replace(channels, ticket_system=fallback)
    status_page = str(getattr(settings, "status_page_url", "") or "")
    if status_page:
        channels = replace(channels, status_page=status_page)
    return channels


# ---------------------------------------------------------------- texts


def scrub(text: str, channels: Channels) -> str:
    """The text as it may leave: secrets replaced; when the scrubber fails, a placeholder (fail closed)."""
    from collector.redact import Redactor

    try:
        return str(Redactor((), known_secrets=channels.secrets).redact_text(text, "notification"))
    except Exception as exc:  # noqa: BLE001 - any scrubber failure withholds the text
        return (
            f"[notification withheld: redaction failed ({type(exc).__name__}); nothing was sent in clear. "
            "Open the incident with `collector incident show`.]\n"
        )


def _facts(incident: Incident, now: _dt.datetime, channels: Channels) -> str:
    lines = [
        f"Incident: {incident.id} ({incident.state}, {incident.severity or 'severity not known yet'})",
        f"Commander: {incident.commander or 'not assigned yet'}",
        f"Opened: {incident.opened_at}",
    ]
    if incident.hosts:
        lines.append(f"Hosts: {', '.join(incident.hosts)}")
    if incident.bundles:
        lines.append(f"Evidence: {incident.bundles[-1]} (report.html)")
    if incident.ticket:
        lines.append(f"Ticket: {incident.ticket}")
    if channels.page_url:
        lines.append(f"Page: {channels.page_url}")
    lines.append(f"Sent: {iso_z(now)}")
    return "\n".join(lines)


def update_text(incident: Incident, stage: str, now: _dt.datetime, channels: Channels = Channels()) -> str:
    """The runbook's status update for `stage`, from the comms templates when the incident has a bundle."""
    every = UPDATE_CADENCE[severity_of(incident)][1]
    minutes = int(every.total_seconds() // 60)
    body = ""
    if incident.bundles:
        from collector.bundle import Bundle
        from collector.report import build, status_update  # the report step owns the templates

        try:
            data = build(Bundle.open(Path(incident.bundles[-1])), incident)
            body = status_update(
                data,
                stage,
                now,
                every,
                status_page=channels.status_page,
                commander=incident.commander or "not assigned yet",
            )
        except Exception as exc:  # noqa: BLE001 - the update still goes out, from the incident alone
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            body = f"(the evidence bundle could not be read for this update: {first})\n"
    if not body.strip() or body.startswith("(the evidence"):
        headline = {
            "initial": "INVESTIGATING",
            "mitigation": "MITIGATION IN PROGRESS",
            "resolved": "RESOLVED",
        }
        body = (
            f"INCIDENT [{incident.severity or '?'}] {incident.title} — {headline.get(stage, stage.upper())}\n"
            f"Time: {iso_z(now)}\nStatus: {stage}\n"
            f"Hosts affected: {', '.join(incident.hosts) or 'none identified yet'}\n"
            + ("Evidence collection is under way.\n" if not incident.bundles else body)
            + (f"Next update: {iso_z(now + every)} (in {minutes} minutes)\n" if stage != "resolved" else "")
            + (f"Status page: {channels.status_page}\n" if channels.status_page else "")
        )
    return body.rstrip("\n") + "\n\n" + _facts(incident, now, channels) + "\n"


def message_text(
    incident: Incident, message: str, author: str, now: _dt.datetime, channels: Channels = Channels()
) -> str:
    every = UPDATE_CADENCE[severity_of(incident)][1]
    return (
        f"UPDATE [{incident.severity or '?'}] {incident.title}\n{message.strip()}\n— {author}\n"
        f"Next update: {iso_z(now + every)}\n\n" + _facts(incident, now, channels) + "\n"
    )


def due_text(
    incident: Incident,
    item: Due,
    now: _dt.datetime,
    channels: Channels = Channels(),
    people: People | None = None,
) -> tuple[str, str]:
    """(subject, body) for a reminder or an escalation."""
    sev = incident.severity or "?"
    if item.kind == "escalate":
        to = ", ".join(c.label() for c in item.recipients) or "nobody configured for this reason"
        subject = f"ESCALATION [{sev}] {incident.title}: {item.text.split(':', 1)[0]}"
        body = (
            f"{subject}\nWhy: {item.text}\nEscalated to: {to}\n"
            f"The incident commander asks for your help (runbook: When to escalate).\n\n"
            + _facts(incident, now, channels)
            + "\n"
        )
        return subject, body
    subject = f"REMINDER [{sev}] {incident.title}: {item.text.split(':', 1)[0]}"
    body = (
        f"{subject}\n{item.text}\nTo: {', '.join(c.label() for c in item.recipients) or 'the on-call'}\n"
        f"Acknowledge: collector incident ack {incident.id} --by NAME\n"
        f"Post an update: collector incident update {incident.id} --message TEXT --by NAME\n\n"
        + _facts(incident, now, channels)
        + "\n"
    )
    return subject, body


# ---------------------------------------------------------------- delivery


def _mail_url(email: Email, to: Sequence[str]) -> str:
    scheme = "mailto" if email.mode == "insecure" else "mailtos"
    auth = ""
    if email.user:
        auth = urllib.parse.quote(email.user, safe="")
        if email.password:
            auth += ":" + urllib.parse.quote(email.password, safe="")
        auth += "@"
    # format=text: a plain-text mail (the updates are laid out in lines, not Markdown or HTML)
    query = {
        "from": email.sender,
        "to": ",".join(to),
        "smtp": email.host,
        "name": "incident collector",
        "format": "text",
    }
    if email.mode != "insecure":
        query["mode"] = email.mode
    else:
        query["mode"] = "insecure"
    return (
        f"{scheme}://{auth}{email.host}:{email.port}?"
        f"{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
    )


def _chat_url(chat: Chat) -> str:
    parts = urllib.parse.urlsplit(chat.url)
    scheme = "jsons" if parts.scheme == "https" else "json"
    query = urllib.parse.parse_qsl(parts.query)
    if chat.token:
        query.append(("+Authorization", f"Bearer {chat.token}"))
    query.append((":source", "incident-collector"))
    return urllib.parse.urlunsplit(
        (scheme, parts.netloc, parts.path, urllib.parse.urlencode(query, quote_via=urllib.parse.quote), "")
    )


def _send(url: str, subject: str, body: str, kind: str) -> str:
    import apprise

    sender = apprise.Apprise()
    if not sender.add(url):
        return "refused: the channel's URL is not valid"
    level = (
        apprise.NotifyType.FAILURE
        if kind == "escalate"
        else (apprise.NotifyType.WARNING if kind == "remind" else apprise.NotifyType.INFO)
    )
    try:
        ok = sender.notify(title=subject, body=body, notify_type=level, body_format=apprise.NotifyFormat.TEXT)
    except Exception as exc:  # noqa: BLE001 - a channel's failure is a value
        return f"failed: {type(exc).__name__}"
    return "ok" if ok else "failed: the server refused or could not be reached"


def send_text(
    incident: Incident,
    subject: str,
    body: str,
    channels: Channels,
    *,
    kind: str = "notify",
    email_to: Sequence[str] = (),
    ticket: bool = True,
) -> dict[str, str]:
    """Send one text on every configured channel; channel -> "ok" or one line of error."""
    subject = scrub(subject, channels).strip().splitlines()[0][:200]
    body = scrub(body, channels)
    results: dict[str, str] = {}
    if channels.email:
        recipients = list(dict.fromkeys([*channels.email.to, *email_to]))
        if recipients:
            results["email"] = _send(_mail_url(channels.email, recipients), subject, body, kind)
    for i, chat in enumerate(channels.chat):
        results[f"chat{i + 1}" if len(channels.chat) > 1 else "chat"] = _send(
            _chat_url(chat), subject, body, kind
        )
    if ticket and channels.ticket_system and incident.ticket:
        results["ticket"] = _ticket_note(incident.ticket, channels.ticket_system, f"**{subject}**\n\n{body}")
    return results


def _ticket_note(ticket: str, system: str, note: str) -> str:
    from collector.tickets import TicketError, load_ticket_config, open_system

    if ":" in ticket and ticket.split(":", 1)[0] in ("redmine",):
        system, ticket = ticket.split(":", 1)
    try:
        config = load_ticket_config(system)
        open_system(config).comment(ticket, note)
    except (TicketError, UsageError) as exc:
        return "failed: " + str(exc).splitlines()[0]
    return "ok"


def deliver(
    incident: Incident,
    item: Due,
    channels: Channels,
    *,
    store: IncidentStore | None = None,
    people: People | None = None,
    now: _dt.datetime | None = None,
) -> dict[str, str]:
    """Deliver what `item` (a notify, remind or escalate from lifecycle.due) says; channel -> outcome."""
    moment = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    if item.kind == "notify":
        body = update_text(incident, item.stage, moment, channels)
        oncall = [people.oncall.email] if people and people.oncall and people.oncall.email else []
        return send_text(incident, body.splitlines()[0], body, channels, email_to=oncall)
    subject, body = due_text(incident, item, moment, channels, people)
    to = [c.email for c in item.recipients if c.email]
    # reminders are for the incident's people, not for the ticket's readers
    return send_text(
        incident, subject, body, channels, kind=item.kind, email_to=to, ticket=item.kind == "escalate"
    )
