"""The ledger's write side: inbox + cursor, correlations and segments, the outbox, and
reconciliation runs. Every operation is one transaction; what must change together
(events and their cursor, a state change and its commands) does.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, and_, case, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import SQLModel, col

from bridge.errors import LedgerError, NotFound, VersionConflict
from bridge.ledger import migrate
from bridge.ledger.database import READ_ONLY, describe, guard, make_engine
from bridge.ledger.rows import (
    DIRECTIONS,
    EVENT_STATUSES,
    SEGMENT_KINDS,
    SEGMENT_OUTCOMES,
    UNFINISHED_COMMAND_STATUSES,
    Correlation,
    Cursor,
    Finding,
    InboxEvent,
    OutboxCommand,
    ReconcileRun,
    Segment,
    utcnow,
)

if TYPE_CHECKING:
    from bridge.app.settings import Settings

log = logging.getLogger(__name__)


def table(model: type[SQLModel]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class NewEvent:
    """An event as intake hands it to the inbox."""

    source: str
    source_event_id: str
    kind: str
    occurred_at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None


@dataclass(frozen=True)
class RecordResult:
    """What ``record_events`` did: ids of the new rows, source ids of the dropped dupes."""

    inserted: list[int]
    duplicates: list[str]
    cursor: str | None


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


# Where an id the user or an event gives may live, most likely first.
_FIND_ORDER: tuple[tuple[str, str], ...] = (
    ("correlation", "id"),
    ("correlation", "sf_psr_id"),
    ("correlation", "sf_work_item_id"),
    ("correlation", "sf_agent_work_id"),
    ("correlation", "sf_conversation_id"),
    ("correlation", "sn_document_sys_id"),
    ("correlation", "sn_work_item_sys_id"),
    ("segment", "external_segment_id"),
    ("segment", "id"),
    ("segment", "sf_agent_work_id"),
    ("segment", "sn_work_item_sys_id"),
    ("segment", "sf_psr_id"),
)
# Plain SQL from the constant names above (no user text): compiling the equivalent
# 12-way UNION through the expression language costs more than running it.
_FIND_SQL = text(
    " UNION ALL ".join(
        f"SELECT {'id' if t == 'correlation' else 'correlation_id'} AS correlation_id "
        f"FROM {t} WHERE {column} = :any_id"
        for t, column in _FIND_ORDER
    )
    + " LIMIT 1"
)
_FIXED_CORRELATION_COLUMNS = frozenset({"id", "version", "created_at"})


def find_correlation_id(session: Session, any_id: str) -> str | None:
    """The correlation an id belongs to: its own id, any Salesforce / ServiceNow id it
    carries, or any id of one of its segments. One round trip; every branch is an
    indexed lookup."""
    found = session.execute(_FIND_SQL, {"any_id": any_id}).scalar()
    return None if found is None else str(found)


def _insert(session: Session, model: type[SQLModel]) -> Any:
    """The dialect's INSERT (both know ON CONFLICT)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table(model))


