"""Reconcilers that only read the ledger (stuck outbox rows, stale cursors), the run
itself (every finding recorded, a failing reconciler does not stop the others, exit
codes) and the small decisions of the system reconcilers, as tables of cases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bridge import engine
from bridge.domain import Correlation as EngineCorrelation
from bridge.domain import CorrelationState, Direction, Event, EventKind, System
from bridge.domain.mapping import Tables, load_tables
from bridge.domain.sf_ids import to18
from bridge.engine import echo
from bridge.errors import ConfigError
from bridge.flow.processor import Processor
from bridge.ledger import (
    Cursor,
    Finding,
    NewCommand,
    OutboxCommand,
    ReconcileRun,
    SqlLedger,
)
from bridge.ledger.sql import table
from bridge.reconcile import Context, Options, PlannedFinding, registry, run, select_reconcilers
from bridge.reconcile.assigned_elsewhere import elsewhere
from bridge.reconcile.base import RECONCILER_FAILED, Outcome
from bridge.reconcile.orphaned_psr import OrphanedPsr, deletion, orphaned, repair_event
from bridge.reconcile.reads import CorrelationSummary
from bridge.reconcile.stale_cursor import StaleCursor
from bridge.reconcile.stuck_outbox import StuckOutbox
from tests.fixtures.ledger import (
    claim_commands,
    db_session,
    get_command,
    get_cursor,
    set_cursor,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PSR = "0JR5g0000000001GAI"
OTHER_PSR = "0JR5g0000000002GAI"
ALICE = "0055g0000000001AAA"
# the PSR as a reconciler reads it (ids with their real checksums)
SF_PSR = to18(PSR[:15])
PSR_RECORD = {
    "Id": SF_PSR,
    "SystemModstamp": "2026-03-02T11:00:00.000+0000",
    "WorkItemId": to18("0Mw5g0000000001"),
    "QueueId": to18("00G5g0000000001"),
    "IsPushed": False,
    "IsTransfer": False,
    "Serial": 0,
}
BOB = "0055g0000000002AAA"


class NoSystem:
    """Stands in for an adapter these reconcilers must never call."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected call to {name}")


def context(ledger: SqlLedger, **options: Any) -> Context:
    return Context(
        ledger=ledger,
        tables=load_tables(),
        salesforce=NoSystem(),
        servicenow=NoSystem(),
        now=NOW,
        options=Options(**options),
    )


def make_command(ledger: SqlLedger, status: str, attempts: int, age: timedelta) -> str:
    with ledger.transaction() as tx:
        corr = tx.correlations.create(direction="sf_to_sn", state="offered")
        [command] = tx.outbox.add(
            NewCommand(f"{corr.id}:offer", corr.id, "servicenow", "offer", {"x": 1})
        )
    t = table(OutboxCommand)
    with db_session(ledger) as session:
        session.execute(
            update(t)
            .where(t.c.id == command.id)
            .values(
                status=status,
                attempts=attempts,
                updated_at=NOW - age,
                next_attempt_at=NOW + timedelta(days=1),
                claimed_by="gone-worker" if status == "claimed" else None,
            )
        )
    return command.id


def command(ledger: SqlLedger, command_id: str) -> OutboxCommand:
    return get_command(ledger, command_id)


# --- stuck_outbox ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "attempts", "age", "action"),
    [
        ("claimed", 1, timedelta(hours=1), "release"),
        ("failed", 3, timedelta(hours=1), "release"),
        ("pending", 0, timedelta(hours=1), "release"),
        ("failed", 10, timedelta(hours=1), "dead_letter"),
        ("sent", 1, timedelta(hours=1), None),
        ("claimed", 1, timedelta(minutes=5), "fresh"),
        ("confirmed", 1, timedelta(hours=1), "fresh"),
        ("dead", 1, timedelta(hours=1), "fresh"),
    ],
)
def test_stuck_outbox_plans(
    sqlite_ledger: SqlLedger, status: str, attempts: int, age: timedelta, action: str | None
) -> None:
    command_id = make_command(sqlite_ledger, status, attempts, age)
    found = list(StuckOutbox().plan(context(sqlite_ledger), None))
    if action == "fresh":
        assert found == []
    else:
        assert [(f.subject, f.action) for f in found] == [(command_id, action)]


