"""The AWA Inbox Actions API of the sandbox instance (accept, reject, reject reasons)."""

from __future__ import annotations

from typing import Any

import pysnc
import pytest
import requests
from test_sn_awa_offer import assignment, new_interaction, offer, work_item

from bridge_sandbox import seed
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.servicenow.store import AGENT_PASSWORD
from tests.fixtures.servicenow import sn_pysnc

ALICE, BOB = (agent.sn_user_sys_id for agent in seed.AGENTS[:2])
BUSY = seed.sys_id("awa_reject_reason:Busy")
CHAT_CHANNEL = seed.CHANNELS[0].sn_service_channel_sys_id


def inbox(client: pysnc.ServiceNowClient, action: str, body: dict[str, Any]) -> requests.Response:
    url = f"{client.instance}/api/now/awa/inbox/actions/{action}"
    answer: requests.Response = client.session.post(url, json=body)
    return answer


def pending(
    sandbox: ServiceNowSandbox, client: pysnc.ServiceNowClient, agent: str = ALICE, **options: Any
) -> tuple[str, str]:
    """An interaction offered to ``agent``: (interaction sys_id, work item sys_id)."""
    interaction = new_interaction(sandbox)
    answer = offer(client, interaction, assignment(agent, **options))
    assert answer.status_code == 200, answer.text
    return interaction, str(answer.json()["result"]["work_item"]["sys_id"])


def failure(answer: requests.Response) -> tuple[int, str]:
    body = answer.json()
    assert body["status"] == "failure"
    return answer.status_code, str(body["error"]["detail"])


def test_accept_on_behalf_of_the_agent(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    interaction, item = pending(sn_sandbox, sn_client)
    answer = inbox(sn_client, "accept", {"agent_id": ALICE, "work_item_id": item})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "result": {"documentSysId": interaction, "documentTable": "interaction"}
    }
    assert work_item(sn_sandbox, item)["state"] == "accepted"
    record = sn_client.GlideRecord("interaction")
    assert record.get(interaction)
    assert (record.get_value("state"), record.get_value("assigned_to")) == (
        "work_in_progress",
        ALICE,
    )


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"work_item_id": "{item}"}, 400, "Missing agent ID"),
        ({"agent_id": ALICE}, 400, "Missing work item ID"),
        (
            {"agent_id": BOB, "work_item_id": "{item}"},
            400,
            "Work item is assigned to a different agent",
        ),
        ({"agent_id": ALICE, "work_item_id": "f" * 32}, 404, "Wrong work item ID"),
    ],
)
def test_accept_errors(
    sn_sandbox: ServiceNowSandbox,
    sn_client: pysnc.ServiceNowClient,
    body: dict[str, str],
    status: int,
    detail: str,
) -> None:
    _, item = pending(sn_sandbox, sn_client)
    sent = {key: value.replace("{item}", item) for key, value in body.items()}
    assert failure(inbox(sn_client, "accept", sent)) == (status, detail)
    assert work_item(sn_sandbox, item)["state"] == "pending_accept"


