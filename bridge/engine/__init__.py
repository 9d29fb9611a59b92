"""The pure translation: (event, correlation, tables) → decision.

No I/O and no clock: time comes with the event, ids are derived (uuid5) from what the
event names, so the same input always gives the same decision and the same idempotency
keys. What to do for each (direction, trigger, state) is data (``mappings/rules.yaml``);
this module classifies events, keeps the bookkeeping the rules rely on (who holds which
AgentWork and work item, which changes the bridge caused itself) and builds the commands.
"""

from __future__ import annotations

import copy
import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from bridge.domain import (
    NO_CORRELATION,
    QUEUE_TRIGGERS,
    AgentWorkPatchStatus,
    AgentWorkStatus,
    CancelReason,
    Command,
    Correlation,
    CorrelationState,
    Decision,
    Direction,
    Event,
    EventKind,
    EventOutcome,
    InteractionState,
    Operation,
    RouteCancelReason,
    RoutingType,
    Segment,
    SegmentKind,
    SegmentOutcome,
    Trigger,
    WorkItemState,
    field_value,
    flag,
    number,
    optional_str,
    require_str,
    status_of,
)
from bridge.domain.mapping import Action, QueueMap, Rule, Tables
from bridge.domain.sf_ids import to15
from bridge.domain.sf_ids import to18 as _to18
from bridge.errors import Permanent, Skippable

# Every event carries a handful of Salesforce ids, and the same ones again and again.
to18 = functools.lru_cache(maxsize=1 << 16)(_to18)

_NS = uuid.UUID("2f6d7c1e-8a4b-5e3f-9c0d-4b1a2e3f5d60")

# Status of a Salesforce work item that means the conversation is over.
# Salesforce work item statuses that end the conversation (MessagingSession, Case).
SF_WORK_ITEM_ENDED = frozenset({"Ended", "Closed"})


def derived_id(*parts: str) -> str:
    """A deterministic 32-hex id from its parts (correlations, segments, interactions)."""
    return uuid.uuid5(_NS, ":".join(parts)).hex


def interaction_sys_id(correlation_id: str) -> str:
    """The sys_id of the interaction the bridge creates for a correlation."""
    return derived_id("interaction", correlation_id)


# --- reading events ---------------------------------------------------------------------


def _sf_id(event: Event, name: str, *, required: bool = True) -> str | None:
    """A Salesforce id field in its 18-character form."""
    value = require_str(event, name) if required else optional_str(event, name)
    if value is None:
        return None
    try:
        return to18(value)
    except ValueError:
        raise Permanent(
            f"{event.source} {event.kind} event {event.source_event_id}: "
            f"field {name} is not a Salesforce id: {value!r}"
        ) from None


def _must(value: str | None) -> str:
    assert value is not None  # _sf_id(required=True) never returns None
    return value


@dataclass(frozen=True)
class _AwaItem:
    sys_id: str
    state: WorkItemState
    active: bool
    queue: str | None
    document_table: str | None
    document_id: str | None
    assigned_to: str | None
    external_segment_id: str | None

    @classmethod
    def read(cls, event: Event) -> _AwaItem:
        return cls(
            sys_id=require_str(event, "sys_id"),
            state=status_of(event, "state", WorkItemState),
            active=flag(event, "active"),
            queue=optional_str(event, "queue"),
            document_table=optional_str(event, "document_table"),
            document_id=optional_str(event, "document_id"),
            assigned_to=optional_str(event, "assigned_to"),
            external_segment_id=optional_str(event, "external_segment_id"),
        )


def classify(event: Event, correlation: Correlation | None = None) -> Trigger:
    """What the event means; Permanent / Skippable (naming field and event) for bad input.

    The correlation tells an AWA acceptance by the agent the conversation is with from one
    by somebody else (a transfer inside AWA).
    """
    kind = event.kind
    if kind is EventKind.PSR:
        _sf_id(event, "Id")
        if flag(event, "IsPushed"):
            return Trigger.PSR_PUSHED
        if optional_str(event, "LastDeclinedAgentSession") or number(event, "Serial") > 0:
            return Trigger.PSR_REQUEUED
        return Trigger.PSR_CREATED_TRANSFER if flag(event, "IsTransfer") else Trigger.PSR_CREATED
    if kind is EventKind.PSR_DELETED:
        _sf_id(event, "Id")
        return Trigger.PSR_DELETED
    if kind is EventKind.AGENT_WORK:
        _sf_id(event, "Id")
        status = status_of(event, "Status", AgentWorkStatus)
        return _AGENT_WORK_TRIGGERS[status]
    if kind is EventKind.WORK_ITEM:
        _sf_id(event, "Id")
        ended = require_str(event, "Status") in SF_WORK_ITEM_ENDED
        return Trigger.SF_WORK_ITEM_ENDED if ended else Trigger.SF_WORK_ITEM_OPEN
    if kind is EventKind.AWA_WORK_ITEM:
        trigger = _awa_trigger(event)
        if trigger is Trigger.WORK_ITEM_ACCEPTED and _accepted_elsewhere(event, correlation):
            return Trigger.WORK_ITEM_ACCEPTED_ELSEWHERE
        return trigger
    require_str(event, "sys_id")
    return Trigger(f"interaction.{status_of(event, 'state', InteractionState).value}")


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


