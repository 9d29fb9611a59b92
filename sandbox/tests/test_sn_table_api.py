"""The sandbox instance's Table API through the real pysnc client over HTTPS."""

from __future__ import annotations

import json
from typing import Any

import pysnc
import pytest
from pysnc.exceptions import RequestException, RoleException

from bridge_sandbox import seed
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from tests.fixtures.servicenow import sn_pysnc, sn_session

pytestmark = pytest.mark.integration

SUPPORT = seed.QUEUES[0]
CHAT = seed.CHANNELS[0]


def _work_items(sandbox: ServiceNowSandbox, count: int) -> list[str]:
    return [
        sandbox.instance.insert(
            "awa_work_item",
            {"queue": SUPPORT.sn_queue_sys_id, "document_table": "interaction", "size": i},
        )["sys_id"]
        for i in range(count)
    ]


def test_query_pages_across_batches(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    sys_ids = _work_items(sn_sandbox, 230)
    gr = sn_client.GlideRecord("awa_work_item", batch_size=50)
    gr.add_query("queue", SUPPORT.sn_queue_sys_id)
    gr.query()
    seen = [record.sys_id for record in gr]
    assert len(gr) == 230
    assert seen == sorted(sys_ids)  # pysnc orders by sys_id; every page joined up
    pages = sn_sandbox.counters.total("GET", "/api/now/table/{table}")
    assert pages == 5


def test_get_insert_update_delete(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    gr = sn_client.GlideRecord("interaction")
    gr.initialize()
    gr.short_description = "printer on fire"
    gr.queue = SUPPORT.sn_queue_sys_id
    sys_id = gr.insert()
    assert gr.number == "IMS0001001"

    fetched = sn_client.GlideRecord("interaction")
    assert fetched.get(sys_id)
    assert fetched.short_description == "printer on fire"
    assert fetched.get_display_value("queue") == "Support"
    assert fetched.get_display_value("state") == "New"
    fetched.state = "on_hold"
    fetched.update()
    stored = sn_sandbox.instance.get("interaction", str(sys_id))
    assert stored is not None
    assert (stored["state"], stored["sys_mod_count"]) == ("on_hold", "1")
    assert stored["sys_updated_by"] == seed.SN_INTEGRATION_USER

    assert fetched.delete()
    assert sn_sandbox.instance.get("interaction", str(sys_id)) is None
    assert not sn_client.GlideRecord("interaction").get(sys_id)


def test_client_chosen_sys_id_is_kept_and_a_duplicate_refused(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    chosen = "0123456789abcdef0123456789abcdef"
    gr = sn_client.GlideRecord("interaction")
    gr.initialize()
    gr.sys_id = chosen
    gr.correlation_id = "0Mw000000000001AAA"
    assert gr.insert() == chosen
    again = sn_client.GlideRecord("interaction")
    again.initialize()
    again.sys_id = chosen
    with pytest.raises(RoleException, match="Error during insert of interaction"):
        again.insert()
    assert len(sn_sandbox.instance.where("interaction", correlation_id="0Mw000000000001AAA")) == 1


def test_unknown_fields_in_a_body_are_ignored(sn_sandbox: ServiceNowSandbox) -> None:
    session = sn_session(sn_sandbox)
    answer = session.post(
        f"{sn_sandbox.instance_url}/api/now/v2/table/interaction",
        json={"short_description": "x", "no_such_field": "y"},
    )
    assert answer.status_code == 201
    result = answer.json()["result"]
    assert "no_such_field" not in result
    assert answer.headers["Location"].endswith(f"/api/now/table/interaction/{result['sys_id']}")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {"link": "LINK", "value": CHAT.sn_service_channel_sys_id}),
        ({"sysparm_exclude_reference_link": "true"}, CHAT.sn_service_channel_sys_id),
        ({"sysparm_display_value": "true"}, {"display_value": "Messaging", "link": "LINK"}),
        (
            {"sysparm_display_value": "true", "sysparm_exclude_reference_link": "true"},
            "Messaging",
        ),
        (
            {"sysparm_display_value": "all"},
            {
                "display_value": "Messaging",
                "link": "LINK",
                "value": CHAT.sn_service_channel_sys_id,
            },
        ),
        (
            {"sysparm_display_value": "all", "sysparm_exclude_reference_link": "true"},
            {"display_value": "Messaging", "value": CHAT.sn_service_channel_sys_id},
        ),
    ],
)
def test_reference_shape(
    sn_sandbox: ServiceNowSandbox, params: dict[str, str], expected: Any
) -> None:
    url = f"{sn_sandbox.instance_url}/api/now/table/awa_queue/{SUPPORT.sn_queue_sys_id}"
    answer = sn_session(sn_sandbox).get(url, params={**params, "sysparm_fields": "service_channel"})
    channel = CHAT.sn_service_channel_sys_id
    link = f"{sn_sandbox.instance_url}/api/now/table/awa_service_channel/{channel}"
    expected_json = json.loads(json.dumps(expected).replace('"LINK"', json.dumps(link)))
    assert answer.json() == {"result": {"service_channel": expected_json}}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("name,external_id", {"name": "Support", "external_id": "SUPPORT_EXT"}),
        ("name,not_a_field", {"name": "Support"}),
        ("service_channel.name", {"service_channel.name": "Messaging"}),
        ("name.nope", {}),
    ],
)
def test_sysparm_fields(
    sn_sandbox: ServiceNowSandbox, fields: str, expected: dict[str, str]
) -> None:
    answer = sn_session(sn_sandbox).get(
        f"{sn_sandbox.instance_url}/api/now/table/awa_queue/{SUPPORT.sn_queue_sys_id}",
        params={"sysparm_fields": fields},
    )
    assert answer.json()["result"] == expected


