"""What an event means (its trigger) and which ids name its conversation."""

from __future__ import annotations

from bridge.domain import (
    AgentWorkStatus,
    CancelReason,
    Correlation,
    CorrelationState,
    Direction,
    Event,
    EventKind,
    Trigger,
    WorkItemState,
    field_value,
)
from bridge.domain.records import (
    AgentWorkRecord,
    AwaWorkItemRecord,
    PsrDeletedRecord,
    PsrRecord,
    SfWorkItemRecord,
    lenient_sf_id,
)
from bridge.errors import BridgeError

# Salesforce work item statuses that end the conversation (MessagingSession, Case).
SF_WORK_ITEM_ENDED = frozenset({"Ended", "Closed"})

_AGENT_WORK_TRIGGERS = {
    AgentWorkStatus.ASSIGNED: Trigger.AGENT_WORK_ASSIGNED,
    AgentWorkStatus.OPENED: Trigger.AGENT_WORK_OPENED,
    AgentWorkStatus.DECLINED: Trigger.AGENT_WORK_DECLINED,
    AgentWorkStatus.DECLINED_ON_PUSH_TIMEOUT: Trigger.AGENT_WORK_DECLINED_ON_PUSH_TIMEOUT,
    AgentWorkStatus.UNAVAILABLE: Trigger.AGENT_WORK_UNAVAILABLE,
    AgentWorkStatus.CLOSED: Trigger.AGENT_WORK_CLOSED,
    AgentWorkStatus.CANCELED: Trigger.AGENT_WORK_CANCELED,
    AgentWorkStatus.TRANSFERRED: Trigger.AGENT_WORK_TRANSFERRED,
}


def agent_work_trigger(status: AgentWorkStatus) -> Trigger:
    """The trigger of an AgentWork in ``status``."""
    return _AGENT_WORK_TRIGGERS[status]


# Salesforce User ids (an owner that is not a queue).
_USER_PREFIX = "005"

# What a reconciler's read can mean beyond the change it shows: something left behind.
LEFT_BEHIND = frozenset(
    {Trigger.PSR_ORPHANED, Trigger.AGENT_WORK_STILL_ASSIGNED, Trigger.WORK_ITEM_STILL_PENDING}
)


def classify(event: Event, correlation: Correlation | None = None) -> Trigger:
    """What the event means; Permanent / Skippable (naming field and event) for bad input.

    The correlation tells an AWA acceptance by the agent the conversation is with from one
    by somebody else (a transfer inside AWA), and what a reconciler's read left behind.
    """
    record = event.parsed
    if event.from_reconciler and correlation is not None:
        left = _left_behind(event, correlation)
        if left is not None:
            return left
    if isinstance(record, PsrRecord):
        if record.pushed:
            return Trigger.PSR_PUSHED
        if record.last_declined_agent_session or record.serial > 0:
            return Trigger.PSR_REQUEUED
        # A transfer PSR the conversation already routes is seen again, not a new transfer.
        new = correlation is None or correlation.sf_psr_id != record.id
        return Trigger.PSR_CREATED_TRANSFER if record.transfer and new else Trigger.PSR_CREATED
    if isinstance(record, PsrDeletedRecord):
        return Trigger.PSR_DELETED
    if isinstance(record, AgentWorkRecord):
        return _AGENT_WORK_TRIGGERS[record.status]
    if isinstance(record, SfWorkItemRecord):
        if not (record.deleted or record.status in SF_WORK_ITEM_ENDED):
            return Trigger.SF_WORK_ITEM_OPEN
        if _taken_by_agent(event, correlation):
            return Trigger.SF_WORK_ITEM_ENDED_ACCEPTED
        return Trigger.SF_WORK_ITEM_ENDED
    if isinstance(record, AwaWorkItemRecord):
        trigger = _awa_trigger(record)
        if trigger is Trigger.WORK_ITEM_ACCEPTED and _accepted_elsewhere(record, correlation):
            return Trigger.WORK_ITEM_ACCEPTED_ELSEWHERE
        return trigger
    return Trigger(f"interaction.{record.state.value}")


