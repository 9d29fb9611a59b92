"""Salesforce change streams end to end (issue 10): ``bridge run`` (the Daemon on threads)
on both sandboxes over TLS, Salesforce read through its stream client (``pubsub``: the
Pub/Sub API over gRPC; ``pushtopic``: CometD), the Salesforce polls only as the slow
sweeper (600 s: its one run is at start), ServiceNow polled. The scenario drivers are those
of ``test_flow_scenarios``; every test asserts what both systems hold and the ledger."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.app.cli import app
from bridge.flow.recovery import RECOVERY
from bridge.flow.streams import POSITION_REFUSED
from bridge.metrics import REGISTRY
from bridge_sandbox.connect import env_lines, sandbox_values
from bridge_sandbox.traffic import (
    ACTIVE,
    SCENARIOS,
    SCENARIOS_BY_NAME,
    ContactCentre,
    Conversation,
    Scenario,
    Step,
)
from tests.fixtures.streams import STREAM_MODES, StreamBridge, StreamBridgeFactory

pytestmark = pytest.mark.integration

MODES = pytest.mark.parametrize("stream_bridge", STREAM_MODES, indirect=True)


def _scenario_cases() -> list[Any]:
    cases = []
    for mode in STREAM_MODES:
        for scenario in SCENARIOS:
            cases.append(pytest.param(mode, scenario, id=f"{scenario.name}-{mode}"))
    return cases


@pytest.mark.parametrize(
    ("stream_bridge", "scenario"), _scenario_cases(), indirect=["stream_bridge"]
)
def test_scenario(stream_bridge: StreamBridge, scenario: Scenario) -> None:
    centre = stream_bridge.centre()
    conv = centre.run(scenario)
    assert stream_bridge.settle()
    assert centre.observe(conv) == scenario.expected


# --- the stream's own faults, per mode, through the sandbox org's controls -----------------

AGENT_WORK_TOPIC = "/topic/BridgeAgentWork"
PSR_TOPIC = "/topic/BridgePSR"


class Controls:
    """The sandbox org's stream controls for the bridge's mode (Pub/Sub API or CometD)."""

    def __init__(self, bridge: StreamBridge) -> None:
        self.bridge, self.mode = bridge, bridge.mode
        self.sf = bridge.sf

    def drop_connections(self) -> int:
        if self.mode == "pubsub":
            return self.sf.control.pubsub_drop_connections()
        return self.sf.streaming.drop_clients()

    def keepalives(self, enabled: bool) -> None:
        if self.mode == "pubsub":
            self.sf.control.pubsub_keepalives(enabled)
        else:
            self.sf.streaming.stalled = not enabled

    def drop_next(self, entity: str) -> None:
        if self.mode == "pubsub":
            self.sf.control.pubsub_drop_event(entity=entity)
        else:
            self.sf.streaming.drop_next_event(_topic(entity))

    def delay_next(self, entity: str, seconds: float) -> None:
        if self.mode == "pubsub":
            self.sf.control.pubsub_delay_event(seconds, entity=entity)
        else:
            self.sf.streaming.delay_next_event(_topic(entity), seconds)

    def expire_retention(self) -> int:
        if self.mode == "pubsub":
            return self.sf.control.pubsub_expire_retention()
        return self.sf.streaming.expire()


def _topic(entity: str) -> str:
    return {"AgentWork": AGENT_WORK_TOPIC, "PendingServiceRouting": PSR_TOPIC}[entity]


def no_trouble(bridge: StreamBridge) -> list[str]:
    """Refused input or dead-lettered commands: none may result from a stream fault."""
    with bridge.ledger.reading() as tx:
        stats = tx.audit.stats()
    errors = stats["inbox"]["by_status"].get("error", 0)
    dead = stats["outbox"]["by_status"].get("dead", 0)
    return [f"{what}: {n}" for what, n in (("inbox errors", errors), ("dead", dead)) if n]


def findings(bridge: StreamBridge, kind: str) -> list[Any]:
    with bridge.ledger.reading() as tx:
        found = []
        for run, _counts in tx.audit.reconcile_runs(50):
            found += [f for f in tx.audit.run_findings(run.id)[1] if f.kind == kind]
        return found


def _assigned_seen(centre: ContactCentre, conv: Conversation) -> dict[str, Any]:
    """Pump until the bridge has read the conversation's Assigned AgentWork; it."""
    for _ in range(centre.max_pumps):
        work = centre.assigned_work(conv)
        if work is not None and centre.bridge_saw(f"agent_work:{work['Id']}:Assigned"):
            return work
        time.sleep(0.02)
    raise AssertionError(f"the bridge never read an Assigned AgentWork: {centre.observe(conv)}")