def _accepted_elsewhere(event: Event, correlation: Correlation | None) -> bool:
    """Accepted in AWA by an agent other than the conversation's current one."""
    if correlation is None or correlation.sn_user_sys_id is None:
        return False
    agent = optional_str(event, "assigned_to")
    return agent is not None and agent != correlation.sn_user_sys_id


def _awa_trigger(event: Event) -> Trigger:
    item = _AwaItem.read(event)
    if item.state is WorkItemState.CANCELED:
        reason = field_value(event.record, "cancel_reason")
        if reason == CancelReason.TRANSFER_REJECTED:
            return Trigger.WORK_ITEM_TRANSFER_REJECTED
        return Trigger.WORK_ITEM_CANCELED
    if not item.active:
        return Trigger.WORK_ITEM_CLOSED
    if item.state is WorkItemState.QUEUED:
        if flag(event, "rejected"):
            return Trigger.WORK_ITEM_REJECTED
        if flag(event, "timed_out"):
            return Trigger.WORK_ITEM_TIMED_OUT
        return Trigger.WORK_ITEM_QUEUED
    if item.state is WorkItemState.PENDING_ACCEPT:
        return Trigger.WORK_ITEM_PENDING_ACCEPT
    return Trigger.WORK_ITEM_ACCEPTED


# The fields that name a correlation, per event kind: (field, is a Salesforce id).
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
    keys: list[str] = []
    for name, is_sf in _KEY_FIELDS[event.kind]:
        value = field_value(event.record, name)
        if not isinstance(value, str) or not value:
            continue
        if is_sf:
            try:
                value = to18(value)
            except ValueError:
                continue
        if value not in keys:
            keys.append(value)
    return keys


def _echo_keys(event: Event) -> list[str]:
    """How the event would be named in ``data["expect"]`` had the bridge caused it."""
    rec = event.record
    if event.kind is EventKind.AGENT_WORK:
        status = status_of(event, "Status", AgentWorkStatus).value
        keys = [f"agent_work_id:{_sf_id(event, 'Id')}:{status}"]
        work_item = _sf_id(event, "WorkItemId", required=False)
        user = _sf_id(event, "UserId", required=False)
        if work_item and user:
            keys.append(f"agent_work:{work_item}:{user}:{status}")
        return keys
    if event.kind is EventKind.AWA_WORK_ITEM:
        state = field_value(rec, "state")
        keys = [f"awa_work_item_id:{field_value(rec, 'sys_id')}:{state}"]
        segment = field_value(rec, "external_segment_id")
        if segment:
            keys.append(f"awa_work_item:{segment}:{state}")
        return keys
    if event.kind is EventKind.INTERACTION:
        return [f"interaction:{field_value(rec, 'sys_id')}:{field_value(rec, 'state')}"]
    if event.kind is EventKind.PSR_DELETED:
        return [f"psr_deleted:{_sf_id(event, 'Id')}"]
    return []


# --- the working copy of a correlation while a rule applies -----------------------------


