"""The one front door to Ansible: every playbook run of the tool goes through ansible-runner here.

`run_playbook` is generic (remediate uses it); `run` is the collection engine (playbooks/collect.yml).
Ansible's state (control sockets, local temp, ANSIBLE_HOME) goes to a private temp dir: nothing lands
in the user's home.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.config import Settings
from collector.core import HostResult
from collector.jsonfile import read_json
from collector.paths import resource
from collector.seal import SealError, Unsealer, sealed_to
from collector.transport import (
    Interrupted,
    Payload,
    Progress,
    Target,
    failed_host,
    parse_response,
)
from collector.transport.ssh import jump_hosts, ssh_options

MAX_EVENT_RES = 1 << 31
RUNNER_TASK = "Run the probe runner with this host's probes."
_HOST_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass
class HostPlay:
    """What a playbook did on one host (CONTRACTS.md)."""

    status: str = "ok"  # ok | changed | failed | unreachable | skipped
    changed: bool = False
    failed: bool = False
    unreachable: bool = False
    msg: str = ""
    diffs: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # {task, changed, failed, msg}

    def settle(self) -> None:
        """Derive the host's status word from its task results."""
        if self.unreachable:
            self.status = "unreachable"
        elif self.failed:
            self.status = "failed"
        elif self.changed:
            self.status = "changed"
        elif self.results and all(r.get("skipped") for r in self.results):
            self.status = "skipped"
        else:
            self.status = "ok"


@dataclass
class PlaybookRun:
    """A playbook run's outcome: ansible-runner's status and rc, the play recap, each host."""

    status: str
    rc: int
    stats: dict[str, Any]
    hosts: dict[str, HostPlay]
    artifacts_dir: str | None = None


def ansible_env(
    workdir: Path, *, connect_timeout_s: float = 10.0, forks: int | None = None, jump_config: str = ""
) -> dict[str, str]:
    """Environment for ansible-playbook: private state dirs, pipelining, no facts, ssh reuse, keys checked."""
    for sub in ("home", "tmp", "cp"):
        (workdir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    ssh_config = workdir / "ssh_config"
    ssh_config.write_text(run_ssh_config(workdir / "cp", jump_config))
    env = {
        # ANSIBLE_HOME alone still leaves control sockets in ~/.ansible/cp: set their dir too.
        "ANSIBLE_HOME": str(workdir / "home"),
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / "cp"),
        "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(workdir / "cp"),
        # -F: this run's ssh_config, which OpenSSH also hands to the ssh it runs for a ProxyJump hop, so
        # every host behind a jump host reuses one connection to it (run_ssh_config).
        "ANSIBLE_SSH_ARGS": f"-F {shlex.quote(str(ssh_config))} -o ControlMaster=auto -o ControlPersist=30s",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_TIMEOUT": str(int(max(1, connect_timeout_s))),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        # python3 on the host's PATH, as the ssh engine runs it: discovery would cost a round trip per host
        # (an inventory's ansible_python_interpreter still wins).
        "ANSIBLE_PYTHON_INTERPRETER": "python3",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_INVENTORY_IGNORE_REGEX": "known_hosts|ssh_config|^example-",
        "ANSIBLE_ROLES_PATH": str(resource("playbooks") / "roles"),
        # ansible-runner drops a task result larger than this (default 700 kB): a host's probe answer
        # is up to cap × probes, so lift it; the runner's caps bound it instead.
        "MAX_EVENT_RES": str(MAX_EVENT_RES),
    }
    if forks:
        env["ANSIBLE_FORKS"] = str(forks)
    return env


