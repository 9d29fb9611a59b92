"""`bridge ledger ...`: audit queries over the ledger."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from bridge.app.commands.common import (
    Column,
    JsonFlag,
    cell,
    columns,
    emit,
    open_ledger,
    parse_when,
    print_fields,
    print_json,
    print_table,
    record,
    write_csv,
    write_jsonl,
)
from bridge.app.settings import load_settings
from bridge.domain import CorrelationState, EventKind
from bridge.domain import Direction as ConversationDirection
from bridge.ledger import Correlation, audit
from bridge.ledger.words import Names, crosswalk_names

app = typer.Typer(help="Audit queries: conversations, segments, commands.", no_args_is_help=True)


class EventStatus(StrEnum):
    """What became of an inbox event (the ledger's ``EVENT_STATUSES``)."""

    pending = "pending"
    processed = "processed"
    echo = "echo"
    skipped = "skipped"
    error = "error"


class EventSource(StrEnum):
    """Where an inbox event came from (the ledger's ``EVENT_SOURCES``)."""

    salesforce = "salesforce"
    servicenow = "servicenow"
    reconciler = "reconciler"


# Options with a fixed set of values are choices: a value outside it is exit 2, naming it.
State = Annotated[CorrelationState | None, typer.Option(help="Only correlations in this state.")]
Direction = Annotated[
    ConversationDirection | None, typer.Option(help="Where the conversation started.")
]
Since = Annotated[
    str | None, typer.Option(help="Created at or after: a duration back (15m, 1h, 2d) or ISO time.")
]
Until = Annotated[str | None, typer.Option(help="Created before: a duration back or ISO time.")]
Queue = Annotated[
    str | None, typer.Option(help="Salesforce queue id or AWA queue sys_id, now or in any segment.")
]
Agent = Annotated[
    str | None,
    typer.Option(help="Salesforce user id or ServiceNow user sys_id, now or in any segment."),
]
AnyId = Annotated[
    str,
    typer.Argument(
        help="Correlation id, PSR / work item / AgentWork id, sys_id or external_segment_id."
    ),
]

LIST_COLUMNS = columns(
    "id", "direction", "state", "sf_work_item_id", "sn_document_sys_id", "sf_user_id",
    "sn_user_sys_id", "created_at",
)  # fmt: skip
SEGMENT_COLUMNS = columns(
    "seq", "kind", "external_segment_id", "sf_queue_id", "sn_queue_sys_id", "sf_user_id",
    "sn_user_sys_id", "opened_at", "closed_at", "outcome",
)  # fmt: skip
COMMAND_COLUMNS = columns(
    "created_at", "system", "operation", "status", "attempts", "next_attempt_at", "error"
)
EVENT_COLUMNS = columns("id", "occurred_at", "source", "kind", "source_event_id", "status", "error")


def _millis(value: Any) -> str:
    """Timeline times to the millisecond: what happens within one second stays in order."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return cell(value)


TIMELINE_COLUMNS = columns(
    Column("at", fmt=_millis), Column("system"), "what", "summary", "ref"
)  # fmt: skip
# Id columns that get the crosswalk's name beside the id in tables (``--json`` keeps the
# raw ids, with the names under ``names``).
NAMED_COLUMNS = (
    "sf_user_id", "sn_user_sys_id", "sf_queue_id", "sn_queue_sys_id", "sf_service_channel_id",
)  # fmt: skip


def _names() -> Names:
    """The configured crosswalk's names (none when the tables do not load)."""
    return crosswalk_names(load_settings().mappings_dir)


def _named(row: dict[str, Any], names: Names) -> dict[str, Any]:
    """The row with ``names``: the crosswalk's name of each id column it knows."""
    return {**row, "names": names.of({k: row.get(k) for k in NAMED_COLUMNS})}


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """For a table: ``id (name)`` in the named columns."""
    known = row.get("names") or {}
    return {k: (f"{v} ({known[k]})" if k in known else v) for k, v in row.items() if k != "names"}


RUN_COLUMNS = columns(
    "id", "started_at", "finished_at", "mode", "status", Column("reconcilers"), Column("findings")
)
FINDING_COLUMNS = columns(
    "reconciler", "kind", "subject", "correlation_id", "action", "status", "reason"
)


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def _filter(
    *,
    state: str | None,
    direction: str | None,
    since: str | None,
    until: str | None,
    queue: str | None,
    agent: str | None,
) -> audit.CorrelationFilter:
    now = datetime.now(UTC)
    return audit.CorrelationFilter(
        state=None if state is None else str(state),  # the plain value, not the enum
        direction=None if direction is None else str(direction),
        since=None if since is None else parse_when(since, now, "--since"),
        until=None if until is None else parse_when(until, now, "--until"),
        queue=queue,
        agent=agent,
    )


@app.command("list")
def list_(
    *,
    state: State = None,
    direction: Direction = None,
    since: Since = None,
    until: Until = None,
    queue: Queue = None,
    agent: Agent = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Correlations, newest first, filtered."""
    flt = _filter(
        state=state, direction=direction, since=since, until=until, queue=queue, agent=agent
    )
    names = _names()
    with open_ledger().reading() as tx:
        rows = [_named(record(c), names) for c in tx.audit.list_correlations(flt, limit)]
    emit(rows if as_json else [_shown(r) for r in rows], LIST_COLUMNS, as_json=as_json,
         title="correlations")  # fmt: skip


def _dump_detail(detail: audit.CorrelationDetail, names: Names) -> dict[str, Any]:
    return {
        "correlation": _named(record(detail.correlation), names),
        "segments": [_named(record(s), names) for s in detail.segments],
        "events": [record(e) for e in detail.events],
        "commands": [record(c) for c in detail.commands],
        "findings": [record(f) for f in detail.findings],
    }


@app.command("show")
def show(any_id: AnyId, as_json: JsonFlag = False) -> None:
    """One correlation with its segments, events and commands."""
    names = _names()
    with open_ledger().reading() as tx:
        data = _dump_detail(tx.audit.correlation_detail(any_id), names)
    if as_json:
        print_json(data)
        return
    print_fields(_shown(data["correlation"]), title="correlation")
    data["segments"] = [_shown(s) for s in data["segments"]]
    for key, cols in (
        ("segments", SEGMENT_COLUMNS),
        ("events", EVENT_COLUMNS),
        ("commands", COMMAND_COLUMNS),
    ):
        if data[key]:
            print_table(data[key], cols, title=key)


@app.command("timeline")
def timeline(any_id: AnyId, as_json: JsonFlag = False) -> None:
    """Every event, segment change, command and finding of a correlation, in time order."""
    names = _names()
    with open_ledger().reading() as tx:
        entries = audit.timeline(tx.audit.correlation_detail(any_id), names)
    rows = [
        {
            "at": e.at,
            "what": e.what,
            "summary": e.summary,
            "ref": e.ref,
            "system": e.system,
            # --json: the raw ids stay in ref and detail; who did it and marks beside them
            "detail": {**e.detail, "system": e.system, "actor": e.actor, "marks": list(e.marks)},
        }
        for e in entries
    ]
    if as_json:
        for row in rows:
            del row["system"]
    emit(rows, TIMELINE_COLUMNS, as_json=as_json, title="timeline")


EXPORT_COLUMNS = columns(*Correlation.model_fields)


@app.command("export")
def export(
    *,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl or csv.")
    ] = ExportFormat.jsonl,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    state: State = None,
    direction: Direction = None,
    since: Since = None,
    until: Until = None,
    queue: Queue = None,
    agent: Agent = None,
) -> None:
    """Every matching correlation, streamed as JSON lines or CSV."""
    flt = _filter(
        state=state, direction=direction, since=since, until=until, queue=queue, agent=agent
    )
    with open_ledger().reading() as tx:
        rows: Iterator[dict[str, Any]] = (record(c) for c in tx.audit.iter_correlations(flt))
        out = sys.stdout if output is None else output.open("w", encoding="utf-8", newline="")
        try:
            if fmt is ExportFormat.csv:
                n = write_csv(rows, EXPORT_COLUMNS, out)
            else:
                n = write_jsonl(rows, out)
        finally:
            if output is not None:
                out.close()
    if output is not None:
        typer.echo(f"{n} correlation(s) written to {output}", err=True)


@app.command("stats")
def stats(as_json: JsonFlag = False) -> None:
    """Counts by state and status, open correlations, intake cursors, last reconciliation."""
    with open_ledger().reading() as tx:
        data = tx.audit.stats()
    data["intake"] = _intake_modes()
    if as_json:
        print_json(data)
        return
    print_fields(data["intake"], title="intake modes (settings)")
    corr = data["correlations"]
    print_fields(
        {"total": corr["total"], "open": corr["open"], **corr["by_direction"]},
        title="correlations",
    )
    for title, counts in (
        ("correlations by state", corr["by_state"]),
        ("segments by outcome", data["segments"]["by_outcome"]),
        ("inbox by status", data["inbox"]["by_status"]),
        ("outbox by status", data["outbox"]["by_status"]),
    ):
        if counts:
            print_table(
                [{"key": k, "count": v} for k, v in sorted(counts.items())],
                columns("key", "count"),
                title,
            )
    if data["cursors"]:
        print_table(
            [
                {"stream": k, **v, "position": v.get("replay_id", v["position"])}
                for k, v in data["cursors"].items()
            ],
            columns("stream", "mode", "position", "origin", "updated_at"),
            "cursors (a change stream's position is its replay id)",
        )


def _intake_modes() -> dict[str, str]:
    """How each system's changes reach the bridge, as configured (the polls stay as a
    sweeper in the stream modes)."""
    settings = load_settings()
    modes: dict[str, str] = {}
    for name, section in (("salesforce", settings.salesforce), ("servicenow", settings.servicenow)):
        mode = str(getattr(section, "intake", "poll"))
        sweep = getattr(section, "sweep_interval", None)
        poll = section.poll_interval
        modes[name] = (
            f"{mode} (polls every {poll:g}s)"
            if mode == "poll"
            else f"{mode} (sweeper every {sweep:g}s)"
            if sweep
            else mode
        )
    return modes


EVENT_COLUMNS = columns(
    "id", "received_at", "source", "kind", "status", "correlation_id", "source_event_id", "error"
)


@app.command("events")
def events(
    *,
    status: Annotated[
        list[EventStatus] | None, typer.Option(help="What became of it (repeatable).")
    ] = None,
    source: Annotated[EventSource | None, typer.Option(help="Where it came from.")] = None,
    kind: Annotated[EventKind | None, typer.Option(help="What it is about.")] = None,
    since: Since = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Inbox events with what became of each; `--status error --status skipped` lists the
    input the bridge refused, with the reason."""
    when = parse_when(since, datetime.now(UTC)) if since else None
    with open_ledger().reading() as tx:
        rows = [
            record(e)
            for e in tx.audit.inbox_events(
                statuses=[str(s) for s in status or ()],
                source=None if source is None else str(source),
                kind=None if kind is None else str(kind),
                since=when,
                limit=limit,
            )
        ]
    emit(rows, EVENT_COLUMNS, as_json=as_json, title="inbox events")


@app.command("reconciliations")
def reconciliations(
    run: Annotated[str | None, typer.Option(help="Show the findings of this run.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many recent runs.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Recent reconciliation runs, or the findings of one run."""
    with open_ledger().reading() as tx:
        if run is not None:
            found, findings = tx.audit.run_findings(run)
            data: Any = {
                "run": record(found),
                "findings": [record(f) for f in findings],
            }
        else:
            data = [
                {**record(r), "findings": counts} for r, counts in tx.audit.reconcile_runs(limit)
            ]
    if run is None:
        emit(data, RUN_COLUMNS, as_json=as_json, title="reconcile runs")
    elif as_json:
        print_json(data)
    else:
        print_fields(data["run"], title="reconcile run")
        emit(data["findings"], FINDING_COLUMNS, as_json=False, title="findings")
