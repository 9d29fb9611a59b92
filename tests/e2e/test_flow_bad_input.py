"""Bad input: recorded in the ledger with a precise reason while the rest of the traffic
flows on; nothing is dropped silently."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.ledger import NewEvent, audit, rows
from bridge_sandbox import seed
from bridge_sandbox.salesforce.ids import make_id
from bridge_sandbox.traffic import SCENARIOS_BY_NAME, Conversation
from tests.fixtures.bridge import BridgeRig
from tests.fixtures.ledger import db_session, record_events

ACCEPT = SCENARIOS_BY_NAME["accept"]
UNKNOWN_USER = "0123456789abcdef0123456789abcdef"
UNMAPPED_QUEUE = make_id("00G", 9001)
UNKNOWN_WORK_ITEM = make_id("0Mw", 9001)


def _agent_work(conv: Conversation, **fields: Any) -> dict[str, Any]:
    return {
        "Id": make_id("0Bz", 9001),
        "Status": "Assigned",
        "UserId": seed.AGENTS[1].sf_user_id,
        "WorkItemId": conv.sf_work_item_id,
        "SystemModstamp": "2026-01-01T00:00:00.000+0000",
        **fields,
    }


def _work_item(conv: Conversation, **fields: Any) -> dict[str, Any]:
    return {
        "sys_id": "fedcba9876543210fedcba9876543210",
        "state": "accepted",
        "active": "true",
        "document_table": "interaction",
        "document_id": conv.interaction,
        "assigned_to": UNKNOWN_USER,
        **fields,
    }


# (name, source, kind, record, expected event status, words the reason must contain);
# the first two name the running conversation: `bridge ledger show` lists them under it
CASES: list[tuple[str, str, str, Any, str, tuple[str, ...]]] = [
    (
        "unknown AgentWork status",
        "salesforce",
        "agent_work",
        lambda c: _agent_work(c, Status="Parked"),
        "error",
        ("Parked", "Status"),
    ),
    (
        "unmapped ServiceNow agent",
        "servicenow",
        "awa_work_item",
        _work_item,
        "error",
        (UNKNOWN_USER, "not mapped"),
    ),
    (
        "malformed PSR (no Id)",
        "salesforce",
        "psr",
        lambda c: {"QueueId": seed.QUEUES[0].sf_queue_id},
        "error",
        ("Id",),
    ),
    (
        "PSR on an unmapped queue",
        "salesforce",
        "psr",
        lambda c: {
            "Id": make_id("0JR", 9001),
            "QueueId": UNMAPPED_QUEUE,
            "WorkItemId": UNKNOWN_WORK_ITEM,
            "Serial": 0,
            "IsPushed": False,
            "IsTransfer": False,
        },
        "error",
        (UNMAPPED_QUEUE, "not mapped"),
    ),
    (
        "AgentWork of a conversation the bridge does not know",
        "salesforce",
        "agent_work",
        lambda c: _agent_work(c, WorkItemId=UNKNOWN_WORK_ITEM, Status="Opened"),
        "skipped",
        (UNKNOWN_WORK_ITEM,),
    ),
    (
        "an event kind nobody knows",
        "salesforce",
        "banana",
        lambda c: {"Id": "x"},
        "error",
        ("banana",),
    ),
]


@pytest.mark.parametrize(
    ("source", "kind", "record", "status", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_event_is_recorded_and_traffic_flows_on(
    bridge_rig: BridgeRig,
    source: str,
    kind: str,
    record: Any,
    status: str,
    words: tuple[str, ...],
) -> None:
    centre = bridge_rig.centre()
    conv = centre.drive(centre.begin(ACCEPT), until_step=1)
    result = record_events(
        bridge_rig.ledger,
        "test:bad-input",
        [NewEvent(source, f"bad:{kind}", kind, datetime.now(UTC), record(conv))],
        None,
    )
    centre.drive(conv)
    bridge_rig.runtime.settle()
    observed = centre.observe(conv)
    assert replace(observed, problems=()) == ACCEPT.expected
    # the conversation's own problems are the bad event, if it named the conversation
    assert all("bad:" in problem for problem in observed.problems)
    with db_session(bridge_rig.ledger) as session:
        event = session.get(rows.InboxEvent, result.inserted[0])
        assert event is not None
        assert event.status == status
        assert event.error is not None
        for word in words:
            assert word in event.error
        if kind in ("agent_work", "awa_work_item") and status == "error":
            assert conv.sf_work_item_id is not None
            detail = audit.AuditReader(session).correlation_detail(conv.sf_work_item_id)
            assert event.id in [e.id for e in detail.events]
