"""Sequences of both systems' changes, as tables: the shrunk failing examples of the
stateful property test (``test_engine_state_machine``) and the in-order sequences beside
them. Each runs over the model of both systems (``tests.unit.engine_model``), the processor
and the in-memory ledger, then checks the property test's invariants and the outcome
all three show.

Steps (all on the one conversation the sequence starts):
``start_sf`` / ``start_sn`` a customer starts it in Salesforce / in ServiceNow;
``read`` intake reads every change one by one, dispatch runs every command (repeated
until nothing moves); ``catch_up`` the same, but each record read only as its newest
snapshot (after an outage: the states between are skipped); ``read:KIND`` only the
changes of records of that kind, one by one; ``sn_accept`` / ``sn_reject`` /
``sn_time_out`` the AWA agent answers the pending offer; ``omni_push[:NAME]`` Omni-Channel
pushes the work to Alice (or NAME); ``again:KIND:N`` the N-th record of that kind, its
newest change delivered once more through another stream (another id: a change stream and
the sweeper both read it); ``sf_accept`` / ``sf_decline`` / ``sf_push_timeout`` the Salesforce
agent answers the push; ``sf_close`` the Salesforce agent closes the work;
``customer_leaves`` the customer ends the session in Salesforce; ``sn_close`` the AWA
agent closes the interaction.
"""

from __future__ import annotations

import pytest

from tests.unit.engine_builders import SUPPORT
from tests.unit.engine_model import AGENTS, Conversation, Systems
from tests.unit.test_engine_state_machine import Bridge

ALICE = AGENTS[0]


def _assigned(systems: Systems, conv: Conversation) -> str:
    (work,) = [w for w in systems.open_agent_work(conv) if w["Status"] == "Assigned"]
    return str(work["Id"])


def _opened(systems: Systems, conv: Conversation) -> str:
    (work,) = [w for w in systems.open_agent_work(conv) if w["Status"] == "Opened"]
    return str(work["Id"])


def _pending(systems: Systems, conv: Conversation) -> str:
    (sys_id,) = systems.pending_items(conv)
    return sys_id


def run(steps: list[str]) -> tuple[Bridge, Conversation]:
    bridge = Bridge()
    systems = bridge.systems
    conv: Conversation | None = None
    for step in steps:
        if step == "start_sf":
            conv = systems.start_sf(SUPPORT.sf_queue_id)
            continue
        if step == "start_sn":
            conv = systems.start_sn()
            continue
        assert conv is not None, "a sequence starts its conversation first"
        if step == "read":
            bridge.settle("next")
        elif step == "catch_up":
            bridge.settle("fold")
        elif step.startswith("read:"):
            kind = step.split(":", 1)[1]
            for key in sorted(systems.feeds):
                if key.startswith(f"{kind}:"):
                    while bridge.deliver(key, "next"):
                        pass
        elif step == "sn_accept":
            systems.sn_accept(_pending(systems, conv))
        elif step == "sn_reject":
            systems.sn_reject(_pending(systems, conv))
        elif step == "sn_time_out":
            systems.sn_time_out(_pending(systems, conv))
        elif step.startswith("omni_push"):
            name = step.partition(":")[2] or "alice"
            agent = next(a for a in AGENTS if a.sn_user_name.startswith(name))
            assert systems.omni_assign(conv, agent.sf_user_id)
        elif step.startswith("again:"):
            # the n-th record of a kind (in the order they were made), its newest change
            # once more through another stream (another id), as the sweeper reads it
            _, kind, n = step.split(":")
            keys = [k for k in systems.feeds if k.startswith(f"{kind}:")]
            feed = systems.feeds[keys[int(n)]]
            assert feed.last is feed.changes[-1], "the sweeper reads the row as it is now"
            assert bridge.deliver(keys[int(n)], "again_other_id")
        elif step == "sf_accept":
            systems.sf_accept(_assigned(systems, conv))
        elif step == "sf_decline":
            systems.sf_decline(_assigned(systems, conv), push_timeout=False)
        elif step == "sf_push_timeout":
            systems.sf_decline(_assigned(systems, conv), push_timeout=True)
        elif step == "sf_close":
            systems.sf_close(_opened(systems, conv))
        elif step == "customer_leaves":
            assert conv.sf_work_item is not None
            systems.customer_leaves(conv.sf_work_item)
        elif step == "sn_close":
            systems.sn_close(conv.document)
        else:
            raise AssertionError(f"unknown step {step!r}")
    assert conv is not None
    return bridge, conv


