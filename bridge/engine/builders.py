"""The command builders: one per operation a rule names, each emitting its command with
the parameters the executors send and expecting the echo of the change it asks for."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from bridge.domain import (
    AgentWorkPatchStatus,
    AgentWorkStatus,
    CancelReason,
    Direction,
    Event,
    EventOutcome,
    InteractionState,
    Operation,
    RouteCancelReason,
    RoutingType,
    SegmentKind,
    SegmentOutcome,
    WorkItemState,
)
from bridge.domain.mapping import Action, QueueMap, Tables
from bridge.domain.records import (
    AgentWorkRecord,
    AwaWorkItemRecord,
    PsrRecord,
    required,
    to18,
)
from bridge.domain.sf_ids import to15
from bridge.engine import echo
from bridge.engine.working import EventDraft, Reject

Builder = Callable[[EventDraft, Event, Action], None]


def event_queue(event: Event, tables: Tables) -> QueueMap:
    """The mapped queue a PSR or an awa_work_item names; Reject (error: refused input,
    listed with its reason) when unmapped."""
    record = event.parsed
    if isinstance(record, PsrRecord):
        queue_id = required(event, "QueueId", record.queue_id)
        queue = tables.queue_by_sf(queue_id)
        what = f"Salesforce queue {queue_id}"
    else:
        assert isinstance(record, AwaWorkItemRecord)  # only these name a queue
        ref = required(event, "queue", record.queue)
        queue = tables.queue_by_sn(ref)
        what = f"AWA queue {ref}"
    if queue is None:
        raise Reject(
            EventOutcome.ERROR,
            f"{what} is not mapped in crosswalk.yaml (event {event.source_event_id}); "
            "the bridge does not route it",
        )
    return queue


def _agent_work(event: Event) -> AgentWorkRecord:
    record = event.parsed
    assert isinstance(record, AgentWorkRecord)  # the rule loader checks agent_work triggers
    return record


def _event_agent(work: EventDraft, event: Event) -> tuple[str, str]:
    """(Salesforce user, mapped ServiceNow user) named by an AgentWork event."""
    user = required(event, "UserId", _agent_work(event).user_id)
    mapped = work.tables.user_by_sf(user)
    if mapped is None:
        raise Reject(EventOutcome.ERROR, f"Salesforce user {user} is not mapped in crosswalk.yaml")
    return user, mapped.sn_user_sys_id


# --- offers and transfers (ServiceNow) ---------------------------------------------------


def _pick_queue(work: EventDraft) -> tuple[QueueMap, list[str]]:
    """The queue to offer on and its candidates: re-offer limit, then the fallback queue."""
    tables = work.tables
    start = tables.queue_by_sf(work.get("sf_queue_id"))
    if start is None:
        raise Reject(EventOutcome.ERROR, f"queue {work.get('sf_queue_id')} is not mapped")
    excluded = set(work.data.excluded)
    new_seq = work.segments[-1].seq
    tried: list[str] = []
    queue: QueueMap | None = start
    while queue is not None and queue.name not in tried:
        tried.append(queue.name)
        ref = queue.sn_queue_ref
        offers = sum(
            1
            for s in work.segments
            if s.seq != new_seq and s.kind is not SegmentKind.ROUTE and s.sn_queue_sys_id == ref
        )
        candidates = [
            u.sn_user_sys_id for u in tables.queue_agents(queue) if u.sn_user_sys_id not in excluded
        ]
        if candidates and offers < tables.policies.reoffer_limit:
            return queue, spread(candidates, work.corr.id)
        queue = tables.fallback_for(queue)
    raise Reject(
        EventOutcome.ERROR,
        f"no agent left to offer to on {', '.join(tried)}: re-offer limit "
        f"{tables.policies.reoffer_limit} reached or every agent declined",
    )


def spread(candidates: list[str], correlation_id: str) -> list[str]:
    """The candidates rotated by the conversation: every conversation prefers a different
    agent first, so offers spread over the queue instead of piling on its first agent
    (the dispatcher still skips whoever is not available)."""
    turn = int(uuid.uuid5(uuid.NAMESPACE_OID, correlation_id).hex[:8], 16) % len(candidates)
    return candidates[turn:] + candidates[:turn]


def _timeout(work: EventDraft) -> int:
    policies = work.tables.policies
    push_timeout = work.data.push_timeout
    if policies.offer_timeout_from_push_timeout and push_timeout > 0:
        return push_timeout
    return policies.offer_timeout_default


def _guard_pending_offers(work: EventDraft) -> None:
    """Two-agent guard, ServiceNow side: no new offer while another is pending."""
    for sys_id, item in sorted(work.data.work_items.items()):
        if item.active and item.state is WorkItemState.PENDING_ACCEPT:
            _cancel_item(work, sys_id, CancelReason.MANUALLY_ASSIGNED.value)


def _targets(work: EventDraft, event: Event, action: Action) -> dict[str, Any]:
    """Queue and agents of an offer or transfer; records them on the new segment (and the
    queue on the conversation, so that ledger and AWA name the same queue)."""
    segment = work.segments[-1]
    if action.option("target", "queue_agents") == "event_agent":
        sf_user, sn_user = _event_agent(work, event)
        work.update_segment(
            segment.seq,
            sf_user_id=sf_user,
            sn_user_sys_id=sn_user,
            sf_agent_work_id=_agent_work(event).id,
        )
        return {"queue_id": work.get("sn_queue_sys_id"), "candidates": [sn_user], "excluded": []}
    queue, candidates = _pick_queue(work)
    work.update_segment(segment.seq, sn_queue_sys_id=queue.sn_queue_ref)
    work.set(sn_queue_sys_id=queue.sn_queue_ref)
    return {
        "queue_id": queue.sn_queue_ref,
        "candidates": candidates,
        "excluded": sorted(work.data.excluded),
    }


def _assignment(work: EventDraft, action: Action, default_auto: bool) -> dict[str, Any]:
    """The ``assignment`` settings of an offer, or of a transfer to an agent."""
    policies = work.tables.policies
    auto = action.option("enable_auto_assign", str(default_auto).lower()) == "true"
    return {
        "timeout": _timeout(work),
        "allowed_to_decline": policies.allowed_to_decline,
        "enable_auto_assign": auto,
        "display_option": policies.display_option,
        "after_timeout_presence": policies.after_timeout_presence,
    }


def _emit_offer(work: EventDraft, targets: dict[str, Any], assignment: dict[str, Any]) -> None:
    segment = work.segments[-1]
    params = {
        "document_table": work.get("sn_document_table"),
        "document_id": work.get("sn_document_sys_id"),
        **targets,
        "external_segment_id": segment.external_segment_id,
        **assignment,
    }
    segment_id = segment.external_segment_id
    work.expect(echo.awa_segment_state(segment_id, WorkItemState.PENDING_ACCEPT))
    if assignment["enable_auto_assign"]:
        work.expect(echo.awa_segment_state(segment_id, WorkItemState.ACCEPTED))
    work.emit(Operation.OFFER, params, segment_id)


def _offer(work: EventDraft, event: Event, action: Action) -> None:
    _guard_pending_offers(work)
    targets = _targets(work, event, action)
    _emit_offer(work, targets, _assignment(work, action, work.tables.policies.enable_auto_assign))


def _transfer(work: EventDraft, event: Event, action: Action) -> None:
    """A blind transfer in AWA. To an agent (the one Salesforce chose, or an available
    agent of the queue when the queue stays the same): one call with the offer settings.
    To another queue: an AWA queue transfer, then the offer on that queue (policy
    ``transfer_to_queue``). Whoever transferred the work away is never its target."""
    policies = work.tables.policies
    segment = work.segments[-1]
    previous = work.segments[-2] if len(work.segments) > 1 else None
    source_queue = (previous.sn_queue_sys_id if previous else None) or work.get("sn_queue_sys_id")
    event_agent = action.option("target", "queue_agents") == "event_agent"
    transferred_by = (
        previous.sn_user_sys_id
        if previous is not None and previous.outcome is SegmentOutcome.TRANSFERRED
        else None
    )
    if transferred_by and not event_agent:
        work.exclude(transferred_by)
    _guard_pending_offers(work)
    targets = _targets(work, event, action)
    # The agent Salesforce chose has already taken the work there: AWA follows at once.
    assignment = _assignment(work, action, event_agent or policies.enable_auto_assign)
    params: dict[str, Any] = {
        "document_table": work.get("sn_document_table"),
        "document_id": work.get("sn_document_sys_id"),
        "external_segment_id": segment.external_segment_id,
        "source_queue_id": source_queue,
        "transfer_type": policies.transfer_type,
    }
    segment_id = segment.external_segment_id
    if not event_agent and source_queue and targets["queue_id"] != source_queue:
        # The AWA work item moves to the target queue (queued), then the bridge offers it
        # there. The queue leg has an external_segment_id of its own, so a look for the
        # offer (after an unknown outcome) never takes the queued work item for it; and no
        # echo is expected for the queued state (a later time-out shows it too).
        params |= {
            "target_type": "queue",
            "target_id": targets["queue_id"],
            "external_segment_id": f"{segment_id}-queue",
        }
        work.emit(Operation.TRANSFER, params, segment_id)
        _emit_offer(work, targets, assignment)
        return
    params |= {
        "target_type": "agent",
        "candidates": targets["candidates"],
        "excluded": targets["excluded"],
        **assignment,
    }
    work.expect(echo.awa_segment_state(segment_id, WorkItemState.PENDING_ACCEPT))
    if assignment["enable_auto_assign"]:
        work.expect(echo.awa_segment_state(segment_id, WorkItemState.ACCEPTED))
    work.emit(Operation.TRANSFER, params, segment_id)


def _cancel_item(work: EventDraft, sys_id: str, reason: str) -> None:
    work.expect(echo.awa_work_item_state(sys_id, WorkItemState.CANCELED))
    work.emit(Operation.CANCEL_WORK_ITEM, {"sys_id": sys_id, "cancel_reason": reason}, sys_id)


def _cancel_work_item(work: EventDraft, event: Event, action: Action) -> None:
    which = action.option("which", "pending")
    reason = action.option("cancel_reason", CancelReason.MANUALLY_ASSIGNED.value)
    if which == "event":
        item = event.parsed
        assert isinstance(item, AwaWorkItemRecord)  # the rule loader checks the triggers
        _cancel_item(work, item.sys_id, reason)
        return
    for sys_id, seen in sorted(work.data.work_items.items()):
        if not seen.active or seen.state is WorkItemState.CANCELED:
            continue
        if which == "pending" and seen.state is not WorkItemState.PENDING_ACCEPT:
            continue
        _cancel_item(work, sys_id, reason)


# --- interactions (ServiceNow) -----------------------------------------------------------


def _close_interaction(work: EventDraft, event: Event, action: Action) -> None:
    del event
    state = action.option("state", InteractionState.CLOSED_COMPLETE.value)
    sys_id = work.get("sn_document_sys_id")
    work.expect(echo.interaction_state(sys_id, state))
    params = {"table": work.get("sn_document_table"), "sys_id": sys_id, "state": state}
    work.emit(Operation.CLOSE_INTERACTION, params, state)


def _create_interaction(work: EventDraft, event: Event, action: Action) -> None:
    del event, action
    channel = work.tables.channel_by_sf(work.get("sf_service_channel_id"))
    sys_id = work.get("sn_document_sys_id")
    work_item = work.get("sf_work_item_id")
    kind = channel.sf_work_item_type if channel else "work item"
    record = {
        "sys_id": sys_id,
        "short_description": f"Salesforce {kind} {work_item}",
        "correlation_id": work_item,
        "correlation_display": "Salesforce",
        "channel": channel.sn_service_channel_sys_id if channel else None,
        "type": "chat",
        "state": InteractionState.ON_HOLD.value,
        "queue": work.get("sn_queue_sys_id"),
    }
    work.expect(echo.interaction_state(sys_id, InteractionState.ON_HOLD))
    work.emit(
        Operation.CREATE_INTERACTION,
        {"table": work.get("sn_document_table"), "record": record},
        sys_id,
    )


# --- AgentWork (Salesforce) --------------------------------------------------------------


def _assignee(work: EventDraft, event: Event) -> tuple[str, str]:
    """(ServiceNow user who accepted, mapped Salesforce user), for a new AgentWork."""
    record = event.parsed
    accepted_by = record.assigned_to if isinstance(record, AwaWorkItemRecord) else None
    sn_user = accepted_by or work.get("sn_user_sys_id")
    mapped = work.tables.user_by_sn(sn_user)
    if sn_user is None or mapped is None:
        raise Reject(
            EventOutcome.ERROR,
            f"ServiceNow user {sn_user} accepted but is not mapped to a Salesforce user",
        )
    return sn_user, to18(mapped.sf_user_id)


def _guard_assigned_agent_work(work: EventDraft, user: str) -> None:
    """Two-agent guard, Salesforce side: cancel another user's Assigned AgentWork first."""
    for agent_work_id, seen in sorted(work.data.agent_work.items()):
        if seen.status is AgentWorkStatus.ASSIGNED and seen.user != user:
            _patch_agent_work(work, agent_work_id, AgentWorkPatchStatus.CANCEL)


