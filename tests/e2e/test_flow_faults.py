"""Faults on the create and offer paths: 429 with Retry-After, 503, and a connection
dropped after the server acted. Nothing is lost, nothing is done twice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from sqlmodel import col, select

from bridge.adapters.salesforce.executor import SalesforceExecutor
from bridge.domain import ClaimedCommand
from bridge.flow.dispatch import Dispatcher, Executor
from bridge.ledger import rows
from bridge_sandbox.traffic import SCENARIOS_BY_NAME, Conversation
from tests.fixtures.bridge import BridgeRig
from tests.fixtures.ledger import db_session

ACCEPT = SCENARIOS_BY_NAME["accept"]
FAULTS = {
    "429": {"status": 429, "retry_after": 2},
    "503": {"status": 503},
    "dropped_after": {"drop": "after"},
}
PATHS = {
    "create_interaction": ("sn", "POST", "/api/now/table/interaction$"),
    "offer": ("sn", "POST", "/offer$"),
    "create_agent_work": ("sf", "POST", "/sobjects/AgentWork$"),
}


def _add_fault(rig: BridgeRig, host: str, method: str, path: str, **fault: Any) -> None:
    rule = {"path": path, "method": method, "count": 1, **fault}
    if host == "sf":
        rig.sf.control.add_fault("rest", **rule)
    else:
        rig.sn.control.add_fault(rule)


def _commands(rig: BridgeRig, operation: str) -> list[rows.OutboxCommand]:
    with db_session(rig.ledger) as session:
        stmt = select(rows.OutboxCommand).where(col(rows.OutboxCommand.operation) == operation)
        return list(session.scalars(stmt))


def _assert_done_once(rig: BridgeRig, conv: Conversation) -> None:
    """One interaction, one AWA work item offered once, one AgentWork."""
    assert conv.sf_work_item_id is not None
    interactions = rig.sn.instance.where("interaction", correlation_id=conv.sf_work_item_id)
    assert len(interactions) == 1
    items = rig.sn.control.work_items(interactions[0]["sys_id"])
    assert [(i["state"], i["offer_count"]) for i in items] == [("accepted", "1")]
    assert len(rig.sf.org.where("AgentWork", WorkItemId=conv.sf_work_item_id)) == 1


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
@pytest.mark.parametrize("operation", PATHS, ids=list(PATHS))
def test_fault_on_the_way_out(bridge_rig: BridgeRig, operation: str, fault: str) -> None:
    host, method, path = PATHS[operation]
    _add_fault(bridge_rig, host, method, path, **FAULTS[fault])
    bridge_rig.tick = 1.0  # back-off and Retry-After fall due on the sandbox clock
    centre = bridge_rig.centre(max_pumps=20)
    conv = centre.run(ACCEPT)
    bridge_rig.runtime.settle()
    assert centre.observe(conv) == ACCEPT.expected
    _assert_done_once(bridge_rig, conv)
    [command] = _commands(bridge_rig, operation)
    assert (command.status, command.attempts) == ("confirmed", 2)
    looked = bool((command.response or {}).get("looked_up"))
    assert looked is (fault == "dropped_after")


class _WorkerDied(BaseException):
    """The worker process ends between the call and recording its outcome."""


class _DiesAfterTheCall:
    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    def execute(self, command: ClaimedCommand) -> Mapping[str, Any]:
        self._inner.execute(command)
        raise _WorkerDied


def test_a_lease_that_ran_out_mid_call_looks_before_acting(bridge_rig: BridgeRig) -> None:
    """A worker that died after its AgentWork create reached Salesforce: the next worker
    finds the AgentWork instead of creating a second one."""
    centre = bridge_rig.centre()
    conv = centre.drive(centre.begin(ACCEPT), until_step=1)  # accepted in AWA
    bridge_rig.runtime.poll()
    bridge_rig.runtime.processor.process_pending()
    dying = Dispatcher(
        bridge_rig.ledger,
        {"salesforce": _DiesAfterTheCall(SalesforceExecutor(bridge_rig.runtime.salesforce))},
        lease_seconds=0.0,
        now=bridge_rig.clock.now,
    )
    with pytest.raises(_WorkerDied):
        dying.run_once()
    dying.close()
    [command] = _commands(bridge_rig, "create_agent_work")
    assert command.status == "claimed"
    centre.drive(conv)
    bridge_rig.runtime.settle()
    assert centre.observe(conv) == ACCEPT.expected
    _assert_done_once(bridge_rig, conv)
    [command] = _commands(bridge_rig, "create_agent_work")
    assert command.status == "confirmed"
    assert (command.response or {}).get("looked_up") is True