def run_ssh_config(control_dir: Path, jump_config: str = "") -> str:
    """One run's ssh_config (`-F`): every jump host connection is a ControlMaster its hosts share.

    OpenSSH passes `-F` (and only that) to the `ssh -W` it runs for a ProxyJump hop, so a ProxyJump written
    in ansible_ssh_common_args reaches the jump host once per run instead of once per host: sshd's
    MaxStartups (10:30:100) on a bastion no longer drops hosts. `jump_config` gives each jump host the key
    and known_hosts of the hosts behind it (jump_ssh_config); the user's and the system's ssh_config still
    apply after it (first value wins in ssh_config).
    """
    return (
        "# incident-collector: this run's OpenSSH settings (ANSIBLE_SSH_ARGS -F).\n"
        f"{jump_config}"
        "Host *\n"
        "    ControlMaster auto\n"
        f"    ControlPath {_ssh_word(str(control_dir / 'j-%C'))}\n"
        "    ControlPersist 60s\n"
        "    Include ~/.ssh/config\n"
        "    Include /etc/ssh/ssh_config\n"
    )


def _ssh_word(text: str) -> str:
    return f'"{text}"' if any(c.isspace() for c in text) else text


def jump_ssh_config(targets: Iterable[Target]) -> str:
    """A `Host` block per jump host of `targets`: the key, known_hosts and host key checking of the first
    host behind it, so a hop is authenticated and checked as the ssh engine does it (the host's key)."""
    blocks: dict[str, str] = {}
    for target in targets:
        hv = target.hostvars
        key = hv.get("ansible_ssh_private_key_file") or hv.get("ansible_private_key_file")
        options = ssh_options(hv)
        for _user, host, _port in jump_hosts(hv):
            if host in blocks or not re.fullmatch(r"[\w.:-]+", host):
                continue
            lines = [f"Host {host}"]
            if key:
                identity = _ssh_word(str(Path(str(key)).expanduser()))
                lines += [f"    IdentityFile {identity}", "    IdentitiesOnly yes"]
            if options.get("userknownhostsfile"):
                lines.append(f"    UserKnownHostsFile {options['userknownhostsfile']}")
            if options.get("stricthostkeychecking"):
                lines.append(f"    StrictHostKeyChecking {options['stricthostkeychecking']}")
            blocks[host] = "\n".join(lines) + "\n"
    return "".join(blocks.values())


_JUMP_WORDS = re.compile(r"proxyjump|(^|[\s'\"=])-J", re.IGNORECASE | re.MULTILINE)


def mentions_jump_hosts(inventory_files: Iterable[str]) -> bool:
    """Whether the inventory (its files and the group_vars/host_vars beside them) writes a ProxyJump."""
    seen: set[Path] = set()
    for name in inventory_files:
        path = Path(name)
        candidates = [path]
        for folder in {path.parent, path.parent.parent}:
            for sub in ("group_vars", "host_vars"):
                if (folder / sub).is_dir():
                    candidates += sorted(p for p in (folder / sub).rglob("*") if p.is_file())
        for candidate in candidates:
            if candidate in seen:
                continue
            seen.add(candidate)
            try:
                if _JUMP_WORDS.search(candidate.read_text(errors="replace")):
                    return True
            except OSError:
                continue
    return False


def open_jump_masters(ssh_config: Path, targets: Iterable[Target], connect_timeout_s: float) -> None:
    """One ControlMaster per jump host chain, opened (authenticated) before ansible-playbook starts.

    With forks hosts starting at once, each first hop would find no master yet and log in on its own: a
    bastion would see a burst of handshakes past its MaxStartups. Opened first, every hop is a channel over
    the one master. A jump host that cannot be reached leaves nothing: its hosts then fail as OpenSSH says.
    """
    chains = list(dict.fromkeys(tuple(jump_hosts(t.hostvars)) for t in targets))
    procs = []
    for chain in (c for c in chains if c):
        *before, (user, host, port) = chain
        argv = ["ssh", "-F", str(ssh_config), "-f", "-N", "-o", "BatchMode=yes"]
        argv += ["-o", f"ConnectTimeout={int(max(1, connect_timeout_s))}"]
        if before:
            argv += ["-J", ",".join(_hop(*hop) for hop in before)]
        argv += [*(["-l", user] if user else []), *(["-p", str(port)] if port else []), host]
        # -f: ssh returns once authenticated, the master stays in the background (stopped by _stop_masters)
        procs.append(
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    for proc in procs:
        try:
            proc.wait(timeout=(max(map(len, chains)) + 1) * (connect_timeout_s + 5))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _hop(user: str | None, host: str, port: int | None) -> str:
    address = f"[{host}]" if ":" in host else host
    return f"{user + '@' if user else ''}{address}{':' + str(port) if port else ''}"


def _stop_masters(control_dir: Path) -> None:
    """Ask this run's ControlMasters (hosts' and jump hosts') to exit now, not ControlPersist later."""
    if not control_dir.is_dir():
        return
    for sock in control_dir.iterdir():
        if sock.is_socket():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "collector-master"],
                check=False,
                capture_output=True,
                timeout=10,
            )