def test_stuck_outbox_release_makes_the_command_due_now(sqlite_ledger: SqlLedger) -> None:
    command_id = make_command(sqlite_ledger, "claimed", 1, timedelta(hours=1))
    report = run(context(sqlite_ledger), ["stuck_outbox"], apply=True)
    assert [(f["action"], f["status"]) for f in report.findings] == [("release", "applied")]
    released = command(sqlite_ledger, command_id)
    assert (released.status, released.next_attempt_at, released.claimed_by) == (
        "pending",
        None,
        None,
    )
    claimed = claim_commands(sqlite_ledger, "w", 10, 60, NOW)
    assert [c.id for c in claimed] == [command_id]


def test_stuck_outbox_dead_letters_a_command_out_of_attempts(sqlite_ledger: SqlLedger) -> None:
    command_id = make_command(sqlite_ledger, "failed", 10, timedelta(hours=1))
    report = run(context(sqlite_ledger), ["stuck_outbox"], apply=True)
    assert report.findings[0]["status"] == "applied"
    dead = command(sqlite_ledger, command_id)
    assert dead.status == "dead"
    assert "reconciler" in str(dead.error)
    assert run(context(sqlite_ledger), ["stuck_outbox"], apply=False).findings == []


def test_stuck_outbox_dry_run_changes_nothing(sqlite_ledger: SqlLedger) -> None:
    command_id = make_command(sqlite_ledger, "claimed", 1, timedelta(hours=1))
    report = run(context(sqlite_ledger), ["stuck_outbox"], apply=False)
    assert [f["status"] for f in report.findings] == ["planned"]
    assert command(sqlite_ledger, command_id).status == "claimed"


# --- stale_cursor ------------------------------------------------------------------------


def age_cursor(ledger: SqlLedger, stream: str, age: timedelta) -> None:
    set_cursor(ledger, stream, "2026-01-01T00:00:00+00:00")
    t = table(Cursor)
    with db_session(ledger) as session:
        session.execute(update(t).where(t.c.stream == stream).values(updated_at=NOW - age))


@pytest.mark.parametrize(
    ("stream", "age", "stale"),
    [
        ("salesforce:PendingServiceRouting", timedelta(hours=73), True),
        ("salesforce:AgentWork", timedelta(hours=71), False),
        ("servicenow:awa_work_item", timedelta(days=30), False),  # no retention configured
    ],
)
def test_stale_cursor_plans(
    sqlite_ledger: SqlLedger, stream: str, age: timedelta, stale: bool
) -> None:
    age_cursor(sqlite_ledger, stream, age)
    found = list(StaleCursor().plan(context(sqlite_ledger), None))
    assert [f.subject for f in found] == ([stream] if stale else [])


def test_stale_cursor_retention_is_configurable(sqlite_ledger: SqlLedger) -> None:
    age_cursor(sqlite_ledger, "servicenow:awa_work_item", timedelta(days=2))
    ctx = context(sqlite_ledger, retention={"servicenow:": timedelta(days=1)})
    assert [f.subject for f in StaleCursor().plan(ctx, None)] == ["servicenow:awa_work_item"]


def test_stale_cursor_apply_resets_it(sqlite_ledger: SqlLedger) -> None:
    stream = "salesforce:PendingServiceRouting"
    age_cursor(sqlite_ledger, stream, timedelta(days=4))
    report = run(context(sqlite_ledger), ["stale_cursor"], apply=True)
    assert [(f["subject"], f["status"]) for f in report.findings] == [(stream, "applied")]
    assert get_cursor(sqlite_ledger, stream) is None
    assert report.exit_code == 0


# --- the run -----------------------------------------------------------------------------


class Boom:
    name = "boom"
    description = "always fails"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        yield PlannedFinding(kind="x", subject="first", reason="seen before the failure")
        raise RuntimeError("the sky fell")

    def apply(self, ctx: Context, tx: Any, finding: PlannedFinding) -> Outcome:
        raise AssertionError("never applied")


