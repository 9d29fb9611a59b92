"""SOQL subset of the sandbox org: parsing, evaluation, Salesforce-shaped errors."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from bridge_sandbox.salesforce.ids import make_id, to15
from bridge_sandbox.salesforce.soql import (
    FieldType,
    QueryResult,
    SoqlError,
    execute,
    json_value,
    parse,
)

F = FieldType
NOW = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)

FIELDS: dict[str, dict[str, FieldType]] = {
    "User": {"Id": F.ID, "Name": F.STRING, "Email": F.EMAIL, "IsActive": F.BOOLEAN},
    "Group": {"Id": F.ID, "Name": F.STRING, "Type": F.PICKLIST},
    "Case": {
        "Id": F.ID,
        "CaseNumber": F.STRING,
        "Subject": F.STRING,
        "Status": F.PICKLIST,
        "Priority": F.PICKLIST,
        "OwnerId": F.REFERENCE,
        "Description": F.TEXTAREA,
        "CreatedDate": F.DATETIME,
        "FollowUpDate__c": F.DATE,
        "IsDeleted": F.BOOLEAN,
    },
    "PendingServiceRouting": {
        "Id": F.ID,
        "WorkItemId": F.REFERENCE,
        "QueueId": F.REFERENCE,
        "IsReadyForRouting": F.BOOLEAN,
        "RoutingModel": F.PICKLIST,
        "RoutingPriority": F.INT,
        "CapacityWeight": F.DOUBLE,
        "IsPushed": F.BOOLEAN,
        "LastDeclinedAgentSession": F.STRING,
        "Serial": F.INT,
        "CreatedDate": F.DATETIME,
    },
    "AgentWork": {
        "Id": F.ID,
        "UserId": F.REFERENCE,
        "WorkItemId": F.REFERENCE,
        "PendingServiceRoutingId": F.REFERENCE,
        "Status": F.PICKLIST,
        "CreatedDate": F.DATETIME,
    },
}
RELATIONSHIPS: dict[str, dict[str, tuple[str, str]]] = {
    "Case": {"Owner": ("OwnerId", "User")},  # polymorphic: User or Group (queue)
    "PendingServiceRouting": {"WorkItem": ("WorkItemId", "Case"), "Queue": ("QueueId", "Group")},
    "AgentWork": {
        "User": ("UserId", "User"),
        "WorkItem": ("WorkItemId", "Case"),
        "PendingServiceRouting": ("PendingServiceRoutingId", "PendingServiceRouting"),
    },
}


class Schema:
    """A tiny describe: case-insensitive lookups over FIELDS / RELATIONSHIPS."""

    def __init__(self) -> None:
        self.sobjects = {name.lower(): name for name in FIELDS}
        self.fields = {
            sobject: {name.lower(): (name, kind) for name, kind in fields.items()}
            for sobject, fields in FIELDS.items()
        }
        self.relationships = {
            sobject: {name.lower(): (name, fk, target) for name, (fk, target) in rels.items()}
            for sobject, rels in RELATIONSHIPS.items()
        }

    def field_type(self, sobject: str, field: str) -> tuple[str, FieldType] | None:
        return self.fields[sobject].get(field.lower())

    def relationship(self, sobject: str, name: str) -> tuple[str, str, str] | None:
        return self.relationships.get(sobject, {}).get(name.lower())

    def canonical_sobject(self, name: str) -> str | None:
        return self.sobjects.get(name.lower())


class Source:
    """Records by sobject in insertion order, and by id."""

    def __init__(self) -> None:
        self.by_type: dict[str, list[dict[str, Any]]] = {}
        self.index: dict[str, tuple[str, dict[str, Any]]] = {}
        self.by_id_calls = 0

    def add(self, sobject: str, **values: Any) -> str:
        record = {"Id": values.pop("Id"), **values}
        self.by_type.setdefault(sobject, []).append(record)
        self.index[record["Id"]] = (sobject, record)
        return str(record["Id"])

    def records(self, sobject: str, include_deleted: bool) -> Iterable[Mapping[str, Any]]:
        rows = self.by_type.get(sobject, [])
        return rows if include_deleted else [r for r in rows if not r.get("IsDeleted")]

    def by_id(self, record_id: str) -> tuple[str, Mapping[str, Any]] | None:
        self.by_id_calls += 1
        return self.index.get(record_id)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


U1, U2, U3 = (make_id("005", n) for n in (1, 2, 3))
G1 = make_id("00G", 1)
C1, C2, C3, C4, C5 = (make_id("500", n) for n in range(1, 6))
P1, P2, P3 = (make_id("0JR", n) for n in range(1, 4))
W1, W2 = (make_id("0Bz", n) for n in (1, 2))


def build_source() -> Source:
    s = Source()
    s.add("User", Id=U1, Name="Ada Lovelace", Email="ada@example.com", IsActive=True)
    s.add("User", Id=U2, Name="Grace Hopper", Email="grace@example.com", IsActive=True)
    s.add("User", Id=U3, Name="alan turing", Email=None, IsActive=False)
    s.add("Group", Id=G1, Name="Tier 1", Type="Queue")
    case = {"Description": None, "IsDeleted": False}
    s.add("Case", Id=C1, CaseNumber="00001001", Subject="Printer on fire", Status="New",
          Priority="High", OwnerId=U1, CreatedDate=ts("2024-01-31T09:00:00+00:00"),
          FollowUpDate__c=date(2024, 2, 1), **case)  # fmt: skip
    s.add("Case", Id=C2, CaseNumber="00001002", Subject="Login 100% broken", Status="Working",
          Priority=None, OwnerId=G1, CreatedDate=ts("2024-01-30T23:59:59+00:00"),
          FollowUpDate__c=None, **case)  # fmt: skip
    s.add("Case", Id=C3, CaseNumber="00001003", Subject="it's_quoted\\path", Status="Closed",
          Priority="Low", OwnerId=U2, CreatedDate=ts("2024-01-20T10:00:00+00:00"),
          FollowUpDate__c=date(2024, 1, 31), **case)  # fmt: skip
    s.add("Case", Id=C4, CaseNumber="00001004", Subject=None, Status="New", Priority="Medium",
          OwnerId=None, CreatedDate=ts("2023-12-01T00:00:00+00:00"), FollowUpDate__c=None,
          Description="gone", IsDeleted=True)  # fmt: skip
    s.add("Case", Id=C5, CaseNumber="00001005", Subject="printer jam", Status="New",
          Priority="High", OwnerId=U1, CreatedDate=ts("2024-01-31T11:00:00.500+00:00"),
          FollowUpDate__c=date(2024, 2, 5), **case)  # fmt: skip
    psr = {"RoutingModel": "ExternalRouting", "QueueId": G1}
    s.add("PendingServiceRouting", Id=P1, WorkItemId=C1, IsReadyForRouting=True,
          RoutingPriority=1, CapacityWeight=1.0, IsPushed=False, LastDeclinedAgentSession=None,
          Serial=0, CreatedDate=ts("2024-01-31T09:00:01+00:00"), **psr)  # fmt: skip
    s.add("PendingServiceRouting", Id=P2, WorkItemId=C2, IsReadyForRouting=True,
          RoutingPriority=2, CapacityWeight=2.5, IsPushed=False,
          LastDeclinedAgentSession="0Mw5g0000000042", Serial=1,
          CreatedDate=ts("2024-01-31T08:00:00+00:00"), **psr)  # fmt: skip
    s.add("PendingServiceRouting", Id=P3, WorkItemId=C5, IsReadyForRouting=False,
          RoutingPriority=1, CapacityWeight=1.0, IsPushed=True, LastDeclinedAgentSession=None,
          Serial=0, CreatedDate=ts("2024-01-31T11:00:01+00:00"), **psr)  # fmt: skip
    s.add("AgentWork", Id=W1, UserId=U1, WorkItemId=C5, PendingServiceRoutingId=P3,
          Status="Assigned", CreatedDate=ts("2024-01-31T11:00:02+00:00"))  # fmt: skip
    s.add("AgentWork", Id=W2, UserId=U2, WorkItemId=C3, PendingServiceRoutingId=None,
          Status="Closed", CreatedDate=ts("2024-01-20T10:05:00+00:00"))  # fmt: skip
    return s


SCHEMA = Schema()


def url_for(sobject: str, record_id: str) -> str:
    return f"/services/data/v62.0/sobjects/{sobject}/{record_id}"


def run(soql: str, source: Source | None = None, **kwargs: Any) -> QueryResult:
    return execute(
        parse(soql, SCHEMA), source or build_source(), now=NOW, url_for=url_for, **kwargs
    )


def ids(result: QueryResult) -> list[str]:
    return [row["Id"] for row in result.records]


# --------------------------------------------------------------------------- results

QUERIES: list[tuple[str, list[str]]] = [
    # plain scans keep source order; deleted rows are left out
    ("SELECT Id FROM Case", [C1, C2, C3, C5]),
    ("select id from case", [C1, C2, C3, C5]),
    ("SELECT Id FROM Case WHERE Status = 'New'", [C1, C5]),
    ("SELECT Id FROM Case WHERE status = 'NEW'", [C1, C5]),  # text compares ignore case
    ("SELECT Id FROM Case WHERE Status != 'New'", [C2, C3]),
    ("SELECT Id FROM Case WHERE Status <> 'New'", [C2, C3]),
    ("SELECT Id FROM Case WHERE Priority = null", [C2]),
    ("SELECT Id FROM Case WHERE Priority != null", [C1, C3, C5]),
    ("SELECT Id FROM Case WHERE Priority != 'High'", [C2, C3]),  # null differs from a value
    ("SELECT Id FROM Case WHERE Priority IN ('high', 'Low')", [C1, C3, C5]),
    ("SELECT Id FROM Case WHERE Priority NOT IN ('High')", [C2, C3]),
    ("SELECT Id FROM Case WHERE Priority IN ('Low', null)", [C2, C3]),
    ("SELECT Id FROM Case WHERE Subject LIKE 'printer%'", [C1, C5]),
    ("SELECT Id FROM Case WHERE Subject LIKE '%FIRE'", [C1]),
    ("SELECT Id FROM Case WHERE Subject LIKE 'printer _am'", [C5]),
    ("SELECT Id FROM Case WHERE Subject LIKE '%100\\%%'", [C2]),
    ("SELECT Id FROM Case WHERE Subject LIKE 'it\\'s\\_quoted%'", [C3]),
    ("SELECT Id FROM Case WHERE Subject LIKE '%\\\\path'", [C3]),
    ("SELECT Id FROM Case WHERE Subject = 'it\\'s_quoted\\\\path'", [C3]),
    ("SELECT Id FROM Case WHERE NOT Subject LIKE 'printer%'", [C2, C3]),
    ("SELECT Id FROM Case WHERE Subject LIKE '%(%'", []),  # regex characters are literal
    # AND / OR / NOT and nesting
    ("SELECT Id FROM Case WHERE Status = 'New' AND Priority = 'High'", [C1, C5]),
    ("SELECT Id FROM Case WHERE Status = 'Closed' OR Priority = null", [C2, C3]),
    ("SELECT Id FROM Case WHERE NOT Status = 'New'", [C2, C3]),
    ("SELECT Id FROM Case WHERE NOT (Status = 'New' OR Status = 'Closed')", [C2]),
    (
        "SELECT Id FROM Case WHERE (Status = 'New' AND (Subject LIKE '%jam' OR "
        "((Priority = 'Low')))) OR (Status = 'Working' AND NOT (Priority != null))",
        [C2, C5],
    ),
    ("SELECT Id FROM Case WHERE " + "(" * 50 + "Status = 'Closed'" + ")" * 50, [C3]),
    ("SELECT Id FROM Case WHERE " + "NOT " * 50 + "Status = 'Closed'", [C3]),
    # dates and datetimes
    ("SELECT Id FROM Case WHERE CreatedDate > 2024-01-31T00:00:00Z", [C1, C5]),
    ("SELECT Id FROM Case WHERE CreatedDate >= 2024-01-31T10:00:00+01:00", [C1, C5]),
    ("SELECT Id FROM Case WHERE CreatedDate < 2024-01-30T18:59:59-05:00", [C3]),
    ("SELECT Id FROM Case WHERE CreatedDate = 2024-01-31T11:00:00.500Z", [C5]),
    ("SELECT Id FROM Case WHERE CreatedDate = 2024-01-31T11:00:00Z", []),
    ("SELECT Id FROM Case WHERE CreatedDate = TODAY", [C1, C5]),
    ("SELECT Id FROM Case WHERE CreatedDate = YESTERDAY", [C2]),
    ("SELECT Id FROM Case WHERE CreatedDate < TODAY", [C2, C3]),
    ("SELECT Id FROM Case WHERE CreatedDate <= TODAY", [C1, C2, C3, C5]),
    ("SELECT Id FROM Case WHERE CreatedDate > YESTERDAY", [C1, C5]),
    ("SELECT Id FROM Case WHERE CreatedDate >= YESTERDAY", [C1, C2, C5]),
    ("SELECT Id FROM Case WHERE CreatedDate != TODAY", [C2, C3]),
    ("SELECT Id FROM Case WHERE CreatedDate = LAST_N_DAYS:1", [C1, C2, C5]),
    ("SELECT Id FROM Case WHERE CreatedDate = LAST_N_DAYS:11", [C1, C2, C3, C5]),
    ("SELECT Id FROM Case WHERE CreatedDate = LAST_N_DAYS:10", [C1, C2, C5]),
    ("SELECT Id FROM Case WHERE CreatedDate = LAST_N_DAYS:99999999999", [C1, C2, C3, C5]),
    ("SELECT Id FROM Case WHERE FollowUpDate__c > NEXT_N_DAYS:99999999999", []),
    ("SELECT Id FROM Case WHERE FollowUpDate__c = NEXT_N_DAYS:1", [C1]),
    ("SELECT Id FROM Case WHERE FollowUpDate__c = NEXT_N_DAYS:5", [C1, C5]),
    ("SELECT Id FROM Case WHERE FollowUpDate__c = TOMORROW", [C1]),
    ("SELECT Id FROM Case WHERE FollowUpDate__c = 2024-01-31", [C3]),
    ("SELECT Id FROM Case WHERE FollowUpDate__c > 2024-01-31", [C1, C5]),
    ("SELECT Id FROM Case WHERE FollowUpDate__c IN (TODAY, TOMORROW)", [C1, C3]),
    # numbers and booleans
    ("SELECT Id FROM PendingServiceRouting WHERE RoutingPriority > 1", [P2]),
    ("SELECT Id FROM PendingServiceRouting WHERE CapacityWeight >= 2", [P2]),
    ("SELECT Id FROM PendingServiceRouting WHERE CapacityWeight = 1", [P1, P3]),
    ("SELECT Id FROM PendingServiceRouting WHERE Serial < -0.5", []),
    ("SELECT Id FROM PendingServiceRouting WHERE IsReadyForRouting = true", [P1, P2]),
    ("SELECT Id FROM PendingServiceRouting WHERE IsReadyForRouting = FALSE", [P3]),
    ("SELECT Id FROM PendingServiceRouting WHERE IsPushed != true", [P1, P2]),
    # ids: 15- and 18-character forms, references
    (f"SELECT Id FROM Case WHERE Id = '{C3}'", [C3]),
    (f"SELECT Id FROM Case WHERE Id = '{to15(C3)}'", [C3]),
    (f"SELECT Id FROM Case WHERE Id IN ('{C5}', '{to15(C1)}', '{C5}')", [C5, C1]),
    (f"SELECT Id FROM Case WHERE Id = '{C4}'", []),  # deleted
    (f"SELECT Id FROM Case WHERE Id = '{P1}'", []),  # another object's id
    (f"SELECT Id FROM Case WHERE Id != '{C1}'", [C2, C3, C5]),
    (f"SELECT Id FROM Case WHERE Id NOT IN ('{C1}', '{C2}')", [C3, C5]),
    (f"SELECT Id FROM Case WHERE Id IN ('{C1}', '{C2}') AND Status = 'New'", [C1]),
    (f"SELECT Id FROM Case WHERE OwnerId = '{to15(U1)}'", [C1, C5]),
    ("SELECT Id FROM AgentWork WHERE PendingServiceRoutingId = null", [W2]),
    # relationship paths in WHERE, including a polymorphic owner
    ("SELECT Id FROM Case WHERE Owner.Name LIKE 'ada%'", [C1, C5]),
    ("SELECT Id FROM Case WHERE Owner.Name = 'Tier 1'", [C2]),
    ("SELECT Id FROM AgentWork WHERE WorkItem.Owner.Name = 'Ada Lovelace'", [W1]),
    ("SELECT Id FROM AgentWork WHERE PendingServiceRouting.IsPushed = true", [W1]),
    ("SELECT Id FROM Case WHERE Case.Status = 'Closed'", [C3]),
    # ORDER BY: several keys, ASC/DESC, NULLS FIRST/LAST (nulls first by default)
    ("SELECT Id FROM Case ORDER BY CreatedDate", [C3, C2, C1, C5]),
    ("SELECT Id FROM Case ORDER BY CreatedDate DESC", [C5, C1, C2, C3]),
    ("SELECT Id FROM Case ORDER BY Priority", [C2, C1, C5, C3]),
    ("SELECT Id FROM Case ORDER BY Priority ASC NULLS LAST", [C1, C5, C3, C2]),
    # ties are broken by Id, in the direction of the last key
    ("SELECT Id FROM Case ORDER BY Priority DESC", [C2, C3, C5, C1]),
    ("SELECT Id FROM Case ORDER BY Priority DESC NULLS LAST", [C3, C5, C1, C2]),
    ("SELECT Id FROM Case ORDER BY Priority DESC NULLS FIRST, CreatedDate DESC", [C2, C3, C5, C1]),
    ("SELECT Id FROM Case ORDER BY Subject", [C3, C2, C5, C1]),  # case-insensitive
    ("SELECT Id FROM Case ORDER BY Owner.Name NULLS LAST, Id DESC", [C5, C1, C3, C2]),
    ("SELECT Id FROM PendingServiceRouting ORDER BY IsReadyForRouting DESC, Serial", [P1, P2, P3]),
    (
        "SELECT Id FROM PendingServiceRouting ORDER BY CapacityWeight, CreatedDate DESC",
        [P3, P1, P2],
    ),
    # LIMIT / OFFSET
    ("SELECT Id FROM Case ORDER BY CreatedDate LIMIT 2", [C3, C2]),
    ("SELECT Id FROM Case ORDER BY CreatedDate LIMIT 2 OFFSET 1", [C2, C1]),
    ("SELECT Id FROM Case ORDER BY CreatedDate OFFSET 3", [C5]),
    ("SELECT Id FROM Case ORDER BY CreatedDate LIMIT 0", []),
    ("SELECT Id FROM Case OFFSET 2000", []),
    # whitespace and layout
    ("SELECT\n  Id\nFROM\tCase\nWHERE Status='Closed'", [C3]),
]


@pytest.mark.parametrize(("soql", "expected"), QUERIES)
def test_query_returns_expected_rows(soql: str, expected: list[str]) -> None:
    result = run(soql)
    assert ids(result) == expected
    assert result.total_size == len(expected)


@pytest.mark.parametrize(
    ("soql", "total"),
    [
        ("SELECT COUNT() FROM Case", 4),
        ("SELECT count() FROM Case WHERE Status = 'New'", 2),
        ("SELECT COUNT() FROM Case WHERE Status = 'Nope'", 0),
        ("SELECT COUNT() FROM Case LIMIT 3", 3),
    ],
)
def test_count_gives_total_size_only(soql: str, total: int) -> None:
    result = run(soql)
    assert (result.total_size, result.records) == (total, [])


def test_query_all_includes_deleted_rows() -> None:
    assert ids(run("SELECT Id FROM Case", include_deleted=True)) == [C1, C2, C3, C4, C5]
    assert run("SELECT COUNT() FROM Case", include_deleted=True).total_size == 5
    result = run(f"SELECT Id, IsDeleted FROM Case WHERE Id = '{C4}'", include_deleted=True)
    assert result.records[0]["IsDeleted"] is True


@pytest.mark.parametrize(
    ("soql", "expected"),
    [
        ("SELECT COUNT(Id) FROM Case", {"expr0": 4}),
        ("SELECT COUNT(Priority) n FROM Case", {"n": 3}),
        ("SELECT COUNT(Id), COUNT(Owner.Name) FROM Case", {"expr0": 4, "expr1": 4}),
        ("SELECT COUNT(Id) FROM Case WHERE Status = 'x'", {"expr0": 0}),
    ],
)
def test_count_field_is_an_aggregate_row(soql: str, expected: dict[str, int]) -> None:
    result = run(soql)
    assert result.total_size == 1
    assert result.records == [{"attributes": {"type": "AggregateResult"}, **expected}]


def test_rows_are_shaped_like_the_rest_api() -> None:
    result = run(
        "SELECT id, subject, CreatedDate, FollowUpDate__c, Owner.Name, owner.id, Priority "
        f"FROM Case WHERE Id IN ('{C1}', '{C2}')"
    )
    assert result.records == [
        {
            "attributes": {"type": "Case", "url": url_for("Case", C1)},
            "Id": C1,
            "Subject": "Printer on fire",
            "CreatedDate": "2024-01-31T09:00:00.000+0000",
            "FollowUpDate__c": "2024-02-01",
            "Owner": {
                "attributes": {"type": "User", "url": url_for("User", U1)},
                "Name": "Ada Lovelace",
                "Id": U1,
            },
            "Priority": "High",
        },
        {
            "attributes": {"type": "Case", "url": url_for("Case", C2)},
            "Id": C2,
            "Subject": "Login 100% broken",
            "CreatedDate": "2024-01-30T23:59:59.000+0000",
            "FollowUpDate__c": None,
            "Owner": {  # polymorphic: the queue answers with its own type
                "attributes": {"type": "Group", "url": url_for("Group", G1)},
                "Name": "Tier 1",
                "Id": G1,
            },
            "Priority": None,
        },
    ]


def test_nested_and_null_relationships() -> None:
    result = run(
        "SELECT PendingServiceRouting.WorkItem.Subject, User.Name, Status "
        "FROM AgentWork ORDER BY CreatedDate DESC"
    )
    first, second = result.records
    assert first["PendingServiceRouting"]["WorkItem"] == {
        "attributes": {"type": "Case", "url": url_for("Case", C5)},
        "Subject": "printer jam",
    }
    assert first["PendingServiceRouting"]["attributes"]["type"] == "PendingServiceRouting"
    assert first["User"]["Name"] == "Ada Lovelace"
    assert second["PendingServiceRouting"] is None
    assert second["attributes"]["url"] == url_for("AgentWork", W2)
    assert list(second) == ["attributes", "PendingServiceRouting", "User", "Status"]


def test_psr_fields_of_an_external_routing_poll() -> None:
    result = run(
        "SELECT Id, WorkItemId, WorkItem.CaseNumber, Serial, IsPushed, LastDeclinedAgentSession,"
        " CapacityWeight FROM PendingServiceRouting WHERE RoutingModel = 'ExternalRouting' "
        "AND IsReadyForRouting = true ORDER BY RoutingPriority, CreatedDate"
    )
    assert [(r["Id"], r["Serial"], r["WorkItem"]["CaseNumber"]) for r in result.records] == [
        (P1, 0, "00001001"),
        (P2, 1, "00001002"),
    ]
    assert result.records[1]["LastDeclinedAgentSession"] == "0Mw5g0000000042"
    assert result.records[1]["CapacityWeight"] == 2.5


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
def test_order_by_ties_are_stable_across_pages(direction: str) -> None:
    source = Source()
    created = datetime(2024, 1, 31, 9, tzinfo=UTC)
    # inserted in reverse id order, ten records per CreatedDate value
    made = [make_id("500", n) for n in range(40, 0, -1)]
    for n, case_id in enumerate(made):
        source.add("Case", Id=case_id, Status="New", CreatedDate=created + timedelta(n // 10))
    soql = f"SELECT Id FROM Case ORDER BY CreatedDate {direction}"
    pages = [ids(run(f"{soql} LIMIT 7 OFFSET {offset}", source)) for offset in range(0, 40, 7)]
    whole = ids(run(soql, source))
    assert [i for page in pages for i in page] == whole
    assert len(set(whole)) == 40
    groups = [sorted(made[n : n + 10]) for n in range(0, 40, 10)]  # ties fall back to Id
    expected = [i for group in groups for i in group]
    assert whole == (expected if direction == "ASC" else expected[::-1])


def test_selective_id_query_uses_by_id_not_a_scan() -> None:
    class NoScan(Source):
        def records(self, sobject: str, include_deleted: bool) -> Iterable[Mapping[str, Any]]:
            raise AssertionError("scanned")

    source = NoScan()
    for sobject, rows in build_source().by_type.items():
        for row in rows:
            source.add(sobject, **row)
    assert ids(run(f"SELECT Id FROM Case WHERE Id IN ('{C1}', '{C3}')", source)) == [C1, C3]
    assert ids(run(f"SELECT Id FROM Case WHERE Status = 'New' AND Id = '{C5}'", source)) == [C5]
    assert source.by_id_calls == 3


def test_relative_dates_follow_the_given_now() -> None:
    soql = "SELECT Id FROM Case WHERE CreatedDate = TODAY"
    later = NOW + timedelta(days=11)
    assert ids(execute(parse(soql, SCHEMA), build_source(), now=later, url_for=url_for)) == []
    earlier = datetime(2024, 1, 20, 23, tzinfo=UTC)
    assert ids(execute(parse(soql, SCHEMA), build_source(), now=earlier, url_for=url_for)) == [C3]


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        (datetime(2024, 1, 31, 10, 0, 0, 123456, tzinfo=UTC), "2024-01-31T10:00:00.123+0000"),
        (ts("2024-01-31T11:00:00+01:00"), "2024-01-31T10:00:00.000+0000"),
        (date(2024, 1, 31), "2024-01-31"),
        (True, True),
        (2.5, 2.5),
        (None, None),
        ("x", "x"),
    ],
)
def test_json_value(value: Any, rendered: Any) -> None:
    assert json_value(value) == rendered


def test_query_model_uses_canonical_names() -> None:
    query = parse("select SUBJECT, owner.NAME from CASE where STATUS = 'New'", SCHEMA)
    assert query.sobject == "Case"
    assert [path.name for path in query.fields] == ["Subject", "Owner.Name"]


# --------------------------------------------------------------------------- errors

BAD_QUERIES: list[tuple[str, str, str]] = [
    # syntax outside the subset
    ("", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
    ("SELECT FROM Case", "MALFORMED_QUERY", "unexpected token: 'Case'"),
    ("SELECT Id FROM", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
    ("SELECT Id Case", "MALFORMED_QUERY", "unexpected token: 'Case'"),
    ("SELECT Id, FROM Case", "MALFORMED_QUERY", "unexpected token: 'Case'"),
    ("SELECT Id FROM Case WHERE", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
    ("SELECT Id FROM Case WHERE Status", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
    ("SELECT Id FROM Case WHERE Status = ", "MALFORMED_QUERY", "'<EOF>'"),
    ("SELECT Id FROM Case WHERE Status = New", "MALFORMED_QUERY", "unexpected token: 'New'"),
    ("SELECT Id FROM Case WHERE Status IN ()", "MALFORMED_QUERY", "unexpected token: ')'"),
    ("SELECT Id FROM Case WHERE (Status = 'New'", "MALFORMED_QUERY", "'<EOF>'"),
    ("SELECT Id FROM Case WHERE Status = 'New')", "MALFORMED_QUERY", "unexpected token: ')'"),
    (
        "SELECT Id FROM Case WHERE Status = 'New' AND Priority = 'High' OR Subject = 'x'",
        "MALFORMED_QUERY",
        "unexpected token: 'OR'",
    ),
    ("SELECT Id FROM Case c", "MALFORMED_QUERY", "unexpected token: 'c'"),
    ("SELECT Id FROM Case GROUP BY Status", "MALFORMED_QUERY", "unexpected token: 'GROUP'"),
    ("SELECT Id FROM Case ORDER Id", "MALFORMED_QUERY", "unexpected token: 'Id'"),
    ("SELECT Id FROM Case ORDER BY Id NULLS", "MALFORMED_QUERY", "'<EOF>'"),
    ("SELECT Id FROM Case LIMIT -1", "MALFORMED_QUERY", "unexpected token: '-1'"),
    ("SELECT Id FROM Case LIMIT 1.5", "MALFORMED_QUERY", "unexpected token: '1.5'"),
    ("SELECT Id FROM Case OFFSET 1 LIMIT 1", "MALFORMED_QUERY", "unexpected token: 'LIMIT'"),
    ("SELECT Id FROM Case OFFSET 2001", "NUMBER_OUTSIDE_VALID_RANGE", "offset allowed is 2000"),
    ("SELECT SUM(Serial) FROM Case", "MALFORMED_QUERY", "unexpected token: '('"),
    ("SELECT FIELDS(ALL) FROM Case", "MALFORMED_QUERY", "unexpected token: '('"),
    ("SELECT COUNT(), Id FROM Case", "MALFORMED_QUERY", "COUNT() must be the only element"),
    ("SELECT Id, COUNT(Id) FROM Case", "MALFORMED_QUERY", "must be grouped or aggregated: Id"),
    ("SELECT Id, id FROM Case", "MALFORMED_QUERY", "duplicate field selected: Id"),
    ("SELECT (SELECT Id FROM Cases) FROM User", "MALFORMED_QUERY", "unexpected token: '('"),
    ("SELECT Id FROM Case WHERE Id IN (SELECT Id FROM Case)", "MALFORMED_QUERY", "'SELECT'"),
    ("SELECT Id FROM Case WHERE CreatedDate = THIS_QUARTER", "MALFORMED_QUERY", "THIS_QUARTER"),
    ("SELECT Id FROM Case WHERE CreatedDate = LAST_N_DAYS", "MALFORMED_QUERY", "'<EOF>'"),
    ("SELECT Id FROM Case WHERE CreatedDate = LAST_N_DAYS:x", "MALFORMED_QUERY", "'x'"),
    ("SELECT Id FROM Case WHERE Status = :status", "MALFORMED_QUERY", "unexpected token: ':'"),
    ("SELECT Id FROM Case WHERE Status == 'x'", "MALFORMED_QUERY", "unexpected token: '='"),
    ("SELECT Id FROM Case WHERE Status ! 'x'", "MALFORMED_QUERY", "at character '!'"),
    ("SELECT Id FROM Case WHERE Subject = 'abc", "MALFORMED_QUERY", "expecting '''"),
    ("SELECT Id FROM Case WHERE Subject = 'a\\qb'", "MALFORMED_QUERY", "Illegal character"),
    ('SELECT Id FROM Case WHERE Subject = "x"', "MALFORMED_QUERY", "at character '\"'"),
    ("SELECT Id FROM Case WHERE CreatedDate > 2024-02-30T00:00:00Z", "MALFORMED_QUERY", "date"),
    ("SELECT Id FROM Case WHERE CreatedDate > 2024-01-30T10:00:00", "MALFORMED_QUERY", "date"),
    ("SELECT Id FROM Case WHERE FollowUpDate__c = 2024-13-01", "MALFORMED_QUERY", "2024-13-01"),
    ("SELECT Id FROM Case WHERE Subject = 'é' OR Subject = ü", "MALFORMED_QUERY", "'ü'"),
    (
        "SELECT Id FROM Case WHERE " + "(" * 60 + "Status = 'x'" + ")" * 60,
        "MALFORMED_QUERY",
        "too complicated",
    ),
    (
        "SELECT Id FROM Case WHERE " + "NOT " * 60 + "Status = 'x'",
        "MALFORMED_QUERY",
        "too complicated",
    ),
    # injection attempts
    ("SELECT Id FROM Case WHERE Subject = 'x' OR '1'='1'", "MALFORMED_QUERY", "''1''"),
    ("SELECT Id FROM Case WHERE Subject = 'x'' OR Id != null", "MALFORMED_QUERY", "''"),
    ("SELECT Id FROM Case WHERE Subject = 'x'; DELETE FROM Case", "MALFORMED_QUERY", "';'"),
    ("SELECT Id FROM Case WHERE Subject = 'x' -- comment", "MALFORMED_QUERY", "'-'"),
    ("SELECT Id FROM Case /* comment */", "MALFORMED_QUERY", "'/'"),
    ("SELECT Id FROM Case SELECT Id FROM User", "MALFORMED_QUERY", "unexpected token: 'SELECT'"),
    ("SELECT Id FROM Case WHERE Subject = 'x\\' OR Id != null", "MALFORMED_QUERY", "expecting"),
    (
        "SELECT Id FROM Case WHERE Subject = 'x' UNION SELECT Id FROM User",
        "MALFORMED_QUERY",
        "unexpected token: 'UNION'",
    ),
    ("SELECT Id FROM Case WHERE Subject = 'x'\x00", "MALFORMED_QUERY", "at character"),
    # unknown objects and fields
    ("SELECT Id FROM Foo", "INVALID_TYPE", "sObject type 'Foo' is not supported"),
    ("SELECT Foo FROM Case", "INVALID_FIELD", "No such column 'Foo' on entity 'Case'"),
    ("SELECT Id FROM Case WHERE Foo = 'x'", "INVALID_FIELD", "No such column 'Foo'"),
    ("SELECT Id FROM Case ORDER BY Foo", "INVALID_FIELD", "No such column 'Foo'"),
    ("SELECT Owner FROM Case", "INVALID_FIELD", "No such column 'Owner' on entity 'Case'"),
    ("SELECT Owner.Foo FROM Case", "INVALID_FIELD", "No such column 'Foo' on entity 'User'"),
    ("SELECT Foo.Name FROM Case", "INVALID_FIELD", "Didn't understand relationship 'Foo'"),
    ("SELECT Subject.Name FROM Case", "INVALID_FIELD", "relationship 'Subject'"),
    (
        "SELECT LastDeclinedAgentSession.Id FROM PendingServiceRouting",
        "INVALID_FIELD",
        "Didn't understand relationship 'LastDeclinedAgentSession'",
    ),
    ("SELECT COUNT(Foo) FROM Case", "INVALID_FIELD", "No such column 'Foo'"),
    (
        "SELECT Id FROM Case WHERE Description = 'x'",
        "INVALID_FIELD",
        "field 'Description' can not be filtered in a query call",
    ),
    (
        "SELECT Id FROM Case ORDER BY description",
        "INVALID_FIELD",
        "field 'Description' can not be sorted in a query call",
    ),
    # literal of the wrong type, operator not valid for the field
    (
        "SELECT Id FROM Case WHERE CreatedDate > '2024-01-31T00:00:00Z'",
        "INVALID_FIELD",
        "'CreatedDate' must be of type dateTime and should not be enclosed in quotes",
    ),
    ("SELECT Id FROM Case WHERE CreatedDate > 2024-01-31", "INVALID_FIELD", "type dateTime"),
    (
        "SELECT Id FROM Case WHERE FollowUpDate__c = 2024-01-31T00:00:00Z",
        "INVALID_FIELD",
        "type date and",
    ),
    (
        "SELECT Id FROM Case WHERE Subject = 5",
        "INVALID_FIELD",
        "must be of type string and should be enclosed in quotes",
    ),
    ("SELECT Id FROM Case WHERE Subject = TODAY", "INVALID_FIELD", "type string"),
    ("SELECT Id FROM Case WHERE IsDeleted = 'true'", "INVALID_FIELD", "type boolean"),
    ("SELECT Id FROM PendingServiceRouting WHERE Serial = '1'", "INVALID_FIELD", "type integer"),
    (
        "SELECT Id FROM PendingServiceRouting WHERE CapacityWeight = true",
        "INVALID_FIELD",
        "type double",
    ),
    ("SELECT Id FROM Case WHERE OwnerId = 5", "INVALID_FIELD", "type id and should be enclosed"),
    ("SELECT Id FROM Case WHERE Status IN ('New', 3)", "INVALID_FIELD", "type string"),
    (
        "SELECT Id FROM Case WHERE Id = 'nope'",
        "INVALID_QUERY_FILTER_OPERATOR",
        "invalid ID field: nope",
    ),
    (
        "SELECT Id FROM Case WHERE OwnerId IN ('005', null)",
        "INVALID_QUERY_FILTER_OPERATOR",
        "invalid ID field: 005",
    ),
    (
        "SELECT Id FROM Case WHERE Id LIKE '500%'",
        "INVALID_QUERY_FILTER_OPERATOR",
        "invalid operator on id field",
    ),
    (
        "SELECT Id FROM Case WHERE CreatedDate LIKE '2024%'",
        "INVALID_QUERY_FILTER_OPERATOR",
        "invalid operator on dateTime field",
    ),
    ("SELECT Id FROM Case WHERE Subject LIKE 5", "INVALID_FIELD", "type string"),
    (
        "SELECT Id FROM Case WHERE IsDeleted > false",
        "INVALID_QUERY_FILTER_OPERATOR",
        "invalid operator on boolean field",
    ),
    ("SELECT Id FROM Case WHERE Subject > null", "INVALID_QUERY_FILTER_OPERATOR", "operator"),
]


@pytest.mark.parametrize(("soql", "code", "fragment"), BAD_QUERIES)
def test_bad_query_is_a_clean_soql_error(soql: str, code: str, fragment: str) -> None:
    with pytest.raises(SoqlError) as caught:
        parse(soql, SCHEMA)
    assert caught.value.error_code == code
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("soql", "code", "message"),
    [
        (
            "SELECT Foo FROM Case",
            "INVALID_FIELD",
            "\nSELECT Foo FROM Case\n       ^\nERROR at Row:1:Column:8\nNo such column 'Foo' "
            "on entity 'Case'. If you are attempting to use a custom field, be sure to append "
            "the '__c' after the custom field name. Please reference your WSDL or the describe "
            "call for the appropriate names.",
        ),
        (
            "SELECT Id FROM Foo",
            "INVALID_TYPE",
            "\nSELECT Id FROM Foo\n               ^\nERROR at Row:1:Column:16\nsObject type "
            "'Foo' is not supported. If you are attempting to use a custom object, be sure to "
            "append the '__c' after the entity name. Please reference your WSDL or the describe "
            "call for the appropriate names.",
        ),
        (
            "SELECT Id\nFROM Case\nWHERE Status = 'New' LIMT 5",
            "MALFORMED_QUERY",
            "\nWHERE Status = 'New' LIMT 5\n                     ^\nERROR at Row:3:Column:22"
            "\nunexpected token: 'LIMT'",
        ),
        (
            "SELECT Id FROM Case WHERE Subject = 'x'; DROP",
            "MALFORMED_QUERY",
            "line 1:39 no viable alternative at character ';'",
        ),
    ],
)
def test_error_message_has_salesforce_shape(soql: str, code: str, message: str) -> None:
    with pytest.raises(SoqlError) as caught:
        parse(soql, SCHEMA)
    assert (caught.value.error_code, caught.value.message) == (code, message)


def test_syntax_error_wins_over_unknown_names() -> None:
    with pytest.raises(SoqlError) as caught:
        parse("SELECT Foo FROM Bar WHERE", SCHEMA)
    assert caught.value.error_code == "MALFORMED_QUERY"
    with pytest.raises(SoqlError) as caught:
        parse("SELECT Foo FROM Bar", SCHEMA)
    assert caught.value.error_code == "INVALID_TYPE"


def test_overlong_query_is_refused() -> None:
    soql = "SELECT Id FROM Case WHERE Subject = '" + "x" * 100_000 + "'"
    with pytest.raises(SoqlError) as caught:
        parse(soql, SCHEMA)
    assert caught.value.error_code == "MALFORMED_QUERY"
    assert "100000 characters" in caught.value.message


@pytest.mark.parametrize(
    "garbage",
    [
        "'",
        "\\",
        "SELECT",
        "SELECT Id FROM Case WHERE Subject = '\\",
        "SELECT Id FROM Case WHERE CreatedDate = 2024-01-01T",
        "SELECT Id FROM Case WHERE CreatedDate = 9999-99-99T99:99:99+99:99",
        "SELECT Id FROM Case WHERE Serial = 99999999999999999999999999",
        "SELECT Id FROM Case ORDER BY",
        "SELECT COUNT( FROM Case",
        "SELECT Owner. FROM Case",
        "SELECT Id FROM Case WHERE NOT",
        "SELECT Id FROM Case WHERE Id IN ('" + "', '".join(["x"] * 5) + "')",
        "\u202eSELECT Id FROM Case",
    ],
)
def test_garbage_never_raises_anything_but_soql_error(garbage: str) -> None:
    with pytest.raises(SoqlError):
        parse(garbage, SCHEMA)


# --------------------------------------------------------------------------- figures


def test_measure_selective_and_scan_queries(capsys: pytest.CaptureFixture[str]) -> None:
    source = Source()
    queue_a, queue_b = make_id("00G", 10), make_id("00G", 11)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    psr_ids = []
    for n in range(10_000):
        psr_ids.append(
            source.add(
                "PendingServiceRouting",
                Id=make_id("0JR", 1000 + n),
                WorkItemId=make_id("500", 1000 + n),
                QueueId=queue_a if n % 2 else queue_b,
                IsReadyForRouting=n % 3 != 0,
                RoutingModel="ExternalRouting",
                RoutingPriority=n % 5,
                CapacityWeight=1.0,
                IsPushed=False,
                Serial=0,
                CreatedDate=start + timedelta(seconds=(n * 7919) % 10_000),
            )
        )
    wanted = psr_ids[::50]
    selective = (
        "SELECT Id, WorkItemId, Serial FROM PendingServiceRouting WHERE Id IN ('"
        + "', '".join(wanted)
        + "')"
    )
    scan = (
        "SELECT Id, WorkItemId, QueueId, Serial, CreatedDate FROM PendingServiceRouting "
        f"WHERE IsReadyForRouting = true AND QueueId = '{queue_a}' ORDER BY CreatedDate LIMIT 200"
    )
    figures: dict[str, float] = {}
    for label, soql in (("Id IN (200 ids)", selective), ("scan 10,000 + ORDER BY", scan)):
        # cold: a new statement text each round, so parsing is not served from the cache
        for kind, texts in (("cold", [soql + " " * n for n in range(20)]), ("warm", [soql] * 20)):
            times = []
            for text in texts:
                began = time.perf_counter()
                result = execute(parse(text, SCHEMA), source, now=NOW, url_for=url_for)
                times.append(time.perf_counter() - began)
                assert result.total_size == 200
            figures[f"{label}, {kind}"] = statistics.median(times) * 1000
    created = [row["CreatedDate"] for row in result.records]
    assert created == sorted(created)
    assert all(row["QueueId"] == queue_a for row in result.records)
    with capsys.disabled():
        for label, ms in figures.items():
            print(f"\nSOQL parse+execute {label}: median {ms:.2f} ms")


@pytest.mark.parametrize("joiner", ["AND", "OR"])
def test_long_junctions_stay_within_the_stack(joiner: str) -> None:
    terms = [f"Subject != 'n{n}'" for n in range(3000)]
    if joiner == "OR":
        terms = [f"Subject = 'n{n}'" for n in range(3000)] + ["Status = 'Closed'"]
    result = run(f"SELECT Id FROM Case WHERE {f' {joiner} '.join(terms)}")
    assert ids(result) == ([C1, C2, C3, C5] if joiner == "AND" else [C3])
