"""The SQL ledger (SQLite file or PostgreSQL): each role of ``bridge.ledger.ports`` over
one SQLAlchemy session, a unit of work per transaction. This package is the only place
that holds a session; rows become domain values (and back) here.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import SQLModel, col

from bridge.domain import (
    ClaimedCommand,
    Correlation,
    CorrelationState,
    Decision,
    Direction,
    Operation,
    Segment,
    SegmentKind,
    SegmentOutcome,
    System,
)
from bridge.domain.conversation import dump_data, load_data
from bridge.errors import LedgerError, NotFound, VersionConflict
from bridge.ledger import migrate
from bridge.ledger import rows as r
from bridge.ledger.audit import AuditReader
from bridge.ledger.database import READ_ONLY, describe, guard, make_engine
from bridge.ledger.lookups import Lookups, find_correlation_id
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

if TYPE_CHECKING:
    from bridge.app.settings import Settings

log = logging.getLogger(__name__)

# The columns the engine's Correlation / Segment and the ledger's rows share.
CORRELATION_COLUMNS = (
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
SEGMENT_COLUMNS = (
    "sf_queue_id",
    "sn_queue_sys_id",
    "sf_user_id",
    "sn_user_sys_id",
    "sn_work_item_sys_id",
    "sf_agent_work_id",
    "sf_psr_id",
    "closed_at",
)


def table(model: type[SQLModel]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


_FIXED_CORRELATION_COLUMNS = frozenset({"id", "version", "created_at"})


def _insert(session: Session, model: type[SQLModel]) -> Any:
    """The dialect's INSERT (both know ON CONFLICT)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table(model))


_ALLOWED_VALUES: dict[str, tuple[str | None, ...]] = {
    "direction": r.DIRECTIONS,
    "kind": r.SEGMENT_KINDS,
    "outcome": (None, *r.SEGMENT_OUTCOMES),
}


def _check_columns(
    model: type[SQLModel], changes: Mapping[str, Any], fixed: frozenset[str]
) -> None:
    """Unknown or read-only columns, and values outside a column's vocabulary, are refused
    with the names of the culprits (before the database sees them)."""
    bad = sorted(k for k in changes if k not in model.model_fields or k in fixed)
    if bad:
        raise LedgerError(f"cannot set {', '.join(bad)} on {model.__name__}")
    for key, allowed in _ALLOWED_VALUES.items():
        if key in changes and key in model.model_fields and changes[key] not in allowed:
            raise LedgerError(
                f"{model.__name__}.{key} must be one of "
                f"{', '.join(str(a) for a in allowed)}, not {changes[key]!r}"
            )


