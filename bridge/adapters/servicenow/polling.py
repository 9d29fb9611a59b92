"""Polling intake of awa_work_item and interaction changes.

Keyset paging on (sys_updated_on, sys_id): offset paging skips rows when ACLs trim a page
or rows change between pages. ``sys_updated_on`` has second resolution, so each poll
starts an overlap window before the cursor and the inbox drops what it has seen
(``sys_id:sys_mod_count`` is the event id). On first start (no cursor) only active records
are read: the history of closed work would flood the inbox with nothing to do.

Work items are read for the mapped AWA queues and for every External queue (routed by a
CCaaS provider): work waiting for the bridge on a queue the crosswalk does not map is refused
in the open, not left unseen. Such a work item is recorded once (its event id names the
item, not its ``sys_mod_count``), so that it is one refusal however often it changes.
Interactions are read for the mapped queues and every interaction the bridge made
(``correlation_id`` set: the offer API does not set a queue on the document).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from bridge.adapters.servicenow.client import ServiceNowApi
from bridge.flow.intake import DEFAULT_OVERLAP_SECONDS, PAGE, PollResult, StreamRecorder, Watermark
from bridge.ledger.ports import Ledger, NewEvent

SOURCE = "servicenow"
SN_TIME = "%Y-%m-%d %H:%M:%S"

WORK_ITEM_FIELDS = (
    "number",  # AWI0001009: how people name a work item (the timeline and console show it)
    "state",
    "active",
    "document_table",
    "document_id",
    "queue",
    "assigned_to",
    "cancel_reason",
    "rejected",
    "timed_out",
    "reject_reason",
    "offered_on",
    "offer_count",
    "external_segment_id",
    "previous_work_item",
)
INTERACTION_FIELDS = (
    "state",
    "active",
    "queue",
    "assigned_to",
    "correlation_id",
    "closed_at",
)


# Work items of AWA queues marked External (External Routing Support plugin) wait for an
# external router; a dot-walk through the work item's queue, so still one query.
EXTERNAL_QUEUE = "queue.external=true"
# The last part of the event id of a work item on a queue the crosswalk does not map.
UNMAPPED = "unmapped"


def stream_of(table: str) -> str:
    """The intake stream (and cursor) name of a table."""
    return f"{SOURCE}:{table}"


def parse_sn_datetime(value: str) -> datetime:
    return datetime.strptime(value, SN_TIME).replace(tzinfo=UTC)


def fields_of(table: str) -> tuple[str, ...]:
    """Every field of a ``table`` row the intake reads (the keys of its events' payload)."""
    fields = WORK_ITEM_FIELDS if table == "awa_work_item" else INTERACTION_FIELDS
    return ("sys_id", "sys_updated_on", "sys_mod_count", *fields)


def polled(table: str, row: Mapping[str, str], mapped: Container[str]) -> bool:
    """Would a poll read this row? The same conditions as the polls' queries, as far as a
    row shows them: every work item (the poll reads every External queue's too: an unmapped
    one becomes its one refusal); an interaction of a mapped queue or one the bridge made
    (``correlation_id`` set)."""
    if table == "awa_work_item":
        return True
    return row.get("queue") in mapped or bool(row.get("correlation_id"))


def event_of(table: str, row: Mapping[str, str], mapped: Container[str]) -> NewEvent:
    """The inbox event of one ``awa_work_item`` / ``interaction`` row, whether a poll read
    it or the instance pushed it: one key (``table:sys_id:sys_mod_count``), so that a push
    and a sweep of the same change are one event. A work item on a queue the crosswalk does
    not map (``mapped``) is one event per item, ``UNMAPPED`` in place of its version: one
    refusal however often it changes."""
    unmapped = table == "awa_work_item" and row.get("queue") not in mapped
    mod_count = row.get("sys_mod_count", "")
    version = UNMAPPED if unmapped else mod_count
    return NewEvent(
        source=SOURCE,
        source_event_id=f"{table}:{row['sys_id']}:{version}",
        kind=table,
        occurred_at=parse_sn_datetime(row["sys_updated_on"]),
        payload=row,
        record_key=f"{table}:{row['sys_id']}",
        record_version=int(mod_count) if mod_count.isdigit() and not unmapped else None,
    )


class ServiceNowIntake:
    """Polls work items and interactions of the mapped AWA queues into the inbox."""

    name = "servicenow"

    def __init__(
        self,
        api: ServiceNowApi,
        ledger: Ledger,
        *,
        queue_sys_ids: Sequence[str],
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        page: int = PAGE,
    ) -> None:
        self._api = api
        self._recorder = StreamRecorder(ledger)
        self._queues = list(dict.fromkeys(queue_sys_ids))
        self._mapped = set(self._queues)
        self._overlap = timedelta(seconds=overlap_seconds)
        self._page = page

    def streams(self) -> tuple[str, ...]:
        return (stream_of("awa_work_item"), stream_of("interaction"))

    def reset(self) -> None:
        self._recorder.forget(*self.streams())

    def poll(
        self, now: datetime, on_recorded: Callable[[PollResult], None] | None = None
    ) -> list[PollResult]:
        if not self._queues:
            return []
        in_queues = f"queueIN{','.join(self._queues)}"
        work_items = self._poll(
            "awa_work_item", WORK_ITEM_FIELDS, f"{in_queues}^OR{EXTERNAL_QUEUE}", now
        )
        work_items.pass_on(on_recorded)
        interactions = self._poll(
            "interaction", INTERACTION_FIELDS, f"{in_queues}^ORcorrelation_idISNOTEMPTY", now
        )
        return [work_items, interactions.pass_on(on_recorded)]

    def _poll(self, table: str, fields: Sequence[str], condition: str, now: datetime) -> PollResult:
        kind = table
        stream = stream_of(table)
        mark = self._recorder.watermark(stream)
        after: tuple[str, str] | None = None
        if mark is None:
            condition = f"active=true^{condition}"
        elif not mark.settled:
            after = ((mark.at - self._overlap).strftime(SN_TIME), "")
        elif mark.key:
            # settled: strictly after the watermark (the keyset's tie-breaker)
            after = (mark.at.strftime(SN_TIME), mark.key)
        else:
            after = ((mark.at + timedelta(seconds=1)).strftime(SN_TIME), "")
        recorded = duplicates = 0
        newest: datetime | None = None
        while True:
            rows = self._api.changed(table, fields, after, self._page, extra_query=condition)
            if not rows:
                break
            events = [event_of(table, row, self._mapped) for row in rows]
            last = rows[-1]
            after = (last["sys_updated_on"], last["sys_id"])
            at = parse_sn_datetime(last["sys_updated_on"])
            moved = mark is None or (at, last["sys_id"]) > (mark.at, mark.key)
            reached = Watermark(at, last["sys_id"], reached=now) if moved else None
            if moved:
                newest = at
            result = self._recorder.record(stream, events, reached)
            recorded += len(result.inserted)
            duplicates += len(result.duplicates)
            if len(rows) < self._page:
                break
        if mark is None and newest is None:
            # First start and nothing live: from now on, by time (a change made before the
            # next poll must not depend on the first start's active-only query).
            start = now.replace(microsecond=0)
            self._recorder.record(stream, [], Watermark(start, reached=now))
        elif mark is not None and newest is None:
            # nothing newer than the watermark: the overlap window read may settle it
            self._recorder.record(stream, [], mark.after_window(now, self._overlap))
        lag = (now - newest).total_seconds() if newest is not None else None
        poll = PollResult(stream, recorded, duplicates, lag)
        poll.observe(SOURCE, kind)
        return poll
