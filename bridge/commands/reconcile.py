"""`bridge reconcile`: one-off reconciliation runs."""

from __future__ import annotations

import typer


def reconcile() -> None:
    """Compare both systems with the ledger and repair drift (not yet available)."""
    typer.echo("reconcile: not yet available")
    raise typer.Exit(2)
