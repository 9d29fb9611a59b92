"""The sandbox org's control surface over HTTPS (``/__sandbox/`` on the REST host) and as
the Python API ``sandbox.control``: every action, and clear 400s for bad input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bridge.adapters.http import make_session
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.salesforce.control import ControlError
from bridge_sandbox.salesforce.store import SalesforceApiError

ALICE, BOB, CAROL, DAN = (a.sf_user_id for a in seed.AGENTS)
SUPPORT, BILLING, OVERFLOW = (q.sf_queue_id for q in seed.QUEUES)


class Control:
    def __init__(self, sandbox: SalesforceSandbox, session: requests.Session) -> None:
        self.base = f"{sandbox.instance_url}/__sandbox"
        self.session = session

    def post(self, path: str, body: Any = None, expect: int = 200) -> Any:
        return self.call("POST", path, body, expect)

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        answer = self.session.request(method, f"{self.base}/{path}", json=body)
        assert answer.status_code == expect, answer.text
        return answer.json() if answer.content else None


@pytest.fixture
def control(sf_sandbox: SalesforceSandbox) -> Iterator[Control]:
    with make_session(sf_sandbox.ca_bundle) as session:
        yield Control(sf_sandbox, session)


def assign(sandbox: SalesforceSandbox, started: dict[str, str], user: str = ALICE) -> str:
    work = sandbox.org.insert(
        "AgentWork",
        {
            "UserId": user,
            "WorkItemId": started["work_item_id"],
            "ServiceChannelId": seed.CHANNELS[0].sf_service_channel_id,
            "PendingServiceRoutingId": started["psr_id"],
        },
    )
    return str(work["Id"])


@pytest.mark.parametrize("queue", [SUPPORT, SUPPORT[:15], "Support_External", "Support"])
def test_start_conversation_by_queue_id_or_name(
    sf_sandbox: SalesforceSandbox, control: Control, queue: str
) -> None:
    started = control.post("conversations", {"queue": queue, "subject": "Where is my order?"})
    assert started["work_item_id"].startswith("0Mw")
    assert started["conversation_identifier"]
    [psr] = control.call("GET", "psrs")
    assert (psr["Id"], psr["QueueId"], psr["WorkItemId"]) == (
        started["psr_id"],
        SUPPORT,
        started["work_item_id"],
    )


def test_start_a_case_conversation(sf_sandbox: SalesforceSandbox, control: Control) -> None:
    started = control.post(
        "conversations", {"queue": "Billing_External", "channel": "Case", "subject": "Refund"}
    )
    case = sf_sandbox.org.get("Case", started["work_item_id"])
    assert case is not None
    assert (case["Subject"], case["OwnerId"]) == ("Refund", BILLING)


def test_agent_actions_over_http(sf_sandbox: SalesforceSandbox, control: Control) -> None:
    started = control.post("conversations", {"queue": "Support_External"})
    first = assign(sf_sandbox, started)
    assert control.post(f"agent-work/{first}/decline", {"reason": "Lunch"})["Status"] == "Declined"
    second = assign(sf_sandbox, started, BOB)
    assert control.post(f"agent-work/{second}/accept")["Status"] == "Opened"
    third = control.post(f"agent-work/{second}/transfer-to-agent", {"user_id": CAROL})
    assert (third["UserId"], third["Status"]) == (CAROL, "Assigned")
    assert control.post(f"agent-work/{third['Id']}/push-timeout")["Status"] == (
        "DeclinedOnPushTimeout"
    )
    psr = control.post(f"agent-work/{second}/transfer-to-queue", {"queue": "Billing_External"})
    assert (psr["IsTransfer"], psr["QueueId"]) == (True, BILLING)
    statuses = {w["Id"]: w["Status"] for w in control.call("GET", f"users/{BOB}/agent-work")}
    assert statuses == {second: "Transferred"}


def test_close_and_abandon_over_http(sf_sandbox: SalesforceSandbox, control: Control) -> None:
    started = control.post("conversations", {"queue": "Support_External"})
    work = assign(sf_sandbox, started)
    control.post(f"agent-work/{work}/accept")
    assert control.post(f"agent-work/{work}/close")["Status"] == "Closed"
    other = control.post("conversations", {"queue": "Support_External"})
    ended = control.post(f"work-items/{other['work_item_id']}/abandon")
    assert ended["Status"] == "Ended"
    assert [p["Id"] for p in control.call("GET", "psrs")] == [other["psr_id"]]


def test_presence_and_clock(sf_sandbox: SalesforceSandbox, control: Control) -> None:
    started = control.post("conversations", {"queue": "Support_External"})
    work = assign(sf_sandbox, started, DAN)
    offline = control.post(f"users/{DAN}/presence", {"online": False})
    assert offline == {"presence": None}
    assert sf_sandbox.control.agent_work_for(DAN)[0]["Status"] == "Unavailable"
    online = control.post(f"users/{DAN}/presence", {"online": True, "capacity": 7})
    assert (online["presence"]["ConfiguredCapacity"], online["presence"]["IsCurrentState"]) == (
        7,
        True,
    )
    again = assign(sf_sandbox, started, DAN)
    before = sf_sandbox.clock.now()
    moved = control.post("clock/advance", {"seconds": seed.DEFAULT_PUSH_TIMEOUT_SECONDS + 1})
    assert moved["now"] > before.isoformat()[:19]
    statuses = [w["Status"] for w in sf_sandbox.control.agent_work_for(DAN)]
    assert statuses == ["Unavailable", "DeclinedOnPushTimeout"]
    assert work != again


def test_faults_counters_tokens_and_reset(sf_sandbox: SalesforceSandbox, control: Control) -> None:
    fault = control.post("faults/scrt", {"path": "/api/v1/route", "status": 429, "count": 2})
    assert (fault["status"], fault["count"]) == (429, 2)
    assert [f["id"] for f in control.call("GET", "faults/scrt")] == [fault["id"]]
    assert control.call("GET", "faults/rest") == []
    control.call("DELETE", "faults/scrt", expect=204)
    assert control.call("GET", "faults/scrt") == []

    control.post("conversations", {"queue": "Support_External"})
    counted = control.call("GET", "counters/rest")
    assert {"method": "POST", "route": "/__sandbox/conversations", "status": 200, "count": 1} in (
        counted
    )
    control.call("DELETE", "counters/rest", expect=204)
    # Only the reset itself, counted once its answer went out, is left.
    assert [c["route"] for c in control.call("GET", "counters/rest")] == [
        "/__sandbox/counters/{host}"
    ]

    token = sf_sandbox.issue_token()
    assert sf_sandbox.oauth.check(token) is not None
    assert control.post("tokens/revoke")["revoked"] >= 1
    assert sf_sandbox.oauth.check(token) is None

    control.post("reset", expect=204)
    assert control.call("GET", "psrs") == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("POST", "conversations", {}, 400, "'queue'"),
        ("POST", "conversations", {"queue": 5}, 400, "'queue'"),
        ("POST", "conversations", {"queue": "Nowhere"}, 404, "No queue"),
        ("POST", "conversations", {"queue": "Support", "channel": "Fax"}, 404, "service channel"),
        ("POST", "conversations", [1], 400, "JSON object"),
        ("POST", "agent-work/nothing/accept", {}, 404, "No AgentWork"),
        ("POST", "agent-work/0Bz5g0000000001/accept", {}, 404, "No AgentWork"),
        ("POST", "agent-work/x/transfer-to-queue", {}, 400, "'queue'"),
        ("POST", "agent-work/x/transfer-to-agent", {"user_id": 3}, 400, "'user_id'"),
        ("POST", "work-items/nothing/abandon", {}, 404, "No work item"),
        ("POST", f"users/{ALICE}/presence", {}, 400, "'online'"),
        ("POST", f"users/{ALICE}/presence", {"online": True, "capacity": "lots"}, 400, "capacity"),
        ("POST", "users/nobody/presence", {"online": True}, 404, "No user"),
        ("POST", "clock/advance", {"seconds": "soon"}, 400, "seconds"),
        ("POST", "clock/advance", {"seconds": -5}, 400, "forward"),
        ("POST", "faults/mars", {}, 400, "host"),
        ("POST", "faults/rest", {"colour": "red"}, 400, "colour"),
        ("POST", "faults/rest", {"drop": "sideways"}, 400, "drop"),
        ("POST", "faults/rest", {"path": "("}, 400, "bad fault"),
        ("POST", "faults/rest", {"status": "500"}, 400, "status"),
        ("GET", "counters/mars", None, 400, "host"),
    ],
)
def test_bad_input_is_a_clear_error(
    control: Control, method: str, path: str, body: Any, status: int, fragment: str
) -> None:
    answer = control.call(method, path, body, expect=status)
    assert fragment in answer["error"]


def test_body_must_be_json(sf_sandbox: SalesforceSandbox, control: Control) -> None:
    answer = control.session.post(f"{control.base}/conversations", data=b"{oops")
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["error"]


@pytest.mark.parametrize(
    ("action", "status"),
    [
        ("accept", "Opened"),
        ("close", "Opened"),
        ("decline", "Opened"),
        ("push_timeout", "Opened"),
        ("transfer_to_queue", "Assigned"),
    ],
)
def test_transitions_from_the_wrong_status_are_refused(
    sf_sandbox: SalesforceSandbox, action: str, status: str
) -> None:
    started = sf_sandbox.control.start_conversation("Support_External")
    work = assign(sf_sandbox, started)
    if status == "Opened":
        sf_sandbox.control.accept(work)
    args = ("Billing_External",) if action == "transfer_to_queue" else ()
    if action == "close":
        sf_sandbox.control.close(work)
    with pytest.raises(SalesforceApiError) as refused:
        getattr(sf_sandbox.control, action)(work, *args)
    assert refused.value.error_code == "INVALID_STATUS"


def test_python_api_rejects_bad_values(sf_sandbox: SalesforceSandbox) -> None:
    with pytest.raises(ControlError, match="host"):
        sf_sandbox.control.faults("mars")
    with pytest.raises(ControlError, match="forward"):
        sf_sandbox.control.advance_clock(-1)
    started = sf_sandbox.control.start_conversation("Support_External")
    work = assign(sf_sandbox, started)
    sf_sandbox.control.accept(work)
    with pytest.raises(SalesforceApiError, match="already belongs"):
        sf_sandbox.control.transfer_to_agent(work, ALICE)
