"""`bridge run`: the middleware daemon."""

from __future__ import annotations

import typer


def run() -> None:
    """Run the bridge daemon (not yet available)."""
    typer.echo("run: not yet available")
    raise typer.Exit(2)
