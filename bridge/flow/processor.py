"""The middle of the flow: inbox events through the pure engine into the outbox, each
batch in one ledger transaction (the events' outcomes, the conversations' new state and
the commands that follow commit together)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bridge import engine
from bridge.domain import (
    ClaimedCommand,
    Command,
    Event,
    EventKind,
    EventOutcome,
    System,
)
from bridge.domain.mapping import Tables
from bridge.errors import VersionConflict
from bridge.flow.counts import Counts
from bridge.ledger.ports import Ledger, LedgerTx, PendingEvent, Saved
from bridge.ledger.rows import utcnow
from bridge.logging import bind_correlation

log = logging.getLogger(__name__)

VERSION_RETRIES = 5
# Inbox events processed in one ledger transaction.
BATCH = 50
# How long an uncorrelated Salesforce event may wait for an in-flight POST /route's answer.
ROUTE_ANSWER_WAIT_SECONDS = 30.0

# Which system a record of each kind comes from (reconcilers feed records of both).
_SYSTEM_OF = {
    EventKind.PSR: System.SALESFORCE,
    EventKind.PSR_DELETED: System.SALESFORCE,
    EventKind.AGENT_WORK: System.SALESFORCE,
    EventKind.WORK_ITEM: System.SALESFORCE,
    EventKind.AWA_WORK_ITEM: System.SERVICENOW,
    EventKind.INTERACTION: System.SERVICENOW,
}
_EVENT_STATUS = {
    EventOutcome.PROCESSED: "processed",
    EventOutcome.ECHO: "echo",
    EventOutcome.SKIPPED: "skipped",
    EventOutcome.ERROR: "error",
}


def to_event(row: PendingEvent) -> Event:
    """An inbox event as the engine's Event (ValueError on a source or kind it cannot be)."""
    kind = EventKind(row.kind)
    return Event(
        source=System(row.source) if row.source != "reconciler" else _SYSTEM_OF[kind],
        kind=kind,
        source_event_id=row.source_event_id,
        occurred_at=row.occurred_at,
        record=row.payload,
        from_reconciler=row.source == "reconciler",
    )


@dataclass
class ProcessStats(Counts):
    processed: int = 0
    echoes: int = 0
    skipped: int = 0
    errors: int = 0
    commands: int = 0
    deferred: int = 0
    # commands claimed for the dispatcher in the transaction that enqueued them
    handed: list[ClaimedCommand] = field(default_factory=list)

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


class _Batch:
    """What one transaction's events share: whether a ``POST /route`` is out (read once,
    and known to be true once this batch enqueued one)."""

    def __init__(self, tx: LedgerTx) -> None:
        self.tx = tx
        self._route_in_flight: bool | None = None
        # conversations this batch enqueued commands for, in order
        self.commanded: dict[str, None] = {}

    def route_in_flight(self) -> bool:
        if self._route_in_flight is None:
            self._route_in_flight = self.tx.outbox.route_in_flight()
        return self._route_in_flight

    def saved(self, saved: Saved) -> None:
        if saved.enqueued_route:
            self._route_in_flight = True
        if saved.command_ids and saved.correlation_id:
            self.commanded.setdefault(saved.correlation_id, None)


class Handoff(Protocol):
    """Who takes the commands a batch enqueued, claimed in the batch's own transaction
    (the dispatcher: no claim transaction of its own for new work)."""

    def take(self, tx: LedgerTx, correlation_ids: Sequence[str]) -> list[ClaimedCommand]: ...


