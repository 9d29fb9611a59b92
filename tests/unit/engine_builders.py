"""Events and correlations for the engine's tables of cases, named after the seed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bridge.domain import (
    Correlation,
    CorrelationState,
    Direction,
    Event,
    EventKind,
    Segment,
    SegmentKind,
    SegmentOutcome,
    System,
)
from bridge.domain.conversation import ConversationData, dump_data, load_data
from bridge.engine import derived_id, interaction_sys_id
from bridge_sandbox import seed
from bridge_sandbox.salesforce.ids import make_id

AT = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)

ALICE, BOB, CAROL, DAN = seed.AGENTS
SUPPORT, BILLING, OVERFLOW = seed.QUEUES
MESSAGING = seed.CHANNELS[0]

# sf_to_sn conversation
WI = make_id("0Mw", 1)
PSR = make_id("0JR", 1)
PSR_TRANSFER = make_id("0JR", 2)
AW_ALICE = make_id("0Bz", 1)
AW_BOB = make_id("0Bz", 2)
SF2SN_ID = derived_id("sf", "psr", PSR)
INTERACTION = interaction_sys_id(SF2SN_ID)
AWI_1 = seed.sys_id("awa_work_item:1")
AWI_OLD = seed.sys_id("awa_work_item:old")
SEG_1 = derived_id("segment", SF2SN_ID, "1")
SEG_2 = derived_id("segment", SF2SN_ID, "2")

# sn_to_sf conversation
DOC = seed.sys_id("interaction:sn-1")
AWI_SN = seed.sys_id("awa_work_item:sn-1")
WI_SN = make_id("0Mw", 2)
PSR_SN = make_id("0JR", 3)
AW_SN = make_id("0Bz", 3)
SN2SF_ID = derived_id("sn", "document", DOC)
SN_SEG_1 = derived_id("segment", SN2SF_ID, "1")


def data_with(corr: Correlation, **changes: Any) -> ConversationData:
    """The correlation's data with some entries replaced, written as the stored JSON."""
    return load_data({**dump_data(corr.data), **changes})


def with_data(corr: Correlation, **changes: Any) -> Correlation:
    return replace(corr, data=data_with(corr, **changes))


def event(kind: EventKind, record: dict[str, Any], event_id: str = "e1") -> Event:
    source = (
        System.SERVICENOW
        if kind in (EventKind.AWA_WORK_ITEM, EventKind.INTERACTION)
        else System.SALESFORCE
    )
    return Event(source, kind, event_id, AT, record)


def reconciled(ev: Event) -> Event:
    """The record as a reconciler read and fed it."""
    return replace(ev, source_event_id=f"reconcile:{ev.source_event_id}", from_reconciler=True)


def psr(
    *,
    psr_id: str = PSR,
    queue: str = SUPPORT.sf_queue_id,
    work_item: str = WI,
    pushed: bool = False,
    transfer: bool = False,
    serial: int = 0,
    declined: str | None = None,
    channel: str = MESSAGING.sf_service_channel_id,
) -> Event:
    return event(
        EventKind.PSR,
        {
            "Id": psr_id,
            "WorkItemId": work_item,
            "QueueId": queue,
            "ServiceChannelId": channel,
            "IsPushed": pushed,
            "IsTransfer": transfer,
            "IsReadyForRouting": True,
            "Serial": serial,
            "LastDeclinedAgentSession": declined,
            "PushTimeout": 30,
            "RoutingModel": "ExternalRouting",
            "RoutingType": "QueueBased",
        },
    )


def psr_deleted(psr_id: str = PSR) -> Event:
    return event(EventKind.PSR_DELETED, {"Id": psr_id})


def agent_work(
    status: str | int,
    *,
    aw_id: str = AW_ALICE,
    user: str = ALICE.sf_user_id,
    work_item: str = WI,
    psr_id: str = PSR,
) -> Event:
    return event(
        EventKind.AGENT_WORK,
        {
            "Id": aw_id,
            "UserId": user,
            "WorkItemId": work_item,
            "PendingServiceRoutingId": psr_id,
            "ServiceChannelId": MESSAGING.sf_service_channel_id,
            "Status": status,
        },
    )


def sf_work_item(status: str, work_item: str = WI) -> Event:
    return event(EventKind.WORK_ITEM, {"Id": work_item, "Status": status})


def awa(
    state: str,
    *,
    sys_id: str = AWI_1,
    active: bool = True,
    rejected: bool = False,
    timed_out: bool = False,
    cancel_reason: str = "",
    queue: str = SUPPORT.sn_queue_sys_id,
    document_id: str = INTERACTION,
    assigned_to: str = "",
    segment: str = SEG_1,
) -> Event:
    return event(
        EventKind.AWA_WORK_ITEM,
        {
            "sys_id": sys_id,
            "state": state,
            "active": str(active).lower(),
            "rejected": str(rejected).lower(),
            "timed_out": str(timed_out).lower(),
            "cancel_reason": cancel_reason,
            "queue": queue,
            "document_table": "interaction",
            "document_id": document_id,
            "assigned_to": assigned_to,
            "external_segment_id": segment,
        },
    )


def interaction(state: str, sys_id: str = INTERACTION) -> Event:
    return event(
        EventKind.INTERACTION,
        {"sys_id": sys_id, "state": state, "correlation_id": WI, "active": "true"},
    )


