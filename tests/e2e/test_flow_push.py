"""ServiceNow in ``push`` mode end to end: the sandbox instance POSTs every change to the
bridge's receiver (real HTTPS, Basic auth, the bridge's own listener), the keyset polls run
only as a sweeper. The scenario drivers are those of ``test_flow_scenarios``; each test
asserts what both systems hold, the ledger and the sandbox's delivery log (what was sent,
what the receiver answered).

Two rigs: ``bridge run`` itself (the Daemon on threads, ``tests.fixtures.push``) plays every
scenario in wall time; a stepped rig (the Runtime round by round beside the receiver, the
sweep due by the sandbox clock) makes the fault tests exact about when a sweep runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import SecretStr
from sqlmodel import Session, col, select

from bridge.adapters.servicenow.receiver import Receiver
from bridge.app.runtime import Runtime, StepStats
from bridge.app.settings import ReceiverSettings, Settings
from bridge.ledger import SqlLedger, rows
from bridge_sandbox.connect import sandbox_settings
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.serving import Clock, SandboxCA
from bridge_sandbox.traffic import SCENARIOS, SCENARIOS_BY_NAME, ContactCentre, Scenario, Stuck
from tests.fixtures.push import PushBridgeFactory

pytestmark = pytest.mark.integration

USER, PASSWORD = "servicenow-events", "push-receiver-s3cret"
# Short, on the sandbox clock: the tests move the clock past it to make a sweep due.
SWEEP_SECONDS = 60.0
SN_ORIGINATED = SCENARIOS_BY_NAME["sn_originated"]


def push_settings(base: Settings, ca: SandboxCA, port: int = 0) -> Settings:
    """``base`` with ServiceNow in push mode and the receiver on loopback over TLS."""
    receiver = ReceiverSettings(
        host="127.0.0.1",
        port=port,
        cert_file=ca.cert_file,
        key_file=ca.key_file,
        username=USER,
        password=SecretStr(PASSWORD),
    )
    servicenow = base.servicenow.model_copy(
        update={"intake": "push", "sweep_interval": SWEEP_SECONDS}
    )
    return base.model_copy(update={"servicenow": servicenow, "receiver": receiver})


@dataclass
class PushRig:
    """Both sandboxes, the bridge in push mode: a receiver the instance delivers to, and a
    round (``pump``) that polls Salesforce, sweeps ServiceNow only when the sweep interval
    has passed on the sandbox clock, and processes and dispatches what came in."""

    sf: SalesforceSandbox
    sn: ServiceNowSandbox
    clock: Clock
    ca: SandboxCA
    ledger: SqlLedger
    runtime: Runtime
    receiver: Receiver | None = None
    swept_at: datetime | None = None
    sweeps: int = 0
    history: list[StepStats] = field(default_factory=list)

    def start(self) -> None:
        """The receiver listening and the instance's provider pointed at it (the port of
        the first start is kept: a restarted bridge listens where the alias points)."""
        receiver = self.runtime.push_receiver()
        assert receiver is not None
        receiver.start()
        self.receiver = receiver
        if self.runtime.settings.receiver.port == 0:
            self.runtime.settings = push_settings(self.runtime.settings, self.ca, receiver.port)
        self.point_provider(PASSWORD)

    def point_provider(self, password: str) -> None:
        assert self.receiver is not None
        self.sn.control.set_provider(self.receiver.url, USER, password, str(self.ca.ca_bundle))

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None
        self.runtime.close()

    def restart(self) -> None:
        """A new bridge on the same ledger and receiver port."""
        settings = self.runtime.settings
        self.stop()
        self.runtime = Runtime.build(settings, ledger=self.ledger, now=self.clock.now)
        self.swept_at = None  # the daemon sweeps at start
        self.start()

    def sweep_due(self) -> bool:
        if self.swept_at is None:
            return True
        now: datetime = self.clock.now()
        return (now - self.swept_at).total_seconds() >= SWEEP_SECONDS

    def pump(self) -> None:
        """Deliveries landed (the receiver answered each), then one bridge round."""
        assert self.sn.control.wait_deliveries(10.0), "deliveries still in flight"
        intakes = self.runtime.intakes
        sweep = self.sweep_due()
        if not sweep:
            self.runtime.intakes = tuple(i for i in intakes if i.name != "servicenow")
        try:
            self.history.append(self.runtime.step())
        finally:
            self.runtime.intakes = intakes
        if sweep:
            self.swept_at = self.clock.now()
            self.sweeps += 1

    def settle(self) -> None:
        for _ in range(50):
            self.pump()
            if self.history[-1].idle and self.sn.control.wait_deliveries(0.0):
                break

    def centre(self, *, max_pumps: int = 12) -> ContactCentre:
        return ContactCentre(self.sf, self.sn, self.ledger, self.pump, max_pumps=max_pumps)

    # -- what the instance sent and the bridge holds ---------------------------------------

    def deliveries(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self.sn.control.deliveries()
        return log

    def inbox(self, *streams: str) -> list[rows.InboxEvent]:
        with Session(self.ledger.engine) as session:
            query = select(rows.InboxEvent).where(rows.InboxEvent.source == "servicenow")
            if streams:
                query = query.where(col(rows.InboxEvent.stream).in_(streams))
            return list(session.exec(query.order_by(col(rows.InboxEvent.id))))


@pytest.fixture
def push_rig(
    _bridge_sandboxes: tuple[SalesforceSandbox, ServiceNowSandbox, Clock],
    tmp_path: Path,
) -> Iterator[PushRig]:
    sf, sn, clock = _bridge_sandboxes
    sf.reset()
    sn.control.reset()
    ca = SandboxCA(tmp_path / "receiver-ca", server="receiver")
    base = sandbox_settings(sf, sn, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    settings = push_settings(base, ca)
    ledger = SqlLedger(settings.effective_ledger_url, now=clock.now)
    ledger.upgrade()
    rig = PushRig(sf, sn, clock, ca, ledger, Runtime.build(settings, ledger=ledger, now=clock.now))
    rig.start()
    rig.pump()  # the first sweep (the daemon's at start): the cursors exist from here on
    yield rig
    rig.stop()
    ledger.close()
    sn.control.clear_provider()
    sn.control.clear_delivery_faults()
    sf.reset()
    sn.control.reset()


def _answers(log: list[dict[str, Any]]) -> list[str]:
    return [json.loads(d["answer"])["result"] for d in log if d["status_code"] == 202]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_in_push_mode(push_rig: PushRig, scenario: Scenario) -> None:
    """Every scenario, ServiceNow's side carried by deliveries only: no sweep runs while it
    plays (the sandbox clock stays inside the first sweep interval)."""
    centre = push_rig.centre()
    conv = centre.run(scenario)
    push_rig.settle()
    assert centre.observe(conv) == scenario.expected
    assert push_rig.sweeps == 1  # the start's only
    log = push_rig.deliveries()
    assert log, "the instance delivered nothing"
    assert {d["status_code"] for d in log} == {202}
    assert set(_answers(log)) <= {"recorded", "duplicate", "stale"}


# The daemon polls Salesforce this often here (2 s by default): scenarios wait on it.
SF_POLL_SECONDS = 0.2


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_on_bridge_run_in_push_mode(
    push_bridge_factory: PushBridgeFactory, scenario: Scenario
) -> None:
    """Every scenario against ``bridge run`` in push mode (default sweep interval: the only
    sweep is the one at start, so ServiceNow's side arrives by delivery)."""
    bridge = push_bridge_factory(salesforce={"poll_interval": SF_POLL_SECONDS})

    def pump() -> None:
        bridge.settle(timeout=5.0, quiet=SF_POLL_SECONDS * 2)

    centre = ContactCentre(bridge.sf, bridge.sn, bridge.ledger, pump, max_pumps=40)
    conv = centre.run(scenario)
    assert bridge.settle(timeout=15.0, quiet=1.0)
    assert centre.observe(conv) == scenario.expected
    log = bridge.sn.control.deliveries()
    assert log, "the instance delivered nothing"
    assert {d["status_code"] for d in log} == {202}
    keys = [e.source_event_id for e in bridge.inbox()]
    assert len(keys) == len(set(keys))


def test_a_lost_delivery_is_caught_by_the_sweeper_within_its_interval(push_rig: PushRig) -> None:
    sn = push_rig.sn
    sn.control.set_delivery_faults({"drop": 100})
    centre = push_rig.centre(max_pumps=3)
    conv = centre.begin(SN_ORIGINATED)  # the customer's chat: its work item queued in AWA
    assert sn.control.wait_deliveries(10.0)
    sn.control.clear_delivery_faults()
    dropped = [d for d in push_rig.deliveries() if d["state"] == "dropped"]
    assert any(d["event"] == "awa_work_item.created" for d in dropped)
    # without the sweep, the bridge never hears of it
    with pytest.raises(Stuck):
        centre.drive(conv)
    assert centre.observe(conv).correlation_state is None
    # one sweep interval later the sweeper reads it, and the conversation goes on
    push_rig.clock.advance(SWEEP_SECONDS)
    conv.waited = 0
    centre.drive(conv)
    push_rig.settle()
    assert centre.observe(conv) == SN_ORIGINATED.expected
    assert push_rig.sweeps == 2


@pytest.mark.parametrize("fault", ["duplicate", "reorder"])
def test_duplicated_and_reordered_deliveries_have_one_effect_each(
    push_rig: PushRig, fault: str
) -> None:
    sn = push_rig.sn
    sn.control.set_delivery_faults({fault: 100})
    scenario = SCENARIOS_BY_NAME["accept"]
    centre = push_rig.centre()
    conv = centre.run(scenario)
    push_rig.settle()
    assert centre.observe(conv) == scenario.expected  # one AgentWork, one work item, ...
    log = push_rig.deliveries()
    answers = _answers(log)
    if fault == "duplicate":
        assert any(d["attempts"] >= 2 or len(d["statuses"]) >= 2 for d in log)
        assert "duplicate" in answers
    # one inbox event per (sys_id, sys_mod_count), however often or late it came
    keys = [e.source_event_id for e in push_rig.inbox()]
    assert len(keys) == len(set(keys))
    delivered = {(d["table"], d["sys_id"], d["sys_mod_count"]) for d in log}
    events = {tuple(k.split(":")) for k in keys if not k.startswith("refused:")}
    assert {(t, s, str(m)) for t, s, m in delivered} <= events


def test_wrong_credentials_are_refused_with_401_and_nothing_is_recorded(
    push_rig: PushRig,
) -> None:
    push_rig.point_provider("not-the-password")
    before = push_rig.inbox()
    centre = push_rig.centre()
    conv = centre.begin(SN_ORIGINATED)
    assert push_rig.sn.control.wait_deliveries(10.0)
    log = push_rig.deliveries()
    assert log
    assert {d["status_code"] for d in log} == {401}
    push_rig.pump()
    assert push_rig.inbox() == before
    assert centre.observe(conv).correlation_state is None
    assert not centre.psr_open(conv)  # nothing reached Salesforce either


def test_the_bridge_stopped_while_deliveries_fail_catches_up_after_restart(
    push_rig: PushRig,
) -> None:
    scenario = SN_ORIGINATED
    centre = push_rig.centre()
    # the bridge is down: every delivery of the customer's chat fails (no retry)
    assert push_rig.receiver is not None
    push_rig.receiver.stop()
    conv = centre.begin(scenario)
    assert push_rig.sn.control.wait_deliveries(30.0)
    failed = push_rig.deliveries()
    assert failed
    assert all(d["status_code"] is None and d["error"] for d in failed)
    push_rig.sn.control.clear_deliveries()
    # back up: the start's sweep reads what was lost; later changes arrive by push
    push_rig.restart()
    centre.drive(conv)
    push_rig.settle()
    assert centre.observe(conv) == scenario.expected
    keys = [e.source_event_id for e in push_rig.inbox()]
    assert len(keys) == len(set(keys))
    assert {d["status_code"] for d in push_rig.deliveries()} == {202}


def test_a_malformed_delivery_gets_400_with_a_reason_and_a_recorded_refusal(
    push_rig: PushRig,
) -> None:
    assert push_rig.receiver is not None
    session = requests.Session()
    session.trust_env = False
    body = {"event": "awa_work_item.created", "table": "awa_work_item", "sys_id": "nope"}
    answer = session.post(
        push_rig.receiver.url,
        json=body,
        auth=(USER, PASSWORD),
        verify=str(push_rig.ca.ca_bundle),
        timeout=10,
    )
    assert answer.status_code == 400
    reason = answer.json()["error"]
    assert "sys_mod_count" in reason
    [refused] = [e for e in push_rig.inbox() if e.source_event_id.startswith("refused:")]
    assert refused.status == "error"
    assert refused.error is not None
    assert json.loads(refused.error)["message"] == reason
    # the receiver and the rest of the traffic go on
    scenario = SN_ORIGINATED
    centre = push_rig.centre()
    conv = centre.run(scenario)
    push_rig.settle()
    assert centre.observe(conv) == scenario.expected
