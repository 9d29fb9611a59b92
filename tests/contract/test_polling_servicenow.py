"""The ServiceNow intake against the sandbox instance: work item and interaction changes
become inbox events with the cursor moved in the same transaction; keyset pages through
rows of the same second skip and repeat nothing; replays are dropped; a restarted intake
resumes from the cursor; the overlap window catches changes committed late; a poll with
nothing new costs one call per stream."""

from __future__ import annotations

import pytest

from bridge.adapters.servicenow.client import ServiceNowAdapter
from bridge.adapters.servicenow.polling import ServiceNowIntake
from bridge.flow.intake import PollResult, Watermark
from bridge.ledger import InboxEvent, SqlLedger
from bridge_sandbox import seed
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from tests.fixtures.ledger import get_cursor, pending_events

ALICE = seed.AGENTS[0].sn_user_sys_id
SUPPORT, BILLING, OVERFLOW = seed.QUEUES
MAPPED = [SUPPORT.sn_queue_sys_id, OVERFLOW.sn_queue_sys_id]
ITEMS, INTERACTIONS = "servicenow:awa_work_item", "servicenow:interaction"
TABLE = "/api/now/table/{table}"


def intake_for(
    adapter: ServiceNowAdapter, ledger: SqlLedger, *, overlap_seconds: float = 5.0, page: int = 2000
) -> ServiceNowIntake:
    return ServiceNowIntake(
        adapter, ledger, queue_sys_ids=MAPPED, overlap_seconds=overlap_seconds, page=page
    )


@pytest.fixture
def intake(sn_adapter: ServiceNowAdapter, sqlite_ledger: SqlLedger) -> ServiceNowIntake:
    return intake_for(sn_adapter, sqlite_ledger)


def poll(intake: ServiceNowIntake, sandbox: ServiceNowSandbox) -> dict[str, PollResult]:
    return {r.stream: r for r in intake.poll(sandbox.clock.now())}


def events(ledger: SqlLedger, kind: str | None = None) -> list[InboxEvent]:
    return [e for e in pending_events(ledger, 10_000) if kind is None or e.kind == kind]


def test_a_conversation_becomes_work_item_and_interaction_events(
    sn_sandbox: ServiceNowSandbox, intake: ServiceNowIntake, sqlite_ledger: SqlLedger
) -> None:
    started = sn_sandbox.control.create_interaction(OVERFLOW.sn_external_id, "help")
    unmapped = sn_sandbox.control.create_interaction(BILLING.sn_external_id)  # not mapped here
    results = poll(intake, sn_sandbox)
    # the work item of the unmapped (External) queue is read too, keyed once for the engine
    # to refuse; its interaction is not read
    assert (results[ITEMS].recorded, results[INTERACTIONS].recorded) == (2, 1)
    items = {e.payload["sys_id"]: e for e in events(sqlite_ledger, "awa_work_item")}
    refused = items.pop(unmapped["work_item"])
    assert refused.source_event_id == f"awa_work_item:{unmapped['work_item']}:unmapped"
    [item] = items.values()
    assert item.source == "servicenow"
    assert item.payload["sys_id"] == started["work_item"]
    assert (item.payload["state"], item.payload["document_id"]) == (
        "queued",
        started["interaction"],
    )
    assert item.source_event_id == f"awa_work_item:{started['work_item']}:0"
    [interaction] = events(sqlite_ledger, "interaction")
    assert (interaction.payload["sys_id"], interaction.payload["state"]) == (
        started["interaction"],
        "on_hold",
    )
    cursor = get_cursor(sqlite_ledger, ITEMS)
    assert cursor is not None
    last = max((item, refused), key=lambda e: (e.occurred_at, e.payload["sys_id"]))
    assert Watermark.decode(cursor) == Watermark(last.occurred_at, last.payload["sys_id"])


def test_interactions_the_bridge_made_are_read_whatever_their_queue(
    sn_sandbox: ServiceNowSandbox,
    sn_adapter: ServiceNowAdapter,
    intake: ServiceNowIntake,
    sqlite_ledger: SqlLedger,
) -> None:
    made = sn_adapter.insert(
        "interaction", {"state": "new", "type": "chat", "correlation_id": "0Mw5g00000000A1AAA"}
    )
    sn_adapter.insert("interaction", {"state": "new", "type": "chat"})  # nobody's
    poll(intake, sn_sandbox)
    assert [e.payload["sys_id"] for e in events(sqlite_ledger, "interaction")] == [made["sys_id"]]