def test_accept_after_the_offer_timed_out(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    _, item = pending(sn_sandbox, sn_client, timeout=10)
    sn_sandbox.clock.advance(11)
    answer = inbox(sn_client, "accept", {"agent_id": ALICE, "work_item_id": item})
    assert failure(answer) == (400, "Work item is not in pending accept state")


def test_reject_returns_the_work_item_to_the_queue(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    _, item = pending(sn_sandbox, sn_client)
    body = {"agent_id": ALICE, "work_item_id": item, "reject_reason_id": BUSY}
    answer = inbox(sn_client, "reject", body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"result": body}
    row = work_item(sn_sandbox, item)
    assert (row["state"], row["rejected"], row["reject_reason"], row["assigned_to"]) == (
        "queued",
        "true",
        BUSY,
        "",
    )


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"agent_id": ALICE, "work_item_id": "{item}"}, 400, "Missing reject reason item ID"),
        (
            {"agent_id": ALICE, "work_item_id": "{item}", "reject_reason_id": "nope"},
            404,
            "There is no record for awa_reject_reason : nope",
        ),
        (
            {"agent_id": "ghost", "work_item_id": "{item}", "reject_reason_id": BUSY},
            404,
            "There is no record for sys_user : ghost",
        ),
        (
            {"agent_id": ALICE, "work_item_id": "gone", "reject_reason_id": BUSY},
            404,
            "There is no record for awa_work_item : gone",
        ),
        (
            {"agent_id": BOB, "work_item_id": "{item}", "reject_reason_id": BUSY},
            400,
            "Work item is assigned to a different agent",
        ),
    ],
)
def test_reject_errors(
    sn_sandbox: ServiceNowSandbox,
    sn_client: pysnc.ServiceNowClient,
    body: dict[str, str],
    status: int,
    detail: str,
) -> None:
    _, item = pending(sn_sandbox, sn_client)
    sent = {key: value.replace("{item}", item) for key, value in body.items()}
    assert failure(inbox(sn_client, "reject", sent)) == (status, detail)
    assert work_item(sn_sandbox, item)["state"] == "pending_accept"


def test_reject_is_refused_when_declining_is_not_allowed(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    _, item = pending(sn_sandbox, sn_client, allowed_to_decline="no")
    body = {"agent_id": ALICE, "work_item_id": item, "reject_reason_id": BUSY}
    assert failure(inbox(sn_client, "reject", body)) == (
        400,
        "Work item is not allowed to be rejected",
    )


def test_rejecting_a_transfer_cancels_it(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    interaction, _ = pending(sn_sandbox, sn_client, enable_auto_assign=True)
    transfer = {
        "source_queue_id": "SUPPORT_EXT",
        "target_type": "agent",
        "target_id": BOB,
        "transfer_type": "blind",
    }
    answer = offer(sn_client, interaction, {"transfer": transfer})
    item = answer.json()["result"]["work_item"]["sys_id"]
    body = {"agent_id": BOB, "work_item_id": item, "reject_reason_id": BUSY}
    assert inbox(sn_client, "reject", body).status_code == 200
    row = work_item(sn_sandbox, item)
    assert (row["state"], row["cancel_reason"], row["rejected"], row["active"]) == (
        "canceled",
        "transfer_rejected",
        "true",
        "false",
    )


def test_agents_act_only_for_themselves_without_the_integration_role(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    _, item = pending(sn_sandbox, sn_client)
    as_bob = sn_pysnc(sn_sandbox, seed.AGENTS[1].sn_user_name, AGENT_PASSWORD)
    assert inbox(as_bob, "accept", {"agent_id": ALICE, "work_item_id": item}).status_code == 403
    as_alice = sn_pysnc(sn_sandbox, seed.AGENTS[0].sn_user_name, AGENT_PASSWORD)
    assert inbox(as_alice, "accept", {"agent_id": ALICE, "work_item_id": item}).status_code == 200


def test_inbox_actions_need_authentication(sn_sandbox: ServiceNowSandbox) -> None:
    session = requests.Session()
    session.trust_env = False
    url = f"{sn_sandbox.instance_url}/api/now/awa/inbox/actions/accept"
    answer = session.post(url, json={}, verify=str(sn_sandbox.ca_bundle))
    assert answer.status_code == 401


def test_reject_reasons_of_a_channel(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    url = f"{sn_client.instance}/api/now/v1/awa/inbox/actions/reject_reasons/{CHAT_CHANNEL}"
    answer = sn_client.session.get(url)
    assert answer.status_code == 200, answer.text
    reasons = answer.json()["result"]
    assert [(r["order"], r["value"], r["display_value"]) for r in reasons] == [
        (1, "Busy", "Busy"),
        (2, "Not qualified", "Not qualified"),
        (3, "Other", "Other"),
    ]
    assert reasons[0]["sys_id"] == BUSY
    unknown = sn_client.session.get(
        f"{sn_client.instance}/api/now/awa/inbox/actions/reject_reasons/x"
    )
    assert failure(unknown) == (404, "There is no record for awa_service_channel : x")
