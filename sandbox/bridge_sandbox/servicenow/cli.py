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
from bridge_sandbox.servicenow.store import ServiceNowApiError
from bridge_sandbox.serving import DEFAULT_STATE_DIR, SandboxCA


def servicenow(
    *,
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0: any free port).")] = 0,
    state_dir: Annotated[
        Path,
        typer.Option(
            help="Where the CA (shared with `bridge sandbox salesforce`), servicenow.json "
            "and servicenow.env are written."
        ),
    ] = DEFAULT_STATE_DIR,
    provider_url: Annotated[
        str | None,
        typer.Option(
            help="Deliver AWA External Routing events (every work item / interaction change) "
            "to this endpoint, e.g. https://127.0.0.1:9443/servicenow/events."
        ),
    ] = None,
    provider_user: Annotated[
        str | None, typer.Option(help="Basic auth user name for --provider-url.")
    ] = None,
    provider_password: Annotated[
        str | None,
        typer.Option(
            help="Basic auth password for --provider-url.",
            envvar="BRIDGE_SANDBOX_PROVIDER_PASSWORD",
            show_envvar=True,
        ),
    ] = None,
    provider_ca_file: Annotated[
        Path | None,
        typer.Option(
            help="CA bundle that verifies --provider-url (default: the sandbox CA, which "
            "also issued DIR/servicenow-server.pem)."
        ),
    ] = None,
) -> None:
    """Run the sandbox ServiceNow instance (Table, Batch, OAuth, AWA APIs) over HTTPS."""
    if provider_url is not None and not (provider_user and provider_password):
        raise typer.BadParameter(
            "--provider-url needs --provider-user and --provider-password", param_hint="provider"
        )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ca = SandboxCA.shared(state_dir, server="servicenow")
    with ServiceNowSandbox(ca=ca, port=port, state_dir=state_dir) as sandbox:
        if provider_url is not None and provider_user and provider_password:
            ca_file = None if provider_ca_file is None else str(provider_ca_file)
            try:
                sandbox.control.set_provider(
                    provider_url, provider_user, provider_password, ca_file
                )
            except ServiceNowApiError as exc:
                raise typer.BadParameter(str(exc), param_hint="provider") from None
            typer.echo(f"Deliveries: {provider_url} as {provider_user}")
        env_file = write_servicenow_env(state_dir, sandbox)
        typer.echo(f"ServiceNow sandbox instance: {sandbox.instance_url}")
        typer.echo(f"CA bundle: {sandbox.ca_bundle}")
        typer.echo(f"User: {sandbox.username} (password in {state_dir / STATE_FILE})")
        typer.echo(f"Bridge env: {env_file} (basic auth; `set -a; . {env_file}`)")
        stop.wait()
    typer.echo("ServiceNow sandbox stopped.")
