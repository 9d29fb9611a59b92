"""The ledger's roles, as the rest of the bridge sees them (one narrow interface per role,
the way pyeventsourcing gives each role its recorder): the inbox with its cursors, the
conversations (correlations and their segments), the outbox. ``Ledger.transaction()``
hands out one unit of work holding all of them: what must change together (events and
their cursor; a state change, its segments and its commands; a command's outcome and what
its answer teaches) changes in one transaction.

Two implementations: SQL (SQLite, PostgreSQL: ``bridge.ledger.sql``) and in memory
(``bridge.ledger.memory``, for engine and processor tests). Values crossing these
interfaces are the domain's (``Correlation``, ``Decision``, ``ClaimedCommand``) or the
small records below, never database rows or sessions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bridge.domain import ClaimedCommand, Correlation, Decision
from bridge.errors import OutcomeUnknown

# --- what crosses the interfaces ---------------------------------------------------------


@dataclass(frozen=True)
class NewEvent:
    """An event as intake hands it to the inbox."""

    source: str
    source_event_id: str
    kind: str
    occurred_at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    # The record this event is a version of and which version (ServiceNow: ``table:sys_id``
    # and ``sys_mod_count``): an event older than the newest version the inbox holds for its
    # record is recorded as stale (skipped, with the reason), not processed.
    record_key: str | None = None
    record_version: int | None = None
    # Input refused before it became an event (a delivery failing the schema) is recorded
    # already decided: ``error`` with the reason, never processed.
    status: str = "pending"
    error: str | None = None


@dataclass(frozen=True)
class RecordResult:
    """What recording did: ids of the new rows, source ids of the dropped repeats, and
    source ids of the events recorded as stale (their rows are not in ``inserted``)."""

    inserted: list[int]
    duplicates: list[str]
    cursor: str | None
    stale: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PendingEvent:
    """An inbox event waiting for the engine."""

    id: int
    source: str
    stream: str
    source_event_id: str
    kind: str
    occurred_at: datetime
    received_at: datetime
    payload: Mapping[str, Any]
    correlation_id: str | None = None


@dataclass(frozen=True)
class NewCommand:
    """A command for one system; ``idempotency_key`` makes a repeat a no-op."""

    idempotency_key: str
    correlation_id: str
    system: str
    operation: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    segment_id: str | None = None
    caused_by_event_id: int | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class Enqueued:
    """Ids of the commands written, and the keys that were already in the outbox."""

    ids: list[str]
    duplicate_keys: list[str]


@dataclass(frozen=True)
class CommandState:
    """Where one outbox command stands."""

    id: str
    idempotency_key: str
    correlation_id: str
    operation: str
    status: str
    attempts: int
    error: str | None = None
    caused_by_event_id: int | None = None


@dataclass(frozen=True)
class EventState:
    """What became of one inbox event."""

    id: int
    source_event_id: str
    status: str
    error: str | None = None


@dataclass(frozen=True)
class Saved:
    """What saving a decision wrote."""

    correlation_id: str | None
    command_ids: list[str] = field(default_factory=list)
    enqueued_route: bool = False


# Written on commands while they are out with a worker; any recorded outcome replaces it.
# Still there at the next claim means the lease ran out mid-call: look before acting.
IN_FLIGHT = json.dumps(
    OutcomeUnknown("the previous attempt ended without recording an outcome").as_dict(),
    sort_keys=True,
)


def outcome_was_unknown(error: str | None) -> bool:
    """Did the previous attempt end without knowing whether it took effect? Either it
    failed with ``OutcomeUnknown`` or its lease ran out before it recorded anything (the
    in-flight mark written at claim time is still there)."""
    if not error:
        return False
    try:
        return bool(json.loads(error).get("kind") == OutcomeUnknown.kind)
    except ValueError:
        return False


def stale_reason(event: NewEvent, held: int) -> str:
    """What is recorded on an event older than the version of its record already held."""
    return json.dumps(
        {
            "kind": "skippable",
            "code": "stale",
            "message": (
                f"stale: {event.record_key} version {event.record_version} arrived after "
                f"version {held}; not acted on"
            ),
        },
        sort_keys=True,
    )


# --- the roles ---------------------------------------------------------------------------


class Inbox(Protocol):
    def record(self, stream: str, events: Sequence[NewEvent], cursor: str | None) -> RecordResult:
        """Insert the events that are new and move the stream's cursor. Repeats hit the
        (source, source_event_id) key and are dropped, not errors. An event with a
        ``record_version`` lower than the highest the inbox holds for its ``record_key``
        is written as stale: status skipped, with the reason, listed in ``stale``."""
        ...

    def pending(self, limit: int, *, after: int = 0) -> list[PendingEvent]:
        """Unprocessed events with ids after ``after``, oldest first."""
        ...

    def mark(
        self,
        event_ids: Sequence[int],
        status: str,
        *,
        error: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Record the same outcome for these events."""
        ...

    def states(self, event_ids: Sequence[int]) -> list[EventState]: ...


