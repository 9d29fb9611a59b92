"""Change events → inbox events (issue 10): the kinds the polls record, one per record id,
UPDATEs merged onto the newest record the ledger holds with ``changedFields`` passed on,
deletions, GAP events and unseen records read by id; the header's bitmaps; the gRPC rows of
the error table. Tables of cases, no sockets."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.adapters.salesforce.polling import SalesforceIntake
from bridge.adapters.salesforce.pubsub.translate import (
    BadChangeEvent,
    ChangeEvent,
    Translator,
    bitmap_fields,
    change_event,
    rest_datetime,
)
from bridge.errors import ConfigError, Permanent, Retriable, from_grpc
from bridge.ledger.memory import MemoryLedger

QUEUE = "00G000000000001AAA"
OTHER_QUEUE = "00G000000000009AAA"
PSR_1, PSR_2 = "0JR000000000001AAA", "0JR000000000002AAA"
AW_1 = "0Bz000000000001AAA"
MS_1 = "0Mw000000000001AAA"
COMMIT = datetime(2026, 12, 3, 10, 0, 0, 123000, tzinfo=UTC)
NOW = datetime(2026, 12, 3, 10, 0, 5, tzinfo=UTC)


class FakeApi:
    """The REST reads by id a GAP event makes (the rest of the API is unused here)."""

    def __init__(self, rows: Sequence[dict[str, Any]] = ()) -> None:
        self.rows = list(rows)
        self.queries: list[str] = []

    def query(self, soql: str) -> Iterator[dict[str, Any]]:
        self.queries.append(soql)
        return iter([dict(r) for r in self.rows if f"'{r['Id']}'" in soql])


def intake(api: FakeApi | None = None) -> SalesforceIntake:
    return SalesforceIntake(
        api or FakeApi(),  # type: ignore[arg-type]
        MemoryLedger(),
        queue_ids=[QUEUE],
        work_item_types=["MessagingSession"],
    )


def psr_row(rid: str = PSR_1, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "Id": rid,
        "SystemModstamp": "2026-12-03T09:59:00.000+0000",
        "Serial": 1,
        "QueueId": QUEUE,
        "WorkItemId": MS_1,
        "ServiceChannelId": "0N9000000000001AAA",
        "IsPushed": False,
        "IsReadyForRouting": True,
        "IsTransfer": False,
        "LastDeclinedAgentSession": None,
        "RoutingModel": "ExternalRouting",
        "RoutingType": "QueueBased",
        "PushTimeout": 30,
        "CapacityWeight": 1.0,
        "CreatedDate": "2026-12-03T09:59:00.000+0000",
    }
    row.update(fields)
    return row


def change(
    entity: str,
    change_type: str,
    ids: Sequence[str],
    fields: Mapping[str, Any] | None = None,
    *,
    changed: Sequence[str] = (),
    nulled: Sequence[str] = (),
    tx: str = "tx-1",
    seq: int = 1,
) -> ChangeEvent:
    return ChangeEvent(
        entity=entity,
        change_type=change_type,
        record_ids=tuple(ids),
        commit_at=COMMIT,
        fields=dict(fields or {}),
        changed=tuple(changed),
        nulled=tuple(nulled),
        transaction_key=tx,
        sequence=seq,
        replay_id="00000001",
    )


def translate(
    changes: Sequence[ChangeEvent],
    known: Mapping[tuple[str, str], dict[str, Any]] | None = None,
    api: FakeApi | None = None,
) -> list[tuple[str, str, dict[str, Any]]]:
    held = dict(known or {})

    def last(source: str, kind: str, ids: Sequence[str]) -> dict[str, Any]:
        assert source == "salesforce"
        return {i: held[kind, i] for i in ids if (kind, i) in held}

    out = Translator(intake(api), last).translate(changes, NOW)
    return [(e.kind, e.source_event_id, dict(e.payload)) for e in out.events]


def test_a_create_is_a_psr_event_with_the_whole_record_and_the_change_as_its_id() -> None:
    row = psr_row()
    ((kind, event_id, payload),) = translate(
        [change("PendingServiceRouting", "CREATE", [PSR_1], row)]
    )
    assert (kind, event_id) == ("psr", f"psr:{PSR_1}:tx-1:1")
    assert {k: payload[k] for k in row} == row
    assert payload["changeType"] == "CREATE"


def test_an_update_is_merged_onto_the_newest_record_the_ledger_holds() -> None:
    held = psr_row(IsPushed=True)
    declined = change(
        "PendingServiceRouting",
        "UPDATE",
        [PSR_1],
        {"IsPushed": False, "LastDeclinedAgentSession": "0Hn000000000001AAA", "Serial": None},
        changed=["IsPushed", "LastDeclinedAgentSession", "LastModifiedDate"],
        tx="tx-2",
    )
    ((kind, event_id, payload),) = translate([declined], {("psr", PSR_1): held})
    assert (kind, event_id) == ("psr", f"psr:{PSR_1}:tx-2:1")
    # changed fields from the event; the unchanged (null) ones from the ledger
    assert payload["IsPushed"] is False
    assert payload["LastDeclinedAgentSession"] == "0Hn000000000001AAA"
    assert payload["Serial"] == 1
    assert payload["QueueId"] == QUEUE
    assert payload["changedFields"] == ["IsPushed", "LastDeclinedAgentSession", "LastModifiedDate"]
    # the record last changed when the change committed
    assert payload["SystemModstamp"] == rest_datetime(COMMIT) == "2026-12-03T10:00:00.123+0000"


def test_a_nulled_field_is_null_after_the_merge() -> None:
    held = psr_row(LastDeclinedAgentSession="0Hn000000000001AAA")
    cleared = change(
        "PendingServiceRouting", "UPDATE", [PSR_1], {}, nulled=["LastDeclinedAgentSession"]
    )
    ((_, _, payload),) = translate([cleared], {("psr", PSR_1): held})
    assert payload["LastDeclinedAgentSession"] is None
    assert payload["Serial"] == 1


def test_two_updates_in_one_batch_merge_in_order() -> None:
    held = {"Id": AW_1, "SystemModstamp": "x", "Status": "Assigned", "UserId": "005A"}
    opened = change("AgentWork", "UPDATE", [AW_1], {"Status": "Opened"}, tx="t1")
    closed = change("AgentWork", "UPDATE", [AW_1], {"Status": "Closed"}, tx="t2")
    events = translate([opened, closed], {("agent_work", AW_1): held})
    # one event per (AgentWork, Status), as the polls record them: the sweeper's repeat
    # of a status is dropped by the inbox key
    assert [(k, i, p["Status"], p["UserId"]) for k, i, p in events] == [
        ("agent_work", f"agent_work:{AW_1}:Opened", "Opened", "005A"),
        ("agent_work", f"agent_work:{AW_1}:Closed", "Closed", "005A"),
    ]


def test_an_event_with_several_record_ids_is_one_inbox_event_per_record() -> None:
    both = change("PendingServiceRouting", "CREATE", [PSR_1, PSR_2], psr_row(Id=None))
    events = translate([both])
    assert [(k, i, p["Id"]) for k, i, p in events] == [
        ("psr", f"psr:{PSR_1}:tx-1:1", PSR_1),
        ("psr", f"psr:{PSR_2}:tx-1:1", PSR_2),
    ]


def test_a_psr_deletion_is_the_polls_deletion_event() -> None:
    events = translate([change("PendingServiceRouting", "DELETE", [PSR_1, PSR_2])])
    assert [(k, i, p["Id"]) for k, i, p in events] == [
        ("psr_deleted", f"psr_deleted:{PSR_1}", PSR_1),
        ("psr_deleted", f"psr_deleted:{PSR_2}", PSR_2),
    ]


def test_a_psr_of_an_unmapped_queue_keeps_its_one_event() -> None:
    row = psr_row(QueueId=OTHER_QUEUE)
    ((_, event_id, _),) = translate([change("PendingServiceRouting", "CREATE", [PSR_1], row)])
    assert event_id == f"psr:{PSR_1}:unmapped"


@pytest.mark.parametrize(
    ("status", "recorded"), [("Ended", True), ("Active", False), ("Waiting", False)]
)
def test_a_work_item_is_recorded_when_it_ends_as_the_polls_do(status: str, recorded: bool) -> None:
    ended = change("MessagingSession", "UPDATE", [MS_1], {"Status": status}, changed=["Status"])
    held = {"Id": MS_1, "SystemModstamp": "x", "Status": "Active", "OwnerId": "005A"}
    events = translate([ended], {("work_item", MS_1): held})
    assert [(k, p["Status"]) for k, _, p in events] == ([("work_item", status)] if recorded else [])


def test_an_entity_the_bridge_does_not_use_is_passed_over() -> None:
    presence = change("UserServicePresence", "UPDATE", ["0Hn000000000001AAA"], {"IsAway": True})
    assert translate([presence]) == []


@pytest.mark.parametrize("gap", ["GAP_CREATE", "GAP_UPDATE", "GAP_OVERFLOW"])
def test_a_gap_reads_those_records_by_id(gap: str) -> None:
    api = FakeApi([psr_row(PSR_1, SystemModstamp="2026-12-03T10:00:01.000+0000")])
    events = translate([change("PendingServiceRouting", gap, [PSR_1, PSR_2])], api=api)
    assert len(api.queries) == 1
    assert f"'{PSR_1}'" in api.queries[0]
    # PSR_1 as it is now, under the polls' id; PSR_2 is gone: deleted
    assert [(k, i) for k, i, _ in events] == [
        ("psr", f"psr:{PSR_1}:2026-12-03T10:00:01.000+0000"),
        ("psr_deleted", f"psr_deleted:{PSR_2}"),
    ]


def test_an_update_of_a_record_the_ledger_never_saw_reads_it_by_id() -> None:
    api = FakeApi([psr_row(PSR_1)])
    events = translate(
        [change("PendingServiceRouting", "UPDATE", [PSR_1], {"IsPushed": True})], api=api
    )
    assert [(k, p["Serial"]) for k, _, p in events] == [("psr", 1)]
    assert len(api.queries) == 1


# --- decoding ---------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "PendingServiceRoutingChangeEvent",
    "fields": [
        {"name": "ChangeEventHeader", "type": "string"},
        {"name": "Id", "type": ["null", "string"]},
        {"name": "IsPushed", "type": ["null", "boolean"]},
        {
            "name": "Name",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Name",
                    "fields": [
                        {"name": "FirstName", "type": ["null", "string"]},
                        {"name": "LastName", "type": ["null", "string"]},
                    ],
                },
            ],
        },
        {"name": "LastDeclinedAgentSession", "type": ["null", "string"]},
        {"name": "SystemModstamp", "type": ["null", "long"]},
    ],
}


@pytest.mark.parametrize(
    ("bitmaps", "names"),
    [
        ([], []),
        (["0x4"], ["IsPushed"]),
        (["0x14"], ["IsPushed", "LastDeclinedAgentSession"]),
        (["0x24", "3-0x2"], ["IsPushed", "SystemModstamp", "Name.LastName"]),
        (["3-0x3"], ["Name"]),  # every sub-field: the compound field itself
    ],
)
def test_the_header_bitmaps_name_fields_of_the_schema(bitmaps: list[str], names: list[str]) -> None:
    assert bitmap_fields(bitmaps, SCHEMA) == names


@pytest.mark.parametrize("bitmap", ["0xZZ", "9-0x1"])
def test_an_unreadable_bitmap_is_a_bad_change_event(bitmap: str) -> None:
    with pytest.raises(BadChangeEvent, match="bitmap"):
        bitmap_fields([bitmap], SCHEMA)


def test_a_decoded_record_is_read_with_datetimes_as_rest_writes_them() -> None:
    millis = int(COMMIT.timestamp() * 1000)
    decoded = {
        "ChangeEventHeader": {
            "entityName": "PendingServiceRouting",
            "recordIds": [PSR_1],
            "changeType": "UPDATE",
            "transactionKey": "tk",
            "sequenceNumber": 2,
            "commitTimestamp": millis,
            "changedFields": ["0x24"],
            "nulledFields": [],
        },
        "Id": None,
        "IsPushed": True,
        "SystemModstamp": millis,
    }
    event = change_event(decoded, SCHEMA, "ab01")
    assert event.change_key == "tk:2"
    assert event.changed == ("IsPushed", "SystemModstamp")
    assert event.fields["SystemModstamp"] == "2026-12-03T10:00:00.123+0000"
    assert event.commit_at == COMMIT


@pytest.mark.parametrize(
    "decoded",
    [{}, {"ChangeEventHeader": {"entityName": "X"}}, {"ChangeEventHeader": "text"}],
)
def test_a_record_without_a_readable_header_is_a_bad_change_event(
    decoded: dict[str, Any],
) -> None:
    with pytest.raises(BadChangeEvent, match="ChangeEventHeader"):
        change_event(decoded, SCHEMA)


# --- the gRPC rows of the error table -----------------------------------------------------

CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"


@pytest.mark.parametrize(
    ("status", "error_code", "branch", "code"),
    [
        ("INVALID_ARGUMENT", CORRUPTED, Permanent, "replay_refused"),
        ("UNAUTHENTICATED", None, Retriable, "unauthenticated"),
        ("UNAVAILABLE", None, Retriable, "UNAVAILABLE"),
        ("INTERNAL", None, Retriable, "INTERNAL"),
        ("NOT_FOUND", "sfdc.platform.eventbus.grpc.topic.notfound", ConfigError, None),
        ("PERMISSION_DENIED", None, ConfigError, "PERMISSION_DENIED"),
        ("INVALID_ARGUMENT", None, Permanent, "INVALID_ARGUMENT"),
    ],
)
def test_grpc_failures_are_classified_once_by_the_table(
    status: str, error_code: str | None, branch: type, code: str | None
) -> None:
    error = from_grpc("salesforce", status, "Subscribe failed", error_code=error_code)
    assert type(error) is branch
    assert error.code == (code or error_code)
    assert error.system == "salesforce"