def _finish(bridge: StreamBridge, centre: ContactCentre, conv: Conversation) -> None:
    centre.drive(conv)
    assert bridge.settle()
    assert centre.observe(conv) == conv.scenario.expected
    assert no_trouble(bridge) == []


def _accept_at_once(cc: ContactCentre, conv: Conversation) -> None:
    work = cc.assigned_work(conv)
    assert work is not None
    conv.marks.setdefault("agent_work_seen", set()).add(work["Id"])
    cc.sf.control.accept(work["Id"])


@MODES
def test_assigned_then_opened_inside_one_delivery_batch(stream_bridge: StreamBridge) -> None:
    """The agent accepts while the Assigned change is still on its way: Assigned and
    Opened reach the bridge together, and the ServiceNow-originated conversation becomes
    active (a poll between the two saw only Opened and left it routing)."""
    Controls(stream_bridge).delay_next("AgentWork", 1.5)
    quick = Step(
        "an AgentWork Assigned in Salesforce (the bridge not told yet)",
        lambda cc, conv: cc.assigned_work(conv) is not None,
        _accept_at_once,
    )
    scenario = replace(SCENARIOS_BY_NAME["sn_originated"], name="one_batch", steps=(quick, ACTIVE))
    centre = stream_bridge.centre()
    conv = centre.begin(scenario)
    _finish(stream_bridge, centre, conv)
    assert stream_bridge.stream.status.recorded >= 2


@MODES
def test_accept_and_close_while_the_bridge_is_stopped_ends_closed(
    stream_bridge: StreamBridge,
) -> None:
    centre = stream_bridge.centre()
    conv = centre.begin(SCENARIOS_BY_NAME["close_in_salesforce"])
    centre.drive(conv, until_step=1)  # the AWA agent accepted the offer
    work = _assigned_seen(centre, conv)
    stream_bridge.stop()
    stream_bridge.sf.control.accept(work["Id"])
    stream_bridge.sf.control.close(work["Id"])
    stream_bridge.start()
    conv.step = len(conv.scenario.steps)  # everything the agents do is done
    assert stream_bridge.settle()
    assert centre.observe(conv) == conv.scenario.expected  # closed, not abandoned
    assert no_trouble(stream_bridge) == []


@MODES
def test_restart_mid_conversation_resumes_from_the_stored_replay_id(
    stream_bridge: StreamBridge,
) -> None:
    centre = stream_bridge.centre()
    conv = centre.begin(SCENARIOS_BY_NAME["accept"])
    centre.drive(conv, until_step=1)
    work = _assigned_seen(centre, conv)
    stream = stream_bridge.stream.stream
    stored = stream_bridge.cursor(stream)
    assert stored is not None
    stream_bridge.stop()
    stream_bridge.sf.control.accept(work["Id"])  # while the bridge is down
    conv.step = 2  # SF_ACCEPT, done by hand
    stream_bridge.start()
    status = stream_bridge.stream.status
    _finish(stream_bridge, centre, conv)
    # resumed after the stored id: no first-start catch-up, nothing refused
    assert (status.catch_ups, status.refused) == (0, 0)
    # what changed while it was down came on the stream (maybe after the start's sweep)
    assert status.recorded + status.duplicates >= 1
    assert stream_bridge.cursor(stream) != stored


@MODES
def test_stored_replay_id_outside_retention_catches_up_with_a_finding(
    stream_bridge: StreamBridge,
) -> None:
    centre = stream_bridge.centre()
    conv = centre.begin(SCENARIOS_BY_NAME["accept"])
    centre.drive(conv, until_step=1)
    work = _assigned_seen(centre, conv)
    stream_bridge.stop()
    stream_bridge.sf.control.accept(work["Id"])
    conv.step = 2  # SF_ACCEPT, done by hand
    assert Controls(stream_bridge).expire_retention() > 0
    stream_bridge.start()
    status = stream_bridge.stream.status
    _finish(stream_bridge, centre, conv)
    assert (status.refused, status.catch_ups) == (1, 1)
    refused = findings(stream_bridge, POSITION_REFUSED)
    assert [f.subject for f in refused] == [stream_bridge.stream.stream]