class Processor:
    """Takes pending inbox events in order and applies the engine's decisions."""

    def __init__(
        self, ledger: Ledger, tables: Tables, *, now: Callable[[], datetime] = utcnow
    ) -> None:
        self._ledger = ledger
        self._tables = tables
        self._now = now

    def process_pending(
        self, limit: int = 500, *, handoff: Handoff | None = None, news: bool = False
    ) -> ProcessStats:
        """Pending events, oldest first, ``BATCH`` to a transaction (a commit per event
        costs more than the event), read in the transaction that processes them. A batch
        that fails as a whole (a correlation changed under it) is rolled back and its
        events are taken one by one, with retries. Deferred events stay pending for the
        next call. ``handoff`` claims the commands a batch enqueued in the batch's
        transaction (they are in ``stats.handed``); ``news``: the caller knows events
        are waiting (an intake just recorded some), so the idle check is skipped."""
        stats = ProcessStats()
        after = 0
        while limit > 0:
            size = min(BATCH, limit)
            if not news:
                # A read first: an idle inbox costs no write transaction (on SQLite a
                # writer takes the database lock even when it ends up writing nothing).
                with self._ledger.reading() as tx:
                    if not tx.inbox.pending(1, after=after):
                        break
            news = False
            try:
                with self._ledger.transaction() as tx:
                    pending = tx.inbox.pending(size, after=after)
                    batch = _Batch(tx)
                    results = [self._apply(batch, row) for row in pending]
                    if handoff is not None and batch.commanded:
                        stats.handed += handoff.take(tx, list(batch.commanded))
            except VersionConflict:
                with self._ledger.transaction() as tx:
                    pending = tx.inbox.pending(size, after=after)
                results = [self.process(row) for row in pending]
            for status, commands in results:
                stats.count(status)
                stats.commands += commands
            if len(pending) < size:
                break
            after, limit = pending[-1].id, limit - len(pending)
        return stats

    def process(self, row: PendingEvent) -> tuple[str, int]:
        """One event in one transaction; returns (event status, commands enqueued)."""
        for _ in range(VERSION_RETRIES):
            try:
                with self._ledger.transaction() as tx:
                    return self._apply(_Batch(tx), row)
            except VersionConflict:
                log.info("event %s: correlation changed meanwhile; again", row.source_event_id)
        with self._ledger.transaction() as tx:
            tx.inbox.mark([row.id], "error", error="correlation kept changing; gave up")
        return "error", 0

    def _apply(self, batch: _Batch, row: PendingEvent) -> tuple[str, int]:
        """One event in the batch's transaction: (event status, commands enqueued)."""
        tx = batch.tx
        try:
            event = to_event(row)
        except (ValueError, KeyError) as exc:
            tx.inbox.mark([row.id], "error", error=f"malformed event: {exc}")
            return "error", 0
        before = tx.correlations.find(engine.correlation_keys(event))
        if before is None and self._awaiting_route(batch, row):
            return "deferred", 0
        with bind_correlation(before.id if before else None):
            decision = engine.translate(event, before, self._tables)
            saved = tx.correlations.save(decision, before, caused_by_event_id=row.id)
            batch.saved(saved)
            status = _EVENT_STATUS[decision.outcome]
            error = decision.reason if status in ("error", "skipped") else None
            # an event the engine refused still belongs to the conversation it names
            owner = saved.correlation_id or (before.id if before else None)
            tx.inbox.mark([row.id], status, error=error, correlation_id=owner)
            if status == "error":
                log.warning("event %s: %s", row.source_event_id, decision.reason)
        return status, len(saved.command_ids)

    def _awaiting_route(self, batch: _Batch, row: PendingEvent) -> bool:
        """A Salesforce event that matches no conversation while a ``POST /route`` is still
        out: Omni-Channel may assign the work before the route's answer (which names the
        PSR and work item) is recorded. Such an event waits for the answer, not for ever."""
        if row.source != System.SALESFORCE.value:
            return False
        if (self._now() - row.received_at).total_seconds() > ROUTE_ANSWER_WAIT_SECONDS:
            return False
        return batch.route_in_flight()


def to_command(claimed: ClaimedCommand) -> Command:
    return Command(
        system=claimed.system,
        operation=claimed.operation,
        params=dict(claimed.params),
        idempotency_key="",
        segment_seq=claimed.segment_seq,
    )


def apply_answer(tx: LedgerTx, command: ClaimedCommand, answer: Mapping[str, Any]) -> Saved:
    """A dispatched command's answer through the engine, in the caller's transaction."""
    before = tx.correlations.get(command.correlation_id)
    if before is None:
        return Saved(None)
    decision = engine.apply_result(before, to_command(command), answer)
    if decision.outcome is EventOutcome.ERROR:
        log.warning("command %s: %s", command.id, decision.reason)
        return Saved(before.id)
    return tx.correlations.save(decision, before)
