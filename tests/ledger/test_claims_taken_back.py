"""A daemon starting on a ledger its dead predecessor left commands claimed in: the claims
are taken back at once (SQLite and PostgreSQL), the next attempt looks before it acts,
and the starting dispatcher's own claims stay."""

from __future__ import annotations

from datetime import timedelta

from bridge.flow.dispatch import Dispatcher
from bridge.ledger import NewCommand, SqlLedger
from tests.fixtures.ledger import T0, claim_commands, get_command


def _one_each(ledger: SqlLedger, *keys: str) -> dict[str, str]:
    """A command per conversation (each claimable on its own); their ids by key."""
    ids = {}
    with ledger.transaction() as tx:
        for key in keys:
            corr = tx.correlations.create(direction="sf_to_sn", state="offered")
            [row] = tx.outbox.add(NewCommand(key, corr.id, "servicenow", "offer", {"n": key}))
            ids[key] = row.id
    return ids


def test_a_dead_predecessors_claims_are_taken_back_at_start(ledger: SqlLedger) -> None:
    ids = _one_each(ledger, "dead:1", "dead:2", "own:1", "waiting:1")
    [dead_1, dead_2] = claim_commands(ledger, "dispatch-dead", 2, 60.0, T0)
    assert {dead_1.id, dead_2.id} == {ids["dead:1"], ids["dead:2"]}
    starting = Dispatcher(ledger, {}, now=lambda: T0 + timedelta(seconds=1))
    try:
        [own] = claim_commands(ledger, starting.worker, 1, 60.0, T0)
        assert own.id == ids["own:1"]
        assert starting.take_back_claims() == 2
    finally:
        starting.close()

    for command in (dead_1, dead_2):
        row = get_command(ledger, command.id)
        # due at once, not after the lease; the killed attempt counted
        assert (row.status, row.lease_until, row.claimed_by, row.attempts) == (
            "pending",
            None,
            None,
            1,
        )
    assert get_command(ledger, own.id).status == "claimed"  # its own claim stays
    # the next claim (well inside the dead lease) gets them, looking before acting
    again = claim_commands(ledger, "dispatch-next", 10, 60.0, T0 + timedelta(seconds=2))
    assert {c.id: c.look_first for c in again} == {
        dead_1.id: True,
        dead_2.id: True,
        ids["waiting:1"]: False,
    }
