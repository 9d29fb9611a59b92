"""A command's answer applied while the inbox processor moves the same conversation on
(PostgreSQL, read committed): the dispatcher re-reads and applies the answer again instead
of letting the version conflict escape and leaving the command claimed for a whole lease.

The interleaving is forced, not hoped for: between the dispatcher's read of the
correlation and its optimistic write, a second transaction commits a version bump."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from bridge.domain import ClaimedCommand
from bridge.domain.mapping import Tables, load_tables
from bridge.flow.dispatch import ANSWER_RETRIES, Dispatcher
from bridge.flow.processor import Processor
from bridge.ledger import SqlLedger
from bridge.ledger.ports import NewEvent
from bridge.ledger.sql import SqlTx
from tests.unit.engine_builders import ALICE, AT, AWI_1, INTERACTION, PSR, psr

pytestmark = pytest.mark.postgres


class _Interleaving(SqlLedger):
    """A ledger where, once armed, the next read of a correlation inside a write
    transaction is followed by another transaction that bumps its version and commits
    (what the inbox processor does when it saves a decision meanwhile)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.bumps_left = 0
        self.bumped: list[int] = []

    @contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        with super().transaction() as tx:
            read = tx.correlations.get

            def get_then_bump(correlation_id: str) -> Any:
                found = read(correlation_id)
                if found is not None and self.bumps_left > 0:
                    self.bumps_left -= 1
                    self._bump(correlation_id)
                return found

            tx.correlations.get = get_then_bump  # type: ignore[method-assign]
            yield tx

    def _bump(self, correlation_id: str) -> None:
        with super().transaction() as other:
            row = other.correlations.row(correlation_id)
            assert row is not None
            other.correlations.update(row, row.version)
            self.bumped.append(row.version)


class _AwaAnswers:
    """Answers as the ServiceNow executor does (the records, unwrapped); arms the ledger's
    interleaving when the offer goes out."""

    def __init__(self, ledger: _Interleaving, conflicts: int) -> None:
        self._ledger = ledger
        self._conflicts = conflicts
        self.calls: list[str] = []

    def execute(self, command: ClaimedCommand) -> Mapping[str, Any]:
        self.calls.append(command.operation.value)
        if command.operation.value == "create_interaction":
            return {"sys_id": INTERACTION, "state": "on_hold"}
        if command.operation.value == "offer":
            self._ledger.bumps_left = self._conflicts
            return {"sys_id": AWI_1, "assigned_to": ALICE.sn_user_sys_id, "state": "pending_accept"}
        return {}


@pytest.fixture(scope="module")
def tables() -> Tables:
    return load_tables()


@pytest.fixture
def interleaving(postgres_url: str) -> Iterator[_Interleaving]:
    ledger = _Interleaving(postgres_url)
    ledger.upgrade()
    yield ledger
    ledger.close()


@pytest.mark.parametrize("conflicts", [1, 3], ids=["once", "three_times"])
def test_an_answer_applied_during_a_concurrent_commit_is_applied_not_lost(
    interleaving: _Interleaving,
    tables: Tables,
    conflicts: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = interleaving
    event = psr()
    with ledger.transaction() as tx:
        [event_id] = tx.inbox.record(
            "test",
            [NewEvent("salesforce", "psr:1", event.kind.value, event.occurred_at, event.record)],
            "1",
        ).inserted
    Processor(ledger, tables, now=lambda: AT).process_pending()
    system = _AwaAnswers(ledger, conflicts)
    dispatcher = Dispatcher(ledger, {"servicenow": system}, now=lambda: AT)
    try:
        with caplog.at_level(logging.INFO):
            stats = dispatcher.run_once()  # must not raise VersionConflict
    finally:
        dispatcher.close()

    assert system.calls == ["create_interaction", "offer"]  # each sent once
    assert len(ledger.bumped) == conflicts  # the other transaction did commit in between
    assert (stats.claimed, stats.done, stats.retried, stats.dead) == (2, 2, 0, 0)
    with ledger.reading() as tx:
        corr = tx.correlations.find([PSR])
        assert corr is not None
        commands = tx.outbox.states(caused_by=[event_id])
    # what the offer's answer taught is in the ledger: the work item and who was offered
    assert corr.sn_work_item_sys_id == AWI_1
    assert corr.segments[-1].sn_work_item_sys_id == AWI_1
    assert corr.segments[-1].sn_user_sys_id == ALICE.sn_user_sys_id
    # both commands done at the first attempt: nothing waits for a lease to run out
    assert [(c.operation, c.status, c.attempts) for c in commands] == [
        ("create_interaction", "confirmed", 1),
        ("offer", "confirmed", 1),
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_conversation_that_never_stops_changing_sends_the_command_again_looking_first(
    interleaving: _Interleaving, tables: Tables
) -> None:
    """Every try conflicts: nothing escapes; the command is due again soon as an outcome
    unknown, and the next attempt (looking first) gets its answer applied."""
    ledger = interleaving
    event = psr()
    with ledger.transaction() as tx:
        [event_id] = tx.inbox.record(
            "test",
            [NewEvent("salesforce", "psr:1", event.kind.value, event.occurred_at, event.record)],
            "1",
        ).inserted
    Processor(ledger, tables, now=lambda: AT).process_pending()
    system = _AwaAnswers(ledger, ANSWER_RETRIES)
    first = Dispatcher(ledger, {"servicenow": system}, now=lambda: AT)
    try:
        stats = first.run_once()
    finally:
        first.close()
    assert (stats.done, stats.retried, stats.dead) == (1, 1, 0)
    with ledger.reading() as tx:
        [_, offer] = tx.outbox.states(caused_by=[event_id])
    assert (offer.status, offer.attempts) == ("failed", 1)

    looks: list[bool] = []
    answers = _AwaAnswers(ledger, 0)
    then = AT + timedelta(seconds=5)

    class Looking:
        def execute(self, command: ClaimedCommand) -> Mapping[str, Any]:
            looks.append(command.look_first)
            return answers.execute(command)

    second = Dispatcher(ledger, {"servicenow": Looking()}, now=lambda: then)
    try:
        stats = second.run_once()
    finally:
        second.close()
    assert looks == [True]
    assert (stats.done, stats.retried, stats.dead) == (1, 0, 0)
    with ledger.reading() as tx:
        corr = tx.correlations.find([PSR])
        [_, offer] = tx.outbox.states(caused_by=[event_id])
    assert corr is not None
    assert corr.sn_work_item_sys_id == AWI_1
    assert (offer.status, offer.attempts) == ("confirmed", 2)
