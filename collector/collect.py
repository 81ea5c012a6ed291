"""The collect step: inventory + pattern → transport runs the probe runner everywhere → bundle → triage →
report.

Every host's outcome is a value (RunResult). Each host's evidence goes into the bundle as it arrives;
Ctrl-C, SIGTERM and SIGHUP (a dropped SSH session) still write a valid bundle marked interrupted, and a
full disk keeps what was written and marks the bundle incomplete. The archive is written once, at the end.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from collector import envfile
from collector.bundle import Bundle, BundleWriter
from collector.config import Settings, check_fleet_settings, load_settings
from collector.core import (
    EXIT_OK,
    EXIT_PARTIAL,
    Findings,
    HostResult,
    ProbeResult,
    RunResult,
    UsageError,
    utcnow,
)
from collector.inventory import Inventory, default_inventory, inventory_files, load_inventory
from collector.jsonfile import read_json
from collector.probes import load_entries
from collector.redact import Redactor
from collector.times import instant_or_none, iso_z, window_start
from collector.transport import ENGINES, Interrupted, Payload, Progress, Target, get_transport, no_progress


@dataclass
class CollectOutcome:
    """What `collect` hands back: the run, where its bundle is, triage's findings if any, the exit code."""

    run: RunResult
    bundle: Path | None
    exit_code: int
    findings: Findings | None = None  # triage's typed verdict (findings.json is its to_dict)
    reports: Any = None
    log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # non-fatal problems (triage/report missing or failing)
    incomplete: dict[str, Any] | None = (
        None  # the disk failed while writing: why, and which files are missing
    )
    # The bundle's redactor (its known secrets, patterns and placeholders): whatever the CLI prints of the run
    # (host errors, notes, --json) goes through it, so the terminal shows what the bundle shows.
    redactor: Redactor | None = None


def check_since(since: str) -> str:
    """`10m`, `2h`, `1d`... or an ISO timestamp (collector.times); anything else → UsageError."""
    text = str(since).strip()
    try:
        window_start(text, _dt.datetime.now(_dt.UTC))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return text


def resolve_inventory(settings: Settings, explicit: str | None) -> str:
    """The inventory to read: -i, then COLLECTOR_INVENTORY/config, then ./inventory or the shipped one."""
    if explicit:
        return explicit
    if settings.inventory and (settings.inventory != "inventory" or Path("inventory").exists()):
        return settings.inventory
    return default_inventory()


def collect_targets(inv: Inventory, names: list[str]) -> dict[str, Target]:
    """The hosts to collect from, each with its vars and roles."""
    return {n: Target(n, inv.hosts[n], inv.roles(n)) for n in names}


class _Log:
    """Our own log: timestamped lines kept for collector.log (the bundle redacts them)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, message: str) -> None:
        with self.lock:
            self.lines.append(f"{utcnow()} {message}")


# Signals that stop a collection the way Ctrl-C does (SIGHUP: the SSH session that ran us dropped).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_last_signal: list[str] = []


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    _last_signal[:] = [signal.Signals(signum).name]
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """Make SIGTERM and SIGHUP behave like Ctrl-C (main thread only): the run stops, the bundle is written."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _as_ctrl_c)