@MODES
def test_stream_connection_dropped_mid_traffic(stream_bridge: StreamBridge) -> None:
    centre = stream_bridge.centre()
    conv = centre.begin(SCENARIOS_BY_NAME["close_in_salesforce"])
    centre.drive(conv, until_step=1)
    assert Controls(stream_bridge).drop_connections() >= 1
    _finish(stream_bridge, centre, conv)


@pytest.mark.parametrize("mode", STREAM_MODES)
def test_keepalives_stop_the_watchdog_resubscribes(
    stream_bridge_factory: StreamBridgeFactory, mode: str
) -> None:
    bridge = stream_bridge_factory(mode, start=False, salesforce={"keepalive_timeout": 1.5})
    if mode == "pubsub":
        bridge.sf.control.pubsub_keepalives(True, 0.3)
    else:
        bridge.sf.streaming.connect_timeout_ms = 300
    bridge.start()
    time.sleep(2.5)
    status = bridge.stream.status
    assert status.watchdog_resubscribes == 0  # keepalives keep it alive
    Controls(bridge).keepalives(False)
    assert bridge.wait_until(lambda: status.watchdog_resubscribes >= 1, timeout=8)
    Controls(bridge).keepalives(True)
    centre = bridge.centre()
    conv = centre.begin(SCENARIOS_BY_NAME["accept"])
    _finish(bridge, centre, conv)


@MODES
def test_token_revoked_mid_traffic(stream_bridge: StreamBridge) -> None:
    centre = stream_bridge.centre()
    conv = centre.begin(SCENARIOS_BY_NAME["close_in_salesforce"])
    centre.drive(conv, until_step=1)
    tokens = stream_bridge.sf.counters.total("POST", "/services/oauth2/token")
    assert stream_bridge.sf.control.revoke_tokens() >= 1
    Controls(stream_bridge).drop_connections()  # it subscribes again on the revoked token
    _finish(stream_bridge, centre, conv)
    assert stream_bridge.sf.counters.total("POST", "/services/oauth2/token") > tokens


@pytest.mark.parametrize(
    "stream_bridge",
    [
        "pubsub",
        pytest.param(
            "pushtopic",
            marks=pytest.mark.xfail(
                strict=True,
                reason="the sandbox's CometD endpoint has no control that voids replay ids: "
                "after the switch it accepts the newest expired id, so nothing is refused",
            ),
        ),
    ],
    indirect=True,
)
def test_data_centre_recovery_mid_traffic(stream_bridge: StreamBridge) -> None:
    """The org moves instance mid-conversation: every stored replay id is refused, the
    bridge catches up (with a finding) and resubscribes as on first start."""
    centre = stream_bridge.centre()
    conv = centre.begin(SCENARIOS_BY_NAME["close_in_salesforce"])
    centre.drive(conv, until_step=1)
    _assigned_seen(centre, conv)
    switched = stream_bridge.sf.control.data_centre_switch(logout_agents=False)
    assert switched["agents_logged_out"] == []
    _finish(stream_bridge, centre, conv)
    assert stream_bridge.stream.status.refused >= 1
    assert findings(stream_bridge, POSITION_REFUSED)


