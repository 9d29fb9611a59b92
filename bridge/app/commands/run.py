"""`bridge run`: the middleware daemon."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from bridge.app.daemon import Daemon, StopRequested, stop_raises_during_startup
from bridge.app.runtime import Runtime
from bridge.app.settings import Settings, load_settings
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
    /healthz, /readyz, /metrics endpoint until SIGTERM.

    At start a CA bundle that is not PEM, or a system that refuses the bridge's
    credentials, is one line and exit 2; a system that cannot be reached yet is a warning
    (not ready; the polls retry)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    settings.require_ca_bundle()
    ledger: SqlLedger | None = None
    try:
        with stop_raises_during_startup():
            ledger = SqlLedger.from_settings(settings)
            log.info("migrating the ledger %s to the newest schema", ledger.url)
            ledger.upgrade()
            daemon = _daemon(settings, ledger, host, port, reconcile_every)
        code = daemon.run()  # its own handlers replace the start-up ones first thing
    except StopRequested as stop:
        log.info("stopped during start-up (%s)%s", stop, _revision(ledger))
        raise typer.Exit(0) from None
    if daemon.left_running:
        # Calls still out hold threads the interpreter would wait for at exit (up to the
        # read time-out); their commands were given back, so nothing is lost by leaving.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


def _revision(ledger: SqlLedger | None) -> str:
    if ledger is None:
        return ""
    try:
        return f"; the ledger is at revision {ledger.current() or '(empty)'}"
    except Exception:  # noqa: BLE001 - only for the message
        return ""


def _daemon(
    settings: Settings,
    ledger: SqlLedger,
    host: str | None,
    port: int | None,
    reconcile_every: float,
) -> Daemon:
    runtime = Runtime.build(settings, ledger=ledger)
    for warning in runtime.check_access():
        log.warning("%s; starting not ready, the polls retry", warning)
    reconcile = None
    if reconcile_every > 0:
        from bridge.reconcile import scheduled  # noqa: PLC0415 - optional part of the daemon

        reconcile = scheduled(runtime)
    console = None
    if settings.console.enabled:
        from bridge.app.commands.console import build  # noqa: PLC0415 - only when enabled

        console = build(settings, ledger)
    return Daemon(
        runtime,
        host=host or settings.http_host,
        port=settings.http_port if port is None else port,
        reconcile=reconcile,
        reconcile_every=reconcile_every or 300.0,
        console=console,
    )
