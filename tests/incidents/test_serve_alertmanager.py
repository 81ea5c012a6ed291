"""A private, real Alertmanager (Debian's, on a loopback port, not the lab's) posting to `collector serve`
through a proxy that answers its first delivery with a 500 after serve has recorded it: Alertmanager's own
retry brings the same notification again, and the store keeps one incident, one alert, one collection."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from serve_fixtures import ROOT, ServeProcess, free_port, poll

from collector.incidents.store import IncidentStore

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(ALERTMANAGER).exists(), reason="prometheus-alertmanager is not installed"),
]


class FailFirstProxy:
    """Forwards every webhook POST to serve; answers the first one 500 whatever serve said."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.seen: list[int] = []  # serve's status per delivery
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = urllib.request.Request(
                    proxy.target + self.path,
                    data=body,
                    method="POST",
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": self.headers.get("Authorization", ""),
                    },
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as resp:
                        status, answer = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, answer = exc.code, exc.read()
                proxy.seen.append(status)
                if len(proxy.seen) == 1:
                    status, answer = 500, b"injected failure after serve recorded it\n"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess(tmp_path, inventory=str(ROOT / "inventory" / "local.yml"), fallback="local").start()
    yield proc
    proc.stop()


@pytest.fixture()
def alertmanager(tmp_path: Path, serve: ServeProcess) -> Iterator[tuple[str, FailFirstProxy]]:
    proxy = FailFirstProxy(serve.url)
    folder = tmp_path / "am"
    folder.mkdir()
    (folder / "token").write_text(serve.token + "\n")
    (folder / "alertmanager.yml").write_text(f"""
route:
  receiver: collector
  group_by: [alertname]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: collector
    webhook_configs:
      - url: {proxy.url}/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {folder / "token"}
""")
    port = free_port()
    log = open(folder / "alertmanager.log", "wb")  # noqa: SIM115 - the child writes it for its whole life
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        poll(ready, 30, "the private Alertmanager")
        yield url, proxy
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        proxy.close()
        shutil.rmtree(folder / "data", ignore_errors=True)


def test_alertmanager_retry_after_500_is_deduplicated(
    serve: ServeProcess, alertmanager: tuple[str, FailFirstProxy]
) -> None:
    url, proxy = alertmanager
    starts = (_dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=30)).isoformat(timespec="milliseconds")
    starts = starts.replace("+00:00", "Z")
    alerts = [
        {
            "labels": {"alertname": "RetryMe", "instance": "ghost:9100", "severity": "warning"},
            "annotations": {"summary": "posted to a real Alertmanager"},
            "startsAt": starts,
        }
    ]
    request = urllib.request.Request(
        f"{url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    poll(lambda: len(proxy.seen) >= 2, 60, "Alertmanager to retry after the 500")
    assert proxy.seen[:2] == [200, 200]  # serve recorded both; Alertmanager saw 500 for the first
    store = IncidentStore(serve.db)
    try:
        [incident] = store.list()
        recorded = store.alerts(incident.id)
        assert len(recorded) == 1 and recorded[0].deliveries == len(proxy.seen) >= 2
        assert recorded[0].starts_at.startswith(starts[:19])  # Alertmanager's startsAt, kept
        assert incident.alerts == 1 and incident.severity is not None
        assert [e.kind for e in store.events(incident.id)].count("alert-fired") == 1
        assert len([w for w in store.work(incident.id) if w.kind == "collect"]) == 1
    finally:
        store.close()
