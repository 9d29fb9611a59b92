"""The PushTopic definitions of the ``pushtopic`` intake, their events as inbox events, and
the stream position (pure: no org)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.adapters.salesforce.cometd import decode_position, encode_position
from bridge.adapters.salesforce.polling import AGENT_WORK_FIELDS, PSR_FIELDS, SalesforceIntake
from bridge.adapters.salesforce.pushtopics import (
    AGENT_WORK_TOPIC,
    PSR_TOPIC,
    QUERY_MAX,
    PushTopicDefinition,
    TopicEvents,
    definitions,
)
from bridge.errors import ConfigError
from bridge.ledger.memory import MemoryLedger

QUEUE = "00G5g000000000AAA"
GUIDE_FIELDS = (
    "Id",
    "Serial",
    "QueueId",
    "WorkItemId",
    "IsPushed",
    "ServiceChannelId",
    "LastDeclinedAgentSession",
    "CreatedDate",
)


def _topics(**kw: Any) -> dict[str, PushTopicDefinition]:
    args: dict[str, Any] = {"queue_ids": [QUEUE], "work_item_types": [], "api_version": "62.0"}
    return {t.name: t for t in definitions(**{**args, **kw})}


def _columns(query: str) -> list[str]:
    return [c.strip() for c in query.split("SELECT ", 1)[1].split(" FROM ", 1)[0].split(",")]


def test_the_psr_topic_is_the_guide_s_with_what_the_engine_reads() -> None:
    psr = _topics()[PSR_TOPIC]
    columns = _columns(psr.query)
    assert set(GUIDE_FIELDS) <= set(columns)
    assert {"SystemModstamp", *PSR_FIELDS} <= set(columns)
    assert len(columns) == len(set(columns))
    assert " FROM PendingServiceRouting WHERE RoutingModel = 'ExternalRouting'" in psr.query
    assert f"OR QueueId IN ('{QUEUE}')" in psr.query
    assert (psr.create, psr.update, psr.delete) == (True, True, True)
    assert psr.notify_for_fields == "Referenced"
    assert psr.channel == f"/topic/{PSR_TOPIC}"


@pytest.mark.parametrize(
    ("work_items", "names"),
    [
        ([], [PSR_TOPIC, AGENT_WORK_TOPIC]),
        (["MessagingSession"], [PSR_TOPIC, AGENT_WORK_TOPIC, "BridgeMessagingSession"]),
        (["Case", "Case"], [PSR_TOPIC, AGENT_WORK_TOPIC, "BridgeCase"]),
        (["LiveChatTranscript"], [PSR_TOPIC, AGENT_WORK_TOPIC]),  # no end the bridge reads
    ],
)
def test_topics_per_work_item_type(work_items: list[str], names: list[str]) -> None:
    topics = _topics(work_item_types=work_items)
    assert list(topics) == names
    assert all(len(name) <= 25 for name in topics)


@pytest.mark.parametrize(
    ("sobject", "where"),
    [("MessagingSession", "Status IN ('Ended')"), ("Case", "Status IN ('Closed')")],
)
def test_work_item_topics_see_the_end(sobject: str, where: str) -> None:
    topic = _topics(work_item_types=[sobject])[f"Bridge{sobject}"]
    assert topic.query == f"SELECT Id, SystemModstamp, Status, OwnerId FROM {sobject} WHERE {where}"


def test_agent_work_topic_reads_every_queue() -> None:
    topic = _topics()[AGENT_WORK_TOPIC]
    assert " WHERE " not in topic.query
    assert set(_columns(topic.query)) == {"Id", "SystemModstamp", *AGENT_WORK_FIELDS}


def test_a_query_longer_than_a_pushtopic_allows_is_a_config_error() -> None:
    queues = [f"00G5g0000000{n:05d}" for n in range(QUERY_MAX // 20)]
    with pytest.raises(ConfigError, match=r"PushTopic BridgePSR: its query is \d+ characters"):
        definitions(queue_ids=queues, work_item_types=[], api_version="62.0")


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({}, []),
        ({"Query": "SELECT  Id,\n Serial FROM X"}, ["Query"]),
        ({"ApiVersion": "62.0"}, []),  # the org may answer a number or text
        ({"ApiVersion": 41.0}, ["ApiVersion"]),
        ({"IsActive": False}, ["IsActive"]),
        ({"NotifyForFields": "All", "NotifyForOperationDelete": False}, ["NotifyForFields"]),
    ],
)
def test_differences(change: dict[str, Any], differs: list[str]) -> None:
    topic = PushTopicDefinition("T", "Case", "SELECT Id,  Serial\nFROM Case", "62.0")
    record = {**topic.fields(), **change}
    assert topic.differences(record) == differs
    # whitespace in a query is no difference
    assert topic.differences({**topic.fields(), "Query": "SELECT Id, Serial FROM Case"}) == []


STAMP = "2026-01-05T10:00:00.000+0000"
PSR = {"Id": "0JR5g0000000001AAA", "SystemModstamp": STAMP, "QueueId": QUEUE, "Serial": 0}


@pytest.mark.parametrize(
    ("channel", "event_type", "sobject", "expected"),
    [
        (f"/topic/{PSR_TOPIC}", "created", PSR, ("psr", f"psr:{PSR['Id']}:{STAMP}")),
        (f"/topic/{PSR_TOPIC}", "updated", PSR, ("psr", f"psr:{PSR['Id']}:{STAMP}")),
        (
            f"/topic/{PSR_TOPIC}",
            "deleted",
            {"Id": PSR["Id"]},
            ("psr_deleted", f"psr_deleted:{PSR['Id']}"),
        ),
        (
            f"/topic/{AGENT_WORK_TOPIC}",
            "updated",
            {"Id": "0Bz5g0000000001AAA", "SystemModstamp": STAMP, "Status": "Opened"},
            ("agent_work", "agent_work:0Bz5g0000000001AAA:Opened"),
        ),
        (f"/topic/{AGENT_WORK_TOPIC}", "deleted", {"Id": "0Bz5g0000000001AAA"}, None),
        (
            "/topic/BridgeMessagingSession",
            "updated",
            {"Id": "0Mw5g0000000001AAA", "SystemModstamp": STAMP, "Status": "Ended"},
            ("work_item", "work_item:0Mw5g0000000001AAA:Ended"),
        ),
        ("/topic/SomeoneElses", "created", PSR, None),
        (f"/topic/{PSR_TOPIC}", "created", {"Serial": 1}, None),  # no Id: nothing to name
    ],
)
def test_topic_events_as_inbox_events(
    channel: str,
    event_type: str,
    sobject: dict[str, Any],
    expected: tuple[str, str] | None,
) -> None:
    intake = SalesforceIntake(
        None,  # type: ignore[arg-type]  # no call is made: events only
        MemoryLedger(),
        queue_ids=[QUEUE],
        work_item_types=["MessagingSession"],
    )
    topics = definitions(
        queue_ids=[QUEUE], work_item_types=["MessagingSession"], api_version="62.0"
    )
    data = {
        "event": {"type": event_type, "createdDate": "2026-01-05T10:00:01.000Z", "replayId": 7},
        "sobject": sobject,
    }
    made = TopicEvents(topics, intake)(channel, data)
    if expected is None:
        assert made == []
        return
    (event,) = made
    assert (event.kind, event.source_event_id) == expected
    assert event.source == "salesforce"


@pytest.mark.parametrize(
    "replays", [{"/topic/A": 5, "/topic/B": -1}, {"/topic/PSR": 123456789012}, {}]
)
def test_position_round_trip(replays: dict[str, int]) -> None:
    position = encode_position(replays, "https://org.my.salesforce.com")
    assert decode_position(position) == (replays, "https://org.my.salesforce.com")


@pytest.mark.parametrize("bad", ['{"replay_id": "[1, 2]"}', '{"replay_id": "nope"}', "{}"])
def test_unreadable_positions_raise(bad: str) -> None:
    with pytest.raises((ValueError, TypeError, KeyError)):
        decode_position(bad)
