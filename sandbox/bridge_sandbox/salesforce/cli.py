"""``bridge sandbox salesforce``: run the sandbox org until interrupted."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from bridge_sandbox.connect import write_salesforce_env
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.salesforce.pubsub import DEFAULT_KEEPALIVE_INTERVAL
from bridge_sandbox.serving import DEFAULT_STATE_DIR, SandboxCA


def salesforce(
    port: Annotated[int, typer.Option(help="REST instance port (0: any free port).")] = 0,
    scrt_port: Annotated[int, typer.Option(help="Interaction Service API port (0: any).")] = 0,
    pubsub_port: Annotated[int, typer.Option(help="Pub/Sub API (gRPC) port (0: any).")] = 0,
    keepalive: Annotated[
        float, typer.Option(help="Seconds between Pub/Sub keepalives on an idle stream.")
    ] = DEFAULT_KEEPALIVE_INTERVAL,
    state_dir: Annotated[
        Path,
        typer.Option(
            help="Where the CA (shared with `bridge sandbox servicenow`), JWT key, "
            "salesforce.json and salesforce.env are written."
        ),
    ] = DEFAULT_STATE_DIR,
) -> None:
    """Serve the sandbox Salesforce org over HTTPS on 127.0.0.1 until Ctrl-C or SIGTERM."""
    ca = SandboxCA.shared(state_dir, server="salesforce")
    sandbox = SalesforceSandbox(
        ca=ca,
        port=port,
        scrt_port=scrt_port,
        state_dir=state_dir,
        pubsub_port=pubsub_port,
        keepalive_interval=keepalive,
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    with sandbox:
        state_file = sandbox.write_state(state_dir)
        env_file = write_salesforce_env(state_dir, sandbox)
        typer.echo(f"Salesforce sandbox org {sandbox.org_id}")
        typer.echo(f"  instance_url  {sandbox.instance_url}")
        typer.echo(f"  scrt_url      {sandbox.scrt_url}")
        typer.echo(f"  pubsub_url    {sandbox.pubsub_url}")
        typer.echo(f"  ca_bundle     {sandbox.ca_bundle}")
        typer.echo(f"  username      {sandbox.username}")
        typer.echo(f"  client_id     {sandbox.client_id}")
        typer.echo(f"  jwt_key_file  {sandbox.jwt_key_file}")
        typer.echo(f"  state         {state_file} (client secret inside)")
        typer.echo(f"  bridge env    {env_file} (client credentials; `set -a; . {env_file}`)")
        while not stop.wait(0.5):
            pass
    typer.echo("Salesforce sandbox stopped.")
