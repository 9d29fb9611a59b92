"""`bridge run`: the middleware daemon."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from bridge.app.daemon import Daemon
from bridge.app.runtime import Runtime
from bridge.app.settings import load_settings
from bridge.ledger import SqlLedger
from bridge.logging import configure_logging

log = logging.getLogger(__name__)


def run(
    host: Annotated[
        str | None, typer.Option(help="Health/metrics address (default BRIDGE_HTTP_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Health/metrics port (default BRIDGE_HTTP_PORT).")
    ] = None,
    reconcile_every: Annotated[
        float, typer.Option(help="Seconds between scheduled reconciliations (0: never).")
    ] = 300.0,
) -> None:
    """Run the bridge: migrate the ledger, then intake, dispatch, reconcilers and the
    /healthz, /readyz, /metrics endpoint until SIGTERM."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    ledger = SqlLedger.from_settings(settings)
    ledger.upgrade()
    runtime = Runtime.build(settings, ledger=ledger)
    reconcile = None
    if reconcile_every > 0:
        from bridge.reconcile import scheduled  # noqa: PLC0415 - optional part of the daemon

        reconcile = scheduled(runtime)
    daemon = Daemon(
        runtime,
        host=host or settings.http_host,
        port=settings.http_port if port is None else port,
        reconcile=reconcile,
        reconcile_every=reconcile_every or 300.0,
    )
    raise typer.Exit(daemon.run())