def _inventory_sources(inventory: str | Iterable[str]) -> list[str]:
    if isinstance(inventory, (str, Path)):
        from collector.inventory import inventory_files

        return inventory_files(str(inventory))
    return [str(p) for p in inventory]


def _record(hosts: dict[str, HostPlay], event: dict[str, Any]) -> None:
    """Fold one ansible-runner event into the per-host outcome."""
    kind = event.get("event", "")
    if kind not in _HOST_EVENTS:
        return
    data = event.get("event_data") or {}
    host = data.get("host") or data.get("remote_addr")
    if not host:
        return
    res = data.get("res") or {}
    play = hosts.setdefault(host, HostPlay())
    changed = bool(res.get("changed")) and kind == "runner_on_ok"
    failed = kind == "runner_on_failed" and not data.get("ignore_errors")
    msg = str(res.get("msg") or res.get("stderr") or "").strip()
    play.results.append(
        {
            "task": data.get("task", ""),
            "changed": changed,
            "failed": failed,
            "skipped": kind == "runner_on_skipped",
            "msg": msg[:2000],
        }
    )
    play.changed |= changed
    play.failed |= failed
    if kind == "runner_on_unreachable":
        play.unreachable = True
    if msg and (failed or kind == "runner_on_unreachable" or not play.msg):
        play.msg = msg[:2000]
    diff = res.get("diff")
    if diff:
        play.diffs.extend(diff if isinstance(diff, list) else [diff])
    for item in res.get("results") or []:  # loops: each item may carry its own diff
        if isinstance(item, dict) and item.get("diff"):
            d = item["diff"]
            play.diffs.extend(d if isinstance(d, list) else [d])


