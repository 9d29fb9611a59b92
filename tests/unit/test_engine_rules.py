"""Every rule of the default rules.yaml, exercised through engine.translate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from engine_builders import (
    ALICE,
    AW_BOB,
    AW_SN,
    AWI_SN,
    BILLING,
    BOB,
    DOC,
    OVERFLOW,
    PSR_SN,
    PSR_TRANSFER,
    SEG_2,
    SUPPORT,
    WI,
    WI_SN,
    agent_work,
    awa,
    event,
    interaction,
    psr,
    psr_deleted,
    reconciled,
    sf2sn,
    sf_work_item,
    sn2sf,
    with_data,
)

from bridge.domain import Correlation, CorrelationState, Event, EventKind
from bridge.domain.mapping import Tables, load_tables
from bridge.engine import translate
from bridge_sandbox.salesforce.ids import make_id

S = CorrelationState
# a second AgentWork of the ServiceNow-started conversation (another assignment)
AW_SN_2 = make_id("0Bz", 4)
# the work item AWA made when the agent transferred inside AWA
AWI_2 = "2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e"


class Case(NamedTuple):
    rule: str
    before: Callable[[], Correlation] | None
    event: Event
    ops: list[str]
    state: str | None  # the correlation state after; None = no correlation
    outcome: str = "processed"


def sn_awa(state: str, **kw: Any) -> Event:
    defaults: dict[str, Any] = {
        "sys_id": AWI_SN,
        "queue": OVERFLOW.sn_queue_sys_id,
        "document_id": DOC,
        "segment": "",
    }
    return awa(state, **{**defaults, **kw})


def sn_aw(status: str) -> Event:
    return agent_work(status, aw_id=AW_SN, work_item=WI_SN, psr_id=PSR_SN)


def sn_psr() -> Event:
    return psr(psr_id=PSR_SN, queue=OVERFLOW.sf_queue_id, work_item=WI_SN)


def at(factory: Callable[[CorrelationState], Correlation], state: S) -> Callable[[], Correlation]:
    return lambda: factory(state)


def owned_ended(owner: str, work_item: str = WI) -> Event:
    """An ended Salesforce work item and its owner (the accepting agent, else the queue)."""
    return event(EventKind.WORK_ITEM, {"Id": work_item, "Status": "Ended", "OwnerId": owner})


def bob_aw(status: str) -> Event:
    return agent_work(status, aw_id=AW_BOB, user=BOB.sf_user_id)


billing_transfer = psr(psr_id=PSR_TRANSFER, queue=BILLING.sf_queue_id, transfer=True)

CASES = [
    # ---------------------------------------------------------------- sf_to_sn
    Case("sf2sn.psr-created", None, psr(), ["create_interaction", "offer"], "offered"),
    Case("sf2sn.psr-created", None, psr(transfer=True), ["create_interaction", "offer"], "offered"),
    Case("sf2sn.psr-seen-again", at(sf2sn, S.OFFERED), psr(), [], "offered"),
    Case(
        "sf2sn.psr-transfer-to-queue",
        at(sf2sn, S.ACTIVE),
        billing_transfer,
        ["transfer", "offer"],  # AWA queue transfer to Billing, then the offer there
        "offered",
    ),
    Case("sf2sn.psr-transfer-ignored", at(sf2sn, S.OFFERED), billing_transfer, [], "offered"),
    Case(
        "sf2sn.psr-pushed",
        at(sf2sn, S.ASSIGNING),
        psr(pushed=True, serial=1),
        [],
        "assigning",
        "echo",
    ),
    Case(
        "sf2sn.psr-requeued",
        at(sf2sn, S.ASSIGNING),
        psr(serial=2, declined="0Xd5g0000000001"),
        [],
        "assigning",
    ),
    Case("sf2sn.psr-unknown", None, psr(pushed=True), [], None, "skipped"),
    Case("sf2sn.psr-deleted-accepted", at(sf2sn, S.ACTIVE), psr_deleted(), [], "active"),
    Case(
        "sf2sn.psr-deleted-while-offered",
        at(sf2sn, S.OFFERED),
        psr_deleted(),
        ["close_interaction"],
        "abandoned",
    ),
    Case(
        "sf2sn.agent-work-assigned-transfer",
        at(sf2sn, S.ACTIVE),
        bob_aw("Assigned"),
        [],  # AWA follows when Bob accepts
        "transferring",
    ),
    Case(
        "sf2sn.agent-work-assigned-ignored", at(sf2sn, S.OFFERED), bob_aw("Assigned"), [], "offered"
    ),
    Case("sf2sn.agent-work-opened", at(sf2sn, S.ASSIGNING), agent_work("Opened"), [], "active"),
    Case(
        "sf2sn.agent-work-opened-transfer",
        at(sf2sn, S.TRANSFERRING),
        bob_aw("Opened"),
        ["transfer"],
        "active",
    ),
    Case("sf2sn.agent-work-opened-again", at(sf2sn, S.ACTIVE), agent_work("Opened"), [], "active"),
    Case(
        "sf2sn.agent-work-declined",
        at(sf2sn, S.ASSIGNING),
        agent_work("Declined"),
        ["transfer"],
        "offered",
    ),
    Case(
        "sf2sn.agent-work-declined",
        at(sf2sn, S.ASSIGNING),
        agent_work("Unavailable"),
        ["transfer"],
        "offered",
    ),
    Case(
        "sf2sn.agent-work-push-timeout",
        at(sf2sn, S.ASSIGNING),
        agent_work("DeclinedOnPushTimeout"),
        ["transfer"],
        "offered",
    ),
    Case(
        "sf2sn.agent-work-transfer-declined",
        at(sf2sn, S.TRANSFERRING),
        bob_aw("Declined"),
        [],
        "active",
    ),
    Case(
        "sf2sn.agent-work-declined-ignored", at(sf2sn, S.ACTIVE), bob_aw("Declined"), [], "active"
    ),
    Case(
        "sf2sn.agent-work-closed",
        at(sf2sn, S.ACTIVE),
        agent_work("Closed"),
        ["close_interaction"],
        "closed",
    ),
    Case(
        "sf2sn.agent-work-closed-ignored", at(sf2sn, S.CLOSED), agent_work("Closed"), [], "closed"
    ),
    Case(
        "sf2sn.agent-work-canceled",
        at(sf2sn, S.ASSIGNING),
        agent_work("Canceled"),
        ["close_interaction", "delete_psr"],
        "abandoned",
    ),
    Case(
        "sf2sn.agent-work-canceled-ignored", at(sf2sn, S.ACTIVE), bob_aw("Canceled"), [], "active"
    ),
    Case(
        "sf2sn.agent-work-transferred", at(sf2sn, S.ACTIVE), agent_work("Transferred"), [], "active"
    ),
    Case(
        "sf2sn.customer-abandoned",
        at(sf2sn, S.OFFERED),
        sf_work_item("Ended"),
        ["close_interaction", "delete_psr"],
        "abandoned",
    ),
    Case(
        "sf2sn.work-item-ended",
        at(sf2sn, S.ACTIVE),
        sf_work_item("Ended"),
        ["close_interaction"],
        "closed",
    ),
    Case("sf2sn.work-item-other", at(sf2sn, S.CLOSED), sf_work_item("Ended"), [], "closed"),
    Case(
        "sf2sn.work-item-ended-accepted",
        at(sf2sn, S.ASSIGNING),
        owned_ended(ALICE.sf_user_id),
        ["close_interaction"],
        "closed",
    ),
    Case(
        "sf2sn.customer-abandoned",
        at(sf2sn, S.ASSIGNING),
        owned_ended(SUPPORT.sf_queue_id),
        ["close_interaction", "delete_psr"],
        "abandoned",
    ),
    # the agent the bridge assigned accepted and transferred before the Opened was read
    Case(
        "sf2sn.psr-transfer-to-queue",
        at(sf2sn, S.ASSIGNING),
        billing_transfer,
        ["transfer", "offer"],  # AWA queue transfer to Billing, then the offer there
        "offered",
    ),
    Case("sf2sn.work-item-open", at(sf2sn, S.OFFERED), sf_work_item("Waiting"), [], "offered"),
    Case("sf2sn.awa-not-ours", None, awa("queued"), [], None, "skipped"),
    Case("sf2sn.awa-quiet", at(sf2sn, S.OFFERED), awa("queued"), [], "offered"),
    Case(
        "sf2sn.awa-rejected",
        at(sf2sn, S.OFFERED),
        awa("queued", rejected=True),
        ["offer"],
        "offered",
    ),
    Case(
        "sf2sn.awa-rejected",
        at(sf2sn, S.OFFERED),
        awa("canceled", active=False, cancel_reason="transfer_rejected"),
        ["offer"],
        "offered",
    ),
    Case(
        "sf2sn.awa-timed-out",
        at(sf2sn, S.OFFERED),
        awa("queued", timed_out=True),
        ["offer"],
        "offered",
    ),
    Case(
        "sf2sn.awa-transfer-rejected-after-sf-transfer",
        at(sf2sn, S.TRANSFERRING),
        awa("canceled", active=False, cancel_reason="transfer_rejected", segment=SEG_2),
        [],
        "active",
    ),
    Case("sf2sn.awa-late-flags", at(sf2sn, S.ACTIVE), awa("queued", rejected=True), [], "active"),
    Case(
        "sf2sn.awa-rejected-during-sf-transfer",
        at(sf2sn, S.TRANSFERRING),
        awa("queued", rejected=True, segment=SEG_2),
        [],
        "transferring",
    ),
    Case(
        "sf2sn.awa-accepted",
        at(sf2sn, S.OFFERED),
        awa("accepted", assigned_to=ALICE.sn_user_sys_id),
        ["create_agent_work"],
        "assigning",
    ),
    Case(
        "sf2sn.awa-accepted-again",
        at(sf2sn, S.ASSIGNING),
        awa("accepted", assigned_to=ALICE.sn_user_sys_id),
        [],
        "assigning",
    ),
    Case(
        "sf2sn.awa-accepted",
        at(sf2sn, S.OFFERED),
        awa("accepted", assigned_to=BOB.sn_user_sys_id),
        ["create_agent_work"],
        "assigning",
    ),
    Case(
        "sf2sn.awa-accepted-elsewhere",
        at(sf2sn, S.ASSIGNING),
        awa("accepted", sys_id=AWI_2, assigned_to=BOB.sn_user_sys_id, segment=""),
        ["update_agent_work", "create_agent_work"],
        "assigning",
    ),
    Case(
        "sf2sn.awa-accepted-elsewhere-late",
        at(sf2sn, S.ACTIVE),
        awa("accepted", sys_id=AWI_2, assigned_to=BOB.sn_user_sys_id, segment=""),
        [],
        "active",
    ),
    Case(
        "sf2sn.interaction-progress",
        at(sf2sn, S.ACTIVE),
        interaction("work_in_progress"),
        [],
        "active",
    ),
    Case(
        "sf2sn.interaction-closed",
        at(sf2sn, S.ACTIVE),
        interaction("closed_complete"),
        [],
        "closed",
    ),
    Case(
        "sf2sn.interaction-abandoned",
        at(sf2sn, S.ACTIVE),
        interaction("closed_abandoned"),
        [],
        "abandoned",
    ),
    Case(
        "sf2sn.interaction-closed-early",
        at(sf2sn, S.OFFERED),
        interaction("closed_complete"),
        [],
        "closed",
    ),
    Case(
        "sf2sn.interaction-closed-again",
        at(sf2sn, S.ABANDONED),
        interaction("closed_abandoned"),
        [],
        "abandoned",
    ),
    # ---------------------------------------------------------------- sn_to_sf
    Case("sn2sf.work-item-queued", None, sn_awa("queued"), ["route"], "routing"),
    Case("sn2sf.awa-not-ours", None, sn_awa("accepted"), [], None, "skipped"),
    Case("sn2sf.awa-quiet", at(sn2sf, S.ROUTING), sn_awa("queued"), [], "routing"),
    Case(
        "sn2sf.awa-canceled",
        at(sn2sf, S.ROUTING),
        sn_awa("canceled", active=False, cancel_reason="timeout"),
        ["cancel_route"],
        "abandoned",
    ),
    Case(
        "sn2sf.awa-canceled-late",
        at(sn2sf, S.ACTIVE),
        sn_awa("canceled", active=False, cancel_reason="disqualified"),
        [],
        "active",
    ),
    Case("sn2sf.psr-own", None, sn_psr(), [], None, "skipped"),
    Case("sn2sf.psr-quiet", at(sn2sf, S.ROUTING), sn_psr(), [], "routing"),
    Case("sn2sf.agent-work-assigned", at(sn2sf, S.ROUTING), sn_aw("Assigned"), [], "assigned"),
    Case(
        "sn2sf.agent-work-assigned-ignored",
        at(sn2sf, S.ACTIVE),
        agent_work("Assigned", aw_id=AW_SN_2, user=BOB.sf_user_id, work_item=WI_SN, psr_id=PSR_SN),
        [],
        "active",
    ),
    Case("sn2sf.agent-work-opened", at(sn2sf, S.ASSIGNED), sn_aw("Opened"), ["offer"], "active"),
    Case("sn2sf.agent-work-opened-ignored", at(sn2sf, S.ACTIVE), sn_aw("Opened"), [], "active"),
    # first read Opened: Assigned, then Opened (Omni-Channel auto-accept, a fast agent)
    Case("sn2sf.agent-work-opened", at(sn2sf, S.ROUTING), sn_aw("Opened"), ["offer"], "active"),
    Case("sn2sf.agent-work-declined", at(sn2sf, S.ASSIGNED), sn_aw("Declined"), [], "routing"),
    Case(
        "sn2sf.agent-work-push-timeout",
        at(sn2sf, S.ASSIGNED),
        sn_aw("DeclinedOnPushTimeout"),
        [],
        "routing",
    ),
    Case("sn2sf.agent-work-other", at(sn2sf, S.ACTIVE), sn_aw("Transferred"), [], "active"),
    Case(
        "sn2sf.agent-work-transferred-assigned",
        lambda: with_data(
            sn2sf(S.ASSIGNED),
            agent_work={AW_SN: {"user": ALICE.sf_user_id, "status": "Transferred"}},
        ),
        sn_aw("Transferred"),
        [],
        "assigned",
    ),
    # first read Transferred: it was Opened (accepted) first
    Case(
        "sn2sf.agent-work-other", at(sn2sf, S.ASSIGNED), sn_aw("Transferred"), ["offer"], "active"
    ),
    Case(
        "sn2sf.agent-work-closed",
        at(sn2sf, S.ACTIVE),
        sn_aw("Closed"),
        ["close_interaction"],
        "closed",
    ),
    Case("sn2sf.agent-work-closed-ignored", at(sn2sf, S.CLOSED), sn_aw("Closed"), [], "closed"),
    # first read Closed: Assigned, Opened, then Closed
    Case(
        "sn2sf.agent-work-closed",
        at(sn2sf, S.ROUTING),
        sn_aw("Closed"),
        ["offer", "close_interaction"],
        "closed",
    ),
    Case(
        "sn2sf.sf-work-item-ended",
        at(sn2sf, S.ROUTING),
        sf_work_item("Ended", WI_SN),
        ["close_interaction"],
        "abandoned",
    ),
    Case(
        "sn2sf.sf-work-item-ended-active",
        at(sn2sf, S.ACTIVE),
        sf_work_item("Ended", WI_SN),
        ["close_interaction"],
        "closed",
    ),
    Case(
        "sn2sf.sf-work-item-ended-accepted",
        at(sn2sf, S.ASSIGNED),
        owned_ended(ALICE.sf_user_id, WI_SN),
        ["close_interaction"],
        "closed",
    ),
    Case(
        "sn2sf.sf-work-item-other",
        at(sn2sf, S.CLOSED),
        sf_work_item("Waiting", WI_SN),
        [],
        "closed",
    ),
    Case(
        "sn2sf.sf-work-item-open",
        at(sn2sf, S.ASSIGNED),
        sf_work_item("Active", WI_SN),
        [],
        "assigned",
    ),
    Case(
        "sn2sf.interaction-progress",
        at(sn2sf, S.ACTIVE),
        interaction("work_in_progress", DOC),
        [],
        "active",
    ),
    Case(
        "sn2sf.interaction-closed-before-accept",
        at(sn2sf, S.ASSIGNED),
        interaction("closed_complete", DOC),
        ["cancel_route"],
        "abandoned",
    ),
    Case(
        "sn2sf.interaction-closed-after-accept",
        at(sn2sf, S.ACTIVE),
        interaction("closed_complete", DOC),
        ["update_agent_work"],
        "closed",
    ),
    Case(
        "sn2sf.interaction-closed-again",
        at(sn2sf, S.CLOSED),
        interaction("closed_abandoned", DOC),
        [],
        "closed",
    ),
    # ------------------------------------------------- left behind (read by a reconciler)
    Case(
        "sf2sn.psr-orphaned", at(sf2sn, S.ABANDONED), reconciled(psr()), ["delete_psr"], "abandoned"
    ),
    Case(
        "sn2sf.psr-orphaned", at(sn2sf, S.CLOSED), reconciled(sn_psr()), ["cancel_route"], "closed"
    ),
    Case(
        "sf2sn.agent-work-still-assigned",
        at(sf2sn, S.CLOSED),
        reconciled(agent_work("Assigned")),
        ["update_agent_work"],
        "closed",
    ),
    Case(
        "sn2sf.agent-work-still-assigned",
        at(sn2sf, S.ABANDONED),
        reconciled(sn_aw("Assigned")),
        ["update_agent_work"],
        "abandoned",
    ),
    Case(
        "sf2sn.awa-still-pending",
        at(sf2sn, S.ABANDONED),
        reconciled(awa("pending_accept")),
        ["cancel_work_item"],
        "abandoned",
    ),
    Case(
        "sn2sf.awa-still-pending",
        at(sn2sf, S.CLOSED),
        reconciled(sn_awa("queued")),
        ["cancel_work_item"],
        "closed",
    ),
]


@pytest.fixture(scope="module")
def tables() -> Tables:
    return load_tables()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}:{c.event.record}"[:90] for c in CASES])
def test_rule(case: Case, tables: Tables) -> None:
    before = case.before() if case.before else None
    decision = translate(case.event, before, tables)
    assert decision.rule_id == case.rule, decision.reason
    assert decision.outcome == case.outcome
    assert [c.operation.value for c in decision.commands] == case.ops
    if case.state is None:
        assert decision.correlation is None
    else:
        assert decision.correlation is not None
        assert decision.correlation.state == case.state


def test_every_rule_has_a_case(tables: Tables) -> None:
    covered = {c.rule for c in CASES}
    assert [r.id for r in tables.rules if r.id not in covered] == []
