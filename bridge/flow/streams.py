"""The stream base: a long-running subscription (Pub/Sub API, Bayeux) whose batches of
events are recorded in the inbox with the stream's position in the same transaction.

A mode-specific client implements ``Subscription``: ``open(position)`` subscribes after a
stored position (None: from the newest) and yields ``Batch`` es; it raises
``PositionRefused`` when the source refuses the position (retention, corrupted id, org
migration) and any other exception when the connection is lost. ``StreamRunner`` holds the
rest, the same for every mode:

- first start (no stored position): subscribe from the newest, then one catch-up read of
  what is live now (today's polls), so that nothing committed before the subscription is
  missed;
- restart: subscribe after the stored position;
- position refused: a finding in the ledger (never a silent jump), the position dropped,
  then as on first start;
- a watchdog: no batch (events or keepalive) for ``keepalive_timeout`` seconds → the
  subscription is closed and opened again from the stored position;
- a lost connection → reconnect with exponential back-off and jitter.

The position is opaque to the base: each client encodes its own (``StreamPosition`` is a
shared encoding of a replay id and the org it came from).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from tenacity import RetryCallState, wait_exponential_jitter

from bridge.ledger import rows
from bridge.ledger.ports import Ledger, NewEvent, RecordResult

log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_TIMEOUT = 120.0
# Finding kind of a position the source refused, and the reconciler name it is filed under.
POSITION_REFUSED = "stream_position_refused"
STREAM_FINDINGS = "stream"


# --- what crosses the interface -----------------------------------------------------------


@dataclass(frozen=True)
class StreamPosition:
    """A replay id (as the client writes it: hex of Pub/Sub bytes, a Bayeux integer) and
    the org instance it came from (a replay id is void on another instance)."""

    replay_id: str
    origin: str = ""
    # when the event at this position was committed at the source, if known
    at: datetime | None = None

    def encode(self) -> str:
        data: dict[str, Any] = {"replay_id": self.replay_id}
        if self.origin:
            data["origin"] = self.origin
        if self.at is not None:
            data["at"] = self.at.isoformat()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def decode(cls, position: str) -> StreamPosition:
        data = json.loads(position)
        at = data.get("at")
        return cls(
            str(data["replay_id"]),
            str(data.get("origin", "")),
            datetime.fromisoformat(at) if at else None,
        )


@dataclass(frozen=True)
class Batch:
    """What one delivery brought: events (maybe none: a keepalive) and the position the
    stream stands at after them (None: the client gives none; the stored one stays)."""

    events: Sequence[NewEvent] = ()
    position: str | None = None
    # the source's commit time of the newest event (lag)
    committed_at: datetime | None = None
    # what could not be read (undecodable, unknown schema): recorded with the batch and
    # marked ``error`` with the reason, so that it shows in ``bridge ledger events``
    errors: Sequence[tuple[NewEvent, str]] = ()


class PositionRefused(Exception):
    """The source refused the stored position (outside retention, corrupted, another
    org): the stream must catch up by reading and start again from the newest."""

    def __init__(self, position: str | None, reason: str) -> None:
        super().__init__(reason)
        self.position = position
        self.reason = reason


class Subscription(Protocol):
    """A mode-specific stream client."""

    def open(self, position: str | None) -> Iterator[Batch]:
        """Subscribe after ``position`` (None: from the newest) and yield what arrives.
        By the time the first batch is asked for, the subscription must be requested (the
        catch-up read of a first start runs then). Raises ``PositionRefused``, or any
        other exception for a lost connection; returns when the source ends the stream."""
        ...

    def close(self) -> None:
        """End the open subscription from another thread (watchdog, shutdown): the
        iterator ``open`` returned ends or raises soon after."""
        ...


@dataclass
class StreamStatus:
    """How a stream stands (readiness, metrics, ``ledger stats``)."""

    connected: bool = False
    position: str | None = None
    last_batch_at: float | None = None  # monotonic
    last_event_at: datetime | None = None
    reconnects: int = 0
    watchdog_resubscribes: int = 0
    refused: int = 0
    catch_ups: int = 0
    recorded: int = 0
    duplicates: int = 0
    error: str | None = None
    down_since: float | None = field(default_factory=time.monotonic)  # monotonic


# --- the ledger side ------------------------------------------------------------------------


class _Runs(Protocol):
    """The SQL ledger's reconcile runs (where findings are filed)."""

    def start(self, reconcilers: Sequence[str], mode: str) -> Any: ...

    def add(self, *findings: Any) -> None: ...

    def finish(self, run_id: str, status: str, summary: Mapping[str, Any]) -> Any: ...


