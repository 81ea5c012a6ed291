"""A real `collector serve` process for tests and the bench: started on a free loopback port, polled until it
answers, killed (by its pid) afterwards."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from collector.times import wait_until

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = str(Path(sys.executable).with_name("collector"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert(name: str, fingerprint: str, starts: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} test"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else starts,
        "fingerprint": fingerprint,
        "generatorURL": "http://127.0.0.1:9090/graph",
    }


def notification(group_key: str, alerts: list[dict[str, Any]], status: str = "firing") -> dict[str, Any]:
    common = dict(alerts[0]["labels"]) if alerts else {}
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
    return {
        "version": "4",
        "groupKey": group_key,
        "status": status,
        "receiver": "collector",
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": common.get("alertname", "")},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    }


class ServeProcess:
    """`collector serve` as a subprocess with its own store, bundles dir, token and log file."""

    def __init__(
        self,
        workdir: Path,
        *,
        inventory: str,
        fallback: str = "local",
        max_collections: int = 2,
        db: str | None = None,
        token: str = "test-token-not-secret",
        host_labels: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        token_file: Path | None = None,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://{listen_host}:{self.port}"
        self.db = db or str(workdir / "incidents.db")
        self.out_dir = workdir / "bundles"
        self.log_path = workdir / "serve.log"
        if (
            token_file is None
        ):  # else: a token file made by someone else (the lab's Alertmanager reads it too)
            token_file = workdir / "token"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
        self.token = token_file.read_text().strip()
        self.argv = [
            COLLECTOR,
            "serve",
            "--listen",
            f"{listen_host}:{self.port}",
            "--token-file",
            str(token_file),
            "--db",
            self.db,
            "-i",
            inventory,
            "--out-dir",
            str(self.out_dir),
            "--fallback-hosts",
            fallback,
            "--max-collections",
            str(max_collections),
        ]
        for rule in host_labels:
            self.argv += ["--host-label", rule]
        if listen_host != "127.0.0.1":
            self.argv.append("--allow-remote")
        self.env = {
            **os.environ,
            "COLLECTOR_PLANS_DIR": str(workdir / "plans"),
            "COLLECTOR_SERVE_TICK_S": "1",
            "COLLECTOR_SERVE_VERIFY_WAIT_S": "0",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> ServeProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes it for its whole life
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=str(self.workdir),
            start_new_session=True,
        )
        log.close()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"serve exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            try:
                return self.get("/healthz")[0] == 200
            except OSError:
                return False

        assert wait_until(ready, timeout_s, 0.1), f"serve did not answer: {self.log_path.read_text()[-2000:]}"
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, Any]:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")

    def post(
        self, doc: Any, *, token: str | None = None, raw: bytes | None = None, timeout_s: float = 30.0
    ) -> tuple[int, str, float]:
        """(status, body, seconds) of one webhook POST; `token` None = the right one, "" = none."""
        body = raw if raw is not None else json.dumps(doc).encode()
        headers = {"Content-Type": "application/json"}
        use = self.token if token is None else token
        if use:
            headers["Authorization"] = f"Bearer {use}"
        request = urllib.request.Request(
            self.url + "/alertmanager", data=body, headers=headers, method="POST"
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                return resp.status, resp.read().decode(), time.perf_counter() - started
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), time.perf_counter() - started


def poll(
    predicate: Callable[[], Any],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll until `predicate` returns something truthy; its value, or AssertionError naming `what` (and what
    `explain` says of the state then: a lab test's timeout should tell where the chain stopped)."""
    value = wait_until(predicate, timeout_s, interval_s)
    if not value:
        said = f"\n{explain()}" if explain is not None else ""
        raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{said}")
    return value


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"


# Alertmanager's alerts in every state (active, silenced, inhibited, not yet processed).
EVERY_ALERT = "active=true&silenced=true&inhibited=true&unprocessed=true"


