"""The org's change log: one Change Data Capture event per create, update and delete.

Every write of the store appends here under the org lock. Events carry what the CDC
``ChangeEventHeader`` needs (transaction key, sequence number in the transaction, commit
timestamp and number on the sandbox clock, commit user) and the record as it stood, so that
a channel can enrich its events with the fields its filter names. Events are kept for the
retention period (72 h of sandbox time). Inside the sandbox a replay id is an increasing
integer; on the wire (``replay_bytes``) it is opaque bytes that sort in the same order and
name the log's epoch, so ids of a voided log (an org moved to another instance) are refused.
"""

from __future__ import annotations

import bisect
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bridge_sandbox.serving import Clock

RETENTION = timedelta(hours=72)

# epoch (4 bytes) + position (8 bytes), big-endian: byte order is replay order.
_REPLAY = struct.Struct(">IQ")


@dataclass(frozen=True)
class ChangeEvent:
    """One Change Data Capture event: what changed, when, by whom, with the new values.

    ``values`` are the fields the change set (all set fields for CREATE); ``record`` is the
    whole record after the change (as it was, for DELETE), for enrichment and filters.
    """

    replay_id: int
    entity: str
    change_type: str  # CREATE | UPDATE | DELETE
    record_id: str
    changed_fields: tuple[str, ...]
    commit_timestamp: datetime
    values: Mapping[str, Any] = field(default_factory=dict)
    record: Mapping[str, Any] = field(default_factory=dict, compare=False)
    transaction_key: str = ""
    sequence_number: int = 1
    commit_number: int = 0
    commit_user: str = ""


@dataclass
class _Transaction:
    key: str
    number: int
    timestamp: datetime
    user: str
    depth: int = 0
    sequence: int = 0


