"""`bridge mappings ...`."""

from __future__ import annotations

import typer

app = typer.Typer(help="mappings commands.", no_args_is_help=True)