class _Lookups(Protocol):
    def latest_payloads(
        self, source: str, kind: str, record_ids: Sequence[str]
    ) -> dict[str, Any]: ...


class StreamLedger:
    """What a stream needs of the ledger: its position, batches recorded with the position
    in one transaction, findings."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def position(self, stream: str) -> str | None:
        with self._ledger.reading() as tx:
            return tx.cursors.get(stream)

    def record(
        self,
        stream: str,
        events: Sequence[NewEvent],
        position: str | None,
        errors: Sequence[tuple[NewEvent, str]] = (),
    ) -> RecordResult:
        """The events, the unreadable ones marked ``error``, and the position: one
        transaction."""
        if not events and not errors and position is None:
            return RecordResult([], [], None)
        # what could not be read is recorded already decided: error, with the reason
        refused = [replace(e, status="error", error=why) for e, why in errors]
        with self._ledger.transaction() as tx:
            return tx.inbox.record(stream, [*refused, *events], position)

    def refused(self, stream: str, position: str | None, reason: str) -> None:
        """Drop the refused position and file a finding, in one transaction."""
        with self._ledger.transaction() as tx:
            tx.cursors.delete(stream)
            runs: _Runs | None = getattr(tx, "runs", None)
            if runs is None:  # the memory ledger keeps no findings
                log.warning("stream %s: position refused (%s)", stream, reason)
                return
            run = runs.start([STREAM_FINDINGS], "apply")
            runs.add(
                rows.Finding(
                    run_id=run.id,
                    reconciler=STREAM_FINDINGS,
                    kind=POSITION_REFUSED,
                    subject=stream,
                    action="catch_up",
                    status="applied",
                    reason=reason,
                    detail={"position": position},
                )
            )
            runs.finish(run.id, "succeeded", {"counts": {POSITION_REFUSED: 1}})

    def last_records(self, source: str, kind: str, record_ids: Sequence[str]) -> dict[str, Any]:
        """The newest payload recorded per record id for events of ``kind`` (what a change
        event carrying only the changed fields is merged onto); empty on a ledger without
        lookups (the memory one)."""
        if not record_ids:
            return {}
        with self._ledger.reading() as tx:
            lookups: _Lookups | None = getattr(tx, "lookups", None)
            return {} if lookups is None else lookups.latest_payloads(source, kind, record_ids)

    def forget(self, stream: str) -> None:
        with self._ledger.transaction() as tx:
            tx.cursors.delete(stream)


# --- the runner -----------------------------------------------------------------------------


def backoff(attempt: int, *, initial: float = 0.5, maximum: float = 60.0) -> float:
    """Exponential back-off with jitter (tenacity's strategy)."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return float(wait_exponential_jitter(multiplier=initial, max=maximum)(state))


class StreamRunner:
    """Runs one subscription until stopped: records every batch, resubscribes on a lost
    connection or a silent stream, falls back to a catch-up read on a refused position."""

    def __init__(
        self,
        stream: str,
        subscription: Subscription,
        ledger: Ledger,
        *,
        catch_up: Callable[[], object],
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        on_recorded: Callable[[int], None] | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        observe: Callable[[str, Batch, RecordResult], None] | None = None,
    ) -> None:
        self.stream = stream
        self.status = StreamStatus()
        self._subscription = subscription
        self._ledger = StreamLedger(ledger)
        self._catch_up = catch_up
        self._timeout = keepalive_timeout
        self._on_recorded = on_recorded
        self._backoff = (backoff_initial, backoff_max)
        self._observe = observe
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._silent = threading.Event()  # the watchdog closed the subscription
        self._busy = False  # recording or catching up (see _working)

    # public ---------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Subscribe, record, resubscribe, until ``stop`` (or ``self.stop()``)."""
        if stop is not None:
            self._stop = stop
        watchdog = threading.Thread(target=self._watch, name=f"watchdog:{self.stream}", daemon=True)
        watchdog.start()
        attempt = 0
        while not self._stop.is_set():
            try:
                if self.run_once():
                    attempt = 0
            except Exception as exc:  # noqa: BLE001 - a lost stream is retried, not fatal
                self.status.error = f"{type(exc).__name__}: {exc}"
                log.warning("stream %s lost: %s", self.stream, self.status.error)
            if self._stop.is_set():
                break
            if self._silent.is_set():
                self._silent.clear()
                continue  # resubscribe at once: the stream was silent, not failing
            attempt += 1
            self.status.reconnects += 1
            self._stop.wait(backoff(attempt, initial=self._backoff[0], maximum=self._backoff[1]))

    def stop(self) -> None:
        self._stop.set()
        self._subscription.close()

    def run_once(self) -> bool:
        """One subscription, from the stored position, until it ends; True when it
        delivered at least one batch. Raises what the client raises, except a refused
        position, which is handled here (finding, catch-up, resubscribed from the newest)."""
        position = self._ledger.position(self.stream)
        self.status.position = position
        try:
            return self._consume(position)
        except PositionRefused as refused:
            self.status.refused += 1
            log.warning("stream %s: position refused: %s", self.stream, refused.reason)
            self._ledger.refused(self.stream, position, refused.reason)
            self.status.position = None
            return self._consume(None)

    # internals ------------------------------------------------------------------------
    def _consume(self, position: str | None) -> bool:
        batches = self._subscription.open(position)
        self._touch()
        self.status.connected = True
        self.status.error = None
        self.status.down_since = None
        delivered = False
        try:
            if position is None:
                # subscribed from the newest: read what is live now, once
                self.status.catch_ups += 1
                with self._working():
                    self._catch_up()
            for batch in batches:
                delivered = True
                with self._working():
                    self._record(batch)
                if self._stop.is_set():
                    break
        finally:
            self.status.connected = False
            self.status.down_since = time.monotonic()
            close = getattr(batches, "close", None)
            if callable(close):
                close()
        return delivered

    def _record(self, batch: Batch) -> None:
        # a keepalive at the stored position writes nothing
        position = None if batch.position == self.status.position else batch.position
        if not batch.events and not batch.errors and position is None:
            return
        result = self._ledger.record(self.stream, batch.events, position, batch.errors)
        if position is not None:
            self.status.position = position
        self.status.recorded += len(result.inserted)
        self.status.duplicates += len(result.duplicates)
        if batch.committed_at is not None:
            self.status.last_event_at = batch.committed_at
        if self._observe is not None:
            self._observe(self.stream, batch, result)
        if result.inserted and self._on_recorded is not None:
            self._on_recorded(len(result.inserted))

    def _touch(self) -> None:
        with self._lock:
            self.status.last_batch_at = time.monotonic()

    @contextmanager
    def _working(self) -> Iterator[None]:
        """The bridge's own work (recording, the catch-up read): the watchdog measures
        only the source's silence, not the time spent here."""
        with self._lock:
            self._busy = True
        try:
            yield
        finally:
            with self._lock:
                self._busy = False
                self.status.last_batch_at = time.monotonic()

    def _watch(self) -> None:
        tick = max(0.05, min(1.0, self._timeout / 4))
        while not self._stop.wait(tick):
            with self._lock:
                seen = None if self._busy else self.status.last_batch_at
            if (
                self.status.connected
                and seen is not None
                and time.monotonic() - seen > self._timeout
            ):
                log.warning(
                    "stream %s: nothing for %.0fs (no event, no keepalive): resubscribing",
                    self.stream,
                    self._timeout,
                )
                self.status.watchdog_resubscribes += 1
                self._silent.set()
                self._touch()
                self._subscription.close()


def lag_seconds(batch: Batch, now: datetime | None = None) -> float | None:
    """Source commit → recorded, for the metrics."""
    if batch.committed_at is None:
        return None
    return ((now or datetime.now(UTC)) - batch.committed_at).total_seconds()


def record_ids(events: Iterable[NewEvent]) -> list[str]:
    """The record ids a batch's events carry (payload ``Id``)."""
    return [str(e.payload["Id"]) for e in events if "Id" in e.payload]
