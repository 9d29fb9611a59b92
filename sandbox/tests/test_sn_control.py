"""The sandbox instance's control surface, over HTTP and as the Python API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from test_sn_awa_offer import assignment, work_item

from bridge_sandbox import seed
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.servicenow.store import ServiceNowApiError
from tests.fixtures.servicenow import sn_session

ALICE, BOB = (agent.sn_user_sys_id for agent in seed.AGENTS[:2])
OVERFLOW = seed.QUEUES[2]


@pytest.fixture
def control(sn_sandbox: ServiceNowSandbox) -> Iterator[requests.Session]:
    """A session for the control surface (it needs no credentials)."""
    with sn_session(sn_sandbox) as session:
        session.auth = None
        yield session


def call(
    sandbox: ServiceNowSandbox,
    session: requests.Session,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> Any:
    answer = session.request(method, f"{sandbox.instance_url}/__sandbox{path}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def offer_to(sandbox: ServiceNowSandbox, interaction: str, agent: str, **options: Any) -> str:
    body = {**assignment(agent, **options), "queue_id": OVERFLOW.sn_external_id}
    return str(
        sandbox.awa.offer("interaction", interaction, body, caller=None)["work_item"]["sys_id"]
    )


@pytest.mark.parametrize(
    "queue", [OVERFLOW.sn_queue_sys_id, OVERFLOW.name, OVERFLOW.sn_external_id]
)
def test_customer_starts_a_conversation_over_http(
    sn_sandbox: ServiceNowSandbox, control: requests.Session, queue: str
) -> None:
    started = call(
        sn_sandbox, control, "POST", "/interactions", {"queue": queue, "short_description": "Hi"}
    )
    interaction = call(sn_sandbox, control, "GET", f"/interactions/{started['interaction']}")
    assert (interaction["state"], interaction["short_description"], interaction["queue"]) == (
        "on_hold",
        "Hi",
        OVERFLOW.sn_queue_sys_id,
    )
    items = call(sn_sandbox, control, "GET", f"/interactions/{started['interaction']}/work_items")
    assert [(i["sys_id"], i["state"], i["queue"]) for i in items] == [
        (started["work_item"], "queued", OVERFLOW.sn_queue_sys_id)
    ]


def test_agent_accepts_over_http(sn_sandbox: ServiceNowSandbox, control: requests.Session) -> None:
    started = sn_sandbox.control.create_interaction("SF_OVERFLOW")
    item = offer_to(sn_sandbox, started["interaction"], BOB)
    assert [i["sys_id"] for i in call(sn_sandbox, control, "GET", "/work_items/pending")] == [item]
    accepted = call(sn_sandbox, control, "POST", f"/work_items/{item}/accept")
    assert (accepted["state"], accepted["assigned_to"]) == ("accepted", BOB)
    interaction = sn_sandbox.control.interaction(started["interaction"])
    assert (interaction["state"], interaction["assigned_to"]) == ("work_in_progress", BOB)


def test_agent_rejects_with_a_named_reason(
    sn_sandbox: ServiceNowSandbox, control: requests.Session
) -> None:
    started = sn_sandbox.control.create_interaction("Salesforce Overflow")
    item = offer_to(sn_sandbox, started["interaction"], ALICE)
    rejected = call(sn_sandbox, control, "POST", f"/work_items/{item}/reject", {"reason": "other"})
    assert (rejected["state"], rejected["rejected"], rejected["reject_reason"]) == (
        "queued",
        "true",
        seed.sys_id("awa_reject_reason:Other"),
    )


def test_agent_lets_the_offer_time_out(
    sn_sandbox: ServiceNowSandbox, control: requests.Session
) -> None:
    started = sn_sandbox.control.create_interaction("SF_OVERFLOW")
    item = offer_to(
        sn_sandbox,
        started["interaction"],
        ALICE,
        timeout=600,
        after_timeout_presence=seed.SN_PRESENCE_OFFLINE,
    )
    timed_out = call(sn_sandbox, control, "POST", f"/work_items/{item}/time_out")
    assert (timed_out["state"], timed_out["timed_out"]) == ("queued", "true")
    presence = call(sn_sandbox, control, "GET", f"/agents/{seed.AGENTS[0].sn_user_name}/presence")
    assert presence == {"state": "Offline"}


def test_clock_advance_applies_time_outs(
    sn_sandbox: ServiceNowSandbox, control: requests.Session
) -> None:
    started = sn_sandbox.control.create_interaction("SF_OVERFLOW")
    item = offer_to(sn_sandbox, started["interaction"], ALICE, timeout=30)
    before = sn_sandbox.clock.now()
    answer = call(sn_sandbox, control, "POST", "/clock/advance", {"seconds": 31})
    assert answer["now"] >= (before.replace(microsecond=0)).strftime("%Y-%m-%d %H:%M:%S")
    assert work_item(sn_sandbox, item)["timed_out"] == "true"


@pytest.mark.parametrize(("target_type", "target"), [("agent", "bob.brown"), ("queue", "Billing")])
def test_agent_transfers(
    sn_sandbox: ServiceNowSandbox, control: requests.Session, target_type: str, target: str
) -> None:
    started = sn_sandbox.control.create_interaction("SUPPORT_EXT")
    item = offer_to(sn_sandbox, started["interaction"], ALICE, enable_auto_assign=True)
    body = {"target_type": target_type, "target_id": target}
    result = call(sn_sandbox, control, "POST", f"/work_items/{item}/transfer", body)
    new = work_item(sn_sandbox, result["work_item"]["sys_id"])
    assert new["previous_work_item"] == item
    expected = ("pending_accept", BOB) if target_type == "agent" else ("queued", "")
    assert (new["state"], new["assigned_to"]) == expected


@pytest.mark.parametrize(
    ("action", "state"), [("close", "closed_complete"), ("abandon", "closed_abandoned")]
)
def test_conversation_ends(
    sn_sandbox: ServiceNowSandbox, control: requests.Session, action: str, state: str
) -> None:
    started = sn_sandbox.control.create_interaction("SF_OVERFLOW")
    ended = call(sn_sandbox, control, "POST", f"/interactions/{started['interaction']}/{action}")
    assert (ended["state"], ended["active"]) == (state, "false")
    item = work_item(sn_sandbox, started["work_item"])
    assert (item["state"], item["cancel_reason"]) == ("canceled", "disqualified")


def test_presence_over_http(sn_sandbox: ServiceNowSandbox, control: requests.Session) -> None:
    call(sn_sandbox, control, "POST", "/agents/alice.ahmed/presence", {"state": "Away"})
    assert sn_sandbox.control.presence(ALICE) == "Away"
    assert not sn_sandbox.awa.is_available(ALICE)
    call(sn_sandbox, control, "POST", f"/agents/{ALICE}/presence", {"state": "available"})
    assert sn_sandbox.awa.is_available(ALICE)


def test_faults_and_counters(sn_sandbox: ServiceNowSandbox, control: requests.Session) -> None:
    fault = call(
        sn_sandbox,
        control,
        "POST",
        "/faults",
        {"path": "/api/now/table/", "status": 503, "count": 1},
    )
    assert call(sn_sandbox, control, "GET", "/faults") == [fault]
    api = sn_session(sn_sandbox)
    assert api.get(f"{sn_sandbox.instance_url}/api/now/table/interaction").status_code == 503
    assert call(sn_sandbox, control, "GET", "/faults") == []
    counted = call(sn_sandbox, control, "GET", "/counters")
    assert {
        "method": "GET",
        "route": "/api/now/table/{table}",
        "status": 503,
        "count": 1,
    } in counted
    call(sn_sandbox, control, "POST", "/faults", {"path": ".*", "status": 500})
    call(sn_sandbox, control, "DELETE", "/faults")
    assert call(sn_sandbox, control, "GET", "/faults") == []
    call(sn_sandbox, control, "DELETE", "/counters")
    assert sn_sandbox.counters.total(method="GET", route="/api/now/table/{table}") == 0


def test_reset_restores_the_seed(sn_sandbox: ServiceNowSandbox, control: requests.Session) -> None:
    started = sn_sandbox.control.create_interaction("SF_OVERFLOW")
    sn_sandbox.control.set_presence("alice.ahmed", "Offline")
    call(sn_sandbox, control, "POST", "/reset")
    assert sn_sandbox.instance.get("interaction", started["interaction"]) is None
    assert sn_sandbox.control.presence(ALICE) == "Available"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/interactions", {"queue": "Nowhere"}, 400, "Queue Nowhere not found"),
        ("POST", "/interactions", {}, 400, "Missing or invalid 'queue'"),
        ("POST", "/interactions", {"queue": 7}, 400, "Missing or invalid 'queue'"),
        ("POST", "/work_items/nope/accept", None, 404, "No Record found"),
        ("POST", "/agents/nobody/presence", {"state": "Away"}, 400, "User nobody not found"),
        (
            "POST",
            "/agents/alice.ahmed/presence",
            {"state": "Lunch"},
            404,
            "Lunch is not a valid presence state",
        ),
        ("POST", "/clock/advance", {"seconds": "ten"}, 400, "Missing or invalid 'seconds'"),
        ("POST", "/clock/advance", {"seconds": -5}, 400, "seconds must not be negative"),
        ("POST", "/faults", {"status": 503, "colour": "red"}, 400, "Unknown fault fields"),
        ("POST", "/faults", {"path": "(", "status": 503}, 400, "Invalid fault"),
        ("POST", "/faults", {"drop": "sideways"}, 400, "Invalid fault"),
    ],
)
def test_bad_control_input_gets_a_servicenow_shaped_error(
    sn_sandbox: ServiceNowSandbox,
    control: requests.Session,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    message: str,
) -> None:
    answer = control.request(method, f"{sn_sandbox.instance_url}/__sandbox{path}", json=body)
    assert answer.status_code == status
    assert answer.json()["status"] == "failure"
    assert answer.json()["error"]["message"] == message


def test_malformed_json_to_the_control_surface(
    sn_sandbox: ServiceNowSandbox, control: requests.Session
) -> None:
    answer = control.post(
        f"{sn_sandbox.instance_url}/__sandbox/interactions",
        data=b"{oops",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["detail"] == "The payload is not valid JSON."


def test_python_api_drives_a_whole_conversation(sn_sandbox: ServiceNowSandbox) -> None:
    api = sn_sandbox.control
    started = api.create_interaction("SF_OVERFLOW", short_description="Printer on fire")
    item = offer_to(sn_sandbox, started["interaction"], ALICE, timeout=30)
    assert [row["sys_id"] for row in api.pending_offers()] == [item]
    api.reject(item, reason=seed.sys_id("awa_reject_reason:Busy"))
    item = offer_to(sn_sandbox, started["interaction"], BOB)
    api.accept(item)
    assert api.interaction(started["interaction"])["assigned_to"] == BOB
    api.close_interaction(started["interaction"])
    assert api.work_item(item)["cancel_reason"] == "disqualified"
    with pytest.raises(ServiceNowApiError, match="Reject reason Lazy not found"):
        api.reject(item, reason="Lazy")
    with pytest.raises(ServiceNowApiError, match="not a valid target type"):
        api.transfer(item, "team", "x")
