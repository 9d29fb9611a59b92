"""The in-memory ledger keeps the SQL ledger's contract for a starting daemon: a dead
predecessor's claims are taken back (due at once, looking first), its own stay."""

from __future__ import annotations

from datetime import timedelta

from bridge.flow.dispatch import Dispatcher
from bridge.ledger.memory import MemoryLedger
from bridge.ledger.ports import NewCommand
from tests.unit.engine_builders import AT


def test_memory_ledger_takes_back_a_dead_predecessors_claims() -> None:
    ledger = MemoryLedger(now=lambda: AT)
    with ledger.transaction() as tx:
        ids = {
            key: tx.outbox.enqueue(NewCommand(key, f"corr-{key}", "servicenow", "offer")).ids[0]
            for key in ("dead", "own", "waiting")
        }
    with ledger.transaction() as tx:
        [dead] = tx.outbox.claim("dispatch-dead", 1, 60.0, AT)
    starting = Dispatcher(ledger, {}, now=lambda: AT)
    try:
        with ledger.transaction() as tx:
            [own] = tx.outbox.claim(starting.worker, 1, 60.0, AT)
        assert (dead.id, own.id) == (ids["dead"], ids["own"])
        assert starting.take_back_claims() == 1
    finally:
        starting.close()
    by_id = {c.id: c for c in ledger.commands()}
    assert (by_id[dead.id].status, by_id[dead.id].attempts) == ("pending", 1)
    assert by_id[own.id].status == "claimed"
    with ledger.transaction() as tx:
        again = tx.outbox.claim("dispatch-next", 10, 60.0, AT + timedelta(seconds=1))
    assert {c.id: c.look_first for c in again} == {dead.id: True, ids["waiting"]: False}
