"""The processor and the dispatcher over the in-memory ledger: inbox → engine → outbox →
executors, without a database or a socket. The executors here stand in for the two
systems (they answer the way the adapters' executors do); the engine and the ledger's
contract are the real ones."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from bridge.domain import ClaimedCommand, CorrelationState, Event
from bridge.domain.mapping import Tables, load_tables
from bridge.errors import Permanent, Retriable
from bridge.flow.dispatch import Dispatcher
from bridge.flow.intake import Watermark
from bridge.flow.processor import Processor
from bridge.ledger.memory import MemoryLedger
from bridge.ledger.ports import NewEvent
from tests.unit.engine_builders import ALICE, AT, AW_ALICE, AWI_1, INTERACTION, agent_work, awa, psr


@pytest.fixture(scope="module")
def tables() -> Tables:
    return load_tables()


class System:
    """Answers like the executors do (the record itself, unwrapped); fails on demand."""

    def __init__(self, failures: Mapping[str, list[Exception]] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any], bool]] = []
        self._failures = {k: list(v) for k, v in (failures or {}).items()}

    def execute(self, command: ClaimedCommand) -> Mapping[str, Any]:
        operation = command.operation.value
        self.calls.append((operation, dict(command.params), command.look_first))
        if self._failures.get(operation):
            raise self._failures[operation].pop(0)
        if operation == "offer":
            return {"sys_id": AWI_1, "assigned_to": ALICE.sn_user_sys_id, "state": "pending_accept"}
        if operation == "create_interaction":
            return {"sys_id": INTERACTION, "state": "on_hold"}
        if operation == "create_agent_work":
            return {"id": AW_ALICE}
        return {}


def record(ledger: MemoryLedger, *events: Event) -> list[int]:
    with ledger.transaction() as tx:
        return tx.inbox.record(
            "test",
            [
                NewEvent(
                    e.source.value,
                    f"{e.kind.value}:{e.source_event_id}",
                    e.kind.value,
                    e.occurred_at,
                    e.record,
                )
                for e in events
            ],
            "1",
        ).inserted


def rig(
    tables: Tables, sn: System | None = None, sf: System | None = None
) -> tuple[MemoryLedger, Processor, Dispatcher, System, System]:
    clock = [AT]
    ledger = MemoryLedger(now=lambda: clock[0])
    sn = sn or System()
    sf = sf or System()
    processor = Processor(ledger, tables, now=lambda: clock[0])
    dispatcher = Dispatcher(
        ledger, {"servicenow": sn, "salesforce": sf}, concurrency=2, now=lambda: clock[0]
    )
    return ledger, processor, dispatcher, sn, sf


@pytest.mark.parametrize(
    ("events", "statuses", "state", "operations"),
    [
        # a new PSR: the conversation opens, interaction and offer enqueued in order
        ([psr()], ["processed"], CorrelationState.OFFERED, ["create_interaction", "offer"]),
        # the same change delivered twice: recorded once
        ([psr(), psr()], ["processed"], CorrelationState.OFFERED, ["create_interaction", "offer"]),
        # an unknown AgentWork status for a conversation no one knows: refused by name,
        # and the PSR after it still goes through
        (
            [agent_work("Exploded"), psr()],
            ["error", "processed"],
            CorrelationState.OFFERED,
            ["create_interaction", "offer"],
        ),
    ],
    ids=["new_psr", "duplicate", "bad_input_does_not_stop_traffic"],
)
def test_inbox_to_outbox(
    tables: Tables,
    events: list[Event],
    statuses: list[str],
    state: CorrelationState,
    operations: list[str],
) -> None:
    ledger, processor, _, _, _ = rig(tables)
    record(ledger, *events)
    processor.process_pending()
    assert [e.status for e in ledger.events()] == statuses
    (corr,) = ledger.correlations()
    assert corr.state is state
    assert [c.operation for c in ledger.commands()] == operations
    assert {c.status for c in ledger.commands()} == {"pending"}


def test_a_refused_event_says_what_and_where(tables: Tables) -> None:
    ledger, processor, _, _, _ = rig(tables)
    record(ledger, agent_work("Exploded"))
    processor.process_pending()
    (event,) = ledger.events()
    assert event.status == "error"
    assert event.error is not None
    assert "Exploded" in event.error
    assert "Status" in event.error


def test_a_conversations_commands_follow_each_other_in_one_dispatch_round(tables: Tables) -> None:
    ledger, processor, dispatcher, sn, _ = rig(tables)
    record(ledger, psr())
    processor.process_pending()
    stats = dispatcher.run_once()
    assert (stats.claimed, stats.done) == (2, 2)
    assert [c[0] for c in sn.calls] == ["create_interaction", "offer"]
    (corr,) = ledger.correlations()
    # what the offer's answer taught: who was offered, which work item
    assert corr.sn_work_item_sys_id == AWI_1
    assert corr.segments[-1].sn_user_sys_id == ALICE.sn_user_sys_id
    assert [c.status for c in ledger.commands()] == ["confirmed", "confirmed"]


def test_accepted_in_awa_becomes_agent_work(tables: Tables) -> None:
    ledger, processor, dispatcher, _, sf = rig(tables)
    record(ledger, psr())
    processor.process_pending()
    dispatcher.run_once()
    record(ledger, awa("accepted", assigned_to=ALICE.sn_user_sys_id))
    processor.process_pending()
    dispatcher.run_once()
    assert [c[0] for c in sf.calls] == ["create_agent_work"]
    assert sf.calls[0][1]["UserId"] == ALICE.sf_user_id
    (corr,) = ledger.correlations()
    assert corr.state is CorrelationState.ASSIGNING
    assert corr.sf_agent_work_id == AW_ALICE


def test_a_retriable_failure_waits_and_the_next_command_waits_behind_it(tables: Tables) -> None:
    sn = System({"create_interaction": [Retriable("busy", retry_after=30)]})
    ledger, processor, dispatcher, _, _ = rig(tables, sn=sn)
    record(ledger, psr())
    processor.process_pending()
    first = dispatcher.run_once()
    assert (first.claimed, first.retried) == (1, 1)
    assert [c.status for c in ledger.commands()] == ["failed", "pending"]
    assert dispatcher.run_once().claimed == 0  # not before Retry-After, offer still behind it
    dispatcher._now = lambda: AT + timedelta(seconds=400)
    later = dispatcher.run_once()
    assert (later.claimed, later.done) == (2, 2)
    assert [c.attempts for c in ledger.commands()] == [2, 1]


def test_a_permanent_failure_is_dead_lettered_with_its_reason(tables: Tables) -> None:
    sn = System({"create_interaction": [Permanent("invalid table", status=400)]})
    ledger, processor, dispatcher, _, _ = rig(tables, sn=sn)
    record(ledger, psr())
    processor.process_pending()
    stats = dispatcher.run_once()
    assert stats.dead == 1
    dead = ledger.commands()[0]
    assert dead.status == "dead"
    assert dead.error is not None
    assert "invalid table" in dead.error


def test_a_lost_lease_makes_the_next_attempt_look_first(tables: Tables) -> None:
    ledger, processor, dispatcher, sn, _ = rig(tables)
    record(ledger, psr())
    processor.process_pending()
    with ledger.transaction() as tx:  # a worker claims, then dies mid-call
        (claimed,) = tx.outbox.claim("gone", 1, 60, AT)
    assert claimed.look_first is False
    dispatcher._now = lambda: AT + timedelta(seconds=61)
    dispatcher.run_once()
    assert sn.calls[0] == ("create_interaction", sn.calls[0][1], True)


def test_a_failed_transaction_changes_nothing(tables: Tables) -> None:
    ledger, _, _, _, _ = rig(tables)
    record(ledger, psr())

    def half_done() -> None:
        with ledger.transaction() as tx:
            tx.inbox.mark([1], "processed")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        half_done()
    assert [e.status for e in ledger.events()] == ["pending"]


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        # this release's encoding, both systems
        ('{"at": "2026-01-05T09:30:00+00:00", "key": ""}', Watermark(AT)),
        ('{"at": "2026-01-05T09:30:00+00:00", "key": "abc"}', Watermark(AT, "abc")),
        # earlier releases: Salesforce ISO time, ServiceNow "time|sys_id"
        ("2026-01-05T09:30:00+00:00", Watermark(AT)),
        ("2026-01-05 09:30:00|abc", Watermark(AT, "abc")),
        ("2026-01-05 09:30:00|", Watermark(AT)),
    ],
)
def test_stream_cursors_have_one_encoding(stored: str, expected: Watermark) -> None:
    assert Watermark.decode(stored) == expected
    assert Watermark.decode(expected.encode()) == expected
