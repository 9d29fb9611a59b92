"""The ledger in memory: the roles of ``bridge.ledger.ports`` over plain dictionaries, for
engine, processor and dispatcher tests without a database. Same contract as the SQL
ledger: repeats dropped by key, optimistic versions, each conversation's commands in
order, a transaction all or nothing (a copy of the state is restored on error)."""

from __future__ import annotations

import copy
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from bridge.domain import ClaimedCommand, Correlation, Decision, Operation, System
from bridge.errors import LedgerError, NotFound, VersionConflict
from bridge.ledger.ports import (
    IN_FLIGHT,
    CommandState,
    Enqueued,
    EventState,
    NewCommand,
    NewEvent,
    PendingEvent,
    RecordResult,
    Saved,
    outcome_was_unknown,
    stale_reason,
)
from bridge.ledger.rows import EVENT_STATUSES, UNFINISHED_COMMAND_STATUSES, utcnow

# The ids of a correlation (and of its segments) that find it.
_CORRELATION_KEYS = (
    "sf_psr_id",
    "sf_work_item_id",
    "sf_agent_work_id",
    "sf_conversation_id",
    "sn_document_sys_id",
    "sn_work_item_sys_id",
)
_SEGMENT_KEYS = ("external_segment_id", "sf_agent_work_id", "sn_work_item_sys_id", "sf_psr_id")


@dataclass
class _Event:
    pending: PendingEvent
    status: str = "pending"
    error: str | None = None
    record_key: str | None = None
    record_version: int | None = None


@dataclass
class _Command:
    id: str
    new: NewCommand
    created: int
    created_at: datetime
    segment_seq: int | None
    status: str = "pending"
    attempts: int = 0
    error: str | None = None
    response: dict[str, Any] | None = None
    lease_until: datetime | None = None
    next_attempt_at: datetime | None = None
    claimed_by: str | None = None


@dataclass
class _State:
    events: dict[int, _Event] = field(default_factory=dict)
    event_keys: set[tuple[str, str]] = field(default_factory=set)
    cursors: dict[str, str] = field(default_factory=dict)
    correlations: dict[str, Correlation] = field(default_factory=dict)
    commands: dict[str, _Command] = field(default_factory=dict)
    command_keys: dict[str, str] = field(default_factory=dict)


class MemoryTx:
    def __init__(self, state: _State, clock: Callable[[], datetime], order: Iterator[int]) -> None:
        self.inbox = _Inbox(state, clock, order)
        self.cursors = _Cursors(state)
        self.outbox = _Outbox(state, clock, order)
        self.correlations = _Correlations(state, self.outbox)


class MemoryLedger:
    def __init__(self, *, now: Callable[[], datetime] = utcnow) -> None:
        self.clock = now
        self._state = _State()
        self._lock = threading.RLock()
        self._order = itertools.count(1)

    @contextmanager
    def transaction(self) -> Iterator[MemoryTx]:
        with self._lock:
            saved = copy.deepcopy(self._state)
            try:
                yield MemoryTx(self._state, self.clock, self._order)
            except BaseException:
                self._state = saved
                raise

    def reading(self) -> AbstractContextManager[MemoryTx]:
        return self.transaction()

    def close(self) -> None:
        pass

    # what tests look at ---------------------------------------------------------------
    def correlations(self) -> list[Correlation]:
        return list(self._state.correlations.values())

    def commands(self) -> list[CommandState]:
        return [
            _state_of(c) for c in sorted(self._state.commands.values(), key=lambda c: c.created)
        ]

    def events(self) -> list[EventState]:
        return [
            EventState(i, e.pending.source_event_id, e.status, e.error)
            for i, e in sorted(self._state.events.items())
        ]


def _state_of(c: _Command) -> CommandState:
    return CommandState(
        c.id,
        c.new.idempotency_key,
        c.new.correlation_id,
        c.new.operation,
        c.status,
        c.attempts,
        c.error,
        c.new.caused_by_event_id,
    )


