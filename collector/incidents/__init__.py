"""Incidents: the Alertmanager webhook receiver, the incident store, the lifecycle and its comms.

The contract between the receiver/store (store.py, server.py, worker.py, cli/serve.py) and the
lifecycle/comms side (lifecycle.py, timers.py, notify.py, page.py, cli/incident.py):

Value: `collector.core.Incident` (frozen; to_dict/from_dict) with id (`inc-YYYYMMDD-HHMMSS-xxxxxx`),
group_key, title, state (`core.INCIDENT_STATES`: open, acknowledged, mitigating, resolved, closed;
`INCIDENT_ACTIVE_STATES` are the first three), severity (`core.SEVERITIES` or None), commander,
opened_at / acked_at / resolved_at / closed_at (ISO 8601 UTC strings, `core.utcnow()`'s form),
bundles (bundle folder paths, oldest first), plan (plan file path), ticket (ticket id), hosts,
alerts (count of distinct alerts), labels (the labels all its alerts share).

Store: `store.IncidentStore(url)`; url None/"" = SQLite at `store.default_db_path()`
(~/.local/state/incident-collector/incidents.db), a path = SQLite there, `postgresql://…` = PostgreSQL
(psycopg 3). The setting is `incidents_db` (COLLECTOR_INCIDENTS_DB). Every method is one short
transaction; several processes may share one store. Times may be given as ISO strings or datetimes.
- `open_or_join(group_key, alerts, now, *, title=, severity=, hosts=, labels=, commander=)
  -> (Incident, opened: bool)`: atomic across processes (a unique open_key column: exactly one
  INSERT wins, the others join). Opening adds the `declared` event. Joining raises severity to the
  worst given and merges hosts. `alerts` are Alertmanager alert dicts (labels/annotations) used for
  the default title and labels.
- `get(id)`, `find_active(group_key)`, `latest(group_key)`, `list(states=None, limit=100)` (newest first).
- `update(id, **fields)` -> Incident: any field but id/group_key/opened_at. It sets only what it is
  given (the caller sets acked_at etc. and adds the event). A state of resolved/closed frees the group
  key (the next firing opens a new incident); moving back to an active state takes it again.
- `add_bundle(id, path)` appends a bundle atomically.
- `add_event(id, kind, at, actor=None, detail=None)` -> store.Event; `events(id)` -> the timeline in
  time order. Kinds (`store.EVENT_KINDS`): alert-fired (at = Alertmanager's startsAt, added by
  record_alert), declared, acknowledged, collected, root-cause, plan-approved, applied, verified,
  resolved, closed; the receiver also writes alert-resolved, triaged, reported, ticket-created,
  planned, collect-failed, verify-failed, collect-interrupted. Others may add their own kinds
  (update-sent, reminder, escalated, silenced ...).
- `record_alert(id, fingerprint, status, labels, starts_at, ends_at=None, now=None)` -> new?: one row
  per (incident, fingerprint, startsAt); retries/repeats update status, endsAt and a delivery count.
  `alerts(id)` -> list[store.AlertRecord] (fingerprint, status, labels, starts_at, ends_at, deliveries).
- Work: `claim_work(kind, id, now, owner=, args=)` -> store.Work | None (None: that kind is already
  queued/running for the incident), `start_work`, `heartbeat`, `finish_work(work_id, state, now,
  detail)` (done|failed|interrupted), `heartbeat_owner(owner)`, `work(id, states, kinds)`,
  `stale_work(now, lease_s)` (owner process dead
  on this machine, or no heartbeat within the lease), `take_over(work, now)` (marks it interrupted with
  a `<kind>-interrupted` event and queues it again, attempt + 1).

The receiver (worker.Service): a firing notification opens or joins the group's incident (severity from the
alerts' `severity`/`priority` labels until triage's verdict replaces it; hosts from webhook.route_hosts),
records every alert, and queues one `collect` (kinds worker.COLLECT/VERIFY); a repeat of the alerts of a
resolved or closed incident (same fingerprint and startsAt) is recorded there and opens nothing. A resolved
notification queues `verify`; the receiver moves the incident to resolved (resolved_at, `verified` +
`resolved` events) only when the step 5 checklist passes, else a `verify-failed` event. Settings:
serve_listen, serve_token, serve_max_collections, serve_queue_size, serve_host_labels, serve_fallback_hosts,
serve_lookback_s, serve_verify_wait_s, serve_ticket_system/project, serve_tick_s; signing_key makes the
service request its plans.

Hooks the receiver calls (the lifecycle side owns these modules; a missing module or function is skipped):
- `collector.incidents.lifecycle.on_event(store, incident, event, settings)`: after every event the
  receiver records (declared, collected, triaged, planned, resolved ...): comms, clocks, commander.
  Called in the worker thread; an exception is logged and does not stop the receiver.
- `collector.incidents.lifecycle.tick(store, settings, now)`: every `serve_tick_s` seconds (timers,
  reminders, escalation).
- `collector.incidents.page.routes(store, settings)` -> list of Starlette routes mounted on the app
  (the incidents page). The webhook is `POST /alertmanager`, health `GET /healthz`.
"""

from __future__ import annotations