@MODES
def test_reinitialize_after_a_data_centre_switch(
    stream_bridge: StreamBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bridge salesforce reinitialize` while the bridge is stopped: positions dropped and
    recorded, what is live re-read; the bridge subscribes as on first start and the
    conversation goes on."""
    centre = stream_bridge.centre()
    conv = centre.begin(SCENARIOS_BY_NAME["close_in_salesforce"])
    centre.drive(conv, until_step=1)
    work = _assigned_seen(centre, conv)
    stream = stream_bridge.stream.stream
    stream_bridge.stop()
    stream_bridge.sf.control.data_centre_switch(logout_agents=False)
    stream_bridge.sf.control.accept(work["Id"])
    for line in env_lines(sandbox_values(stream_bridge.sf, stream_bridge.sn)):
        name, value = line.split("=", 1)
        monkeypatch.setenv(name, value.strip("'"))
    monkeypatch.setenv("BRIDGE_LEDGER_URL", stream_bridge.settings.effective_ledger_url)
    monkeypatch.setenv("BRIDGE_SALESFORCE__INTAKE", stream_bridge.mode)
    result = CliRunner().invoke(app, ["salesforce", "reinitialize", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    assert stream in json.loads(result.stdout)["dropped"]
    assert stream_bridge.cursor(stream) is None
    assert [f.subject for f in findings(stream_bridge, RECOVERY)].count(stream) == 1
    stream_bridge.start()
    status = stream_bridge.stream.status
    conv.step = 2  # SF_ACCEPT done by hand above
    _finish(stream_bridge, centre, conv)
    assert (status.refused, status.catch_ups) == (0, 1)  # a first start, nothing refused


@pytest.mark.parametrize("mode", STREAM_MODES)
def test_a_notification_dropped_by_the_org_is_found_by_the_sweeper(
    stream_bridge_factory: StreamBridgeFactory, mode: str
) -> None:
    bridge = stream_bridge_factory(mode, salesforce={"sweep_interval": 1.0})
    centre = bridge.centre()
    conv = centre.begin(SCENARIOS_BY_NAME["accept"])
    Controls(bridge).drop_next("AgentWork")  # the Assigned AgentWork the bridge makes
    _finish(bridge, centre, conv)
    work = centre.agent_work(conv)[-1]
    assigned = [
        e.source_event_id
        for e in bridge.inbox()
        if e.kind == "agent_work"
        and e.payload.get("Id") == work["Id"]
        and e.payload.get("Status") == "Assigned"
    ]
    # read by the sweeper only (its event id names the status): the stream lost it
    assert assigned == [f"agent_work:{work['Id']}:Assigned"]


@MODES
def test_operations_show_the_stream(
    stream_bridge: StreamBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz names the stream, /metrics counts its events and lag and its reconnects,
    `bridge ledger stats` shows its mode and replay id."""
    centre = stream_bridge.centre()
    conv = centre.begin(SCENARIOS_BY_NAME["accept"])
    _finish(stream_bridge, centre, conv)
    daemon, runner = stream_bridge.daemon, stream_bridge.stream
    assert daemon is not None
    check = daemon.readiness()["salesforce stream"]
    assert (check.ok, check.detail) == (True, "subscribed")
    stream = runner.stream
    recorded = sum(
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "bridge_stream_events"
        for s in metric.samples
        if s.name == "bridge_stream_events_total"
        and s.labels["stream"] == stream
        and s.labels["outcome"] == "recorded"
    )
    assert recorded >= runner.status.recorded > 0
    lags = REGISTRY.get_sample_value("bridge_stream_lag_seconds_count", {"stream": stream})
    assert lags is not None
    assert lags >= 1
    lost = {"stream": stream, "reason": "lost"}
    before = REGISTRY.get_sample_value("bridge_stream_reconnects_total", lost) or 0
    reconnects = runner.status.reconnects
    Controls(stream_bridge).drop_connections()
    if stream_bridge.mode == "pubsub":  # CometD: the client handshakes again by itself
        assert stream_bridge.wait_until(lambda: runner.status.reconnects > reconnects)
        assert stream_bridge.wait_until(lambda: runner.status.connected)
    daemon._gauge_outbox()  # the daemon's 15-second gauge job, now
    up = {"stream": stream, "mode": stream_bridge.mode}
    assert REGISTRY.get_sample_value("bridge_stream_up", up) == 1
    after = REGISTRY.get_sample_value("bridge_stream_reconnects_total", lost) or 0
    assert after - before == runner.status.reconnects - reconnects
    monkeypatch.setenv("BRIDGE_LEDGER_URL", stream_bridge.settings.effective_ledger_url)
    monkeypatch.setenv("BRIDGE_SALESFORCE__INTAKE", stream_bridge.mode)
    result = CliRunner().invoke(app, ["ledger", "stats", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    cursor = data["cursors"][stream]
    assert cursor["mode"] == stream_bridge.mode
    assert cursor["replay_id"]
    assert data["intake"]["salesforce"].startswith(stream_bridge.mode)
