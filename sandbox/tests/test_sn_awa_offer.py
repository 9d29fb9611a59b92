"""The AWA Offer Work API of the sandbox instance, through a real pysnc client's session."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pysnc
import pytest
import requests

from bridge_sandbox import seed
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.servicenow.awa import OFFERED_ON_FORMAT
from bridge_sandbox.servicenow.store import AGENT_PASSWORD, role_sys_id
from tests.fixtures.servicenow import sn_pysnc

ALICE, BOB, CAROL = (agent.sn_user_sys_id for agent in seed.AGENTS[:3])
SUPPORT = seed.QUEUES[0]
BILLING = seed.QUEUES[1]


def new_interaction(sandbox: ServiceNowSandbox, **values: str) -> str:
    """An open interaction, as the bridge creates it before offering."""
    return sandbox.instance.insert("interaction", {"state": "new", **values})["sys_id"]


def offer(
    client: pysnc.ServiceNowClient,
    interaction: str,
    body: dict[str, Any],
    *,
    prefix: str = "/api/now",
) -> requests.Response:
    url = f"{client.instance}{prefix}/awa/documents/interaction/{interaction}/offer"
    answer: requests.Response = client.session.post(url, json=body)
    return answer


def assignment(agent: str = ALICE, **options: Any) -> dict[str, Any]:
    return {
        "queue_id": SUPPORT.sn_external_id,
        "external_segment_id": "segment-1",
        "assignment": {"agent_sys_id": agent, **options},
    }


def work_item(sandbox: ServiceNowSandbox, sys_id: str) -> dict[str, str]:
    row = sandbox.instance.get("awa_work_item", sys_id)
    assert row is not None
    return row


def offered(
    sandbox: ServiceNowSandbox, client: pysnc.ServiceNowClient, body: dict[str, Any]
) -> str:
    """Offer a fresh interaction; the work item's sys_id."""
    answer = offer(client, new_interaction(sandbox), body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["result"]["work_item"]["sys_id"])


def refusal(answer: requests.Response) -> tuple[int, str]:
    body = answer.json()
    assert body["result"]["success"] is False
    assert body["status"] == "failure"
    assert body["error"]["message"] == body["result"]["message"]
    return answer.status_code, str(body["result"]["message"])


def add_user(sandbox: ServiceNowSandbox, user_name: str, roles: tuple[str, ...]) -> str:
    user = sandbox.instance.insert("sys_user", {"user_name": user_name, "name": user_name})
    for role in roles:
        sandbox.instance.insert(
            "sys_user_has_role", {"user": user["sys_id"], "role": role_sys_id(role)}
        )
    sandbox.instance.insert(
        "awa_agent_presence",
        {"agent": user["sys_id"], "current_presence_state": seed.SN_PRESENCE_AVAILABLE},
    )
    return user["sys_id"]


def offered_on(sandbox: ServiceNowSandbox, seconds_from_now: float) -> str:
    moment = sandbox.clock.now() + timedelta(seconds=seconds_from_now)
    return moment.strftime(OFFERED_ON_FORMAT)[:-3]


@pytest.mark.parametrize("queue_id", [SUPPORT.sn_external_id, SUPPORT.sn_queue_sys_id])
@pytest.mark.parametrize("prefix", ["/api/now", "/api/now/v1"])
def test_offer_puts_the_work_item_in_pending_accept(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient, queue_id: str, prefix: str
) -> None:
    interaction = new_interaction(sn_sandbox)
    answer = offer(sn_client, interaction, {**assignment(), "queue_id": queue_id}, prefix=prefix)

    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert result["success"] is True
    assert result["message"] == "Manual assignment successfully requested."
    number = sn_sandbox.instance.get("interaction", interaction)["number"]  # type: ignore[index]
    assert result["work_item"] | {"sys_id": ""} == {
        "display_name": f"Interaction: {number}",
        "sys_id": "",
        "document_id": interaction,
        "document_table": "interaction",
        "queue": SUPPORT.sn_queue_sys_id,
    }
    records = sn_client.GlideRecord("awa_work_item")
    assert records.get(result["work_item"]["sys_id"])
    assert records.get_value("state") == "pending_accept"
    assert records.get_display_value("state") == "Pending Accept"
    assert records.get_value("assigned_to") == ALICE
    assert records.get_value("offer_count") == "1"
    assert records.get_value("external_segment_id") == "segment-1"
    assert records.get_value("allocated_by") == seed.SN_INTEGRATION_USER_SYS_ID