def _taken_by_agent(event: Event, correlation: Correlation | None) -> bool:
    """An ended Salesforce work item owned by the agent who accepted it: the org makes the
    accepting agent the owner (the queue owns it until then), so the work was accepted even
    when no Opened AgentWork was read. Salesforce-started work counts only when the owner
    is the agent the bridge assigned it to (after a transfer the earlier agent may still
    own it)."""
    owner = lenient_sf_id(field_value(event.record, "OwnerId"))
    if correlation is None or owner is None or not owner.startswith(_USER_PREFIX):
        return False
    if correlation.direction is Direction.SN_TO_SF:
        return True
    current = correlation.segments[-1] if correlation.segments else None
    return current is not None and current.sf_user_id == owner


def _accepted_elsewhere(record: AwaWorkItemRecord, correlation: Correlation | None) -> bool:
    """Accepted in AWA by an agent other than the conversation's current one."""
    if correlation is None or correlation.sn_user_sys_id is None:
        return False
    agent = record.assigned_to
    return agent is not None and agent != correlation.sn_user_sys_id


def _awa_trigger(item: AwaWorkItemRecord) -> Trigger:
    if item.state is WorkItemState.CANCELED:
        if item.cancel_reason == CancelReason.TRANSFER_REJECTED:
            return Trigger.WORK_ITEM_TRANSFER_REJECTED
        return Trigger.WORK_ITEM_CANCELED
    if not item.active:
        return Trigger.WORK_ITEM_CLOSED
    if item.state is WorkItemState.QUEUED:
        if item.rejected:
            return Trigger.WORK_ITEM_REJECTED
        if item.timed_out:
            return Trigger.WORK_ITEM_TIMED_OUT
        return Trigger.WORK_ITEM_QUEUED
    if item.state is WorkItemState.PENDING_ACCEPT:
        return Trigger.WORK_ITEM_PENDING_ACCEPT
    return Trigger.WORK_ITEM_ACCEPTED


# --- what a later snapshot shows happened before it ---------------------------------------

# The statuses an AgentWork reaches only once accepted (the org sets AcceptDateTime then).
_ACCEPTED = frozenset({AgentWorkStatus.OPENED, AgentWorkStatus.CLOSED, AgentWorkStatus.TRANSFERRED})


def agent_work_steps(
    event: Event, known: AgentWorkStatus | None
) -> tuple[AgentWorkStatus, ...] | None:
    """The statuses an AgentWork went through since the conversation last saw it
    (``known``), ending with the one the event shows; None when the event shows an
    earlier status than the known one (a stale read).

    A poll reads only the latest status: accepted work (AcceptDateTime set, or a status
    only accepted work reaches) was Assigned, then Opened, whether or not those were read.
    Work never accepted (Declined, DeclinedOnPushTimeout, Unavailable, Canceled) counts
    only for what it is now: an assignment undone before anyone saw it changed nothing.
    """
    record = event.parsed
    assert isinstance(record, AgentWorkRecord)
    status = record.status
    accepted = status in _ACCEPTED or bool(field_value(event.record, "AcceptDateTime"))
    history: tuple[AgentWorkStatus, ...] = ()
    if status is not AgentWorkStatus.ASSIGNED:
        history = (AgentWorkStatus.ASSIGNED,)
        if accepted and status is not AgentWorkStatus.OPENED:
            history = (AgentWorkStatus.ASSIGNED, AgentWorkStatus.OPENED)
    if known is status:
        return (status,)
    if known is None:
        return (*history, status) if accepted else (status,)
    if known not in history:
        return None
    return (*history[history.index(known) + 1 :], status)


# --- what a conversation leaves behind ---------------------------------------------------