@contextlib.contextmanager
def _held_signals() -> Iterator[list[int]]:
    """Hold Ctrl-C, SIGTERM and SIGHUP while the block runs (half a bundle is worse than a second's wait);
    the list yielded collects the signals that came, for the caller to act on afterwards."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_name() -> str:
    return _last_signal[0] if _last_signal else "Ctrl-C"


def _monitoring(settings: Settings, hostvars: dict[str, Any], log: _Log) -> list[ProbeResult]:
    from collector.monitoring import collect_monitoring  # late: HTTP clients load while the hosts work

    try:
        return list(collect_monitoring(settings, hostvars))
    except Exception as exc:  # noqa: BLE001 - the control-machine queries must never sink the host evidence
        log(f"monitoring: failed: {exc!r}")
        return []


def _logging_progress(progress: Progress, log: _Log, writer: BundleWriter | None = None) -> Progress:
    def relay(host: str, event: str, detail: dict[str, Any]) -> None:
        if event == "done":
            error = f" ({detail.get('error')})" if detail.get("error") else ""
            log(f"host {host}: {detail.get('status')}{error}")
            result = detail.get("result")
            if writer is not None and isinstance(result, HostResult):
                try:
                    writer.add_host(result)  # into the bundle now: a signal or a full disk later keeps it
                except Exception as exc:  # noqa: BLE001 - the final write tries again (evidence still in memory)
                    log(f"host {host}: writing its evidence failed: {exc!r}")
        with contextlib.suppress(Exception):  # a display glitch must not cost evidence
            progress(host, event, detail)

    return relay


def _after(bundle: Path, outcome: CollectOutcome, log: _Log) -> None:
    """Triage then reports (failures are notes, not errors); the caller seals once afterwards."""
    from collector.report import render_reports
    from collector.triage import triage_bundle

    try:
        outcome.findings = triage_bundle(bundle, seal=False)
    except Exception as exc:  # noqa: BLE001 - the evidence is written; a failing step is a note
        outcome.notes.append(f"triage failed: {exc!r}"[:300])
    try:
        outcome.reports = render_reports(bundle, seal=False)
    except Exception as exc:  # noqa: BLE001 - the evidence is written; a failing step is a note
        outcome.notes.append(f"report failed: {exc!r}"[:300])


def _finish(
    writer: BundleWriter,
    run: RunResult,
    outcome_log: _Log,
    after: bool,
    before_after: Callable[[], None] = lambda: None,
) -> CollectOutcome:
    """Write the rest of the bundle, run the after-steps unless stopped, seal once; the outcome."""
    with _held_signals() as caught:
        outcome_log("writing the bundle")
        bundle = writer.finish(run, list(outcome_log.lines))
    outcome = CollectOutcome(
        run,
        bundle,
        _exit_code(run),
        log=outcome_log.lines,
        incomplete=writer.incomplete,
        redactor=writer.redactor,
    )
    if outcome.incomplete is not None:
        missing = outcome.incomplete["missing"]
        outcome.notes.append(
            f"bundle INCOMPLETE ({outcome.incomplete['reason']}): {len(missing)} evidence "
            f"file(s) and the archive not written; what came before is in {bundle}"
        )
        outcome.exit_code = EXIT_PARTIAL
        return outcome  # no triage, report or archive: each needs room the disk does not have
    stopped = bool(caught)
    if after and not run.interrupted and not stopped:
        before_after()
        try:
            _after(bundle, outcome, outcome_log)
        except KeyboardInterrupt:
            stopped = True
    if stopped:
        outcome.notes.append(
            f"interrupted ({_signal_name()}) after the collection: triage and reports skipped"
        )
        outcome.exit_code = EXIT_PARTIAL
    with _held_signals():
        Bundle.open(bundle).seal()  # the one archive of this command
    return outcome


def collect(
    pattern: str,
    *,
    inventory: str | None = None,
    since: str | None = None,
    out_dir: str | None = None,
    timeout_s: float | None = None,
    engine: str | None = None,
    forks: int | None = None,
    incident: str | None = None,
    redact: bool | None = None,
    catalogue: str | None = None,
    command_line: list[str] | None = None,
    progress: Progress = no_progress,
    on_hosts: Callable[[dict[str, Target], Payload], None] | None = None,
    after: bool = True,
) -> CollectOutcome:
    """Collect from every host matching `pattern`; bad input raises UsageError before anything is written."""
    settings = load_settings(
        inventory=inventory,
        out_dir=out_dir,
        timeout_s=timeout_s,
        engine=engine,
        since=since,
        redact=redact,
        forks=forks,
    )
    since_value = check_since(settings.since)
    check_fleet_settings(settings)
    if settings.engine not in ENGINES:
        raise UsageError(f"unknown engine {settings.engine!r}: choose one of {', '.join(ENGINES)}")
    if settings.timeout_s <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    source = resolve_inventory(settings, inventory)
    entries = load_entries(catalogue or os.environ.get("COLLECTOR_CATALOGUE") or None)
    custom = bool(catalogue or os.environ.get("COLLECTOR_CATALOGUE"))
    if timeout_s is not None:  # an explicit --timeout bounds every probe, not only those without one
        entries = [
            {**e, "timeout_s": min(float(e.get("timeout_s") or timeout_s), timeout_s)} for e in entries
        ]
        custom = True
    payload = Payload(
        entries,
        since=since_value,
        cap_bytes=settings.cap_bytes,
        default_timeout_s=settings.timeout_s,
        extra={"inventory_files": inventory_files(source), "custom_catalogue": custom},
    )
    early = _start_early(settings, pattern, payload)
    try:
        inv = load_inventory(source)
        names = inv.match(pattern)
    except BaseException:
        if early is not None:
            early.cancel()
        raise
    targets = collect_targets(inv, names)
    payload.extra["inventory_files"] = inv.files
    transport = get_transport(settings.engine)
    log = _Log()
    run = RunResult(
        incident=incident or "",
        pattern=pattern,
        inventory=inv.source,
        engine=settings.engine,
        command_line=list(command_line or []),
        started=utcnow(),
        since=since_value,
    )
    # Secret host vars (passwords, tokens) are redacted wherever they show up: every host's, not only the
    # targets' (app1's .env and logs carry redis1's password).
    try:
        writer = BundleWriter(
            run,
            settings,
            known_secrets=inv.secret_values(),
            dotenv_probes=envfile.capture_probes(entries),
            hosts_hint=len(targets),
        )
    except BaseException:
        if early is not None:
            early.cancel()
        raise
    if on_hosts is not None:
        on_hosts(targets, payload)
    log(
        f"collect {pattern!r}: {len(targets)} host(s) from {inv.source}, engine {settings.engine}, since "
        f"{since_value}"
    )
    monitoring: list[ProbeResult] = []
    watcher = threading.Thread(
        target=lambda: monitoring.extend(_monitoring(settings, inv.hosts[names[0]], log)), daemon=True
    )
    watcher.start()
    warmer = threading.Thread(target=_warm_up, daemon=True)  # the controller idles while hosts work
    if after:
        warmer.start()
    relay = _logging_progress(progress, log, writer)
    try:
        if early is not None:
            run.hosts = early.finish(targets, relay)
        else:
            run.hosts = transport(targets, payload, settings, relay)
    except (Interrupted, KeyboardInterrupt) as exc:
        run.interrupted = True
        run.hosts = getattr(exc, "results", {}) or {
            n: HostResult(n, "failed", "interrupted before this host answered", roles=t.roles)
            for n, t in targets.items()
        }
        log(f"interrupted ({_signal_name()}): writing what was collected")
    try:
        watcher.join(timeout=0 if run.interrupted else 30)
    except KeyboardInterrupt:  # the monitoring answers are the least of it: write the hosts' evidence
        run.interrupted = True
        log(f"interrupted ({_signal_name()}) waiting for monitoring: writing what was collected")
    run.monitoring = list(monitoring)
    run.finished = utcnow()
    log(f"finished: {sum(r.status == 'ok' for r in run.hosts.values())}/{len(run.hosts)} host(s) ok")
    return _finish(writer, run, log, after, before_after=lambda: warmer.join(timeout=30))


def _warm_up() -> None:
    """Import triage and compile the report templates while the hosts run their probes (~0.3 s saved)."""
    # The after-steps load what they need anyway and report their own errors.
    with contextlib.suppress(Exception):
        import collector.triage.measures  # noqa: F401 - the import is the point
        from collector.report.render import warm_up

        warm_up()


def _start_early(settings: Settings, pattern: str, payload: Payload) -> Any:
    """The ansible engine starts ansible-playbook before we parse the inventory (it is a second process)."""
    if settings.engine != "ansible":
        return None
    from collector.transport.ansible import start

    return start(pattern, payload, settings, payload.extra["inventory_files"])


def _exit_code(run: RunResult) -> int:
    if run.interrupted or any(r.status != "ok" for r in run.hosts.values()):
        return EXIT_PARTIAL
    return EXIT_OK


# ---- ingest: one bundle from playbooks/collect.yml runs made elsewhere (AWX slices, ansible-runner) ----


@dataclass
class Slice:
    """One run's job events: an ansible-runner artifacts folder, or a folder of AWX job-event pages."""

    source: str  # as the user named it (messages and the log say which slice)
    events: list[dict[str, Any]]
    pattern: str = "all"
    inventory: str = "?"


