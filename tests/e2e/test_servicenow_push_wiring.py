"""``bridge run`` in push mode on the sandboxes: the instance's deliveries reach the
receiver and become the very events the sweeper would record (one row per change); the
sweeper runs at start and on its interval; idle, ServiceNow is called only by the sweeper
(and the scheduled reconcilers), counted here.

The scenarios themselves (DESIGN §6 in push mode) are in the push-mode end-to-end tests;
this is the wiring they stand on."""

from __future__ import annotations

import time

from bridge_sandbox import seed
from tests.fixtures.push import PushBridge, PushBridgeFactory

SUPPORT, BILLING, OVERFLOW = seed.QUEUES


def test_a_change_is_pushed_recorded_once_and_swept_as_a_duplicate(
    push_bridge_factory: PushBridgeFactory,
) -> None:
    bridge: PushBridge = push_bridge_factory(sweep_interval=1.0)
    started = bridge.sn.control.create_interaction(OVERFLOW.sn_external_id, "push me")
    assert bridge.sn.control.wait_deliveries(10)
    deliveries = [d for d in bridge.sn.control.deliveries() if d["sys_id"] == started["work_item"]]
    assert deliveries, bridge.sn.control.deliveries()
    assert {d["status_code"] for d in deliveries} == {202}, deliveries
    # the sweeper (every second here) reads the same changes: no second row
    time.sleep(2.5)
    keys = [e.source_event_id for e in bridge.inbox() if e.kind == "awa_work_item"]
    assert len(keys) == len(set(keys))
    pushed = {f"awa_work_item:{d['sys_id']}:{d['sys_mod_count']}" for d in deliveries}
    assert pushed <= set(keys)
    assert bridge.daemon is not None
    checks = bridge.daemon.readiness()
    assert checks["servicenow receiver"].ok
    assert checks["servicenow"].ok, checks["servicenow"]


def test_idle_servicenow_calls_in_push_mode(push_bridge_factory: PushBridgeFactory) -> None:
    """Idle with the default settings: the sweep at start (two reads) and nothing until the
    next sweep, 300 s later; the Table API call count is the figure for the bench."""
    bridge = push_bridge_factory(start=False)
    bridge.sn.counters.reset()
    bridge.start()
    assert bridge.settle(timeout=10)
    time.sleep(3)  # poll mode would have made 3 more polls (2 calls each) by now
    sweep = bridge.sn.counters.total()
    # scheduled reconciliations with nothing open, as `bridge run` runs them every 300 s
    # (the mapping check among them at most hourly)
    from bridge.reconcile import scheduled  # noqa: PLC0415

    job = scheduled(bridge.runtime)
    job()
    first = bridge.sn.counters.total() - sweep
    job()
    every = bridge.sn.counters.total() - sweep - first
    bridge.stop()
    runs = 86_400 / 300
    per_day = sweep * runs + every * runs + (first - every) * 24
    print(
        f"idle ServiceNow calls: a sweep {sweep}, a reconciliation {every} "
        f"(+{first - every} hourly for the mapping check): {per_day:.0f}/day"
    )
    assert sweep == 2, bridge.sn.counters.snapshot()  # one sweep: work items, interactions
    assert per_day <= 1_500, bridge.sn.counters.snapshot()