@pytest.mark.parametrize(
    ("offset", "limit", "rels"),
    [
        (0, 10, {"first": 0, "next": 10, "last": 20}),
        (10, 10, {"first": 0, "prev": 0, "next": 20, "last": 20}),
        (20, 10, {"first": 0, "prev": 10, "last": 20}),
        (0, 100, {"first": 0, "last": 0}),
    ],
)
def test_paging_headers(
    sn_sandbox: ServiceNowSandbox, offset: int, limit: int, rels: dict[str, int]
) -> None:
    _work_items(sn_sandbox, 25)
    answer = sn_session(sn_sandbox).get(
        f"{sn_sandbox.instance_url}/api/now/table/awa_work_item",
        params={
            "sysparm_offset": str(offset),
            "sysparm_limit": str(limit),
            "sysparm_query": "ORDERBYsize",
        },
    )
    assert answer.headers["X-Total-Count"] == "25"
    assert len(answer.json()["result"]) == min(limit, 25 - offset)
    found = {}
    for part in answer.headers["Link"].split(","):
        url, rel = part.split(";rel=")
        assert "sysparm_query=ORDERBYsize" in url
        found[rel.strip('"')] = int(url.split("sysparm_offset=")[1].split("&")[0])
    assert found == rels


def test_pagination_header_can_be_suppressed(sn_sandbox: ServiceNowSandbox) -> None:
    answer = sn_session(sn_sandbox).get(
        f"{sn_sandbox.instance_url}/api/now/table/awa_queue",
        params={"sysparm_suppress_pagination_header": "true"},
    )
    assert "Link" not in answer.headers
    assert answer.headers["X-Total-Count"] == "3"


@pytest.mark.parametrize(
    ("strict", "count"),
    [(True, 0), (False, 3)],
)
def test_unknown_field_in_a_query(
    sn_sandbox: ServiceNowSandbox, monkeypatch: pytest.MonkeyPatch, strict: bool, count: int
) -> None:
    monkeypatch.setattr(sn_sandbox, "strict_queries", strict)
    answer = sn_session(sn_sandbox).get(
        f"{sn_sandbox.instance_url}/api/now/table/awa_queue",
        params={"sysparm_query": "no_such_field=1"},
    )
    assert answer.status_code == 200
    assert answer.headers["X-Total-Count"] == str(count)