class _Reject(Exception):
    """Ends a translation with a non-processed outcome and its reason."""

    def __init__(self, outcome: EventOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass
class _State:
    """A working copy of a correlation: changes collected, then one Decision."""

    corr: Correlation
    fields: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(init=False)
    segments: list[Segment] = field(init=False)
    added: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data = copy.deepcopy(dict(self.corr.data))
        self.segments = list(self.corr.segments)

    def get(self, name: str) -> Any:
        return self.fields[name] if name in self.fields else getattr(self.corr, name)

    def set(self, **changes: Any) -> None:
        self.fields.update(changes)

    def bucket(self, name: str) -> dict[str, Any]:
        value: dict[str, Any] = self.data.setdefault(name, {})
        return value

    def current(self) -> Segment | None:
        return self.segments[-1] if self.segments else None

    def update_segment(self, seq: int, **changes: Any) -> Segment:
        segment = replace(self.segments[seq - 1], **changes)
        self.segments[seq - 1] = segment
        if seq not in self.added and seq not in self.updated:
            self.updated.append(seq)
        return segment

    def expect(self, key: str) -> None:
        expected: list[str] = self.data.setdefault("expect", [])
        if key not in expected:
            expected.append(key)

    def emit(self, operation: Operation, params: dict[str, Any], discriminator: str) -> None:
        segment = self.current()
        seq = segment.seq if segment else None
        key = f"{self.corr.id}:{seq or 0}:{operation.value}:{discriminator}"
        command = Command(operation.system, operation, params, key, seq)
        if all(c.idempotency_key != key for c in self.commands):
            self.commands.append(command)

    def decision(
        self,
        outcome: EventOutcome,
        *,
        reason: str | None = None,
        rule: Rule | None = None,
        trigger: Trigger | None = None,
    ) -> Decision:
        corr = replace(
            self.corr,
            **self.fields,
            data=self.data,
            segments=tuple(self.segments),
        )
        return Decision(
            outcome=outcome,
            correlation=corr,
            segments_added=tuple(self.segments[s - 1] for s in self.added),
            segments_updated=tuple(self.segments[s - 1] for s in self.updated),
            commands=tuple(self.commands),
            reason=reason,
            rule_id=rule.id if rule else None,
            trigger=trigger.value if trigger else None,
        )


@dataclass
class _Work(_State):
    """A working copy while translating an event: the tables are at hand."""

    at: datetime = field(kw_only=True)  # the event's time: segments open and close at it
    tables: Tables = field(kw_only=True)

    def close_segment(self, outcome: SegmentOutcome) -> None:
        """Give the outcome to the live segment; a decliner is not offered this again."""
        segment = self.current()
        if segment is None or not segment.is_live or segment.outcome is outcome:
            return
        # Accepted is held, not over: the segment closes with its final outcome.
        closed_at = None if outcome is SegmentOutcome.ACCEPTED else self.at
        self.update_segment(segment.seq, outcome=outcome, closed_at=closed_at)
        if outcome in (SegmentOutcome.DECLINED, SegmentOutcome.TIMED_OUT):
            excluded: list[str] = self.data.setdefault("excluded", [])
            if segment.sn_user_sys_id and segment.sn_user_sys_id not in excluded:
                excluded.append(segment.sn_user_sys_id)

    def open_segment(self, kind: SegmentKind, **cols: Any) -> Segment:
        seq = len(self.segments) + 1
        segment = Segment(
            seq=seq,
            external_segment_id=derived_id("segment", self.corr.id, str(seq)),
            kind=kind,
            opened_at=self.at,
            sf_queue_id=self.get("sf_queue_id"),
            sn_queue_sys_id=self.get("sn_queue_sys_id"),
            sf_psr_id=self.get("sf_psr_id"),
            **cols,
        )
        self.segments.append(segment)
        self.added.append(seq)
        return segment


# --- translate --------------------------------------------------------------------------


def translate(event: Event, correlation: Correlation | None, tables: Tables) -> Decision:
    """What the event changes and which commands follow. Never raises for bad input: the
    Decision says ``error`` or ``skipped`` with a precise reason."""
    trigger: Trigger | None = None
    try:
        trigger = classify(event, correlation)
        if correlation is None:
            return _open(event, trigger, tables)
        return _continue(event, trigger, correlation, tables)
    except _Reject as exc:
        return Decision(exc.outcome, reason=exc.reason, trigger=trigger.value if trigger else None)
    except (Skippable, Permanent) as exc:
        # Malformed records and unknown status values are errors the ledger shows, by name.
        return Decision(
            EventOutcome.ERROR, reason=exc.message, trigger=trigger.value if trigger else None
        )


def _rule(tables: Tables, direction: Direction, trigger: Trigger, state: str) -> Rule:
    rule = tables.rule_for(direction, trigger, state)
    if rule is None:
        raise _Reject(EventOutcome.ERROR, f"no rule for {direction} {trigger} in state {state}")
    return rule


def _event_queue(event: Event, tables: Tables) -> QueueMap:
    if event.kind is EventKind.PSR:
        queue_id = _sf_id(event, "QueueId")
        queue = tables.queue_by_sf(queue_id)
        what = f"Salesforce queue {queue_id}"
    else:
        ref = require_str(event, "queue")
        queue = tables.queue_by_sn(ref)
        what = f"AWA queue {ref}"
    if queue is None:
        raise _Reject(
            EventOutcome.SKIPPED,
            f"{what} is not mapped (event {event.source_event_id}); the bridge does not route it",
        )
    return queue


def _open(event: Event, trigger: Trigger, tables: Tables) -> Decision:
    if trigger not in QUEUE_TRIGGERS:
        raise _Reject(
            EventOutcome.SKIPPED,
            f"{event.kind} event {event.source_event_id} belongs to no conversation the bridge "
            f"routes (looked up by {', '.join(correlation_keys(event)) or 'no id'})",
        )
    queue = _event_queue(event, tables)
    rule = _rule(tables, queue.direction, trigger, NO_CORRELATION)
    if rule.next_state is None:
        return Decision(
            EventOutcome(rule.result),
            reason=rule.note or None,
            rule_id=rule.id,
            trigger=trigger.value,
        )
    corr = (
        _correlation_from_psr(event, queue, tables, rule.next_state)
        if event.kind is EventKind.PSR
        else _correlation_from_work_item(event, queue, rule.next_state)
    )
    work = _Work(corr, at=event.occurred_at, tables=tables)
    if event.kind is EventKind.AWA_WORK_ITEM:
        _observe(work, event, trigger)
    return _apply_rule(work, event, trigger, rule)


def _correlation_from_psr(
    event: Event, queue: QueueMap, tables: Tables, state: CorrelationState
) -> Correlation:
    psr_id = _must(_sf_id(event, "Id"))
    channel_id = _sf_id(event, "ServiceChannelId")
    channel = tables.channel_by_sf(channel_id)
    if channel is None:
        raise _Reject(
            EventOutcome.ERROR,
            f"PSR {psr_id}: service channel {channel_id} is not mapped in crosswalk.yaml",
        )
    corr_id = derived_id("sf", "psr", psr_id)
    return Correlation(
        id=corr_id,
        direction=queue.direction,
        state=state,
        sf_work_item_id=_sf_id(event, "WorkItemId"),
        sf_psr_id=psr_id,
        sf_queue_id=to18(queue.sf_queue_id),
        sf_service_channel_id=channel_id,
        sn_document_table=channel.sn_document_table,
        sn_document_sys_id=interaction_sys_id(corr_id),
        sn_queue_sys_id=queue.sn_queue_ref,
        data={"push_timeout": number(event, "PushTimeout"), "channel": channel.name},
    )


def _correlation_from_work_item(
    event: Event, queue: QueueMap, state: CorrelationState
) -> Correlation:
    item = _AwaItem.read(event)
    document_id = require_str(event, "document_id")
    return Correlation(
        id=derived_id("sn", "document", document_id),
        direction=queue.direction,
        state=state,
        sf_queue_id=to18(queue.sf_queue_id),
        sf_conversation_id=document_id,
        sn_document_table=item.document_table or "interaction",
        sn_document_sys_id=document_id,
        sn_work_item_sys_id=item.sys_id,
        sn_queue_sys_id=queue.sn_queue_ref,
    )


def _continue(event: Event, trigger: Trigger, corr: Correlation, tables: Tables) -> Decision:
    work = _Work(corr, at=event.occurred_at, tables=tables)
    _observe(work, event, trigger)
    expected = set(work.data.get("expect", ()))
    if any(key in expected for key in _echo_keys(event)):
        _mark_own(work, event)
        return work.decision(EventOutcome.ECHO, reason="caused by the bridge", trigger=trigger)
    stale = _stale(work, event, trigger)
    if stale:
        return work.decision(EventOutcome.SKIPPED, reason=stale, trigger=trigger)
    rule = _rule(tables, corr.direction, trigger, corr.state.value)
    return _apply_rule(work, event, trigger, rule)


def _stale(work: _Work, event: Event, trigger: Trigger) -> str | None:
    """A reject / time-out of an offer that is no longer the current one."""
    if trigger not in (Trigger.WORK_ITEM_REJECTED, Trigger.WORK_ITEM_TIMED_OUT):
        return None
    segment_id = optional_str(event, "external_segment_id")
    current = work.current()
    if segment_id and current and segment_id != current.external_segment_id:
        return (
            f"stale: work item {optional_str(event, 'sys_id')} refers to segment {segment_id}, "
            f"the current one is {current.external_segment_id}"
        )
    return None


def _observe(work: _Work, event: Event, trigger: Trigger) -> None:
    """Keep track of what the event shows, whatever the rule then does."""
    if event.kind is EventKind.PSR:
        _observe_psr(work, event, trigger)
    elif event.kind is EventKind.AGENT_WORK:
        _observe_agent_work(work, event)
    elif event.kind is EventKind.AWA_WORK_ITEM:
        _observe_awa(work, event)


def _observe_psr(work: _Work, event: Event, trigger: Trigger) -> None:
    psr_id = _sf_id(event, "Id")
    if work.get("sf_work_item_id") is None:
        work.set(sf_work_item_id=_sf_id(event, "WorkItemId"))
    if work.get("sf_psr_id") is None:
        work.set(sf_psr_id=psr_id)
    if trigger is Trigger.PSR_CREATED_TRANSFER and work.get("sf_psr_id") != psr_id:
        queue = _event_queue(event, work.tables)
        if queue.direction is not work.corr.direction:
            raise _Reject(
                EventOutcome.ERROR,
                f"PSR {psr_id}: transfer to queue {queue.name!r}, which routes {queue.direction}",
            )
        work.set(sf_psr_id=psr_id, sf_queue_id=to18(queue.sf_queue_id))
        work.set(sn_queue_sys_id=queue.sn_queue_ref)
        work.data["push_timeout"] = number(event, "PushTimeout")


def _observe_agent_work(work: _Work, event: Event) -> None:
    agent_work_id = _must(_sf_id(event, "Id"))
    user = _sf_id(event, "UserId")
    status = status_of(event, "Status", AgentWorkStatus)
    known = work.bucket("agent_work").setdefault(agent_work_id, {"user": user, "own": False})
    known["status"] = status.value
    if status is AgentWorkStatus.OPENED:
        work.set(sf_agent_work_id=agent_work_id, sf_user_id=user)
    current = work.current()
    if current and current.sf_user_id == user and current.sf_agent_work_id is None:
        work.update_segment(current.seq, sf_agent_work_id=agent_work_id)


def _observe_awa(work: _Work, event: Event) -> None:
    item = _AwaItem.read(event)
    work.bucket("work_items")[item.sys_id] = {
        "user": item.assigned_to,
        "state": item.state.value,
        "active": item.active,
    }
    if item.active and item.state is not WorkItemState.CANCELED:
        work.set(sn_work_item_sys_id=item.sys_id)
    for segment in work.segments:
        if item.external_segment_id and segment.external_segment_id == item.external_segment_id:
            changes: dict[str, Any] = {"sn_work_item_sys_id": item.sys_id}
            if item.assigned_to:
                changes["sn_user_sys_id"] = item.assigned_to
            work.update_segment(segment.seq, **changes)


def _mark_own(work: _Work, event: Event) -> None:
    if event.kind is EventKind.AGENT_WORK:
        agent_work_id = _must(_sf_id(event, "Id"))
        work.bucket("agent_work")[agent_work_id]["own"] = True
        work.set(sf_agent_work_id=agent_work_id)


def _apply_rule(work: _Work, event: Event, trigger: Trigger, rule: Rule) -> Decision:
    if rule.result != "processed":
        return work.decision(
            EventOutcome(rule.result), reason=rule.note or None, rule=rule, trigger=trigger
        )
    if rule.close_segment is not None:
        work.close_segment(rule.close_segment)
    if rule.open_segment is not None:
        _open_segment(work, event, rule.open_segment)
    for action in rule.actions:
        _BUILDERS[action.op](work, event, action)
    if rule.next_state is not None:
        work.set(state=rule.next_state)
    return work.decision(EventOutcome.PROCESSED, rule=rule, trigger=trigger)


def _open_segment(work: _Work, event: Event, kind: SegmentKind) -> None:
    if kind is SegmentKind.ROUTE:
        user = _sf_id(event, "UserId")
        mapped = work.tables.user_by_sf(user)
        work.open_segment(
            kind,
            sf_user_id=user,
            sn_user_sys_id=mapped.sn_user_sys_id if mapped else None,
            sf_agent_work_id=_sf_id(event, "Id"),
        )
    else:
        work.open_segment(kind)


# --- building commands ------------------------------------------------------------------

_Builder = Callable[[_Work, Event, Action], None]


def _event_agent(work: _Work, event: Event) -> tuple[str, str]:
    """(Salesforce user, mapped ServiceNow user) named by an AgentWork event."""
    user = _must(_sf_id(event, "UserId"))
    mapped = work.tables.user_by_sf(user)
    if mapped is None:
        raise _Reject(EventOutcome.ERROR, f"Salesforce user {user} is not mapped in crosswalk.yaml")
    return user, mapped.sn_user_sys_id


def _pick_queue(work: _Work) -> tuple[QueueMap, list[str]]:
    """The queue to offer on and its candidates: re-offer limit, then the fallback queue."""
    tables = work.tables
    start = tables.queue_by_sf(work.get("sf_queue_id"))
    if start is None:
        raise _Reject(EventOutcome.ERROR, f"queue {work.get('sf_queue_id')} is not mapped")
    excluded = set(work.data.get("excluded", ()))
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
            return queue, _spread(candidates, work.corr.id)
        queue = tables.fallback_for(queue)
    raise _Reject(
        EventOutcome.ERROR,
        f"no agent left to offer to on {', '.join(tried)}: re-offer limit "
        f"{tables.policies.reoffer_limit} reached or every agent declined",
    )


def _spread(candidates: list[str], correlation_id: str) -> list[str]:
    """The candidates rotated by the conversation: every conversation prefers a different
    agent first, so offers spread over the queue instead of piling on its first agent
    (the dispatcher still skips whoever is not available)."""
    turn = int(uuid.uuid5(uuid.NAMESPACE_OID, correlation_id).hex[:8], 16) % len(candidates)
    return candidates[turn:] + candidates[:turn]


def _timeout(work: _Work) -> int:
    policies = work.tables.policies
    push_timeout = int(work.data.get("push_timeout") or 0)
    if policies.offer_timeout_from_push_timeout and push_timeout > 0:
        return push_timeout
    return policies.offer_timeout_default


def _guard_pending_offers(work: _Work) -> None:
    """Two-agent guard, ServiceNow side: no new offer while another is pending."""
    for sys_id, item in sorted(work.bucket("work_items").items()):
        if item.get("active") and item.get("state") == WorkItemState.PENDING_ACCEPT:
            _cancel_item(work, sys_id, CancelReason.MANUALLY_ASSIGNED.value)


def _targets(work: _Work, event: Event, action: Action) -> dict[str, Any]:
    """Queue and agents of an offer or transfer; records them on the new segment."""
    segment = work.segments[-1]
    if action.option("target", "queue_agents") == "event_agent":
        sf_user, sn_user = _event_agent(work, event)
        work.update_segment(segment.seq, sf_user_id=sf_user, sn_user_sys_id=sn_user)
        return {"queue_id": work.get("sn_queue_sys_id"), "candidates": [sn_user], "excluded": []}
    queue, candidates = _pick_queue(work)
    work.update_segment(segment.seq, sn_queue_sys_id=queue.sn_queue_ref)
    return {
        "queue_id": queue.sn_queue_ref,
        "candidates": candidates,
        "excluded": sorted(work.data.get("excluded", ())),
    }


def _offer(work: _Work, event: Event, action: Action) -> None:
    policies = work.tables.policies
    _guard_pending_offers(work)
    targets = _targets(work, event, action)
    segment = work.segments[-1]
    auto = action.option("enable_auto_assign", str(policies.enable_auto_assign).lower())
    params = {
        "document_table": work.get("sn_document_table"),
        "document_id": work.get("sn_document_sys_id"),
        **targets,
        "external_segment_id": segment.external_segment_id,
        "timeout": _timeout(work),
        "allowed_to_decline": policies.allowed_to_decline,
        "enable_auto_assign": auto == "true",
        "display_option": policies.display_option,
        "after_timeout_presence": policies.after_timeout_presence,
    }
    work.expect(f"awa_work_item:{segment.external_segment_id}:{WorkItemState.PENDING_ACCEPT}")
    if auto == "true":
        work.expect(f"awa_work_item:{segment.external_segment_id}:{WorkItemState.ACCEPTED}")
    work.emit(Operation.OFFER, params, segment.external_segment_id)


def _transfer(work: _Work, event: Event, action: Action) -> None:
    policies = work.tables.policies
    previous = work.segments[-2] if len(work.segments) > 1 else None
    source_queue = (previous.sn_queue_sys_id if previous else None) or work.get("sn_queue_sys_id")
    _guard_pending_offers(work)
    targets = _targets(work, event, action)
    segment = work.segments[-1]
    params: dict[str, Any] = {
        "document_table": work.get("sn_document_table"),
        "document_id": work.get("sn_document_sys_id"),
        "external_segment_id": segment.external_segment_id,
        "source_queue_id": source_queue,
        "target_type": "agent",
        "transfer_type": policies.transfer_type,
        "timeout": _timeout(work),
        "allowed_to_decline": policies.allowed_to_decline,
    }
    if action.option("target", "queue_agents") == "event_agent":
        params["target_id"] = targets["candidates"][0]
    else:
        params["candidates"] = targets["candidates"]
        params["excluded"] = targets["excluded"]
    work.expect(f"awa_work_item:{segment.external_segment_id}:{WorkItemState.PENDING_ACCEPT}")
    work.emit(Operation.TRANSFER, params, segment.external_segment_id)


def _assignee(work: _Work, event: Event) -> tuple[str, str]:
    """(ServiceNow user who accepted, mapped Salesforce user), for a new AgentWork."""
    sn_user = optional_str(event, "assigned_to") or work.get("sn_user_sys_id")
    mapped = work.tables.user_by_sn(sn_user)
    if sn_user is None or mapped is None:
        raise _Reject(
            EventOutcome.ERROR,
            f"ServiceNow user {sn_user} accepted but is not mapped to a Salesforce user",
        )
    return sn_user, to18(mapped.sf_user_id)


def _guard_assigned_agent_work(work: _Work, user: str) -> None:
    """Two-agent guard, Salesforce side: cancel another user's Assigned AgentWork first."""
    for agent_work_id, known in sorted(work.bucket("agent_work").items()):
        if known.get("status") == AgentWorkStatus.ASSIGNED and known.get("user") != user:
            _patch_agent_work(work, agent_work_id, AgentWorkPatchStatus.CANCEL)


def _prepare_assignment(work: _Work, event: Event) -> tuple[str, str, str]:
    """Resolve the assignee, apply the guard, expect the echo: (sn user, sf user, work item)."""
    sn_user, sf_user = _assignee(work, event)
    work_item = work.get("sf_work_item_id")
    if work_item is None:
        raise _Reject(EventOutcome.ERROR, "no Salesforce work item known for this conversation")
    _guard_assigned_agent_work(work, sf_user)
    segment = work.current()
    if segment is not None:
        work.update_segment(segment.seq, sf_user_id=sf_user, sn_user_sys_id=sn_user)
    work.set(sn_user_sys_id=sn_user)
    work.expect(f"agent_work:{work_item}:{sf_user}:{AgentWorkStatus.ASSIGNED}")
    return sn_user, sf_user, work_item


def _create_agent_work(work: _Work, event: Event, action: Action) -> None:
    del action
    psr = work.get("sf_psr_id")
    if psr is None:
        raise _Reject(EventOutcome.ERROR, "no PendingServiceRouting known for this conversation")
    _, sf_user, work_item = _prepare_assignment(work, event)
    params = {
        "UserId": sf_user,
        "WorkItemId": work_item,
        "PendingServiceRoutingId": psr,
        "ServiceChannelId": work.get("sf_service_channel_id"),
        "CapacityWeight": work.tables.policies.capacity_weight,
    }
    work.emit(Operation.CREATE_AGENT_WORK, params, f"{sf_user}:{psr}")


def _assign_agent_work(work: _Work, event: Event, action: Action) -> None:
    del action
    _, sf_user, work_item = _prepare_assignment(work, event)
    params: dict[str, Any] = {
        "userId": sf_user,
        "workItemId": to15(work_item),
        "capacityWeight": work.tables.policies.capacity_weight,
    }
    conversation = work.get("sf_conversation_id")
    routing_correlation = work.data.get("routing_correlation_id")
    if conversation and routing_correlation:
        # RoutingContext's documented fields; the correlation id comes with POST /route's answer
        params["routingContext"] = {
            "conversationIdentifier": conversation,
            "routingType": RoutingType.INITIAL.value,
            "routingCorrelationId": routing_correlation,
        }
    work.emit(Operation.ASSIGN_AGENT_WORK, params, f"{sf_user}:{work_item}")


def _patch_agent_work(work: _Work, agent_work_id: str, status: AgentWorkPatchStatus) -> None:
    work_item = work.get("sf_work_item_id")
    params = {
        "workId": to15(agent_work_id),
        "workItemId": to15(work_item) if work_item else None,
        "status": status.value,
        "contextType": "Agent",
    }
    result = {
        AgentWorkPatchStatus.ACCEPT: AgentWorkStatus.OPENED,
        AgentWorkPatchStatus.CLOSE: AgentWorkStatus.CLOSED,
        AgentWorkPatchStatus.DECLINE: AgentWorkStatus.DECLINED,
        AgentWorkPatchStatus.CANCEL: AgentWorkStatus.CANCELED,
    }[status]
    work.expect(f"agent_work_id:{agent_work_id}:{result.value}")
    work.emit(Operation.UPDATE_AGENT_WORK, params, f"{agent_work_id}:{status.value}")


def _update_agent_work(work: _Work, event: Event, action: Action) -> None:
    del event
    agent_work_id = work.get("sf_agent_work_id")
    if agent_work_id is None:
        raise _Reject(EventOutcome.ERROR, "no AgentWork known for this conversation")
    status = AgentWorkPatchStatus(action.option("status", AgentWorkPatchStatus.CLOSE.value))
    _patch_agent_work(work, agent_work_id, status)


def _route(work: _Work, event: Event, action: Action) -> None:
    del event
    conversation = work.get("sf_conversation_id")
    params = {
        "conversationIdentifier": conversation,
        "routingType": action.option("routingType", RoutingType.INITIAL.value),
        "routingInfo": {"queueId": work.get("sf_queue_id")},
    }
    work.emit(Operation.ROUTE, params, conversation)


def _cancel_route(work: _Work, reason: str) -> None:
    conversation = work.get("sf_conversation_id")
    if conversation is None:
        raise _Reject(EventOutcome.ERROR, "no conversation identifier known for DELETE /route")
    psr = work.get("sf_psr_id")
    if psr:
        work.expect(f"psr_deleted:{psr}")
    params = {"conversationIdentifier": conversation, "cancelReason": reason}
    work.emit(Operation.CANCEL_ROUTE, params, conversation)


def _cancel_route_action(work: _Work, event: Event, action: Action) -> None:
    del event
    _cancel_route(work, action.option("cancelReason", RouteCancelReason.CANCEL.value))


def deletes_psr_by_route(
    direction: Direction | str, conversation_id: str | None, orphan_policy: str
) -> bool:
    """An orphaned PSR goes with ``DELETE /route`` when its conversation has an Interaction
    Service identifier and was routed through that API (or the policy says so); else with
    the REST delete."""
    return bool(conversation_id) and (
        Direction(direction) is Direction.SN_TO_SF or orphan_policy == "route_api"
    )


def _delete_psr(work: _Work, event: Event, action: Action) -> None:
    """Delete the orphaned PSR: DELETE /route for conversations routed through the
    Interaction Service API (or when the policy says so), else the REST delete."""
    del event, action
    if deletes_psr_by_route(
        work.corr.direction,
        work.get("sf_conversation_id"),
        work.tables.policies.orphan_psr_deletion,
    ):
        _cancel_route(work, RouteCancelReason.CANCEL.value)
        return
    psr = work.get("sf_psr_id")
    if psr is None:
        return
    work.expect(f"psr_deleted:{psr}")
    work.emit(Operation.DELETE_PSR, {"id": psr}, psr)


def _cancel_item(work: _Work, sys_id: str, reason: str) -> None:
    work.expect(f"awa_work_item_id:{sys_id}:{WorkItemState.CANCELED}")
    work.emit(Operation.CANCEL_WORK_ITEM, {"sys_id": sys_id, "cancel_reason": reason}, sys_id)


def _cancel_work_item(work: _Work, event: Event, action: Action) -> None:
    del event
    pending_only = action.option("which", "pending") == "pending"
    reason = action.option("cancel_reason", CancelReason.MANUALLY_ASSIGNED.value)
    for sys_id, item in sorted(work.bucket("work_items").items()):
        if not item.get("active") or item.get("state") == WorkItemState.CANCELED:
            continue
        if pending_only and item.get("state") != WorkItemState.PENDING_ACCEPT:
            continue
        _cancel_item(work, sys_id, reason)


def _close_interaction(work: _Work, event: Event, action: Action) -> None:
    del event
    state = action.option("state", InteractionState.CLOSED_COMPLETE.value)
    sys_id = work.get("sn_document_sys_id")
    work.expect(f"interaction:{sys_id}:{state}")
    params = {"table": work.get("sn_document_table"), "sys_id": sys_id, "state": state}
    work.emit(Operation.CLOSE_INTERACTION, params, state)


def _create_interaction(work: _Work, event: Event, action: Action) -> None:
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
    work.expect(f"interaction:{sys_id}:{InteractionState.ON_HOLD}")
    work.emit(
        Operation.CREATE_INTERACTION,
        {"table": work.get("sn_document_table"), "record": record},
        sys_id,
    )


_BUILDERS: dict[Operation, _Builder] = {
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


# --- answers of dispatched commands -----------------------------------------------------


def _answer_field(result: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = field_value(result, name)
        if isinstance(value, str) and value:
            return value
    return None


def apply_result(correlation: Correlation, command: Command, result: Mapping[str, Any]) -> Decision:
    """What a dispatched command's answer teaches: ids it created, who got an offer.

    ``result`` is the answer's JSON (ServiceNow answers may keep their ``result`` wrapper).
    """
    body = result.get("result", result)
    body = body if isinstance(body, Mapping) else {}
    work = _State(correlation)
    try:
        _LEARN.get(command.operation, _learn_nothing)(work, command, body)
    except ValueError as exc:
        return Decision(
            EventOutcome.ERROR, reason=f"{command.operation} answer not understood: {exc}"
        )
    return work.decision(EventOutcome.PROCESSED)


def _learn_nothing(work: _State, command: Command, body: Mapping[str, Any]) -> None:
    del work, command, body


def _learn_offer(work: _State, command: Command, body: Mapping[str, Any]) -> None:
    item = body.get("work_item", body)
    item = item if isinstance(item, Mapping) else {}
    sys_id = _answer_field(item, "sys_id")
    agent = _answer_field(item, "assigned_to")
    if sys_id is None:
        raise ValueError("no work_item.sys_id")
    state = _answer_field(item, "state") or WorkItemState.PENDING_ACCEPT.value
    work.bucket("work_items")[sys_id] = {"user": agent, "state": state, "active": True}
    work.set(sn_work_item_sys_id=sys_id)
    if agent:
        work.set(sn_user_sys_id=agent)
    if command.segment_seq is not None:
        changes: dict[str, Any] = {"sn_work_item_sys_id": sys_id}
        if agent:
            changes["sn_user_sys_id"] = agent
        work.update_segment(command.segment_seq, **changes)


def _learn_agent_work(work: _State, command: Command, body: Mapping[str, Any]) -> None:
    # POST /agentWork answers agentWorkId (its "id" is the response's own UUID); the REST
    # create answers id.
    raw = _answer_field(body, "agentWorkId", "workId", "id")
    if raw is None:
        raise ValueError("no AgentWork id")
    agent_work_id = to18(raw)
    user = command.params.get("UserId") or command.params.get("userId")
    user = to18(user) if isinstance(user, str) else None
    known = work.bucket("agent_work").setdefault(
        agent_work_id, {"user": user, "status": AgentWorkStatus.ASSIGNED.value}
    )
    known["own"] = True
    work.set(sf_agent_work_id=agent_work_id)
    if command.segment_seq is not None:
        work.update_segment(command.segment_seq, sf_agent_work_id=agent_work_id)


def _learn_route(work: _State, command: Command, body: Mapping[str, Any]) -> None:
    del command
    psr = _answer_field(body, "psrId")
    work_item = _answer_field(body, "workItemId")
    routing_correlation = _answer_field(body, "routingCorrelationId")
    if routing_correlation:
        work.data["routing_correlation_id"] = routing_correlation
    if psr:
        work.set(sf_psr_id=to18(psr))
    if work_item:
        work.set(sf_work_item_id=to18(work_item))


_LEARN: dict[Operation, Callable[[_State, Command, Mapping[str, Any]], None]] = {
    Operation.OFFER: _learn_offer,
    Operation.TRANSFER: _learn_offer,
    Operation.CREATE_AGENT_WORK: _learn_agent_work,
    Operation.ASSIGN_AGENT_WORK: _learn_agent_work,
    Operation.ROUTE: _learn_route,
}
