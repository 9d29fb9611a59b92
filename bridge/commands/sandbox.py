"""`bridge sandbox ...`: the emulated Salesforce org and ServiceNow instance, alone or with a
bridge and generated traffic (the try-it-now demo)."""

from __future__ import annotations

import typer

from bridge.sandbox.salesforce.cli import salesforce
from bridge.sandbox.servicenow.cli import servicenow

app = typer.Typer(
    help="Emulated Salesforce org and ServiceNow instance over HTTPS on 127.0.0.1.",
    no_args_is_help=True,
)
app.command("salesforce")(salesforce)
app.command("servicenow")(servicenow)