class _Inbox:
    def __init__(self, state: _State, clock: Callable[[], datetime], order: Iterator[int]) -> None:
        self._s = state
        self._clock = clock
        self._order = order

    def _held(self, source: str, record_key: str) -> int | None:
        versions = [
            e.record_version
            for e in self._s.events.values()
            if e.record_key == record_key
            and e.record_version is not None
            and e.pending.source == source
        ]
        return max(versions, default=None)

    def record(self, stream: str, events: Sequence[NewEvent], cursor: str | None) -> RecordResult:
        inserted: list[int] = []
        duplicates: list[str] = []
        stale: list[str] = []
        held = {
            (e.source, e.record_key): self._held(e.source, e.record_key)
            for e in events
            if e.record_key and e.record_version is not None
        }
        for e in events:
            key = (e.source, e.source_event_id)
            if key in self._s.event_keys:
                duplicates.append(e.source_event_id)
                continue
            self._s.event_keys.add(key)
            event_id = next(self._order)
            status, error = e.status, e.error
            record = (e.source, e.record_key or "")
            newest = held.get(record)
            if e.record_version is not None and newest is not None and e.record_version < newest:
                status, error = "skipped", stale_reason(e, newest)
                stale.append(e.source_event_id)
            elif e.record_version is not None and e.record_key:
                held[record] = e.record_version  # a later event of this batch is compared too
            self._s.events[event_id] = _Event(
                PendingEvent(
                    id=event_id,
                    source=e.source,
                    stream=stream,
                    source_event_id=e.source_event_id,
                    kind=e.kind,
                    occurred_at=e.occurred_at,
                    received_at=self._clock(),
                    payload=dict(e.payload),
                    correlation_id=e.correlation_id,
                ),
                status,
                error,
                e.record_key,
                e.record_version,
            )
            if e.source_event_id not in stale:
                inserted.append(event_id)
        if cursor is not None:
            self._s.cursors[stream] = cursor
        return RecordResult(inserted, duplicates, cursor, stale)

    def pending(self, limit: int, *, after: int = 0) -> list[PendingEvent]:
        waiting = [
            e.pending
            for i, e in sorted(self._s.events.items())
            if e.status == "pending" and i > after
        ]
        return waiting[:limit]

    def mark(
        self,
        event_ids: Sequence[int],
        status: str,
        *,
        error: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        if status not in EVENT_STATUSES:
            raise LedgerError(f"unknown inbox status {status!r}")
        missing = [i for i in event_ids if i not in self._s.events]
        if missing:
            raise NotFound(f"inbox event(s) {', '.join(map(str, missing))}")
        for i in event_ids:
            event = self._s.events[i]
            event.status, event.error = status, error
            if correlation_id is not None:
                event.pending = replace(event.pending, correlation_id=correlation_id)

    def states(self, event_ids: Sequence[int]) -> list[EventState]:
        return [
            EventState(i, e.pending.source_event_id, e.status, e.error)
            for i in sorted(set(event_ids))
            if (e := self._s.events.get(i)) is not None
        ]


class _Cursors:
    def __init__(self, state: _State) -> None:
        self._s = state

    def get(self, stream: str) -> str | None:
        return self._s.cursors.get(stream)

    def set(self, stream: str, position: str) -> None:
        self._s.cursors[stream] = position

    def delete(self, stream: str) -> None:
        self._s.cursors.pop(stream, None)


class _Correlations:
    def __init__(self, state: _State, outbox: _Outbox) -> None:
        self._s = state
        self._outbox = outbox

    def find(self, keys: Sequence[str]) -> Correlation | None:
        for key in keys:
            for corr in self._s.correlations.values():
                if corr.id == key or any(getattr(corr, n) == key for n in _CORRELATION_KEYS):
                    return corr
                for segment in corr.segments:
                    if any(getattr(segment, n) == key for n in _SEGMENT_KEYS):
                        return corr
        return None

    def get(self, correlation_id: str) -> Correlation | None:
        return self._s.correlations.get(correlation_id)

    def save(
        self,
        decision: Decision,
        before: Correlation | None,
        *,
        caused_by_event_id: int | None = None,
    ) -> Saved:
        corr = decision.correlation
        if corr is None:
            return Saved(None)
        stored = self._s.correlations.get(corr.id)
        if before is None and stored is not None:
            raise VersionConflict(f"correlation {corr.id} was created concurrently")
        if before is not None and (stored is None or stored.version != before.version):
            raise VersionConflict(f"correlation {corr.id} is no longer at version {before.version}")
        version = 1 if before is None else before.version + 1
        self._s.correlations[corr.id] = replace(corr, version=version)
        enqueued = self._outbox.enqueue(
            *(
                NewCommand(
                    idempotency_key=c.idempotency_key,
                    correlation_id=corr.id,
                    system=c.system.value,
                    operation=c.operation.value,
                    payload=dict(c.params),
                    segment_id=None if c.segment_seq is None else f"{corr.id}:{c.segment_seq}",
                    caused_by_event_id=caused_by_event_id,
                )
                for c in decision.commands
            )
        )
        routes = any(c.operation is Operation.ROUTE for c in decision.commands)
        return Saved(corr.id, enqueued.ids, enqueued_route=routes and bool(enqueued.ids))


class _Outbox:
    def __init__(self, state: _State, clock: Callable[[], datetime], order: Iterator[int]) -> None:
        self._s = state
        self._clock = clock
        self._order = order

    def enqueue(self, *commands: NewCommand) -> Enqueued:
        ids: list[str] = []
        dupes: list[str] = []
        for command in commands:
            if command.idempotency_key in self._s.command_keys:
                dupes.append(command.idempotency_key)
                continue
            seq = None
            if command.segment_id is not None and ":" in command.segment_id:
                seq = int(command.segment_id.rsplit(":", 1)[1])
            row = _Command(
                id=str(uuid.uuid4()),
                new=command,
                created=next(self._order),
                created_at=self._clock(),
                segment_seq=seq,
                next_attempt_at=command.next_attempt_at,
            )
            self._s.commands[row.id] = row
            self._s.command_keys[command.idempotency_key] = row.id
            ids.append(row.id)
        return Enqueued(ids, dupes)

    def has_due(self, now: datetime) -> bool:
        return any(self._due(now))

    def _due(self, now: datetime) -> list[_Command]:
        """Due commands, oldest first, none behind an unfinished one of its conversation."""
        blocked: set[str] = set()
        due: list[_Command] = []
        for c in sorted(self._s.commands.values(), key=lambda c: c.created):
            corr = c.new.correlation_id
            if c.status not in UNFINISHED_COMMAND_STATUSES:
                continue
            ready = (
                (c.status == "pending" and (c.next_attempt_at is None or c.next_attempt_at <= now))
                or (
                    c.status == "failed"
                    and c.next_attempt_at is not None
                    and c.next_attempt_at <= now
                )
                or (c.status == "claimed" and c.lease_until is not None and c.lease_until <= now)
            )
            if ready and corr not in blocked:
                due.append(c)
            blocked.add(corr)
        return due

    def claim(
        self,
        worker: str,
        limit: int,
        lease_seconds: float,
        now: datetime,
        *,
        correlation_id: str | None = None,
    ) -> list[ClaimedCommand]:
        claimed: list[ClaimedCommand] = []
        for c in self._due(now):
            if correlation_id is not None and c.new.correlation_id != correlation_id:
                continue
            if len(claimed) == limit:
                break
            look_first = outcome_was_unknown(c.error)
            c.status, c.error, c.claimed_by = "claimed", IN_FLIGHT, worker
            c.lease_until = now + timedelta(seconds=lease_seconds)
            claimed.append(
                ClaimedCommand(
                    id=c.id,
                    correlation_id=c.new.correlation_id,
                    system=System(c.new.system),
                    operation=Operation(c.new.operation),
                    params=dict(c.new.payload),
                    attempts=c.attempts,
                    created_at=c.created_at,
                    segment_id=c.new.segment_id,
                    segment_seq=c.segment_seq,
                    look_first=look_first,
                )
            )
        return claimed

    def _get(self, command_id: str) -> _Command:
        found = self._s.commands.get(command_id)
        if found is None:
            raise NotFound(f"outbox command {command_id}")
        return found

    def complete(
        self, command_id: str, answer: Mapping[str, Any] | None, status: str = "confirmed"
    ) -> None:
        c = self._get(command_id)
        if c.status == "claimed":
            c.attempts += 1
        c.status, c.error, c.lease_until = status, None, None
        c.response = None if answer is None else dict(answer)

    def fail(self, command_id: str, error: str, retry_at: datetime) -> None:
        c = self._get(command_id)
        c.status, c.error, c.attempts = "failed", error, c.attempts + 1
        c.next_attempt_at, c.lease_until = retry_at, None

    def dead_letter(self, command_id: str, reason: str) -> None:
        self._finish(command_id, "dead", reason)

    def cancel(self, command_id: str, reason: str) -> None:
        self._finish(command_id, "cancelled", reason)

    def _finish(self, command_id: str, status: str, reason: str) -> None:
        c = self._get(command_id)
        if c.status == "claimed":
            c.attempts += 1
        c.status, c.error, c.lease_until = status, reason, None

    def release(self, command_id: str) -> None:
        c = self._get(command_id)
        c.status, c.lease_until = "pending", None

    def release_abandoned(self, now: datetime, *, except_worker: str) -> list[str]:
        del now
        released: list[str] = []
        for c in self._s.commands.values():
            if c.status == "claimed" and c.claimed_by != except_worker:
                c.status, c.error, c.attempts = "pending", IN_FLIGHT, c.attempts + 1
                c.lease_until = c.next_attempt_at = c.claimed_by = None
                released.append(c.id)
        return sorted(released)

    def route_in_flight(self) -> bool:
        return any(
            c.new.operation == Operation.ROUTE.value and c.status in UNFINISHED_COMMAND_STATUSES
            for c in self._s.commands.values()
        )

    def states(
        self, *, ids: Sequence[str] = (), keys: Sequence[str] = (), caused_by: Sequence[int] = ()
    ) -> list[CommandState]:
        return [
            _state_of(c)
            for c in sorted(self._s.commands.values(), key=lambda c: c.created)
            if c.id in ids
            or c.new.idempotency_key in keys
            or (c.new.caused_by_event_id is not None and c.new.caused_by_event_id in caused_by)
        ]