def alert_chain(alertmanager_url: str, prometheus_url: str, serve: ServeProcess) -> str:
    """What each link from Prometheus' rule to serve's store holds now: the app's request rates, Prometheus'
    alerts, Alertmanager's alerts and active silences, its webhook notification counters, serve's incidents
    and its log tail."""
    from collector.incidents.store import IncidentStore

    store = IncidentStore(serve.db)
    try:
        incidents = [(i.id, i.labels.get("alertname"), i.opened_at, i.state) for i in store.list()]
    finally:
        store.close()
    silences = _get_json(f"{alertmanager_url}/api/v2/silences")
    if isinstance(silences, list):
        silences = [s for s in silences if s["status"]["state"] == "active"]
    counters = ""
    try:
        with urllib.request.urlopen(f"{alertmanager_url}/metrics", timeout=10) as resp:
            counters = "\n".join(
                line
                for line in resp.read().decode().splitlines()
                if line.startswith(("alertmanager_notifications_total", "alertmanager_notifications_failed"))
                and 'integration="webhook"' in line
            )
    except OSError as exc:
        counters = f"unreadable: {exc}"
    rates = urllib.parse.urlencode(
        {"query": "sum by (instance, status) (rate(sergas_http_requests_total[1m]))"}
    )
    parts = {
        "the app's request rates (1m)": _get_json(f"{prometheus_url}/api/v1/query?{rates}"),
        "prometheus alerts": _get_json(f"{prometheus_url}/api/v1/alerts"),
        "alertmanager alerts": _get_json(f"{alertmanager_url}/api/v2/alerts?{EVERY_ALERT}"),
        "alertmanager active silences": silences,
        "alertmanager webhook counters": counters,
        "serve's incidents": json.dumps(incidents),
        "serve log (tail)": serve.log()[-3000:],
    }
    return "\n".join(
        f"--- {name}:\n{value if isinstance(value, str) else json.dumps(value)[:3000]}"
        for name, value in parts.items()
    )


def sergas_alerts(alertmanager_url: str) -> list[str]:
    """The lab app's alerts Alertmanager holds in any state (active, silenced or inhibited)."""
    with urllib.request.urlopen(f"{alertmanager_url}/api/v2/alerts?{EVERY_ALERT}", timeout=10) as resp:
        return [
            a["labels"]["alertname"]
            for a in json.load(resp)
            if a["labels"].get("alertname", "").startswith("Sergas")
        ]


def prometheus_settled(prometheus_url: str, ratio_below: float = 0.05) -> bool:
    """No Sergas rule pending or firing in Prometheus, and the app's 5-minute 5xx ratio well under the alert's
    10 % (or no traffic): an earlier fault's ratio hovering at the threshold fires again minutes later and
    opens the test's incident before its own break."""
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/alerts", timeout=10) as resp:
        rules = json.load(resp)["data"]["alerts"]
    if any(a["labels"].get("alertname", "").startswith("Sergas") for a in rules):
        return False
    query = urllib.parse.urlencode(
        {
            "query": 'sum(rate(sergas_http_requests_total{status=~"5.."}[5m]))'
            " / sum(rate(sergas_http_requests_total[5m]))"
        }
    )
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=10) as resp:
        result = json.load(resp)["data"]["result"]
    value = float(result[0]["value"][1]) if result else 0.0
    return math.isnan(value) or value < ratio_below  # NaN: no traffic at all


NOTIFY_TIMEOUT_S = 20.0  # above Alertmanager's notification flush timeout (the lab's group_interval 10 s)


def quiet_alertmanager(alertmanager_url: str, prometheus_url: str, timeout_s: float = 420) -> float:
    """Start a lab test from a quiet Alertmanager: expire the silences earlier incidents left (an incident
    acknowledged and never resolved keeps its silence, which would mute this test's alert), then wait for
    earlier Sergas alerts to resolve and Prometheus to settle (their 5-minute rates fade). Returns the
    seconds waited."""
    with urllib.request.urlopen(f"{alertmanager_url}/api/v2/silences", timeout=10) as resp:
        leftovers = [
            s["id"]
            for s in json.load(resp)
            if s["status"]["state"] == "active" and str(s.get("comment", "")).startswith("incident ")
        ]
    for silence in leftovers:
        request = urllib.request.Request(f"{alertmanager_url}/api/v2/silence/{silence}", method="DELETE")
        urllib.request.urlopen(request, timeout=10).close()
    started = time.monotonic()
    quiet_since: list[float] = []

    def held() -> bool:
        """Quiet now, and for NOTIFY_TIMEOUT_S in a row: a notification Alertmanager computed while an alert
        was still firing is retried for up to that long (its flush timeout: group_interval, at least 10 s),
        and would reach the test's serve as a stale "firing" the moment it starts."""
        if sergas_alerts(alertmanager_url) or not prometheus_settled(prometheus_url):
            quiet_since.clear()
            return False
        quiet_since[:] = quiet_since or [time.monotonic()]
        return time.monotonic() - quiet_since[0] >= NOTIFY_TIMEOUT_S

    poll(held, timeout_s, "earlier Sergas alerts to resolve and the 5xx ratio to settle", 2.0)
    return time.monotonic() - started
