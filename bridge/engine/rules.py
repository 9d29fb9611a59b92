"""translate: find the rule of ``mappings/rules.yaml`` for (direction, trigger, state) and
apply it: segment changes, the command builders, the next state. Before any rule, what
the event shows is recorded (who holds which AgentWork and work item) and the bridge's own
changes are recognised as echoes. A read shows only a record's latest state: an AgentWork
first read Opened, Closed or Transferred went through the statuses before it, and their
rules are applied first, so any later snapshot ends where reading every change would."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bridge.domain import (
    NO_CORRELATION,
    QUEUE_TRIGGERS,
    AgentWorkStatus,
    Correlation,
    CorrelationState,
    Decision,
    Direction,
    Event,
    EventOutcome,
    SegmentKind,
    Trigger,
    WorkItemState,
)
from bridge.domain.conversation import AgentWorkSeen, AwaWorkItemSeen, ConversationData
from bridge.domain.mapping import QueueMap, Rule, Tables
from bridge.domain.records import (
    AgentWorkRecord,
    AwaWorkItemRecord,
    PsrDeletedRecord,
    PsrRecord,
    required,
    to18,
)
from bridge.engine import echo
from bridge.engine.builders import BUILDERS, event_queue
from bridge.engine.classify import (
    LEFT_BEHIND,
    agent_work_steps,
    agent_work_trigger,
    classify,
    correlation_keys,
)
from bridge.engine.ids import derived_id, interaction_sys_id
from bridge.engine.working import EventDraft, Reject
from bridge.errors import Permanent, Skippable


def translate(event: Event, correlation: Correlation | None, tables: Tables) -> Decision:
    """What the event changes and which commands follow. Never raises for bad input: the
    Decision says ``error`` or ``skipped`` with a precise reason."""
    trigger: Trigger | None = None
    try:
        trigger = classify(event, correlation)
        if correlation is None:
            return _open(event, trigger, tables)
        return _continue(event, trigger, correlation, tables)
    except Reject as exc:
        return Decision(exc.outcome, reason=exc.reason, trigger=trigger.value if trigger else None)
    except (Skippable, Permanent) as exc:
        # Malformed records and unknown status values are errors the ledger shows, by name.
        return Decision(
            EventOutcome.ERROR, reason=exc.message, trigger=trigger.value if trigger else None
        )


def _rule(tables: Tables, direction: Direction, trigger: Trigger, state: str) -> Rule:
    rule = tables.rule_for(direction, trigger, state)
    if rule is None:
        raise Reject(EventOutcome.ERROR, f"no rule for {direction} {trigger} in state {state}")
    return rule


def _draft(event: Event, corr: Correlation, tables: Tables) -> EventDraft:
    suffix = f"@{event.source_event_id}" if event.from_reconciler else ""
    return EventDraft(corr, at=event.occurred_at, tables=tables, key_suffix=suffix)


def _open(event: Event, trigger: Trigger, tables: Tables) -> Decision:
    if trigger not in QUEUE_TRIGGERS:
        raise Reject(
            EventOutcome.SKIPPED,
            f"{event.kind} event {event.source_event_id} belongs to no conversation the bridge "
            f"routes (looked up by {', '.join(correlation_keys(event)) or 'no id'})",
        )
    queue = event_queue(event, tables)
    rule = _rule(tables, queue.direction, trigger, NO_CORRELATION)
    if rule.next_state is None:
        return Decision(
            EventOutcome(rule.result),
            reason=rule.note or None,
            rule_id=rule.id,
            trigger=trigger.value,
        )
    record = event.parsed
    if isinstance(record, PsrRecord):
        corr = _correlation_from_psr(event, record, queue, tables, rule.next_state)
    else:
        assert isinstance(record, AwaWorkItemRecord)  # the other queue triggers
        corr = _correlation_from_work_item(event, record, queue, tables, rule.next_state)
    work = _draft(event, corr, tables)
    if isinstance(record, AwaWorkItemRecord):
        _observe(work, event, trigger)
    return _apply_rule(work, event, trigger, rule)


def _correlation_from_psr(
    event: Event, psr: PsrRecord, queue: QueueMap, tables: Tables, state: CorrelationState
) -> Correlation:
    channel_id = required(event, "ServiceChannelId", psr.service_channel_id)
    channel = tables.channel_by_sf(channel_id)
    if channel is None:
        raise Reject(
            EventOutcome.ERROR,
            f"PSR {psr.id}: service channel {channel_id} is not mapped in crosswalk.yaml",
        )
    corr_id = derived_id("sf", "psr", psr.id)
    return Correlation(
        id=corr_id,
        direction=queue.direction,
        state=state,
        sf_work_item_id=required(event, "WorkItemId", psr.work_item_id),
        sf_psr_id=psr.id,
        sf_queue_id=to18(queue.sf_queue_id),
        sf_service_channel_id=channel_id,
        sn_document_table=channel.sn_document_table,
        sn_document_sys_id=interaction_sys_id(corr_id),
        sn_queue_sys_id=queue.sn_queue_ref,
        data=ConversationData(push_timeout=psr.push_timeout, channel=channel.name),
    )


def _correlation_from_work_item(
    event: Event, item: AwaWorkItemRecord, queue: QueueMap, tables: Tables, state: CorrelationState
) -> Correlation:
    document_id = required(event, "document_id", item.document_id)
    document_table = required(event, "document_table", item.document_table)
    if document_table not in {c.sn_document_table for c in tables.crosswalk.channels}:
        raise Reject(
            EventOutcome.ERROR,
            f"work item {item.sys_id}: document_table {document_table!r} is not routed by "
            "any channel of crosswalk.yaml",
        )
    return Correlation(
        id=derived_id("sn", "document", document_id),
        direction=queue.direction,
        state=state,
        sf_queue_id=to18(queue.sf_queue_id),
        sf_conversation_id=document_id,
        sn_document_table=document_table,
        sn_document_sys_id=document_id,
        sn_work_item_sys_id=item.sys_id,
        sn_queue_sys_id=queue.sn_queue_ref,
    )


def _continue(event: Event, trigger: Trigger, corr: Correlation, tables: Tables) -> Decision:
    work = _draft(event, corr, tables)
    # Before anything is recorded: a late copy must not overwrite what later reads showed.
    earlier = _of_earlier_segment(corr, event, trigger)
    if earlier:
        return work.decision(EventOutcome.SKIPPED, reason=earlier, trigger=trigger)
    _observe(work, event, trigger)
    # What a reconciler found left behind is there now, whoever caused it: never an echo.
    if trigger not in LEFT_BEHIND:
        expected = set(work.data.expect)
        if any(key in expected for key in echo.of_record(event.parsed)):
            _mark_own(work, event)
            return work.decision(EventOutcome.ECHO, reason="caused by the bridge", trigger=trigger)
    stale = _stale(work, event, trigger)
    if stale:
        return work.decision(EventOutcome.SKIPPED, reason=stale, trigger=trigger)
    passed = _passed_through(event, corr, trigger)
    if passed is None:
        record = event.parsed
        assert isinstance(record, AgentWorkRecord)  # only AgentWork has a known status
        seen = corr.data.agent_work[record.id].status
        reason = f"stale: AgentWork {record.id} shows {record.status}, already seen {seen}"
        return work.decision(EventOutcome.SKIPPED, reason=reason, trigger=trigger)
    for status in passed:
        _pass_through(work, event, status)
    rule = _rule(tables, corr.direction, trigger, work.get("state").value)
    decision = _apply_rule(work, event, trigger, rule)
    if passed:
        read_as = ", ".join(str(status) for status in passed)
        return replace(decision, reason=f"the AgentWork went through {read_as} unread")
    return decision


# AWA answers and Omni-Channel undos that act on the offer / assignment they are about: one
# about an earlier segment's (a copy read late through another stream) must not act now.
_AWA_ANSWERS = frozenset({Trigger.WORK_ITEM_ACCEPTED, Trigger.WORK_ITEM_ACCEPTED_ELSEWHERE})
_AGENT_WORK_UNDONE = frozenset(
    {
        Trigger.AGENT_WORK_DECLINED,
        Trigger.AGENT_WORK_DECLINED_ON_PUSH_TIMEOUT,
        Trigger.AGENT_WORK_UNAVAILABLE,
        Trigger.AGENT_WORK_CANCELED,
    }
)


def _of_earlier_segment(corr: Correlation, event: Event, trigger: Trigger) -> str | None:
    """An AWA acceptance or an AgentWork decline / time-out / cancel about a segment
    before the current one (a change stream and the sweeper both read the row, one late):
    named by the work item's external_segment_id or sys_id, or the AgentWork's id."""
    current = corr.segments[-1] if corr.segments else None
    if current is None or trigger in LEFT_BEHIND:
        return None
    earlier = corr.segments[:-1]
    record = event.parsed
    if trigger in _AWA_ANSWERS and isinstance(record, AwaWorkItemRecord):
        segment_id = record.external_segment_id
        if segment_id:
            # a work item made for another segment: an offer the engine has moved on from
            old = segment_id != current.external_segment_id and any(
                s.external_segment_id == segment_id for s in earlier
            )
        else:
            old = record.sys_id != current.sn_work_item_sys_id and any(
                s.sn_work_item_sys_id == record.sys_id for s in earlier
            )
        if old:
            return (
                f"stale: work item {record.sys_id} answers an earlier offer "
                f"(segment {segment_id or 'of that work item'}), the current segment is "
                f"{current.external_segment_id}"
            )
    if trigger in _AGENT_WORK_UNDONE and isinstance(record, AgentWorkRecord):
        followed = current.sf_agent_work_id
        old = followed not in (None, record.id) and any(
            s.sf_agent_work_id == record.id for s in earlier
        )
        if old:
            return (
                f"stale: AgentWork {record.id} ({record.status}) is an earlier segment's; "
                f"the current one follows AgentWork {followed}"
            )
    return None


def _stale(work: EventDraft, event: Event, trigger: Trigger) -> str | None:
    """A reject / time-out of an offer that is no longer the current one; the deletion of
    a PSR the conversation no longer routes (read after the PSR of a transfer)."""
    if trigger is Trigger.PSR_DELETED:
        deleted = event.parsed
        assert isinstance(deleted, PsrDeletedRecord)
        current_psr = work.corr.sf_psr_id
        if current_psr and deleted.id != current_psr:
            return f"stale: PSR {deleted.id} deleted; the conversation routes PSR {current_psr}"
        return None
    if trigger not in (Trigger.WORK_ITEM_REJECTED, Trigger.WORK_ITEM_TIMED_OUT):
        return None
    item = event.parsed
    assert isinstance(item, AwaWorkItemRecord)
    segment_id = item.external_segment_id
    current = work.current()
    if segment_id and current and segment_id != current.external_segment_id:
        return (
            f"stale: work item {item.sys_id} refers to segment {segment_id}, "
            f"the current one is {current.external_segment_id}"
        )
    return None


# --- what a later snapshot shows happened before it ----------------------------------------


def _passed_through(
    event: Event, corr: Correlation, trigger: Trigger
) -> tuple[AgentWorkStatus, ...] | None:
    """The AgentWork statuses the record went through unread since the conversation last
    saw it, before the one it shows (none for other records); None when the record shows
    an earlier status than the one already seen."""
    record = event.parsed
    if not isinstance(record, AgentWorkRecord) or trigger in LEFT_BEHIND:
        return ()
    seen = corr.data.agent_work.get(record.id)
    steps = agent_work_steps(event, seen.status if seen else None)
    return None if steps is None else steps[:-1]


def _pass_through(work: EventDraft, event: Event, status: AgentWorkStatus) -> None:
    """Apply the rule of a status the AgentWork went through unread, as if it had been
    read: a status the bridge caused is its echo; a rule that acts on no status it passed
    (skipped, echo) does nothing."""
    record = event.parsed
    assert isinstance(record, AgentWorkRecord)
    if any(key in work.data.expect for key in echo.of_agent_work(record, status.value)):
        _mark_own(work, event)
        return
    state = work.get("state").value
    rule = _rule(work.tables, work.corr.direction, agent_work_trigger(status), state)
    if rule.result != "processed":
        return
    if status is AgentWorkStatus.OPENED:
        work.set(sf_agent_work_id=record.id, sf_user_id=required(event, "UserId", record.user_id))
    _run_rule(work, event, rule)


def _observe(work: EventDraft, event: Event, trigger: Trigger) -> None:
    """Keep track of what the event shows, whatever the rule then does."""
    record = event.parsed
    if isinstance(record, PsrRecord):
        _observe_psr(work, event, record, trigger)
    elif isinstance(record, AgentWorkRecord):
        _observe_agent_work(work, event, record)
    elif isinstance(record, AwaWorkItemRecord):
        _observe_awa(work, record)


def _observe_psr(work: EventDraft, event: Event, psr: PsrRecord, trigger: Trigger) -> None:
    if work.get("sf_work_item_id") is None:
        work.set(sf_work_item_id=required(event, "WorkItemId", psr.work_item_id))
    if work.get("sf_psr_id") is None:
        work.set(sf_psr_id=psr.id)
    if trigger is Trigger.PSR_CREATED_TRANSFER and work.get("sf_psr_id") != psr.id:
        queue = event_queue(event, work.tables)
        if queue.direction is not work.corr.direction:
            raise Reject(
                EventOutcome.ERROR,
                f"PSR {psr.id}: transfer to queue {queue.name!r}, which routes {queue.direction}",
            )
        work.set(sf_psr_id=psr.id, sf_queue_id=to18(queue.sf_queue_id))
        work.set(sn_queue_sys_id=queue.sn_queue_ref)
        work.change_data(push_timeout=psr.push_timeout)


def _observe_agent_work(work: EventDraft, event: Event, aw: AgentWorkRecord) -> None:
    user = required(event, "UserId", aw.user_id)
    known = work.data.agent_work.get(aw.id)
    if known is None:
        known = AgentWorkSeen(user=user, status=aw.status)
    work.see_agent_work(aw.id, replace(known, status=aw.status))
    if aw.status is AgentWorkStatus.OPENED:
        work.set(sf_agent_work_id=aw.id, sf_user_id=user)
    current = work.current()
    if current and current.sf_user_id == user and current.sf_agent_work_id is None:
        work.update_segment(current.seq, sf_agent_work_id=aw.id)


def _observe_awa(work: EventDraft, item: AwaWorkItemRecord) -> None:
    work.see_work_item(
        item.sys_id, AwaWorkItemSeen(user=item.assigned_to, state=item.state, active=item.active)
    )
    if item.active and item.state is not WorkItemState.CANCELED:
        work.set(sn_work_item_sys_id=item.sys_id)
    for segment in work.segments:
        if item.external_segment_id and segment.external_segment_id == item.external_segment_id:
            changes: dict[str, Any] = {"sn_work_item_sys_id": item.sys_id}
            if item.assigned_to:
                changes["sn_user_sys_id"] = item.assigned_to
            work.update_segment(segment.seq, **changes)


def _mark_own(work: EventDraft, event: Event) -> None:
    record = event.parsed
    if isinstance(record, AgentWorkRecord):
        work.see_agent_work(record.id, replace(work.data.agent_work[record.id], own=True))
        work.set(sf_agent_work_id=record.id)


def _apply_rule(work: EventDraft, event: Event, trigger: Trigger, rule: Rule) -> Decision:
    if rule.result != "processed":
        return work.decision(
            EventOutcome(rule.result), reason=rule.note or None, rule=rule, trigger=trigger
        )
    _run_rule(work, event, rule)
    return work.decision(EventOutcome.PROCESSED, rule=rule, trigger=trigger)


def _run_rule(work: EventDraft, event: Event, rule: Rule) -> None:
    if rule.close_segment is not None:
        work.close_segment(rule.close_segment)
    if rule.open_segment is not None:
        _open_segment(work, event, rule.open_segment)
    for action in rule.actions:
        BUILDERS[action.op](work, event, action)
    if rule.next_state is not None:
        work.set(state=rule.next_state)


def _open_segment(work: EventDraft, event: Event, kind: SegmentKind) -> None:
    record = event.parsed
    if kind is SegmentKind.ROUTE:
        assert isinstance(record, AgentWorkRecord)  # the rule loader checks route triggers
        user = required(event, "UserId", record.user_id)
        mapped = work.tables.user_by_sf(user)
        work.open_segment(
            kind,
            sf_user_id=user,
            sn_user_sys_id=mapped.sn_user_sys_id if mapped else None,
            sf_agent_work_id=record.id,
        )
    else:
        work.open_segment(kind)
