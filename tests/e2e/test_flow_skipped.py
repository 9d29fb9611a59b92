"""Skipped transitions end right in both systems (issue 15, defect 3).

Both sandboxes over TLS, the bridge's real clients, the bridge pumped round by round. Each
test lets the bridge read a conversation up to some state, then makes several changes in
the sandboxes without pumping (the bridge is not reading, or is down), so that the
bridge's next reads show only the later snapshot. Each asserts what Salesforce,
ServiceNow and the ledger ended up holding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge_sandbox import seed
from bridge_sandbox.traffic import (
    SCENARIOS_BY_NAME,
    SF_ACCEPT,
    SF_TRANSFER_QUEUE,
    SN_ACCEPT,
    ContactCentre,
    Conversation,
    Observed,
    Scenario,
    Step,
    Stuck,
    customer_in_salesforce,
    customer_in_servicenow,
    ledger_problems,
)
from tests.fixtures.bridge import BridgeRig

_SN_OF_SF = {a.sf_user_id: a.sn_user_sys_id for a in seed.AGENTS}
_NOT_CHECKED = Observed(None, (), False, (), (), None)  # each test asserts for itself


def _conversation(centre: ContactCentre, name: str, *, in_salesforce: bool) -> Conversation:
    start = customer_in_salesforce if in_salesforce else customer_in_servicenow
    return centre.begin(Scenario(name, start, (), _NOT_CHECKED, 0))


def _pump_until(centre: ContactCentre, what: str, ready: Callable[[], bool]) -> None:
    for _ in range(centre.max_pumps):
        if ready():
            return
        centre.pump()
    raise Stuck(f"waited {centre.max_pumps} rounds for {what}")


def _take(centre: ContactCentre, conv: Conversation, step: Step) -> None:
    _pump_until(centre, step.awaits, lambda: step.ready(centre, conv))
    step.act(centre, conv)


def _unread_assigned(centre: ContactCentre, conv: Conversation) -> dict[str, Any] | None:
    """The conversation's Assigned AgentWork, while the bridge has not read it."""
    work = [w for w in centre.agent_work(conv) if w["Status"] == "Assigned"]
    if not work:
        return None
    assert not centre.bridge_saw(f"agent_work:{work[-1]['Id']}:Assigned"), (
        "the bridge read the assignment: this test needs it unread"
    )
    return work[-1]


def _read_assigned(centre: ContactCentre, conv: Conversation) -> dict[str, Any] | None:
    """The conversation's Assigned AgentWork, once the bridge has read it (and its echo)."""
    for work in centre.agent_work(conv):
        if work["Status"] == "Assigned" and centre.bridge_saw(f"agent_work:{work['Id']}:Assigned"):
            return work
    return None


def _commands(centre: ContactCentre, conv: Conversation) -> list[tuple[str, str]]:
    corr = centre.correlation(conv)
    assert corr is not None
    with centre.ledger.reading() as tx:
        detail = tx.audit.correlation_detail(corr.id)
    return [(c.operation, c.status) for c in detail.commands]


def _problems(centre: ContactCentre, conv: Conversation) -> list[str]:
    corr = centre.correlation(conv)
    assert corr is not None
    with centre.ledger.reading() as tx:
        return ledger_problems(tx, corr.id)


def _segments(centre: ContactCentre, conv: Conversation) -> list[Any]:
    corr = centre.correlation(conv)
    assert corr is not None
    with centre.ledger.reading() as tx:
        return list(tx.correlations.segment_rows(corr.id))


def test_omni_auto_accept_read_as_opened_is_active_in_both_systems(bridge_rig: BridgeRig) -> None:
    """ServiceNow-started work: Omni-Channel assigns and the agent accepts between two
    reads; the bridge reads the AgentWork first as Opened."""
    centre = bridge_rig.centre()
    conv = _conversation(centre, "auto_accept", in_salesforce=False)
    # the bridge routes the work; Omni-Channel assigns it at once, after this round's read
    _pump_until(centre, "an Assigned AgentWork", lambda: _unread_assigned(centre, conv) is not None)
    work = _unread_assigned(centre, conv)
    assert work is not None
    centre.sf.control.accept(work["Id"])
    bridge_rig.runtime.settle()

    assert not centre.bridge_saw(f"agent_work:{work['Id']}:Assigned")
    assert centre.observe(conv) == SCENARIOS_BY_NAME["sn_originated"].expected
    # ServiceNow: the agent who accepted in Salesforce holds the work item
    (item,) = centre.work_items(conv)
    assert (item["state"], item["assigned_to"]) == ("accepted", _SN_OF_SF[work["UserId"]])
    corr = centre.correlation(conv)
    assert corr is not None
    assert (corr.sf_agent_work_id, corr.sf_user_id) == (work["Id"], work["UserId"])
    ((segment),) = _segments(centre, conv)
    assert (segment.kind, segment.sf_user_id, segment.sn_user_sys_id) == (
        "route",
        work["UserId"],
        _SN_OF_SF[work["UserId"]],
    )
    assert _problems(centre, conv) == []


