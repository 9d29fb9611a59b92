"""The stream base (bridge/flow/streams.py) on a scripted subscription and the memory
ledger: where each session starts from, what is recorded with which position, a refused
position, keepalives. No sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from bridge.flow.streams import Batch, PositionRefused, StreamPosition, StreamRunner
from bridge.ledger.memory import MemoryLedger
from bridge.ledger.ports import NewEvent

STREAM = "test:stream"
AT = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def event(n: int) -> NewEvent:
    return NewEvent("salesforce", f"psr:0JR{n}:tx", "psr", AT, {"Id": f"0JR{n}"})


def at(replay: str) -> str:
    return StreamPosition(replay, "https://org.example").encode()


class Scripted:
    """A subscription that plays one script per ``open`` (a batch, or an exception)."""

    def __init__(self, *sessions: Sequence[Batch | Exception]) -> None:
        self.sessions = list(sessions)
        self.opened: list[str | None] = []

    def open(self, position: str | None) -> Iterator[Batch]:
        self.opened.append(position)
        script = self.sessions.pop(0)
        if script and isinstance(script[0], PositionRefused):
            raise script[0]
        return self._play(script)

    def _play(self, script: Sequence[Batch | Exception]) -> Iterator[Batch]:
        for item in script:
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        pass


def runner(sub: Scripted, ledger: MemoryLedger, calls: list[str]) -> StreamRunner:
    return StreamRunner(STREAM, sub, ledger, catch_up=lambda: calls.append("catch-up"))


def cursor(ledger: MemoryLedger) -> str | None:
    with ledger.reading() as tx:
        return tx.cursors.get(STREAM)


def test_first_start_reads_from_the_newest_and_catches_up_once() -> None:
    ledger, calls = MemoryLedger(), []
    sub = Scripted([Batch([event(1)], at("01"))])
    assert runner(sub, ledger, calls).run_once() is True
    assert sub.opened == [None]
    assert calls == ["catch-up"]
    assert cursor(ledger) == at("01")


def test_a_restart_starts_after_the_stored_position_without_a_catch_up() -> None:
    ledger, calls = MemoryLedger(), []
    with ledger.transaction() as tx:
        tx.cursors.set(STREAM, at("05"))
    sub = Scripted([Batch([event(6)], at("06"))])
    runner(sub, ledger, calls).run_once()
    assert sub.opened == [at("05")]
    assert calls == []
    assert cursor(ledger) == at("06")


def test_a_refused_position_is_dropped_then_a_first_start() -> None:
    ledger, calls = MemoryLedger(), []
    with ledger.transaction() as tx:
        tx.cursors.set(STREAM, at("05"))
    sub = Scripted([PositionRefused(at("05"), "outside retention")], [Batch([event(9)], at("09"))])
    run = runner(sub, ledger, calls)
    run.run_once()
    assert sub.opened == [at("05"), None]
    assert calls == ["catch-up"]
    assert (run.status.refused, cursor(ledger)) == (1, at("09"))


@pytest.mark.parametrize(
    ("batches", "writes"),
    [
        ([Batch((), at("01")), Batch((), at("01"))], 1),  # a keepalive at the same position
        ([Batch((), None)], 0),  # a keepalive naming no position
        ([Batch([event(1)], at("01")), Batch([event(1)], at("01"))], 1),  # a redelivery
    ],
)
def test_what_is_written(batches: list[Batch], writes: int) -> None:
    ledger, calls = MemoryLedger(), []
    run = runner(Scripted(batches), ledger, calls)
    run.run_once()
    assert run.status.recorded == sum(1 for b in batches[:1] for _ in b.events)
    assert (cursor(ledger) is not None) == (writes > 0)


def test_a_lost_connection_leaves_what_was_recorded_and_is_raised() -> None:
    ledger, calls = MemoryLedger(), []
    sub = Scripted([Batch([event(1)], at("01")), ConnectionError("reset")])
    with pytest.raises(ConnectionError):
        runner(sub, ledger, calls).run_once()
    assert cursor(ledger) == at("01")


class Silent:
    """A subscription that delivers nothing after its first batch until it is closed."""

    def __init__(self) -> None:
        self.opened = 0
        self.closes: list[float] = []
        self._closed = threading.Event()

    def open(self, position: str | None) -> Iterator[Batch]:
        self.opened += 1
        self._closed.clear()
        return self._play()

    def _play(self) -> Iterator[Batch]:
        yield Batch([event(self.opened)], at(f"{self.opened:02d}"))
        self._closed.wait(5)

    def close(self) -> None:
        self.closes.append(time.monotonic())
        self._closed.set()


def test_the_watchdog_counts_the_sources_silence_not_the_bridges_own_work() -> None:
    ledger, sub = MemoryLedger(), Silent()
    caught_up: list[float] = []

    def slow_catch_up() -> None:
        time.sleep(0.6)  # three times the watchdog's time-out
        caught_up.append(time.monotonic())

    run = StreamRunner(STREAM, sub, ledger, catch_up=slow_catch_up, keepalive_timeout=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=run.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    # the resubscription is counted before the new subscription opens: wait for both
    while (run.status.watchdog_resubscribes < 1 or sub.opened < 2) and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    run.stop()
    thread.join(5)
    # the slow catch-up was not taken for silence; the silence after it was
    assert caught_up
    assert run.status.watchdog_resubscribes >= 1
    assert sub.closes[0] > caught_up[0]
    assert sub.opened >= 2
