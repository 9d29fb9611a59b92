"""Transfers through engine.translate: which AWA calls each makes, on which queue, to whom.

Issue 15, defects 1 and 2: a transfer to another queue lands on that queue in AWA (queue
transfer, then the bridge's offer there), never back to the agent who transferred it away;
a transfer to an agent in Salesforce hands the AWA work item over when the new agent
accepts (auto-assigned), and leaves AWA alone when they decline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from engine_builders import (
    ALICE,
    AT,
    AW_BOB,
    AWI_1,
    BILLING,
    BOB,
    CAROL,
    DAN,
    PSR_TRANSFER,
    SEG_2,
    SF2SN_ID,
    SUPPORT,
    agent_work,
    awa,
    psr,
    sf2sn,
    with_data,
)

from bridge.domain import (
    Correlation,
    CorrelationState,
    Event,
    EventOutcome,
    Segment,
    SegmentKind,
    SegmentOutcome,
)
from bridge.domain.mapping import Tables, load_tables
from bridge.engine import derived_id, translate

S = CorrelationState
SEG_3 = derived_id("segment", SF2SN_ID, "3")
ASSIGNMENT = {"timeout": 30, "allowed_to_decline": True, "display_option": "card_and_tab"}


@pytest.fixture(scope="module")
def tables() -> Tables:
    return load_tables()


def bob_aw(status: str) -> Event:
    return agent_work(status, aw_id=AW_BOB, user=BOB.sf_user_id, psr_id="")


def transfer_psr(queue: str) -> Event:
    return psr(psr_id=PSR_TRANSFER, queue=queue, transfer=True)


def transferring_before_accept() -> Correlation:
    """Alice holds the work; Salesforce offered it to Bob (second AgentWork Assigned)."""
    corr = sf2sn(S.ACTIVE)
    (held,) = corr.segments
    pending = Segment(
        seq=2,
        external_segment_id=SEG_2,
        kind=SegmentKind.TRANSFER,
        opened_at=AT,
        sf_queue_id=SUPPORT.sf_queue_id,
        sn_queue_sys_id=SUPPORT.sn_queue_sys_id,
        sf_psr_id=corr.sf_psr_id,
    )
    closed = replace(held, outcome=SegmentOutcome.TRANSFERRED, closed_at=AT)
    return replace(corr, state=S.TRANSFERRING, segments=(closed, pending))


def offered_after_transfer_to_billing() -> Correlation:
    """Alice transferred to Billing; the bridge's offer there went to Bob."""
    corr = sf2sn(S.ACTIVE)
    (held,) = corr.segments
    on_billing = Segment(
        seq=2,
        external_segment_id=SEG_2,
        kind=SegmentKind.TRANSFER,
        opened_at=AT,
        sf_queue_id=BILLING.sf_queue_id,
        sn_queue_sys_id=BILLING.sn_queue_sys_id,
        sn_user_sys_id=BOB.sn_user_sys_id,
        sn_work_item_sys_id=AWI_1,
        sf_psr_id=PSR_TRANSFER,
    )
    corr = replace(
        corr,
        state=S.OFFERED,
        sf_psr_id=PSR_TRANSFER,
        sf_queue_id=BILLING.sf_queue_id,
        sn_queue_sys_id=BILLING.sn_queue_sys_id,
        segments=(replace(held, outcome=SegmentOutcome.TRANSFERRED, closed_at=AT), on_billing),
    )
    pending = {AWI_1: {"user": BOB.sn_user_sys_id, "state": "pending_accept", "active": True}}
    return with_data(corr, excluded=[ALICE.sn_user_sys_id], work_items=pending)