def _artifact_run_dir(path: Path) -> Path | None:
    """The ident folder (holding job_events/) inside an artifacts or private data folder, if any."""
    if (path / "job_events").is_dir():
        return path
    for pattern in ("*/job_events", "artifacts/*/job_events"):
        found = sorted(path.glob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1].parent
    return None


def _awx_page_events(path: Path) -> list[dict[str, Any]] | None:
    """The events of AWX API pages (`GET /api/v2/jobs/N/job_events/` answers saved as *.json: `{"results":
    [...]}`, or a plain list of events); None when the folder or file holds no such page."""
    files = [path] if path.is_file() else sorted(path.glob("*.json"))
    pages = [read_json(f, None) for f in files]
    events: list[dict[str, Any]] = []
    found = False
    for page in pages:
        items = page.get("results") if isinstance(page, dict) else page
        if isinstance(items, list):
            found = True
            events.extend(e for e in items if isinstance(e, dict) and "event" in e)
    if not found:
        return None
    return sorted(events, key=lambda e: c if isinstance(c := e.get("counter"), int) else 1 << 30)


def read_slice(source: str) -> Slice:
    """One slice from a path; a path that holds neither artifacts nor AWX event pages is a UsageError."""
    from collector.transport.ansible import read_artifact_events

    path = Path(source)
    if not path.exists():
        raise UsageError(f"{source} does not exist")
    run_dir = _artifact_run_dir(path) if path.is_dir() else None
    if run_dir is not None:
        pattern, inventory = _command_args(run_dir)
        return Slice(str(run_dir), list(read_artifact_events(run_dir)), pattern, inventory)
    events = _awx_page_events(path)
    if events is None:
        raise UsageError(
            f"{source} holds no ansible-runner artifacts (no job_events folder) and no AWX job-event page"
        )
    return Slice(source, events)