def test_state_changes_are_new_events_and_a_quiet_poll_costs_one_call_per_stream(
    sn_sandbox: ServiceNowSandbox, intake: ServiceNowIntake, sqlite_ledger: SqlLedger
) -> None:
    started = sn_sandbox.control.create_interaction(SUPPORT.sn_external_id)
    poll(intake, sn_sandbox)
    sn_sandbox.control.close_interaction(started["interaction"])
    results = poll(intake, sn_sandbox)
    assert (results[ITEMS].recorded, results[INTERACTIONS].recorded) == (1, 1)
    states = [e.payload["state"] for e in events(sqlite_ledger, "awa_work_item")]
    assert states == ["queued", "canceled"]
    assert events(sqlite_ledger, "awa_work_item")[1].payload["cancel_reason"] == "disqualified"
    sn_sandbox.counters.reset()
    quiet = poll(intake, sn_sandbox)
    assert sum(r.recorded for r in quiet.values()) == 0
    assert sn_sandbox.counters.total() == 2
    assert sn_sandbox.counters.total("GET", TABLE) == 2


def test_keyset_pages_of_one_second_skip_and_repeat_nothing(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter, sqlite_ledger: SqlLedger
) -> None:
    intake = intake_for(sn_adapter, sqlite_ledger, page=5)
    started = [sn_sandbox.control.create_interaction(SUPPORT.sn_external_id) for _ in range(12)]
    results = poll(intake, sn_sandbox)
    assert (results[ITEMS].recorded, results[ITEMS].duplicates) == (12, 0)
    assert sorted(e.payload["sys_id"] for e in events(sqlite_ledger, "awa_work_item")) == sorted(
        s["work_item"] for s in started
    )
    assert len(events(sqlite_ledger, "interaction")) == 12
    assert sn_sandbox.counters.total("GET", TABLE) == 6  # 5 + 5 + 2 rows, per table


def test_a_restarted_intake_resumes_from_the_cursor(
    sn_sandbox: ServiceNowSandbox,
    sn_adapter: ServiceNowAdapter,
    intake: ServiceNowIntake,
    sqlite_ledger: SqlLedger,
) -> None:
    first = sn_sandbox.control.create_interaction(SUPPORT.sn_external_id)
    poll(intake, sn_sandbox)
    sn_sandbox.clock.advance(60)
    second = sn_sandbox.control.create_interaction(SUPPORT.sn_external_id)
    restarted = intake_for(sn_adapter, sqlite_ledger)
    results = poll(restarted, sn_sandbox)
    # the first item is the cursor itself: read again inside the overlap window, dropped
    assert (results[ITEMS].recorded, results[ITEMS].duplicates) == (1, 1)
    assert [e.payload["sys_id"] for e in events(sqlite_ledger, "awa_work_item")] == [
        first["work_item"],
        second["work_item"],
    ]


@pytest.mark.parametrize(("overlap", "seen"), [(5.0, True), (0.0, False)])
def test_the_overlap_window_catches_a_change_committed_late(
    sn_sandbox: ServiceNowSandbox,
    sn_adapter: ServiceNowAdapter,
    sqlite_ledger: SqlLedger,
    overlap: float,
    seen: bool,
) -> None:
    intake = intake_for(sn_adapter, sqlite_ledger, overlap_seconds=overlap)
    sn_sandbox.control.create_interaction(SUPPORT.sn_external_id)
    poll(intake, sn_sandbox)
    sn_sandbox.clock.advance(-3)  # what is written now carries an older sys_updated_on
    try:
        late = sn_sandbox.control.create_interaction(SUPPORT.sn_external_id)
    finally:
        sn_sandbox.clock.advance(3)
    poll(intake, sn_sandbox)
    ids = {e.payload["sys_id"] for e in events(sqlite_ledger, "awa_work_item")}
    assert (late["work_item"] in ids) is seen


def test_first_start_reads_active_records_only_and_reset_starts_over(
    sn_sandbox: ServiceNowSandbox, intake: ServiceNowIntake, sqlite_ledger: SqlLedger
) -> None:
    ended = sn_sandbox.control.create_interaction(SUPPORT.sn_external_id)
    sn_sandbox.control.abandon_interaction(ended["interaction"])
    live = sn_sandbox.control.create_interaction(SUPPORT.sn_external_id)
    poll(intake, sn_sandbox)
    assert [e.payload["sys_id"] for e in events(sqlite_ledger, "awa_work_item")] == [
        live["work_item"]
    ]
    intake.reset()
    assert all(get_cursor(sqlite_ledger, s) is None for s in intake.streams())
    again = poll(intake, sn_sandbox)
    assert (again[ITEMS].recorded, again[ITEMS].duplicates) == (0, 1)


def test_lag_is_the_age_of_the_newest_change(
    sn_sandbox: ServiceNowSandbox, intake: ServiceNowIntake
) -> None:
    sn_sandbox.control.create_interaction(SUPPORT.sn_external_id)
    sn_sandbox.clock.advance(10)
    lag = poll(intake, sn_sandbox)[ITEMS].lag_seconds
    assert lag is not None
    assert 10 <= lag < 12