class ChangeLog:
    """The org's change events in replay-id order, kept for the retention period."""

    def __init__(self, clock: Clock, retention: timedelta = RETENTION) -> None:
        self._clock = clock
        self._retention = retention
        self._events: list[ChangeEvent] = []
        self._replay_ids: list[int] = []
        self._next = 1
        self._epoch = 1
        # the lowest position a subscriber may resume from: after a reset, the mark where
        # the log restarted; after retention dropped events, just past the last dropped one
        self._valid_from = 0
        self._commits = 0
        # readers see events up to here: a transaction's events show when it commits
        self._visible = 0
        self._transaction: _Transaction | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    # -- writing ----------------------------------------------------------------------
    @contextmanager
    def transaction(self, user: str = "") -> Iterator[None]:
        """Events appended inside share one transaction key, commit number and timestamp
        (the outermost call opens it: writes made by the org's behaviours join it)."""
        with self._lock:
            if self._transaction is None:
                self._commits += 1
                self._transaction = _Transaction(
                    str(uuid.uuid4()), self._commits, self._clock.now(), user
                )
            tx = self._transaction
            tx.depth += 1
        committed = False
        try:
            yield
        finally:
            with self._lock:
                tx.depth -= 1
                if tx.depth == 0:
                    self._transaction = None
                    committed = self._visible < self._next - 1
                    self._visible = self._next - 1
                listeners = list(self._listeners)
            if committed:
                for listener in listeners:
                    listener()

    def append(  # noqa: PLR0917 - the store's call shape
        self,
        entity: str,
        change_type: str,
        record_id: str,
        changed_fields: Iterable[str],
        values: Mapping[str, Any] | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> int:
        with self._lock:
            tx = self._transaction
            alone = tx is None
            if tx is None:  # a write outside any transaction commits alone
                self._commits += 1
                tx = _Transaction(str(uuid.uuid4()), self._commits, self._clock.now(), "")
            tx.sequence += 1
            replay_id = self._next
            self._next += 1
            event = ChangeEvent(
                replay_id,
                entity,
                change_type,
                record_id,
                tuple(changed_fields),
                tx.timestamp,
                dict(values or {}),
                dict(record or values or {}),
                tx.key,
                tx.sequence,
                tx.number,
                tx.user,
            )
            self._events.append(event)
            self._replay_ids.append(replay_id)
            self._prune()
            if not alone:
                return replay_id
            self._visible = replay_id
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return replay_id

    def listen(self, listener: Callable[[], None]) -> None:
        """Called after every commit (cheap and non-blocking: it may run under the org lock)."""
        with self._lock:
            self._listeners.append(listener)

    # -- reading ----------------------------------------------------------------------
    def since(self, replay_id: int = 0, entity: str | None = None) -> list[ChangeEvent]:
        """Events after ``replay_id`` (0: all retained), optionally of one entity."""
        with self._lock:
            start = bisect.bisect_right(self._replay_ids, replay_id)
            end = bisect.bisect_right(self._replay_ids, self._visible)
            events = self._events[start:end]
        return [e for e in events if entity is None or e.entity == entity]

    def after(self, replay_id: int, limit: int) -> list[ChangeEvent]:
        """At most ``limit`` retained events after ``replay_id``."""
        with self._lock:
            start = bisect.bisect_right(self._replay_ids, replay_id)
            end = bisect.bisect_right(self._replay_ids, self._visible)
            return self._events[start : min(end, start + limit)]

    @property
    def latest_replay_id(self) -> int:
        with self._lock:
            return self._next - 1

    @property
    def committed_replay_id(self) -> int:
        """The latest replay id of a committed transaction (what subscribers may see)."""
        with self._lock:
            return self._visible

    @property
    def earliest_replay_id(self) -> int | None:
        with self._lock:
            return self._replay_ids[0] if self._replay_ids else None

    @property
    def earliest_position(self) -> int:
        """Where an EARLIEST subscription starts: before the oldest retained event."""
        with self._lock:
            return self._replay_ids[0] - 1 if self._replay_ids else self._next - 1

    # -- replay ids on the wire -------------------------------------------------------
    def replay_bytes(self, replay_id: int) -> bytes:
        with self._lock:
            return _REPLAY.pack(self._epoch, replay_id)

    def position(self, raw: bytes) -> int | None:
        """The position a client's replay id names; None when it is not one of this log's
        ids, or resuming after it would skip events that retention already dropped."""
        if len(raw) != _REPLAY.size:
            return None
        epoch, replay_id = (int(v) for v in _REPLAY.unpack(raw))
        with self._lock:
            if epoch != self._epoch or not self._valid_from <= replay_id <= self._visible:
                return None
            return replay_id

    # -- retention and controls -------------------------------------------------------
    def clear(self) -> None:
        """Forget every event (reset): replay ids never go back; older ids stop being valid."""
        with self._lock:
            self._events.clear()
            self._replay_ids.clear()
            self._valid_from = self._next - 1
            self._visible = self._next - 1

    def expire(self) -> int:
        """Every retained event falls out of retention now; returns how many."""
        with self._lock:
            dropped = len(self._events)
            self._drop(dropped)
            return dropped

    def void(self) -> None:
        """Every replay id handed out so far stops being valid (org moved to another
        instance); events stay deliverable to LATEST / EARLIEST subscriptions."""
        with self._lock:
            self._epoch += 1

    def rollback_to(self, replay_id: int) -> None:
        """Forget the events after ``replay_id`` (a transaction that did not commit)."""
        with self._lock:
            keep = bisect.bisect_right(self._replay_ids, replay_id)
            del self._events[keep:]
            del self._replay_ids[keep:]
            self._next = replay_id + 1
            self._visible = min(self._visible, replay_id)

    def prune(self) -> None:
        with self._lock:
            self._prune()

    def _prune(self) -> None:
        cutoff = self._clock.now() - self._retention
        drop = 0
        while drop < len(self._events) and self._events[drop].commit_timestamp < cutoff:
            drop += 1
        self._drop(drop)

    def _drop(self, count: int) -> None:
        if count:
            self._valid_from = max(self._valid_from, self._replay_ids[count - 1] + 1)
            del self._events[:count]
            del self._replay_ids[:count]