def _command_args(run_dir: Path) -> tuple[str, str]:
    """(pattern, inventory) from the artifacts' `command` file; ('all', '?') when absent."""
    argv = read_json(run_dir / "command", {}, want=dict).get("command") or []
    if not argv:
        return "all", "?"
    pattern, inventories = "all", []
    for i, word in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if word in ("-l", "--limit"):
            pattern = nxt
        elif word.startswith("--limit="):
            pattern = word.split("=", 1)[1]
        elif word in ("-i", "--inventory"):
            inventories.append(nxt)
    return pattern, ",".join(inventories) or "?"


def _since_of(events: list[dict[str, Any]]) -> str:
    """The journal window the runner task was asked for (its logged `request` argument); "" when unknown."""
    from collector.transport.ansible import RUNNER_TASK

    for event in events:
        data = event.get("event_data") or {}
        if data.get("task") != RUNNER_TASK:
            continue
        args = ((data.get("res") or {}).get("invocation") or {}).get("module_args") or {}
        request = args.get("request")
        try:
            since = (json.loads(request) if isinstance(request, str) else request or {}).get("since")
        except (ValueError, AttributeError):
            continue
        if since:
            return str(since)
    return ""


def merge_slices(slices: list[tuple[str, dict[str, HostResult]]]) -> dict[str, HostResult]:
    """Each host once, whichever slice held it. A host given twice with the very same result (the same
    slice named twice, overlapping event pages) is kept once; with different results it is a UsageError:
    which one is the evidence is the operator's call, not ours."""
    merged: dict[str, HostResult] = {}
    seen_in: dict[str, str] = {}
    for source, hosts in slices:
        for name, result in hosts.items():
            if name in merged and merged[name] != result:
                raise UsageError(
                    f"host {name} is in two slices with different results ({seen_in[name]} and {source}): "
                    "ingest each run once, or leave out the run you do not want"
                )
            merged.setdefault(name, result)
            seen_in.setdefault(name, source)
    return dict(sorted(merged.items()))


def _union(values: list[str], sep: str) -> str:
    unique = list(dict.fromkeys(v for v in values if v))
    return sep.join(unique)


