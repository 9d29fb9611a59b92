"""API economy: the calls the bridge's commands make on the happy path, per endpoint,
counted by the sandboxes (polling is counted apart: its cost is per round, not per
conversation)."""

from __future__ import annotations

from collections import Counter

import pytest

from bridge_sandbox.serving import Counters
from bridge_sandbox.traffic import SCENARIOS, SCENARIOS_BY_NAME, Scenario
from tests.fixtures.bridge import BridgeRig

Calls = Counter[tuple[str, str, str]]


def _snapshot(rig: BridgeRig) -> Calls:
    hosts: dict[str, Counters] = {
        "sf": rig.sf.counters,
        "scrt": rig.sf.scrt_counters,
        "sn": rig.sn.counters,
    }
    calls: Calls = Counter()
    for host, counters in hosts.items():
        for row in counters.snapshot():
            if not row["route"].startswith("/__sandbox"):
                calls[(host, row["method"], row["route"])] += row["count"]
    return calls


def _counting_pump(rig: BridgeRig, calls: Calls) -> int:
    """A bridge round where only the dispatch phase's calls are counted."""
    rig.runtime.poll()
    rig.runtime.processor.process_pending()
    before = _snapshot(rig)
    claimed = rig.runtime.dispatcher.run_once().claimed
    calls.update(_snapshot(rig) - before)
    return claimed


def _calls_of(rig: BridgeRig, scenario: Scenario) -> Calls:
    """Run the scenario; the calls its commands made, until the outbox is drained."""
    calls: Calls = Counter()
    rig.pump = lambda: _counting_pump(rig, calls)  # type: ignore[assignment,method-assign,return-value]
    centre = rig.centre()
    conv = centre.run(scenario)
    while _counting_pump(rig, calls) or _counting_pump(rig, calls):
        pass
    assert centre.observe(conv) == scenario.expected
    return calls


def test_sf_to_sn_lifecycle_makes_the_minimum_calls(bridge_rig: BridgeRig) -> None:
    calls = _calls_of(bridge_rig, SCENARIOS_BY_NAME["close_in_salesforce"])
    assert calls == {
        # the interaction, with the sys_id derived from the correlation (no read first)
        ("sn", "POST", "/api/now/table/{table}"): 1,
        # the offer to the first candidate, who is Available (no presence read first)
        ("sn", "POST", "/api/now/awa/documents/{document_table}/{document_sys_id}/offer"): 1,
        # the AgentWork for the Salesforce user of the agent who accepted in AWA
        ("sf", "POST", "/services/data/v{version}/sobjects/{sobject}"): 1,
        # the interaction closed when the AgentWork closed
        ("sn", "PATCH", "/api/now/table/{table}/{sys_id}"): 1,
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_scenario_makes_the_minimum_calls(bridge_rig: BridgeRig, scenario: Scenario) -> None:
    calls = _calls_of(bridge_rig, scenario)
    assert sum(calls.values()) == scenario.minimum_calls, calls


def test_an_idle_round_costs_one_read_per_stream(bridge_rig: BridgeRig) -> None:
    bridge_rig.pump()  # the Salesforce token
    before = _snapshot(bridge_rig)
    bridge_rig.pump()
    assert _snapshot(bridge_rig) - before == {
        # PendingServiceRouting, AgentWork, and the work items (MessagingSession, Case)
        ("sf", "GET", "/services/data/v{version}/query"): 4,
        ("sf", "GET", "/services/data/v{version}/sobjects/{sobject}/deleted"): 1,
        # awa_work_item and interaction
        ("sn", "GET", "/api/now/table/{table}"): 2,
    }