def _prepare_assignment(work: EventDraft, event: Event) -> tuple[str, str, str]:
    """Resolve the assignee, apply the guard, expect the echo: (sn user, sf user, work item)."""
    sn_user, sf_user = _assignee(work, event)
    work_item = work.get("sf_work_item_id")
    if work_item is None:
        raise Reject(EventOutcome.ERROR, "no Salesforce work item known for this conversation")
    _guard_assigned_agent_work(work, sf_user)
    segment = work.current()
    if segment is not None:
        work.update_segment(segment.seq, sf_user_id=sf_user, sn_user_sys_id=sn_user)
    work.set(sn_user_sys_id=sn_user)
    work.expect(echo.agent_work_for(work_item, sf_user, AgentWorkStatus.ASSIGNED))
    return sn_user, sf_user, work_item


def _create_agent_work(work: EventDraft, event: Event, action: Action) -> None:
    del action
    psr = work.get("sf_psr_id")
    if psr is None:
        raise Reject(EventOutcome.ERROR, "no PendingServiceRouting known for this conversation")
    _, sf_user, work_item = _prepare_assignment(work, event)
    params = {
        "UserId": sf_user,
        "WorkItemId": work_item,
        "PendingServiceRoutingId": psr,
        "ServiceChannelId": work.get("sf_service_channel_id"),
        "CapacityWeight": work.tables.policies.capacity_weight,
    }
    work.emit(Operation.CREATE_AGENT_WORK, params, f"{sf_user}:{psr}")