def test_a_reconciler_that_raises_is_recorded_and_the_others_go_on(
    sqlite_ledger: SqlLedger,
) -> None:
    age_cursor(sqlite_ledger, "salesforce:AgentWork", timedelta(days=4))
    known = {"boom": Boom(), "stale_cursor": StaleCursor()}
    report = run(context(sqlite_ledger), None, apply=True, known=known)

    assert report.failed_reconcilers == ["boom"]
    assert [(f["reconciler"], f["kind"], f["status"]) for f in report.findings] == [
        ("boom", "x", "unresolved"),
        ("boom", RECONCILER_FAILED, "failed"),
        ("stale_cursor", "stale_cursor", "applied"),
    ]
    assert "RuntimeError: the sky fell" in str(report.findings[1]["reason"])
    assert report.exit_code == 1
    with db_session(sqlite_ledger) as session:
        run_row = session.get(ReconcileRun, report.run_id)
        rows = list(session.scalars(select(Finding).where(Finding.run_id == report.run_id)))
    assert run_row is not None
    assert run_row.status == "failed"
    assert run_row.summary["failed_reconcilers"] == ["boom"]
    assert len(rows) == 3


def test_many_findings_are_written_in_batches(sqlite_ledger: SqlLedger) -> None:
    for _ in range(3):
        make_command(sqlite_ledger, "claimed", 1, timedelta(hours=1))

    class Many:
        name = "many"
        description = "lots of drift"

        def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
            for i in range(1203):
                yield PlannedFinding(kind="k", subject=str(i), reason="r", action="a")

        def apply(self, ctx: Context, tx: Any, finding: PlannedFinding) -> Outcome:
            raise AssertionError("dry run")

    report = run(context(sqlite_ledger), None, apply=False, known={"many": Many()})
    assert report.counts() == [
        {"reconciler": "many", "kind": "k", "status": "planned", "count": 1203}
    ]


def test_unknown_reconciler_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown reconciler.*nope.*known: mapping"):
        select_reconcilers(["orphaned_psr", "nope"])


def test_every_reconciler_has_a_unique_name_and_a_description() -> None:
    known = registry()
    assert list(known) == [
        "mapping",
        "stale_cursor",
        "stuck_outbox",
        "orphaned_psr",
        "unseen_psr",
        "pending_awa",
        "assigned_elsewhere",
        "offer_timeout",
        "drift",
    ]
    assert all(r.description for r in known.values())


# --- decisions ---------------------------------------------------------------------------


def corr(state: str, **cols: Any) -> CorrelationSummary:
    return CorrelationSummary(
        id="c1", direction=cols.pop("direction", "sf_to_sn"), state=state, **cols
    )


@pytest.mark.parametrize(
    ("state", "current_psr", "orphan"),
    [
        ("abandoned", PSR, True),
        ("closed", OTHER_PSR, True),
        ("active", PSR, True),
        ("active", OTHER_PSR, False),  # a newer transfer PSR is a new routing
        ("offered", PSR, False),
        ("assigning", PSR, False),
        ("transferring", PSR, False),
    ],
)
def test_which_psrs_are_orphaned(state: str, current_psr: str, orphan: bool) -> None:
    assert orphaned(corr(state, sf_psr_id=current_psr), PSR) is orphan