_ALLOWED_VALUES: dict[str, tuple[str | None, ...]] = {
    "direction": DIRECTIONS,
    "kind": SEGMENT_KINDS,
    "outcome": (None, *SEGMENT_OUTCOMES),
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


class _Clock:
    """Strictly increasing timestamps in this process, so commands enqueued in one
    transaction keep their order on the ``created_at`` index."""

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


class LedgerTx:
    """One ledger transaction; obtained from ``Ledger.transaction()``."""

    def __init__(self, session: Session, clock: _Clock) -> None:
        self.session = session
        self._clock = clock
        self.duplicate_keys: list[str] = []

    # correlations -------------------------------------------------------------------
    def get_correlation(self, correlation_id: str) -> Correlation | None:
        return self.session.get(Correlation, correlation_id)

    def find_correlation(self, any_id: str) -> Correlation | None:
        found = find_correlation_id(self.session, any_id)
        return None if found is None else self.session.get(Correlation, found)

    def create_correlation(self, **cols: Any) -> Correlation:
        _check_columns(Correlation, cols, frozenset({"version"}))
        now = self._clock()
        cols.setdefault("created_at", now)
        cols.setdefault("updated_at", now)
        corr = Correlation(**cols)
        self.session.add(corr)
        self.session.flush()
        return corr

    def update_correlation(
        self, corr: Correlation, expected_version: int, **changes: Any
    ) -> Correlation:
        """Apply ``changes`` if the correlation is still at ``expected_version``; the
        version goes up by one. Raises ``VersionConflict`` if someone got there first."""
        _check_columns(Correlation, changes, _FIXED_CORRELATION_COLUMNS)
        values = {**changes, "version": expected_version + 1, "updated_at": self._clock()}
        t = table(Correlation)
        result = self.session.execute(
            update(t).where(t.c.id == corr.id, t.c.version == expected_version).values(values)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise VersionConflict(
                f"correlation {corr.id} is no longer at version {expected_version}",
                detail={"correlation_id": corr.id, "expected_version": expected_version},
            )
        for key, value in values.items():
            set_committed_value(corr, key, value)
        return corr

    # segments -----------------------------------------------------------------------
    def add_segment(self, correlation_id: str, **cols: Any) -> Segment:
        """The next leg of the correlation (``seq`` is assigned here)."""
        _check_columns(Segment, cols, frozenset({"correlation_id", "seq"}))
        seq = 1 + (
            self.session.execute(
                select(func.max(col(Segment.seq))).where(
                    col(Segment.correlation_id) == correlation_id
                )
            ).scalar()
            or 0
        )
        cols.setdefault("external_segment_id", f"{correlation_id}-{seq}")
        cols.setdefault("opened_at", self._clock())
        segment = Segment(correlation_id=correlation_id, seq=seq, **cols)
        self.session.add(segment)
        self.session.flush()
        return segment

    def update_segment(self, segment: Segment, **changes: Any) -> Segment:
        _check_columns(Segment, changes, frozenset({"id", "correlation_id", "seq"}))
        t = table(Segment)
        self.session.execute(update(t).where(t.c.id == segment.id).values(changes))
        for key, value in changes.items():
            set_committed_value(segment, key, value)
        return segment

    def segments(self, correlation_id: str) -> list[Segment]:
        stmt = select(Segment).where(col(Segment.correlation_id) == correlation_id)
        return list(self.session.scalars(stmt.order_by(col(Segment.seq))))

    # outbox ---------------------------------------------------------------------------
    def enqueue(self, *commands: NewCommand) -> list[OutboxCommand]:
        """Write commands in this transaction. A command whose idempotency key is already
        in the outbox is skipped (logged, and listed in ``duplicate_keys``)."""
        rows = [self._command_row(c) for c in commands]
        if not rows:
            return []
        t = table(OutboxCommand)
        stmt = (
            _insert(self.session, OutboxCommand)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(t.c.id)
        )
        new = {str(i) for i in self.session.execute(stmt, rows).scalars()}
        dupes = [r["idempotency_key"] for r in rows if r["id"] not in new]
        if dupes:
            log.info("outbox: %d duplicate command(s) skipped", len(dupes), extra={"keys": dupes})
            self.duplicate_keys.extend(dupes)
        # Loaded through the ORM: far cheaper than validating each model in Python.
        loaded = {
            c.id: c
            for c in self.session.scalars(
                select(OutboxCommand).where(col(OutboxCommand.id).in_(new))
            )
        }
        return [loaded[r["id"]] for r in rows if r["id"] in loaded]

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

    # command outcomes (in the transaction of the state change they cause) -----------
    def _set_command(self, command_id: str, **values: Any) -> None:
        t = table(OutboxCommand)
        values.setdefault("updated_at", self._clock())
        result = self.session.execute(update(t).where(t.c.id == command_id).values(values))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"outbox command {command_id}")

    @staticmethod
    def _attempted() -> Any:
        """attempts + 1 when the command was out with a worker (claimed), else unchanged."""
        t = table(OutboxCommand)
        return case((t.c.status == "claimed", t.c.attempts + 1), else_=t.c.attempts)

    def complete_command(
        self, command_id: str, response: Mapping[str, Any] | None, status: str = "confirmed"
    ) -> None:
        """The system took the command: ``sent`` (awaiting its confirmation event) or
        ``confirmed``."""
        if status not in ("sent", "confirmed"):
            raise LedgerError(f"complete_command: status must be sent or confirmed, not {status!r}")
        now = self._clock()
        self._set_command(
            command_id,
            status=status,
            response=None if response is None else dict(response),
            attempts=self._attempted(),
            completed_at=now if status == "confirmed" else None,
            claimed_by=None,
            lease_until=None,
            error=None,
            updated_at=now,
        )

    def fail_command(self, command_id: str, error: str, retry_at: datetime) -> None:
        """A transient failure: try again at ``retry_at``."""
        t = table(OutboxCommand)
        self._set_command(
            command_id,
            status="failed",
            error=error,
            attempts=t.c.attempts + 1,
            next_attempt_at=retry_at,
            claimed_by=None,
            lease_until=None,
        )

    def dead_letter(self, command_id: str, reason: str) -> None:
        """A permanent failure: the command will not be tried again."""
        self._finish(command_id, "dead", reason)

    def cancel_command(self, command_id: str, reason: str) -> None:
        """No longer wanted (the conversation moved on); never sent again."""
        self._finish(command_id, "cancelled", reason)

    def _finish(self, command_id: str, status: str, reason: str) -> None:
        now = self._clock()
        self._set_command(
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
        """Give a claimed command back (worker shutting down): pending again, no lease."""
        self._set_command(command_id, status="pending", claimed_by=None, lease_until=None)

    # inbox ----------------------------------------------------------------------------
    def mark_event(
        self,
        event_id: int,
        status: str,
        error: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Record what became of one inbox event."""
        self.mark_events([event_id], status, error=error, correlation_id=correlation_id)

    def mark_events(
        self,
        event_ids: Sequence[int],
        status: str,
        error: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Record the same outcome for several inbox events in one statement."""
        if status not in EVENT_STATUSES:
            raise LedgerError(f"unknown inbox status {status!r}")
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "processed_at": None if status == "pending" else self._clock(),
        }
        if correlation_id is not None:
            values["correlation_id"] = correlation_id
        t = table(InboxEvent)
        result = self.session.execute(update(t).where(t.c.id.in_(event_ids)).values(values))
        if result.rowcount != len(set(event_ids)):  # type: ignore[attr-defined]
            raise NotFound(f"inbox event(s) {', '.join(map(str, event_ids))}")


class Ledger:
    """The ledger of one bridge: a SQLite file or a PostgreSQL database."""

    def __init__(self, url: str, *, now: Callable[[], datetime] = utcnow) -> None:
        self.engine = make_engine(url)
        self._reader = self.engine.execution_options(**{READ_ONLY: True})
        self.clock = _Clock(now)

    @classmethod
    def from_settings(cls, settings: Settings) -> Ledger:
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

    # sessions -------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[LedgerTx]:
        """One write transaction: committed when the block ends, rolled back on error."""
        with (
            guard(self.engine, "writing"),
            Session(self.engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield LedgerTx(session, self.clock)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session (never blocks writers on SQLite)."""
        with (
            guard(self.engine, "reading"),
            Session(self._reader, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    # inbox and cursors ----------------------------------------------------------------
    def record_events(
        self, stream: str, events: Sequence[NewEvent], cursor: str | None
    ) -> RecordResult:
        """Insert the events that are new and move the stream's cursor, atomically.
        Replays hit the (source, source_event_id) key and are dropped, not errors."""
        now = self.clock()
        rows = [
            {
                "source": e.source,
                "stream": stream,
                "source_event_id": e.source_event_id,
                "kind": e.kind,
                "occurred_at": e.occurred_at,
                "received_at": now,
                "payload": dict(e.payload),
                "correlation_id": e.correlation_id,
                "status": "pending",
            }
            for e in events
        ]
        with self.transaction() as tx:
            inserted: dict[str, int] = {}
            if rows:
                t = table(InboxEvent)
                stmt = (
                    _insert(tx.session, InboxEvent)
                    .on_conflict_do_nothing(index_elements=["source", "source_event_id"])
                    .returning(t.c.id, t.c.source, t.c.source_event_id)
                )
                for row in tx.session.execute(stmt, rows):
                    inserted[f"{row.source}\0{row.source_event_id}"] = row.id
            if cursor is not None:
                self._upsert_cursor(tx.session, stream, cursor, now)
        new_ids = sorted(inserted.values())
        duplicates: list[str] = []
        for e in events:  # a repeat inside the batch is a duplicate too
            if inserted.pop(f"{e.source}\0{e.source_event_id}", None) is None:
                duplicates.append(e.source_event_id)
        return RecordResult(new_ids, duplicates, cursor)

    @staticmethod
    def _upsert_cursor(session: Session, stream: str, position: str, now: datetime) -> None:
        stmt = _insert(session, Cursor).values(stream=stream, position=position, updated_at=now)
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["stream"],
                set_={"position": stmt.excluded.position, "updated_at": stmt.excluded.updated_at},
            )
        )

    def get_cursor(self, stream: str) -> str | None:
        with self.reading() as session:
            found = session.get(Cursor, stream)
            return None if found is None else found.position

    def set_cursor(self, stream: str, position: str) -> None:
        with self.transaction() as tx:
            self._upsert_cursor(tx.session, stream, position, self.clock())

    def delete_cursor(self, stream: str) -> None:
        """Forget the stream's position: its intake starts over (as on first start)."""
        with self.transaction() as tx:
            tx.session.execute(delete(table(Cursor)).where(table(Cursor).c.stream == stream))

    def pending_events(self, limit: int) -> list[InboxEvent]:
        """Unprocessed events, oldest first."""
        stmt = select(InboxEvent).where(col(InboxEvent.status) == "pending")
        with self.reading() as session:
            return list(session.scalars(stmt.order_by(col(InboxEvent.id)).limit(limit)))

    # outbox ---------------------------------------------------------------------------
    def claim_commands(
        self, worker: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[OutboxCommand]:
        """Lease up to ``limit`` due commands to ``worker``.

        Due: pending (and its first attempt time reached), failed with its retry time
        reached, or claimed with an expired lease. A command waits while an earlier
        command of its correlation is unfinished, so each conversation's commands go out
        in order. On PostgreSQL rows are locked with SKIP LOCKED (concurrent claimers
        never share a command); on SQLite the write transaction serialises claimers.
        """
        c = table(OutboxCommand).alias("c")
        p = table(OutboxCommand).alias("p")
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
                p.c.status.in_(UNFINISHED_COMMAND_STATUSES),
                or_(
                    p.c.created_at < c.c.created_at,
                    and_(p.c.created_at == c.c.created_at, p.c.id < c.c.id),
                ),
            )
            .exists()
        )
        pick = (
            select(c.c.id)
            .where(due, ~earlier_unfinished)
            .order_by(c.c.created_at, c.c.id)
            .limit(limit)
        )
        if self.engine.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True, of=c)
        t = table(OutboxCommand)
        with self.transaction() as tx:
            ids = list(tx.session.execute(pick).scalars())
            if not ids:
                return []
            tx.session.execute(
                update(t)
                .where(t.c.id.in_(ids))
                .values(
                    status="claimed",
                    claimed_by=worker,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
            )
            stmt = select(OutboxCommand).where(col(OutboxCommand.id).in_(ids))
            claimed = {cmd.id: cmd for cmd in tx.session.scalars(stmt)}
            return [claimed[i] for i in ids]

    def complete_command(
        self, command_id: str, response: Mapping[str, Any] | None, status: str = "confirmed"
    ) -> None:
        """See ``LedgerTx.complete_command``; in a transaction of its own."""
        with self.transaction() as tx:
            tx.complete_command(command_id, response, status)

    def fail_command(self, command_id: str, error: str, retry_at: datetime) -> None:
        """See ``LedgerTx.fail_command``; in a transaction of its own."""
        with self.transaction() as tx:
            tx.fail_command(command_id, error, retry_at)

    def dead_letter(self, command_id: str, reason: str) -> None:
        """See ``LedgerTx.dead_letter``; in a transaction of its own."""
        with self.transaction() as tx:
            tx.dead_letter(command_id, reason)

    def cancel_command(self, command_id: str, reason: str) -> None:
        """See ``LedgerTx.cancel_command``; in a transaction of its own."""
        with self.transaction() as tx:
            tx.cancel_command(command_id, reason)

    def release(self, command_id: str) -> None:
        """See ``LedgerTx.release``; in a transaction of its own."""
        with self.transaction() as tx:
            tx.release(command_id)

    def get_command(self, command_id: str) -> OutboxCommand:
        with self.reading() as session:
            found = session.get(OutboxCommand, command_id)
        if found is None:
            raise NotFound(f"outbox command {command_id}")
        return found

    # reconciliation -------------------------------------------------------------------
    def start_run(self, reconcilers: Sequence[str], mode: str) -> ReconcileRun:
        if mode not in ("dry_run", "apply"):
            raise LedgerError(f"reconcile mode must be dry_run or apply, not {mode!r}")
        run = ReconcileRun(reconcilers=list(reconcilers), mode=mode, started_at=self.clock())
        with self.transaction() as tx:
            tx.session.add(run)
        return run

    def add_finding(
        self,
        run_id: str,
        *,
        reconciler: str,
        kind: str,
        subject: str,
        status: str,
        correlation_id: str | None = None,
        action: str | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Finding:
        finding = Finding(
            run_id=run_id,
            reconciler=reconciler,
            kind=kind,
            subject=subject,
            status=status,
            correlation_id=correlation_id,
            action=action,
            reason=reason,
            detail=dict(detail or {}),
            created_at=self.clock(),
        )
        with self.transaction() as tx:
            tx.session.add(finding)
        return finding

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any]) -> ReconcileRun:
        with self.transaction() as tx:
            run = tx.session.get(ReconcileRun, run_id)
            if run is None:
                raise NotFound(f"reconcile run {run_id}")
            run.status = status
            run.summary = dict(summary)
            run.finished_at = self.clock()
        return run