def ingest(
    artifacts_dirs: str | list[str],
    *,
    out_dir: str | None = None,
    incident: str | None = None,
    redact: bool | None = None,
    command_line: list[str] | None = None,
    after: bool = True,
    inventory: str | None = None,
    unseal_key: str | None = None,
) -> CollectOutcome:
    """Build one bundle from the artifacts of one or more playbooks/collect.yml runs (AWX job slices,
    ansible-runner runs): same manifest, redaction and sums as `collect`. Runs made with
    `collector_output_recipient` hold sealed outputs, opened with the private key at `unseal_key`.

    Every slice is read and merged before anything is written, so a bad slice or a conflicting host leaves
    no bundle behind. The secret host variables of `inventory` (else of the runs' own inventories, when
    readable here) are redacted wherever they show up, as `collect` does with the inventory it reads.
    """
    from collector.seal import SealError, Unsealer
    from collector.transport.ansible import host_results_from_events

    settings = load_settings(out_dir=out_dir, redact=redact)
    unsealer = Unsealer.from_file(unseal_key) if unseal_key else None
    sources = [artifacts_dirs] if isinstance(artifacts_dirs, str) else list(artifacts_dirs)
    if not sources:
        raise UsageError("ingest needs at least one artifacts folder")
    slices: list[Slice] = []
    per_slice: list[tuple[str, dict[str, HostResult]]] = []
    stamps: list[str] = []
    sinces: list[str] = []
    for source in sources:  # one slice's events at a time: only the parsed results stay in memory
        one = read_slice(source)
        try:
            hosts = host_results_from_events(one.events, {}, unsealer)
        except SealError as exc:
            raise UsageError(f"{one.source}: {exc}") from None
        if not hosts:
            raise UsageError(f"{one.source} holds no result of playbooks/collect.yml's probe-runner task")
        per_slice.append((one.source, hosts))
        created = sorted(str(e.get("created")) for e in one.events if e.get("created"))
        stamps += created[:1] + created[-1:]
        sinces.append(_since_of(one.events))
        one.events = []
        slices.append(one)
    merged = merge_slices(per_slice)
    stamps.sort()
    sinces = list(dict.fromkeys(filter(None, sinces)))
    pattern = _union([s.pattern for s in slices], ":") or "all"  # Ansible's union of patterns
    run_inventory = _union([s.inventory for s in slices if s.inventory != "?"], ",") or "?"
    log = _Log()
    for (source, hosts), one in zip(per_slice, slices, strict=True):
        log(f"ingest {source}: {len(hosts)} host(s), pattern {one.pattern!r}, inventory {one.inventory}")
    if len(slices) > 1:
        log(f"merged {len(slices)} slices: {len(merged)} host(s)")
    if len(sinces) > 1:
        log(f"the slices asked for different windows ({', '.join(sinces)}): the manifest keeps {sinces[0]}")
    run = RunResult(
        incident=incident or "",
        pattern=pattern,
        inventory=run_inventory,
        engine="ansible-ingest",
        command_line=list(command_line or []),
        started=_iso(stamps[0]) if stamps else utcnow(),
        finished=_iso(stamps[-1]) if stamps else utcnow(),
        since=sinces[0] if sinces else "",
        hosts=merged,
    )
    for name, result in run.hosts.items():
        log(f"host {name}: {result.status}" + (f" ({result.error})" if result.error else ""))
    secrets_from = (
        [inventory] if inventory else [p for p in run_inventory.split(",") if p != "?" and Path(p).is_file()]
    )
    secrets = [value for source in secrets_from for value in load_inventory(source).secret_values()]
    log(
        f"known secrets: {len(secrets)} value(s) from the secret host variables of {', '.join(secrets_from)}"
        if secrets_from
        else "known secrets: none (no inventory: pass -i INVENTORY so its secret host variables are redacted)"
    )
    writer = BundleWriter(run, settings, known_secrets=secrets, hosts_hint=len(run.hosts))
    return _finish(writer, run, log, after)


def _iso(stamp: str) -> str:
    """ansible-runner's `created` (naive UTC ISO) in our format."""
    moment = instant_or_none(stamp)
    return iso_z(moment) if moment else stamp