def psr_orphaned(state: CorrelationState, current_psr_id: str | None, psr_id: str) -> bool:
    """Ended conversations keep no PSR; an accepted one keeps none of the PSR it was
    accepted from (a newer transfer PSR is a new routing, not an orphan)."""
    if state.is_final:
        return True
    return state is CorrelationState.ACTIVE and current_psr_id == psr_id


def agent_work_stale(
    state: CorrelationState, holder: str | None, user_id: str | None, *, made_by_bridge: bool
) -> bool:
    """An Assigned AgentWork nobody should get: any, once the conversation is over; one
    the bridge made for an agent other than the one holding the accepted conversation (one
    Salesforce made is a transfer the bridge has yet to hear of, and stays)."""
    if state.is_final:
        return True
    return state is CorrelationState.ACTIVE and made_by_bridge and holder != user_id


def work_item_left_pending(state: CorrelationState, item: AwaWorkItemRecord) -> bool:
    """An AWA item still queued or pending accept for a conversation that is over."""
    open_states = (WorkItemState.QUEUED, WorkItemState.PENDING_ACCEPT)
    return state.is_final and item.active and item.state in open_states


def _left_behind(event: Event, corr: Correlation) -> Trigger | None:
    record = event.parsed
    if isinstance(record, PsrRecord) and psr_orphaned(corr.state, corr.sf_psr_id, record.id):
        return Trigger.PSR_ORPHANED
    if isinstance(record, AgentWorkRecord) and record.status is AgentWorkStatus.ASSIGNED:
        seen = corr.data.agent_work.get(record.id)
        own = seen is not None and seen.own
        if agent_work_stale(corr.state, corr.sf_user_id, record.user_id, made_by_bridge=own):
            return Trigger.AGENT_WORK_STILL_ASSIGNED
    if isinstance(record, AwaWorkItemRecord) and work_item_left_pending(corr.state, record):
        return Trigger.WORK_ITEM_STILL_PENDING
    return None


# --- correlation keys --------------------------------------------------------------------

# The fields that name a correlation, per event kind: (field, is a Salesforce id); read
# raw only when the record is too malformed to parse.
_KEY_FIELDS: dict[EventKind, tuple[tuple[str, bool], ...]] = {
    EventKind.PSR: (("Id", True), ("WorkItemId", True)),
    EventKind.PSR_DELETED: (("Id", True),),
    EventKind.AGENT_WORK: (
        ("Id", True),
        ("PendingServiceRoutingId", True),
        ("WorkItemId", True),
    ),
    EventKind.WORK_ITEM: (("Id", True),),
    EventKind.AWA_WORK_ITEM: (
        ("external_segment_id", False),
        ("sys_id", False),
        ("document_id", False),
    ),
    EventKind.INTERACTION: (("sys_id", False), ("correlation_id", True)),
}


def correlation_keys(event: Event) -> list[str]:
    """The ids by which the glue finds the correlation an event belongs to (most specific
    first); empty when the record is too malformed to name any."""
    try:
        ids = _record_ids(event)
    except BridgeError:
        # A malformed record still names its conversation: the error is shown there.
        ids = _raw_ids(event)
    return list(dict.fromkeys(i for i in ids if i))


def _record_ids(event: Event) -> list[str | None]:
    record = event.parsed
    if isinstance(record, PsrRecord):
        return [record.id, record.work_item_id]
    if isinstance(record, PsrDeletedRecord | SfWorkItemRecord):
        return [record.id]
    if isinstance(record, AgentWorkRecord):
        return [record.id, record.psr_id, record.work_item_id]
    if isinstance(record, AwaWorkItemRecord):
        return [record.external_segment_id, record.sys_id, record.document_id]
    return [record.sys_id, record.correlation_id]


def _raw_ids(event: Event) -> list[str | None]:
    ids: list[str | None] = []
    for name, is_sf in _KEY_FIELDS.get(event.kind, ()):
        value = field_value(event.record, name)
        if is_sf:
            ids.append(lenient_sf_id(value))
        elif isinstance(value, str):
            ids.append(value)
    return ids
