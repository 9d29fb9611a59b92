"""Batched reads the reconcilers share: Salesforce queries page by page (``nextRecordsUrl``,
2,000 rows) or ``Id IN`` batches of 200, ServiceNow keyset pages of 10,000, the ledger in
``IN`` batches. Never one call per record."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from bridge.adapters.salesforce.client import soql_datetime, soql_string
from bridge.adapters.salesforce.polling import PSR_FIELDS
from bridge.adapters.servicenow.client import MAX_PAGE
from bridge.domain import CorrelationState, Direction
from bridge.domain.mapping import Tables
from bridge.domain.sf_ids import to18
from bridge.ledger.lookups import CorrelationSummary, chunks
from bridge.reconcile.base import Context

T = TypeVar("T")

PAGE = 2000
# ServiceNow keyset pages: the largest page the adapter asks for in one request (each
# request costs the instance a pass over the table, so fewer, larger pages are cheaper).
SN_PAGE = MAX_PAGE
SN_TIME = "%Y-%m-%d %H:%M:%S"
OPEN_STATES = tuple(s.value for s in CorrelationState if not s.is_final)
FINAL_STATES = tuple(s.value for s in CorrelationState if s.is_final)


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


def sn_queue_refs(tables: Tables) -> list[str]:
    """How the mapped AWA queues appear in ``awa_work_item.queue`` (sys_ids)."""
    return [q.sn_queue_sys_id for q in tables.crosswalk.queues if q.sn_queue_sys_id]


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


def read_ahead(pages: Iterator[T]) -> Iterator[T]:
    """The pages, the next one read on a worker thread while the caller works on this
    one: a scan then costs the slower of reading and checking, not their sum. Errors of
    the read come out of the ``next`` that would have returned the page."""
    with ThreadPoolExecutor(1, thread_name_prefix="reconcile-read") as pool:
        coming = pool.submit(next, pages, None)
        while (page := coming.result()) is not None:
            coming = pool.submit(next, pages, None)
            yield page


def scan_soql(ctx: Context, soql: str, task: str) -> Iterator[list[dict[str, Any]]]:
    """A query's records in pages (the API's own pages of up to 2,000), read ahead."""
    return read_ahead(_soql_pages(ctx, soql, task))


def _soql_pages(ctx: Context, soql: str, task: str) -> Iterator[list[dict[str, Any]]]:
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
    """Rows of a table matching ``condition``, keyset pages on (sys_updated_on, sys_id),
    read ahead."""

    def pages() -> Iterator[list[dict[str, str]]]:
        after = (since.strftime(SN_TIME), "") if since is not None else None
        while True:
            rows = ctx.servicenow.changed(table, fields, after, SN_PAGE, extra_query=condition)
            if not rows:
                return
            ctx.progress(task, len(rows), None)
            yield rows
            if len(rows) < SN_PAGE:
                return
            after = (rows[-1]["sys_updated_on"], rows[-1]["sys_id"])

    return read_ahead(pages())


def correlations_by(ctx: Context, column: str, ids: Iterable[str]) -> dict[str, CorrelationSummary]:
    """Correlations whose ``column`` is one of ``ids``, keyed by that column's value."""
    with ctx.ledger.reading() as tx:
        return tx.lookups.correlations_by(column, ids)


def known_values(ctx: Context, column: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` some correlation holds in ``column`` (the values only: cheap)."""
    with ctx.ledger.reading() as tx:
        return tx.lookups.known_values(column, ids)


def bridge_agent_work(ctx: Context, ids: Iterable[str]) -> set[str]:
    """Which of these AgentWork ids the bridge made (a segment or correlation holds it)."""
    with ctx.ledger.reading() as tx:
        return tx.lookups.known_values("sf_agent_work_id", ids, segments=True)


def psr_owners(ctx: Context, psr_ids: Iterable[str]) -> dict[str, CorrelationSummary]:
    """The correlation each PSR belongs to: as its current PSR or as an earlier segment's."""
    with ctx.ledger.reading() as tx:
        return tx.lookups.psr_owners(psr_ids)


def correlation_rows(
    ctx: Context,
    columns: Sequence[str],
    *,
    states: Sequence[str] = (),
    updated_before: datetime | None = None,
    since: datetime | None = None,
) -> Iterator[list[Any]]:
    """``columns`` of the correlations in ``states`` (last updated in [since,
    updated_before)), keyset pages by id; plain rows, not ORM objects."""
    last = ""
    while True:
        with ctx.ledger.reading() as tx:
            page = tx.lookups.correlation_page(
                columns,
                after=last,
                limit=PAGE,
                states=states,
                updated_before=updated_before,
                since=since,
            )
        if not page:
            return
        yield page
        last = page[-1].id