ERROR_CASES = [
    ("GET", "/api/now/table/no_such_table", {}, None, 400, "Invalid table no_such_table"),
    ("GET", "/api/now/table/interaction/" + "f" * 32, {}, None, 404, "No Record found"),
    ("PATCH", "/api/now/table/interaction/nope", {}, b"{}", 404, "No Record found"),
    ("DELETE", "/api/now/table/interaction/nope", {}, None, 404, "No Record found"),
    (
        "POST",
        "/api/now/table/interaction",
        {"Content-Type": "application/json"},
        b'{"short_description": ',
        400,
        "Exception while reading request",
    ),
    (
        "POST",
        "/api/now/table/interaction",
        {"Content-Type": "application/json"},
        b"[1, 2]",
        400,
        "Exception while reading request",
    ),
    (
        "POST",
        "/api/now/table/interaction",
        {"Content-Type": "text/plain"},
        b"short_description=x",
        415,
        "Unsupported Media Type",
    ),
    (
        "GET",
        "/api/now/table/interaction",
        {"Accept": "application/xml"},
        None,
        406,
        "Not Acceptable",
    ),
    (
        "GET",
        "/api/now/v9/table/interaction",
        {},
        None,
        400,
        "Requested URI does not represent any resource",
    ),
    (
        "GET",
        "/api/now/nothing/here",
        {},
        None,
        400,
        "Requested URI does not represent any resource",
    ),
    ("PUT", "/api/now/table/interaction", {}, b"{}", 405, "Method not Supported"),
    (
        "GET",
        "/api/now/table/interaction?sysparm_limit=ten",
        {},
        None,
        400,
        "Invalid value for sysparm_limit",
    ),
    (
        "GET",
        "/api/now/table/interaction?sysparm_offset=-5",
        {},
        None,
        400,
        "Invalid value for sysparm_offset",
    ),
    (
        "GET",
        "/api/now/table/interaction?sysparm_query=active=true^ORDERBYsys_id;DROP TABLE",
        {},
        None,
        400,
        "Invalid query",
    ),
    (
        "GET",
        "/api/now/table/interaction?sysparm_query=short_descriptionLIKEjavascript:gs.sleep(1)",
        {},
        None,
        400,
        "Invalid query",
    ),
    (
        "POST",
        "/api/now/table/interaction",
        {"Content-Type": "application/json"},
        b'{"sys_id": "../../etc"}',
        400,
        "Invalid sys_id",
    ),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "message"), ERROR_CASES)
def test_bad_input_gets_a_servicenow_error(
    sn_sandbox: ServiceNowSandbox,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    message: str,
) -> None:
    session = sn_session(sn_sandbox)
    answer = session.request(method, f"{sn_sandbox.instance_url}{path}", headers=headers, data=body)
    assert answer.status_code == status
    assert answer.json()["status"] == "failure"
    assert answer.json()["error"]["message"] == message
    assert session.get(f"{sn_sandbox.instance_url}/api/now/table/awa_queue").status_code == 200


def test_oversized_body_is_refused(
    sn_sandbox: ServiceNowSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sn_sandbox, "max_body_bytes", 1000)
    session = sn_session(sn_sandbox)
    url = f"{sn_sandbox.instance_url}/api/now/table/interaction"
    answer = session.post(url, json={"short_description": "x" * 2000})
    assert answer.status_code == 413
    assert answer.json()["error"]["message"] == "Request entity too large"
    chunked = session.post(
        url,
        data=iter([b'{"short_description": "', b"x" * 2000, b'"}']),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert sn_sandbox.instance.rows("interaction") == []


@pytest.mark.parametrize(
    ("status", "exception"),
    [(400, RequestException), (403, RoleException)],
)
def test_errors_raise_pysnc_exceptions(
    sn_sandbox: ServiceNowSandbox, status: int, exception: type[Exception]
) -> None:
    table = "no_such_table" if status == 400 else "awa_queue"
    if status == 403:
        sn_sandbox.instance.insert("sys_user", {"sys_id": "c" * 32, "user_name": "nobody"})
        sn_sandbox.instance.set_password("c" * 32, "pw")
        client = sn_pysnc(sn_sandbox, "nobody", "pw")
    else:
        client = sn_pysnc(sn_sandbox)
    gr = client.GlideRecord(table)
    with pytest.raises(exception):
        gr.query()


def test_acl_refuses_writes_of_an_agent(sn_sandbox: ServiceNowSandbox) -> None:
    agent = seed.AGENTS[0]
    client = sn_pysnc(sn_sandbox, agent.sn_user_name, "sandbox-agent-password")
    readable = client.GlideRecord("awa_queue")
    readable.query()
    assert len(readable) == 3
    gr = client.GlideRecord("awa_queue")
    gr.initialize()
    gr.name = "Mine"
    with pytest.raises(RoleException, match="ACL restricts"):
        gr.insert()
    assert len(sn_sandbox.instance.rows("awa_queue")) == 3


def test_an_unexpected_failure_is_a_servicenow_500(
    sn_sandbox: ServiceNowSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> dict[str, str]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sn_sandbox.instance, "insert", broken)
    session = sn_session(sn_sandbox)
    answer = session.post(f"{sn_sandbox.instance_url}/api/now/table/interaction", json={})
    assert answer.status_code == 500
    assert answer.json() == {
        "error": {"message": "Internal server error", "detail": "RuntimeError"},
        "status": "failure",
    }
    assert "disk on fire" not in answer.text
    assert session.get(f"{sn_sandbox.instance_url}/api/now/table/awa_queue").status_code == 200
