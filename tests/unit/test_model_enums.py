"""The status vocabularies and the record readers of bridge.domain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.domain import (
    AgentWorkStatus,
    Event,
    EventKind,
    Operation,
    System,
    WorkItemState,
    field_value,
    flag,
    number,
    status_of,
)
from bridge.errors import Permanent, Skippable


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (AgentWorkStatus.ASSIGNED, 0),
        (AgentWorkStatus.UNAVAILABLE, 1),
        (AgentWorkStatus.DECLINED, 2),
        (AgentWorkStatus.OPENED, 3),
        (AgentWorkStatus.CLOSED, 4),
        (AgentWorkStatus.DECLINED_ON_PUSH_TIMEOUT, 5),
        (AgentWorkStatus.CANCELED, 6),
        (AgentWorkStatus.TRANSFERRED, 7),
    ],
)
def test_agent_work_push_topic_codes(status: AgentWorkStatus, code: int) -> None:
    assert status.code == code
    assert AgentWorkStatus.from_code(code) is status


def test_unknown_code() -> None:
    with pytest.raises(ValueError, match="unknown AgentWork status code 8"):
        AgentWorkStatus.from_code(8)


def _event(record: dict[str, Any]) -> Event:
    return Event(System.SERVICENOW, EventKind.AWA_WORK_ITEM, "sys:1", datetime.now(UTC), record)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("false", False),
        ("", False),
        (None, False),
        ({"value": "true", "display_value": "true"}, True),
    ],
)
def test_flag(raw: Any, expected: bool) -> None:
    assert flag(_event({"active": raw}), "active") is expected


@pytest.mark.parametrize(
    ("reader", "record", "error", "message"),
    [
        (
            lambda e: flag(e, "active"),
            {"active": "yes"},
            Permanent,
            "servicenow awa_work_item event sys:1: field active is not a boolean: 'yes'",
        ),
        (
            lambda e: number(e, "offer_count"),
            {"offer_count": "many"},
            Permanent,
            "field offer_count is not a number: 'many'",
        ),
        (
            lambda e: status_of(e, "state", WorkItemState),
            {"state": "parked"},
            Skippable,
            "unknown state 'parked' (known: queued, pending_accept, accepted, canceled)",
        ),
    ],
)
def test_readers_name_field_and_event(
    reader: Any, record: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error) as info:
        reader(_event(record))
    assert message in str(info.value)


def test_field_value_unwraps_display_value_pairs() -> None:
    assert field_value({"state": {"value": "queued", "display_value": "Queued"}}, "state") == (
        "queued"
    )


def test_status_of_accepts_push_topic_code() -> None:
    ev = Event(System.SALESFORCE, EventKind.AGENT_WORK, "1", datetime.now(UTC), {"Status": 3})
    assert status_of(ev, "Status", AgentWorkStatus) is AgentWorkStatus.OPENED


def test_event_time_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware UTC"):
        Event(System.SALESFORCE, EventKind.PSR, "1", datetime(2026, 1, 1), {})


@pytest.mark.parametrize(
    ("operation", "system"),
    [
        (Operation.CREATE_AGENT_WORK, System.SALESFORCE),
        (Operation.CANCEL_ROUTE, System.SALESFORCE),
        (Operation.UPDATE_AGENT_WORK, System.SALESFORCE),
        (Operation.OFFER, System.SERVICENOW),
        (Operation.CLOSE_INTERACTION, System.SERVICENOW),
    ],
)
def test_operation_system(operation: Operation, system: System) -> None:
    assert operation.system is system
