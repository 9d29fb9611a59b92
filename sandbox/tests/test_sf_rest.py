"""The sandbox org's REST API through the real simple-salesforce client over HTTPS."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from bridge.adapters.http import make_session
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.salesforce.store import Org
from bridge_sandbox.serving import Fault

SUPPORT = seed.QUEUES[0]
MESSAGING = seed.CHANNELS[0]


def _cases(sf: Salesforce, count: int) -> list[str]:
    return [sf.Case.create({"Subject": f"case {n:03d}"})["id"] for n in range(count)]


def _raw(sandbox: SalesforceSandbox, method: str, path: str, **kwargs: Any) -> requests.Response:
    session = make_session(sandbox.ca_bundle)
    headers = {"Authorization": f"Bearer {sandbox.issue_token()}", **kwargs.pop("headers", {})}
    return session.request(method, sandbox.instance_url + path, headers=headers, **kwargs)


def _assert_serving(sf: Salesforce) -> None:
    assert sf.query("SELECT COUNT() FROM User")["totalSize"] == len(seed.AGENTS) + 1


# -- CRUD ------------------------------------------------------------------------------
def test_create_get_update_delete_case(sf_client: Salesforce) -> None:
    created = sf_client.Case.create({"Subject": "Printer on fire", "Origin": "Web"})
    assert created["success"] is True
    assert created["errors"] == []
    record = sf_client.Case.get(created["id"])
    assert record["Subject"] == "Printer on fire"
    assert record["Status"] == "New"
    assert record["attributes"]["type"] == "Case"
    assert record["CreatedDate"].endswith("+0000")

    assert sf_client.Case.update(created["id"], {"Subject": "Printer fixed"}) == 204
    assert sf_client.Case.get(created["id"])["Subject"] == "Printer fixed"

    assert sf_client.Case.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound) as deleted:
        sf_client.Case.get(created["id"])
    assert deleted.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"


def test_get_accepts_15_character_id_and_fields(sf_client: Salesforce) -> None:
    created = sf_client.Case.create({"Subject": "short id"})
    record = sf_client.Case.get(f"{created['id'][:15]}?fields=Subject,status")
    assert set(record) == {"attributes", "Subject", "Status"}
    assert record["Subject"] == "short id"


def test_describe_and_sobject_list(sf_client: Salesforce) -> None:
    describe = sf_client.PendingServiceRouting.describe()
    fields = {f["name"]: f for f in describe["fields"]}
    assert fields["IsReadyForRouting"]["updateable"] is True
    assert fields["Serial"]["createable"] is False
    assert fields["WorkItemId"]["referenceTo"] == ["MessagingSession", "Case"]
    assert describe["keyPrefix"] == "0JR"
    names = {s["name"] for s in sf_client.describe()["sobjects"]}
    assert {"AgentWork", "PendingServiceRouting", "UserServicePresence", "Group"} <= names


def test_psr_is_created_through_the_api(
    sf_client: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    case_id = sf_client.Case.create({"Subject": "route me"})["id"]
    psr = sf_client.PendingServiceRouting.create(
        {
            "WorkItemId": case_id,
            "ServiceChannelId": seed.CHANNELS[1].sf_service_channel_id,
            "GroupId": SUPPORT.sf_queue_id,
            "RoutingType": "QueueBased",
            "RoutingModel": "ExternalRouting",
            "CapacityWeight": 1,
            "IsReadyForRouting": False,
        }
    )
    stored = sf_sandbox.org.get("PendingServiceRouting", psr["id"])
    assert stored is not None
    assert stored["WorkItemId"] == case_id
    assert stored["CapacityWeight"] == 1.0
    assert [e.change_type for e in sf_sandbox.org.changes.since(0, "PendingServiceRouting")] == [
        "CREATE"
    ]


# -- query -----------------------------------------------------------------------------
def test_query_pages_with_query_more(sf_client: Salesforce, sf_sandbox: SalesforceSandbox) -> None:
    sf_sandbox.rest.page_size = 3
    _cases(sf_client, 7)
    first = sf_client.query("SELECT Id, Subject FROM Case ORDER BY Subject")
    assert first["totalSize"] == 7
    assert first["done"] is False
    assert first["nextRecordsUrl"].startswith("/services/data/v62.0/query/01g")
    assert first["nextRecordsUrl"].endswith("-3")
    second = sf_client.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    third = sf_client.query_more(second["nextRecordsUrl"], identifier_is_url=True)
    assert third["done"] is True
    assert "nextRecordsUrl" not in third
    subjects = [r["Subject"] for page in (first, second, third) for r in page["records"]]
    assert subjects == [f"case {n:03d}" for n in range(7)]


def test_query_all_and_iter_cover_every_page(
    sf_client: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    sf_sandbox.rest.page_size = 2
    ids = _cases(sf_client, 5)
    sf_client.Case.delete(ids[0])
    live = sf_client.query_all("SELECT Id FROM Case")
    assert live["totalSize"] == 4
    assert len(live["records"]) == 4
    with_deleted = list(
        sf_client.query_all_iter("SELECT Id, IsDeleted FROM Case", include_deleted=True)
    )
    assert len(with_deleted) == 5
    assert [r["IsDeleted"] for r in with_deleted if r["Id"] == ids[0]] == [True]


def test_query_relationships_and_count(sf_client: Salesforce) -> None:
    presence = sf_client.query(
        "SELECT User.Name, ConfiguredCapacity FROM UserServicePresence "
        "WHERE IsCurrentState = true ORDER BY User.Name"
    )
    assert [r["User"]["Name"] for r in presence["records"]] == [a.name for a in seed.AGENTS]
    assert sf_client.query("SELECT COUNT() FROM GroupMember")["totalSize"] == len(
        seed.AGENTS
    ) * len(seed.QUEUES)


def test_bad_query_locator(sf_sandbox: SalesforceSandbox) -> None:
    answer = _raw(sf_sandbox, "GET", "/services/data/v62.0/query/01gNOPE-2000")
    assert answer.status_code == 400
    assert answer.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Foo FROM Case", "INVALID_FIELD"),
        ("SELECT Id FROM Nope", "INVALID_TYPE"),
        ("SELECT Id FROM Case WHERE Subject = 'x' OR '1'='1'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Case WHERE Subject = 'x'; DELETE FROM Case", "MALFORMED_QUERY"),
        ("SELECT Id FROM Case WHERE Subject = 'x\\' OR Id != null", "MALFORMED_QUERY"),
        ("SELECT Id FROM Case -- comment", "MALFORMED_QUERY"),
    ],
)
def test_bad_queries_are_salesforce_errors(sf_client: Salesforce, soql: str, code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as error:
        sf_client.query(soql)
    assert error.value.content[0]["errorCode"] == code
    _assert_serving(sf_client)


# -- replication -----------------------------------------------------------------------
def test_updated_and_deleted(sf_client: Salesforce, sf_sandbox: SalesforceSandbox) -> None:
    start = sf_sandbox.clock.now() - timedelta(minutes=1)
    kept, gone = _cases(sf_client, 2)
    sf_client.Case.delete(gone)
    end = sf_sandbox.clock.now() + timedelta(minutes=1)
    updated = sf_client.Case.updated(start, end)
    assert updated["ids"] == [kept]
    assert updated["latestDateCovered"].endswith(":00.000+0000")
    deleted = sf_client.Case.deleted(start, end)
    assert [d["id"] for d in deleted["deletedRecords"]] == [gone]
    assert "earliestDateAvailable" in deleted


def test_updated_window_excludes_older_changes(
    sf_client: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    old = _cases(sf_client, 1)[0]
    sf_sandbox.clock.advance(600)
    new = _cases(sf_client, 1)[0]
    start = sf_sandbox.clock.now() - timedelta(minutes=1)
    assert sf_client.Case.updated(start, sf_sandbox.clock.now() + timedelta(minutes=1))["ids"] == [
        new
    ]
    assert old not in sf_client.Case.updated(start, sf_sandbox.clock.now())["ids"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("start=2024-01-01T00:00:00Z", "MISSING_ARGUMENT"),
        ("start=yesterday&end=today", "INVALID_REPLICATION_DATE"),
        ("start=2024-01-02T00:00:00Z&end=2024-01-01T00:00:00Z", "INVALID_REPLICATION_DATE"),
        ("start=2001-01-01T00:00:00Z&end=2001-01-02T00:00:00Z", "INVALID_REPLICATION_DATE"),
    ],
)
def test_replication_window_errors(sf_sandbox: SalesforceSandbox, query: str, code: str) -> None:
    answer = _raw(sf_sandbox, "GET", f"/services/data/v62.0/sobjects/Case/updated/?{query}")
    assert answer.status_code == 400
    assert answer.json()[0]["errorCode"] == code


# -- composite ---------------------------------------------------------------------------
def test_composite_create_update_delete(
    sf_client: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    records = [{"attributes": {"type": "Case"}, "Subject": f"bulk {n}"} for n in range(3)]
    created = sf_client.restful(
        "composite/sobjects", method="POST", json={"allOrNone": False, "records": records}
    )
    assert [r["success"] for r in created] == [True, True, True]
    ids = [r["id"] for r in created]
    updates = [{"attributes": {"type": "Case"}, "id": i, "Status": "Working"} for i in ids]
    updated = sf_client.restful("composite/sobjects", method="PATCH", json={"records": updates})
    assert [r["id"] for r in updated] == ids
    assert {r["Status"] for r in sf_sandbox.org.all("Case")} == {"Working"}
    deleted = sf_client.restful(
        "composite/sobjects", method="DELETE", params={"ids": ",".join(ids)}
    )
    assert all(r["success"] for r in deleted)
    assert sf_sandbox.org.all("Case") == []


def test_composite_partial_and_all_or_none(
    sf_client: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    records = [
        {"attributes": {"type": "Case"}, "Subject": "good"},
        {"attributes": {"type": "Case"}, "Nope": "bad"},
    ]
    partial = sf_client.restful("composite/sobjects", method="POST", json={"records": records})
    assert [r["success"] for r in partial] == [True, False]
    assert partial[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert len(sf_sandbox.org.all("Case")) == 1
    replay = sf_sandbox.org.changes.latest_replay_id

    rolled = sf_client.restful(
        "composite/sobjects", method="POST", json={"allOrNone": True, "records": records}
    )
    assert [r["success"] for r in rolled] == [False, False]
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert len(sf_sandbox.org.all("Case")) == 1
    assert sf_sandbox.org.changes.latest_replay_id == replay
    assert len(sf_sandbox.org.where("Case", Subject="good")) == 1


def test_composite_over_200_records(sf_client: Salesforce) -> None:
    records = [{"attributes": {"type": "Case"}, "Subject": "x"}] * 201
    with pytest.raises(SalesforceMalformedRequest) as error:
        sf_client.restful("composite/sobjects", method="POST", json={"records": records})
    assert error.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


# -- limits ----------------------------------------------------------------------------
def test_api_usage_and_limit_exceeded(sf_client: Salesforce, sf_sandbox: SalesforceSandbox) -> None:
    sf_client.query("SELECT Id FROM User")
    used = sf_client.api_usage["api-usage"].used
    assert used == 1
    limits = sf_client.limits()
    assert limits["DailyApiRequests"]["Max"] == sf_sandbox.rest.usage.limit
    assert limits["DailyApiRequests"]["Remaining"] == sf_sandbox.rest.usage.limit - 2
    sf_sandbox.rest.usage.limit = 3
    sf_client.query("SELECT Id FROM User")
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf_client.query("SELECT Id FROM User")
    assert refused.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert sf_client.api_usage["api-usage"].used == 3


# -- bad input -------------------------------------------------------------------------
def test_bad_and_expired_sessions(sf_sandbox: SalesforceSandbox) -> None:
    session = make_session(sf_sandbox.ca_bundle)
    bad = Salesforce(
        instance_url=sf_sandbox.instance_url, session_id="00Dnope", version="62.0", session=session
    )
    with pytest.raises(SalesforceExpiredSession):
        bad.query("SELECT Id FROM User")
    token = sf_sandbox.issue_token()
    good = Salesforce(
        instance_url=sf_sandbox.instance_url, session_id=token, version="62.0", session=session
    )
    assert good.query("SELECT COUNT() FROM User")["totalSize"] == len(seed.AGENTS) + 1
    sf_sandbox.clock.advance(sf_sandbox.oauth.token_ttl.total_seconds() + 1)
    with pytest.raises(SalesforceExpiredSession) as expired:
        good.query("SELECT Id FROM User")
    assert expired.value.content[0] == {
        "message": "Session expired or invalid",
        "errorCode": "INVALID_SESSION_ID",
        "fields": [],
    }


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        (
            "POST",
            "sobjects/Case",
            {"data": b"{nope", "headers": {"Content-Type": "application/json"}},
            400,
            "JSON_PARSER_ERROR",
        ),
        (
            "POST",
            "sobjects/Case",
            {"data": b"[1]", "headers": {"Content-Type": "application/json"}},
            400,
            "JSON_PARSER_ERROR",
        ),
        (
            "POST",
            "sobjects/Case",
            {"data": b"<Case/>", "headers": {"Content-Type": "text/xml"}},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        ("POST", "sobjects/Case", {"json": {"Subject": "x" * 1_100_000}}, 413, "REQUEST_TOO_LARGE"),
        ("POST", "sobjects/Nope", {"json": {}}, 404, "NOT_FOUND"),
        (
            "POST",
            "sobjects/Case",
            {"json": {"CaseNumber": "1"}},
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ),
        (
            "POST",
            "sobjects/Case",
            {"json": {"IsClosed": "yes"}},
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ),
        ("POST", "sobjects/Case", {"json": {"Subject": 7}}, 400, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        (
            "POST",
            "sobjects/Case",
            {"json": {"Status": "Sleeping"}},
            400,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
        (
            "POST",
            "sobjects/AgentWork",
            {"json": {"UserId": seed.AGENTS[0].sf_user_id}},
            400,
            "REQUIRED_FIELD_MISSING",
        ),
        ("POST", "sobjects/Case", {"json": {"OwnerId": "005xx"}}, 400, "MALFORMED_ID"),
        (
            "POST",
            "sobjects/Case",
            {"json": {"OwnerId": seed.CHANNELS[0].sf_service_channel_id}},
            400,
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        (
            "POST",
            "sobjects/Case",
            {"json": {"OwnerId": "005000000000000AAA"}},
            400,
            "INVALID_CROSS_REFERENCE_KEY",
        ),
        ("GET", "sobjects/Case/5005g0000000zzzZZZ", {}, 400, "MALFORMED_ID"),
        ("GET", "sobjects/Case/nope", {}, 404, "NOT_FOUND"),
        ("GET", f"sobjects/Case/{seed.AGENTS[0].sf_user_id}", {}, 400, "MALFORMED_ID"),
        ("GET", "sobjects/Case/5005g0000000zzzAAA", {}, 404, "NOT_FOUND"),
        ("GET", f"sobjects/User/{seed.AGENTS[0].sf_user_id}?fields=Nope", {}, 400, "INVALID_FIELD"),
        (
            "PATCH",
            f"sobjects/User/{seed.AGENTS[0].sf_user_id}",
            {"json": {"Id": "x"}},
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ),
        ("PUT", "sobjects/Case", {"json": {}}, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "nowhere", {}, 404, "NOT_FOUND"),
        ("GET", "query", {}, 400, "MALFORMED_QUERY"),
        (
            "POST",
            "sobjects/Case",
            {"data": b'{"Subject": "\\ud800"}', "headers": {"Content-Type": "application/json"}},
            400,
            "JSON_PARSER_ERROR",
        ),
        (
            "DELETE",
            f"sobjects/User/{seed.AGENTS[0].sf_user_id}",
            {},
            400,
            "INVALID_TYPE_FOR_OPERATION",
        ),
        (
            "POST",
            "sobjects/Organization",
            {"json": {"Name": "x"}},
            400,
            "INVALID_TYPE_FOR_OPERATION",
        ),
        (
            "PATCH",
            f"sobjects/Organization/{seed.SF_ORG_ID}",
            {"json": {}},
            400,
            "INVALID_TYPE_FOR_OPERATION",
        ),
    ],
)
def test_bad_input_is_salesforce_shaped(
    sf_sandbox: SalesforceSandbox,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    answer = _raw(sf_sandbox, method, f"/services/data/v62.0/{path}", **kwargs)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert isinstance(body, list)
    assert body[0]["errorCode"] == code
    assert body[0]["message"]
    assert _raw(sf_sandbox, "GET", "/services/data/v62.0/limits").status_code == 200


@pytest.mark.parametrize(
    ("version", "status"),
    [("40.0", 404), ("41.0", 200), ("66.0", 200), ("67.0", 404), ("sixty", 404)],
)
def test_api_versions(sf_sandbox: SalesforceSandbox, version: str, status: int) -> None:
    answer = _raw(sf_sandbox, "GET", f"/services/data/v{version}/limits")
    assert answer.status_code == status
    assert "api-usage=" in answer.headers["Sforce-Limit-Info"] or status == 404


def test_version_list_needs_no_session(sf_sandbox: SalesforceSandbox) -> None:
    answer = make_session(sf_sandbox.ca_bundle).get(f"{sf_sandbox.instance_url}/services/data/")
    assert answer.status_code == 200
    versions = [v["version"] for v in answer.json()]
    assert versions[0] == "41.0"
    assert versions[-1] == "66.0"
    assert "62.0" in versions
    assert answer.headers["Sforce-Limit-Info"].startswith("api-usage=")


def test_client_errors_map_to_simple_salesforce_exceptions(sf_client: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound):
        sf_client.Case.get("5005g0000000zzzAAA")
    with pytest.raises(SalesforceMalformedRequest):
        sf_client.Case.create({"Nope": 1})
    with pytest.raises(SalesforceResourceNotFound):
        sf_client.Nope.create({"Name": "x"})


def test_injected_fault_is_rest_shaped(
    sf_client: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    sf_sandbox.rest_faults.add(Fault(path="/query", status=503, count=1))
    with pytest.raises(SalesforceGeneralError) as error:
        sf_client.query("SELECT Id FROM User")
    assert error.value.status == 503
    assert error.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    _assert_serving(sf_client)
    assert sf_sandbox.counters.total("GET", "/services/data/v{version}/query") == 2


class _Broken:
    """A behaviour with a bug: every Case insert fails inside the org."""

    def before_insert(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        if sobject == "Case":
            raise RuntimeError("bug")

    def after_insert(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        return None

    def before_update(
        self, org: Org, sobject: str, old: dict[str, Any], changes: dict[str, Any], system: bool
    ) -> None:
        return None

    def after_update(
        self, org: Org, sobject: str, old: dict[str, Any], new: dict[str, Any], system: bool
    ) -> None:
        return None

    def before_delete(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        return None

    def after_delete(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        return None


def test_internal_error_is_unknown_exception(
    sf_client: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    broken = _Broken()
    sf_sandbox.org.add_behaviour(broken)
    try:
        with pytest.raises(SalesforceGeneralError) as error:
            sf_client.Case.create({"Subject": "boom"})
    finally:
        sf_sandbox.org.remove_behaviour(broken)
    assert error.value.status == 500
    body = error.value.content[0]
    assert body["errorCode"] == "UNKNOWN_EXCEPTION"
    assert "Traceback" not in body["message"]
    assert sf_client.Case.create({"Subject": "fine"})["success"] is True


def test_state_file(sf_sandbox: SalesforceSandbox, tmp_path: Path) -> None:
    facts = json.loads(sf_sandbox.write_state(tmp_path).read_text())
    assert facts["instance_url"] == sf_sandbox.instance_url
    assert facts["scrt_url"] == sf_sandbox.scrt_url
    assert facts["org_id"] == seed.SF_ORG_ID
    assert facts["username"] == seed.SF_INTEGRATION_USERNAME
    assert {"client_id", "client_secret", "ca_bundle", "jwt_key_file", "jwt_cert_file"} <= set(
        facts
    )