@pytest.mark.parametrize(
    ("direction", "conversation", "mode", "operation"),
    [
        ("sf_to_sn", None, "rest", "delete_psr"),
        ("sf_to_sn", "conv-1", "rest", "delete_psr"),
        ("sf_to_sn", "conv-1", "route_api", "cancel_route"),
        ("sf_to_sn", None, "route_api", "delete_psr"),  # no conversation to name
        ("sn_to_sf", "conv-1", "rest", "cancel_route"),
    ],
)
def test_how_an_orphaned_psr_is_deleted(
    sqlite_ledger: SqlLedger, direction: str, conversation: str | None, mode: str, operation: str
) -> None:
    """The repair is the PSR as read; the engine deletes it the way the finding says."""
    ctx = context(sqlite_ledger)
    t = ctx.tables
    policies = t.policies.model_copy(update={"orphan_psr_deletion": mode})
    ctx.tables = Tables(t.crosswalk, policies, t.rules)
    facts = corr("abandoned", direction=direction, sf_conversation_id=conversation)
    assert deletion(ctx, facts).value == operation
    event = repair_event(PSR_RECORD, facts.id)
    decision = engine.translate(
        Event(
            System.SALESFORCE,
            EventKind.PSR,
            event.source_event_id,
            event.occurred_at,
            event.payload,
            from_reconciler=True,
        ),
        EngineCorrelation(
            id="c1",
            direction=Direction(direction),
            state=CorrelationState.ABANDONED,
            sf_psr_id=SF_PSR,
            sf_conversation_id=conversation,
        ),
        ctx.tables,
    )
    assert decision.trigger == "psr.orphaned"
    [command] = decision.commands
    assert command.operation == operation
    expected = (
        {"id": SF_PSR}
        if operation == "delete_psr"
        else {"conversationIdentifier": conversation, "cancelReason": "Cancel"}
    )
    assert dict(command.params) == expected
    # keyed by the repair: an earlier delete of the same PSR that failed is sent again
    assert command.idempotency_key.endswith(f"@{event.source_event_id}")
    assert decision.correlation is not None
    assert echo.psr_deleted(SF_PSR) in decision.correlation.data.expect


@pytest.mark.parametrize(
    ("state", "holder", "user", "own", "cancel"),
    [
        ("active", ALICE, BOB, True, True),
        ("active", ALICE, BOB, False, False),  # Salesforce's transfer, not yet seen
        ("active", ALICE, ALICE, True, False),
        ("closed", ALICE, ALICE, True, True),
        ("abandoned", None, BOB, False, True),
        ("assigning", None, BOB, True, False),
        ("transferring", ALICE, BOB, False, False),  # a Salesforce transfer to an agent
        ("offered", None, BOB, True, False),
    ],
)
def test_which_assigned_agent_work_is_elsewhere(
    state: str, holder: str | None, user: str, own: bool, cancel: bool
) -> None:
    assert elsewhere(corr(state, sf_user_id=holder), user, made_by_bridge=own) is cancel


def test_a_repair_event_is_fed_once_and_the_engine_deletes_the_psr(
    sqlite_ledger: SqlLedger,
) -> None:
    ctx = context(sqlite_ledger)
    with sqlite_ledger.transaction() as tx:
        row = tx.correlations.create(direction="sf_to_sn", state="abandoned", sf_psr_id=SF_PSR)
    finding = PlannedFinding(
        kind="orphaned_psr",
        subject=PSR,
        reason="r",
        action="delete_psr",
        correlation_id=row.id,
        events=(repair_event(PSR_RECORD, row.id),),
    )
    with sqlite_ledger.transaction() as tx:
        first = OrphanedPsr().apply(ctx, tx, finding)
    assert first.status == "applied"
    with sqlite_ledger.transaction() as tx:
        second = OrphanedPsr().apply(ctx, tx, finding)
    assert second.status == "skipped"
    assert second.reason is not None
    assert "not processed yet" in second.reason

    stats = Processor(sqlite_ledger, ctx.tables).process_pending()
    assert (stats.processed, stats.commands) == (1, 1)
    with sqlite_ledger.transaction() as tx:
        stored = tx.correlations.get(row.id)
    assert stored is not None
    assert stored.data.expect == (echo.psr_deleted(SF_PSR),)

    # the earlier repair's command was sent and is still out: skipped, naming it
    with sqlite_ledger.transaction() as tx:
        on_its_way = OrphanedPsr().apply(ctx, tx, finding)
    assert on_its_way.status == "skipped"
    assert on_its_way.reason is not None
    assert "still on its way" in on_its_way.reason
    # it died: the same record found again is drift that needs someone, with the reason
    with sqlite_ledger.transaction() as tx:
        (command,) = tx.outbox.claim("w", 5, 30, NOW)
        tx.outbox.dead_letter(command.id, "403 INSUFFICIENT_ACCESS")
    with sqlite_ledger.transaction() as tx:
        third = OrphanedPsr().apply(ctx, tx, finding)
    assert third.status == "unresolved"
    assert third.reason is not None
    assert "dead: 403 INSUFFICIENT_ACCESS" in third.reason
