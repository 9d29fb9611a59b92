"""The sandbox org's store: seed, field rules, indexes, change log, behaviours, transactions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge_sandbox import seed
from bridge_sandbox.salesforce.store import Org, SalesforceApiError, parse_datetime
from bridge_sandbox.serving import Clock

AGENT = seed.AGENTS[0]
SUPPORT = seed.QUEUES[0]


@pytest.fixture
def org() -> Org:
    return Org(Clock())


@pytest.mark.parametrize(
    ("sobject", "count"),
    [
        ("Organization", 1),
        ("User", len(seed.AGENTS) + 1),
        ("Group", len(seed.QUEUES)),
        ("GroupMember", len(seed.QUEUES) * len(seed.AGENTS)),
        ("QueueRoutingConfig", len(seed.QUEUES)),
        ("ServiceChannel", len(seed.CHANNELS)),
        ("ServicePresenceStatus", 2),
        ("UserServicePresence", len(seed.AGENTS)),
        ("PendingServiceRouting", 0),
        ("AgentWork", 0),
    ],
)
def test_seed(org: Org, sobject: str, count: int) -> None:
    assert len(org.all(sobject)) == count


@pytest.mark.parametrize(
    ("queue", "model"),
    [
        (q.sf_queue_id, "ExternalRouting" if q.direction == "sf_to_sn" else "MostAvailable")
        for q in seed.QUEUES
    ],
)
def test_seed_routing_configs(org: Org, queue: str, model: str) -> None:
    group = org.get("Group", queue)
    assert group is not None
    config = org.get("QueueRoutingConfig", group["QueueRoutingConfigId"])
    assert config is not None
    assert config["RoutingModel"] == model
    assert config["PushTimeout"] == seed.DEFAULT_PUSH_TIMEOUT_SECONDS


def test_seed_presence_is_available(org: Org) -> None:
    presence = org.where("UserServicePresence", UserId=AGENT.sf_user_id, IsCurrentState=True)
    assert len(presence) == 1
    assert presence[0]["ServicePresenceStatusId"] == seed.SF_PRESENCE_AVAILABLE
    assert presence[0]["ConfiguredCapacity"] == seed.DEFAULT_AGENT_CAPACITY
    assert org.changes.since(0) == []


def test_ids_lookups_accept_15_characters(org: Org) -> None:
    case = org.insert("Case", {"Subject": "x"})
    assert org.get("Case", case["Id"][:15]) == case
    assert org.sobject_of(case["Id"][:15]) == "Case"
    assert org.sobject_of("nope") is None
    assert org.where("Case", OwnerId=seed.SF_INTEGRATION_USER_ID[:15]) == [case]


@pytest.mark.parametrize(
    ("fields", "system", "code"),
    [
        ({"Subject": "ok"}, False, None),
        ({"subject": "any case"}, False, None),
        ({"CaseNumber": "1"}, False, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ({"CaseNumber": "1"}, True, None),
        ({"IsClosed": True}, True, None),
        ({"IsClosed": "yes"}, True, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ({"ClosedDate": "2024-01-31T10:00:00Z"}, True, None),
        ({"ClosedDate": "31/01/2024"}, True, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ({"Nope": 1}, True, "INVALID_FIELD"),
        ({"Status": "Sleeping"}, True, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"OwnerId": AGENT.sf_user_id}, False, None),
        ({"OwnerId": SUPPORT.sf_queue_id}, False, None),
        ({"OwnerId": "bad"}, False, "MALFORMED_ID"),
        ({"OwnerId": seed.SF_PRESENCE_AVAILABLE}, False, "FIELD_INTEGRITY_EXCEPTION"),
        ({"Id": "5005g0000000abcAAA"}, False, "INVALID_FIELD_FOR_INSERT_UPDATE"),
    ],
)
def test_insert_field_rules(
    org: Org, fields: dict[str, Any], system: bool, code: str | None
) -> None:
    if code is None:
        record = org.insert("Case", fields, system=system)
        assert org.get("Case", record["Id"]) == record
        return
    with pytest.raises(SalesforceApiError) as error:
        org.insert("Case", fields, system=system)
    assert error.value.error_code == code
    assert error.value.body()[0]["errorCode"] == code
    assert org.all("Case") == []


def test_required_fields(org: Org) -> None:
    with pytest.raises(SalesforceApiError) as error:
        org.insert("AgentWork", {"UserId": AGENT.sf_user_id})
    assert error.value.error_code == "REQUIRED_FIELD_MISSING"
    assert set(error.value.fields) == {"WorkItemId", "ServiceChannelId"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-31T10:00:00Z", datetime(2024, 1, 31, 10, tzinfo=UTC)),
        ("2024-01-31T10:00:00.000+0000", datetime(2024, 1, 31, 10, tzinfo=UTC)),
        ("2024-01-31T11:30:00+01:30", datetime(2024, 1, 31, 10, tzinfo=UTC)),
        ("2024-01-31T10:00:00.123456Z", datetime(2024, 1, 31, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_datetime(text: str, expected: datetime) -> None:
    assert parse_datetime(text) == expected


@pytest.mark.parametrize("text", ["2024-01-31T10:00:00", "yesterday", "2024-13-01T00:00:00Z"])
def test_parse_datetime_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(text)


def test_change_log_and_modstamp(org: Org) -> None:
    case = org.insert("Case", {"Subject": "a"})
    org.clock.advance(5)
    updated = org.update("Case", case["Id"], {"Subject": "b", "Origin": None})
    assert updated["SystemModstamp"] > case["SystemModstamp"]
    assert org.update("Case", case["Id"], {"Subject": "b"}) == updated  # no change, no event
    org.delete("Case", case["Id"])
    events = org.changes.since(0, "Case")
    assert [e.change_type for e in events] == ["CREATE", "UPDATE", "DELETE"]
    assert events[1].changed_fields == ("Subject",)
    assert events[1].values == {"Subject": "b"}
    assert [e.replay_id for e in events] == sorted(e.replay_id for e in events)
    assert org.changes.since(events[1].replay_id) == events[2:]
    assert org.changes.earliest_replay_id == events[0].replay_id
    assert org.get("Case", case["Id"]) is None
    gone = org.get_including_deleted("Case", case["Id"])
    assert gone is not None
    assert gone["IsDeleted"] is True


@pytest.mark.parametrize(
    "write",
    [
        lambda org, record_id: org.update("Case", record_id, {"Subject": "b"}),
        lambda org, record_id: org.delete("Case", record_id),
    ],
    ids=["update", "delete"],
)
def test_writes_to_deleted_records(org: Org, write: Callable[[Org, str], object]) -> None:
    case = org.insert("Case", {"Subject": "a"})
    org.delete("Case", case["Id"])
    with pytest.raises(SalesforceApiError) as error:
        write(org, case["Id"])
    assert (error.value.error_code, error.value.status) == ("ENTITY_IS_DELETED", 404)


def test_retention_purges_events_and_deleted_records(org: Org) -> None:
    case = org.insert("Case", {"Subject": "a"})
    org.delete("Case", case["Id"])
    latest = org.changes.latest_replay_id
    org.clock.advance(timedelta(hours=73).total_seconds())
    org.purge()
    assert org.changes.since(0) == []
    assert org.changes.earliest_replay_id is None
    assert org.get_including_deleted("Case", case["Id"]) is None
    assert org.changes.latest_replay_id == latest  # replay ids never go back


def test_updated_and_deleted_windows(org: Org) -> None:
    start = org.now()
    first = org.insert("Case", {"Subject": "a"})
    org.clock.advance(60)
    middle = org.now()
    second = org.insert("Case", {"Subject": "b"})
    org.delete("Case", first["Id"])
    end = org.now()
    assert org.updated_ids("Case", start, end) == [second["Id"]]
    assert org.updated_ids("Case", start, middle - timedelta(seconds=1)) == []
    assert [i for i, _ in org.deleted_records("Case", middle, end)] == [first["Id"]]


def test_where_follows_updates(org: Org) -> None:
    case = org.insert("Case", {"Subject": "a", "Status": "New"})
    org.update("Case", case["Id"], {"Status": "Working"})
    assert org.where("Case", Status="New") == []
    assert [r["Id"] for r in org.where("Case", status="Working")] == [case["Id"]]
    with pytest.raises(SalesforceApiError):
        org.where("Case", Nope=1)


class Recorder:
    """A behaviour that records its calls and refuses Cases with the subject 'refuse'."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def before_insert(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        self.calls.append(("before_insert", sobject))
        if record.get("Subject") == "refuse":
            raise SalesforceApiError(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "refused")
        if sobject == "Case":
            record["Priority"] = "High"

    def after_insert(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        self.calls.append(("after_insert", sobject))

    def before_update(
        self, org: Org, sobject: str, old: dict[str, Any], changes: dict[str, Any], system: bool
    ) -> None:
        self.calls.append(("before_update", sobject))
        changes["Origin"] = "Bridge"

    def after_update(
        self, org: Org, sobject: str, old: dict[str, Any], new: dict[str, Any], system: bool
    ) -> None:
        self.calls.append(("after_update", sobject))

    def before_delete(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        self.calls.append(("before_delete", sobject))

    def after_delete(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        self.calls.append(("after_delete", sobject))


def test_behaviour_hooks(org: Org) -> None:
    recorder = Recorder()
    org.add_behaviour(recorder)
    case = org.insert("Case", {"Subject": "a"})
    assert case["Priority"] == "High"
    assert org.update("Case", case["Id"], {"Subject": "b"})["Origin"] == "Bridge"
    org.delete("Case", case["Id"])
    assert [c for c, _ in recorder.calls] == [
        "before_insert",
        "after_insert",
        "before_update",
        "after_update",
        "before_delete",
        "after_delete",
    ]
    with pytest.raises(SalesforceApiError):
        org.insert("Case", {"Subject": "refuse"})
    assert len(org.all("Case")) == 0


def test_transaction_rolls_back(org: Org) -> None:
    kept = org.insert("Case", {"Subject": "kept"})
    replay = org.changes.latest_replay_id

    def writes() -> None:
        with org.transaction():
            org.update("Case", kept["Id"], {"Subject": "changed"})
            org.insert("Case", {"Subject": "new"})
            org.insert("Case", {"Nope": 1})

    with pytest.raises(SalesforceApiError):
        writes()
    assert [r["Subject"] for r in org.all("Case")] == ["kept"]
    assert org.where("Case", Subject="changed") == []
    assert org.changes.latest_replay_id == replay
    again = org.insert("Case", {"Subject": "again"})
    assert again["Id"] != kept["Id"]
    assert org.changes.latest_replay_id == replay + 1


def test_reset_returns_to_seed(org: Org) -> None:
    first = org.insert("Case", {"Subject": "a"})
    calls: list[str] = []
    org.on_reset(lambda: calls.append("reset"))
    org.reset()
    assert org.all("Case") == []
    assert org.changes.since(0) == []
    assert org.insert("Case", {"Subject": "b"})["Id"] == first["Id"]
    assert calls == ["reset"]


def test_unknown_sobject(org: Org) -> None:
    with pytest.raises(SalesforceApiError) as error:
        org.insert("Nope", {})
    assert (error.value.status, error.value.error_code) == (404, "NOT_FOUND")


def test_query_errors_are_api_errors(org: Org) -> None:
    with pytest.raises(SalesforceApiError) as error:
        org.query("SELECT Id FROM Case WHERE")
    assert error.value.error_code == "MALFORMED_QUERY"
    assert org.query("SELECT COUNT() FROM User").total_size == len(seed.AGENTS) + 1


Q1, Q2 = seed.QUEUES[0].sf_queue_id, seed.QUEUES[1].sf_queue_id
A1 = AGENT.sf_user_id


@pytest.mark.parametrize(
    ("where", "count"),
    [
        (f"GroupId = '{Q1[:15]}'", len(seed.AGENTS)),
        (f"GroupId IN ('{Q1}', '{Q2}') AND UserOrGroupId = '{A1}'", 2),
        (f"(GroupId = '{Q1}' AND (UserOrGroupId = '{A1}'))", 1),
        (f"GroupId = '{Q1}' OR UserOrGroupId = '{A1}'", len(seed.AGENTS) + len(seed.QUEUES) - 1),
        (f"NOT GroupId = '{Q1}'", len(seed.AGENTS) * (len(seed.QUEUES) - 1)),
        (f"GroupId != '{Q1}'", len(seed.AGENTS) * (len(seed.QUEUES) - 1)),
        ("GroupId = null", 0),
        (f"GroupId = '{seed.SF_ORG_ID}'", 0),
    ],
)
def test_indexed_queries_match_the_full_where(org: Org, where: str, count: int) -> None:
    result = org.query(f"SELECT Id FROM GroupMember WHERE {where}")
    assert result.total_size == count


def test_indexed_queries_skip_deleted_and_fold_text_case(org: Org) -> None:
    member = org.where("GroupMember", GroupId=Q1, UserOrGroupId=A1)[0]
    org.delete("GroupMember", member["Id"])
    by_group = f"SELECT Id FROM GroupMember WHERE GroupId = '{Q1}'"
    assert org.query(by_group).total_size == len(seed.AGENTS) - 1
    assert org.query(by_group, include_deleted=True).total_size == len(seed.AGENTS)
    org.insert("Case", {"Subject": "a", "Status": "Working"})
    assert org.query("SELECT Id FROM Case WHERE Status = 'working'").total_size == 1
    presence = f"SELECT Id FROM UserServicePresence WHERE IsCurrentState = true AND UserId = '{A1}'"
    assert org.query(presence).total_size == 1


@pytest.mark.parametrize(
    "write",
    [
        lambda org, system: org.delete("User", AGENT.sf_user_id, system=system),
        lambda org, system: org.insert("Organization", {"Name": "x"}, system=system),
        lambda org, system: org.update(
            "Organization", seed.SF_ORG_ID, {"Name": "y"}, system=system
        ),
    ],
    ids=["delete-user", "insert-organization", "update-organization"],
)
def test_restricted_calls_are_for_the_org_only(
    org: Org, write: Callable[[Org, bool], object]
) -> None:
    with pytest.raises(SalesforceApiError) as error:
        write(org, False)
    assert error.value.error_code == "INVALID_TYPE_FOR_OPERATION"
    write(org, True)
