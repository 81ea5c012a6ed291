"""The incident store: incidents, their timelines, their alerts and the work done for them.

SQLite by default (a file, no server), PostgreSQL when a URL is configured (psycopg 3), through
SQLAlchemy Core. Every write is its own short transaction, so several `serve` processes (on one
machine with SQLite, on several with PostgreSQL) can share one store: uniqueness constraints, not
process-local locks, decide who opened an incident or who runs a piece of work.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import secrets
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from collector.core import (
    INCIDENT_ACTIVE_STATES,
    INCIDENT_STATES,
    SEVERITIES,
    Incident,
    UsageError,
    severity_rank,
    utcnow,
)

# The timeline's event kinds, in the order an incident usually meets them (others are allowed).
EVENT_KINDS: tuple[str, ...] = (
    "alert-fired",
    "declared",
    "acknowledged",
    "collected",
    "root-cause",
    "plan-approved",
    "applied",
    "verified",
    "resolved",
    "closed",
)
WORK_STATES: tuple[str, ...] = ("queued", "running", "done", "failed", "interrupted")
_UNFINISHED = ("queued", "running")

metadata = sa.MetaData()

incidents_table = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("group_key", sa.Text, nullable=False, index=True),
    # group_key while the incident is active, NULL after: the unique constraint is what makes opening
    # atomic across processes (NULLs never collide, on SQLite and PostgreSQL alike).
    sa.Column("open_key", sa.Text, nullable=True, unique=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("severity", sa.String(4), nullable=True),
    sa.Column("commander", sa.Text, nullable=True),
    sa.Column("opened_at", sa.String(40), nullable=False),
    sa.Column("acked_at", sa.String(40), nullable=True),
    sa.Column("resolved_at", sa.String(40), nullable=True),
    sa.Column("closed_at", sa.String(40), nullable=True),
    sa.Column("bundles", sa.JSON, nullable=False),
    sa.Column("plan", sa.Text, nullable=True),
    sa.Column("ticket", sa.Text, nullable=True),
    sa.Column("hosts", sa.JSON, nullable=False),
    sa.Column("alerts", sa.Integer, nullable=False, default=0),
    sa.Column("labels", sa.JSON, nullable=False),
)

events_table = sa.Table(
    "incident_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(80), sa.ForeignKey("incidents.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("actor", sa.Text, nullable=True),
    sa.Column("detail", sa.JSON, nullable=True),
)

alerts_table = sa.Table(
    "incident_alerts",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(80), sa.ForeignKey("incidents.id"), nullable=False, index=True),
    sa.Column("fingerprint", sa.String(80), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("starts_at", sa.String(40), nullable=False),
    sa.Column("ends_at", sa.String(40), nullable=True),
    sa.Column("first_seen", sa.String(40), nullable=False),
    sa.Column("last_seen", sa.String(40), nullable=False),
    sa.Column("deliveries", sa.Integer, nullable=False),
    # One row per alert instance: Alertmanager's retries and repeats of the same alert update it.
    sa.UniqueConstraint("incident_id", "fingerprint", "starts_at", name="uq_incident_alert"),
)

work_table = sa.Table(
    "incident_work",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(80), sa.ForeignKey("incidents.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(40), nullable=False),
    # "incident:kind" while queued or running, NULL after: one unfinished piece of each kind per incident.
    sa.Column("active_key", sa.Text, nullable=True, unique=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("queued_at", sa.String(40), nullable=False),
    sa.Column("started_at", sa.String(40), nullable=True),
    sa.Column("heartbeat_at", sa.String(40), nullable=True),
    sa.Column("finished_at", sa.String(40), nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("args", sa.JSON, nullable=True),
    sa.Column("detail", sa.JSON, nullable=True),
)

_INCIDENT_FIELDS = tuple(f.name for f in fields(Incident))
_UPDATABLE = frozenset(_INCIDENT_FIELDS) - {"id", "group_key", "opened_at"}


@dataclass(frozen=True)
class Event:
    """One timeline entry of an incident."""

    seq: int
    incident: str
    kind: str
    at: str
    actor: str | None = None
    detail: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "incident": self.incident,
            "kind": self.kind,
            "at": self.at,
            "actor": self.actor,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class AlertRecord:
    """One alert recorded on an incident (deduplicated by fingerprint and startsAt)."""

    incident: str
    fingerprint: str
    status: str
    labels: dict[str, str]
    starts_at: str
    ends_at: str | None
    first_seen: str
    last_seen: str
    deliveries: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident": self.incident,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "labels": dict(self.labels),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "deliveries": self.deliveries,
        }


@dataclass(frozen=True)
class Work:
    """A piece of work (a collection, a verify...) claimed for an incident by one process."""

    id: int
    incident: str
    kind: str
    state: str
    owner: str
    queued_at: str
    started_at: str | None
    heartbeat_at: str | None
    finished_at: str | None
    attempt: int
    args: dict[str, Any] | None
    detail: dict[str, Any] | None


def iso(moment: str | _dt.datetime | None) -> str:
    """An ISO 8601 UTC string from a datetime or an ISO string (None: now)."""
    if moment is None:
        return utcnow()
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instant(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    from collector.times import instant_or_none

    return instant_or_none(text)


def process_owner() -> str:
    """This process as a work owner: host name and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_dead(owner: str) -> bool:
    """True when `owner` is a process of this machine that no longer runs (others: unknown, so False)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(pid) != os.getpid() and _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def default_db_path() -> Path:
    """Where the SQLite store lives when no URL is configured."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "incident-collector" / "incidents.db"


