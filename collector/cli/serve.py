"""`collector serve`: receive Alertmanager's webhooks and run each incident's first steps unattended."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from collector.config import load_settings
from collector.core import UsageError


def split_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:9095`, `[::1]:9095` or `:9095` (loopback) → (host, port)."""
    text = listen.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {listen!r} is not HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def read_token(option: str, path: str | None) -> str | None:
    """A token file's text (None without a file); a missing or empty file is bad input."""
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"{option} {path} is empty")
    return token


@click.command("serve")
@click.option("--listen", help="HOST:PORT to bind (default 127.0.0.1:9095, setting serve_listen).")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="File holding the bearer token Alertmanager sends (else COLLECTOR_SERVE_TOKEN / serve_token).",
)
@click.option(
    "--page-token-file",
    type=click.Path(dir_okay=False),
    help="File holding the token that opens the incidents page to non-loopback clients "
    "(else COLLECTOR_SERVE_PAGE_TOKEN / serve_page_token).",
)
@click.option("--db", help="Incident store: a SQLite path or postgresql://... (setting incidents_db).")
@click.option("-i", "--inventory", help="Inventory file or directory.")
@click.option("--out-dir", help="Where bundles go (setting out_dir).")
@click.option("--max-collections", type=int, help="Collections at once (setting serve_max_collections).")
@click.option(
    "--host-label",
    "host_labels",
    multiple=True,
    metavar="RULE",
    help="Alert label → host pattern: label=value:pattern or label:pattern (repeatable).",
)
@click.option("--fallback-hosts", help="Pattern collected when no alert label names a host (default all).")
@click.option(
    "--allow-remote", is_flag=True, help="Allow a non-loopback --listen (a token is then required)."
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
def serve_command(
    listen: str | None,
    token_file: str | None,
    page_token_file: str | None,
    db: str | None,
    inventory: str | None,
    out_dir: str | None,
    max_collections: int | None,
    host_labels: tuple[str, ...],
    fallback_hosts: str | None,
    allow_remote: bool,
    log_level: str,
) -> None:
    """Alertmanager webhook receiver: an alert group opens an incident,
    collects, triages, reports and plans."""
    import uvicorn

    from collector.incidents.server import create_app, is_loopback
    from collector.incidents.store import IncidentStore
    from collector.incidents.webhook import parse_label_rules
    from collector.incidents.worker import Service

    settings = load_settings(
        serve_listen=listen,
        serve_token=read_token("--token-file", token_file),
        serve_page_token=read_token("--page-token-file", page_token_file),
        incidents_db=db,
        inventory=inventory,
        out_dir=out_dir,
        serve_max_collections=max_collections,
        serve_host_labels=host_labels or None,
        serve_fallback_hosts=fallback_hosts,
    )
    host, port = split_listen(settings.serve_listen)
    if not is_loopback(host):
        if not allow_remote:
            raise UsageError(
                f"--listen {host} is not loopback; add --allow-remote (and a token) to expose it"
            )
        if not settings.serve_token:
            raise UsageError(
                "a non-loopback --listen needs a bearer token (--token-file or COLLECTOR_SERVE_TOKEN)"
            )
    if settings.serve_max_collections < 1:
        raise UsageError("--max-collections must be at least 1")
    try:
        parse_label_rules(settings.serve_host_labels)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    logging.basicConfig(
        level=getattr(logging, log_level.upper()), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    store = IncidentStore(settings.incidents_db or None)
    service = Service(store, settings)
    app = create_app(service, settings.serve_token)
    logging.getLogger("collector.serve").info(
        "serving on http://%s:%d/alertmanager (store %s, at most %d collection(s) at once%s)",
        host,
        port,
        store.engine.url.render_as_string(hide_password=True),
        service.max_workers,
        ", bearer token required" if settings.serve_token else ", NO token",
    )
    logging.getLogger("collector.serve").info(
        "incidents page at http://%s:%d/ for loopback clients%s",
        host,
        port,
        " and, with the page token, others" if settings.serve_page_token else " only",
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")


commands = [serve_command]
