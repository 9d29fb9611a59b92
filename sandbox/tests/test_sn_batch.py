"""The Batch API: pysnc's multi-record calls and hand-made batches."""

from __future__ import annotations

import base64
import json
from typing import Any

import pysnc
import pytest

from bridge_sandbox import seed
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.serving import Fault
from tests.fixtures.servicenow import sn_session

pytestmark = pytest.mark.integration

SUPPORT = seed.QUEUES[0].sn_queue_sys_id
BILLING = seed.QUEUES[1].sn_queue_sys_id
ITEM_ROUTE = "/api/now/table/{table}/{sys_id}"


def _items(sandbox: ServiceNowSandbox, count: int) -> list[str]:
    return [
        sandbox.instance.insert("awa_work_item", {"queue": SUPPORT})["sys_id"] for _ in range(count)
    ]


def test_update_multiple_goes_through_batch(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    sys_ids = _items(sn_sandbox, 30)
    gr = sn_client.GlideRecord("awa_work_item", batch_size=10)
    gr.add_query("queue", SUPPORT)
    gr.query()
    for record in gr:
        record.queue = BILLING
    assert gr.update_multiple()
    assert {sn_sandbox.instance.get("awa_work_item", s)["queue"] for s in sys_ids} == {BILLING}  # type: ignore[index]
    assert sn_sandbox.counters.total("POST", "/api/now/{api_version}/batch") == 1
    assert sn_sandbox.counters.total("PATCH", ITEM_ROUTE) == 30


def test_delete_multiple_goes_through_batch(
    sn_sandbox: ServiceNowSandbox, sn_client: pysnc.ServiceNowClient
) -> None:
    _items(sn_sandbox, 12)
    gr = sn_client.GlideRecord("awa_work_item")
    gr.add_query("queue", SUPPORT)
    assert gr.delete_multiple()
    assert sn_sandbox.instance.rows("awa_work_item") == []
    assert sn_sandbox.counters.total("DELETE", ITEM_ROUTE) == 12


def _batch(sandbox: ServiceNowSandbox, requests: list[dict[str, Any]]) -> dict[str, Any]:
    answer = sn_session(sandbox).post(
        f"{sandbox.instance_url}/api/now/v1/batch",
        json={"batch_request_id": 7, "rest_requests": requests},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _b64(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def test_hand_made_batch(sn_sandbox: ServiceNowSandbox) -> None:
    json_headers = [{"name": "Content-Type", "value": "application/json"}]
    answer = _batch(
        sn_sandbox,
        [
            {
                "id": "create",
                "method": "POST",
                "url": "/api/now/table/interaction?sysparm_fields=short_description",
                "headers": json_headers,
                "body": _b64({"short_description": "batched"}),
            },
            {
                "id": "missing",
                "method": "GET",
                "url": "/api/now/table/interaction/" + "0" * 32,
                "headers": [],
                "exclude_response_headers": True,
            },
            {"id": "nested", "method": "POST", "url": "/api/now/v1/batch", "headers": []},
        ],
    )
    assert answer["batch_request_id"] == "7"
    assert answer["unserviced_requests"] == []
    by_id = {item["id"]: item for item in answer["serviced_requests"]}
    created = by_id["create"]
    assert (created["status_code"], created["status_text"]) == (201, "Created")
    assert json.loads(base64.b64decode(created["body"])) == {
        "result": {"short_description": "batched"}
    }
    assert any(h["name"].lower() == "location" for h in created["headers"])
    assert by_id["missing"]["status_code"] == 404
    assert "headers" not in by_id["missing"]
    assert by_id["nested"]["status_code"] == 400
    assert len(sn_sandbox.instance.where("interaction", short_description="batched")) == 1
    assert sn_sandbox.counters.total("POST", "/api/now/table/{table}") == 1


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"rest_requests": "x"}, "rest_requests is required and must be a list"),
        ({"rest_requests": [{"id": "1", "method": "GET"}]}, "rest_requests[0].url"),
        (
            {"rest_requests": [{"id": "1", "method": "POST", "url": "/x", "body": "%%%"}]},
            "rest_requests[0].body is not valid base64",
        ),
        (
            {"rest_requests": [{"id": "1", "method": "GET", "url": "x", "headers": []}]},
            "rest_requests[0].url must be a relative path",
        ),
        (
            {"rest_requests": [{"id": "1", "method": "GET", "url": "/x", "headers": [1]}]},
            "rest_requests[0].headers entries",
        ),
    ],
)
def test_malformed_batch_is_refused(
    sn_sandbox: ServiceNowSandbox, body: dict[str, Any], detail: str
) -> None:
    answer = sn_session(sn_sandbox).post(f"{sn_sandbox.instance_url}/api/now/v1/batch", json=body)
    assert answer.status_code == 400
    assert detail in answer.json()["error"]["detail"]


def test_limits_leave_items_unserviced(
    sn_sandbox: ServiceNowSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sn_sandbox.batch, "max_item_bytes", 100)
    small = {"short_description": "ok"}
    large = {"short_description": "x" * 200}
    items = [
        {
            "id": str(n),
            "method": "POST",
            "url": "/api/now/table/interaction",
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "body": _b64(value),
        }
        for n, value in enumerate([small, large, small])
    ]
    answer = _batch(sn_sandbox, items)
    assert [i["id"] for i in answer["serviced_requests"]] == ["0"]
    assert answer["unserviced_requests"] == ["1", "2"]
    assert len(sn_sandbox.instance.rows("interaction")) == 1


def test_a_dropped_inner_call_is_unserviced(sn_sandbox: ServiceNowSandbox) -> None:
    sn_sandbox.faults.add(Fault(path="/api/now/table/awa_queue", drop="before", count=1))
    answer = _batch(
        sn_sandbox,
        [
            {"id": "a", "method": "GET", "url": "/api/now/table/awa_queue", "headers": []},
            {"id": "b", "method": "GET", "url": "/api/now/table/awa_queue", "headers": []},
        ],
    )
    assert answer["unserviced_requests"] == ["a"]
    assert [i["id"] for i in answer["serviced_requests"]] == ["b"]
