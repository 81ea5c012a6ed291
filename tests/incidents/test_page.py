"""The incidents page, served by uvicorn on loopback and read in real headless Chromium (Debian's
chromium)."""

from __future__ import annotations

import datetime as _dt
import importlib.util
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from headless import CHROMIUM, chromium

from collector import report
from collector.incidents import lifecycle as lc
from collector.incidents import page
from collector.incidents.store import IncidentStore

NOW = _dt.datetime.now(_dt.UTC).replace(microsecond=0)  # the store keeps milliseconds


def _tickets_helpers() -> Any:
    path = Path(__file__).resolve().parents[1] / "tickets" / "conftest.py"
    spec = importlib.util.spec_from_file_location("tickets_conftest_for_page", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ago(minutes: float) -> _dt.datetime:
    return NOW - _dt.timedelta(minutes=minutes)


@pytest.fixture
def store(tmp_path: Path) -> IncidentStore:
    """Three incidents as an on-call engineer finds them: a P0 nobody acknowledged, a P2 being worked, and a
    resolved P1 whose bundle has its report."""
    s = IncidentStore(str(tmp_path / "incidents.db"))
    p0, _ = s.open_or_join(
        "g-api",
        [{"labels": {"alertname": "ApiDown"}}],
        ago(4),
        severity="P0",
        hosts=["app1"],
        title="ApiDown <script>alert(1)</script>",
        commander="Dana On-call",
    )
    s.record_alert(
        p0.id, "fp-api", "firing", {"alertname": "ApiDown", "instance": "app1:8000"}, lc.iso_z(ago(5))
    )
    p2, _ = s.open_or_join(
        "g-lat",
        [{"labels": {"alertname": "HighLatency"}}],
        ago(20),
        severity="P2",
        hosts=["app1", "db1"],
        title="HighLatency",
    )
    s.update(p2.id, state="acknowledged", acked_at=lc.iso_z(ago(15)), commander="Sam Responder")
    s.add_event(p2.id, "update-sent", ago(14), "collector", {"stage": "initial", "channels": {"email": "ok"}})
    helpers = _tickets_helpers()
    bundle = helpers.build_bundle(tmp_path / "bundles", severity="P1")
    report.render_reports(bundle, ["html"])
    p1, _ = s.open_or_join(
        "g-pool",
        [{"labels": {"alertname": "PoolExhausted"}}],
        ago(90),
        severity="P1",
        hosts=["db1"],
        title="PoolExhausted",
    )
    s.add_bundle(p1.id, str(bundle))
    s.update(p1.id, state="resolved", resolved_at=lc.iso_z(ago(30)), commander="Dana On-call", ticket="42")
    s.add_event(p1.id, "escalated", ago(30), "collector", {"reason": "data-loss", "contacts": ["CTO (cto)"]})
    return s


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(store: IncidentStore) -> Iterator[str]:
    """page.routes on a real uvicorn on 127.0.0.1, as `collector serve` mounts them."""
    import uvicorn
    from starlette.applications import Starlette

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=page.routes(store, None)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_render_page_from_the_store(store: IncidentStore) -> None:
    html = page.render_page(store, NOW)
    assert "Open (2)" in html
    # the P0 first, its acknowledgement overdue (2 min response time, opened 4 min ago)
    assert html.index("ApiDown") < html.index("HighLatency")
    assert re.search(r'class="deadline overdue">acknowledge OVERDUE 2m<', html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    # P2, acknowledged, initial update sent 14 minutes ago (next in 1h46m): the 1-hour escalation comes first
    assert re.search(r'class="deadline">escalation in 40m<', html)
    assert 'href="/incidents/' in html and "/bundles/0/report.html" in html


def _dom(url: str, tmp: Path) -> str:
    result = chromium(url, tmp, "--dump-dom", loopback=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line] == []
    return result.stdout


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (install-test.sh installs it)"
)
def test_page_in_chromium_dom_links_and_screenshot(served: str, store: IncidentStore, tmp_path: Path) -> None:
    from PIL import Image

    dom = _dom(served + "/", tmp_path)
    found = re.finditer(r'<tr class="[^"]*" id="row-([^"]+)">(.*?)</tr>', dom, re.DOTALL)
    rows = {m.group(1): m.group(2) for m in found}
    by_title = {re.sub(r"<[^>]+>", " ", text).split()[1]: text for text in rows.values()}
    api = by_title["ApiDown"]
    assert '<span class="badge sev-p0">P0</span>' in api and "Dana On-call" in api and ">open<" in api
    assert "acknowledge OVERDUE" in api
    lat = by_title["HighLatency"]
    assert "sev-p2" in lat and ">acknowledged<" in lat and "Sam Responder" in lat and "escalation in" in lat
    pool = by_title["PoolExhausted"]
    assert ">resolved<" in pool and "1h00m" in pool and ">42<" in pool  # age stops at resolution; the ticket
    assert "escalated: data loss suspected" in pool
    link = re.search(r'href="(/incidents/[^"]+/bundles/0/report\.html)"', pool)
    assert link is not None
    assert "<script" not in dom.lower()
    # nothing on the page points anywhere but this server
    assert not [u for u in re.findall(r'(?:href|src)="([^"]+)"', dom) if not u.startswith("/")]

    report_dom = _dom(served + link.group(1), tmp_path)
    assert "App health check failing" in report_dom and 'id="severity">P1<' in report_dom

    (incident,) = [i for i in store.list() if i.title == "PoolExhausted"]
    detail = _dom(f"{served}/incidents/{incident.id}", tmp_path)
    assert "data loss suspected → CTO (cto)" in detail and "declared" in detail

    shot = tmp_path / "incidents.png"
    result = chromium(
        served + "/",
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,900",
        "--hide-scrollbars",
        loopback=True,
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50
    assert any(c == (0xB0, 0x00, 0x20) for _, c in colours)  # the P0 badge's colour: the CSS applied
    shutil.copy(shot, Path("/tmp/collector-incidents-page.png"))