class Cursors(Protocol):
    """Each intake stream's position: one opaque string the stream encodes and decodes."""

    def get(self, stream: str) -> str | None: ...

    def set(self, stream: str, position: str) -> None: ...

    def delete(self, stream: str) -> None:
        """Forget the position: the stream starts over (as on first start)."""
        ...


class Correlations(Protocol):
    def find(self, keys: Sequence[str]) -> Correlation | None:
        """The conversation the first of ``keys`` that names one belongs to (its own id,
        any id either system gave it, any id of one of its segments)."""
        ...

    def get(self, correlation_id: str) -> Correlation | None: ...

    def save(
        self,
        decision: Decision,
        before: Correlation | None,
        *,
        caused_by_event_id: int | None = None,
    ) -> Saved:
        """Write a decision: the correlation (``VersionConflict`` if it moved on since
        ``before`` was read), its new and changed segments, its commands."""
        ...


class Outbox(Protocol):
    def enqueue(self, *commands: NewCommand) -> Enqueued:
        """Commands whose key is already in the outbox are skipped and listed."""
        ...

    def claim(
        self,
        worker: str,
        limit: int,
        lease_seconds: float,
        now: datetime,
        *,
        correlation_id: str | None = None,
    ) -> list[ClaimedCommand]:
        """Lease up to ``limit`` due commands (of one correlation when given), each
        conversation's in order, and mark them in flight: a lease that runs out mid-call
        leaves the mark, so the next attempt looks before it acts."""
        ...

    def has_due(self, now: datetime) -> bool:
        """Would ``claim`` find a command now?"""
        ...

    def complete(
        self, command_id: str, answer: Mapping[str, Any] | None, status: str = "confirmed"
    ) -> None: ...

    def fail(self, command_id: str, error: str, retry_at: datetime) -> None:
        """A transient failure: try again at ``retry_at``."""
        ...

    def dead_letter(self, command_id: str, reason: str) -> None: ...

    def cancel(self, command_id: str, reason: str) -> None: ...

    def release(self, command_id: str) -> None:
        """Give a claimed command back: pending again, no lease."""
        ...

    def release_abandoned(self, now: datetime, *, except_worker: str) -> list[str]:
        """Take back every command claimed by a worker other than ``except_worker``: due
        at once, the attempt counted, the in-flight mark kept (its outcome is unknown: the
        next attempt looks before it acts). For a dispatcher starting on a ledger whose
        previous holder died: there is one dispatcher per ledger (SQLite can have no
        other; on PostgreSQL one instance is assumed until instances heartbeat), so every
        other worker's claim is a dead one. Returns the ids released."""
        ...

    def route_in_flight(self) -> bool:
        """Is a ``POST /route`` unfinished (its answer not recorded yet)?"""
        ...

    def states(
        self, *, ids: Sequence[str] = (), keys: Sequence[str] = (), caused_by: Sequence[int] = ()
    ) -> list[CommandState]: ...


class LedgerTx(Protocol):
    """One unit of work: every role, one transaction."""

    @property
    def inbox(self) -> Inbox: ...

    @property
    def cursors(self) -> Cursors: ...

    @property
    def correlations(self) -> Correlations: ...

    @property
    def outbox(self) -> Outbox: ...


class Ledger(Protocol):
    """A ledger: units of work."""

    def transaction(self) -> AbstractContextManager[LedgerTx]:
        """One write transaction: committed when the block ends, rolled back on error."""
        ...

    def reading(self) -> AbstractContextManager[LedgerTx]:
        """A read-only transaction (on SQLite it never blocks writers)."""
        ...

    def close(self) -> None: ...
