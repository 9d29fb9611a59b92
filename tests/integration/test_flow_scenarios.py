"""Every routing scenario end to end: both sandboxes over TLS, the real clients, a bridge
pumped round by round. Each asserts the final state of both systems and the ledger."""

from __future__ import annotations

import pytest

from bridge.sandbox.traffic import SCENARIOS, SCENARIOS_BY_NAME, Scenario
from tests.fixtures.bridge import BridgeRig


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(bridge_rig: BridgeRig, scenario: Scenario) -> None:
    centre = bridge_rig.centre()
    conv = centre.run(scenario)
    bridge_rig.runtime.settle()
    assert centre.observe(conv) == scenario.expected


def test_restart_mid_conversation_resumes_from_the_ledger_cursor(bridge_rig: BridgeRig) -> None:
    scenario = SCENARIOS_BY_NAME["accept"]
    centre = bridge_rig.centre()
    # the AWA agent accepts while the bridge is down: only the stored cursor finds it
    conv = centre.drive(centre.begin(scenario), until_step=1)
    for stream in ("salesforce:PendingServiceRouting", "servicenow:awa_work_item"):
        assert bridge_rig.ledger.get_cursor(stream) is not None
    bridge_rig.restart()
    centre.drive(conv)
    bridge_rig.runtime.settle()
    assert centre.observe(conv) == scenario.expected