def outcomes(bridge: Bridge, conv: Conversation) -> tuple[str | None, str | None, str | None]:
    """(Salesforce's outcome, ServiceNow's, the ledger's state)."""
    corr = bridge.correlation_of(conv)
    return (
        bridge.systems.sf_outcome(conv),
        bridge.systems.sn_outcome(conv),
        corr.state.value if corr else None,
    )


SEQUENCES = [
    # --- Salesforce → ServiceNow ------------------------------------------------------
    pytest.param(
        ["start_sf", "read", "sn_accept", "read", "sf_accept", "read", "sf_close", "read"],
        "closed",
        id="sf2sn-accepted-then-closed-in-order",
    ),
    pytest.param(
        ["start_sf", "read", "sn_accept", "read", "sf_accept", "sf_close", "catch_up"],
        "closed",
        # issue 15 §3 (fails on 861ad08: read as sf2sn.customer-abandoned, the interaction
        # closed as abandoned although the AgentWork carries AcceptDateTime)
        id="sf2sn-accepted-and-closed-while-down",
    ),
    pytest.param(
        # REST-made AgentWork cannot be closed over REST: Salesforce ends when its agent does
        [
            "start_sf",
            "read",
            "sn_accept",
            "read",
            "sf_accept",
            "read",
            "sn_close",
            "read",
            "sf_close",
            "read",
        ],
        "closed",
        id="sf2sn-accepted-then-closed-in-servicenow",
    ),
    pytest.param(
        [
            "start_sf",
            "read",
            "sn_accept",
            "read",
            "sf_decline",
            "read:agent_work",
            "again:awa_work_item:0",
            "read",
            "sn_accept",
            "read",
            "sf_accept",
            "read",
            "sf_close",
            "read",
        ],
        "closed",
        # issue 15 §3 (found by the property test; fails before the fix: the second copy
        # is taken as a new acceptance, sf2sn.awa-accepted, a second create_agent_work)
        id="sf2sn-second-copy-of-the-awa-acceptance-after-the-salesforce-decline",
    ),
    pytest.param(
        ["start_sf", "read", "customer_leaves", "read"],
        "abandoned",
        id="sf2sn-customer-leaves-while-offered",
    ),
    pytest.param(
        ["start_sf", "read", "sn_accept", "read", "customer_leaves", "catch_up"],
        "abandoned",
        id="sf2sn-customer-leaves-before-the-salesforce-agent-accepts",
    ),
    # --- ServiceNow → Salesforce ------------------------------------------------------
    pytest.param(
        ["start_sn", "read", "omni_push", "read", "sf_accept", "read", "sf_close", "read"],
        "closed",
        id="sn2sf-accepted-then-closed-in-order",
    ),
    pytest.param(
        ["start_sn", "read", "omni_push", "sf_accept", "catch_up", "sf_close", "read"],
        "closed",
        # issue 15 §3 (fails on 861ad08: Opened in state routing ignored by
        # sn2sf.agent-work-opened-ignored; the conversation stays routing, AWA never learns
        # who has the work, and the close is ignored too)
        id="sn2sf-assigned-and-opened-between-two-reads",
    ),
    pytest.param(
        [
            "start_sn",
            "read",
            "omni_push",
            "read",
            "sf_accept",
            "customer_leaves",
            "read:work_item",
            "read",
        ],
        "closed",
        # issue 15 §3 (found by the property test; failed while the model left OwnerId out
        # of the ended work item: read as sn2sf.sf-work-item-ended, abandoned)
        id="sn2sf-session-end-read-before-the-acceptance",
    ),
    pytest.param(
        [
            "start_sn",
            "read",
            "omni_push",
            "sf_decline",
            "omni_push:bob",
            "read",
            "sf_accept",
            "sf_close",
            "again:agent_work:0",
            "read",
        ],
        "closed",
        # issue 15 §3 (found by the property test; fails before the fix: Alice's Declined
        # applied to Bob's assignment; see also test_engine_skipped COPIES)
        id="sn2sf-second-copy-of-an-earlier-decline-while-another-agent-has-it",
    ),
    pytest.param(
        ["start_sn", "read", "omni_push", "read", "sf_decline", "read", "customer_leaves", "read"],
        "abandoned",
        id="sn2sf-declined-then-customer-leaves",
    ),
]


@pytest.mark.parametrize(("steps", "outcome"), SEQUENCES)
def test_sequence_ends_with_the_outcome_both_systems_show(steps: list[str], outcome: str) -> None:
    bridge, conv = run(steps)
    bridge.check_live_agents()
    assert outcomes(bridge, conv) == (outcome, outcome, outcome)
