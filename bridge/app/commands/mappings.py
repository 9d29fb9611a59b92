"""`bridge mappings ...`: validate the mapping tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bridge.app.commands.common import JsonFlag, console, print_json
from bridge.app.commands.discover import discover
from bridge.app.settings import env_name, load_settings
from bridge.domain.mapping import LiveDirectory, Problem, Tables, check_live, check_tables

if TYPE_CHECKING:
    from bridge.adapters.salesforce.client import SalesforceApi
    from bridge.adapters.servicenow.client import ServiceNowApi

app = typer.Typer(help="Mapping tables: crosswalk, policies, rules.", no_args_is_help=True)
app.command("discover")(discover)


def live_adapters() -> tuple[SalesforceApi, ServiceNowApi]:
    """Both systems' adapters from the settings (only --live and discover need them)."""
    from bridge.adapters.salesforce.client import SalesforceAdapter  # noqa: PLC0415
    from bridge.adapters.servicenow.client import ServiceNowAdapter  # noqa: PLC0415

    settings = load_settings()
    return SalesforceAdapter.from_settings(settings), ServiceNowAdapter.from_settings(settings)


def live_directory() -> LiveDirectory:
    """The two live systems, as the live check sees them (settings name both)."""
    # only --live needs the clients
    from bridge.adapters.salesforce.client import SalesforceAdapter  # noqa: PLC0415
    from bridge.adapters.servicenow.client import ServiceNowAdapter  # noqa: PLC0415
    from bridge.reconcile.mapping_check import AdapterDirectory  # noqa: PLC0415

    settings = load_settings()
    return AdapterDirectory(
        SalesforceAdapter.from_settings(settings), ServiceNowAdapter.from_settings(settings)
    )


def stream_problems(tables: Tables) -> list[Problem]:
    """In ``pubsub`` intake: the channel and every change event the bridge expects on it
    (PSR, AgentWork, each mapped work item's), as the org's Pub/Sub API answers."""
    settings = load_settings()
    if settings.salesforce.intake != "pubsub":
        return []
    # only --live needs the clients
    from bridge.adapters.salesforce.client import SalesforceAdapter  # noqa: PLC0415
    from bridge.adapters.salesforce.pubsub.client import (  # noqa: PLC0415
        channel_problems,
        pubsub_client,
    )

    client = pubsub_client(settings, SalesforceAdapter.from_settings(settings))
    try:
        found = channel_problems(client, [c.sf_work_item_type for c in tables.crosswalk.channels])
    finally:
        client.shutdown()
    setting = env_name("salesforce", "pubsub_channel")
    return [Problem("settings", None, setting, message) for message in found]


@app.command("check")
def check(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Directory of the tables (default: settings, then packaged)."),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Also check that both systems hold what is mapped.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Validate the tables; one line per problem and exit 1, or a one-line summary."""
    directory = directory or load_settings().mappings_dir
    tables, problems = check_tables(directory)
    if tables is not None and live:
        problems = check_live(tables, live_directory()) + stream_problems(tables)
    if as_json:
        print_json(
            {
                "ok": not problems,
                "problems": [p.as_dict() for p in problems],
                "rules": len(tables.rules) if tables else None,
                "queues": len(tables.crosswalk.queues) if tables else None,
                "users": len(tables.crosswalk.users) if tables else None,
            }
        )
    else:
        out = console()
        for problem in problems:
            out.print(str(problem), markup=False)
        if tables is not None and not problems:
            out.print(_summary(tables), markup=False)
    if problems:
        raise typer.Exit(1)


def _summary(tables: Tables) -> str:
    return (
        f"OK: {len(tables.rules)} rules, {len(tables.crosswalk.queues)} queues, "
        f"{len(tables.crosswalk.users)} users"
    )
