"""Each executor's look before retrying a create, against the sandboxes with the real
clients: it finds what an earlier attempt of the same command made in whatever state
that is now, and never mistakes an earlier leg's record for it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.salesforce.executor import CLOCK_MARGIN, SalesforceExecutor
from bridge.adapters.servicenow.client import ServiceNowAdapter
from bridge.adapters.servicenow.executor import ServiceNowExecutor
from bridge.domain import ClaimedCommand, Operation, System
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox

SF_ALICE = seed.AGENTS[0].sf_user_id
SN_ALICE = seed.AGENTS[0].sn_user_sys_id
MESSAGING = seed.CHANNELS[0].sf_service_channel_id
SUPPORT = seed.QUEUES[0]
OFFER = "/api/now/awa/documents/{document_table}/{document_sys_id}/offer"
AGENT_WORK = "/services/data/v{version}/sobjects/{sobject}"


def _command(
    system: System,
    operation: Operation,
    params: dict[str, Any],
    *,
    look_first: bool = False,
    created_at: datetime | None = None,
) -> ClaimedCommand:
    return ClaimedCommand(
        id=str(uuid.uuid4()),
        correlation_id="corr-1",
        system=system,
        operation=operation,
        params=params,
        attempts=1 if look_first else 0,
        created_at=created_at or datetime.now(UTC),
        look_first=look_first,
    )


def _agent_work_params(sf: SalesforceSandbox) -> dict[str, Any]:
    started = sf.control.start_conversation("Support_External")
    return {
        "UserId": SF_ALICE,
        "WorkItemId": started["work_item_id"],
        "PendingServiceRoutingId": started["psr_id"],
        "ServiceChannelId": MESSAGING,
    }


@pytest.mark.parametrize("then", ["Opened", "Closed", "Declined"])
def test_agent_work_look_first_finds_the_create_in_any_status(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, then: str
) -> None:
    executor = SalesforceExecutor(sf_adapter)
    params = _agent_work_params(sf_sandbox)
    command = _command(System.SALESFORCE, Operation.CREATE_AGENT_WORK, params)
    made = executor.execute(command)["id"]
    if then in ("Opened", "Closed"):
        sf_sandbox.control.accept(made)
    if then == "Closed":
        sf_sandbox.control.close(made)
    if then == "Declined":
        sf_sandbox.control.decline(made)
    [work] = sf_sandbox.org.where("AgentWork", WorkItemId=params["WorkItemId"])
    assert work["Status"] == then

    retry = _command(
        System.SALESFORCE,
        Operation.CREATE_AGENT_WORK,
        params,
        look_first=True,
        created_at=command.created_at,
    )
    assert executor.execute(retry) == {"id": made, "looked_up": True}
    assert len(sf_sandbox.org.where("AgentWork", WorkItemId=params["WorkItemId"])) == 1


def test_agent_work_look_first_ignores_an_earlier_legs_agent_work(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    """The same user declined an earlier AgentWork of this PSR; a later command for them
    whose first attempt never arrived creates, instead of taking the old one for its own."""
    executor = SalesforceExecutor(sf_adapter)
    params = _agent_work_params(sf_sandbox)
    old = executor.execute(_command(System.SALESFORCE, Operation.CREATE_AGENT_WORK, params))["id"]
    sf_sandbox.control.decline(old)
    later = datetime.now(UTC) + 2 * CLOCK_MARGIN  # enqueued after the decline was seen
    retry = _command(
        System.SALESFORCE, Operation.CREATE_AGENT_WORK, params, look_first=True, created_at=later
    )
    answer = executor.execute(retry)
    assert "looked_up" not in answer
    assert answer["id"] != old
    works = sf_sandbox.org.where("AgentWork", WorkItemId=params["WorkItemId"])
    assert sorted((w["Id"], w["Status"]) for w in works) == sorted(
        [(old, "Declined"), (answer["id"], "Assigned")]
    )


def _offer_params(document: str) -> dict[str, Any]:
    return {
        "document_table": "interaction",
        "document_id": document,
        "queue_id": SUPPORT.sn_external_id,
        "candidates": [SN_ALICE],
        "excluded": [],
        "external_segment_id": f"seg-{uuid.uuid4().hex[:8]}",
        "timeout": 30,
        "allowed_to_decline": True,
        "display_option": "",
    }


@pytest.mark.parametrize("then", ["accepted", "interaction_closed"])
def test_offer_look_first_finds_the_work_item_once_it_moved_on(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter, then: str
) -> None:
    document = sn_sandbox.instance.insert("interaction", {"state": "new"})["sys_id"]
    executor = ServiceNowExecutor(sn_adapter)
    params = _offer_params(document)
    made = executor.execute(_command(System.SERVICENOW, Operation.OFFER, params))
    sn_sandbox.control.accept(made["sys_id"])
    if then == "interaction_closed":
        sn_sandbox.control.close_interaction(document)
    [item] = sn_sandbox.control.work_items(document)
    assert item["active"] == ("true" if then == "accepted" else "false")

    found = executor.execute(_command(System.SERVICENOW, Operation.OFFER, params, look_first=True))
    assert (found["sys_id"], found["looked_up"]) == (made["sys_id"], True)
    assert found["state"] == item["state"]
    assert sn_sandbox.counters.total("POST", OFFER) == 1
