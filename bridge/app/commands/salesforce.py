"""``bridge salesforce``: the org-side setup of the Salesforce intake.

``setup`` creates or updates the PushTopics the ``pushtopic`` intake subscribes to (the
Omni-Channel guide's PSR topic with the fields the engine reads, AgentWork, the work items
that end); ``setup --check`` only reports what is missing or different (exit 1), as
``bridge run`` checks at start in that mode. ``reinitialize``: data-centre recovery
(``bridge.app.commands.salesforce_recovery``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.app.commands import salesforce_recovery
from bridge.app.commands.common import JsonFlag, console, print_json

app = typer.Typer(help="The Salesforce org's side of the intake.", no_args_is_help=True)
app.command("reinitialize")(salesforce_recovery.reinitialize)


@app.command("setup")
def setup(
    check_only: Annotated[
        bool,
        typer.Option("--check", help="Change nothing: report what is missing or different."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create or update the PushTopics of `BRIDGE_SALESFORCE__INTAKE=pushtopic` over REST
    (needs create/edit rights on PushTopic; the queries follow the crosswalk's queues)."""
    from bridge.adapters.salesforce.client import SalesforceAdapter  # noqa: PLC0415
    from bridge.adapters.salesforce.pushtopics import (  # noqa: PLC0415
        check,
        definitions,
        ensure,
        topic_rest,
    )
    from bridge.app.settings import load_settings  # noqa: PLC0415
    from bridge.domain.mapping import load_tables  # noqa: PLC0415

    settings = load_settings()
    sf = settings.require_salesforce()
    tables = load_tables(settings.mappings_dir)
    topics = definitions(
        queue_ids=[q.sf_queue_id for q in tables.crosswalk.queues],
        work_item_types=[c.sf_work_item_type for c in tables.crosswalk.channels],
        api_version=sf.api_version,
    )
    rest = topic_rest(settings, SalesforceAdapter.from_settings(settings))
    lines = check(rest, topics) if check_only else ensure(rest, topics)
    if as_json:
        print_json(
            {
                "topics": [
                    {"name": t.name, "channel": t.channel, "query": t.query} for t in topics
                ],
                "problems" if check_only else "done": lines,
            }
        )
    else:
        out = console()
        for line in lines or ["every PushTopic is as defined"]:
            out.print(line)
    if check_only and lines:
        raise typer.Exit(1)
