"""Every routing scenario end to end: both sandboxes over TLS, the real clients, a bridge
pumped round by round. Each asserts the final state of both systems and the ledger."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bridge_sandbox.traffic import (
    ACTIVE,
    SCENARIOS,
    SCENARIOS_BY_NAME,
    SF_ACCEPT,
    SN_ACCEPT,
    ContactCentre,
    Conversation,
    Scenario,
    Step,
)
from tests.fixtures.bridge import BridgeRig
from tests.fixtures.ledger import get_cursor


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(bridge_rig: BridgeRig, scenario: Scenario) -> None:
    centre = bridge_rig.centre()
    conv = centre.run(scenario)
    bridge_rig.runtime.settle()
    assert centre.observe(conv) == scenario.expected


def test_restart_mid_conversation_resumes_from_the_ledger_cursor(bridge_rig: BridgeRig) -> None:
    scenario = SCENARIOS_BY_NAME["accept"]
    centre = bridge_rig.centre()
    conv = centre.begin(scenario)
    cursors = ("salesforce:PendingServiceRouting", "servicenow:awa_work_item")
    for _ in range(10):  # until the bridge has read the offer it made
        if all(get_cursor(bridge_rig.ledger, stream) for stream in cursors):
            break
        bridge_rig.pump()
    # the AWA agent accepts while the bridge is down; the new bridge reads on from the cursor
    centre.drive(conv, until_step=1)
    bridge_rig.restart()
    centre.drive(conv)
    bridge_rig.runtime.settle()
    assert centre.observe(conv) == scenario.expected


def _decline_at_once(cc: ContactCentre, conv: Conversation) -> None:
    work = cc.assigned_work(conv)
    assert work is not None
    conv.marks.setdefault("agent_work_seen", set()).add(work["Id"])
    cc.sf.control.decline(work["Id"], "Busy")


def test_a_decline_before_the_first_agent_work_poll_is_not_lost(bridge_rig: BridgeRig) -> None:
    """A fresh bridge's first AgentWork is declined before any poll has read it: the
    AgentWork stream has a cursor from its first (empty) poll, so it reads the decline."""
    quick = Step(
        "an AgentWork Assigned in Salesforce",
        lambda cc, conv: cc.assigned_work(conv) is not None,
        _decline_at_once,
    )
    scenario = replace(SCENARIOS_BY_NAME["omni_decline"], name="decline_at_once")
    scenario = replace(scenario, steps=(SN_ACCEPT, quick, SN_ACCEPT, SF_ACCEPT, ACTIVE))
    centre = bridge_rig.centre()
    conv = centre.run(scenario)
    bridge_rig.runtime.settle()
    assert centre.observe(conv) == scenario.expected