def engine_url(url: str | None) -> str:
    """A SQLAlchemy URL from the setting: empty → the default SQLite file, a path → SQLite,
    `postgresql://` / `postgres://` → PostgreSQL through psycopg 3."""
    if not url:
        url = str(default_db_path())
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("postgresql+", "sqlite:")):
        return url
    if "://" in url:
        raise UsageError(
            f"incidents database {url.split('://', 1)[0]}:// is not supported (SQLite path or postgresql://)"
        )
    return f"sqlite:///{Path(url).expanduser().absolute()}"


def _make_engine(url: str | None) -> Engine:
    sa_url = engine_url(url)
    if sa_url.startswith("sqlite"):
        path = sa.engine.make_url(sa_url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = sa.create_engine(sa_url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own BEGIN is deferred: two writers that both read first deadlock on the upgrade
            # without waiting. BEGIN IMMEDIATE (below) takes the write lock up front and waits for it.
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA foreign_keys=ON")
            dbapi_connection.execute("PRAGMA busy_timeout=30000")

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # small pool: a PostgreSQL shared by several serve processes may allow few connections (the lab: 30)
    return sa.create_engine(sa_url, pool_pre_ping=True, pool_size=3, max_overflow=4, pool_timeout=60)


def _new_id(group_key: str, now: str) -> str:
    moment = _instant(now) or _dt.datetime.now(_dt.UTC)
    short = hashlib.sha256(f"{group_key}\0{secrets.token_hex(8)}".encode()).hexdigest()[:6]
    return f"inc-{moment.strftime('%Y%m%d-%H%M%S')}-{short}"


def common_labels(alerts: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The labels every alert carries with the same value."""
    label_sets = [dict(a.get("labels") or {}) for a in alerts]
    if not label_sets:
        return {}
    common = {str(k): str(v) for k, v in label_sets[0].items()}
    for labels in label_sets[1:]:
        common = {k: v for k, v in common.items() if str(labels.get(k)) == v}
    return common


def alerts_title(alerts: Sequence[Mapping[str, Any]]) -> str:
    """A title from the alerts: the alert name(s) and the first summary."""
    names = sorted({str((a.get("labels") or {}).get("alertname") or "alert") for a in alerts}) or ["alert"]
    summary = next(
        (
            str((a.get("annotations") or {}).get("summary"))
            for a in alerts
            if (a.get("annotations") or {}).get("summary")
        ),
        "",
    )
    title = ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
    return f"{title}: {summary}" if summary else title


def _check_severity(severity: str | None) -> None:
    if severity is not None and severity not in SEVERITIES:
        raise UsageError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")


class IncidentStore:
    """Incidents, events, alerts and work in one database (see the package docstring for the contract)."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None) -> None:
        self.url = engine_url(url)
        self.engine = engine or _make_engine(url)
        self._create_schema()

    def _create_schema(self) -> None:
        # Two processes starting together may both try to create the tables: the loser's error is harmless.
        for attempt in range(3):
            try:
                metadata.create_all(self.engine, checkfirst=True)
                return
            except sa.exc.DBAPIError:
                if attempt == 2:
                    raise

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ------------------------------------------------------------------ incidents
    @staticmethod
    def _incident(row: Any) -> Incident:
        m = row._mapping
        return Incident(
            id=m["id"],
            group_key=m["group_key"],
            title=m["title"],
            state=m["state"],
            severity=m["severity"],
            commander=m["commander"],
            opened_at=m["opened_at"],
            acked_at=m["acked_at"],
            resolved_at=m["resolved_at"],
            closed_at=m["closed_at"],
            bundles=tuple(m["bundles"] or ()),
            plan=m["plan"],
            ticket=m["ticket"],
            hosts=tuple(m["hosts"] or ()),
            alerts=int(m["alerts"] or 0),
            labels={str(k): str(v) for k, v in (m["labels"] or {}).items()},
        )

    def open_or_join(
        self,
        group_key: str,
        alerts: Sequence[Mapping[str, Any]],
        now: str | _dt.datetime | None = None,
        *,
        title: str | None = None,
        severity: str | None = None,
        hosts: Iterable[str] | None = None,
        labels: Mapping[str, str] | None = None,
        commander: str | None = None,
    ) -> tuple[Incident, bool]:
        """The active incident of `group_key`, or a new one; True when this call opened it.

        Atomic across processes: the unique open_key lets exactly one INSERT win; the others join.
        Joining raises the severity to the worst seen and adds hosts; it records no alert (record_alert does).
        """
        _check_severity(severity)
        at = iso(now)
        host_list = list(dict.fromkeys(hosts or ()))
        for _ in range(10):
            with self._tx() as conn:
                row = conn.execute(
                    sa.select(incidents_table).where(incidents_table.c.open_key == group_key)
                ).first()
                if row is not None:
                    current = self._incident(row)
                    changes: dict[str, Any] = {}
                    if severity and (
                        current.severity is None or severity_rank(severity) < severity_rank(current.severity)
                    ):
                        changes["severity"] = severity
                    merged = list(dict.fromkeys([*current.hosts, *host_list]))
                    if merged != list(current.hosts):
                        changes["hosts"] = merged
                    if changes:
                        conn.execute(
                            sa.update(incidents_table)
                            .where(incidents_table.c.id == current.id)
                            .values(**changes)
                        )
                        current = replace(
                            current,
                            severity=changes.get("severity", current.severity),
                            hosts=tuple(changes.get("hosts", current.hosts)),
                        )
                    return current, False
            incident = Incident(
                id=_new_id(group_key, at),
                group_key=group_key,
                title=title or alerts_title(alerts),
                state="open",
                severity=severity,  # type: ignore[arg-type]  # checked above
                commander=commander,
                opened_at=at,
                hosts=tuple(host_list),
                labels=dict(labels) if labels is not None else common_labels(alerts),
            )
            try:
                with self._tx() as conn:
                    conn.execute(sa.insert(incidents_table).values(open_key=group_key, **self._row(incident)))
                    conn.execute(
                        sa.insert(events_table).values(
                            incident_id=incident.id,
                            kind="declared",
                            at=at,
                            actor=None,
                            detail={"group_key": group_key, "severity": severity},
                        )
                    )
                return incident, True
            except sa.exc.IntegrityError:
                continue  # another process opened it between our look and our insert: join theirs
        raise RuntimeError(f"could not open or join the incident of group {group_key!r}")

    @staticmethod
    def _row(incident: Incident) -> dict[str, Any]:
        row = {name: getattr(incident, name) for name in _INCIDENT_FIELDS}
        row["bundles"], row["hosts"], row["labels"] = (
            list(incident.bundles),
            list(incident.hosts),
            dict(incident.labels),
        )
        return row

    def get(self, incident_id: str) -> Incident | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(incidents_table).where(incidents_table.c.id == incident_id)).first()
        return self._incident(row) if row is not None else None

    def find_active(self, group_key: str) -> Incident | None:
        """The active incident of a group key, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(incidents_table).where(incidents_table.c.open_key == group_key)
            ).first()
        return self._incident(row) if row is not None else None

    def latest(self, group_key: str) -> Incident | None:
        """The most recently opened incident of a group key, active or not."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(incidents_table)
                .where(incidents_table.c.group_key == group_key)
                .order_by(incidents_table.c.opened_at.desc(), incidents_table.c.id.desc())
            ).first()
        return self._incident(row) if row is not None else None

    def update(self, incident_id: str, **changes: Any) -> Incident:
        """Set fields of an incident (not id, group_key or opened_at); returns it as stored.

        Moving to resolved or closed frees its group key: the next firing of that group opens a new incident.
        """
        bad = sorted(set(changes) - _UPDATABLE)
        if bad:
            raise UsageError(f"incident field {bad[0]!r} cannot be updated")
        if "state" in changes and changes["state"] not in INCIDENT_STATES:
            raise UsageError(
                f"incident state {changes['state']!r} is not one of {', '.join(INCIDENT_STATES)}"
            )
        if "severity" in changes:
            _check_severity(changes["severity"])
        values = {
            k: (list(v) if k in ("bundles", "hosts") else dict(v) if k == "labels" else v)
            for k, v in changes.items()
        }
        with self._tx() as conn:
            row = conn.execute(sa.select(incidents_table).where(incidents_table.c.id == incident_id)).first()
            if row is None:
                raise UsageError(f"no incident {incident_id!r}")
            if "state" in values:
                values["open_key"] = (
                    row._mapping["group_key"] if values["state"] in INCIDENT_ACTIVE_STATES else None
                )
            try:
                conn.execute(
                    sa.update(incidents_table).where(incidents_table.c.id == incident_id).values(**values)
                )
            except sa.exc.IntegrityError:
                raise UsageError(
                    f"incident {incident_id}: group {row._mapping['group_key']!r} already has an active "
                    "incident"
                ) from None
            row = conn.execute(sa.select(incidents_table).where(incidents_table.c.id == incident_id)).first()
        return self._incident(row)

    def add_bundle(self, incident_id: str, bundle: str) -> Incident:
        """Append a bundle path to the incident (read and written in one transaction)."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(incidents_table.c.bundles).where(incidents_table.c.id == incident_id)
            ).first()
            if row is None:
                raise UsageError(f"no incident {incident_id!r}")
            bundles = [*list(row[0] or []), bundle]
            conn.execute(
                sa.update(incidents_table).where(incidents_table.c.id == incident_id).values(bundles=bundles)
            )
        incident = self.get(incident_id)
        assert incident is not None
        return incident

    # ------------------------------------------------------------------ timeline
    def add_event(
        self,
        incident_id: str,
        kind: str,
        at: str | _dt.datetime | None = None,
        actor: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append one timeline event."""
        when = iso(at)
        with self._tx() as conn:
            result = conn.execute(
                sa.insert(events_table).values(
                    incident_id=incident_id,
                    kind=kind,
                    at=when,
                    actor=actor,
                    detail=dict(detail) if detail is not None else None,
                )
            )
            seq = int(result.inserted_primary_key[0])  # type: ignore[index]
        return Event(seq, incident_id, kind, when, actor, dict(detail) if detail is not None else None)

    def events(self, incident_id: str) -> list[Event]:
        """The incident's timeline, in time order (ties in insertion order)."""
        query = (
            sa.select(events_table)
            .where(events_table.c.incident_id == incident_id)
            .order_by(events_table.c.at, events_table.c.seq)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Event(r.seq, r.incident_id, r.kind, r.at, r.actor, r.detail) for r in rows]

    # ------------------------------------------------------------------ alerts
    def record_alert(
        self,
        incident_id: str,
        fingerprint: str,
        status: str,
        labels: Mapping[str, str],
        starts_at: str,
        ends_at: str | None = None,
        now: str | _dt.datetime | None = None,
    ) -> bool:
        """Record one alert of a notification on the incident; True when it is new.

        A retry or a repeat of the same alert (same fingerprint and startsAt) updates its row (status,
        endsAt, delivery count) and adds nothing; a new one also adds an `alert-fired` event at its startsAt.
        """
        seen = iso(now)
        ends = ends_at if ends_at and not ends_at.startswith("0001-") else None
        key = (
            (alerts_table.c.incident_id == incident_id)
            & (alerts_table.c.fingerprint == fingerprint)
            & (alerts_table.c.starts_at == starts_at)
        )
        for _ in range(5):
            with self._tx() as conn:
                row = conn.execute(sa.select(alerts_table.c.seq, alerts_table.c.status).where(key)).first()
                if row is not None:
                    conn.execute(
                        sa.update(alerts_table)
                        .where(alerts_table.c.seq == row.seq)
                        .values(
                            status=status,
                            ends_at=ends,
                            last_seen=seen,
                            deliveries=alerts_table.c.deliveries + 1,
                        )
                    )
                    return False
            try:
                with self._tx() as conn:
                    conn.execute(
                        sa.insert(alerts_table).values(
                            incident_id=incident_id,
                            fingerprint=fingerprint,
                            status=status,
                            labels={str(k): str(v) for k, v in labels.items()},
                            starts_at=starts_at,
                            ends_at=ends,
                            first_seen=seen,
                            last_seen=seen,
                            deliveries=1,
                        )
                    )
                    conn.execute(
                        sa.update(incidents_table)
                        .where(incidents_table.c.id == incident_id)
                        .values(alerts=incidents_table.c.alerts + 1)
                    )
                    conn.execute(
                        sa.insert(events_table).values(
                            incident_id=incident_id,
                            kind="alert-fired",
                            at=starts_at,
                            actor="alertmanager",
                            detail={
                                "fingerprint": fingerprint,
                                "alertname": str(labels.get("alertname", "")),
                                "status": status,
                            },
                        )
                    )
                return True
            except sa.exc.IntegrityError:
                continue  # a concurrent delivery of the same alert inserted first: count ours as a retry
        return False

    def alerts(self, incident_id: str) -> list[AlertRecord]:
        query = (
            sa.select(alerts_table)
            .where(alerts_table.c.incident_id == incident_id)
            .order_by(alerts_table.c.starts_at, alerts_table.c.seq)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            AlertRecord(
                r.incident_id,
                r.fingerprint,
                r.status,
                dict(r.labels or {}),
                r.starts_at,
                r.ends_at,
                r.first_seen,
                r.last_seen,
                r.deliveries,
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ work
    @staticmethod
    def _work(row: Any) -> Work:
        m = row._mapping
        return Work(
            m["id"],
            m["incident_id"],
            m["kind"],
            m["state"],
            m["owner"],
            m["queued_at"],
            m["started_at"],
            m["heartbeat_at"],
            m["finished_at"],
            int(m["attempt"]),
            m["args"],
            m["detail"],
        )

    def claim_work(
        self,
        kind: str,
        incident_id: str,
        now: str | _dt.datetime | None = None,
        *,
        owner: str | None = None,
        args: Mapping[str, Any] | None = None,
        attempt: int = 1,
    ) -> Work | None:
        """Queue a piece of work for the incident, owned by this process; None when one of that kind is
        already queued or running (by any process)."""
        at = iso(now)
        try:
            with self._tx() as conn:
                result = conn.execute(
                    sa.insert(work_table).values(
                        incident_id=incident_id,
                        kind=kind,
                        active_key=f"{incident_id}:{kind}",
                        state="queued",
                        owner=owner or process_owner(),
                        queued_at=at,
                        heartbeat_at=at,
                        attempt=attempt,
                        args=dict(args) if args is not None else None,
                    )
                )
                work_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        except sa.exc.IntegrityError:
            return None
        return self.get_work(work_id)

    def get_work(self, work_id: int) -> Work | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(work_table).where(work_table.c.id == work_id)).first()
        return self._work(row) if row is not None else None

    def start_work(self, work_id: int, now: str | _dt.datetime | None = None) -> None:
        at = iso(now)
        with self._tx() as conn:
            conn.execute(
                sa.update(work_table)
                .where(work_table.c.id == work_id)
                .values(state="running", started_at=at, heartbeat_at=at)
            )

    def heartbeat(self, work_id: int, now: str | _dt.datetime | None = None) -> None:
        with self._tx() as conn:
            conn.execute(
                sa.update(work_table).where(work_table.c.id == work_id).values(heartbeat_at=iso(now))
            )

    def heartbeat_owner(self, owner: str, now: str | _dt.datetime | None = None) -> int:
        """Renew the lease of every unfinished piece of work `owner` holds; how many."""
        with self._tx() as conn:
            result = conn.execute(
                sa.update(work_table)
                .where((work_table.c.owner == owner) & (work_table.c.state.in_(_UNFINISHED)))
                .values(heartbeat_at=iso(now))
            )
            return int(result.rowcount)

    def finish_work(
        self,
        work_id: int,
        state: str,
        now: str | _dt.datetime | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """End a piece of work: done, failed or interrupted (frees its kind for the incident)."""
        if state not in ("done", "failed", "interrupted"):
            raise UsageError(f"work state {state!r} is not done, failed or interrupted")
        with self._tx() as conn:
            conn.execute(
                sa.update(work_table)
                .where(work_table.c.id == work_id)
                .values(
                    state=state,
                    finished_at=iso(now),
                    active_key=None,
                    detail=dict(detail) if detail is not None else None,
                )
            )

    def work(
        self,
        incident_id: str | None = None,
        states: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
    ) -> list[Work]:
        """Work items, oldest first, filtered by incident, states and kinds."""
        query = sa.select(work_table).order_by(work_table.c.id)
        if incident_id is not None:
            query = query.where(work_table.c.incident_id == incident_id)
        if kinds is not None:
            query = query.where(work_table.c.kind.in_(list(kinds)))
        if states is not None:
            query = query.where(work_table.c.state.in_(list(states)))
        with self.engine.connect() as conn:
            return [self._work(r) for r in conn.execute(query)]

    def stale_work(self, now: str | _dt.datetime | None = None, lease_s: float = 60.0) -> list[Work]:
        """Queued or running work whose owner is gone: a process of this machine that no longer runs,
        or (any machine) no heartbeat within `lease_s`."""
        moment = _instant(iso(now)) or _dt.datetime.now(_dt.UTC)
        out = []
        for item in self.work(states=_UNFINISHED):
            beat = _instant(item.heartbeat_at or item.queued_at)
            expired = beat is None or (moment - beat).total_seconds() > lease_s
            if item.owner != process_owner() and (expired or _owner_dead(item.owner)):
                out.append(item)
        return out

    def take_over(
        self, item: Work, now: str | _dt.datetime | None = None, *, owner: str | None = None
    ) -> Work | None:
        """Mark stale work interrupted and queue it again for this process (attempt + 1); None when another
        process took it over first."""
        at = iso(now)
        with self._tx() as conn:
            result = conn.execute(
                sa.update(work_table)
                .where(
                    (work_table.c.id == item.id)
                    & (work_table.c.state.in_(_UNFINISHED))
                    & (work_table.c.owner == item.owner)
                )
                .values(
                    state="interrupted",
                    finished_at=at,
                    active_key=None,
                    detail={"reason": f"owner {item.owner} stopped during {item.state} work"},
                )
            )
            if result.rowcount != 1:
                return None
            conn.execute(
                sa.insert(events_table).values(
                    incident_id=item.incident,
                    kind=f"{item.kind}-interrupted",
                    at=at,
                    actor=owner or process_owner(),
                    detail={
                        "work": item.id,
                        "owner": item.owner,
                        "state": item.state,
                        "attempt": item.attempt,
                    },
                )
            )
        return self.claim_work(
            item.kind, item.incident, at, owner=owner, args=item.args, attempt=item.attempt + 1
        )

    # declared last: inside the class body, `list` names this method from here on
    def list(self, states: Iterable[str] | None = None, limit: int = 100) -> list[Incident]:
        """Incidents, newest first, optionally only those in `states`."""
        query = sa.select(incidents_table).order_by(
            incidents_table.c.opened_at.desc(), incidents_table.c.id.desc()
        )
        if states is not None:
            wanted = list(states)
            unknown = [s for s in wanted if s not in INCIDENT_STATES]
            if unknown:
                raise UsageError(f"incident state {unknown[0]!r} is not one of {', '.join(INCIDENT_STATES)}")
            query = query.where(incidents_table.c.state.in_(wanted))
        with self.engine.connect() as conn:
            return [self._incident(r) for r in conn.execute(query.limit(limit))]