def test_omni_assign_accept_and_close_unread_closes_the_interaction(
    bridge_rig: BridgeRig,
) -> None:
    """ServiceNow-started work assigned, accepted and closed in Salesforce between two
    reads: the bridge reads the AgentWork first as Closed."""
    centre = bridge_rig.centre()
    conv = _conversation(centre, "auto_accept_close", in_salesforce=False)
    _pump_until(centre, "an Assigned AgentWork", lambda: _unread_assigned(centre, conv) is not None)
    work = _unread_assigned(centre, conv)
    assert work is not None
    centre.sf.control.accept(work["Id"])
    centre.sf.control.close(work["Id"])
    bridge_rig.runtime.settle()

    observed = centre.observe(conv)
    assert observed == SCENARIOS_BY_NAME["sn_originated_close_in_salesforce"].expected
    assert observed.interaction_state == "closed_complete"
    (item,) = centre.work_items(conv)
    assert item["assigned_to"] == _SN_OF_SF[work["UserId"]]
    assert _problems(centre, conv) == []


def test_accept_and_transfer_to_a_queue_unread_reaches_awa(bridge_rig: BridgeRig) -> None:
    """Salesforce-started work: the agent the bridge assigned accepts and transfers to an
    external queue between two reads; the bridge reads the new IsTransfer PSR and the
    AgentWork as Transferred, never Opened. AWA learns of the transfer, and the
    conversation goes on to a new agent."""
    centre = bridge_rig.centre()
    conv = _conversation(centre, "accept_transfer_unread", in_salesforce=True)
    _take(centre, conv, SN_ACCEPT)
    _pump_until(
        centre, "the bridge's AgentWork, read", lambda: _read_assigned(centre, conv) is not None
    )
    assert centre.correlation_state(conv) == "assigning"
    work = _read_assigned(centre, conv)
    assert work is not None
    centre.sf.control.accept(work["Id"])
    centre.sf.control.transfer_to_queue(work["Id"], SF_TRANSFER_QUEUE)

    # the bridge transfers in AWA: a new offer for the conversation appears
    _take(centre, conv, SN_ACCEPT)
    _take(centre, conv, SF_ACCEPT)
    bridge_rig.runtime.settle()

    assert not centre.bridge_saw(f"agent_work:{work['Id']}:Opened")
    assert centre.observe(conv) == SCENARIOS_BY_NAME["transfer_to_queue"].expected
    corr = centre.correlation(conv)
    assert corr is not None
    assert corr.sf_queue_id == seed.QUEUES[1].sf_queue_id
    assert _problems(centre, conv) == []


def test_accept_and_close_while_the_bridge_was_down_ends_closed(bridge_rig: BridgeRig) -> None:
    """Salesforce-started work: accepted and closed in Salesforce while the bridge was
    down. The restarted bridge reads the AgentWork Closed (AcceptDateTime set), the PSR
    deleted and the work item ended: a completed conversation, not an abandoned one."""
    centre = bridge_rig.centre()
    conv = _conversation(centre, "accept_close_while_down", in_salesforce=True)
    _take(centre, conv, SN_ACCEPT)
    _pump_until(
        centre, "the bridge's AgentWork, read", lambda: _read_assigned(centre, conv) is not None
    )
    assert centre.correlation_state(conv) == "assigning"
    work = _read_assigned(centre, conv)
    assert work is not None

    bridge_rig.runtime.close()  # the bridge goes down
    centre.sf.control.accept(work["Id"])
    closed = centre.sf.control.close(work["Id"])
    assert closed["AcceptDateTime"]
    assert closed["CloseDateTime"]
    bridge_rig.restart()
    bridge_rig.runtime.settle()

    observed = centre.observe(conv)
    assert observed == SCENARIOS_BY_NAME["close_in_salesforce"].expected
    assert observed.interaction_state == "closed_complete"
    assert observed.segment_outcomes == ("closed",)
    # ServiceNow: the item the agent accepted is closed with the agent on it
    (item,) = centre.work_items(conv)
    assert item["assigned_to"] == _SN_OF_SF[work["UserId"]]
    # no delete of a PSR the acceptance already removed
    operations = [operation for operation, _ in _commands(centre, conv)]
    assert "delete_psr" not in operations
    assert operations.count("close_interaction") == 1
    assert _problems(centre, conv) == []
