"""The middle of the flow: inbox events through the pure engine into the outbox, and
dispatched commands' answers back through the engine — each in one ledger transaction.

This module is the only place that translates between ledger rows and the engine's
model; the engine never sees the database and the ledger never sees a rule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import col, func, select

from bridge import engine
from bridge.domain import (
    Command,
    Correlation,
    CorrelationState,
    Decision,
    Direction,
    Event,
    EventKind,
    EventOutcome,
    Operation,
    Segment,
    SegmentKind,
    SegmentOutcome,
    System,
)
from bridge.domain.mapping import Tables
from bridge.errors import VersionConflict
from bridge.ledger import rows
from bridge.ledger.store import Ledger, LedgerTx, NewCommand
from bridge.logging import bind_correlation

log = logging.getLogger(__name__)

# Columns the engine's Correlation and the ledger's correlation share.
_CORRELATION_COLUMNS = (
    "sf_work_item_id",
    "sf_psr_id",
    "sf_agent_work_id",
    "sf_conversation_id",
    "sf_queue_id",
    "sf_service_channel_id",
    "sf_user_id",
    "sn_document_table",
    "sn_document_sys_id",
    "sn_work_item_sys_id",
    "sn_queue_sys_id",
    "sn_user_sys_id",
)
_SEGMENT_COLUMNS = (
    "sf_queue_id",
    "sn_queue_sys_id",
    "sf_user_id",
    "sn_user_sys_id",
    "sn_work_item_sys_id",
    "sf_agent_work_id",
    "sf_psr_id",
    "closed_at",
)
VERSION_RETRIES = 5
# Inbox events processed in one ledger transaction.
BATCH = 50
# How long an uncorrelated Salesforce event may wait for an in-flight POST /route's answer.
ROUTE_ANSWER_WAIT_SECONDS = 30.0


# -- ledger rows ↔ engine model -------------------------------------------------------------


# Which system a record of each kind comes from (reconcilers feed records of both).
_SYSTEM_OF = {
    EventKind.PSR: System.SALESFORCE,
    EventKind.PSR_DELETED: System.SALESFORCE,
    EventKind.AGENT_WORK: System.SALESFORCE,
    EventKind.WORK_ITEM: System.SALESFORCE,
    EventKind.AWA_WORK_ITEM: System.SERVICENOW,
    EventKind.INTERACTION: System.SERVICENOW,
}


def to_event(row: rows.InboxEvent) -> Event:
    """An inbox row as the engine's Event (ValueError on a source or kind it cannot be)."""
    kind = EventKind(row.kind)
    return Event(
        source=System(row.source) if row.source != "reconciler" else _SYSTEM_OF[kind],
        kind=kind,
        source_event_id=row.source_event_id,
        occurred_at=row.occurred_at,
        record=row.payload,
    )


def to_segment(row: rows.Segment) -> Segment:
    return Segment(
        seq=row.seq,
        external_segment_id=row.external_segment_id,
        kind=SegmentKind(row.kind),
        opened_at=row.opened_at,
        outcome=SegmentOutcome(row.outcome) if row.outcome else None,
        detail=dict(row.detail or {}),
        **{name: getattr(row, name) for name in _SEGMENT_COLUMNS},
    )


def to_correlation(row: rows.Correlation, segments: Sequence[rows.Segment]) -> Correlation:
    return Correlation(
        id=row.id,
        direction=Direction(row.direction),
        state=CorrelationState(row.state),
        version=row.version,
        data=dict(row.data or {}),
        segments=tuple(to_segment(s) for s in sorted(segments, key=lambda s: s.seq)),
        **{name: getattr(row, name) for name in _CORRELATION_COLUMNS},
    )


def to_command(row: rows.OutboxCommand, segment_seq: int | None = None) -> Command:
    return Command(
        system=System(row.system),
        operation=Operation(row.operation),
        params=dict(row.payload or {}),
        idempotency_key=row.idempotency_key,
        segment_seq=segment_seq,
    )


