"""The incidents page as another machine sees it: `collector serve --allow-remote` on the lab bridge's own
address (the lab creates it), so the request comes from a non-loopback address. Without a page token the
page answers loopback only; with one, only that token opens it (the webhook's token does not), while the
webhook keeps its own bearer check."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from collector_lab import BRIDGE_IP
from serve_fixtures import ROOT, ServeProcess

pytestmark = pytest.mark.lab
LOCAL = str(ROOT / "inventory" / "local.yml")


def status_of(url: str, authorization: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"dana:{password}".encode()).decode()


@pytest.mark.parametrize("page_token", ["", "pg-token-not-secret"])
def test_the_page_on_a_remote_listen_needs_its_own_token(lab: Any, tmp_path: Path, page_token: str) -> None:
    env = {"COLLECTOR_SERVE_PAGE_TOKEN": page_token}
    serve = ServeProcess(tmp_path, inventory=LOCAL, listen_host=BRIDGE_IP, env=env).start()
    try:
        assert serve.get("/healthz")[0] == 200
        code, body = status_of(serve.url + "/")
        assert code == (401 if page_token else 403), body
        assert status_of(serve.url + "/", f"Bearer {serve.token}")[0] in (401, 403)  # Alertmanager's token
        assert status_of(serve.url + "/incidents/inc-x")[0] in (401, 403)
        if page_token:
            assert status_of(serve.url + "/", basic("wrong"))[0] == 401
            code, body = status_of(serve.url + "/", basic(page_token))
            assert code == 200 and "<html" in body.lower(), body[:300]
            assert status_of(serve.url + "/incidents/inc-x", f"Bearer {page_token}")[0] == 404  # let in
        assert serve.post({"version": "4"}, token="")[0] == 401  # the webhook's own check holds
        assert "page request from 10.203.57.1 refused" in serve.log()
    finally:
        serve.stop()
