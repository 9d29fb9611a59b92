"""Intake: what a system says becomes typed events in the inbox, with the stream's cursor
moved in the same transaction (``Ledger.record_events``). A replayed change hits the
inbox's unique key and is dropped, so delivery can be at-least-once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bridge.metrics import EVENTS_IN, INTAKE_LAG

log = logging.getLogger(__name__)

# Salesforce and ServiceNow timestamps are written when a transaction commits, not when it
# began; a change committed late can carry a time just before the newest one already read.
# Each poll re-reads this window and the inbox drops what it has seen.
DEFAULT_OVERLAP_SECONDS = 5.0
PAGE = 2000


@dataclass(frozen=True)
class PollResult:
    stream: str
    recorded: int
    duplicates: int
    lag_seconds: float | None

    def handed(self, on_recorded: Callable[[PollResult], None] | None) -> PollResult:
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