def run_playbook(
    playbook: Path | str,
    inventory: str | Iterable[str],
    limit: str,
    extravars: dict[str, Any] | None = None,
    *,
    check: bool = False,
    diff: bool = False,
    forks: int | None = None,
    timeout_s: float | None = None,
    private_dir: Path | str | None = None,
    connect_timeout_s: float = 10.0,
    event_handler: Callable[[dict[str, Any]], Any] | None = None,
    cancel: threading.Event | None = None,
    unsafe_vars: bool = False,
    jump_targets: Iterable[Target] = (),
) -> PlaybookRun:
    """Run a playbook through ansible-runner and return plain values (never raises for a host).

    `inventory` is a file, a directory or a list of files; `limit` an Ansible pattern. Artifacts stay in
    `private_dir` when given, else in a temp dir that is removed afterwards. `jump_targets`: the hosts whose
    ProxyJump hops get the hosts' key and known_hosts and one ControlMaster each, opened before the play.
    """
    import ansible_runner

    workdir = Path(tempfile.mkdtemp(prefix="collector-ansible-"))
    pdir = Path(private_dir) if private_dir is not None else workdir / "run"
    keep = private_dir is not None
    pdir.mkdir(parents=True, exist_ok=True)
    hosts: dict[str, HostPlay] = {}
    lock = threading.Lock()

    def on_event(event: dict[str, Any]) -> bool:
        with lock:
            _record(hosts, event)
        if event_handler is not None:
            event_handler(event)
        return True

    flags = [flag for flag, on in (("--check", check), ("--diff", diff)) if on]
    if extravars:
        # A 0600 file, not ansible-runner's inline `-e {json}`: extra vars stay out of argv and `ps`.
        # unsafe_vars: every string is tagged `!unsafe`, so Ansible never templates it (remediate's params).
        varfile = workdir / ("extravars.yml" if unsafe_vars else "extravars.json")
        varfile.touch(mode=0o600)
        varfile.write_text(unsafe_yaml(extravars) if unsafe_vars else json.dumps(extravars))
        flags += ["-e", shlex.quote(f"@{varfile}")]
    cmdline = " ".join(flags)
    jump_targets = list(jump_targets)
    env = ansible_env(
        workdir, connect_timeout_s=connect_timeout_s, forks=forks, jump_config=jump_ssh_config(jump_targets)
    )
    try:
        open_jump_masters(workdir / "ssh_config", jump_targets, connect_timeout_s)
        runner = ansible_runner.run(
            private_data_dir=str(pdir),
            playbook=str(Path(playbook).resolve()),
            inventory=_inventory_sources(inventory),
            limit=limit,
            cmdline=cmdline or None,
            forks=forks,
            envvars=env,
            timeout=int(timeout_s) if timeout_s else None,
            quiet=True,
            suppress_env_files=True,
            event_handler=on_event,
            cancel_callback=(lambda: cancel.is_set()) if cancel is not None else None,
            # pexpect_timeout: how often ansible-runner looks at the cancel callback (default 5 s).
            settings={"suppress_ansible_output": True, "pexpect_timeout": 0.25},
        )
        stats = dict(runner.stats or {})
        for play in hosts.values():
            play.settle()
        artifacts = str(Path(runner.config.artifact_dir)) if keep else None
        return PlaybookRun(
            str(runner.status), int(runner.rc if runner.rc is not None else -1), stats, hosts, artifacts
        )
    finally:
        _stop_masters(workdir / "cp")
        shutil.rmtree(workdir, ignore_errors=True) if not keep else shutil.rmtree(
            workdir / "cp", ignore_errors=True
        )


def unsafe_yaml(value: Any) -> str:
    """`value` as YAML under one `!unsafe` tag: Ansible marks everything inside it as data that is never
    templated. One tag on the whole value, not one per string: Ansible resolves a tagged scalar again as if
    it were unquoted, so `!unsafe "*"` or `!unsafe "="` fail to load and `!unsafe "30"` turns into an int."""
    return "!unsafe " + json.dumps(value)


# ---- the collection engine -----------------------------------------------------------------------------


def collect_extravars(payload: Payload) -> dict[str, Any]:
    """The extra vars playbooks/collect.yml takes (the catalogue itself comes from its vars_files)."""
    return {
        "collector_since": payload.since,
        "collector_cap_bytes": int(payload.cap_bytes),
        "collector_default_timeout_s": float(payload.default_timeout_s),
        **({"collector_probes": payload.entries} if payload.extra.get("custom_catalogue") else {}),
    }


def host_results_from_events(
    events: Iterable[dict[str, Any]], targets: dict[str, Target], unsealer: Unsealer | None = None
) -> dict[str, HostResult]:
    """HostResults from a collect.yml run's events (also what `collector ingest` reads from artifacts).

    A sealed output (the run had `collector_output_recipient`) is opened with `unsealer`; without one, or
    with a key that does not open it, SealError (nothing of it is guessed)."""
    results: dict[str, HostResult] = {}
    for event in events:
        result = _collect_event(event, targets, unsealer)
        if result is not None:
            results[result.host] = result
    return results


def _unseal(host: str, res: dict[str, Any], unsealer: Unsealer | None) -> dict[str, Any]:
    """The result with its sealed answer opened: stdout, stderr and the runner's rc, as unsealed runs have."""
    if unsealer is None:
        raise SealError(f"host {host}: the output is sealed (collector_output_recipient): give --unseal-key")
    try:
        opened = json.loads(unsealer.open(str(res["sealed"]), sealed_to(res)))
    except SealError as exc:
        raise SealError(f"host {host}: {exc}") from None
    except ValueError as exc:
        raise SealError(f"host {host}: the opened output is not the runner's answer ({exc})") from None
    rc = int(opened.get("rc") or 0)
    return {
        **res,
        "stdout": str(opened.get("stdout") or "") if rc == 0 else "",
        "stderr": str(opened.get("stderr") or ""),
        "msg": f"probe runner exited {rc}" if rc else "",
    }