def _segment(seq: int, corr_id: str, kind: SegmentKind, **cols: Any) -> Segment:
    return Segment(
        seq=seq,
        external_segment_id=derived_id("segment", corr_id, str(seq)),
        kind=kind,
        opened_at=AT,
        **cols,
    )


def sf2sn(state: CorrelationState) -> Correlation:
    """A Salesforce-started conversation in ``state``, offered first to Alice."""
    seg = _segment(
        1,
        SF2SN_ID,
        SegmentKind.OFFER,
        sf_queue_id=SUPPORT.sf_queue_id,
        sn_queue_sys_id=SUPPORT.sn_queue_sys_id,
        sn_user_sys_id=ALICE.sn_user_sys_id,
        sn_work_item_sys_id=AWI_1,
        sf_psr_id=PSR,
    )
    base = Correlation(
        id=SF2SN_ID,
        direction=Direction.SF_TO_SN,
        state=state,
        sf_work_item_id=WI,
        sf_psr_id=PSR,
        sf_queue_id=SUPPORT.sf_queue_id,
        sf_service_channel_id=MESSAGING.sf_service_channel_id,
        sn_document_table="interaction",
        sn_document_sys_id=INTERACTION,
        sn_work_item_sys_id=AWI_1,
        sn_queue_sys_id=SUPPORT.sn_queue_sys_id,
        sn_user_sys_id=ALICE.sn_user_sys_id,
        data=load_data(
            {
                "push_timeout": 30,
                "work_items": {
                    AWI_1: {"user": ALICE.sn_user_sys_id, "state": "pending_accept", "active": True}
                },
                "expect": [
                    f"interaction:{INTERACTION}:on_hold",
                    f"awa_work_item:{SEG_1}:pending_accept",
                ],
            }
        ),
        segments=(seg,),
    )
    if state is CorrelationState.OFFERED:
        return base
    accepted_items = {AWI_1: {"user": ALICE.sn_user_sys_id, "state": "accepted", "active": True}}
    assigned = {AW_ALICE: {"user": ALICE.sf_user_id, "status": "Assigned", "own": True}}
    if state is CorrelationState.ASSIGNING:
        return replace(
            base,
            sf_agent_work_id=AW_ALICE,
            data=data_with(base, work_items=accepted_items, agent_work=assigned),
            segments=(replace(seg, sf_user_id=ALICE.sf_user_id, sf_agent_work_id=AW_ALICE),),
        )
    opened = {AW_ALICE: {"user": ALICE.sf_user_id, "status": "Opened", "own": True}}
    accepted = replace(
        seg,
        sf_user_id=ALICE.sf_user_id,
        sf_agent_work_id=AW_ALICE,
        outcome=SegmentOutcome.ACCEPTED,
    )
    active = replace(
        base,
        sf_agent_work_id=AW_ALICE,
        sf_user_id=ALICE.sf_user_id,
        data=data_with(base, work_items=accepted_items, agent_work=opened),
        segments=(accepted,),
    )
    if state is CorrelationState.ACTIVE:
        return active
    if state is CorrelationState.TRANSFERRING:
        transfer = _segment(
            2,
            SF2SN_ID,
            SegmentKind.TRANSFER,
            sf_queue_id=SUPPORT.sf_queue_id,
            sn_queue_sys_id=SUPPORT.sn_queue_sys_id,
            sf_user_id=BOB.sf_user_id,
            sn_user_sys_id=BOB.sn_user_sys_id,
        )
        return replace(
            active,
            state=state,
            segments=(
                replace(accepted, outcome=SegmentOutcome.TRANSFERRED, closed_at=AT),
                transfer,
            ),
        )
    return replace(active, state=state)


def sn2sf(state: CorrelationState) -> Correlation:
    """A ServiceNow-started conversation routed into Salesforce, in ``state``."""
    base = Correlation(
        id=SN2SF_ID,
        direction=Direction.SN_TO_SF,
        state=state,
        sf_work_item_id=WI_SN,
        sf_psr_id=PSR_SN,
        sf_conversation_id=DOC,
        sf_queue_id=OVERFLOW.sf_queue_id,
        sn_document_table="interaction",
        sn_document_sys_id=DOC,
        sn_work_item_sys_id=AWI_SN,
        sn_queue_sys_id=OVERFLOW.sn_queue_sys_id,
        data=load_data({"work_items": {AWI_SN: {"user": None, "state": "queued", "active": True}}}),
    )
    if state is CorrelationState.ROUTING:
        return base
    seg = _segment(
        1,
        SN2SF_ID,
        SegmentKind.ROUTE,
        sf_queue_id=OVERFLOW.sf_queue_id,
        sn_queue_sys_id=OVERFLOW.sn_queue_sys_id,
        sf_user_id=ALICE.sf_user_id,
        sn_user_sys_id=ALICE.sn_user_sys_id,
        sf_agent_work_id=AW_SN,
        sf_psr_id=PSR_SN,
    )
    assigned = {AW_SN: {"user": ALICE.sf_user_id, "status": "Assigned", "own": False}}
    if state is CorrelationState.ASSIGNED:
        return replace(base, data=data_with(base, agent_work=assigned), segments=(seg,))
    opened = {AW_SN: {"user": ALICE.sf_user_id, "status": "Opened", "own": False}}
    return replace(
        base,
        sf_agent_work_id=AW_SN,
        sf_user_id=ALICE.sf_user_id,
        sn_user_sys_id=ALICE.sn_user_sys_id,
        data=data_with(base, agent_work=opened),
        segments=(replace(seg, outcome=SegmentOutcome.ACCEPTED),),
    )