def _assign_agent_work(work: EventDraft, event: Event, action: Action) -> None:
    del action
    _, sf_user, work_item = _prepare_assignment(work, event)
    params: dict[str, Any] = {
        "userId": sf_user,
        "workItemId": to15(work_item),
        "capacityWeight": work.tables.policies.capacity_weight,
    }
    conversation = work.get("sf_conversation_id")
    routing_correlation = work.data.routing_correlation_id
    if conversation and routing_correlation:
        # RoutingContext's documented fields; the correlation id comes with POST /route's answer
        params["routingContext"] = {
            "conversationIdentifier": conversation,
            "routingType": RoutingType.INITIAL.value,
            "routingCorrelationId": routing_correlation,
        }
    work.emit(Operation.ASSIGN_AGENT_WORK, params, f"{sf_user}:{work_item}")


_PATCH_RESULT = {
    AgentWorkPatchStatus.ACCEPT: AgentWorkStatus.OPENED,
    AgentWorkPatchStatus.CLOSE: AgentWorkStatus.CLOSED,
    AgentWorkPatchStatus.DECLINE: AgentWorkStatus.DECLINED,
    AgentWorkPatchStatus.CANCEL: AgentWorkStatus.CANCELED,
}


def _patch_agent_work(work: EventDraft, agent_work_id: str, status: AgentWorkPatchStatus) -> None:
    work_item = work.get("sf_work_item_id")
    params = {
        "workId": to15(agent_work_id),
        "workItemId": to15(work_item) if work_item else None,
        "status": status.value,
        "contextType": "Agent",
    }
    work.expect(echo.agent_work_status(agent_work_id, _PATCH_RESULT[status].value))
    work.emit(Operation.UPDATE_AGENT_WORK, params, f"{agent_work_id}:{status.value}")