@dataclass(frozen=True)
class Case:
    name: str
    before: Callable[[], Correlation]
    event: Event
    commands: list[tuple[str, dict[str, Any]]]  # operation and the parameters it must carry
    state: str
    policies: dict[str, Any] = field(default_factory=dict)
    never_to: tuple[str, ...] = ()  # AWA users no command may target
    last_segment: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(
        "transfer to another external queue: AWA queue transfer, then an offer there",
        lambda: sf2sn(S.ACTIVE),
        transfer_psr(BILLING.sf_queue_id),
        [
            (
                "transfer",
                {
                    "target_type": "queue",
                    "target_id": BILLING.sn_queue_sys_id,
                    "source_queue_id": SUPPORT.sn_queue_sys_id,
                    "transfer_type": "blind",
                    "external_segment_id": f"{SEG_2}-queue",
                },
            ),
            (
                "offer",
                {
                    "queue_id": BILLING.sn_queue_sys_id,
                    "external_segment_id": SEG_2,
                    "excluded": [ALICE.sn_user_sys_id],
                    **ASSIGNMENT,
                    "enable_auto_assign": False,
                },
            ),
        ],
        "offered",
        never_to=(ALICE.sn_user_sys_id,),
        last_segment={"sn_queue_sys_id": BILLING.sn_queue_sys_id, "sf_psr_id": PSR_TRANSFER},
    ),
    Case(
        "transfer to the same queue: one blind transfer to someone else of the queue",
        lambda: sf2sn(S.ACTIVE),
        transfer_psr(SUPPORT.sf_queue_id),
        [
            (
                "transfer",
                {
                    "target_type": "agent",
                    "source_queue_id": SUPPORT.sn_queue_sys_id,
                    "excluded": [ALICE.sn_user_sys_id],
                    **ASSIGNMENT,
                    "enable_auto_assign": False,
                },
            )
        ],
        "offered",
        never_to=(ALICE.sn_user_sys_id,),
        last_segment={"sn_queue_sys_id": SUPPORT.sn_queue_sys_id},
    ),
    Case(
        "declined in Omni-Channel: blind transfer with the offer's time-out",
        lambda: sf2sn(S.ASSIGNING),
        agent_work("Declined"),
        [
            (
                "transfer",
                {
                    "target_type": "agent",
                    "source_queue_id": SUPPORT.sn_queue_sys_id,
                    "excluded": [ALICE.sn_user_sys_id],
                    **ASSIGNMENT,
                },
            )
        ],
        "offered",
        never_to=(ALICE.sn_user_sys_id,),
        last_segment={"sn_queue_sys_id": SUPPORT.sn_queue_sys_id},
    ),
    Case(
        "declined past the re-offer limit: to the fallback queue by a queue transfer",
        lambda: sf2sn(S.ASSIGNING),
        agent_work("Declined"),
        [
            (
                "transfer",
                {
                    "target_type": "queue",
                    "target_id": BILLING.sn_queue_sys_id,
                    "source_queue_id": SUPPORT.sn_queue_sys_id,
                },
            ),
            ("offer", {"queue_id": BILLING.sn_queue_sys_id, "excluded": [ALICE.sn_user_sys_id]}),
        ],
        "offered",
        policies={"reoffer_limit": 1},
        never_to=(ALICE.sn_user_sys_id,),
        last_segment={"sn_queue_sys_id": BILLING.sn_queue_sys_id},
    ),
    Case(
        "the offer after a transfer to a queue is rejected: nor to the transferrer",
        offered_after_transfer_to_billing,
        awa("queued", rejected=True, queue=BILLING.sn_queue_sys_id, segment=SEG_2),
        [
            (
                "offer",
                {
                    "queue_id": BILLING.sn_queue_sys_id,
                    "external_segment_id": SEG_3,
                    "excluded": sorted([ALICE.sn_user_sys_id, BOB.sn_user_sys_id]),
                },
            )
        ],
        "offered",
        never_to=(ALICE.sn_user_sys_id, BOB.sn_user_sys_id),
        last_segment={"sn_queue_sys_id": BILLING.sn_queue_sys_id},
    ),
    Case(
        "Salesforce offers the work to another agent: AWA keeps it with the holder",
        lambda: sf2sn(S.ACTIVE),
        bob_aw("Assigned"),
        [],
        "transferring",
        last_segment={"kind": SegmentKind.TRANSFER, "outcome": None},
    ),
    Case(
        "the new agent accepts in Salesforce: AWA hands the work item over, accepted",
        transferring_before_accept,
        bob_aw("Opened"),
        [
            (
                "transfer",
                {
                    "target_type": "agent",
                    "candidates": [BOB.sn_user_sys_id],
                    "source_queue_id": SUPPORT.sn_queue_sys_id,
                    "external_segment_id": SEG_2,
                    "enable_auto_assign": True,
                    "timeout": 30,
                },
            )
        ],
        "active",
        never_to=(ALICE.sn_user_sys_id,),
        last_segment={
            "outcome": SegmentOutcome.ACCEPTED,
            "sf_user_id": BOB.sf_user_id,
            "sn_user_sys_id": BOB.sn_user_sys_id,
            "sf_agent_work_id": AW_BOB,
        },
    ),
    Case(
        "the new agent's AgentWork first read Opened (Assigned never seen): handed over",
        lambda: sf2sn(S.ACTIVE),
        bob_aw("Opened"),
        [
            (
                "transfer",
                {
                    "target_type": "agent",
                    "candidates": [BOB.sn_user_sys_id],
                    "external_segment_id": SEG_2,
                    "enable_auto_assign": True,
                },
            )
        ],
        "active",
        never_to=(ALICE.sn_user_sys_id,),
        last_segment={"outcome": SegmentOutcome.ACCEPTED, "sn_user_sys_id": BOB.sn_user_sys_id},
    ),
    Case(
        "the new agent declines in Salesforce: nothing changes in AWA",
        transferring_before_accept,
        bob_aw("Declined"),
        [],
        "active",
        last_segment={"outcome": SegmentOutcome.DECLINED},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_transfer(case: Case, tables: Tables) -> None:
    if case.policies:
        tables = Tables(
            tables.crosswalk, tables.policies.model_copy(update=case.policies), tables.rules
        )
    decision = translate(case.event, case.before(), tables)
    assert decision.outcome is EventOutcome.PROCESSED, decision.reason
    made = [(c.operation.value, dict(c.params)) for c in decision.commands]
    assert [op for op, _ in made] == [op for op, _ in case.commands]
    for (_, params), (_, wanted) in zip(made, case.commands, strict=True):
        assert {k: params.get(k) for k in wanted} == wanted
        targets = {params.get("target_id"), *(params.get("candidates") or [])}
        assert not targets & set(case.never_to), params
        if params.get("target_type") == "agent" or "candidates" in params:
            assert params.get("candidates") or params.get("target_id")
    corr = decision.correlation
    assert corr is not None
    assert corr.state.value == case.state
    last = corr.segments[-1]
    assert {k: getattr(last, k) for k in case.last_segment} == case.last_segment
    # the conversation names the queue AWA holds the work on
    assert corr.sn_queue_sys_id == last.sn_queue_sys_id


def test_a_transfer_to_a_queue_never_goes_back_to_the_transferrer(tables: Tables) -> None:
    """Everyone else on both queues already declined: an error, not the transferrer."""
    corr = with_data(
        sf2sn(S.ACTIVE), excluded=[BOB.sn_user_sys_id, CAROL.sn_user_sys_id, DAN.sn_user_sys_id]
    )
    decision = translate(transfer_psr(BILLING.sf_queue_id), corr, tables)
    assert decision.outcome is EventOutcome.ERROR
    assert decision.reason is not None
    assert "no agent left to offer to on Billing, Support" in decision.reason


def test_the_transfer_echoes_are_expected(tables: Tables) -> None:
    """The queued work item of a queue transfer is not expected (its time-out would look
    the same); the offer on it and the auto-assigned hand-over are."""
    to_queue = translate(transfer_psr(BILLING.sf_queue_id), sf2sn(S.ACTIVE), tables)
    assert to_queue.correlation is not None
    expect = to_queue.correlation.data.expect
    assert f"awa_work_item:{SEG_2}:pending_accept" in expect
    assert f"awa_work_item:{SEG_2}:queued" not in expect
    handed = translate(bob_aw("Opened"), transferring_before_accept(), tables)
    assert handed.correlation is not None
    assert f"awa_work_item:{SEG_2}:accepted" in handed.correlation.data.expect
