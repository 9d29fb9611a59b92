"""The gauges the dashboard and alert rules read, set from plain values (no bridge running)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.metrics import REGISTRY, observe_instance, observe_ledger, observe_poll


def _value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def _stats(by_state: dict[str, int], inbox: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "correlations": {"by_state": by_state},
        "inbox": {"by_status": inbox or {}},
        "outbox": {"by_status": {"dead": 2}},
    }


@pytest.mark.parametrize(
    ("first", "then", "state", "expected"),
    [
        ({"offered": 3}, {"offered": 1, "accepted": 2}, "offered", 1),
        ({"offered": 3}, {"accepted": 2}, "offered", 0),  # emptied: 0, not the last value
        ({}, {}, "closed", 0),  # every state is exported from the first count
    ],
)
def test_conversations_by_state(
    first: dict[str, int], then: dict[str, int], state: str, expected: float
) -> None:
    observe_ledger(_stats(first), None)
    observe_ledger(_stats(then), None)
    assert _value("bridge_conversations", state=state) == expected


def test_dead_letters_refused_events_and_the_last_run() -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    observe_ledger(_stats({}, {"error": 4}), (started, {"unresolved": 2}))
    assert _value("bridge_outbox_commands", status="dead") == 2
    assert _value("bridge_outbox_commands", status="pending") == 0
    assert _value("bridge_inbox_events", status="error") == 4
    assert _value("bridge_reconcile_last_run_findings", status="unresolved") == 2
    assert _value("bridge_reconcile_last_run_findings", status="failed") == 0
    assert _value("bridge_reconcile_last_run_timestamp_seconds") == started.timestamp()


def test_poll_and_instance() -> None:
    observe_poll("servicenow", True, 1000.0)
    observe_poll("servicenow", False, 1010.0)
    assert _value("bridge_intake_up", intake="servicenow") == 0
    assert _value("bridge_intake_last_success_timestamp_seconds", intake="servicenow") == 1000.0
    observe_instance("host:1", "sqlite", ["salesforce:psr"], True)
    assert _value("bridge_stream_holder", stream="salesforce:psr", holder="host:1") == 1
    observe_instance("host:1", "sqlite", ["salesforce:psr"], False)
    assert _value("bridge_stream_holder", stream="salesforce:psr", holder="host:1") == 0
