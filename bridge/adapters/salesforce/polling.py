"""Polling intake of PendingServiceRouting and AgentWork changes.

Changes are read by ``SystemModstamp`` (keyset ``SystemModstamp, Id``, pages through
``nextRecordsUrl``) with an overlap window; PSR deletions come from ``sobjects/X/deleted``.
PSRs of mapped queues are read, and those of every external-routing queue (``RoutingModel =
'ExternalRouting'``): work waiting for an external router on a queue the crosswalk does not
map is refused in the open, not left unseen. Such a PSR is recorded once (its event id
names the PSR, not its change), so that it is one refusal however often it changes.
AgentWork of every queue is read because transfers and Omni-Channel routing create
AgentWork whose queue is not the mapped one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from bridge.adapters.salesforce.client import (
    SalesforceApi,
    parse_sf_datetime,
    soql_datetime,
    soql_string,
)
from bridge.flow.intake import DEFAULT_OVERLAP_SECONDS, PollResult, StreamRecorder, Watermark
from bridge.ledger.ports import Ledger, NewEvent

SOURCE = "salesforce"
PSR_STREAM = "salesforce:PendingServiceRouting"
PSR_DELETED_STREAM = "salesforce:PendingServiceRouting:deleted"
AGENT_WORK_STREAM = "salesforce:AgentWork"
WORK_ITEM_STREAM = "salesforce:WorkItem:{sobject}"
# Work item statuses that end a conversation: a customer who abandons before anyone
# accepted shows only here (no AgentWork exists yet), so ended work items are read.
ENDED_WORK_ITEM_STATUSES = {"MessagingSession": ("Ended",), "Case": ("Closed",)}
# sobjects/X/deleted refuses windows starting more than 30 days back
DELETED_RETENTION = timedelta(days=30)

PSR_FIELDS = (
    "Serial",
    "QueueId",
    "WorkItemId",
    "ServiceChannelId",
    "IsPushed",
    "IsReadyForRouting",
    "IsTransfer",
    "LastDeclinedAgentSession",
    "RoutingModel",
    "RoutingType",
    "PushTimeout",
    "CapacityWeight",
    "CreatedDate",
)
AGENT_WORK_FIELDS = (
    "Status",
    "UserId",
    "WorkItemId",
    "ServiceChannelId",
    "PendingServiceRoutingId",
    "OriginalQueueId",
    "DeclineReason",
    "CapacityWeight",
    "CreatedById",
    "CreatedDate",
    "AcceptDateTime",
    "CloseDateTime",
)
OPEN_AGENT_WORK = ("Assigned", "Opened")
# PSRs of this routing model wait for an external router (the guide's PushTopic filter).
EXTERNAL_ROUTING = "ExternalRouting"
# The last part of the event id of a PSR on a queue the crosswalk does not map.
UNMAPPED = "unmapped"
# Records read by id per query (a change stream's GAP event can name many).
BY_ID_BATCH = 200


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "attributes"}


# The fields each kind of event carries (what the polls read).
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "psr": ("Id", "SystemModstamp", *PSR_FIELDS),
    "agent_work": ("Id", "SystemModstamp", *AGENT_WORK_FIELDS),
    "work_item": ("Id", "SystemModstamp", "Status", "OwnerId"),
}


def row_event(
    kind: str,
    record: dict[str, Any],
    version: str,
    *,
    once: Callable[[dict[str, Any]], bool] | None = None,
) -> NewEvent:
    """A record (as a query or a change stream shows it) as an inbox event; its id names
    the record and ``version`` (or ``unmapped`` when ``once`` says it is recorded once)."""
    stamp = parse_sf_datetime(record["SystemModstamp"])
    if once is not None and once(record):
        version = UNMAPPED
    return NewEvent(
        source=SOURCE,
        source_event_id=f"{kind}:{record['Id']}:{version}",
        kind=kind,
        occurred_at=stamp,
        payload=record,
    )


def deleted_event(record_id: str, when: datetime) -> NewEvent:
    """A PSR deletion as an inbox event (one per PSR, whoever saw it)."""
    return NewEvent(
        source=SOURCE,
        source_event_id=f"psr_deleted:{record_id}",
        kind="psr_deleted",
        occurred_at=when,
        payload={"Id": record_id, "deletedDate": when.isoformat()},
    )


class SalesforceIntake:
    """Polls PSRs (and their deletions) and AgentWork into the inbox."""

    name = "salesforce"

    def __init__(
        self,
        api: SalesforceApi,
        ledger: Ledger,
        *,
        queue_ids: Sequence[str],
        work_item_types: Sequence[str] = (),
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    ) -> None:
        self._api = api
        self._recorder = StreamRecorder(ledger)
        self._queue_ids = list(dict.fromkeys(queue_ids))
        # 15-character keys: the crosswalk may name a queue in either form
        self._mapped = {q[:15] for q in self._queue_ids}
        self._work_item_types = [
            t for t in dict.fromkeys(work_item_types) if t in ENDED_WORK_ITEM_STATUSES
        ]
        self._overlap = timedelta(seconds=overlap_seconds)

    def streams(self) -> tuple[str, ...]:
        work_items = tuple(WORK_ITEM_STREAM.format(sobject=t) for t in self._work_item_types)
        return (PSR_STREAM, PSR_DELETED_STREAM, AGENT_WORK_STREAM, *work_items)

    def reset(self) -> None:
        self._recorder.forget(*self.streams())

    def poll(
        self, now: datetime, on_recorded: Callable[[PollResult], None] | None = None
    ) -> list[PollResult]:
        # AgentWork before PSR deletions: an acceptance reads as Opened, then PSR deleted
        reads: list[Callable[[], PollResult]] = [
            lambda: self._poll_psr(now),
            lambda: self._poll_agent_work(now),
            lambda: self._poll_deleted_psr(now),
            *(partial(self._poll_work_items, sobject, now) for sobject in self._work_item_types),
        ]
        return [read().pass_on(on_recorded) for read in reads]

    def _window(self, stream: str) -> tuple[Watermark | None, str | None]:
        """The stream's watermark and the SOQL condition on ``SystemModstamp`` of what to
        read (None, None: first start): the overlap window before the watermark until it
        is settled, then strictly after it (SOQL compares whole seconds; a change made
        after the settling carries a later second)."""
        mark = self._recorder.watermark(stream)
        if mark is None:
            return None, None
        if mark.settled:
            after = mark.at.replace(microsecond=0) + timedelta(seconds=1)
            return mark, f"SystemModstamp >= {soql_datetime(after)}"
        return mark, f"SystemModstamp >= {soql_datetime(mark.at - self._overlap)}"

    def _record(
        self,
        stream: str,
        kind: str,
        rows: Iterable[dict[str, Any]],
        now: datetime,
        key: str,
        *,
        mark: Watermark | None,
        first_start: bool = False,
        once: Callable[[dict[str, Any]], bool] | None = None,
    ) -> PollResult:
        """Record rows as events, cursor = newest SystemModstamp seen (in one transaction).

        ``mark``: the watermark the read started from; nothing newer read, it may settle.
        ``first_start``: the stream has no cursor yet; one is set even when nothing was
        read (``now``), so that a change made before the next poll is read by time and not
        lost to the first start's narrower query. ``once``: the rows recorded once per
        record, whatever changes (the event id ends in ``unmapped``, not in ``key``)."""
        events: list[NewEvent] = []
        newest: datetime | None = None
        for row in rows:
            record = _plain(row)
            event = row_event(kind, record, str(record[key]), once=once)
            newest = event.occurred_at if newest is None or event.occurred_at > newest else newest
            events.append(event)
        reached: Watermark | None = None
        if newest is not None and (mark is None or newest > mark.at):
            reached = Watermark(newest, reached=now)
        elif mark is not None:
            reached = mark.after_window(now, self._overlap)
        elif first_start:
            reached = Watermark(now, reached=now)
        result = self._recorder.record(stream, events, reached)
        lag = (now - newest).total_seconds() if newest is not None else None
        poll = PollResult(stream, len(result.inserted), len(result.duplicates), lag)
        poll.observe(SOURCE, kind)
        return poll

    def _poll_psr(self, now: datetime) -> PollResult:
        stream = PSR_STREAM
        mark, changed = self._window(stream)
        # one query as before: the mapped queues (an Omni-routed queue of SN -> SF work
        # too) or any external-routing queue
        external = f"RoutingModel = {soql_string(EXTERNAL_ROUTING)}"
        if self._queue_ids:
            queues = ", ".join(soql_string(q) for q in self._queue_ids)
            where = f"(QueueId IN ({queues}) OR {external})"
        else:
            where = external
        if changed is not None:
            where += f" AND {changed}"
        columns = ", ".join(["Id", "SystemModstamp", *PSR_FIELDS])
        soql = (
            f"SELECT {columns} FROM PendingServiceRouting WHERE {where} "
            "ORDER BY SystemModstamp ASC, Id ASC"
        )
        rows = self._api.query(soql)
        return self._record(
            stream, "psr", rows, now, "SystemModstamp", mark=mark, once=self._unmapped
        )

    # -- for the change streams: the same events, from change events and reads by id ------

    @property
    def work_item_types(self) -> tuple[str, ...]:
        """The work item objects whose end is read (those of the mapped channels)."""
        return tuple(self._work_item_types)

    def kind_of(self, sobject: str) -> str | None:
        """The event kind the polls record for changes of ``sobject`` (None: none)."""
        if sobject in self._work_item_types:
            return "work_item"
        return {"PendingServiceRouting": "psr", "AgentWork": "agent_work"}.get(sobject)

    def stream_event(self, sobject: str, record: dict[str, Any], version: str) -> NewEvent | None:
        """What the polls would record for this record of ``sobject`` (None: nothing, e.g.
        a work item that has not ended), its id naming ``version`` of the change."""
        kind = self.kind_of(sobject)
        if kind is None:
            return None
        if kind == "work_item" and record.get("Status") not in ENDED_WORK_ITEM_STATUSES[sobject]:
            return None
        once = self._unmapped if kind == "psr" else None
        return row_event(kind, _plain(record), version, once=once)

    def read_by_id(self, sobject: str, record_ids: Sequence[str], now: datetime) -> list[NewEvent]:
        """The records as they are now, as the polls record them (a change stream's GAP
        event names records whose changes it could not send); a PSR that is gone is a
        deletion."""
        kind = self.kind_of(sobject)
        if kind is None or not record_ids:
            return []
        columns = ", ".join(KIND_FIELDS[kind])
        wanted = list(dict.fromkeys(record_ids))
        rows: list[dict[str, Any]] = []
        for start in range(0, len(wanted), BY_ID_BATCH):  # a SOQL statement has a length limit
            ids = ", ".join(soql_string(i) for i in wanted[start : start + BY_ID_BATCH])
            soql = f"SELECT {columns} FROM {sobject} WHERE Id IN ({ids})"
            rows += [_plain(r) for r in self._api.query(soql)]
        key = "SystemModstamp" if kind == "psr" else "Status"
        events = [e for r in rows if (e := self.stream_event(sobject, r, str(r[key]))) is not None]
        if kind == "psr":
            found = {str(r["Id"])[:15] for r in rows}
            events += [deleted_event(i, now) for i in wanted if i[:15] not in found]
        return events

    def _unmapped(self, psr: dict[str, Any]) -> bool:
        queue = psr.get("QueueId")
        return not isinstance(queue, str) or queue[:15] not in self._mapped

    def _poll_agent_work(self, now: datetime) -> PollResult:
        stream = AGENT_WORK_STREAM
        mark, changed = self._window(stream)
        columns = ", ".join(["Id", "SystemModstamp", *AGENT_WORK_FIELDS])
        if changed is None:
            # First start: only live work matters; closed history would flood the inbox.
            statuses = ", ".join(soql_string(s) for s in OPEN_AGENT_WORK)
            where = f"Status IN ({statuses})"
        else:
            where = changed
        soql = f"SELECT {columns} FROM AgentWork WHERE {where} ORDER BY SystemModstamp ASC, Id ASC"
        # One event per (AgentWork, Status): a status change is what the engine acts on.
        rows = self._api.query(soql)
        return self._record(
            stream, "agent_work", rows, now, "Status", mark=mark, first_start=mark is None
        )

    def _poll_work_items(self, sobject: str, now: datetime) -> PollResult:
        """Work items that ended since the cursor (first start: from now on)."""
        stream = WORK_ITEM_STREAM.format(sobject=sobject)
        mark, changed = self._window(stream)
        if changed is None:
            changed = f"SystemModstamp >= {soql_datetime(now - self._overlap)}"
        statuses = ", ".join(soql_string(s) for s in ENDED_WORK_ITEM_STATUSES[sobject])
        soql = (
            f"SELECT Id, SystemModstamp, Status, OwnerId FROM {sobject} "
            f"WHERE Status IN ({statuses}) AND {changed} "
            "ORDER BY SystemModstamp ASC, Id ASC"
        )
        rows = self._api.query(soql)
        return self._record(
            stream, "work_item", rows, now, "Status", mark=mark, first_start=mark is None
        )

    def _poll_deleted_psr(self, now: datetime) -> PollResult:
        stream = PSR_DELETED_STREAM
        mark = self._recorder.watermark(stream)
        # The org covers deletions up to the last whole minute (latestDateCovered): start a
        # minute back from the cursor; the inbox drops repeats. After a long outage, start
        # as far back as the org allows (deletions older than that are gone for good; the
        # reconcilers find what they left behind).
        start = mark.at - timedelta(minutes=1) if mark is not None else now - timedelta(minutes=5)
        start = max(start, now - DELETED_RETENTION + timedelta(minutes=1))
        # the API reads whole seconds: end at the next one so that a deletion of this very
        # second is in the window
        end = now.replace(microsecond=0) + timedelta(seconds=1)
        deleted = self._api.deleted("PendingServiceRouting", start, end)
        events = [deleted_event(record_id, when) for record_id, when in deleted]
        result = self._recorder.record(stream, events, Watermark(now))
        poll = PollResult(stream, len(result.inserted), len(result.duplicates), None)
        poll.observe(SOURCE, "psr_deleted")
        return poll