def _collect_event(
    event: dict[str, Any], targets: dict[str, Target], unsealer: Unsealer | None = None
) -> HostResult | None:
    kind = event.get("event", "")
    data = event.get("event_data") or {}
    if kind not in _HOST_EVENTS or data.get("task") != RUNNER_TASK:
        return None
    host = data.get("host", "")
    target = targets.get(host)
    roles = target.roles if target else ()
    res = data.get("res") or {}
    if kind == "runner_on_unreachable":
        return failed_host(host, roles, "unreachable", str(res.get("msg") or "unreachable"))
    if res.get("sealed"):
        res = _unseal(host, res, unsealer)
    stdout = res.get("stdout") or ""
    if stdout.lstrip().startswith("{"):
        return parse_response(host, roles, stdout)
    if kind == "runner_on_ok" and not res:
        return failed_host(
            host,
            roles,
            "failed",
            "ansible-runner dropped this host's answer as too large: "
            f"run with MAX_EVENT_RES={MAX_EVENT_RES} in ansible-runner's environment",
        )
    detail = res.get("msg") or res.get("stderr") or stdout or kind
    return failed_host(host, roles, "failed", f"probe runner did not run: {detail}")


def collect_playbook() -> Path:
    """The shipped collection playbook."""
    return resource("playbooks") / "collect.yml"


