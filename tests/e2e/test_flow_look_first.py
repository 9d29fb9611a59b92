"""Look before retrying, when the first attempt landed and the work has moved on since:
the retry finds the bridge's own earlier create in whatever state it is now, instead of
creating again (refused: the work is taken) and dead-lettering a conversation that went
through."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import col, select

from bridge.ledger import rows
from bridge_sandbox.traffic import SCENARIOS_BY_NAME, Conversation
from tests.fixtures.bridge import BridgeRig
from tests.fixtures.ledger import db_session

ACCEPT = SCENARIOS_BY_NAME["accept"]
CLOSED_IN_SALESFORCE = SCENARIOS_BY_NAME["close_in_salesforce"].expected


def _commands(rig: BridgeRig) -> list[rows.OutboxCommand]:
    with db_session(rig.ledger) as session:
        stmt = select(rows.OutboxCommand).order_by(col(rows.OutboxCommand.created_at))
        return list(session.scalars(stmt))


def _command(rig: BridgeRig, operation: str) -> rows.OutboxCommand:
    [command] = [c for c in _commands(rig) if c.operation == operation]
    return command


def _watch(rig: BridgeRig) -> None:
    """The bridge reads and translates what changed, without sending anything."""
    rig.runtime.poll()
    rig.runtime.processor.process_pending()


def _sn_accepted(rig: BridgeRig) -> Conversation:
    """A conversation whose AWA offer the agent accepted (the AgentWork create is next)."""
    centre = rig.centre()
    return centre.drive(centre.begin(ACCEPT), until_step=1)


def _agent_work(rig: BridgeRig, conv: Conversation) -> list[dict[str, Any]]:
    return rig.centre().agent_work(conv)


@pytest.mark.parametrize("moved_on_to", ["Closed", "Declined"])
def test_create_agent_work_retry_finds_the_first_attempt_after_the_work_moved_on(
    bridge_rig: BridgeRig, moved_on_to: str
) -> None:
    rig = bridge_rig
    rig.sf.control.add_fault(
        "rest", path="/sobjects/AgentWork$", method="POST", drop="after", count=1
    )
    conv = _sn_accepted(rig)
    rig.pump()  # the create reaches Salesforce; its answer is lost on the way back
    create = _command(rig, "create_agent_work")
    assert (create.status, create.attempts) == ("failed", 1)
    assert "outcome_unknown" in (create.error or "")
    [work] = _agent_work(rig, conv)
    assert work["Status"] == "Assigned"

    # the work moves on in Salesforce before the retry is due; the bridge watches
    if moved_on_to == "Closed":
        rig.sf.control.accept(work["Id"])
        _watch(rig)
        rig.sf.control.close(work["Id"])
    else:
        rig.sf.control.decline(work["Id"])
    _watch(rig)

    rig.tick = 1.0  # the retry's back-off falls due on the sandbox clock
    for _ in range(20):
        rig.pump()
        if _command(rig, "create_agent_work").status == "confirmed" and rig.history[-1].idle:
            break

    create = _command(rig, "create_agent_work")
    assert (create.status, create.attempts) == ("confirmed", 2), create.error
    assert create.response == {"id": work["Id"], "looked_up": True}
    assert not [c for c in _commands(rig) if c.status == "dead"], [
        (c.operation, c.error) for c in _commands(rig)
    ]
    # both systems: one AgentWork, the one the first attempt made
    assert [(w["Id"], w["Status"]) for w in _agent_work(rig, conv)] == [(work["Id"], moved_on_to)]
    observed = rig.centre().observe(conv)
    assert observed.problems == ()
    if moved_on_to == "Closed":
        # the conversation completed: closed in the ledger and in ServiceNow
        assert observed == CLOSED_IN_SALESFORCE
    else:
        # declined in Omni-Channel: the bridge moved on in AWA (a transfer to the queue's
        # agents), as for any decline
        assert observed.segment_outcomes[0] == "declined"
        assert _command(rig, "transfer").status == "confirmed"
    with rig.ledger.reading() as tx:
        corr = tx.correlations.find_row(work["Id"])
    assert corr is not None
    assert corr.sf_agent_work_id == work["Id"]


def test_offer_retry_finds_the_first_attempt_after_the_work_item_moved_on(
    bridge_rig: BridgeRig,
) -> None:
    """The offer reached AWA and its answer was lost; before the retry the agent accepts
    and the interaction is closed in ServiceNow (the work item is no longer active). The
    retry finds that work item: no second offer, nothing dead-lettered."""
    rig = bridge_rig
    rig.sn.control.add_fault({"path": "/offer$", "method": "POST", "drop": "after", "count": 1})
    centre = rig.centre()
    conv = centre.begin(ACCEPT)
    for _ in range(10):
        rig.pump()
        if [c for c in _commands(rig) if c.operation == "offer" and c.status == "failed"]:
            break
    offer = _command(rig, "offer")
    assert (offer.status, offer.attempts) == ("failed", 1)
    assert "outcome_unknown" in (offer.error or "")
    [item] = centre.work_items(conv)
    assert item["state"] == "pending_accept"

    # the agent takes it and the interaction is closed in ServiceNow before the retry
    rig.sn.control.accept(item["sys_id"])
    _watch(rig)
    assert conv.interaction is not None
    rig.sn.control.close_interaction(conv.interaction)
    _watch(rig)
    [item] = centre.work_items(conv)
    assert item["active"] == "false"

    rig.tick = 1.0
    for _ in range(20):
        rig.pump()
        if _command(rig, "offer").status == "confirmed" and rig.history[-1].idle:
            break

    offer = _command(rig, "offer")
    assert (offer.status, offer.attempts) == ("confirmed", 2), offer.error
    assert (offer.response or {}).get("looked_up") is True
    assert (offer.response or {}).get("sys_id") == item["sys_id"]
    assert not [c for c in _commands(rig) if c.status == "dead"], [
        (c.operation, c.error) for c in _commands(rig)
    ]
    # AWA: the one work item, offered once; the ledger learned it
    assert [(i["sys_id"], i["offer_count"]) for i in centre.work_items(conv)] == [
        (item["sys_id"], "1")
    ]
    assert centre.interaction_state(conv) == "closed_complete"
    corr = centre.correlation(conv)
    assert corr is not None
    assert corr.sn_work_item_sys_id == item["sys_id"]
