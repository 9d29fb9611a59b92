"""`bridge db ...`: ledger migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.app.commands.common import JsonFlag, open_ledger, print_fields, print_json
from bridge.ledger import migrate

app = typer.Typer(help="Create and migrate the ledger database.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create the ledger or migrate it to the newest schema (safe to repeat)."""
    ledger = open_ledger(check=False)
    before = ledger.current()
    ledger.upgrade(revision)
    after = ledger.current()
    if before == after:
        typer.echo(f"ledger {ledger.url} already at {after}")
    else:
        typer.echo(f"ledger {ledger.url} upgraded {before or '(empty)'} -> {after}")


@app.command("downgrade")
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision (`base` drops every table).")],
) -> None:
    """Migrate the ledger back to an older schema."""
    ledger = open_ledger(check=False)
    before = ledger.current()
    ledger.downgrade(revision)
    typer.echo(
        f"ledger {ledger.url} downgraded {before or '(empty)'} -> {ledger.current() or '(empty)'}"
    )


@app.command("current")
def current(as_json: JsonFlag = False) -> None:
    """Show the ledger's schema revision and whether it is up to date."""
    ledger = open_ledger(check=False)
    at, head = ledger.current(), migrate.head()
    info = {"url": ledger.url, "current": at, "head": head, "up_to_date": at == head}
    if as_json:
        print_json(info)
    else:
        print_fields(info, title="ledger")
