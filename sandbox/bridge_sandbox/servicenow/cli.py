"""``bridge sandbox servicenow``: serve the sandbox instance until interrupted."""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from bridge_sandbox.servicenow.app import ServiceNowSandbox

DEFAULT_STATE_DIR = Path(tempfile.gettempdir()) / "bridge-sandbox"


def servicenow(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0: any free port).")] = 0,
    state_dir: Annotated[
        Path,
        typer.Option(help="Where to write servicenow.json (URL, CA bundle, credentials)."),
    ] = DEFAULT_STATE_DIR,
) -> None:
    """Run the sandbox ServiceNow instance (Table, Batch, OAuth, AWA APIs) over HTTPS."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with ServiceNowSandbox(port=port, state_dir=state_dir) as sandbox:
        typer.echo(f"ServiceNow sandbox instance: {sandbox.instance_url}")
        typer.echo(f"CA bundle: {sandbox.ca_bundle}")
        typer.echo(f"User: {sandbox.username} (password in {state_dir / 'servicenow.json'})")
        stop.wait()
    typer.echo("ServiceNow sandbox stopped.")
