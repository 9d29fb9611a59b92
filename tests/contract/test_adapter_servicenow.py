"""The ServiceNow adapter against the sandbox instance over HTTPS: basic auth and OAuth,
keyset paging through equal ``sys_updated_on`` values, batched fetches, Table API writes with
a client-chosen sys_id, AWA offers, every failure mapped to its error branch, and the
executor's commands (answers unwrapped once, the candidate loop, look-before-retry)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import certifi
import pytest
from pydantic import SecretStr

from bridge.adapters.http import make_session
from bridge.adapters.servicenow.client import AGENT_NOT_AVAILABLE, ServiceNowAdapter, keyset_query
from bridge.adapters.servicenow.executor import NO_AGENT_RETRY_SECONDS, ServiceNowExecutor
from bridge.app.settings import Settings
from bridge.domain import ClaimedCommand, Operation, System
from bridge.errors import ConfigError, OutcomeUnknown, Permanent, Retriable
from bridge_sandbox import seed
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.servicenow.ratelimit import RateLimitRule
from tests.fixtures.adapters import sn_adapter_for

ALICE, BOB = seed.AGENTS[0].sn_user_sys_id, seed.AGENTS[1].sn_user_sys_id
SUPPORT = seed.QUEUES[0]
TABLE = "/api/now/table/{table}"
TOKEN = "/oauth_token.do"


def interactions(sandbox: ServiceNowSandbox, count: int, **values: str) -> list[str]:
    """``count`` interactions inserted in one go (mostly within the same second)."""
    return [
        sandbox.instance.insert(
            "interaction", {"state": "new", "short_description": f"#{n}", **values}
        )["sys_id"]
        for n in range(count)
    ]


@pytest.mark.parametrize("oauth", [False, True], ids=["basic", "oauth"])
def test_both_auth_modes_read_records(sn_sandbox: ServiceNowSandbox, oauth: bool) -> None:
    adapter = sn_adapter_for(sn_sandbox, oauth=oauth)
    rows = adapter.query("sys_user", "user_nameSTARTSWITHalice", ["user_name"])
    assert [(r["sys_id"], r["user_name"]) for r in rows] == [(ALICE, "alice.ahmed")]
    assert sn_sandbox.counters.total("POST", TOKEN) == (1 if oauth else 0)


def test_oauth_fetches_a_new_token_once_after_a_401(sn_sandbox: ServiceNowSandbox) -> None:
    adapter = sn_adapter_for(sn_sandbox, oauth=True)
    adapter.query("sys_user", "user_name=bob.brown", ["user_name"])
    sn_sandbox.auth.revoke_all()
    assert [r["sys_id"] for r in adapter.query("sys_user", "user_name=bob.brown", [])] == [BOB]
    assert sn_sandbox.counters.total("POST", TOKEN) == 2


def test_a_wrong_password_is_permanent(sn_sandbox: ServiceNowSandbox) -> None:
    adapter = ServiceNowAdapter(
        make_session(sn_sandbox.ca_bundle),
        sn_sandbox.instance_url,
        username=sn_sandbox.username,
        password=SecretStr("wrong"),
    )
    with pytest.raises(Permanent) as caught:
        adapter.query("sys_user", "", [])
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("after", "query"),
    [
        (None, "ORDERBYsys_updated_on"),
        (("2026-01-05 09:00:00", ""), "sys_updated_on>=2026-01-05 09:00:00^ORDERBYsys_updated_on"),
        (
            ("2026-01-05 09:00:00", "abc"),
            "sys_updated_on>2026-01-05 09:00:00^NQsys_updated_on=2026-01-05 09:00:00"
            "^sys_id>abc^ORDERBYsys_updated_on",
        ),
    ],
)
def test_keyset_query(after: tuple[str, str] | None, query: str) -> None:
    assert keyset_query(after) == query


def test_changed_pages_through_equal_timestamps_without_skips_or_repeats(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    made = interactions(sn_sandbox, 47, channel="keyset")
    seen: list[dict[str, str]] = []
    after: tuple[str, str] | None = None
    pages = 0
    while True:
        rows = sn_adapter.changed("interaction", ["state"], after, 10, extra_query="channel=keyset")
        pages += 1
        if not rows:
            break
        seen.extend(rows)
        after = (rows[-1]["sys_updated_on"], rows[-1]["sys_id"])
    assert sorted(r["sys_id"] for r in seen) == sorted(made)
    assert len(seen) == len(made)
    keys = [(r["sys_updated_on"], r["sys_id"]) for r in seen]
    assert keys == sorted(keys)
    assert pages == 6  # 5 pages of rows (one request each) and the empty one
    assert sn_sandbox.counters.total("GET", TABLE) == 6


def test_changed_sees_a_row_updated_after_the_first_page(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    made = interactions(sn_sandbox, 5, channel="late")
    first = sn_adapter.changed("interaction", [], None, 3, extra_query="channel=late")
    sn_sandbox.clock.advance(2)
    sn_sandbox.instance.update("interaction", first[0]["sys_id"], {"state": "work_in_progress"})
    after = (first[-1]["sys_updated_on"], first[-1]["sys_id"])
    rest = sn_adapter.changed("interaction", ["state"], after, 10, extra_query="channel=late")
    assert {r["sys_id"] for r in first} | {r["sys_id"] for r in rest} == set(made)
    assert rest[-1]["sys_id"] == first[0]["sys_id"]
    assert rest[-1]["state"] == "work_in_progress"
    assert rest[-1]["sys_mod_count"] == "1"


@pytest.mark.parametrize("count", [1, 100, 101, 250])
def test_fetch_reads_sys_ids_in_batches_of_100(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter, count: int
) -> None:
    made = interactions(sn_sandbox, count)
    rows = sn_adapter.fetch("interaction", [*made, made[0]], ["state", "short_description"])
    assert sorted(r["sys_id"] for r in rows) == sorted(made)
    assert {r["state"] for r in rows} == {"new"}
    assert sn_sandbox.counters.total("GET", TABLE) == math.ceil(count / 100)
    assert sn_sandbox.counters.total() == math.ceil(count / 100)


def test_insert_with_a_chosen_sys_id_then_get_and_update(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    sys_id = uuid.uuid4().hex
    created = sn_adapter.insert(
        "interaction",
        {"sys_id": sys_id, "state": "new", "correlation_id": "0Mw000000000001AAA", "type": "chat"},
    )
    assert (created["sys_id"], created["correlation_id"]) == (sys_id, "0Mw000000000001AAA")
    got = sn_adapter.get("interaction", sys_id)
    assert got is not None
    assert (got["state"], got["number"]) == ("new", created["number"])
    updated = sn_adapter.update("interaction", sys_id, {"state": "closed_abandoned"})
    assert (updated["state"], updated["active"], updated["sys_mod_count"]) == (
        "closed_abandoned",
        "false",
        "1",
    )
    with pytest.raises(Permanent) as caught:
        sn_adapter.insert("interaction", {"sys_id": sys_id, "state": "new"})
    assert caught.value.status == 403
    assert sn_adapter.get("interaction", uuid.uuid4().hex) is None


def _offer_body(agent: str = ALICE, segment: str = "seg-1") -> dict[str, Any]:
    return {
        "queue_id": SUPPORT.sn_external_id,
        "external_segment_id": segment,
        "assignment": {"agent_sys_id": agent, "timeout": 30},
    }


def test_offer_assigns_and_a_second_offer_is_refused_with_servicenows_message(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    [document] = interactions(sn_sandbox, 1)
    result = sn_adapter.offer("interaction", document, _offer_body())
    assert result["success"] is True
    item = sn_adapter.get("awa_work_item", result["work_item"]["sys_id"])
    assert item is not None
    assert (item["state"], item["assigned_to"], item["external_segment_id"]) == (
        "pending_accept",
        ALICE,
        "seg-1",
    )
    with pytest.raises(Permanent) as caught:
        sn_adapter.offer("interaction", document, _offer_body(BOB, "seg-2"))
    assert caught.value.status == 409
    assert caught.value.message == f"Work Item is already assigned to {ALICE}"


@pytest.mark.parametrize(
    ("fault", "expected", "retry_after"),
    [
        ({"status": 429, "retry_after": 9}, Retriable, 9.0),
        ({"status": 503}, Retriable, 1.0),
        ({"status": 500}, Retriable, None),
        ({"drop": "after"}, OutcomeUnknown, None),
    ],
    ids=["429", "503", "500", "drop_after"],
)
@pytest.mark.parametrize("call", ["query", "insert"])
def test_faults_map_to_their_branch(
    sn_sandbox: ServiceNowSandbox,
    sn_adapter: ServiceNowAdapter,
    fault: dict[str, Any],
    expected: type[Exception],
    retry_after: float | None,
    call: str,
) -> None:
    sn_sandbox.control.add_fault({"path": "/api/now/table/interaction", "count": 1, **fault})
    calls = {
        "query": lambda: sn_adapter.query("interaction", "", ["state"]),
        "insert": lambda: sn_adapter.insert("interaction", {"state": "new", "channel": "fault"}),
    }
    with pytest.raises(expected) as caught:
        calls[call]()
    assert type(caught.value) is expected
    assert isinstance(caught.value, Retriable)
    assert caught.value.retry_after == retry_after
    made = sn_adapter.query("interaction", "channel=fault", [])
    assert len(made) == (1 if call == "insert" and fault.get("drop") == "after" else 0)


def test_the_rate_limiter_answers_429_with_retry_after(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    sn_sandbox.rate_limits.add(RateLimitRule(limit=1, user=seed.SN_INTEGRATION_USER_SYS_ID))
    sn_adapter.query("interaction", "", [])
    for call in (
        lambda: sn_adapter.query("interaction", "", []),
        lambda: sn_adapter.offer("interaction", uuid.uuid4().hex, _offer_body()),
    ):
        with pytest.raises(Retriable) as caught:
            call()
        assert caught.value.status == 429
        assert caught.value.retry_after is not None
        assert 1 <= caught.value.retry_after <= 3600


def test_the_environment_ca_bundle_does_not_override_the_pinned_ca(
    sn_sandbox: ServiceNowSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())
    adapter = sn_adapter_for(sn_sandbox)
    assert [r["sys_id"] for r in adapter.query("sys_user", "user_name=alice.ahmed", [])] == [ALICE]
    assert adapter.get("sys_user", BOB) is not None


@pytest.mark.parametrize("oauth", [False, True], ids=["basic", "oauth"])
def test_from_settings_builds_a_working_adapter(sn_sandbox: ServiceNowSandbox, oauth: bool) -> None:
    credentials = (
        {"client_id": sn_sandbox.oauth_client_id, "client_secret": sn_sandbox.oauth_client_secret}
        if oauth
        else {"username": sn_sandbox.username, "password": sn_sandbox.password}
    )
    settings = Settings(
        _env_file=None,
        ca_bundle=sn_sandbox.ca_bundle,
        servicenow={"instance_url": sn_sandbox.instance_url, **credentials},
    )
    adapter = ServiceNowAdapter.from_settings(settings)
    assert adapter.get("sys_user", ALICE) is not None


def test_from_settings_names_what_is_missing() -> None:
    with pytest.raises(ConfigError) as caught:
        ServiceNowAdapter.from_settings(Settings(_env_file=None))
    assert "BRIDGE_SERVICENOW__INSTANCE_URL" in caught.value.message


# -- error table overrides and the one token refresh --------------------------------------


def test_an_offer_to_an_agent_who_is_away_is_permanent_with_a_stable_code(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    [document] = interactions(sn_sandbox, 1)
    sn_sandbox.control.set_presence(ALICE, "Away")
    with pytest.raises(Permanent) as caught:
        sn_adapter.offer("interaction", document, _offer_body())
    error = caught.value
    assert (error.status, error.code, error.message) == (
        409,
        AGENT_NOT_AVAILABLE,
        "Agent is not available",
    )


def test_a_401_for_the_refreshed_token_is_permanent_naming_servicenow(
    sn_sandbox: ServiceNowSandbox,
) -> None:
    adapter = sn_adapter_for(sn_sandbox, oauth=True)
    adapter.query("sys_user", "user_name=bob.brown", [])
    sn_sandbox.control.add_fault({"path": "/api/now/table/sys_user", "status": 401, "count": 2})
    with pytest.raises(Permanent) as caught:
        adapter.query("sys_user", "user_name=bob.brown", [])
    assert (caught.value.status, caught.value.system) == (401, "servicenow")
    assert caught.value.message.startswith("servicenow refused a freshly issued token")
    assert sn_sandbox.counters.total("POST", TOKEN) == 2  # the first token and one refresh


def test_basic_auth_does_not_retry_a_401(sn_sandbox: ServiceNowSandbox) -> None:
    adapter = sn_adapter_for(sn_sandbox)
    sn_sandbox.control.add_fault({"path": "/api/now/table/sys_user", "status": 401, "count": 1})
    with pytest.raises(Permanent) as caught:
        adapter.query("sys_user", "", [])
    assert caught.value.status == 401
    assert sn_sandbox.counters.total("GET", TABLE) == 1


# -- the executor -------------------------------------------------------------------------


def _command(
    operation: Operation, params: dict[str, Any], *, look_first: bool = False
) -> ClaimedCommand:
    return ClaimedCommand(
        id=str(uuid.uuid4()),
        correlation_id="corr-1",
        system=System.SERVICENOW,
        operation=operation,
        params=params,
        attempts=1 if look_first else 0,
        created_at=datetime.now(UTC),
        look_first=look_first,
    )


def _offer_params(document: str, candidates: list[str], **more: Any) -> dict[str, Any]:
    """An offer command's params, as the engine writes them."""
    return {
        "document_table": "interaction",
        "document_id": document,
        "queue_id": SUPPORT.sn_external_id,
        "candidates": candidates,
        "excluded": [],
        "external_segment_id": "seg-1",
        "timeout": 30,
        "allowed_to_decline": True,
        "display_option": "",
        **more,
    }


