"""Operations of the change streams (issue 10): /metrics series, /readyz's stream check and
the mode `bridge ledger stats` tells from a stored cursor. Tables of cases, no sockets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from bridge.app.health import stream_check
from bridge.flow.stream_metrics import StatusObserver, batch_observer, change_type
from bridge.flow.streams import Batch, StreamPosition
from bridge.ledger.audit import cursor_mode
from bridge.ledger.ports import NewEvent, RecordResult
from bridge.metrics import REGISTRY


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class State:
    connected: bool = False
    down_since: float | None = None
    error: str | None = None
    reconnects: int = 0
    watchdog_resubscribes: int = 0
    refused: int = 0


PUBSUB = StreamPosition("00000000000a1b2c", "https://acme.my.salesforce.com").encode()
PUSHTOPIC = StreamPosition("42").encode()
WATERMARK = '{"at": "2026-01-05T09:00:00+00:00", "key": ""}'


@pytest.mark.parametrize(
    ("stream", "position", "expected"),
    [
        (
            "salesforce:pubsub:/data/ExternalRoutingChannel__chn",
            PUBSUB,
            {
                "mode": "pubsub",
                "replay_id": "00000000000a1b2c",
                "origin": "https://acme.my.salesforce.com",
            },
        ),
        ("salesforce:/data/AgentWorkChangeEvent", PUBSUB, {"mode": "pubsub"}),
        ("salesforce:pushtopic:/topic/BridgePSR", PUSHTOPIC, {"mode": "pushtopic"}),
        ("salesforce:/topic/BridgeAgentWork", PUSHTOPIC, {"mode": "pushtopic", "replay_id": "42"}),
        ("salesforce:somestream", PUSHTOPIC, {"mode": "stream"}),
        ("salesforce:PendingServiceRouting", WATERMARK, {"mode": "poll"}),
        ("servicenow:awa_work_item", "2026-01-05 09:00:00|abc", {"mode": "poll"}),
        ("sf:psr", "42", {"mode": "poll"}),
        ("sf:psr", "{not json", {"mode": "poll"}),
    ],
)
def test_cursor_mode(stream: str, position: str, expected: dict[str, str]) -> None:
    found = cursor_mode(stream, position)
    assert {k: found.get(k) for k in expected} == expected
    if expected["mode"] == "poll":
        assert found == {"mode": "poll"}


@pytest.mark.parametrize(
    ("state", "now", "ok", "detail"),
    [
        (State(connected=True), 1000.0, True, "subscribed"),
        (State(down_since=990.0, error="UNAVAILABLE"), 1000.0, True, "reconnecting for 10s"),
        (State(down_since=800.0, error="UNAVAILABLE"), 1000.0, True, "reconnecting for 200s"),
        (State(down_since=600.0, error="UNAVAILABLE"), 1000.0, False, "down for 400s"),
        (State(down_since=600.0), 1000.0, False, "not subscribed yet"),
        (State(down_since=None), 1000.0, True, "not subscribed yet"),
    ],
)
def test_stream_check(state: State, now: float, ok: bool, detail: str) -> None:
    check = stream_check(state, down_after=300.0, now=now)
    assert check.ok is ok
    assert detail in check.detail


def test_stream_check_names_the_error_when_down() -> None:
    check = stream_check(State(down_since=0.0, error="StatusCode.UNAUTHENTICATED"), now=500.0)
    assert not check.ok
    assert "StatusCode.UNAUTHENTICATED" in check.detail


def _event(event_id: str, kind: str, payload: dict[str, object], age: float) -> NewEvent:
    return NewEvent(
        source="salesforce",
        source_event_id=event_id,
        kind=kind,
        occurred_at=datetime.now(UTC) - timedelta(seconds=age),
        payload=payload,
    )


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"ChangeEventHeader": {"changeType": "UPDATE"}}, "UPDATE"),
        ({"changeType": "create"}, "CREATE"),
        ({"event": {"type": "updated"}}, "UPDATED"),
        ({"Id": "0JR1"}, "unknown"),
        ({"ChangeEventHeader": "not a mapping"}, "unknown"),
    ],
)
def test_change_type(payload: dict[str, object], expected: str) -> None:
    assert change_type(_event("e", "psr", payload, 0)) == expected


def test_batch_observer_counts_by_channel_entity_change_type_and_outcome() -> None:
    stream, channel = "test:obs:pubsub", "/data/ExternalRoutingChannel__chn"
    events = [
        _event("a", "psr", {"ChangeEventHeader": {"changeType": "CREATE"}}, 2.0),
        _event("b", "agent_work", {"ChangeEventHeader": {"changeType": "UPDATE"}}, 0.5),
        _event("c", "agent_work", {"ChangeEventHeader": {"changeType": "UPDATE"}}, 0.5),
        _event("d", "agent_work", {"ChangeEventHeader": {"changeType": "UPDATE"}}, 9.0),
    ]
    result = RecordResult(inserted=[1, 2], duplicates=["c"], cursor=None, stale=["d"])
    lag_before = sample("bridge_stream_lag_seconds_count", stream=stream)
    batch_observer(channel)(stream, Batch(events, "pos"), result)

    def events_of(entity: str, change: str, outcome: str) -> float:
        return sample(
            "bridge_stream_events_total",
            stream=stream,
            channel=channel,
            entity=entity,
            change_type=change,
            outcome=outcome,
        )

    assert events_of("psr", "CREATE", "recorded") == 1
    assert events_of("agent_work", "UPDATE", "recorded") == 1
    assert events_of("agent_work", "UPDATE", "duplicate") == 1
    assert events_of("agent_work", "UPDATE", "stale") == 1
    # the lag of recorded events only: commit 2 s and 0.5 s before the inbox commit
    assert sample("bridge_stream_lag_seconds_count", stream=stream) - lag_before == 2
    total = sample("bridge_stream_lag_seconds_sum", stream=stream)
    assert 2.5 <= total < 3.5


def test_status_observer_turns_the_runner_counts_into_counters() -> None:
    stream = "test:obs:status"
    observer = StatusObserver(stream, "pubsub")
    state = State(connected=True)
    observer.look(state, now=10.0)
    assert sample("bridge_stream_up", stream=stream, mode="pubsub") == 1
    assert sample("bridge_stream_down_seconds", stream=stream) == 0
    state.connected, state.down_since = False, 4.0
    state.reconnects, state.watchdog_resubscribes, state.refused = 3, 1, 1
    observer.look(state, now=10.0)
    observer.look(state, now=10.0)  # looking again counts nothing twice
    assert sample("bridge_stream_up", stream=stream, mode="pubsub") == 0
    assert sample("bridge_stream_down_seconds", stream=stream) == 6
    assert sample("bridge_stream_reconnects_total", stream=stream, reason="lost") == 3
    assert sample("bridge_stream_reconnects_total", stream=stream, reason="silent") == 1
    assert sample("bridge_stream_replay_fallbacks_total", stream=stream, reason="refused") == 1
    state.reconnects = 5
    observer.look(state, now=11.0)
    assert sample("bridge_stream_reconnects_total", stream=stream, reason="lost") == 5