class CollectRun:
    """A collect.yml run started in the background, so ansible-playbook's own start-up (a second
    process, a second core) overlaps with ours parsing the inventory. `finish` attaches the hosts
    and the progress display, replays what already happened and waits; `cancel` stops it (bad input).
    """

    def __init__(
        self, pattern: str, payload: Payload, settings: Settings, inventory_files: list[str]
    ) -> None:
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.hosts: dict[str, Target] | None = None
        self.progress: Progress | None = None
        self.results: dict[str, HostResult] = {}
        self.cancelled = threading.Event()
        # Set when the run thread ends. Waiting on it, not on join(): a join that Ctrl-C interrupted can
        # report the thread dead while it still runs (CPython's join after KeyboardInterrupt).
        self.done = threading.Event()
        self.outcome: PlaybookRun | None = None
        self.error: BaseException | None = None
        args = (collect_playbook(), inventory_files, pattern, collect_extravars(payload))
        kwargs = {
            # ansible-runner's artifacts (events, stdout) are kept there when given,
            # else removed with the run.
            "private_dir": payload.extra.get("ansible_private_dir"),
            "forks": settings.forks,
            "connect_timeout_s": settings.connect_timeout_s,
            "timeout_s": payload.extra.get("run_timeout_s"),
            "event_handler": self._on_event,
            "cancel": self.cancelled,
        }
        # An inventory with a ProxyJump waits for the hosts (finish) before ansible-playbook starts: the run's
        # ssh_config must name each jump host's key before the first hop is made (jump_ssh_config).
        self.attached = threading.Event()
        self.hold = mentions_jump_hosts(inventory_files)
        self.thread = threading.Thread(
            target=self._run, args=args, kwargs=kwargs, daemon=True, name="collect-ansible"
        )
        self.thread.start()

    def _run(self, *args: Any, **kwargs: Any) -> None:
        try:
            if self.hold:
                while not self.attached.wait(0.1):
                    if self.cancelled.is_set():
                        return
                kwargs["jump_targets"] = list((self.hosts or {}).values())
            self.outcome = run_playbook(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to finish(): the caller decides
            self.error = exc
        finally:
            self.done.set()

    def _on_event(self, event: dict[str, Any]) -> None:
        with self.lock:  # one event at a time, in order, including the replay in finish()
            if self.hosts is None:
                self.events.append(event)
            else:
                self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        assert self.hosts is not None and self.progress is not None
        data = event.get("event_data") or {}
        if event.get("event") == "runner_on_start" and data.get("task") == RUNNER_TASK:
            self.progress(data.get("host", ""), "running", {})
            return
        try:
            result = _collect_event(event, self.hosts)
        except SealError as exc:  # the inventory sets collector_output_recipient: only `ingest` opens it
            host = data.get("host", "")
            target = self.hosts.get(host)
            result = failed_host(host, target.roles if target else (), "failed", str(exc))
        if result is not None and result.host in self.hosts:
            self.results[result.host] = result
            for probe in result.probes:
                self.progress(result.host, "probe", {"probe": probe.probe, "status": probe.status})
            done = {"status": result.status, "error": result.error, "result": result}
            self.progress(result.host, "done", done)

    def cancel(self) -> None:
        """Stop the run (the caller found the input bad); waits for ansible-playbook to go."""
        self.cancelled.set()
        self.thread.join(timeout=30)

    def finish(self, hosts: dict[str, Target], progress: Progress) -> dict[str, HostResult]:
        """Wait for the run and return one HostResult per host."""
        for name in hosts:
            progress(name, "connecting", {})
        with self.lock:
            self.hosts, self.progress = hosts, progress
            self.attached.set()
            for event in self.events:
                self._apply(event)
            self.events = []
        try:
            while self.thread.is_alive():
                self.thread.join(timeout=0.5)  # a timed join lets Ctrl-C through
        except KeyboardInterrupt:
            self.cancelled.set()
            # Wait (bounded) for ansible-runner to stop ansible-playbook and remove its artifacts, which hold
            # the hosts' raw output: left running it keeps probing, and the folder stays behind in /tmp.
            try:
                self.done.wait(timeout=30)
            except KeyboardInterrupt:
                pass  # a second Ctrl-C: stop waiting
            raise Interrupted(
                _fill_missing(self.results, hosts, "interrupted before this host answered")
            ) from None
        if self.error is not None and not isinstance(self.error, KeyboardInterrupt):
            why = f"ansible-runner failed: {self.error!r}"
        elif self.outcome is not None:
            why = f"no answer from ansible (run {self.outcome.status}, rc {self.outcome.rc})"
        else:
            why = "interrupted before this host answered"
        return _fill_missing(self.results, hosts, why)


def start(pattern: str, payload: Payload, settings: Settings, inventory_files: list[str]) -> CollectRun:
    """Start collecting from `pattern` now; attach the resolved hosts with `.finish()` later."""
    return CollectRun(pattern, payload, settings, inventory_files)


def run(
    hosts: dict[str, Target], payload: Payload, settings: Settings, progress: Progress
) -> dict[str, HostResult]:
    """Collect with playbooks/collect.yml: one task per host, `forks` hosts at a time."""
    inventory_files = payload.extra.get("inventory_files")
    if not inventory_files:
        raise ValueError("the ansible engine needs payload.extra['inventory_files']")
    return start(",".join(hosts), payload, settings, inventory_files).finish(hosts, progress)


def _fill_missing(
    results: dict[str, HostResult], hosts: dict[str, Target], why: str
) -> dict[str, HostResult]:
    for name, target in hosts.items():
        if name not in results:
            results[name] = failed_host(name, target.roles, "failed", why)
    return {name: results[name] for name in hosts}


def read_artifact_events(artifacts_dir: Path) -> Iterable[dict[str, Any]]:
    """The job events of an ansible-runner artifacts folder, in order (one JSON file per event)."""
    folder = Path(artifacts_dir)
    events_dir = folder / "job_events"
    if not events_dir.is_dir():
        candidates = sorted(folder.glob("*/job_events"))
        if not candidates:
            raise FileNotFoundError(f"{folder} holds no job_events folder")
        events_dir = candidates[-1]

    def order(path: Path) -> tuple[int, str]:
        head = path.name.split("-", 1)[0]
        return (int(head) if head.isdigit() else 1 << 30, path.name)

    for path in sorted(events_dir.glob("*.json"), key=order):
        event = read_json(path, want=dict)  # a half-written or foreign file is skipped
        if event is not None:
            yield event