OFFER = "/api/now/awa/documents/{document_table}/{document_sys_id}/offer"


def test_an_offer_answers_the_work_item_of_the_first_available_candidate(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    [document] = interactions(sn_sandbox, 1)
    sn_sandbox.control.set_presence(ALICE, "Away")
    executor = ServiceNowExecutor(sn_adapter)
    item = executor.execute(_command(Operation.OFFER, _offer_params(document, [ALICE, BOB])))
    assert "work_item" not in item
    assert item["assigned_to"] == BOB
    assert item["document_id"] == document
    stored = sn_sandbox.control.work_item(item["sys_id"])
    assert (stored["state"], stored["assigned_to"]) == ("pending_accept", BOB)
    assert sn_sandbox.counters.total("POST", OFFER) == 2  # Alice refused, Bob offered


def test_an_offer_with_every_candidate_away_or_excluded_is_retried_later(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    [document] = interactions(sn_sandbox, 1)
    sn_sandbox.control.set_presence(ALICE, "Away")
    params = _offer_params(document, [ALICE, BOB], excluded=[BOB])
    with pytest.raises(Retriable) as caught:
        ServiceNowExecutor(sn_adapter).execute(_command(Operation.OFFER, params))
    assert (caught.value.code, caught.value.retry_after) == (
        "NO_AGENT_AVAILABLE",
        NO_AGENT_RETRY_SECONDS,
    )
    assert sn_sandbox.counters.total("POST", OFFER) == 1


def test_a_look_before_retrying_an_offer_finds_the_work_item_it_made(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    [document] = interactions(sn_sandbox, 1)
    executor = ServiceNowExecutor(sn_adapter)
    params = _offer_params(document, [ALICE])
    made = executor.execute(_command(Operation.OFFER, params))
    found = executor.execute(_command(Operation.OFFER, params, look_first=True))
    assert found["looked_up"] is True
    assert (found["sys_id"], found["assigned_to"], found["state"]) == (
        made["sys_id"],
        ALICE,
        "pending_accept",
    )
    assert sn_sandbox.counters.total("POST", OFFER) == 1


def test_table_writes_answer_the_record_and_a_create_looks_first(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    executor = ServiceNowExecutor(sn_adapter)
    sys_id = uuid.uuid4().hex
    create = {"table": "interaction", "record": {"sys_id": sys_id, "state": "new"}}
    made = executor.execute(_command(Operation.CREATE_INTERACTION, create))
    assert "result" not in made
    assert (made["sys_id"], made["state"]) == (sys_id, "new")
    found = executor.execute(_command(Operation.CREATE_INTERACTION, create, look_first=True))
    assert (found["sys_id"], found["looked_up"]) == (sys_id, True)
    assert sn_sandbox.counters.total("POST", TABLE) == 1
    closed = executor.execute(
        _command(Operation.CLOSE_INTERACTION, {"sys_id": sys_id, "state": "closed_complete"})
    )
    assert (closed["sys_id"], closed["state"]) == (sys_id, "closed_complete")


def test_cancel_work_item_answers_the_canceled_record(
    sn_sandbox: ServiceNowSandbox, sn_adapter: ServiceNowAdapter
) -> None:
    [document] = interactions(sn_sandbox, 1)
    executor = ServiceNowExecutor(sn_adapter)
    item = executor.execute(_command(Operation.OFFER, _offer_params(document, [ALICE])))
    params = {"sys_id": item["sys_id"], "cancel_reason": "ended in Salesforce"}
    canceled = executor.execute(_command(Operation.CANCEL_WORK_ITEM, params))
    assert (canceled["sys_id"], canceled["state"]) == (item["sys_id"], "canceled")