def _segment_columns(segment: Segment) -> dict[str, Any]:
    cols: dict[str, Any] = {name: getattr(segment, name) for name in _SEGMENT_COLUMNS}
    cols["outcome"] = segment.outcome.value if segment.outcome else None
    cols["detail"] = dict(segment.detail)
    return cols


@dataclass
class Persisted:
    """What one decision wrote."""

    correlation_id: str | None = None
    commands: list[rows.OutboxCommand] = field(default_factory=list)


def persist(
    tx: LedgerTx,
    decision: Decision,
    before: rows.Correlation | None,
    *,
    caused_by_event_id: int | None = None,
    segments: Sequence[rows.Segment] | None = None,
) -> Persisted:
    """Write a decision: the correlation (optimistic version), segments, commands.

    ``segments``: the correlation's segment rows as read in this transaction (saves
    reading them again)."""
    corr = decision.correlation
    if corr is None:
        return Persisted()
    cols: dict[str, Any] = {name: getattr(corr, name) for name in _CORRELATION_COLUMNS}
    cols["state"] = corr.state.value
    cols["data"] = dict(corr.data)
    if corr.state.is_final:
        cols["closed_at"] = before.closed_at if before and before.closed_at else rows.utcnow()
    if before is None:
        row = tx.create_correlation(id=corr.id, direction=corr.direction.value, **cols)
    else:
        changed = {k: v for k, v in cols.items() if getattr(before, k) != v}
        row = tx.update_correlation(before, before.version, **changed) if changed else before
    if segments is None:
        segments = tx.segments(row.id) if before is not None else []
    by_seq = {s.seq: s for s in segments}
    for segment in decision.segments_added:
        added = tx.add_segment(
            row.id,
            external_segment_id=segment.external_segment_id,
            kind=segment.kind.value,
            opened_at=segment.opened_at,
            **_segment_columns(segment),
        )
        if added.seq != segment.seq:
            raise VersionConflict(
                f"correlation {row.id}: segment {segment.seq} was written concurrently"
            )
        by_seq[added.seq] = added
    for segment in decision.segments_updated:
        tx.update_segment(by_seq[segment.seq], **_segment_columns(segment))
    commands = tx.enqueue(
        *(
            NewCommand(
                idempotency_key=c.idempotency_key,
                correlation_id=row.id,
                system=c.system.value,
                operation=c.operation.value,
                payload=dict(c.params),
                segment_id=by_seq[c.segment_seq].id if c.segment_seq in by_seq else None,
                caused_by_event_id=caused_by_event_id,
            )
            for c in decision.commands
        )
    )
    return Persisted(row.id, commands)


def _event_status(outcome: EventOutcome) -> str:
    return {
        EventOutcome.PROCESSED: "processed",
        EventOutcome.ECHO: "echo",
        EventOutcome.SKIPPED: "skipped",
        EventOutcome.ERROR: "error",
    }[outcome]


# -- inbox → engine → outbox ----------------------------------------------------------------


