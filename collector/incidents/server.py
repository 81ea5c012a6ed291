"""The HTTP side of `collector serve`: Alertmanager's webhook (POST /alertmanager), /healthz, and the
incidents page's routes (collector.incidents.page). Starlette app, served by uvicorn.

The webhook answers once the notification is in the store (incident, alerts, timeline) and its work is
queued; collections run afterwards in the service's bounded pool. A store error answers 500, so
Alertmanager retries (and the retry is deduplicated).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from collector.incidents import page
from collector.incidents.webhook import PayloadError, parse_payload
from collector.incidents.worker import Service

log = logging.getLogger("collector.serve")

MAX_BODY = 8 * 1024 * 1024  # Alertmanager's payloads are far smaller; more is a mistake or an attack


def authorized(header: str | None, token: str) -> bool:
    """True when no token is set, or the Authorization header is `Bearer <token>` (constant-time compare)."""
    if not token:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def page_access(client: str | None, header: str | None, page_token: str) -> bool:
    """Who sees the incidents page: a loopback client (a proxy on this machine authenticates the others),
    anyone else only with the page token, as an HTTP Basic password (any user name) or a Bearer token."""
    if client and is_loopback(client):
        return True
    if not page_token or not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    else:
        return False
    return hmac.compare_digest(given.encode(), page_token.encode())


def page_routes(service: Service) -> list[BaseRoute]:
    """The incidents page's routes (collector.incidents.page), each behind `page_access`: incidents and
    their reports are evidence, and the webhook's token (Alertmanager's) does not open them."""
    page_token = service.settings.serve_page_token

    def guarded(endpoint: Any) -> Any:
        async def guard(request: Request) -> Response:
            client = request.client.host if request.client else None
            if page_access(client, request.headers.get("authorization"), page_token):
                return await endpoint(request)  # type: ignore[no-any-return]
            log.warning("%s page request from %s refused", 401 if page_token else 403, client or "?")
            if page_token:
                return PlainTextResponse(
                    "the incidents page needs its token\n",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="incidents"'},
                )
            return PlainTextResponse(
                "the incidents page answers loopback clients only (serve_page_token opens it)\n",
                status_code=403,
            )

        return guard

    return [
        Route(r.path, guarded(r.endpoint), methods=list(r.methods or ()), name=r.name)
        for r in page.routes(service.store, service.settings)
        if isinstance(r, Route)
    ]


def create_app(service: Service, token: str, *, start_service: bool = True) -> Starlette:
    """The ASGI app; the service's threads start and stop with it."""

    async def webhook(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        if not authorized(request.headers.get("authorization"), token):
            # nothing read, nothing stored: one log line is the only trace
            log.warning("401 webhook from %s: missing or wrong bearer token", client)
            return PlainTextResponse(
                "unauthorized\n", status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        body = await request.body()
        if len(body) > MAX_BODY:
            return PlainTextResponse("payload too large\n", status_code=413)
        try:
            doc = json.loads(body)
        except ValueError as exc:
            log.warning("400 webhook from %s: malformed JSON (%s)", client, exc)
            return PlainTextResponse(f"malformed JSON: {exc}\n", status_code=400)
        try:
            note = parse_payload(doc)
        except PayloadError as exc:
            log.warning("400 webhook from %s: %s", client, exc)
            return PlainTextResponse(f"not an Alertmanager v4 payload: {exc}\n", status_code=400)
        try:
            result = await run_in_threadpool(service.receive, note)
        except Exception:
            log.exception("500 webhook from %s: recording group %s failed", client, note.group_key)
            return PlainTextResponse("could not record the notification; retry\n", status_code=500)
        log.info(
            "webhook %s %s: %d alert(s) → %s%s",
            note.status,
            note.group_key,
            len(note.alerts),
            result.incident,
            " (opened)" if result.opened else "",
        )
        return JSONResponse(result.to_dict())

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {
                "ok": True,
                "running": service.running,
                "peak": service.peak,
                "queued": service.work_queue.qsize(),
                "max_collections": service.max_workers,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if start_service:
            await run_in_threadpool(service.start)
        try:
            yield {}
        finally:
            if start_service:
                await run_in_threadpool(service.stop)

    routes: list[BaseRoute] = [
        Route("/alertmanager", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        *page_routes(service),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