@pytest.mark.parametrize(
    ("options", "status", "message"),
    [
        ({"timeout": -1}, 400, "Timeout value cannot be negative"),
        ({"timeout": "soon"}, 400, "soon is not a valid timeout value"),
        (
            {"timeout": 30, "offered_on": "2026-01-01 10:00:00"},
            400,
            "Offered time (2026-01-01 10:00:00) must be in the following format: "
            "yyyy-MM-dd'T'HH:mm:ss.SSS",
        ),
        ({"display_option": "tab_only"}, 400, "tab_only is not a valid display option"),
        ({"allowed_to_decline": "maybe"}, 400, "maybe is not a valid boolean value"),
        ({"enable_auto_assign": "2"}, 400, "2 is not a valid boolean value"),
        (
            {"timeout": 30, "after_timeout_presence": "nope"},
            400,
            "nope is not a valid presence state",
        ),
    ],
)
def test_offer_refuses_bad_assignment_values(
    sn_sandbox: ServiceNowSandbox,
    sn_client: pysnc.ServiceNowClient,
    options: dict[str, Any],
    status: int,
    message: str,
) -> None:
    answer = offer(sn_client, new_interaction(sn_sandbox), assignment(**options))
    assert refusal(answer) == (status, message)


def test_offered_on_must_leave_the_agent_time(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    future = offered_on(sn_sandbox, 60)
    answer = offer(
        sn_client, new_interaction(sn_sandbox), assignment(timeout=30, offered_on=future)
    )
    assert refusal(answer) == (
        400,
        f"Offered time ({future}) must be before the current time, otherwise agent will have "
        "more time to accept the work item",
    )
    stale = offered_on(sn_sandbox, -60)
    answer = offer(sn_client, new_interaction(sn_sandbox), assignment(timeout=30, offered_on=stale))
    assert refusal(answer) == (
        400,
        f"Timestamp after timeout ({stale}) must be after the current time, otherwise agent "
        "has no time to accept the work item",
    )


def test_offer_refuses_documents_queues_and_agents_it_cannot_use(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    assert offer(sn_client, "0" * 32, assignment()).status_code == 404
    unknown_queue = {**assignment(), "queue_id": "NO_SUCH_QUEUE"}
    assert refusal(offer(sn_client, new_interaction(sn_sandbox), unknown_queue)) == (
        404,
        "Queue NO_SUCH_QUEUE not found",
    )
    closed = new_interaction(sn_sandbox, state="closed_complete", active="false")
    assert refusal(offer(sn_client, closed, assignment())) == (409, "Document is not active")
    not_agent = seed.SN_INTEGRATION_USER_SYS_ID
    assert refusal(offer(sn_client, new_interaction(sn_sandbox), assignment(not_agent))) == (
        409,
        f"{not_agent} is not a valid agent",
    )
    internal = add_user(sn_sandbox, "internal.agent", ("awa_agent",))
    assert refusal(offer(sn_client, new_interaction(sn_sandbox), assignment(internal))) == (
        409,
        "The user does not have the 'awa_external_user' role",
    )


def test_checks_run_in_the_documented_order(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    closed = new_interaction(sn_sandbox, state="closed_complete", active="false")
    body = {**assignment("not-an-agent", timeout=-1), "queue_id": "NO_SUCH_QUEUE"}
    assert refusal(offer(sn_client, closed, body))[1] == "Document is not active"
    open_one = new_interaction(sn_sandbox)
    assert refusal(offer(sn_client, open_one, body))[1] == "Queue NO_SUCH_QUEUE not found"
    body["queue_id"] = SUPPORT.sn_external_id
    assert refusal(offer(sn_client, open_one, body))[1] == "not-an-agent is not a valid agent"


def test_offer_needs_awa_manager_or_integration_user_role(
    sn_sandbox: ServiceNowSandbox,
) -> None:
    as_agent = sn_pysnc(sn_sandbox, seed.AGENTS[0].sn_user_name, AGENT_PASSWORD)
    answer = offer(as_agent, new_interaction(sn_sandbox), assignment())
    assert refusal(answer) == (
        403,
        f"Caller {ALICE} does not have the awa_manager or awa_integration_user role",
    )
    manager = add_user(sn_sandbox, "awa.manager", ("awa_manager",))
    sn_sandbox.instance.set_password(manager, "manager-password")
    as_manager = sn_pysnc(sn_sandbox, "awa.manager", "manager-password")
    assert offer(as_manager, new_interaction(sn_sandbox), assignment()).status_code == 200


def test_a_work_item_is_offered_to_one_agent_at_a_time(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    interaction = new_interaction(sn_sandbox)
    assert offer(sn_client, interaction, assignment(ALICE)).status_code == 200
    assert refusal(offer(sn_client, interaction, assignment(BOB))) == (
        409,
        f"Work Item is already assigned to {ALICE}",
    )
    item = sn_sandbox.awa.active_work_item(interaction)
    assert item is not None
    sn_sandbox.awa.accept(item["sys_id"], ALICE)
    assert refusal(offer(sn_client, interaction, assignment(BOB))) == (
        409,
        "Work Item accepted can not be assigned",
    )


def test_offer_to_an_agent_who_is_not_available(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    sn_sandbox.control.set_presence(BOB, "Away")
    assert refusal(offer(sn_client, new_interaction(sn_sandbox), assignment(BOB))) == (
        409,
        "Agent is not available",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", "true"),
        ("yes", "true"),
        ("1", "true"),
        (True, "true"),
        (1, "true"),
        ("false", "false"),
        ("no", "false"),
        ("0", "false"),
        (False, "false"),
    ],
)
def test_boolean_values(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient, value: Any, expected: str
) -> None:
    item = offered(sn_sandbox, sn_client, assignment(allowed_to_decline=value))
    assert work_item(sn_sandbox, item)["allowed_to_decline"] == expected


def test_auto_assign_accepts_at_once_and_the_interaction_follows(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    interaction = new_interaction(sn_sandbox)
    body = assignment(BOB, enable_auto_assign="yes", display_option="card_and_tab", timeout=5)
    answer = offer(sn_client, interaction, body)
    assert answer.status_code == 200
    item = work_item(sn_sandbox, answer.json()["result"]["work_item"]["sys_id"])
    assert (item["state"], item["assigned_to"]) == ("accepted", BOB)
    record = sn_client.GlideRecord("interaction")
    assert record.get(interaction)
    assert record.get_value("state") == "work_in_progress"
    assert record.get_value("assigned_to") == BOB
    sn_sandbox.clock.advance(10)  # an auto-assigned item has no offer time-out
    assert work_item(sn_sandbox, item["sys_id"])["state"] == "accepted"


def test_offer_times_out_on_the_sandbox_clock(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    item = offered(sn_sandbox, sn_client, assignment(timeout=30))
    sn_sandbox.clock.advance(20)
    assert work_item(sn_sandbox, item)["state"] == "pending_accept"
    sn_sandbox.clock.advance(11)
    row = work_item(sn_sandbox, item)
    assert (row["state"], row["timed_out"], row["assigned_to"]) == ("queued", "true", "")
    assert sn_sandbox.control.presence(ALICE) == "Available"


def test_offered_on_in_the_past_shortens_the_deadline(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    item = offered(
        sn_sandbox, sn_client, assignment(timeout=30, offered_on=offered_on(sn_sandbox, -25))
    )
    sn_sandbox.clock.advance(6)
    assert work_item(sn_sandbox, item)["timed_out"] == "true"


def test_after_timeout_presence_switches_the_agent(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    body = assignment(timeout=10, after_timeout_presence=seed.SN_PRESENCE_AWAY)
    offered(sn_sandbox, sn_client, body)
    sn_sandbox.clock.advance(11)
    assert sn_sandbox.control.presence(ALICE) == "Away"
    assert refusal(offer(sn_client, new_interaction(sn_sandbox), assignment()))[1] == (
        "Agent is not available"
    )


def test_a_new_offer_clears_the_previous_outcome(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    interaction = new_interaction(sn_sandbox)
    assert offer(sn_client, interaction, assignment(ALICE, timeout=5)).status_code == 200
    sn_sandbox.clock.advance(6)
    second = {**assignment(BOB), "external_segment_id": "segment-2"}
    answer = offer(sn_client, interaction, second)
    item = work_item(sn_sandbox, answer.json()["result"]["work_item"]["sys_id"])
    assert (item["state"], item["assigned_to"], item["timed_out"]) == (
        "pending_accept",
        BOB,
        "false",
    )
    assert (item["offer_count"], item["external_segment_id"]) == ("2", "segment-2")
    assert len(sn_sandbox.awa.work_items(interaction)) == 1


def test_transfer_to_an_agent(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    interaction = new_interaction(sn_sandbox)
    first = offer(sn_client, interaction, assignment(ALICE, enable_auto_assign=True))
    old = first.json()["result"]["work_item"]["sys_id"]
    body = {
        "external_segment_id": "segment-2",
        "transfer": {
            "source_queue_id": SUPPORT.sn_external_id,
            "target_type": "agent",
            "target_id": BOB,
            "transfer_type": "blind",
        },
    }
    answer = offer(sn_client, interaction, body)
    assert answer.status_code == 200, answer.text
    new = work_item(sn_sandbox, answer.json()["result"]["work_item"]["sys_id"])
    assert work_item(sn_sandbox, old)["active"] == "false"
    assert (new["state"], new["assigned_to"], new["previous_work_item"]) == (
        "pending_accept",
        BOB,
        old,
    )
    assert (new["external_segment_id"], new["queue"]) == ("segment-2", SUPPORT.sn_queue_sys_id)


def test_blind_transfer_to_an_unavailable_agent_fails(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    interaction = new_interaction(sn_sandbox)
    offer(sn_client, interaction, assignment(ALICE, enable_auto_assign=True))
    sn_sandbox.control.set_presence(CAROL, "Offline")
    transfer = {
        "source_queue_id": SUPPORT.sn_external_id,
        "target_type": "agent",
        "target_id": CAROL,
        "transfer_type": "blind",
    }
    assert refusal(offer(sn_client, interaction, {"transfer": transfer})) == (
        409,
        "Transfer failed - couldn't blind transfer to agent",
    )
    assert [row["state"] for row in sn_sandbox.awa.work_items(interaction)] == ["accepted"]


def test_transfer_to_a_queue_without_an_active_work_item(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    interaction = new_interaction(sn_sandbox)
    transfer = {
        "source_queue_id": SUPPORT.sn_queue_sys_id,
        "target_type": "queue",
        "target_id": BILLING.sn_external_id,
        "transfer_type": "blind",
    }
    answer = offer(sn_client, interaction, {"transfer": transfer})
    assert answer.status_code == 200, answer.text
    source, target = sn_sandbox.awa.work_items(interaction)
    assert (source["queue"], source["active"]) == (SUPPORT.sn_queue_sys_id, "false")
    assert (target["queue"], target["state"], target["previous_work_item"]) == (
        BILLING.sn_queue_sys_id,
        "queued",
        source["sys_id"],
    )


@pytest.mark.parametrize(
    ("transfer", "message"),
    [
        (
            {"target_type": "agent", "target_id": BOB, "transfer_type": "blind"},
            "Missing required parameter: transfer.source_queue_id",
        ),
        (
            {
                "target_type": "group",
                "target_id": BOB,
                "transfer_type": "blind",
                "source_queue_id": "SUPPORT_EXT",
            },
            "group is not a valid target type",
        ),
        (
            {
                "target_type": "agent",
                "target_id": BOB,
                "transfer_type": "warm",
                "source_queue_id": "SUPPORT_EXT",
            },
            "warm is not a valid transfer type",
        ),
    ],
)
def test_transfer_parameters_are_checked(
    sn_sandbox: ServiceNowSandbox,
    sn_client: pysnc.ServiceNowClient,
    transfer: dict[str, str],
    message: str,
) -> None:
    answer = offer(sn_client, new_interaction(sn_sandbox), {"transfer": transfer})
    assert refusal(answer) == (400, message)


def test_closing_the_interaction_cancels_its_work_items(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    interaction = new_interaction(sn_sandbox)
    item = offer(sn_client, interaction, assignment(timeout=30)).json()["result"]["work_item"]
    record = sn_client.GlideRecord("interaction")
    assert record.get(interaction)
    record.state = "closed_abandoned"
    record.update()
    row = work_item(sn_sandbox, item["sys_id"])
    assert (row["state"], row["cancel_reason"], row["active"]) == (
        "canceled",
        "disqualified",
        "false",
    )
    closed = sn_sandbox.instance.get("interaction", interaction)
    assert closed is not None
    assert (closed["state"], closed["active"]) == ("closed_abandoned", "false")
    assert closed["closed_at"]
    sn_sandbox.clock.advance(31)  # a canceled offer no longer times out
    assert work_item(sn_sandbox, item["sys_id"])["state"] == "canceled"


@pytest.mark.parametrize(
    ("sent", "expected"), [({}, "manually_assigned"), ({"cancel_reason": "timeout"}, "timeout")]
)
def test_router_cancels_through_the_table_api(
    sn_sandbox: ServiceNowSandbox,
    sn_client: pysnc.ServiceNowClient,
    sent: dict[str, str],
    expected: str,
) -> None:
    item = offered(sn_sandbox, sn_client, assignment())
    url = f"{sn_client.instance}/api/now/table/awa_work_item/{item}"
    answer = sn_client.session.patch(url, json={"state": "canceled", **sent})
    assert answer.status_code == 200, answer.text
    row = work_item(sn_sandbox, item)
    assert (row["state"], row["cancel_reason"], row["active"]) == ("canceled", expected, "false")


def test_queue_max_wait_cancels_queued_work(sn_sandbox: ServiceNowSandbox) -> None:
    sn_sandbox.instance.update("awa_queue", seed.QUEUES[2].sn_queue_sys_id, {"max_wait_time": "60"})
    started = sn_sandbox.control.create_interaction("SF_OVERFLOW")
    sn_sandbox.clock.advance(30)
    assert work_item(sn_sandbox, started["work_item"])["state"] == "queued"
    sn_sandbox.clock.advance(31)
    row = work_item(sn_sandbox, started["work_item"])
    assert (row["state"], row["cancel_reason"]) == ("canceled", "timeout")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "Exception while reading request"),
        (b"[1, 2]", "Exception while reading request"),
        (b"{}", "Missing required parameter: queue_id"),
        (b'{"queue_id": "SUPPORT_EXT"}', "assignment must be a JSON object"),
    ],
)
def test_malformed_requests_get_a_clear_400(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient, payload: bytes, message: str
) -> None:
    interaction = new_interaction(sn_sandbox)
    url = f"{sn_client.instance}/api/now/awa/documents/interaction/{interaction}/offer"
    answer = sn_client.session.post(url, data=payload, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == message


@pytest.mark.parametrize(
    "options",
    [
        {"offered_on": "not a time"},
        {"after_timeout_presence": "nope"},
        {"timeout": 0, "offered_on": "x"},
    ],
)
def test_time_settings_are_ignored_without_a_timeout(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient, options: dict[str, Any]
) -> None:
    item = offered(sn_sandbox, sn_client, assignment(**options))
    sn_sandbox.clock.advance(3600)
    assert work_item(sn_sandbox, item)["state"] == "pending_accept"


# -- transfers as the bridge makes them (issue 15) ------------------------------------------


def _accepted_by(
    sandbox: ServiceNowSandbox, client: pysnc.ServiceNowClient, agent: str
) -> tuple[str, str]:
    """An interaction whose work item ``agent`` holds (auto-assigned on Support)."""
    interaction = new_interaction(sandbox)
    answer = offer(client, interaction, assignment(agent, enable_auto_assign=True))
    assert answer.status_code == 200, answer.text
    return interaction, str(answer.json()["result"]["work_item"]["sys_id"])


def test_a_queue_transfer_then_an_offer_lands_on_the_target_queue(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    """The external router's transfer to another queue: the work item moves there queued,
    and the router's offer assigns that same work item on that queue."""
    interaction, old = _accepted_by(sn_sandbox, sn_client, ALICE)
    transfer = {
        "source_queue_id": SUPPORT.sn_queue_sys_id,
        "target_type": "queue",
        "target_id": BILLING.sn_queue_sys_id,
        "transfer_type": "blind",
    }
    moved = offer(
        sn_client, interaction, {"external_segment_id": "segment-2", "transfer": transfer}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["result"]["work_item"]["queue"] == BILLING.sn_queue_sys_id
    queued = work_item(sn_sandbox, moved.json()["result"]["work_item"]["sys_id"])
    assert (queued["state"], queued["assigned_to"], queued["previous_work_item"]) == (
        "queued",
        "",
        old,
    )
    body = {
        "queue_id": BILLING.sn_external_id,
        "external_segment_id": "segment-2",
        "assignment": {"agent_sys_id": BOB, "timeout": 30},
    }
    answer = offer(sn_client, interaction, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["work_item"]["sys_id"] == queued["sys_id"]
    item = work_item(sn_sandbox, queued["sys_id"])
    assert (item["state"], item["assigned_to"], item["queue"]) == (
        "pending_accept",
        BOB,
        BILLING.sn_queue_sys_id,
    )
    assert [(i["queue"], i["active"]) for i in sn_sandbox.awa.work_items(interaction)] == [
        (SUPPORT.sn_queue_sys_id, "false"),
        (BILLING.sn_queue_sys_id, "true"),
    ]


def test_a_transfer_to_an_agent_takes_the_assignment_settings(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    """``assignment`` beside ``transfer``: auto-assign hands the work item over accepted
    (the interaction follows); a time-out makes a transfer nobody takes time out."""
    interaction, _ = _accepted_by(sn_sandbox, sn_client, ALICE)
    transfer = {
        "source_queue_id": SUPPORT.sn_external_id,
        "target_type": "agent",
        "target_id": BOB,
        "transfer_type": "blind",
    }
    body = {
        "external_segment_id": "segment-2",
        "transfer": transfer,
        "assignment": {"agent_sys_id": BOB, "enable_auto_assign": True, "timeout": 30},
    }
    answer = offer(sn_client, interaction, body)
    assert answer.status_code == 200, answer.text
    handed = work_item(sn_sandbox, answer.json()["result"]["work_item"]["sys_id"])
    assert (handed["state"], handed["assigned_to"], handed["queue"]) == (
        "accepted",
        BOB,
        SUPPORT.sn_queue_sys_id,
    )
    record = sn_client.GlideRecord("interaction")
    assert record.get(interaction)
    assert (record.get_value("state"), record.get_value("assigned_to")) == ("work_in_progress", BOB)

    again = {
        "external_segment_id": "segment-3",
        "transfer": {**transfer, "target_id": CAROL},
        "assignment": {"agent_sys_id": CAROL, "timeout": 30},
    }
    answer = offer(sn_client, interaction, again)
    assert answer.status_code == 200, answer.text
    pending = answer.json()["result"]["work_item"]["sys_id"]
    assert work_item(sn_sandbox, pending)["state"] == "pending_accept"
    sn_sandbox.clock.advance(31)
    row = work_item(sn_sandbox, pending)
    assert (row["state"], row["timed_out"], row["assigned_to"]) == ("queued", "true", "")
