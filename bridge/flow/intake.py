"""Intake: what a system says becomes typed events in the inbox, with the stream's cursor
moved in the same transaction. A replayed change hits the inbox's unique key and is
dropped, so delivery can be at-least-once.

Every stream's cursor is a ``Watermark`` (the newest change time read, and the key that
breaks ties at that time) in one encoding, whatever system it reads.

A poll re-reads an overlap window before the watermark (changes committed late), but not for
ever: once a poll has read that window ``overlap`` seconds after the watermark was reached,
nothing committed late can still carry a time up to it, and the watermark is *settled*:
polls read strictly after it. Records that never change (a PSR nobody routes, the newest
closed AgentWork) are then not read again on every poll."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bridge.ledger.ports import Ledger, NewEvent, RecordResult
from bridge.metrics import EVENTS_IN, INTAKE_LAG

log = logging.getLogger(__name__)

# Salesforce and ServiceNow timestamps are written when a transaction commits, not when it
# began; a change committed late can carry a time just before the newest one already read.
# Each poll re-reads this window and the inbox drops what it has seen.
DEFAULT_OVERLAP_SECONDS = 5.0
PAGE = 2000


@dataclass(frozen=True)
class Watermark:
    """How far a stream has read: changes up to ``at`` and, at ``at`` itself, up to ``key``
    (a keyset read's tie-breaker; empty when the stream reads by time alone)."""

    at: datetime
    key: str = ""
    # When the bridge reached this position (its own clock: intervals, not the source's
    # times), and whether the overlap window behind it has been read since: not part of
    # the position itself.
    reached: datetime | None = field(default=None, compare=False)
    settled: bool = field(default=False, compare=False)

    def encode(self) -> str:
        data: dict[str, object] = {"at": self.at.isoformat(), "key": self.key}
        if self.reached is not None:
            data["reached"] = self.reached.isoformat()
        if self.settled:
            data["settled"] = True
        return json.dumps(data, sort_keys=True)

    @classmethod
    def decode(cls, position: str) -> Watermark:
        """The stored cursor; the two encodings of earlier releases are read too
        (Salesforce: an ISO time; ServiceNow: ``YYYY-MM-DD HH:MM:SS|sys_id``)."""
        if position.startswith("{"):
            data = json.loads(position)
            reached = data.get("reached")
            return cls(
                datetime.fromisoformat(data["at"]),
                str(data.get("key", "")),
                reached=datetime.fromisoformat(reached) if reached else None,
                settled=bool(data.get("settled", False)),
            )
        stamp, _, key = position.partition("|")
        at = datetime.fromisoformat(stamp)
        return cls(at if at.tzinfo else at.replace(tzinfo=UTC), key)

    def after_window(self, now: datetime, overlap: timedelta) -> Watermark | None:
        """What to store after a poll at ``now`` read the overlap window behind this
        watermark and found nothing newer: settled once it was reached ``overlap`` ago
        (when it was reached is stamped first on a cursor of an earlier release); None when
        nothing changes."""
        if self.settled:
            return None
        if self.reached is None:
            return replace(self, reached=now)
        if now - self.reached >= overlap:
            return replace(self, settled=True)
        return None


class StreamRecorder:
    """What an intake needs of the ledger: its streams' watermarks, and events recorded
    with the watermark they reach in one transaction."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def watermark(self, stream: str) -> Watermark | None:
        with self._ledger.reading() as tx:
            position = tx.cursors.get(stream)
        return None if position is None else Watermark.decode(position)

    def record(
        self, stream: str, events: Sequence[NewEvent], reached: Watermark | None
    ) -> RecordResult:
        if not events and reached is None:
            return RecordResult([], [], None)  # nothing to write: no transaction
        with self._ledger.transaction() as tx:
            return tx.inbox.record(stream, events, None if reached is None else reached.encode())

    def forget(self, *streams: str) -> None:
        """The streams start over, as on first start."""
        with self._ledger.transaction() as tx:
            for stream in streams:
                tx.cursors.delete(stream)


@dataclass(frozen=True)
class PollResult:
    stream: str
    recorded: int
    duplicates: int
    lag_seconds: float | None

    def pass_on(self, on_recorded: Callable[[PollResult], None] | None) -> PollResult:
        """Pass this result on when it brought new events; returns it."""
        if on_recorded is not None and self.recorded:
            on_recorded(self)
        return self

    def observe(self, source: str, kind: str) -> None:
        """Count what this poll did in the metrics."""
        EVENTS_IN.labels(source, kind, "recorded").inc(self.recorded)
        EVENTS_IN.labels(source, kind, "duplicate").inc(self.duplicates)
        if self.lag_seconds is not None:
            INTAKE_LAG.labels(self.stream).set(self.lag_seconds)


class Intake(Protocol):
    """One system's intake: ``poll`` reads what changed since the cursor and records it."""

    name: str

    def streams(self) -> tuple[str, ...]:
        """The cursor names this intake keeps in the ledger."""
        ...

    def poll(
        self, now: datetime, on_recorded: Callable[[PollResult], None] | None = None
    ) -> list[PollResult]:
        """Read every stream; ``on_recorded`` is called as soon as a stream has recorded
        new events, so that they are processed before the next stream is read."""
        ...

    def reset(self) -> None:
        """Forget the cursors: the next poll re-reads as on first start."""
        ...
