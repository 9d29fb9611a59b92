"""``bridge sandbox servicenow``: serve the sandbox instance until interrupted."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from bridge_sandbox.connect import write_servicenow_env
from bridge_sandbox.servicenow.app import STATE_FILE, ServiceNowSandbox
from bridge_sandbox.serving import DEFAULT_STATE_DIR, SandboxCA


def servicenow(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0: any free port).")] = 0,
    state_dir: Annotated[
        Path,
        typer.Option(
            help="Where the CA (shared with `bridge sandbox salesforce`), servicenow.json "
            "and servicenow.env are written."
        ),
    ] = DEFAULT_STATE_DIR,
) -> None:
    """Run the sandbox ServiceNow instance (Table, Batch, OAuth, AWA APIs) over HTTPS."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ca = SandboxCA.shared(state_dir, server="servicenow")
    with ServiceNowSandbox(ca=ca, port=port, state_dir=state_dir) as sandbox:
        env_file = write_servicenow_env(state_dir, sandbox)
        typer.echo(f"ServiceNow sandbox instance: {sandbox.instance_url}")
        typer.echo(f"CA bundle: {sandbox.ca_bundle}")
        typer.echo(f"User: {sandbox.username} (password in {state_dir / STATE_FILE})")
        typer.echo(f"Bridge env: {env_file} (basic auth; `set -a; . {env_file}`)")
        stop.wait()
    typer.echo("ServiceNow sandbox stopped.")