def _update_agent_work(work: EventDraft, event: Event, action: Action) -> None:
    if action.option("agent_work", "current") == "event":
        agent_work_id: str | None = _agent_work(event).id
    else:
        agent_work_id = work.get("sf_agent_work_id")
    if agent_work_id is None:
        raise Reject(EventOutcome.ERROR, "no AgentWork known for this conversation")
    status = AgentWorkPatchStatus(action.option("status", AgentWorkPatchStatus.CLOSE.value))
    _patch_agent_work(work, agent_work_id, status)


# --- routing (Salesforce Interaction Service API) and PSRs -------------------------------


def _route(work: EventDraft, event: Event, action: Action) -> None:
    del event
    conversation = work.get("sf_conversation_id")
    params = {
        "conversationIdentifier": conversation,
        "routingType": action.option("routingType", RoutingType.INITIAL.value),
        "routingInfo": {"queueId": work.get("sf_queue_id")},
    }
    work.emit(Operation.ROUTE, params, conversation)


def _cancel_route(work: EventDraft, reason: str, psr: str | None) -> None:
    conversation = work.get("sf_conversation_id")
    if conversation is None:
        raise Reject(EventOutcome.ERROR, "no conversation identifier known for DELETE /route")
    if psr:
        work.expect(echo.psr_deleted(psr))
    params = {"conversationIdentifier": conversation, "cancelReason": reason}
    work.emit(Operation.CANCEL_ROUTE, params, conversation)


