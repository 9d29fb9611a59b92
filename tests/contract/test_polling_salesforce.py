"""The Salesforce intake against the sandbox org: PSRs, AgentWork status changes and PSR
deletions become inbox events with the cursor moved in the same transaction; replays are
dropped; a restarted intake resumes from the cursor; the overlap window catches changes
committed late; a poll with nothing new costs one call per stream."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.salesforce.polling import PSR_DELETED_STREAM, PSR_STREAM, SalesforceIntake
from bridge.flow.intake import PollResult, Watermark
from bridge.ledger import InboxEvent, SqlLedger
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from tests.fixtures.ledger import get_cursor, pending_events, set_cursor

ALICE = seed.AGENTS[0].sf_user_id
SUPPORT, BILLING, OVERFLOW = (q.sf_queue_id for q in seed.QUEUES)
MESSAGING = seed.CHANNELS[0].sf_service_channel_id
QUERY = "/services/data/v{version}/query"
DELETED = "/services/data/v{version}/sobjects/{sobject}/deleted"


@pytest.fixture
def intake(sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger) -> SalesforceIntake:
    return SalesforceIntake(sf_adapter, sqlite_ledger, queue_ids=[SUPPORT, BILLING])


def poll(intake: SalesforceIntake, sandbox: SalesforceSandbox) -> dict[str, PollResult]:
    return {r.stream: r for r in intake.poll(sandbox.clock.now())}


def events(ledger: SqlLedger) -> list[InboxEvent]:
    return pending_events(ledger, 10_000)


def kinds(ledger: SqlLedger) -> list[tuple[str, str]]:
    return [(e.kind, str(e.payload.get("Status", e.payload.get("Id")))) for e in events(ledger)]


def assign(adapter: SalesforceAdapter, work_item: str, psr: str) -> str:
    fields: dict[str, Any] = {
        "UserId": ALICE,
        "WorkItemId": work_item,
        "PendingServiceRoutingId": psr,
        "ServiceChannelId": MESSAGING,
    }
    return adapter.create("AgentWork", fields)


def test_a_new_conversation_becomes_a_psr_event_and_moves_the_cursor(
    sf_sandbox: SalesforceSandbox, intake: SalesforceIntake, sqlite_ledger: SqlLedger
) -> None:
    started = sf_sandbox.control.start_conversation("Support_External")
    sf_sandbox.control.start_conversation("SN_Overflow")  # not a mapped queue here
    results = poll(intake, sf_sandbox)
    assert results[PSR_STREAM].recorded == 1
    [event] = [e for e in events(sqlite_ledger) if e.kind == "psr"]
    assert (event.source, event.kind, event.stream) == ("salesforce", "psr", PSR_STREAM)
    assert event.payload["Id"] == started["psr_id"]
    assert event.payload["WorkItemId"] == started["work_item_id"]
    assert (event.payload["IsTransfer"], event.payload["Serial"]) == (False, 0)
    assert "attributes" not in event.payload
    cursor = get_cursor(sqlite_ledger, PSR_STREAM)
    assert cursor is not None
    assert Watermark.decode(cursor) == Watermark(event.occurred_at)


def test_agent_work_statuses_and_psr_deletion_become_events(
    sf_sandbox: SalesforceSandbox,
    sf_adapter: SalesforceAdapter,
    intake: SalesforceIntake,
    sqlite_ledger: SqlLedger,
) -> None:
    started = sf_sandbox.control.start_conversation("Support_External")
    poll(intake, sf_sandbox)
    work = assign(sf_adapter, started["work_item_id"], started["psr_id"])
    poll(intake, sf_sandbox)
    sf_sandbox.control.accept(work)
    results = poll(intake, sf_sandbox)
    assert results[PSR_DELETED_STREAM].recorded == 1
    assert kinds(sqlite_ledger) == [
        ("psr", started["psr_id"]),
        ("psr", started["psr_id"]),  # IsPushed = true once the AgentWork exists
        ("agent_work", "Assigned"),
        ("agent_work", "Opened"),
        ("psr_deleted", started["psr_id"]),
    ]
    pushed = events(sqlite_ledger)[1].payload
    assert pushed["IsPushed"] is True
    opened = events(sqlite_ledger)[3].payload
    assert (opened["Id"], opened["UserId"]) == (work, ALICE)


def test_a_second_poll_records_nothing_and_costs_one_call_per_stream(
    sf_sandbox: SalesforceSandbox, intake: SalesforceIntake, sqlite_ledger: SqlLedger
) -> None:
    sf_sandbox.control.start_conversation("Billing_External")
    poll(intake, sf_sandbox)
    sf_sandbox.counters.reset()
    again = poll(intake, sf_sandbox)
    assert sum(r.recorded for r in again.values()) == 0
    assert len(events(sqlite_ledger)) == 1
    assert sf_sandbox.counters.total("GET", QUERY) == 2
    assert sf_sandbox.counters.total("GET", DELETED) == 1
    assert sf_sandbox.counters.total() == 3


def test_a_restarted_intake_resumes_from_the_cursor(
    sf_sandbox: SalesforceSandbox,
    sf_adapter: SalesforceAdapter,
    intake: SalesforceIntake,
    sqlite_ledger: SqlLedger,
) -> None:
    first = sf_sandbox.control.start_conversation("Support_External")
    poll(intake, sf_sandbox)
    sf_sandbox.clock.advance(30)
    second = sf_sandbox.control.start_conversation("Support_External")
    restarted = SalesforceIntake(sf_adapter, sqlite_ledger, queue_ids=[SUPPORT, BILLING])
    results = poll(restarted, sf_sandbox)
    # the first PSR is the cursor itself: read again inside the overlap window, dropped
    assert (results[PSR_STREAM].recorded, results[PSR_STREAM].duplicates) == (1, 1)
    assert [e.payload["Id"] for e in events(sqlite_ledger)] == [
        first["psr_id"],
        second["psr_id"],
    ]


@pytest.mark.parametrize(("overlap", "seen"), [(5.0, True), (0.0, False)])
def test_the_overlap_window_catches_a_change_committed_late(
    sf_sandbox: SalesforceSandbox,
    sf_adapter: SalesforceAdapter,
    sqlite_ledger: SqlLedger,
    overlap: float,
    seen: bool,
) -> None:
    intake = SalesforceIntake(
        sf_adapter, sqlite_ledger, queue_ids=[SUPPORT], overlap_seconds=overlap
    )
    sf_sandbox.control.start_conversation("Support_External")
    poll(intake, sf_sandbox)
    sf_sandbox.clock.advance(-2)
    try:
        late = sf_sandbox.control.start_conversation("Support_External")
    finally:
        sf_sandbox.clock.advance(2)
    poll(intake, sf_sandbox)
    assert (late["psr_id"] in {e.payload["Id"] for e in events(sqlite_ledger)}) is seen


def test_reset_forgets_the_cursors(
    sf_sandbox: SalesforceSandbox, intake: SalesforceIntake, sqlite_ledger: SqlLedger
) -> None:
    sf_sandbox.control.start_conversation("Support_External")
    poll(intake, sf_sandbox)
    intake.reset()
    assert all(get_cursor(sqlite_ledger, s) is None for s in intake.streams())
    again = poll(intake, sf_sandbox)
    assert (again[PSR_STREAM].recorded, again[PSR_STREAM].duplicates) == (0, 1)


def test_first_start_reads_live_agent_work_only(
    sf_sandbox: SalesforceSandbox,
    sf_adapter: SalesforceAdapter,
    intake: SalesforceIntake,
    sqlite_ledger: SqlLedger,
) -> None:
    done = sf_sandbox.control.start_conversation("Support_External")
    closed = assign(sf_adapter, done["work_item_id"], done["psr_id"])
    sf_sandbox.control.accept(closed)
    sf_sandbox.control.close(closed)
    live = sf_sandbox.control.start_conversation("Support_External")
    work = assign(sf_adapter, live["work_item_id"], live["psr_id"])
    poll(intake, sf_sandbox)
    agent_work = [e.payload["Id"] for e in events(sqlite_ledger) if e.kind == "agent_work"]
    assert agent_work == [work]


def test_after_a_long_outage_deletions_are_read_as_far_back_as_the_org_allows(
    sf_sandbox: SalesforceSandbox,
    sf_adapter: SalesforceAdapter,
    intake: SalesforceIntake,
    sqlite_ledger: SqlLedger,
) -> None:
    started = sf_sandbox.control.start_conversation("Support_External")
    sf_adapter.delete("PendingServiceRouting", started["psr_id"])
    long_ago = sf_sandbox.clock.now() - timedelta(days=40)
    set_cursor(sqlite_ledger, PSR_DELETED_STREAM, Watermark(long_ago).encode())
    results = poll(intake, sf_sandbox)
    assert results[PSR_DELETED_STREAM].recorded == 1
    assert [e.payload["Id"] for e in events(sqlite_ledger) if e.kind == "psr_deleted"] == [
        started["psr_id"]
    ]