class Clock:
    """The ledger's time; ``tick`` gives strictly increasing timestamps in this process,
    so commands enqueued in one transaction keep their order on the ``created_at`` index."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self._last: datetime | None = None
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        return self._now()

    def tick(self) -> datetime:
        with self._lock:
            now = self._now()
            if self._last is not None and now <= self._last:
                now = self._last + timedelta(microseconds=1)
            self._last = now
            return now


# --- rows ↔ domain -----------------------------------------------------------------------


def _to_segment(row: r.Segment) -> Segment:
    return Segment(
        seq=row.seq,
        external_segment_id=row.external_segment_id,
        kind=SegmentKind(row.kind),
        opened_at=row.opened_at,
        outcome=SegmentOutcome(row.outcome) if row.outcome else None,
        detail=dict(row.detail or {}),
        **{name: getattr(row, name) for name in SEGMENT_COLUMNS},
    )


def _to_correlation(row: r.Correlation, segments: Sequence[r.Segment]) -> Correlation:
    return Correlation(
        id=row.id,
        direction=Direction(row.direction),
        state=CorrelationState(row.state),
        version=row.version,
        data=load_data(row.data),
        segments=tuple(_to_segment(s) for s in sorted(segments, key=lambda s: s.seq)),
        **{name: getattr(row, name) for name in CORRELATION_COLUMNS},
    )


def _segment_values(segment: Segment) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(segment, name) for name in SEGMENT_COLUMNS}
    values["outcome"] = segment.outcome.value if segment.outcome else None
    values["detail"] = dict(segment.detail)
    return values


# --- the roles ---------------------------------------------------------------------------


class SqlInbox:
    def __init__(self, session: Session, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    def record(self, stream: str, events: Sequence[NewEvent], cursor: str | None) -> RecordResult:
        now = self._clock()
        held = self._held_versions(events)
        stale: set[str] = set()
        rows = []
        for e in events:
            status, error = e.status, e.error
            record = (e.source, e.record_key or "")
            newest = held.get(record)
            if e.record_version is not None and newest is not None and e.record_version < newest:
                status, error = "skipped", stale_reason(e, newest)
                stale.add(e.source_event_id)
            elif e.record_version is not None and e.record_key:
                held[record] = e.record_version  # a later event of this batch is compared too
            rows.append(
                {
                    "source": e.source,
                    "stream": stream,
                    "source_event_id": e.source_event_id,
                    "kind": e.kind,
                    "occurred_at": e.occurred_at,
                    "received_at": now,
                    "payload": dict(e.payload),
                    "correlation_id": e.correlation_id,
                    "status": status,
                    "error": error,
                    "processed_at": None if status == "pending" else now,
                    "record_key": e.record_key,
                    "record_version": e.record_version,
                }
            )
        inserted: dict[str, int] = {}
        if rows:
            t = table(r.InboxEvent)
            stmt = (
                _insert(self._session, r.InboxEvent)
                .on_conflict_do_nothing(index_elements=["source", "source_event_id"])
                .returning(t.c.id, t.c.source, t.c.source_event_id)
            )
            for row in self._session.execute(stmt, rows):
                inserted[f"{row.source}\0{row.source_event_id}"] = row.id
        if cursor is not None:
            SqlCursors(self._session, self._clock).set(stream, cursor)
        new_ids = sorted(i for key, i in inserted.items() if key.partition("\0")[2] not in stale)
        duplicates: list[str] = []
        recorded_stale: list[str] = []
        for e in events:  # a repeat inside the batch is a duplicate too
            if inserted.pop(f"{e.source}\0{e.source_event_id}", None) is None:
                duplicates.append(e.source_event_id)
            elif e.source_event_id in stale:
                recorded_stale.append(e.source_event_id)
        return RecordResult(new_ids, duplicates, cursor, recorded_stale)

    def _held_versions(self, events: Sequence[NewEvent]) -> dict[tuple[str, str], int]:
        """The highest version the inbox holds of each record these events are versions of."""
        by_source: dict[str, set[str]] = {}
        for e in events:
            if e.record_key and e.record_version is not None:
                by_source.setdefault(e.source, set()).add(e.record_key)
        t = table(r.InboxEvent)
        held: dict[tuple[str, str], int] = {}
        for source, keys in by_source.items():  # one indexed IN per source, not an OR chain
            stmt = (
                select(t.c.record_key, func.max(t.c.record_version))
                .where(t.c.source == source, t.c.record_key.in_(sorted(keys)))
                .group_by(t.c.record_key)
            )
            for key, newest in self._session.execute(stmt):
                if newest is not None:
                    held[(source, key)] = newest
        return held

    def pending(self, limit: int, *, after: int = 0) -> list[PendingEvent]:
        t = table(r.InboxEvent)
        stmt = (
            select(t).where(t.c.status == "pending", t.c.id > after).order_by(t.c.id).limit(limit)
        )
        return [
            PendingEvent(
                id=row.id,
                source=row.source,
                stream=row.stream,
                source_event_id=row.source_event_id,
                kind=row.kind,
                occurred_at=row.occurred_at,
                received_at=row.received_at,
                payload=row.payload or {},
                correlation_id=row.correlation_id,
            )
            for row in self._session.execute(stmt)
        ]

    def mark(
        self,
        event_ids: Sequence[int],
        status: str,
        *,
        error: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        if status not in r.EVENT_STATUSES:
            raise LedgerError(f"unknown inbox status {status!r}")
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "processed_at": None if status == "pending" else self._clock(),
        }
        if correlation_id is not None:
            values["correlation_id"] = correlation_id
        t = table(r.InboxEvent)
        result = self._session.execute(update(t).where(t.c.id.in_(event_ids)).values(values))
        if result.rowcount != len(set(event_ids)):  # type: ignore[attr-defined]
            raise NotFound(f"inbox event(s) {', '.join(map(str, event_ids))}")

    def states(self, event_ids: Sequence[int]) -> list[EventState]:
        if not event_ids:
            return []
        t = table(r.InboxEvent)
        stmt = select(t.c.id, t.c.source_event_id, t.c.status, t.c.error).where(
            t.c.id.in_(list(event_ids))
        )
        return [EventState(*row) for row in self._session.execute(stmt.order_by(t.c.id))]

    def find(self, keys: Sequence[tuple[str, str]]) -> list[EventState]:
        """The inbox events with these (source, source_event_id) keys."""
        if not keys:
            return []
        t = table(r.InboxEvent)
        stmt = select(t.c.id, t.c.source_event_id, t.c.status, t.c.error).where(
            or_(*(and_(t.c.source == src, t.c.source_event_id == sid) for src, sid in keys))
        )
        return [EventState(*row) for row in self._session.execute(stmt.order_by(t.c.id))]

    def add(self, event: NewEvent, stream: str) -> int | None:
        """One event (a reconciler's), or None when the inbox already holds it."""
        result = self.record(stream, [event], None)
        return result.inserted[0] if result.inserted else None


class SqlCursors:
    def __init__(self, session: Session, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    def get(self, stream: str) -> str | None:
        found = self._session.get(r.Cursor, stream)
        return None if found is None else found.position

    def set(self, stream: str, position: str) -> None:
        now = self._clock()
        stmt = _insert(self._session, r.Cursor).values(
            stream=stream, position=position, updated_at=now
        )
        self._session.execute(
            stmt.on_conflict_do_update(
                index_elements=["stream"],
                set_={"position": stmt.excluded.position, "updated_at": stmt.excluded.updated_at},
            )
        )

    def delete(self, stream: str) -> None:
        t = table(r.Cursor)
        self._session.execute(delete(t).where(t.c.stream == stream))

    def all(self) -> list[r.Cursor]:
        return list(self._session.scalars(select(r.Cursor).order_by(col(r.Cursor.stream))))


class SqlCorrelations:
    """Conversations: domain values in and out (``find``, ``get``, ``save``), and the
    row-level operations the ledger's own tests and tools use."""

    def __init__(self, session: Session, clock: Clock, outbox: SqlOutbox) -> None:
        self._session = session
        self._clock = clock
        self._outbox = outbox
        self._rows: dict[str, r.Correlation] = {}
        self._segment_ids: dict[tuple[str, int], str] = {}

    # domain -------------------------------------------------------------------------
    def find(self, keys: Sequence[str]) -> Correlation | None:
        for key in keys:
            found = find_correlation_id(self._session, key)
            if found is not None:
                return self.get(found)
        return None

    def get(self, correlation_id: str) -> Correlation | None:
        row = self._session.get(r.Correlation, correlation_id)
        if row is None:
            return None
        self._rows[row.id] = row
        segments = self.segment_rows(row.id)
        return _to_correlation(row, segments)

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
        values: dict[str, Any] = {name: getattr(corr, name) for name in CORRELATION_COLUMNS}
        values["state"] = corr.state.value
        values["data"] = dump_data(corr.data)
        if before is None:
            if corr.state.is_final:
                values["closed_at"] = self._clock()
            self.create(id=corr.id, direction=corr.direction.value, **values)
        else:
            old: dict[str, Any] = {n: getattr(before, n) for n in CORRELATION_COLUMNS}
            old["state"] = before.state.value
            old["data"] = dump_data(before.data)
            changed = {k: v for k, v in values.items() if old[k] != v}
            if corr.state.is_final and not before.state.is_final:
                changed["closed_at"] = func.coalesce(
                    table(r.Correlation).c.closed_at, self._clock()
                )
            if changed:
                self._update(corr.id, before.version, changed)
        for segment in decision.segments_added:
            # The engine numbers segments (the number is in external_segment_id); the
            # (correlation_id, seq) key refuses a second writer of the same number.
            row = r.Segment(
                id=r.new_id(),
                correlation_id=corr.id,
                seq=segment.seq,
                external_segment_id=segment.external_segment_id,
                kind=segment.kind.value,
                opened_at=segment.opened_at,
                **_segment_values(segment),
            )
            self._session.add(row)
            self._segment_ids[(corr.id, segment.seq)] = row.id
        if decision.segments_added:
            self._session.flush()
        t = table(r.Segment)
        for segment in decision.segments_updated:
            self._session.execute(
                update(t)
                .where(t.c.correlation_id == corr.id, t.c.seq == segment.seq)
                .values(_segment_values(segment))
            )
        enqueued = self._outbox.enqueue(
            *(
                NewCommand(
                    idempotency_key=c.idempotency_key,
                    correlation_id=corr.id,
                    system=c.system.value,
                    operation=c.operation.value,
                    payload=dict(c.params),
                    segment_id=self._segment_id(corr.id, c.segment_seq),
                    caused_by_event_id=caused_by_event_id,
                )
                for c in decision.commands
            )
        )
        routes = any(c.operation is Operation.ROUTE for c in decision.commands)
        return Saved(corr.id, enqueued.ids, enqueued_route=routes and bool(enqueued.ids))

    def _segment_id(self, correlation_id: str, seq: int | None) -> str | None:
        if seq is None:
            return None
        key = (correlation_id, seq)
        if key not in self._segment_ids:
            t = table(r.Segment)
            found = self._session.execute(
                select(t.c.id).where(t.c.correlation_id == correlation_id, t.c.seq == seq)
            ).scalar()
            if found is None:
                return None
            self._segment_ids[key] = str(found)
        return self._segment_ids[key]

    def _update(self, correlation_id: str, expected_version: int, changes: dict[str, Any]) -> None:
        values = {**changes, "version": expected_version + 1, "updated_at": self._clock()}
        t = table(r.Correlation)
        result = self._session.execute(
            update(t)
            .where(t.c.id == correlation_id, t.c.version == expected_version)
            .values(values)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise VersionConflict(
                f"correlation {correlation_id} is no longer at version {expected_version}",
                detail={"correlation_id": correlation_id, "expected_version": expected_version},
            )

    # rows ---------------------------------------------------------------------------
    def row(self, correlation_id: str) -> r.Correlation | None:
        return self._session.get(r.Correlation, correlation_id)

    def find_row(self, any_id: str) -> r.Correlation | None:
        found = find_correlation_id(self._session, any_id)
        return None if found is None else self._session.get(r.Correlation, found)

    def create(self, **cols: Any) -> r.Correlation:
        _check_columns(r.Correlation, cols, frozenset({"version"}))
        now = self._clock()
        cols.setdefault("created_at", now)
        cols.setdefault("updated_at", now)
        corr = r.Correlation(**cols)
        self._session.add(corr)
        self._session.flush()
        return corr

    def update(self, corr: r.Correlation, expected_version: int, **changes: Any) -> r.Correlation:
        """Apply ``changes`` if the correlation is still at ``expected_version``; the
        version goes up by one. Raises ``VersionConflict`` if someone got there first."""
        _check_columns(r.Correlation, changes, _FIXED_CORRELATION_COLUMNS)
        self._update(corr.id, expected_version, changes)
        set_committed_value(corr, "version", expected_version + 1)
        for key, value in changes.items():
            set_committed_value(corr, key, value)
        return corr

    def add_segment(self, correlation_id: str, **cols: Any) -> r.Segment:
        """The next leg of the correlation, numbered after the last one (a tool for
        arranging a ledger by hand; the engine's segments come through ``save``)."""
        _check_columns(r.Segment, cols, frozenset({"correlation_id", "seq"}))
        t = table(r.Segment)
        last = self._session.execute(
            select(func.max(t.c.seq)).where(t.c.correlation_id == correlation_id)
        ).scalar()
        seq = 1 + (last or 0)
        cols.setdefault("external_segment_id", f"{correlation_id}-{seq}")
        cols.setdefault("opened_at", self._clock())
        segment = r.Segment(correlation_id=correlation_id, seq=seq, **cols)
        self._session.add(segment)
        self._session.flush()
        return segment

    def update_segment(self, segment: r.Segment, **changes: Any) -> r.Segment:
        _check_columns(r.Segment, changes, frozenset({"id", "correlation_id", "seq"}))
        t = table(r.Segment)
        self._session.execute(update(t).where(t.c.id == segment.id).values(changes))
        for key, value in changes.items():
            set_committed_value(segment, key, value)
        return segment

    def segment_rows(self, correlation_id: str) -> list[r.Segment]:
        stmt = select(r.Segment).where(col(r.Segment.correlation_id) == correlation_id)
        found = list(self._session.scalars(stmt.order_by(col(r.Segment.seq))))
        for s in found:
            self._segment_ids[(correlation_id, s.seq)] = s.id
        return found


class SqlOutbox:
    def __init__(self, session: Session, clock: Clock) -> None:
        self._session = session
        self._clock = clock
        self.duplicate_keys: list[str] = []

    def enqueue(self, *commands: NewCommand) -> Enqueued:
        rows = [self._command_row(c) for c in commands]
        if not rows:
            return Enqueued([], [])
        t = table(r.OutboxCommand)
        stmt = (
            _insert(self._session, r.OutboxCommand)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(t.c.id)
        )
        new = {str(i) for i in self._session.execute(stmt, rows).scalars()}
        dupes = [row["idempotency_key"] for row in rows if row["id"] not in new]
        if dupes:
            log.info("outbox: %d duplicate command(s) skipped", len(dupes), extra={"keys": dupes})
            self.duplicate_keys.extend(dupes)
        return Enqueued([row["id"] for row in rows if row["id"] in new], dupes)

    def add(self, *commands: NewCommand) -> list[r.OutboxCommand]:
        """``enqueue``, answering with the rows written (for the ledger's tools and tests)."""
        ids = self.enqueue(*commands).ids
        loaded = {
            c.id: c
            for c in self._session.scalars(
                select(r.OutboxCommand).where(col(r.OutboxCommand.id).in_(ids))
            )
        }
        return [loaded[i] for i in ids]

    def _command_row(self, command: NewCommand) -> dict[str, Any]:
        now = self._clock.tick()
        return {
            "id": str(uuid.uuid4()),
            "idempotency_key": command.idempotency_key,
            "correlation_id": command.correlation_id,
            "segment_id": command.segment_id,
            "system": command.system,
            "operation": command.operation,
            "payload": dict(command.payload),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": command.next_attempt_at,
            "created_at": now,
            "updated_at": now,
            "caused_by_event_id": command.caused_by_event_id,
        }

    # claims ---------------------------------------------------------------------------
    def has_due(self, now: datetime) -> bool:
        stmt = _claim_statement("any", by_correlation=False, peek=True)
        return self._session.execute(stmt, {"now": now}).first() is not None

    def claim(
        self,
        worker: str,
        limit: int,
        lease_seconds: float,
        now: datetime,
        *,
        correlation_id: str | None = None,
    ) -> list[ClaimedCommand]:
        """Due: pending (and its first attempt time reached), failed with its retry time
        reached, or claimed with an expired lease. A command waits while an earlier
        command of its correlation is unfinished, so each conversation's commands go out
        in order. On PostgreSQL rows are locked with SKIP LOCKED (concurrent claimers
        never share a command); on SQLite the write transaction serialises claimers.
        Claiming and the in-flight mark are one statement pair in this transaction."""
        dialect = self._session.get_bind().dialect.name
        pick = _claim_statement(dialect, by_correlation=correlation_id is not None)
        params: dict[str, Any] = {"now": now, "limit": limit, "correlation_id": correlation_id}
        picked = list(self._session.execute(pick, params))
        if correlation_id is not None:
            # the conversation's first unfinished command is its only candidate
            picked = [row for row in picked if _is_due(row, now)]
        if not picked:
            return []
        t = table(r.OutboxCommand)
        self._session.execute(
            update(t)
            .where(t.c.id.in_([row.id for row in picked]))
            .values(
                status="claimed",
                claimed_by=worker,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
                error=literal(IN_FLIGHT),
            )
        )
        return [
            ClaimedCommand(
                id=row.id,
                correlation_id=row.correlation_id,
                system=System(row.system),
                operation=Operation(row.operation),
                params=row.payload or {},
                attempts=row.attempts,
                created_at=row.created_at,
                segment_id=row.segment_id,
                segment_seq=row.segment_seq,
                look_first=outcome_was_unknown(row.error),
            )
            for row in picked
        ]

    # outcomes -------------------------------------------------------------------------
    def _set(self, command_id: str, **values: Any) -> None:
        t = table(r.OutboxCommand)
        values.setdefault("updated_at", self._clock())
        result = self._session.execute(update(t).where(t.c.id == command_id).values(values))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"outbox command {command_id}")

    @staticmethod
    def _attempted() -> Any:
        """attempts + 1 when the command was out with a worker (claimed), else unchanged."""
        t = table(r.OutboxCommand)
        return case((t.c.status == "claimed", t.c.attempts + 1), else_=t.c.attempts)

    def complete(
        self, command_id: str, answer: Mapping[str, Any] | None, status: str = "confirmed"
    ) -> None:
        """The system took the command: ``sent`` (awaiting its confirmation event) or
        ``confirmed``."""
        if status not in ("sent", "confirmed"):
            raise LedgerError(f"complete: status must be sent or confirmed, not {status!r}")
        now = self._clock()
        self._set(
            command_id,
            status=status,
            response=None if answer is None else dict(answer),
            attempts=self._attempted(),
            completed_at=now if status == "confirmed" else None,
            claimed_by=None,
            lease_until=None,
            error=None,
            updated_at=now,
        )

    def fail(self, command_id: str, error: str, retry_at: datetime) -> None:
        t = table(r.OutboxCommand)
        self._set(
            command_id,
            status="failed",
            error=error,
            attempts=t.c.attempts + 1,
            next_attempt_at=retry_at,
            claimed_by=None,
            lease_until=None,
        )

    def dead_letter(self, command_id: str, reason: str) -> None:
        self._finish(command_id, "dead", reason)

    def cancel(self, command_id: str, reason: str) -> None:
        self._finish(command_id, "cancelled", reason)

    def _finish(self, command_id: str, status: str, reason: str) -> None:
        now = self._clock()
        self._set(
            command_id,
            status=status,
            error=reason,
            attempts=self._attempted(),
            completed_at=now,
            claimed_by=None,
            lease_until=None,
            updated_at=now,
        )

    def release(self, command_id: str) -> None:
        self._set(command_id, status="pending", claimed_by=None, lease_until=None)

    def release_stuck(self, command_id: str, now: datetime) -> bool:
        """Make an unfinished command due at once (a reconciler's repair); False when it
        finished meanwhile."""
        t = table(r.OutboxCommand)
        released = self._session.execute(
            update(t)
            .where(t.c.id == command_id, t.c.status.in_(r.UNFINISHED_COMMAND_STATUSES))
            .values(
                status="pending",
                next_attempt_at=None,
                claimed_by=None,
                lease_until=None,
                updated_at=now,
            )
        )
        return bool(released.rowcount)  # type: ignore[attr-defined]

    def release_claims(self, worker: str) -> list[str]:
        """Give back what ``worker`` still has claimed (a stopping daemon's calls in
        flight): pending at once, the in-flight mark kept, so the next attempt looks
        before it acts. Conditional on the claim: an outcome recorded first stays."""
        t = table(r.OutboxCommand)
        released = self._session.execute(
            update(t)
            .where(t.c.status == "claimed", t.c.claimed_by == worker)
            .values(
                status="pending",
                attempts=t.c.attempts + 1,  # the call went out
                claimed_by=None,
                lease_until=None,
                next_attempt_at=None,
                updated_at=self._clock(),
            )
            .returning(t.c.id)
        )
        return sorted(str(i) for i in released.scalars())

    def release_abandoned(self, now: datetime, *, except_worker: str) -> list[str]:
        t = table(r.OutboxCommand)
        released = self._session.execute(
            update(t)
            .where(
                t.c.status == "claimed",
                or_(t.c.claimed_by.is_(None), t.c.claimed_by != except_worker),
            )
            .values(
                status="pending",
                attempts=t.c.attempts + 1,
                next_attempt_at=None,
                claimed_by=None,
                lease_until=None,
                updated_at=now,
                # the claim's in-flight mark, kept or restored: look before acting
                error=literal(IN_FLIGHT),
            )
            .returning(t.c.id)
        )
        return sorted(str(i) for i in released.scalars())

    # reads ----------------------------------------------------------------------------
    def route_in_flight(self) -> bool:
        t = table(r.OutboxCommand)
        stmt = select(literal(1)).where(
            t.c.status.in_(r.UNFINISHED_COMMAND_STATUSES),
            t.c.operation == Operation.ROUTE.value,
        )
        return self._session.execute(stmt.limit(1)).first() is not None

    def states(
        self, *, ids: Sequence[str] = (), keys: Sequence[str] = (), caused_by: Sequence[int] = ()
    ) -> list[CommandState]:
        t = table(r.OutboxCommand)
        conditions = []
        if ids:
            conditions.append(t.c.id.in_(list(ids)))
        if keys:
            conditions.append(t.c.idempotency_key.in_(list(keys)))
        if caused_by:
            conditions.append(t.c.caused_by_event_id.in_(list(caused_by)))
        if not conditions:
            return []
        stmt = select(
            t.c.id,
            t.c.idempotency_key,
            t.c.correlation_id,
            t.c.operation,
            t.c.status,
            t.c.attempts,
            t.c.error,
            t.c.caused_by_event_id,
        ).where(or_(*conditions))
        return [CommandState(*row) for row in self._session.execute(stmt.order_by(t.c.created_at))]

    def row(self, command_id: str) -> r.OutboxCommand:
        found = self._session.get(r.OutboxCommand, command_id)
        if found is None:
            raise NotFound(f"outbox command {command_id}")
        return found


@functools.cache
def _claim_statement(dialect: str, *, by_correlation: bool, peek: bool = False) -> Any:
    """The claim's SELECT, built once per shape (building the aliases and the subquery
    costs more than running the statement); ``now``, ``limit`` and ``correlation_id``
    are bound per call."""
    c = table(r.OutboxCommand).alias("c")
    if by_correlation:
        # One conversation: its first unfinished command (an indexed lookup), due or not;
        # the caller keeps it if it is due. Far cheaper than the general claim's subquery.
        stmt = (
            _claim_columns(c)
            .add_columns(c.c.status, c.c.next_attempt_at, c.c.lease_until)
            .where(
                c.c.correlation_id == bindparam("correlation_id"),
                c.c.status.in_(r.UNFINISHED_COMMAND_STATUSES),
            )
            .order_by(c.c.created_at, c.c.id)
            .limit(1)
        )
    else:
        stmt = _due(c, bindparam("now"))
        if peek:
            return stmt.limit(1)
        stmt = stmt.order_by(c.c.created_at, c.c.id).limit(bindparam("limit"))
    if dialect == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=c)
    return stmt


def _due(c: Any, now: Any) -> Any:
    """Commands of the outbox alias ``c`` that are due now and not waiting behind an
    earlier unfinished command of their correlation (the claim's columns)."""
    p = table(r.OutboxCommand).alias("p")
    due = or_(
        and_(
            c.c.status == "pending",
            or_(c.c.next_attempt_at.is_(None), c.c.next_attempt_at <= now),
        ),
        and_(c.c.status == "failed", c.c.next_attempt_at <= now),
        and_(c.c.status == "claimed", c.c.lease_until <= now),
    )
    earlier_unfinished = (
        select(p.c.id)
        .where(
            p.c.correlation_id == c.c.correlation_id,
            p.c.status.in_(r.UNFINISHED_COMMAND_STATUSES),
            or_(
                p.c.created_at < c.c.created_at,
                and_(p.c.created_at == c.c.created_at, p.c.id < c.c.id),
            ),
        )
        .exists()
    )
    return _claim_columns(c).where(due, ~earlier_unfinished)


def _claim_columns(c: Any) -> Any:
    """What a claim reads of a command (and its segment's number)."""
    s = table(r.Segment)
    return select(
        c.c.id,
        c.c.correlation_id,
        c.c.system,
        c.c.operation,
        c.c.payload,
        c.c.attempts,
        c.c.created_at,
        c.c.segment_id,
        c.c.error,
        select(s.c.seq).where(s.c.id == c.c.segment_id).scalar_subquery().label("segment_seq"),
    )


def _is_due(row: Any, now: datetime) -> bool:
    """The claim's due rule, for a row already read."""
    if row.status == "pending":
        return row.next_attempt_at is None or row.next_attempt_at <= now
    if row.status == "failed":
        return row.next_attempt_at is not None and row.next_attempt_at <= now
    if row.status == "claimed":
        return row.lease_until is not None and row.lease_until <= now
    return False


class SqlRuns:
    """Reconciliation runs and their findings."""

    def __init__(self, session: Session, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    def start(self, reconcilers: Sequence[str], mode: str) -> r.ReconcileRun:
        if mode not in r.RUN_MODES:
            raise LedgerError(f"reconcile mode must be dry_run or apply, not {mode!r}")
        run = r.ReconcileRun(reconcilers=list(reconcilers), mode=mode, started_at=self._clock())
        self._session.add(run)
        self._session.flush()
        return run

    def add(self, *findings: r.Finding) -> None:
        self._session.add_all(findings)
        self._session.flush()

    def set_status(self, finding_id: str, status: str, reason: str | None) -> None:
        found = self._session.get(r.Finding, finding_id)
        if found is not None:
            found.status = status
            found.reason = reason or found.reason

    def finish(self, run_id: str, status: str, summary: Mapping[str, Any]) -> r.ReconcileRun:
        run = self._session.get(r.ReconcileRun, run_id)
        if run is None:
            raise NotFound(f"reconcile run {run_id}")
        run.status = status
        run.summary = dict(summary)
        run.finished_at = self._clock()
        return run

    def findings(self, run_id: str) -> list[r.Finding]:
        stmt = select(r.Finding).where(col(r.Finding.run_id) == run_id)
        return list(
            self._session.scalars(stmt.order_by(col(r.Finding.created_at), col(r.Finding.id)))
        )


class SqlTx:
    """One SQL transaction, every role of the ledger on its session."""

    def __init__(self, session: Session, clock: Clock) -> None:
        self._session = session
        self.inbox = SqlInbox(session, clock)
        self.cursors = SqlCursors(session, clock)
        self.outbox = SqlOutbox(session, clock)
        self.correlations = SqlCorrelations(session, clock, self.outbox)
        self.runs = SqlRuns(session, clock)
        self.lookups = Lookups(session)
        self.audit = AuditReader(session)

    def ping(self) -> None:
        """A round trip to the database (readiness)."""
        self._session.execute(text("SELECT 1"))


class SqlLedger:
    """The ledger of one bridge: a SQLite file or a PostgreSQL database."""

    def __init__(self, url: str, *, now: Callable[[], datetime] = r.utcnow) -> None:
        self.engine = make_engine(url)
        self._reader = self.engine.execution_options(**{READ_ONLY: True})
        self.clock = Clock(now)

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlLedger:
        return cls(settings.effective_ledger_url)

    @property
    def url(self) -> str:
        """The URL with the password masked."""
        return describe(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # migrations -----------------------------------------------------------------------
    def upgrade(self, revision: str = "head") -> None:
        migrate.upgrade(self.engine, revision)

    def downgrade(self, revision: str) -> None:
        migrate.downgrade(self.engine, revision)

    def current(self) -> str | None:
        return migrate.current(self.engine)

    def check_current(self) -> None:
        migrate.check_current(self.engine)

    # units of work ---------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        """One write transaction: committed when the block ends, rolled back on error."""
        with (
            guard(self.engine, "writing"),
            Session(self.engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield SqlTx(session, self.clock)

    @contextmanager
    def reading(self) -> Iterator[SqlTx]:
        """A read-only transaction (never blocks writers on SQLite); for queries."""
        with (
            guard(self.engine, "reading"),
            Session(self._reader, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield SqlTx(session, self.clock)
