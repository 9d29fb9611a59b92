"""The Salesforce adapter against the sandbox org over HTTPS: both OAuth flows, token
refresh, SOQL paging, replication windows, batched fetches, AgentWork creation, the
Interaction Service API, every failure mapped to its error branch, and the executor's
commands (answers unwrapped once, look-before-retry)."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from bridge.adapters.http import error_of, make_session
from bridge.adapters.salesforce.auth import SalesforceTokens, jwt_audience
from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.salesforce.executor import SalesforceExecutor
from bridge.app.settings import Settings
from bridge.domain import ClaimedCommand, Operation, System
from bridge.errors import ConfigError, OutcomeUnknown, Permanent, Retriable, Skippable
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.salesforce.ids import make_id, to15
from tests.fixtures.adapters import sf_adapter_for

ALICE, BOB = seed.AGENTS[0].sf_user_id, seed.AGENTS[1].sf_user_id
SUPPORT, OVERFLOW = seed.QUEUES[0].sf_queue_id, seed.QUEUES[2].sf_queue_id
MESSAGING = seed.CHANNELS[0].sf_service_channel_id
TOKEN = "/services/oauth2/token"
QUERY = "/services/data/v{version}/query"
QUERY_MORE = "/services/data/v{version}/query/{locator}"


def start(sandbox: SalesforceSandbox, queue: str = "Support_External") -> tuple[str, str]:
    started = sandbox.control.start_conversation(queue)
    return started["work_item_id"], started["psr_id"]


def psr_ids(adapter: SalesforceAdapter) -> set[str]:
    return {r["Id"] for r in adapter.query("SELECT Id FROM PendingServiceRouting")}


@pytest.mark.parametrize("jwt", [False, True], ids=["client_credentials", "jwt_bearer"])
def test_both_token_flows_authenticate_and_query(sf_sandbox: SalesforceSandbox, jwt: bool) -> None:
    adapter = sf_adapter_for(sf_sandbox, jwt=jwt)
    users = {r["Id"] for r in adapter.query("SELECT Id FROM User")}
    assert {a.sf_user_id for a in seed.AGENTS} <= users
    assert sf_sandbox.counters.total("POST", TOKEN) == 1


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_dead_token_is_refreshed_once_and_the_call_succeeds(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, how: str
) -> None:
    sf_sandbox.oauth.token_ttl = timedelta(seconds=60)  # the fixture puts the TTL back
    assert psr_ids(sf_adapter) == set()
    if how == "revoked":
        sf_sandbox.control.revoke_tokens()
    else:
        sf_sandbox.clock.advance(61)
    _, psr = start(sf_sandbox)
    assert psr_ids(sf_adapter) == {psr}
    assert sf_sandbox.counters.total("POST", TOKEN) == 2
    assert sf_sandbox.counters.total("GET", QUERY) == 3  # ok, 401, ok


def test_interaction_service_refreshes_a_revoked_token(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    list(sf_adapter.query("SELECT Id FROM User LIMIT 1"))
    sf_sandbox.control.revoke_tokens()
    answer = sf_adapter.route(str(uuid.uuid4()), _route_body("conv-refresh"))
    assert answer["success"] is True
    assert sf_sandbox.counters.total("POST", TOKEN) == 2


def test_query_follows_relative_next_records_urls(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    started = {start(sf_sandbox)[1] for _ in range(7)}
    sf_sandbox.rest.page_size = 3
    assert psr_ids(sf_adapter) == started
    assert sf_sandbox.counters.total("GET", QUERY) == 1
    assert sf_sandbox.counters.total("GET", QUERY_MORE) == 2


def test_changed_returns_records_modified_since_oldest_first(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    start(sf_sandbox)
    sf_sandbox.clock.advance(5)
    since = sf_sandbox.clock.now() - timedelta(seconds=1)
    _, new = start(sf_sandbox, "Billing_External")
    rows = list(sf_adapter.changed("PendingServiceRouting", ["QueueId", "Serial"], since))
    assert [r["Id"] for r in rows] == [new]
    assert rows[0]["QueueId"] == seed.QUEUES[1].sf_queue_id
    assert rows[0]["Serial"] == 0


def test_deleted_lists_deleted_records_in_the_window(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    before = sf_sandbox.clock.now() - timedelta(minutes=1)
    _, psr = start(sf_sandbox)
    _, kept = start(sf_sandbox)
    sf_adapter.delete("PendingServiceRouting", psr)
    deleted = sf_adapter.deleted(
        "PendingServiceRouting", before, sf_sandbox.clock.now() + timedelta(minutes=1)
    )
    assert [record_id for record_id, _ in deleted] == [psr]
    assert deleted[0][1].tzinfo is not None
    assert psr_ids(sf_adapter) == {kept}


@pytest.mark.parametrize("count", [1, 200, 201, 450])
def test_fetch_reads_ids_in_batches_of_200(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, count: int
) -> None:
    items = [start(sf_sandbox)[0] for _ in range(count)]
    sf_sandbox.counters.reset()
    list(sf_adapter.query("SELECT Id FROM User LIMIT 1"))  # the token, outside the count
    sf_sandbox.counters.reset()
    rows = sf_adapter.fetch("MessagingSession", [*items, items[0]], ["Status"])
    assert sorted(r["Id"] for r in rows) == sorted(items)
    assert {r["Status"] for r in rows} == {"Waiting"}
    assert sf_sandbox.counters.total("GET", QUERY) == math.ceil(count / 200)
    assert sf_sandbox.counters.total() == math.ceil(count / 200)


def test_create_agent_work_on_an_external_routing_psr(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    work_item, psr = start(sf_sandbox)
    work_id = sf_adapter.create(
        "AgentWork",
        {
            "UserId": ALICE,
            "WorkItemId": work_item,
            "PendingServiceRoutingId": psr,
            "ServiceChannelId": MESSAGING,
        },
    )
    [work] = sf_adapter.fetch("AgentWork", [work_id], ["Status", "UserId"])
    assert (work["Status"], work["UserId"]) == ("Assigned", ALICE)
    [pending] = sf_adapter.fetch("PendingServiceRouting", [psr], ["IsPushed"])
    assert pending["IsPushed"] is True


def test_a_bad_field_is_permanent_with_the_salesforce_message(
    sf_adapter: SalesforceAdapter,
) -> None:
    with pytest.raises(Permanent) as caught:
        sf_adapter.create("AgentWork", {"UserId": ALICE, "NoSuchField__c": 1})
    assert caught.value.status == 400
    assert caught.value.code == "INVALID_FIELD"
    assert "NoSuchField__c" in caught.value.message


def test_a_bad_query_is_permanent(sf_adapter: SalesforceAdapter) -> None:
    with pytest.raises(Permanent) as caught:
        list(sf_adapter.query("SELECT Nope FROM AgentWork"))
    assert caught.value.status == 400
    assert caught.value.code


@pytest.mark.parametrize(
    ("fault", "expected", "retry_after", "code"),
    [
        ({"status": 429, "retry_after": 7}, Retriable, 7.0, "REQUEST_LIMIT_EXCEEDED"),
        ({"status": 503}, Retriable, 1.0, "SERVER_UNAVAILABLE"),
        ({"status": 403}, Retriable, None, "REQUEST_LIMIT_EXCEEDED"),
        ({"status": 500}, Retriable, None, "UNKNOWN_EXCEPTION"),
        ({"drop": "after"}, OutcomeUnknown, None, None),
        ({"drop": "before"}, OutcomeUnknown, None, None),
    ],
    ids=["429", "503", "request_limit", "500", "drop_after", "drop_before"],
)
def test_rest_faults_map_to_their_branch(
    sf_sandbox: SalesforceSandbox,
    sf_adapter: SalesforceAdapter,
    fault: dict[str, Any],
    expected: type[Exception],
    retry_after: float | None,
    code: str | None,
) -> None:
    list(sf_adapter.query("SELECT Id FROM User LIMIT 1"))
    sf_sandbox.control.add_fault("rest", path="/sobjects/AgentWork$", count=1, **fault)
    work_item, psr = start(sf_sandbox)
    fields = {"UserId": ALICE, "WorkItemId": work_item, "PendingServiceRoutingId": psr}
    with pytest.raises(expected) as caught:
        sf_adapter.create("AgentWork", {**fields, "ServiceChannelId": MESSAGING})
    assert type(caught.value) is expected
    error = caught.value
    assert isinstance(error, Retriable)
    assert error.retry_after == retry_after
    assert error.code == code
    made = list(sf_adapter.query(f"SELECT Id FROM AgentWork WHERE WorkItemId = '{work_item}'"))
    assert len(made) == (1 if fault.get("drop") == "after" else 0)


def test_the_daily_request_limit_is_retriable(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    sf_sandbox.rest.usage.limit = 1
    list(sf_adapter.query("SELECT Id FROM User LIMIT 1"))
    with pytest.raises(Retriable) as caught:
        list(sf_adapter.query("SELECT Id FROM User LIMIT 1"))
    assert (caught.value.status, caught.value.code) == (403, "REQUEST_LIMIT_EXCEEDED")
    assert sf_adapter.api_usage == (1, 1)


# -- Interaction Service API --------------------------------------------------------------


def _route_body(conversation: str, queue: str = OVERFLOW) -> dict[str, Any]:
    return {
        "conversationIdentifier": conversation,
        "routingType": "Initial",
        "routingInfo": {"queueId": queue},
    }


def test_route_creates_work_item_and_psr_and_a_replay_returns_the_first_answer(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    request_id = str(uuid.uuid4())
    first = sf_adapter.route(request_id, _route_body("conv-1"))
    again = sf_adapter.route(request_id, _route_body("conv-1"))
    assert first == again
    assert first["success"] is True
    assert first["psrId"] in psr_ids(sf_adapter)
    [item] = sf_adapter.fetch("MessagingSession", [first["workItemId"]], ["Status"])
    assert item["Status"] == "Waiting"
    assert len(psr_ids(sf_adapter)) == 1
    assert sf_sandbox.scrt_counters.total("POST", "/api/v1/route") == 2


def test_cancel_route_deletes_the_conversations_psr(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    routed = sf_adapter.route(str(uuid.uuid4()), _route_body("conv-2", SUPPORT))
    answer = sf_adapter.cancel_route(
        str(uuid.uuid4()), {"conversationIdentifier": "conv-2", "cancelReason": "Cancel"}
    )
    assert answer == {"success": True}
    assert routed["psrId"] not in psr_ids(sf_adapter)


def test_assign_accept_and_close_agent_work(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    routed = sf_adapter.route(str(uuid.uuid4()), _route_body("conv-3", SUPPORT))
    assigned = sf_adapter.assign_agent_work(
        str(uuid.uuid4()), {"userId": BOB, "workItemId": to15(routed["workItemId"])}
    )
    work_id = assigned["agentWorkId"]
    for status, expected in (("Accept", "Opened"), ("Close", "Closed")):
        sf_adapter.update_agent_work(
            str(uuid.uuid4()),
            {"workId": to15(work_id), "status": status, "contextType": "Agent"},
        )
        [work] = sf_adapter.fetch("AgentWork", [work_id], ["Status"])
        assert work["Status"] == expected


def test_cancel_after_accept_is_a_permanent_error_with_the_api_code(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    routed = sf_adapter.route(str(uuid.uuid4()), _route_body("conv-4", SUPPORT))
    work_id = sf_adapter.assign_agent_work(
        str(uuid.uuid4()), {"userId": BOB, "workItemId": to15(routed["workItemId"])}
    )["agentWorkId"]
    patch = {"workId": to15(work_id), "contextType": "Agent"}
    sf_adapter.update_agent_work(str(uuid.uuid4()), {**patch, "status": "Accept"})
    with pytest.raises(Permanent) as caught:
        sf_adapter.update_agent_work(str(uuid.uuid4()), {**patch, "status": "Cancel"})
    assert (caught.value.status, caught.value.code) == (409, "10085")


def test_a_bad_authorization_context_is_refused(sf_sandbox: SalesforceSandbox) -> None:
    adapter = sf_adapter_for(sf_sandbox)
    adapter._authorization_context = "not a developer name"
    with pytest.raises(Permanent) as caught:
        adapter.route(str(uuid.uuid4()), _route_body("conv-5"))
    assert (caught.value.status, caught.value.code) == (403, "10005")


@pytest.mark.parametrize(
    ("fault", "expected", "retry_after"),
    [
        ({"status": 429, "retry_after": 3}, Retriable, 3.0),
        ({"status": 503}, Retriable, 1.0),
        ({"drop": "after"}, OutcomeUnknown, None),
    ],
    ids=["429", "503", "drop_after"],
)
def test_interaction_service_faults_map_to_their_branch(
    sf_sandbox: SalesforceSandbox,
    sf_adapter: SalesforceAdapter,
    fault: dict[str, Any],
    expected: type[Exception],
    retry_after: float | None,
) -> None:
    sf_sandbox.control.add_fault("scrt", path="/route", count=1, **fault)
    request_id = str(uuid.uuid4())
    with pytest.raises(expected) as caught:
        sf_adapter.route(request_id, _route_body("conv-6"))
    assert type(caught.value) is expected
    assert isinstance(caught.value, Retriable)
    assert caught.value.retry_after == retry_after
    # the retry with the same RequestId: one conversation, whatever the first attempt did
    answer = sf_adapter.route(request_id, _route_body("conv-6"))
    assert answer["success"] is True
    assert psr_ids(sf_adapter) == {answer["psrId"]}


def test_from_settings_builds_a_working_adapter(sf_sandbox: SalesforceSandbox) -> None:
    settings = Settings(
        _env_file=None,
        ca_bundle=sf_sandbox.ca_bundle,
        salesforce={
            "instance_url": sf_sandbox.instance_url,
            "login_url": sf_sandbox.instance_url,
            "client_id": sf_sandbox.client_id,
            "username": sf_sandbox.username,
            "jwt_key_file": sf_sandbox.jwt_key_file,
            "scrt_url": sf_sandbox.scrt_url,
            "org_id": sf_sandbox.org_id,
            "authorization_context": "BYO_SandboxChannel",
        },
    )
    adapter = SalesforceAdapter.from_settings(settings)
    assert adapter.route(str(uuid.uuid4()), _route_body("conv-settings"))["success"] is True
    assert len(psr_ids(adapter)) == 1


def test_from_settings_names_what_is_missing() -> None:
    with pytest.raises(ConfigError) as caught:
        SalesforceAdapter.from_settings(Settings(_env_file=None))
    assert "BRIDGE_SALESFORCE__CLIENT_ID" in caught.value.message


@pytest.mark.parametrize(
    ("login_url", "audience"),
    [
        ("https://login.salesforce.com", "https://login.salesforce.com"),
        ("https://acme.my.salesforce.com", "https://login.salesforce.com"),
        ("https://test.salesforce.com", "https://test.salesforce.com"),
        ("https://acme--uat.sandbox.my.salesforce.com", "https://test.salesforce.com"),
        ("https://127.0.0.1:8443/", "https://127.0.0.1:8443"),
    ],
)
def test_jwt_audience(login_url: str, audience: str) -> None:
    assert jwt_audience(login_url) == audience


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response.headers.update(headers or {})
    return response


@pytest.mark.parametrize(
    ("status", "body", "kind", "message", "code"),
    [
        (
            400,
            [{"message": "No such column", "errorCode": "INVALID_FIELD", "fields": []}],
            Permanent,
            "No such column",
            "INVALID_FIELD",
        ),
        (
            403,
            [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
            Retriable,
            "TotalRequests Limit exceeded.",
            "REQUEST_LIMIT_EXCEEDED",
        ),
        (409, {"code": 10085, "message": "Invalid status"}, Permanent, "Invalid status", "10085"),
        (
            400,
            {"error": "invalid_grant", "error_description": "audience is invalid"},
            Permanent,
            "invalid_grant: audience is invalid",
            "invalid_grant",
        ),
        (
            409,
            {"error": {"message": "Agent is not available", "detail": None}, "status": "failure"},
            Permanent,
            "Agent is not available",
            None,
        ),
        (
            404,
            {"error": {"message": "No Record found", "detail": "Record doesn't exist"}},
            Permanent,
            "No Record found (Record doesn't exist)",
            None,
        ),
        (502, b"<html>Bad gateway</html>", Retriable, "<html>Bad gateway</html>", None),
        (500, b"", Retriable, "HTTP 500", None),
        (
            404,
            [{"errorCode": "ENTITY_IS_DELETED", "message": "gone"}],
            Skippable,
            "gone",
            "ENTITY_IS_DELETED",
        ),
    ],
)
def test_error_answers_of_every_shape(
    status: int, body: Any, kind: type[Exception], message: str, code: str | None
) -> None:
    error = error_of("salesforce", _answer(status, body, {"Retry-After": "4"}))
    assert type(error) is kind
    assert (error.status, error.message, error.code) == (status, message, code)
    if isinstance(error, Retriable):
        assert error.retry_after == 4.0


@pytest.mark.parametrize("jwt", [False, True], ids=["client_credentials", "jwt_bearer"])
def test_refused_credentials_are_permanent_with_the_oauth_error(
    sf_sandbox: SalesforceSandbox, jwt: bool
) -> None:
    tokens = SalesforceTokens(
        make_session(sf_sandbox.ca_bundle),
        login_url=sf_sandbox.instance_url,
        client_id=sf_sandbox.client_id,
        client_secret=None if jwt else SecretStr("wrong"),
        username="nobody@example.com" if jwt else None,
        jwt_key_file=sf_sandbox.jwt_key_file if jwt else None,
    )
    with pytest.raises(Permanent) as caught:
        tokens.token()
    assert caught.value.status == 400
    assert caught.value.code == ("invalid_grant" if jwt else "invalid_client")
    assert caught.value.message.startswith("OAuth token request failed: ")


# -- error table overrides and the one token refresh --------------------------------------


def test_deleting_a_psr_that_is_already_gone_is_skippable(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    _, psr = start(sf_sandbox)
    sf_adapter.delete("PendingServiceRouting", psr)
    with pytest.raises(Skippable) as caught:
        sf_adapter.delete("PendingServiceRouting", psr)
    assert (caught.value.status, caught.value.message) == (404, "the PSR is already gone")


def test_deleting_another_record_that_is_gone_stays_permanent(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    with pytest.raises(Permanent) as caught:
        sf_adapter.delete("AgentWork", make_id("0Bz", 9999))
    assert caught.value.status == 404


@pytest.mark.parametrize("host", ["rest", "scrt"])
def test_a_401_for_the_refreshed_token_is_permanent_naming_salesforce(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, host: str
) -> None:
    list(sf_adapter.query("SELECT Id FROM User LIMIT 1"))
    calls = {
        "rest": ("/query", lambda: list(sf_adapter.query("SELECT Id FROM User LIMIT 1"))),
        "scrt": ("/route", lambda: sf_adapter.route(str(uuid.uuid4()), _route_body("c-401"))),
    }
    path, call = calls[host]
    sf_sandbox.control.add_fault(host, path=path, status=401, count=2)
    with pytest.raises(Permanent) as caught:
        call()
    assert caught.value.status == 401
    assert caught.value.system == "salesforce"
    assert caught.value.message.startswith("salesforce refused a freshly issued token")
    assert sf_sandbox.counters.total("POST", TOKEN) == 2  # the first token and one refresh


# -- the executor -------------------------------------------------------------------------


def _command(
    operation: Operation, params: dict[str, Any], *, look_first: bool = False
) -> ClaimedCommand:
    return ClaimedCommand(
        id=str(uuid.uuid4()),
        correlation_id="corr-1",
        system=System.SALESFORCE,
        operation=operation,
        params=params,
        attempts=1 if look_first else 0,
        created_at=datetime.now(UTC),
        look_first=look_first,
    )


def test_create_agent_work_answers_its_id_and_a_look_first_finds_it(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    executor = SalesforceExecutor(sf_adapter)
    work_item, psr = start(sf_sandbox)
    params = {
        "UserId": ALICE,
        "WorkItemId": work_item,
        "PendingServiceRoutingId": psr,
        "ServiceChannelId": MESSAGING,
    }
    made = executor.execute(_command(Operation.CREATE_AGENT_WORK, params))
    assert set(made) == {"id"}
    found = executor.execute(_command(Operation.CREATE_AGENT_WORK, params, look_first=True))
    assert found == {"id": made["id"], "looked_up": True}
    assert len(sf_sandbox.org.where("AgentWork", WorkItemId=work_item)) == 1


def test_delete_psr_answers_what_it_deleted_and_skips_one_already_gone(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    executor = SalesforceExecutor(sf_adapter)
    _, psr = start(sf_sandbox)
    assert executor.execute(_command(Operation.DELETE_PSR, {"id": psr})) == {"deleted": psr}
    with pytest.raises(Skippable):
        executor.execute(_command(Operation.DELETE_PSR, {"id": psr}))


def test_route_answers_the_interaction_service_json_and_its_request_id_is_the_command(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    executor = SalesforceExecutor(sf_adapter)
    command = _command(Operation.ROUTE, _route_body("conv-executor"))
    first = executor.execute(command)
    assert first["success"] is True
    assert {"psrId", "workItemId"} <= set(first)
    assert executor.execute(command) == first  # same RequestId: the first answer again
    assert psr_ids(sf_adapter) == {first["psrId"]}


def test_a_command_for_the_other_system_is_permanent(sf_adapter: SalesforceAdapter) -> None:
    with pytest.raises(Permanent) as caught:
        SalesforceExecutor(sf_adapter).execute(_command(Operation.OFFER, {}))
    assert caught.value.system == "salesforce"
