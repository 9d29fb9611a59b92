"""What a change stream reports to ``/metrics``: per recorded batch (events by channel,
entity and change type, lag from the source's commit to the inbox commit) and, from the
runner's status, whether it is up and how often it reconnected or gave up its position.

The status counters live on ``StreamStatus`` (the runner counts them); ``StatusObserver``
turns their growth into Prometheus counters each time it looks, so the runner needs no
metrics of its own.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge.flow.streams import Batch
from bridge.ledger.ports import NewEvent, RecordResult
from bridge.metrics import (
    observe_replay_fallback,
    observe_stream_events,
    observe_stream_reconnect,
    observe_stream_up,
)

UNKNOWN = "unknown"


def change_type(event: NewEvent) -> str:
    """The event's change type as the source named it (CDC ``changeType``, PushTopic
    ``event.type``), wherever the client left it in the payload; ``unknown`` otherwise."""
    payload = event.payload
    for holder in (payload, payload.get("ChangeEventHeader"), payload.get("event")):
        if isinstance(holder, Mapping):
            for key in ("changeType", "change_type", "type"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value.upper()
    return UNKNOWN


def batch_observer(channel: str) -> Callable[[str, Batch, RecordResult], None]:
    """The runner's ``observe`` callback for a stream on ``channel``."""

    def observe(stream: str, batch: Batch, result: RecordResult) -> None:
        committed = datetime.now(UTC)
        duplicates, stale = set(result.duplicates), set(result.stale)
        counts: Counter[tuple[str, str, str]] = Counter()
        lags: list[float] = []
        for event in batch.events:
            if event.source_event_id in duplicates:
                outcome = "duplicate"
            elif event.source_event_id in stale:
                outcome = "stale"
            else:
                outcome = "recorded"
                occurred = event.occurred_at
                if occurred.tzinfo is None:
                    occurred = occurred.replace(tzinfo=UTC)
                lags.append((committed - occurred).total_seconds())
            counts[(event.kind, change_type(event), outcome)] += 1
        observe_stream_events(stream, channel, counts, lags)

    return observe


class StreamState(Protocol):
    """What the observer reads of a runner's ``StreamStatus``."""

    connected: bool
    down_since: float | None
    reconnects: int
    watchdog_resubscribes: int
    refused: int


class StatusObserver:
    """Turns a runner's status counters into metrics; call ``look`` now and then (the
    daemon's gauge job, or every readiness probe)."""

    def __init__(self, stream: str, mode: str) -> None:
        self.stream = stream
        self.mode = mode
        self._seen: dict[str, int] = {}

    def look(self, status: StreamState, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        down_for = 0.0 if status.down_since is None else now - status.down_since
        observe_stream_up(self.stream, self.mode, status.connected, down_for)
        # the runner counts a watchdog resubscribe apart from a lost connection
        observe_stream_reconnect(self.stream, "lost", self._grown("reconnects", status))
        observe_stream_reconnect(
            self.stream, "silent", self._grown("watchdog_resubscribes", status)
        )
        observe_replay_fallback(self.stream, "refused", self._grown("refused", status))

    def _grown(self, name: str, status: Any) -> int:
        value = int(getattr(status, name))
        grown = value - self._seen.get(name, 0)
        self._seen[name] = value
        return max(0, grown)
