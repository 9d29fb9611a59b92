"""Polling intake of PendingServiceRouting and AgentWork changes.

Changes are read by ``SystemModstamp`` (keyset ``SystemModstamp, Id``, pages through
``nextRecordsUrl``) with an overlap window; PSR deletions come from ``sobjects/X/deleted``.
Only PSRs of mapped queues are read; AgentWork of every queue is read because transfers
and Omni-Channel routing create AgentWork whose queue is not the mapped one.
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


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "attributes"}


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

    def _since(self, stream: str) -> datetime | None:
        mark = self._recorder.watermark(stream)
        return None if mark is None else mark.at - self._overlap

    def _record(
        self,
        stream: str,
        kind: str,
        rows: Iterable[dict[str, Any]],
        now: datetime,
        key: str,
        *,
        first_start: bool = False,
    ) -> PollResult:
        """Record rows as events, cursor = newest SystemModstamp seen (in one transaction).

        ``first_start``: the stream has no cursor yet; one is set even when nothing was
        read (``now``), so that a change made before the next poll is read by time and not
        lost to the first start's narrower query."""
        events: list[NewEvent] = []
        newest: datetime | None = None
        for row in rows:
            record = _plain(row)
            stamp = parse_sf_datetime(record["SystemModstamp"])
            newest = stamp if newest is None or stamp > newest else newest
            events.append(
                NewEvent(
                    source=SOURCE,
                    source_event_id=f"{kind}:{record['Id']}:{record[key]}",
                    kind=kind,
                    occurred_at=stamp,
                    payload=record,
                )
            )
        reached = Watermark(newest) if newest is not None else None
        if reached is None and first_start:
            reached = Watermark(now)
        result = self._recorder.record(stream, events, reached)
        lag = (now - newest).total_seconds() if newest is not None else None
        poll = PollResult(stream, len(result.inserted), len(result.duplicates), lag)
        poll.observe(SOURCE, kind)
        return poll

    def _poll_psr(self, now: datetime) -> PollResult:
        stream = PSR_STREAM
        if not self._queue_ids:
            return PollResult(stream, 0, 0, None)
        since = self._since(stream)
        queues = ", ".join(soql_string(q) for q in self._queue_ids)
        where = f"QueueId IN ({queues})"
        if since is not None:
            where += f" AND SystemModstamp >= {soql_datetime(since)}"
        columns = ", ".join(["Id", "SystemModstamp", *PSR_FIELDS])
        soql = (
            f"SELECT {columns} FROM PendingServiceRouting WHERE {where} "
            "ORDER BY SystemModstamp ASC, Id ASC"
        )
        return self._record(stream, "psr", self._api.query(soql), now, "SystemModstamp")

    def _poll_agent_work(self, now: datetime) -> PollResult:
        stream = AGENT_WORK_STREAM
        since = self._since(stream)
        columns = ", ".join(["Id", "SystemModstamp", *AGENT_WORK_FIELDS])
        if since is None:
            # First start: only live work matters; closed history would flood the inbox.
            statuses = ", ".join(soql_string(s) for s in OPEN_AGENT_WORK)
            where = f"Status IN ({statuses})"
        else:
            where = f"SystemModstamp >= {soql_datetime(since)}"
        soql = f"SELECT {columns} FROM AgentWork WHERE {where} ORDER BY SystemModstamp ASC, Id ASC"
        # One event per (AgentWork, Status): a status change is what the engine acts on.
        rows = self._api.query(soql)
        return self._record(stream, "agent_work", rows, now, "Status", first_start=since is None)

    def _poll_work_items(self, sobject: str, now: datetime) -> PollResult:
        """Work items that ended since the cursor (first start: from now on)."""
        stream = WORK_ITEM_STREAM.format(sobject=sobject)
        since = self._since(stream)
        first_start = since is None
        if since is None:
            since = now - self._overlap
        statuses = ", ".join(soql_string(s) for s in ENDED_WORK_ITEM_STATUSES[sobject])
        soql = (
            f"SELECT Id, SystemModstamp, Status, OwnerId FROM {sobject} "
            f"WHERE Status IN ({statuses}) AND SystemModstamp >= {soql_datetime(since)} "
            "ORDER BY SystemModstamp ASC, Id ASC"
        )
        rows = self._api.query(soql)
        return self._record(stream, "work_item", rows, now, "Status", first_start=first_start)

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
        events = [
            NewEvent(
                source=SOURCE,
                source_event_id=f"psr_deleted:{record_id}",
                kind="psr_deleted",
                occurred_at=when,
                payload={"Id": record_id, "deletedDate": when.isoformat()},
            )
            for record_id, when in deleted
        ]
        result = self._recorder.record(stream, events, Watermark(now))
        poll = PollResult(stream, len(result.inserted), len(result.duplicates), None)
        poll.observe(SOURCE, "psr_deleted")
        return poll
