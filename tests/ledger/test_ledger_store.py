"""The ledger's write side, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event

from bridge.errors import LedgerError, NotFound, VersionConflict
from bridge.ledger import NewCommand, NewEvent, SqlLedger
from tests.fixtures.ledger import (
    T0,
    add_finding,
    cancel_command,
    claim_commands,
    complete_command,
    dead_letter,
    delete_cursor,
    fail_command,
    finish_run,
    get_command,
    get_cursor,
    pending_events,
    record_events,
    release,
    set_cursor,
    start_run,
)


def ev(n: int, source: str = "salesforce") -> NewEvent:
    return NewEvent(source, f"psr-{n}:1", "psr_created", T0 + timedelta(seconds=n), {"n": n})


def make_correlations(ledger: SqlLedger, n: int) -> list[str]:
    with ledger.transaction() as tx:
        return [tx.correlations.create(direction="sf_to_sn", state="new").id for _ in range(n)]


def cmd(corr: str, key: str, **kw: Any) -> NewCommand:
    return NewCommand(key, corr, "servicenow", "offer", {"key": key}, **kw)


def test_record_events_drops_duplicates_and_moves_cursor(ledger: SqlLedger) -> None:
    first = record_events(ledger, "sf:psr", [ev(1), ev(2)], cursor="10")
    assert len(first.inserted) == 2
    assert first.duplicates == []

    again = record_events(ledger, "sf:psr", [ev(2), ev(3), ev(3)], cursor="11")
    assert len(again.inserted) == 1
    assert again.duplicates == ["psr-2:1", "psr-3:1"]
    assert get_cursor(ledger, "sf:psr") == "11"
    assert [e.source_event_id for e in pending_events(ledger, 10)] == [
        "psr-1:1",
        "psr-2:1",
        "psr-3:1",
    ]


def test_same_source_event_id_from_another_source_is_not_a_duplicate(ledger: SqlLedger) -> None:
    result = record_events(ledger, "mixed", [ev(1, "salesforce"), ev(1, "servicenow")], None)
    assert len(result.inserted) == 2
    assert get_cursor(ledger, "mixed") is None


def test_cursor_and_inbox_commit_together(ledger: SqlLedger) -> None:
    """A failure after the events are written but before the cursor moves leaves neither."""

    def fail_on_cursor(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CURSOR"):
            raise RuntimeError("crash between inbox and cursor")

    event.listen(ledger.engine, "before_cursor_execute", fail_on_cursor)
    try:
        with pytest.raises(RuntimeError, match="crash between"):
            record_events(ledger, "sf:psr", [ev(1)], cursor="99")
    finally:
        event.remove(ledger.engine, "before_cursor_execute", fail_on_cursor)
    assert pending_events(ledger, 10) == []
    assert get_cursor(ledger, "sf:psr") is None
    assert len(record_events(ledger, "sf:psr", [ev(1)], cursor="99").inserted) == 1


def test_set_cursor_overwrites(ledger: SqlLedger) -> None:
    set_cursor(ledger, "sn:awa_work_item", "2026-01-05 09:00:00")
    set_cursor(ledger, "sn:awa_work_item", "2026-01-05 09:05:00")
    assert get_cursor(ledger, "sn:awa_work_item") == "2026-01-05 09:05:00"
    delete_cursor(ledger, "sn:awa_work_item")
    assert get_cursor(ledger, "sn:awa_work_item") is None


def test_mark_event_links_correlation_and_leaves_pending(ledger: SqlLedger) -> None:
    (corr,) = make_correlations(ledger, 1)
    ids = record_events(ledger, "s", [ev(1), ev(2)], None).inserted
    with ledger.transaction() as tx:
        tx.inbox.mark([ids[0]], "processed", correlation_id=corr)
        tx.inbox.mark([ids[1]], "error", error="no mapping for queue")
    assert pending_events(ledger, 10) == []
    with ledger.transaction() as tx, pytest.raises(NotFound):
        tx.inbox.mark([10_000], "processed")


def test_optimistic_version_conflict_is_detected_and_rolls_back(ledger: SqlLedger) -> None:
    with ledger.transaction() as tx:
        corr = tx.correlations.create(direction="sf_to_sn", state="new", sf_psr_id="0JR1")
    with ledger.transaction() as tx:
        stale = tx.correlations.row(corr.id)
        assert stale is not None
    with ledger.transaction() as tx:
        updated = tx.correlations.update(corr, expected_version=1, state="offered")
        assert updated.version == 2

    def lose_the_race() -> None:
        with ledger.transaction() as tx:
            tx.outbox.add(cmd(corr.id, "k-lost"))
            tx.correlations.update(stale, expected_version=stale.version, state="cancelled")

    with pytest.raises(VersionConflict):
        lose_the_race()

    with ledger.transaction() as tx:
        now = tx.correlations.row(corr.id)
        assert now is not None
        assert (now.state, now.version) == ("offered", 2)
    assert claim_commands(ledger, "w", 10, 30, T0 + timedelta(days=1000)) == []


def test_update_correlation_refuses_fixed_and_unknown_columns(ledger: SqlLedger) -> None:
    (corr_id,) = make_correlations(ledger, 1)
    with ledger.transaction() as tx:
        corr = tx.correlations.row(corr_id)
        assert corr is not None
        with pytest.raises(LedgerError, match="id, nonsense"):
            tx.correlations.update(corr, 1, id="x", nonsense=1)


def test_timestamps_are_aware_utc(ledger: SqlLedger) -> None:
    local = datetime(2026, 1, 5, 10, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    with ledger.transaction() as tx:
        corr = tx.correlations.create(direction="sn_to_sf", state="new", closed_at=local)
    with ledger.transaction() as tx:
        back = tx.correlations.row(corr.id)
        assert back is not None
        assert back.closed_at == local
        assert back.closed_at is not None
        assert back.closed_at.utcoffset() == timedelta(0)
        assert back.created_at.tzinfo is not None
    with pytest.raises(LedgerError), ledger.transaction() as tx:
        tx.correlations.create(direction="sn_to_sf", state="new", closed_at=datetime(2026, 1, 5))


@pytest.mark.parametrize(
    "key",
    [
        "correlation",
        "sf_psr_id",
        "sf_work_item_id",
        "sf_agent_work_id",
        "sf_conversation_id",
        "sn_document_sys_id",
        "sn_work_item_sys_id",
        "external_segment_id",
        "segment_id",
        "segment_agent_work",
        "segment_work_item",
        "segment_psr",
    ],
)
def test_find_correlation_by_any_id(ledger: SqlLedger, key: str) -> None:
    with ledger.transaction() as tx:
        corr = tx.correlations.create(
            direction="sf_to_sn",
            state="new",
            sf_psr_id="psr",
            sf_work_item_id="wi",
            sf_agent_work_id="aw",
            sf_conversation_id="conv",
            sn_document_sys_id="doc",
            sn_work_item_sys_id="awi",
        )
        seg = tx.correlations.add_segment(
            corr.id,
            kind="offer",
            external_segment_id="ext-1",
            sf_agent_work_id="seg-aw",
            sn_work_item_sys_id="seg-awi",
            sf_psr_id="seg-psr",
        )
        tx.correlations.create(direction="sf_to_sn", state="new", sf_psr_id="other")
    lookup = {
        "correlation": corr.id,
        "sf_psr_id": "psr",
        "sf_work_item_id": "wi",
        "sf_agent_work_id": "aw",
        "sf_conversation_id": "conv",
        "sn_document_sys_id": "doc",
        "sn_work_item_sys_id": "awi",
        "external_segment_id": "ext-1",
        "segment_id": seg.id,
        "segment_agent_work": "seg-aw",
        "segment_work_item": "seg-awi",
        "segment_psr": "seg-psr",
    }
    with ledger.transaction() as tx:
        found = tx.correlations.find_row(lookup[key])
        assert found is not None
        assert found.id == corr.id
        assert tx.correlations.find_row("unknown") is None


def test_segments_are_numbered_in_order(ledger: SqlLedger) -> None:
    (corr,) = make_correlations(ledger, 1)
    with ledger.transaction() as tx:
        first = tx.correlations.add_segment(corr, kind="offer")
        second = tx.correlations.add_segment(corr, kind="transfer", sn_queue_sys_id="q2")
        tx.correlations.update_segment(first, outcome="transferred", closed_at=T0)
    with ledger.transaction() as tx:
        segs = tx.correlations.segment_rows(corr)
    assert [(s.seq, s.kind, s.outcome) for s in segs] == [
        (1, "offer", "transferred"),
        (2, "transfer", None),
    ]
    assert first.external_segment_id != second.external_segment_id


def test_enqueue_skips_and_reports_duplicate_keys(ledger: SqlLedger) -> None:
    (corr,) = make_correlations(ledger, 1)
    with ledger.transaction() as tx:
        made = tx.outbox.add(cmd(corr, "a"), cmd(corr, "b"))
    with ledger.transaction() as tx:
        again = tx.outbox.add(cmd(corr, "b"), cmd(corr, "c"))
        assert tx.outbox.duplicate_keys == ["b"]
    assert [c.idempotency_key for c in made] == ["a", "b"]
    assert [c.idempotency_key for c in again] == ["c"]
    assert all(c.status == "pending" and c.attempts == 0 for c in made)


def test_claim_keeps_each_correlation_in_order(ledger: SqlLedger) -> None:
    a, b = make_correlations(ledger, 2)
    with ledger.transaction() as tx:
        a1, a2 = tx.outbox.add(cmd(a, "a1"), cmd(a, "a2"))
        (b1,) = tx.outbox.add(cmd(b, "b1"))
    now = T0 + timedelta(days=1000)
    claimed = claim_commands(ledger, "w1", 10, 30, now)
    assert [c.id for c in claimed] == [a1.id, b1.id]
    stored = [get_command(ledger, c.id) for c in claimed]
    assert all(c.status == "claimed" and c.claimed_by == "w1" for c in stored)
    # the in-flight mark: a worker that dies now leaves the next attempt looking first
    assert not any(c.look_first for c in claimed)
    again = claim_commands(ledger, "w3", 10, 30, now + timedelta(seconds=31))
    assert [(c.id, c.look_first) for c in again] == [(a1.id, True), (b1.id, True)]
    assert claim_commands(ledger, "w2", 10, 30, now) == []
    complete_command(ledger, a1.id, {"ok": True})
    assert [c.id for c in claim_commands(ledger, "w2", 10, 30, now + timedelta(seconds=31))] == [
        a2.id
    ]
    done = get_command(ledger, a1.id)
    assert (done.status, done.attempts, done.response) == ("confirmed", 1, {"ok": True})
    assert done.completed_at is not None
    assert b1.id in {c.id for c in claimed}


@pytest.mark.parametrize(
    ("setup", "claimable"),
    [
        ("pending", True),
        ("pending_later", False),
        ("failed_due", True),
        ("failed_later", False),
        ("lease_expired", True),
        ("lease_valid", False),
        ("sent", False),
        ("dead", False),
        ("cancelled", False),
    ],
)
def test_claim_due_rules(ledger: SqlLedger, setup: str, claimable: bool) -> None:
    (corr,) = make_correlations(ledger, 1)
    now = datetime.now(UTC)
    later = now + timedelta(minutes=5)
    with ledger.transaction() as tx:
        (c,) = tx.outbox.add(
            cmd(corr, "k", next_attempt_at=later if setup == "pending_later" else None)
        )
    if setup in ("failed_due", "failed_later"):
        claim_commands(ledger, "w", 1, 30, now)
        fail_command(ledger, c.id, "HTTP 503", now if setup == "failed_due" else later)
    elif setup in ("lease_expired", "lease_valid"):
        claim_commands(ledger, "w", 1, -1 if setup == "lease_expired" else 60, now)
    elif setup == "sent":
        complete_command(ledger, c.id, None, status="sent")
    elif setup == "dead":
        dead_letter(ledger, c.id, "400 invalid queue")
    elif setup == "cancelled":
        cancel_command(ledger, c.id, "conversation closed")
    assert [x.id for x in claim_commands(ledger, "w2", 5, 30, now)] == ([c.id] if claimable else [])


def test_fail_dead_letter_release(ledger: SqlLedger) -> None:
    (corr,) = make_correlations(ledger, 1)
    with ledger.transaction() as tx:
        c1, c2 = tx.outbox.add(cmd(corr, "1"), cmd(corr, "2"))
    now = datetime.now(UTC)
    claim_commands(ledger, "w", 5, 30, now)
    fail_command(ledger, c1.id, "429 Too Many Requests", now + timedelta(seconds=30))
    failed = get_command(ledger, c1.id)
    assert (failed.status, failed.attempts, failed.error) == ("failed", 1, "429 Too Many Requests")
    assert (failed.claimed_by, failed.lease_until) == (None, None)
    assert claim_commands(ledger, "w", 5, 30, now) == []  # c2 waits behind c1
    (again,) = claim_commands(ledger, "w", 5, 30, now + timedelta(seconds=31))
    assert again.id == c1.id
    dead_letter(ledger, c1.id, "400 INVALID_FIELD")
    dead = get_command(ledger, c1.id)
    assert (dead.status, dead.attempts, dead.error) == ("dead", 2, "400 INVALID_FIELD")
    (next_,) = claim_commands(ledger, "w", 5, 30, now)
    assert next_.id == c2.id
    release(ledger, c2.id)
    released = get_command(ledger, c2.id)
    assert (released.status, released.claimed_by, released.attempts) == ("pending", None, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda lg: complete_command(lg, "nope", None),
        lambda lg: fail_command(lg, "nope", "x", T0),
        lambda lg: dead_letter(lg, "nope", "x"),
        lambda lg: release(lg, "nope"),
        lambda lg: get_command(lg, "nope"),
        lambda lg: finish_run(lg, "nope", "succeeded", {}),
    ],
)
def test_unknown_ids_are_not_found(ledger: SqlLedger, call: Any) -> None:
    with pytest.raises(NotFound):
        call(ledger)


def test_concurrent_claimers_never_share_a_command(ledger: SqlLedger) -> None:
    corrs = make_correlations(ledger, 120)
    with ledger.transaction() as tx:
        tx.outbox.add(*(cmd(c, f"k{i}") for i, c in enumerate(corrs)))
    now = datetime.now(UTC)
    seen: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(n: int) -> None:
        try:
            start.wait()
            while batch := claim_commands(ledger, f"w{n}", 3, 60, now):
                seen[n].extend(c.id for c in batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    claimed = [i for ids in seen for i in ids]
    assert len(claimed) == len(set(claimed)) == 120


def test_reconcile_run_lifecycle(ledger: SqlLedger) -> None:
    run = start_run(ledger, ["orphaned_psr", "stuck_outbox"], "apply")
    finding = add_finding(
        ledger,
        run.id,
        reconciler="orphaned_psr",
        kind="orphaned_psr",
        subject="0JR1",
        status="applied",
        action="delete_route",
    )
    done = finish_run(ledger, run.id, "succeeded", {"applied": 1})
    assert (done.status, done.summary, done.reconcilers) == (
        "succeeded",
        {"applied": 1},
        ["orphaned_psr", "stuck_outbox"],
    )
    assert done.finished_at is not None
    assert finding.run_id == run.id
    with pytest.raises(LedgerError, match="dry_run or apply"):
        start_run(ledger, [], "sometimes")


def test_command_outcome_commits_with_the_state_change(ledger: SqlLedger) -> None:
    (corr_id,) = make_correlations(ledger, 1)
    with ledger.transaction() as tx:
        (c,) = tx.outbox.add(cmd(corr_id, "offer"))
    claim_commands(ledger, "w", 1, 30, datetime.now(UTC))

    def confirm_then_conflict() -> None:
        with ledger.transaction() as tx:
            tx.outbox.complete(c.id, {"sys_id": "x"})
            corr = tx.correlations.row(corr_id)
            assert corr is not None
            tx.correlations.update(corr, expected_version=7, state="offered")

    with pytest.raises(VersionConflict):
        confirm_then_conflict()
    assert get_command(ledger, c.id).status == "claimed"
    with ledger.transaction() as tx:
        tx.outbox.complete(c.id, {"sys_id": "x"})
        corr = tx.correlations.row(corr_id)
        assert corr is not None
        tx.correlations.update(corr, expected_version=1, state="offered")
    assert get_command(ledger, c.id).status == "confirmed"


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            lambda tx, c: tx.correlations.create(direction="sideways", state="new"),
            "direction must be one of",
        ),
        (lambda tx, c: tx.correlations.add_segment(c, kind="poke"), "Segment.kind must be one of"),
        (lambda tx, c: tx.correlations.add_segment(c, kind="offer", seq=4), "cannot set seq"),
        (
            lambda tx, c: tx.correlations.update_segment(
                tx.correlations.add_segment(c, kind="offer"), outcome="maybe"
            ),
            "outcome must be one of",
        ),
        (lambda tx, c: tx.inbox.mark([1], "lost"), "unknown inbox status 'lost'"),
        (lambda tx, c: tx.outbox.complete("x", None, status="dead"), "must be sent or confirmed"),
    ],
)
def test_bad_values_are_refused_by_name(ledger: SqlLedger, action: Any, message: str) -> None:
    (corr,) = make_correlations(ledger, 1)
    with pytest.raises(LedgerError, match=message), ledger.transaction() as tx:
        action(tx, corr)
