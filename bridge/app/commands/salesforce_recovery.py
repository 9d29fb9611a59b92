"""``bridge salesforce reinitialize``: data-centre recovery by hand (the group's module,
``bridge.app.commands.salesforce``, adds this command)."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.adapters.salesforce.polling import SalesforceIntake
from bridge.app.commands.common import JsonFlag, open_ledger, print_fields, print_json
from bridge.app.settings import load_settings
from bridge.flow.recovery import reinitialize as reinitialize_streams
from bridge.ledger.rows import utcnow


def reinitialize(
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before dropping the positions.")
    ] = False,
    reason: Annotated[
        str, typer.Option(help="Why, as recorded with the finding in the ledger.")
    ] = "data-centre recovery (bridge salesforce reinitialize)",
    as_json: JsonFlag = False,
) -> None:
    """Re-initialise the Salesforce intake as on its first start, after the org moved to
    another instance (the Omni-Channel guide's data-centre recovery): drop every Salesforce
    stream position (replay ids, poll watermarks), record it in the ledger (`bridge ledger
    reconciliations`), read what is live now into the inbox. Run it while `bridge run` is
    stopped (a running one would store its next position again); started again, it
    subscribes from the newest and open conversations continue from what the read shows.
    `bridge run` catches up by itself, with a finding, when the org refuses a stored
    replay id or names another instance."""
    settings = load_settings()
    settings.require_salesforce()
    if not yes and not typer.confirm(
        "Drop every Salesforce stream position and re-read what is live?", default=False
    ):
        raise typer.Exit(1)
    ledger = open_ledger()
    from bridge.app.runtime import Runtime  # noqa: PLC0415 - builds the adapters

    runtime = Runtime.build(settings, ledger=ledger)
    try:
        reader = next(i for i in runtime.intakes if isinstance(i, SalesforceIntake))
        recovery = reinitialize_streams(ledger, reader, reason=reason, now=utcnow())
    finally:
        runtime.close()
    if as_json:
        print_json(recovery.as_dict())
        return
    print_fields(
        {
            "reason": recovery.reason,
            "positions dropped": ", ".join(sorted(recovery.dropped)) or "(none stored)",
            "events re-read": recovery.recorded,
            "recorded as run": recovery.run_id or "(not recorded: memory ledger)",
        },
        title="Salesforce intake re-initialised",
    )