def _cancel_route_action(work: EventDraft, event: Event, action: Action) -> None:
    del event
    reason = action.option("cancelReason", RouteCancelReason.CANCEL.value)
    _cancel_route(work, reason, work.get("sf_psr_id"))


def deletes_psr_by_route(
    direction: Direction | str, conversation_id: str | None, orphan_policy: str
) -> bool:
    """An orphaned PSR goes with ``DELETE /route`` when its conversation has an Interaction
    Service identifier and was routed through that API (or the policy says so); else with
    the REST delete."""
    return bool(conversation_id) and (
        Direction(direction) is Direction.SN_TO_SF or orphan_policy == "route_api"
    )


def _delete_psr(work: EventDraft, event: Event, action: Action) -> None:
    """Delete the PSR left behind (the event's, when it is a PSR; else the conversation's):
    DELETE /route for conversations routed through the Interaction Service API (or when
    the policy says so), else the REST delete."""
    del action
    record = event.parsed
    psr = record.id if isinstance(record, PsrRecord) else work.get("sf_psr_id")
    if deletes_psr_by_route(
        work.corr.direction,
        work.get("sf_conversation_id"),
        work.tables.policies.orphan_psr_deletion,
    ):
        _cancel_route(work, RouteCancelReason.CANCEL.value, psr)
        return
    if psr is None:
        return
    work.expect(echo.psr_deleted(psr))
    work.emit(Operation.DELETE_PSR, {"id": psr}, psr)


BUILDERS: dict[Operation, Builder] = {
    Operation.CREATE_AGENT_WORK: _create_agent_work,
    Operation.DELETE_PSR: _delete_psr,
    Operation.ROUTE: _route,
    Operation.CANCEL_ROUTE: _cancel_route_action,
    Operation.ASSIGN_AGENT_WORK: _assign_agent_work,
    Operation.UPDATE_AGENT_WORK: _update_agent_work,
    Operation.CREATE_INTERACTION: _create_interaction,
    Operation.OFFER: _offer,
    Operation.TRANSFER: _transfer,
    Operation.CANCEL_WORK_ITEM: _cancel_work_item,
    Operation.CLOSE_INTERACTION: _close_interaction,
}
