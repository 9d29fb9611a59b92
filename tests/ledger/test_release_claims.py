"""A stopping daemon gives back what its dispatcher still has claimed (SQLite and
PostgreSQL): due at once, the attempt counted, the next attempt looks first; an outcome
recorded before the give-back stays, and other workers' claims are not touched."""

from __future__ import annotations

from datetime import timedelta

from bridge.ledger import NewCommand, SqlLedger
from tests.fixtures.ledger import T0, claim_commands, get_command


def _one_each(ledger: SqlLedger, *keys: str) -> dict[str, str]:
    ids = {}
    with ledger.transaction() as tx:
        for key in keys:
            corr = tx.correlations.create(direction="sf_to_sn", state="offered")
            [row] = tx.outbox.add(NewCommand(key, corr.id, "servicenow", "offer", {"n": key}))
            ids[key] = row.id
    return ids


def test_a_workers_claims_are_given_back_and_nothing_else(ledger: SqlLedger) -> None:
    ids = _one_each(ledger, "out:1", "out:2", "answered:1", "other:1", "waiting:1")
    mine = claim_commands(ledger, "dispatch-me", 3, 60.0, T0)
    assert {c.id for c in mine} == {ids["out:1"], ids["out:2"], ids["answered:1"]}
    [other] = claim_commands(ledger, "dispatch-other", 1, 60.0, T0)
    with ledger.transaction() as tx:  # this answer came in before the stop
        tx.outbox.complete(ids["answered:1"], {"sys_id": "x"})

    with ledger.transaction() as tx:
        released = tx.outbox.release_claims("dispatch-me")
    assert released == sorted([ids["out:1"], ids["out:2"]])

    for key in ("out:1", "out:2"):
        row = get_command(ledger, ids[key])
        assert (row.status, row.claimed_by, row.lease_until, row.attempts) == (
            "pending",
            None,
            None,
            1,
        )
    assert get_command(ledger, ids["answered:1"]).status == "confirmed"
    assert get_command(ledger, other.id).claimed_by == "dispatch-other"
    with ledger.transaction() as tx:
        assert tx.outbox.release_claims("dispatch-me") == []  # nothing twice

    # due at once (well inside the old lease), each looking before it acts
    again = claim_commands(ledger, "dispatch-next", 10, 60.0, T0 + timedelta(seconds=1))
    assert {c.id: c.look_first for c in again} == {
        ids["out:1"]: True,
        ids["out:2"]: True,
        ids["waiting:1"]: False,
    }