@dataclass
class ProcessStats:
    processed: int = 0
    echoes: int = 0
    skipped: int = 0
    errors: int = 0
    commands: int = 0
    deferred: int = 0

    def count(self, status: str) -> None:
        if status == "processed":
            self.processed += 1
        elif status == "echo":
            self.echoes += 1
        elif status == "skipped":
            self.skipped += 1
        elif status == "deferred":
            self.deferred += 1
        else:
            self.errors += 1

    def add(self, other: ProcessStats) -> None:
        for name in ("processed", "echoes", "skipped", "errors", "commands", "deferred"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Processor:
    """Takes pending inbox events in order and applies the engine's decisions."""

    def __init__(self, ledger: Ledger, tables: Tables) -> None:
        self._ledger = ledger
        self._tables = tables

    def process_pending(self, limit: int = 500) -> ProcessStats:
        """Pending events, oldest first, ``BATCH`` to a transaction (a commit per event
        costs more than the event). A batch that fails as a whole (a correlation changed
        under it) is rolled back and its events are taken one by one, with retries."""
        stats = ProcessStats()
        pending = self._ledger.pending_events(limit)
        for start in range(0, len(pending), BATCH):
            chunk = pending[start : start + BATCH]
            try:
                with self._ledger.transaction() as tx:
                    results = [self._apply(tx, row) for row in chunk]
            except VersionConflict:
                results = [self.process(row) for row in chunk]
            for status, commands in results:
                stats.count(status)
                stats.commands += commands
        return stats

    def process(self, row: rows.InboxEvent) -> tuple[str, int]:
        """One event in one transaction; returns (event status, commands enqueued)."""
        for _ in range(VERSION_RETRIES):
            try:
                with self._ledger.transaction() as tx:
                    return self._apply(tx, row)
            except VersionConflict:
                log.info("event %s: correlation changed meanwhile; again", row.source_event_id)
        assert row.id is not None
        with self._ledger.transaction() as tx:
            tx.mark_event(row.id, "error", error="correlation kept changing; gave up")
        return "error", 0

    def _apply(self, tx: LedgerTx, row: rows.InboxEvent) -> tuple[str, int]:
        """One event in the caller's transaction: (event status, commands enqueued)."""
        assert row.id is not None
        try:
            event = to_event(row)
        except (ValueError, KeyError) as exc:
            tx.mark_event(row.id, "error", error=f"malformed event: {exc}")
            return "error", 0
        before = self._find(tx, event)
        if before is None and self._awaiting_route(tx, row):
            return "deferred", 0
        segments = tx.segments(before.id) if before else []
        current = to_correlation(before, segments) if before else None
        with bind_correlation(before.id if before else None):
            decision = engine.translate(event, current, self._tables)
            done = persist(tx, decision, before, caused_by_event_id=row.id, segments=segments)
            status = _event_status(decision.outcome)
            error = decision.reason if status in ("error", "skipped") else None
            # an event the engine refused still belongs to the conversation it names
            owner = done.correlation_id or (before.id if before else None)
            tx.mark_event(row.id, status, error=error, correlation_id=owner)
            if status == "error":
                log.warning("event %s: %s", row.source_event_id, decision.reason)
        return status, len(done.commands)

    @staticmethod
    def _awaiting_route(tx: LedgerTx, row: rows.InboxEvent) -> bool:
        """A Salesforce event that matches no conversation while a ``POST /route`` is still
        out: Omni-Channel may assign the work before the route's answer (which names the
        PSR and work item) is recorded. Such an event waits for the answer, not for ever."""
        if row.source != System.SALESFORCE.value:
            return False
        if (rows.utcnow() - row.received_at).total_seconds() > ROUTE_ANSWER_WAIT_SECONDS:
            return False
        in_flight = tx.session.scalar(
            select(func.count())
            .select_from(rows.OutboxCommand)
            .where(
                col(rows.OutboxCommand.status).in_(rows.UNFINISHED_COMMAND_STATUSES),
                col(rows.OutboxCommand.operation) == Operation.ROUTE.value,
            )
        )
        return bool(in_flight)

    @staticmethod
    def _find(tx: LedgerTx, event: Event) -> rows.Correlation | None:
        for key in engine.correlation_keys(event):
            found = tx.find_correlation(key)
            if found is not None:
                return found
        return None


def apply_answer(tx: LedgerTx, command: rows.OutboxCommand, answer: dict[str, Any]) -> Persisted:
    """A dispatched command's answer through the engine, in the caller's transaction."""
    before = tx.get_correlation(command.correlation_id)
    if before is None:
        return Persisted()
    segments = tx.segments(before.id)
    seq = next((s.seq for s in segments if s.id == command.segment_id), None)
    current = to_correlation(before, segments)
    decision = engine.apply_result(current, to_command(command, seq), answer)
    if decision.outcome is EventOutcome.ERROR:
        log.warning("command %s: %s", command.id, decision.reason)
        return Persisted(before.id)
    return persist(tx, decision, before, segments=segments)
