"""Batched reads the reconcilers share: Salesforce queries page by page (``nextRecordsUrl``,
2,000 rows), ServiceNow keyset pages of 2,000, the ledger in ``IN`` batches. Never one
call per record."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import select
from sqlmodel import col

from bridge.ledger.models import Correlation, Segment
from bridge.mapping import Tables
from bridge.model import CorrelationState, Direction
from bridge.reconcile.base import Context
from bridge.salesforce.api import soql_datetime, soql_string
from bridge.salesforce.ids import to18
from bridge.salesforce.intake import PSR_FIELDS

T = TypeVar("T")

PAGE = 2000
# Ledger lookups: ids per IN (well below SQLite's and PostgreSQL's parameter limits).
LEDGER_BATCH = 500
SN_TIME = "%Y-%m-%d %H:%M:%S"
OPEN_STATES = tuple(s.value for s in CorrelationState if not s.is_final)
FINAL_STATES = tuple(s.value for s in CorrelationState if s.is_final)


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def sf18(record_id: Any) -> str | None:
    """A Salesforce id in its 18-character form (None when it is not one)."""
    if not isinstance(record_id, str) or not record_id:
        return None
    try:
        return str(to18(record_id))
    except ValueError:
        return None


def queue_ids(tables: Tables, direction: Direction | None = None) -> list[str]:
    """The mapped Salesforce queues (18-character ids), of one direction or all."""
    return [
        to18(q.sf_queue_id)
        for q in tables.crosswalk.queues
        if direction is None or q.direction is direction
    ]


def sn_queue_refs(tables: Tables, direction: Direction) -> list[str]:
    """How the AWA queues of a direction appear in ``awa_work_item.queue`` (sys_ids)."""
    return [
        q.sn_queue_sys_id
        for q in tables.crosswalk.queues
        if q.direction is direction and q.sn_queue_sys_id
    ]


def scan_psrs(
    ctx: Context, queues: Sequence[str], since: datetime | None, task: str
) -> Iterator[list[dict[str, Any]]]:
    """Every PSR of the given queues (created since ``since``), in pages."""
    if not queues:
        return
    where = f"QueueId IN ({', '.join(soql_string(q) for q in queues)})"
    if since is not None:
        where += f" AND CreatedDate >= {soql_datetime(since)}"
    columns = ", ".join(["Id", "SystemModstamp", *PSR_FIELDS])
    soql = f"SELECT {columns} FROM PendingServiceRouting WHERE {where}"
    yield from scan_soql(ctx, soql, task)


def scan_soql(ctx: Context, soql: str, task: str) -> Iterator[list[dict[str, Any]]]:
    """A query's records in pages (the API's own pages of up to 2,000)."""
    for page in chunks(ctx.salesforce.query(soql), PAGE):
        ctx.progress(task, len(page), None)
        yield [{k: v for k, v in r.items() if k != "attributes"} for r in page]


def scan_sn(
    ctx: Context,
    table: str,
    fields: Sequence[str],
    condition: str,
    *,
    since: datetime | None,
    task: str,
) -> Iterator[list[dict[str, str]]]:
    """Rows of a table matching ``condition``, keyset pages of 2,000 on
    (sys_updated_on, sys_id)."""
    after = (since.strftime(SN_TIME), "") if since is not None else None
    while True:
        rows = ctx.servicenow.changed(table, fields, after, PAGE, extra_query=condition)
        if not rows:
            return
        ctx.progress(task, len(rows), None)
        yield rows
        if len(rows) < PAGE:
            return
        after = (rows[-1]["sys_updated_on"], rows[-1]["sys_id"])


def correlations_by(ctx: Context, column: str, ids: Iterable[str]) -> dict[str, Correlation]:
    """Correlations whose ``column`` is one of ``ids``, keyed by that column's value."""
    attr = getattr(Correlation, column)
    found: dict[str, Correlation] = {}
    with ctx.ledger.reading() as session:
        for batch in chunks(dict.fromkeys(i for i in ids if i), LEDGER_BATCH):
            for row in session.scalars(select(Correlation).where(col(attr).in_(batch))):
                found[getattr(row, column)] = row
    return found


def psr_owners(ctx: Context, psr_ids: Iterable[str]) -> dict[str, Correlation]:
    """The correlation each PSR belongs to: as its current PSR or as an earlier segment's."""
    wanted = list(dict.fromkeys(psr_ids))
    found = correlations_by(ctx, "sf_psr_id", wanted)
    rest = [p for p in wanted if p not in found]
    with ctx.ledger.reading() as session:
        for batch in chunks(rest, LEDGER_BATCH):
            stmt = (
                select(col(Segment.sf_psr_id), Correlation)
                .join(Correlation, col(Correlation.id) == col(Segment.correlation_id))
                .where(col(Segment.sf_psr_id).in_(batch))
            )
            for psr_id, corr in session.execute(stmt).tuples():
                if psr_id is not None:
                    found[psr_id] = corr
    return found


def correlations_where(
    ctx: Context, *conditions: Any, since: datetime | None = None
) -> Iterator[list[Correlation]]:
    """Correlations matching ``conditions`` (updated since ``since``), keyset pages by id."""
    last = ""
    stmt = select(Correlation).where(*conditions)
    if since is not None:
        stmt = stmt.where(col(Correlation.updated_at) >= since)
    while True:
        with ctx.ledger.reading() as session:
            page = list(
                session.scalars(
                    stmt.where(col(Correlation.id) > last).order_by(col(Correlation.id)).limit(PAGE)
                )
            )
        if not page:
            return
        yield page
        last = page[-1].id
