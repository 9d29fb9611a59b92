"""`bridge console`: the read-only web console on a listener of its own."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from starlette.types import ASGIApp

from bridge.app.settings import Settings, load_settings
from bridge.ledger import SqlLedger
from bridge.logging import configure_logging

log = logging.getLogger(__name__)


def build(settings: Settings, ledger: SqlLedger) -> ASGIApp:
    """The console's ASGI app for these settings (credential checked), to mount at
    ``/console``; ``bridge run`` mounts it when ``BRIDGE_CONSOLE__ENABLED`` is true."""
    # imported here: the other commands need no template engine
    from bridge.console import Credentials, console_app  # noqa: PLC0415
    from bridge.ledger.words import crosswalk_names  # noqa: PLC0415

    section = settings.require_console()
    return console_app(
        ledger,
        Credentials(token=section.token, username=section.username, password=section.password),
        names=crosswalk_names(settings.mappings_dir),
        page_size=section.page_size,
    )


def console(
    ledger_url: Annotated[
        str | None, typer.Option(help="The ledger to read (default BRIDGE_LEDGER_URL).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default BRIDGE_CONSOLE__HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default BRIDGE_CONSOLE__PORT, 9465).")
    ] = None,
) -> None:
    """Serve the read-only console (conversations, timelines, refused events, dead letters,
    reconciliations, streams) under /console/ until interrupted. Requires
    BRIDGE_CONSOLE__TOKEN or BRIDGE_CONSOLE__USERNAME + BRIDGE_CONSOLE__PASSWORD."""
    from bridge.console import standalone_app  # noqa: PLC0415
    from bridge.console.server import Server  # noqa: PLC0415

    overrides: dict[str, Any] = {} if ledger_url is None else {"ledger_url": ledger_url}
    settings = load_settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    ledger = SqlLedger.from_settings(settings)
    ledger.check_current()
    app = standalone_app(build(settings, ledger))
    section = settings.console
    server = Server(app, host=host or section.host, port=section.port if port is None else port)
    server.start()
    typer.echo(f"console on http://{server.host}:{server.port}/console/ (ledger {ledger.url})")
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    finally:
        ledger.close()
