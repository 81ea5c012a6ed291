"""nginx in front of the lab's app: with the app stopped (fault app-down), requests through nginx on app1:80
answer 502, `collect` picks up nginx's lines, and triage names the upstream errors as what app-down explains.
Holds the lab lock while the app is down; heals it after."""

from __future__ import annotations

import datetime as _dt
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from collector.bundle import Bundle
from collector.collect import collect
from collector.times import iso_z, wait_until
from collector.triage import triage_bundle

pytestmark = [pytest.mark.lab]


def _status(url: str) -> int:
    """The HTTP status of a GET (0: no answer at all)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@pytest.mark.destructive
def test_app_down_behind_nginx_is_502_and_triage_names_the_upstream_errors(
    lab: Any, lab_lock: None, tmp_path: Path
) -> None:
    from collector_lab import faults

    app = lab.groups["app"][0]
    front = f"http://{lab.ips[app]}"  # nginx on :80; the app itself listens on :8000
    faults.heal_fault("app-down")  # an earlier run's leftover; a no-op on a healthy app
    # /metrics answers 200 whenever the app runs (/health may be 503 while an earlier fault fades)
    assert wait_until(lambda: _status(f"{front}/metrics") == 200, 60, 0.5), "nginx does not reach the app"
    # the window starts at the break: nginx lines of earlier tests are not this fault's
    since = iso_z(_dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=2))
    faults.break_fault("app-down")
    try:
        codes = [_status(f"{front}/api/orders?customer_id={i}") for i in range(1, 13)]
        assert set(codes) == {502}, codes
        outcome = collect(app, inventory=str(lab.inventory), since=since, out_dir=str(tmp_path), after=False)
        assert outcome.bundle is not None
        findings = triage_bundle(outcome.bundle, seal=False)
    finally:
        faults.heal_fault("app-down")
    bundle = Bundle.open(outcome.bundle)
    access = (bundle.read(app, "nginx_access_errors") or b"").decode()
    assert access.startswith("# nginx access log since "), access[:300]
    assert access.count('"GET /api/orders?customer_id=') >= 12 and '" 502 ' in access, access[-600:]
    errors = (bundle.read(app, "nginx_error_log") or b"").decode()
    assert "while connecting to upstream" in errors, errors[-600:]

    doc = findings.to_dict()
    by = {f["rule"]: f for f in doc["findings"]}
    assert doc["findings"][0]["rule"] == "app-down", [f["rule"] for f in doc["findings"]]
    upstream = by["nginx-upstream-errors"]
    assert upstream["severity"] == "P1" and not upstream["recovered"], upstream
    assert "× 502" in upstream["message"] and "/api/orders" in upstream["message"], upstream["message"]
    assert all(" 502 " in ev["excerpt"] for ev in upstream["evidence"]), upstream["evidence"]
    failures = by["nginx-upstream-failures"]
    assert "connect() failed × " in failures["message"], failures  # one server: never "no live upstreams"
    assert {"nginx-upstream-errors", "nginx-upstream-failures"} <= set(by["app-down"]["context"])
    assert "nginx-down" not in by
    # healed: nginx reaches the app again
    assert wait_until(lambda: _status(f"{front}/metrics") == 200, 60, 0.5)
