"""The Interaction Service API of the sandbox org over HTTPS with requests: the BYO routing
flow, every header and body error the sandbox produces with its documented code, RequestId
replay, Cancel only for assigned work; answers checked against the published OpenAPI file."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bridge.adapters.http import make_session
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.salesforce.ids import make_id, to15
from bridge_sandbox.serving import Fault

ALICE, BOB, CAROL, DAN = (a.sf_user_id for a in seed.AGENTS)
SUPPORT, BILLING, OVERFLOW = (q.sf_queue_id for q in seed.QUEUES)
SPEC = Path(
    "/work/shared/reference/salesforce/interaction-service-api-inbound-interaction-api.yaml"
)
CONTEXT = "Bridge_ChannelDefinition"

# -- a small checker of the documented properties, types and enums -----------------------
_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
}


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip(f"the Interaction Service API description is not at {SPEC}")
    loaded: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return dict(loaded["components"]["schemas"])


def violations(schemas: dict[str, Any], schema: dict[str, Any], value: Any, at: str) -> list[str]:
    """What in ``value`` the schema does not document or allow (empty when it conforms)."""
    if "$ref" in schema:
        resolved = schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return violations(
            schemas, {**resolved, **{k: v for k, v in schema.items() if k != "$ref"}}, value, at
        )
    kind = schema.get("type")
    if kind and not _TYPES[kind](value):
        return [f"{at}: {value!r} is not of type {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r} is not one of {schema['enum']}"]
    found: list[str] = []
    if isinstance(value, dict) and (kind == "object" or "properties" in schema):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        found += [
            f"{at}: required {name!r} missing"
            for name in schema.get("required", [])
            if name not in value
        ]
        for name, item in value.items():
            if name in properties:
                found += violations(schemas, properties[name], item, f"{at}.{name}")
            elif isinstance(extra, dict):
                found += violations(schemas, extra, item, f"{at}.{name}")
            else:
                found.append(f"{at}: {name!r} is not a documented property")
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            found += violations(schemas, schema["items"], item, f"{at}[{n}]")
    return found


def conforms(schemas: dict[str, Any], name: str, body: Any) -> None:
    assert violations(schemas, {"$ref": f"#/components/schemas/{name}"}, body, name) == []


@pytest.mark.parametrize(
    ("schema", "body", "ok"),
    [
        ("DeleteRouteResponse", {"success": True}, True),
        ("DeleteRouteResponse", {"success": "yes"}, False),
        ("DeleteRouteResponse", {"success": True, "extra": 1}, False),
        ("Error", {"code": 10018, "message": "m"}, True),
        ("Error", {"code": "10018", "message": "m"}, False),
        ("Error", {"message": "m"}, False),
        (
            "PatchAgentWorkRequest",
            {"workId": "x", "contextType": "Agent", "status": "Cancel"},
            True,
        ),
        ("PatchAgentWorkRequest", {"workId": "x", "contextType": "Agent", "status": "Stop"}, False),
    ],
)
def test_checker_catches_what_the_spec_does_not_allow(
    schemas: dict[str, Any], schema: str, body: Any, ok: bool
) -> None:
    found = violations(schemas, {"$ref": f"#/components/schemas/{schema}"}, body, schema)
    assert (found == []) is ok


# -- a client of the SCRT host ---------------------------------------------------------
class Scrt:
    def __init__(self, sandbox: SalesforceSandbox, session: requests.Session) -> None:
        self.sandbox = sandbox
        self.session = session
        self.token = sandbox.issue_token()

    def headers(self, method: str, **overrides: str | None) -> dict[str, str]:
        headers: dict[str, str | None] = {
            "Authorization": f"Bearer {self.token}",
            "OrgId": to15(self.sandbox.org_id),
            "AuthorizationContext": CONTEXT,
            "RequestId": str(uuid.uuid4()),
            "Content-Type": "application/json",
        }
        if method == "PATCH":
            headers["AuthorizationContextType"] = "ConversationChannelDefinition"
        headers.update(overrides)
        return {k: v for k, v in headers.items() if v is not None}

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        **headers: str | None,
    ) -> requests.Response:
        data = raw if raw is not None else json.dumps(body).encode()
        return self.session.request(
            method,
            f"{self.sandbox.scrt_url}/api/v1/{path}",
            data=data,
            headers=self.headers(method, **headers),
        )

    def route(
        self, conversation: str, queue: str = SUPPORT, routing_type: str = "Initial"
    ) -> dict[str, Any]:
        answer = self.call(
            "POST",
            "route",
            {
                "conversationIdentifier": conversation,
                "routingType": routing_type,
                "routingInfo": {"queueId": queue},
            },
        )
        assert answer.status_code == 202, answer.text
        return dict(answer.json())

    def assign(self, work_item: str, user: str) -> dict[str, Any]:
        answer = self.call("POST", "agentWork", {"userId": user, "workItemId": to15(work_item)})
        assert answer.status_code == 202, answer.text
        return dict(answer.json())

    def patch(self, work_id: str, status: str) -> requests.Response:
        return self.call(
            "PATCH", "agentWork", {"workId": work_id, "status": status, "contextType": "Agent"}
        )


@pytest.fixture
def scrt(sf_sandbox: SalesforceSandbox) -> Iterator[Scrt]:
    with make_session(sf_sandbox.ca_bundle) as session:
        yield Scrt(sf_sandbox, session)


def conversation() -> str:
    return str(uuid.uuid4())


def status_of(sandbox: SalesforceSandbox, work_id: str) -> str:
    record = sandbox.org.get("AgentWork", work_id)
    assert record is not None
    return str(record["Status"])


# -- the routing flow ------------------------------------------------------------------
def test_route_assign_accept_close(
    sf_sandbox: SalesforceSandbox, scrt: Scrt, schemas: dict[str, Any]
) -> None:
    conv = conversation()
    mark = sf_sandbox.org.changes.latest_replay_id
    routed = scrt.route(conv)
    conforms(schemas, "PostRouteResponse", routed)
    assert routed["success"] is True
    psr = sf_sandbox.org.get("PendingServiceRouting", routed["psrId"])
    assert psr is not None
    assert (psr["WorkItemId"], psr["QueueId"], psr["IsTransfer"]) == (
        routed["workItemId"],
        SUPPORT,
        False,
    )
    session = sf_sandbox.org.get("MessagingSession", routed["workItemId"])
    assert session is not None
    assert (session["ConversationIdentifier"], session["Status"]) == (conv, "Waiting")

    assigned = scrt.assign(routed["workItemId"], ALICE)
    conforms(schemas, "AgentWorkResponse", assigned)
    details = assigned["agentWorkDetails"]
    assert (details["existPsr"], details["psrId"]) == (True, routed["psrId"])
    assert details["routingContext"]["conversationIdentifier"] == conv
    work_id = assigned["agentWorkId"]
    assert status_of(sf_sandbox, work_id) == "Assigned"

    accepted = scrt.patch(to15(work_id), "Accept")
    assert accepted.status_code == 202
    conforms(schemas, "PatchAgentWorkResponse", accepted.json())
    assert status_of(sf_sandbox, work_id) == "Opened"
    assert sf_sandbox.org.get("PendingServiceRouting", routed["psrId"]) is None

    assert scrt.patch(work_id, "Close").status_code == 202
    assert status_of(sf_sandbox, work_id) == "Closed"
    entries = [
        (e.entity, e.change_type)
        for e in sf_sandbox.org.changes.since(mark)
        if e.entity in ("PendingServiceRouting", "AgentWork")
    ]
    assert entries == [
        ("PendingServiceRouting", "CREATE"),
        ("AgentWork", "CREATE"),
        ("PendingServiceRouting", "UPDATE"),
        ("AgentWork", "UPDATE"),
        ("PendingServiceRouting", "DELETE"),
        ("AgentWork", "UPDATE"),
    ]


def test_decline_hands_the_psr_back(sf_sandbox: SalesforceSandbox, scrt: Scrt) -> None:
    routed = scrt.route(conversation())
    work_id = scrt.assign(routed["workItemId"], ALICE)["agentWorkId"]
    assert scrt.patch(work_id, "Decline").status_code == 202
    assert status_of(sf_sandbox, work_id) == "Declined"
    psr = sf_sandbox.org.get("PendingServiceRouting", routed["psrId"])
    assert psr is not None
    assert psr["IsPushed"] is False


def test_route_to_an_omni_routed_queue_is_assigned_by_the_org(
    sf_sandbox: SalesforceSandbox, scrt: Scrt
) -> None:
    routed = scrt.route(conversation(), OVERFLOW)
    works = sf_sandbox.org.where("AgentWork", WorkItemId=routed["workItemId"])
    assert [w["Status"] for w in works] == ["Assigned"]
    assert works[0]["PendingServiceRoutingId"] == routed["psrId"]


def test_transfer_creates_a_transfer_psr(sf_sandbox: SalesforceSandbox, scrt: Scrt) -> None:
    conv = conversation()
    routed = scrt.route(conv)
    work_id = scrt.assign(routed["workItemId"], ALICE)["agentWorkId"]
    scrt.patch(work_id, "Accept")
    transferred = scrt.route(conv, BILLING, "Transfer")
    assert transferred["workItemId"] == routed["workItemId"]
    psr = sf_sandbox.org.get("PendingServiceRouting", transferred["psrId"])
    assert psr is not None
    assert (psr["QueueId"], psr["IsTransfer"]) == (BILLING, True)
    assert status_of(sf_sandbox, work_id) == "Transferred"


def test_delete_route_deletes_the_psr(
    sf_sandbox: SalesforceSandbox, scrt: Scrt, schemas: dict[str, Any]
) -> None:
    conv = conversation()
    routed = scrt.route(conv)
    first = scrt.call("DELETE", "route", {"conversationIdentifier": conv, "cancelReason": "Cancel"})
    assert first.status_code == 202
    conforms(schemas, "DeleteRouteResponse", first.json())
    assert first.json() == {"success": True}
    assert sf_sandbox.org.get("PendingServiceRouting", routed["psrId"]) is None
    again = scrt.call("DELETE", "route", {"conversationIdentifier": conv})
    assert (again.status_code, again.json()) == (202, {"success": False})
    # With its PSR gone the conversation can be routed again.
    assert scrt.route(conv)["workItemId"] == routed["workItemId"]


def test_cancel_only_while_assigned_then_reassign(
    sf_sandbox: SalesforceSandbox, scrt: Scrt, schemas: dict[str, Any]
) -> None:
    routed = scrt.route(conversation())
    first = scrt.assign(routed["workItemId"], ALICE)["agentWorkId"]
    canceled = scrt.patch(first, "Cancel")
    assert canceled.status_code == 202
    assert status_of(sf_sandbox, first) == "Canceled"
    second = scrt.assign(routed["workItemId"], BOB)["agentWorkId"]
    assert scrt.patch(second, "Accept").status_code == 202
    refused = scrt.patch(second, "Cancel")
    assert (refused.status_code, refused.json()["code"]) == (409, 10085)
    assert (
        "can't be canceled" in refused.json()["message"]
        or "can be canceled" in refused.json()["message"]
    )
    conforms(schemas, "Error", refused.json())
    assert status_of(sf_sandbox, second) == "Opened"
    again = scrt.patch(first, "Cancel")
    assert (again.status_code, again.json()["code"]) == (409, 10085)


# -- RequestId replay -----------------------------------------------------------------
def test_repeated_request_id_returns_the_first_answer_and_changes_nothing(
    sf_sandbox: SalesforceSandbox, scrt: Scrt
) -> None:
    conv, request_id = conversation(), str(uuid.uuid4())
    body = {
        "conversationIdentifier": conv,
        "routingType": "Initial",
        "routingInfo": {"queueId": SUPPORT},
    }
    first = scrt.call("POST", "route", body, RequestId=request_id)
    mark = sf_sandbox.org.changes.latest_replay_id
    second = scrt.call("POST", "route", body, RequestId=request_id)
    assert (second.status_code, second.json()) == (first.status_code, first.json())
    assert sf_sandbox.org.changes.latest_replay_id == mark
    assert (
        len(sf_sandbox.org.where("PendingServiceRouting", WorkItemId=first.json()["workItemId"]))
        == 1
    )
    # A new RequestId is a new request: the conversation has an open PSR now.
    third = scrt.call("POST", "route", body)
    assert (third.status_code, third.json()["code"]) == (409, 10055)


def test_replay_of_an_error_is_the_same_error(scrt: Scrt) -> None:
    request_id = str(uuid.uuid4())
    body = {
        "conversationIdentifier": "nobody",
        "routingType": "Transfer",
        "routingInfo": {"queueId": SUPPORT},
    }
    first = scrt.call("POST", "route", body, RequestId=request_id)
    second = scrt.call("POST", "route", body, RequestId=request_id)
    assert first.status_code == second.status_code == 400
    assert first.json() == second.json()


# -- header errors --------------------------------------------------------------------
OTHER_ORG = to15(make_id("00D", 2))


@pytest.mark.parametrize(
    ("method", "overrides", "status", "code"),
    [
        ("POST", {"Authorization": None}, 401, 10004),
        ("POST", {"Authorization": "Bearer not-a-token"}, 401, 10004),
        ("POST", {"Authorization": "Basic abc"}, 401, 10004),
        ("POST", {"OrgId": None}, 400, 10016),
        ("POST", {"OrgId": "00Dnope"}, 400, 10016),
        ("POST", {"OrgId": seed.SF_ORG_ID}, 400, 10016),
        ("POST", {"OrgId": OTHER_ORG}, 401, 10004),
        ("POST", {"AuthorizationContext": None}, 400, 10016),
        ("POST", {"AuthorizationContext": "no prefix here"}, 403, 10005),
        ("POST", {"RequestId": None}, 400, 10016),
        ("POST", {"RequestId": "request-1"}, 400, 10016),
        ("POST", {"Content-Type": "text/plain"}, 400, 10016),
        ("POST", {"AuthorizationContextType": "Nonsense"}, 400, 10093),
        ("PATCH", {"AuthorizationContextType": None}, 400, 10093),
        ("PATCH", {"AuthorizationContextType": "Nonsense"}, 400, 10093),
    ],
)
def test_header_errors(
    scrt: Scrt,
    schemas: dict[str, Any],
    method: str,
    overrides: dict[str, str | None],
    status: int,
    code: int,
) -> None:
    path = "route" if method == "POST" else "agentWork"
    body = {
        "conversationIdentifier": conversation(),
        "routingType": "Initial",
        "routingInfo": {"queueId": SUPPORT},
    }
    answer = scrt.call(method, path, body, **overrides)
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    conforms(schemas, "Error", answer.json())


def test_revoked_token_is_refused(sf_sandbox: SalesforceSandbox, scrt: Scrt) -> None:
    sf_sandbox.control.revoke_tokens()
    answer = scrt.call("DELETE", "route", {"conversationIdentifier": "x"})
    assert (answer.status_code, answer.json()["code"]) == (401, 10004)


# -- body errors ----------------------------------------------------------------------
def _route(**fields: Any) -> dict[str, Any]:
    return {
        "conversationIdentifier": "c-1",
        "routingType": "Initial",
        "routingInfo": {"queueId": SUPPORT},
        **fields,
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "route", b"", 400, 10100),
        ("POST", "route", b"{not json", 400, 10100),
        ("POST", "route", b"[1, 2]", 400, 10100),
        ("POST", "route", _route(conversationIdentifier=None), 400, 10018),
        ("POST", "route", _route(conversationIdentifier=""), 400, 10018),
        ("POST", "route", _route(routingType="Later"), 400, 10089),
        ("POST", "route", _route(routingType="Conference"), 400, 10075),
        ("POST", "route", _route(routingInfo=None), 400, 10030),
        ("POST", "route", _route(routingInfo="Support"), 400, 10089),
        (
            "POST",
            "route",
            _route(
                routingInfo={"queueId": SUPPORT, "flow": {"flowId": "300x", "queueId": SUPPORT}}
            ),
            400,
            10030,
        ),
        ("POST", "route", _route(routingInfo={"flow": {"flowId": "300x"}}), 400, 10024),
        ("POST", "route", _route(routingInfo={"queueId": "00Gnothing"}), 400, 10032),
        ("POST", "route", _route(routingInfo={"queueId": ALICE}), 400, 10032),
        (
            "POST",
            "route",
            _route(routingInfo={"queueId": SUPPORT, "routingAttributes": {"a": 1}}),
            400,
            10089,
        ),
        (
            "POST",
            "route",
            _route(routingType="Transfer", conversationIdentifier="unknown"),
            400,
            10018,
        ),
        ("DELETE", "route", {"conversationIdentifier": "unknown"}, 400, 10018),
        ("DELETE", "route", {}, 400, 10018),
        ("DELETE", "route", {"conversationIdentifier": "c", "cancelReason": "Bored"}, 400, 10089),
        ("POST", "agentWork", {"userId": "nobody", "workItemId": "0Mw5g0000000001"}, 400, 15106),
        (
            "POST",
            "agentWork",
            {"userId": make_id("005", 77), "workItemId": "0Mw5g0000000001"},
            400,
            15106,
        ),
        ("POST", "agentWork", {"userId": ALICE, "workItemId": make_id("0Mw", 1)}, 400, 10012),
        ("POST", "agentWork", {"userId": ALICE}, 400, 10012),
        ("POST", "agentWork", {"userId": ALICE, "workItemId": to15(make_id("500", 1))}, 400, 15110),
        (
            "POST",
            "agentWork",
            {"userId": ALICE, "workItemId": to15(make_id("0Mw", 99999))},
            404,
            15111,
        ),
        (
            "PATCH",
            "agentWork",
            {"workId": "0Bz5g0000000001", "status": "Accept", "contextType": "Robot"},
            400,
            10083,
        ),
        (
            "PATCH",
            "agentWork",
            {"workId": "0Bz5g0000000001", "status": "Accept", "contextType": "Chatbot"},
            400,
            10084,
        ),
        (
            "PATCH",
            "agentWork",
            {"workId": "0Bz5g0000000001", "status": "Later", "contextType": "Agent"},
            400,
            10085,
        ),
        (
            "PATCH",
            "agentWork",
            {"workId": "0Bz5g0000000001", "status": "Accept", "contextType": "Agent"},
            400,
            10082,
        ),
        (
            "PATCH",
            "agentWork",
            {"workId": ALICE, "status": "Accept", "contextType": "Agent"},
            400,
            10082,
        ),
    ],
)
def test_body_errors(
    scrt: Scrt, schemas: dict[str, Any], method: str, path: str, body: Any, status: int, code: int
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = scrt.call(method, path, raw=raw)
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    conforms(schemas, "Error", answer.json())


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"capacityWeight": 1, "capacityPercentage": 10}, 400, 10013),
        ({"capacityWeight": -1}, 400, 10014),
        ({"capacityWeight": "heavy"}, 400, 10014),
        ({"capacityPercentage": 150}, 400, 10015),
        ({"routingContext": {"conversationIdentifier": "x"}}, 400, 10089),
        (
            {
                "routingContext": {
                    "conversationIdentifier": "other",
                    "routingType": "Initial",
                    "routingCorrelationId": "r",
                }
            },
            400,
            15107,
        ),
        ({"agentActionVisibilities": [{"agentAction": "Dance", "visible": True}]}, 400, 10089),
        ({"userId": CAROL, "offline": True}, 400, 15112),
        ({"duplicate": True}, 409, 15109),
    ],
)
def test_agent_work_errors(
    sf_sandbox: SalesforceSandbox, scrt: Scrt, fields: dict[str, Any], status: int, code: int
) -> None:
    routed = scrt.route(conversation())
    body: dict[str, Any] = {"userId": ALICE, "workItemId": to15(routed["workItemId"])}
    fields = dict(fields)
    if fields.pop("offline", False):
        sf_sandbox.control.set_presence(CAROL, online=False)
    if fields.pop("duplicate", False):
        scrt.assign(routed["workItemId"], ALICE)
    body.update(fields)
    answer = scrt.call("POST", "agentWork", body)
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text


@pytest.mark.parametrize(
    ("body_of", "accepted"),
    [
        (lambda conv: {"capacityWeight": 2}, True),
        (lambda conv: {"capacityPercentage": 40}, True),
        (
            lambda conv: {
                "routingContext": {
                    "conversationIdentifier": conv,
                    "routingType": "Initial",
                    "routingCorrelationId": "r-1",
                },
                "agentActionVisibilities": [{"agentAction": "Transfer", "visible": False}],
            },
            True,
        ),
    ],
)
def test_agent_work_optional_fields(
    sf_sandbox: SalesforceSandbox,
    scrt: Scrt,
    schemas: dict[str, Any],
    body_of: Callable[[str], dict[str, Any]],
    accepted: bool,
) -> None:
    conv = conversation()
    routed = scrt.route(conv)
    answer = scrt.call(
        "POST",
        "agentWork",
        {"userId": ALICE, "workItemId": to15(routed["workItemId"]), **body_of(conv)},
    )
    assert (answer.status_code == 202) is accepted
    conforms(schemas, "AgentWorkResponse", answer.json())
    work = sf_sandbox.org.get("AgentWork", answer.json()["agentWorkId"])
    assert work is not None
    sent = body_of(conv)
    assert work["CapacityWeight"] == sent.get("capacityWeight", work["CapacityWeight"])
    assert work["CapacityPercentage"] == sent.get("capacityPercentage")


# -- faults on the SCRT host --------------------------------------------------------
def test_injected_fault_answers_in_the_documented_error_form(
    sf_sandbox: SalesforceSandbox, scrt: Scrt, schemas: dict[str, Any]
) -> None:
    sf_sandbox.scrt_faults.add(Fault(path="/api/v1/route", status=503, count=1, retry_after=3))
    answer = scrt.call("POST", "route", _route(conversationIdentifier=conversation()))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "3"
    conforms(schemas, "Error", answer.json())
    assert answer.json()["code"] == 503
    assert (
        scrt.call("POST", "route", _route(conversationIdentifier=conversation())).status_code == 202
    )


def test_a_defect_answers_500_in_the_documented_form_and_is_not_replayed(
    sf_sandbox: SalesforceSandbox,
    scrt: Scrt,
    schemas: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("defect")

    monkeypatch.setattr(sf_sandbox.omni, "start", broken)
    request_id = str(uuid.uuid4())
    body = _route(conversationIdentifier=conversation())
    failed = scrt.call("POST", "route", body, RequestId=request_id)
    assert (failed.status_code, failed.json()["code"]) == (500, 500)
    conforms(schemas, "Error", failed.json())
    monkeypatch.undo()
    retried = scrt.call("POST", "route", body, RequestId=request_id)
    assert retried.status_code == 202
