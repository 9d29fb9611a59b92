"""The bridge's vocabulary: status values of both systems, events in, commands out.

No I/O here. Salesforce values keep Salesforce spelling (``DeclinedOnPushTimeout``),
ServiceNow values keep ServiceNow spelling (``pending_accept``), so a value read from either
system converts with a plain ``Enum(value)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from bridge.errors import Permanent, Skippable

E = TypeVar("E", bound=StrEnum)

# --- Salesforce -------------------------------------------------------------------------

_AGENT_WORK_CODES = {
    "Assigned": 0,
    "Unavailable": 1,
    "Declined": 2,
    "Opened": 3,
    "Closed": 4,
    "DeclinedOnPushTimeout": 5,
    "Canceled": 6,
    "Transferred": 7,
}


class AgentWorkStatus(StrEnum):
    """AgentWork.Status; ``code`` is the number PushTopic events carry for it."""

    ASSIGNED = "Assigned"
    UNAVAILABLE = "Unavailable"
    DECLINED = "Declined"
    OPENED = "Opened"
    CLOSED = "Closed"
    DECLINED_ON_PUSH_TIMEOUT = "DeclinedOnPushTimeout"
    CANCELED = "Canceled"
    TRANSFERRED = "Transferred"

    @property
    def code(self) -> int:
        return _AGENT_WORK_CODES[self.value]

    @classmethod
    def from_code(cls, code: int) -> AgentWorkStatus:
        for status in cls:
            if status.code == code:
                return status
        raise ValueError(f"unknown AgentWork status code {code}")


class RoutingModel(StrEnum):
    """QueueRoutingConfig / PendingServiceRouting RoutingModel."""

    EXTERNAL_ROUTING = "ExternalRouting"
    LEAST_ACTIVE = "LeastActive"
    MOST_AVAILABLE = "MostAvailable"


class RoutingType(StrEnum):
    """Interaction Service API ``routingType`` of ``POST /route``."""

    INITIAL = "Initial"
    TRANSFER = "Transfer"
    CONFERENCE = "Conference"


class AgentWorkPatchStatus(StrEnum):
    """Interaction Service API ``PATCH /agentWork`` status."""

    ACCEPT = "Accept"
    CLOSE = "Close"
    DECLINE = "Decline"
    CANCEL = "Cancel"


class RouteCancelReason(StrEnum):
    """Interaction Service API ``cancelReason`` of ``DELETE /route``."""

    UNKNOWN = "Unknown"
    UNAVAILABLE = "Unavailable"
    DECLINE = "Decline"
    CANCEL = "Cancel"


# --- ServiceNow -------------------------------------------------------------------------


class WorkItemState(StrEnum):
    """awa_work_item.state (rejected and timed out are flags, not states)."""

    QUEUED = "queued"
    PENDING_ACCEPT = "pending_accept"
    ACCEPTED = "accepted"
    CANCELED = "canceled"


class CancelReason(StrEnum):
    """awa_work_item.cancel_reason (empty while not canceled)."""

    NONE = ""
    DISQUALIFIED = "disqualified"
    MANUALLY_ASSIGNED = "manually_assigned"
    TIMEOUT = "timeout"
    TRANSFER_REJECTED = "transfer_rejected"


class InteractionState(StrEnum):
    """interaction.state."""

    NEW = "new"
    ON_HOLD = "on_hold"
    WORK_IN_PROGRESS = "work_in_progress"
    WRAP_UP = "wrap_up"
    CLOSED_COMPLETE = "closed_complete"
    CLOSED_ABANDONED = "closed_abandoned"


# --- the bridge -------------------------------------------------------------------------


class System(StrEnum):
    SALESFORCE = "salesforce"
    SERVICENOW = "servicenow"


class Direction(StrEnum):
    """Where a conversation starts: ``sf_to_sn`` = a Salesforce external-routing queue."""

    SF_TO_SN = "sf_to_sn"
    SN_TO_SF = "sn_to_sf"


class SegmentKind(StrEnum):
    OFFER = "offer"
    TRANSFER = "transfer"
    ROUTE = "route"


class SegmentOutcome(StrEnum):
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    TRANSFERRED = "transferred"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"
    CLOSED = "closed"


class CorrelationState(StrEnum):
    """Where a conversation stands, as the bridge sees it.

    sf_to_sn: offered (ServiceNow offer out) → assigning (accepted in ServiceNow, AgentWork
    being made) → active; ``transferring`` while a Salesforce agent-to-agent transfer waits
    for the new agent. sn_to_sf: routing (``POST /route`` done) → assigned (Omni-Channel
    pushed it to an agent) → active. Both end closed or abandoned.
    """

    OFFERED = "offered"
    ASSIGNING = "assigning"
    TRANSFERRING = "transferring"
    ROUTING = "routing"
    ASSIGNED = "assigned"
    ACTIVE = "active"
    CLOSED = "closed"
    ABANDONED = "abandoned"

    @property
    def is_final(self) -> bool:
        return self in (CorrelationState.CLOSED, CorrelationState.ABANDONED)


# The guard value of a rule that applies when no correlation exists yet.
NO_CORRELATION = "none"

DIRECTION_STATES: dict[str, tuple[CorrelationState, ...]] = {
    "sf_to_sn": (
        CorrelationState.OFFERED,
        CorrelationState.ASSIGNING,
        CorrelationState.TRANSFERRING,
        CorrelationState.ACTIVE,
        CorrelationState.CLOSED,
        CorrelationState.ABANDONED,
    ),
    "sn_to_sf": (
        CorrelationState.ROUTING,
        CorrelationState.ASSIGNED,
        CorrelationState.ACTIVE,
        CorrelationState.CLOSED,
        CorrelationState.ABANDONED,
    ),
}


class EventKind(StrEnum):
    """What an event is about.

    ``work_item`` is the Salesforce work item itself (MessagingSession / Case): the only
    place a customer's abandonment before acceptance shows when no AgentWork exists.
    """

    PSR = "psr"
    PSR_DELETED = "psr_deleted"
    AGENT_WORK = "agent_work"
    WORK_ITEM = "work_item"
    AWA_WORK_ITEM = "awa_work_item"
    INTERACTION = "interaction"


class Trigger(StrEnum):
    """What an event means for the conversation; the key of a rule (with direction and state).

    Salesforce PSR: ``created`` (new, not pushed), ``created_transfer`` (IsTransfer), ``pushed``
    (IsPushed true: someone got it), ``requeued`` (IsPushed false again after a decline,
    push time-out or an agent going offline: LastDeclinedAgentSession set), ``deleted``.
    ServiceNow awa_work_item: ``rejected`` / ``timed_out`` are a queued item with that flag;
    ``transfer_rejected`` is a canceled item with that cancel reason; ``closed`` is an item
    made inactive without being canceled (closed by a transfer).
    """

    PSR_CREATED = "psr.created"
    PSR_CREATED_TRANSFER = "psr.created_transfer"
    PSR_PUSHED = "psr.pushed"
    PSR_REQUEUED = "psr.requeued"
    PSR_DELETED = "psr.deleted"
    AGENT_WORK_ASSIGNED = "agent_work.assigned"
    AGENT_WORK_OPENED = "agent_work.opened"
    AGENT_WORK_DECLINED = "agent_work.declined"
    AGENT_WORK_DECLINED_ON_PUSH_TIMEOUT = "agent_work.declined_on_push_timeout"
    AGENT_WORK_UNAVAILABLE = "agent_work.unavailable"
    AGENT_WORK_CLOSED = "agent_work.closed"
    AGENT_WORK_CANCELED = "agent_work.canceled"
    AGENT_WORK_TRANSFERRED = "agent_work.transferred"
    SF_WORK_ITEM_OPEN = "sf_work_item.open"
    SF_WORK_ITEM_ENDED = "sf_work_item.ended"
    WORK_ITEM_QUEUED = "work_item.queued"
    WORK_ITEM_REJECTED = "work_item.rejected"
    WORK_ITEM_TIMED_OUT = "work_item.timed_out"
    WORK_ITEM_PENDING_ACCEPT = "work_item.pending_accept"
    WORK_ITEM_ACCEPTED = "work_item.accepted"
    # accepted by an agent other than the one the conversation is with (a transfer
    # inside AWA): the two-agent guard's case
    WORK_ITEM_ACCEPTED_ELSEWHERE = "work_item.accepted_elsewhere"
    WORK_ITEM_CANCELED = "work_item.canceled"
    WORK_ITEM_TRANSFER_REJECTED = "work_item.transfer_rejected"
    WORK_ITEM_CLOSED = "work_item.closed"
    INTERACTION_NEW = "interaction.new"
    INTERACTION_ON_HOLD = "interaction.on_hold"
    INTERACTION_WORK_IN_PROGRESS = "interaction.work_in_progress"
    INTERACTION_WRAP_UP = "interaction.wrap_up"
    INTERACTION_CLOSED_COMPLETE = "interaction.closed_complete"
    INTERACTION_CLOSED_ABANDONED = "interaction.closed_abandoned"


# Triggers whose event names a queue: the only ones that can open a correlation, so the
# only ones with rules for the ``none`` state.
QUEUE_TRIGGERS = frozenset(
    {
        Trigger.PSR_CREATED,
        Trigger.PSR_CREATED_TRANSFER,
        Trigger.PSR_PUSHED,
        Trigger.PSR_REQUEUED,
        Trigger.WORK_ITEM_QUEUED,
        Trigger.WORK_ITEM_REJECTED,
        Trigger.WORK_ITEM_TIMED_OUT,
        Trigger.WORK_ITEM_PENDING_ACCEPT,
        Trigger.WORK_ITEM_ACCEPTED,
        Trigger.WORK_ITEM_CANCELED,
        Trigger.WORK_ITEM_TRANSFER_REJECTED,
        Trigger.WORK_ITEM_CLOSED,
    }
)


class Operation(StrEnum):
    """A command the dispatcher executes; the params each one carries.

    Salesforce:

    - ``create_agent_work``: REST create of AgentWork. ``UserId``, ``WorkItemId``,
      ``PendingServiceRoutingId``, ``ServiceChannelId``, optional ``CapacityWeight``.
    - ``delete_psr``: REST delete of PendingServiceRouting ``id``.
    - ``route``: ``POST /route``. ``conversationIdentifier``, ``routingType``,
      ``routingInfo`` ``{"queueId"}``.
    - ``cancel_route``: ``DELETE /route``. ``conversationIdentifier``, ``cancelReason``.
    - ``assign_agent_work``: ``POST /agentWork``. ``userId``, ``workItemId`` (15 chars),
      ``capacityWeight``, ``routingContext`` ``{"routingType", "psrId"}``.
    - ``update_agent_work``: ``PATCH /agentWork``. ``workId`` (15 chars), ``workItemId``
      (15 chars), ``status`` (AgentWorkPatchStatus), ``contextType`` = ``"Agent"``.

    ServiceNow:

    - ``create_interaction``: Table API POST on ``table`` with ``record``: ``sys_id``
      (deterministic from the correlation id), ``short_description``, ``correlation_id``
      (the Salesforce work item id), ``correlation_display``, ``channel``, ``type``,
      ``state``, ``queue``.
    - ``offer``: Offer Work API, new assignment. ``document_table``, ``document_id``,
      ``queue_id``, ``external_segment_id``, ``candidates`` (sys_user sys_ids, preferred
      first: the dispatcher offers to the first one available when it sends),
      ``excluded``, ``timeout`` (seconds), ``allowed_to_decline``, ``enable_auto_assign``,
      ``display_option``, ``after_timeout_presence``.
    - ``transfer``: Offer Work API with ``transfer``. ``document_table``, ``document_id``,
      ``external_segment_id``, ``source_queue_id``, ``target_type`` (``agent`` | ``queue``),
      ``target_id`` (a queue, or one agent) or ``candidates`` + ``excluded`` (agents, the
      dispatcher picks), ``transfer_type``, ``timeout``, ``allowed_to_decline``.
    - ``cancel_work_item``: Table API PATCH awa_work_item ``sys_id``: ``state=canceled``,
      ``cancel_reason``.
    - ``close_interaction``: Table API PATCH interaction ``sys_id``: ``state``
      (``closed_complete`` | ``closed_abandoned``).
    """

    CREATE_AGENT_WORK = "create_agent_work"
    DELETE_PSR = "delete_psr"
    ROUTE = "route"
    CANCEL_ROUTE = "cancel_route"
    ASSIGN_AGENT_WORK = "assign_agent_work"
    UPDATE_AGENT_WORK = "update_agent_work"
    CREATE_INTERACTION = "create_interaction"
    OFFER = "offer"
    TRANSFER = "transfer"
    CANCEL_WORK_ITEM = "cancel_work_item"
    CLOSE_INTERACTION = "close_interaction"

    @property
    def system(self) -> System:
        return System.SERVICENOW if self in _SN_OPERATIONS else System.SALESFORCE


_SN_OPERATIONS = frozenset(
    {
        Operation.CREATE_INTERACTION,
        Operation.OFFER,
        Operation.TRANSFER,
        Operation.CANCEL_WORK_ITEM,
        Operation.CLOSE_INTERACTION,
    }
)


class EventOutcome(StrEnum):
    """What became of an event; the inbox row's status."""

    PROCESSED = "processed"
    ECHO = "echo"
    SKIPPED = "skipped"
    ERROR = "error"


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """A change one system reported, as intake read it.

    ``record`` holds Salesforce field names with JSON values, or ServiceNow fields as raw
    strings (``{"value", "display_value"}`` pairs are accepted too: the value is used).
    """

    source: System
    kind: EventKind
    source_event_id: str
    occurred_at: datetime
    record: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError(f"event {self.source_event_id}: occurred_at must be aware UTC")


def field_value(record: Mapping[str, Any], name: str) -> Any:
    """A field of a record; a ServiceNow ``{"value", "display_value"}`` pair gives its value."""
    value = record.get(name)
    if isinstance(value, dict) and "value" in value:  # dict, not Mapping: the hot path
        return value["value"]
    return value


def _where(event: Event) -> str:
    return f"{event.source} {event.kind} event {event.source_event_id}"


def require_str(event: Event, name: str) -> str:
    """A non-empty string field, or Permanent naming the field and the event."""
    value = field_value(event.record, name)
    if not isinstance(value, str) or not value:
        raise Permanent(f"{_where(event)}: field {name} missing or not a string: {value!r}")
    return value


def optional_str(event: Event, name: str) -> str | None:
    value = field_value(event.record, name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Permanent(f"{_where(event)}: field {name} is not a string: {value!r}")
    return value


def flag(event: Event, name: str) -> bool:
    """A boolean field: JSON true/false (Salesforce) or "true"/"false" (ServiceNow)."""
    value = field_value(event.record, name)
    if isinstance(value, bool):
        return value
    if value in ("true", "1"):
        return True
    if value in (None, "", "false", "0"):
        return False
    raise Permanent(f"{_where(event)}: field {name} is not a boolean: {value!r}")


def number(event: Event, name: str, default: int = 0) -> int:
    value = field_value(event.record, name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Permanent(f"{_where(event)}: field {name} is not a number: {value!r}") from None


def status_of(event: Event, name: str, enum: type[E]) -> E:
    """An enum-valued field; an unknown value is Skippable naming the value and the field."""
    raw = field_value(event.record, name)
    if isinstance(raw, int) and enum is AgentWorkStatus:
        try:
            return enum(AgentWorkStatus.from_code(raw).value)
        except ValueError:
            pass
    try:
        return enum(raw)
    except ValueError:
        known = ", ".join(m.value for m in enum)
        raise Skippable(
            f"{_where(event)}: unknown {name} {raw!r} (known: {known})", code="unknown_status"
        ) from None


# --- ledger-shaped state ----------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One offer / transfer / route leg of a conversation (mirrors the ledger's segment)."""

    seq: int
    external_segment_id: str
    kind: SegmentKind
    opened_at: datetime
    sf_queue_id: str | None = None
    sn_queue_sys_id: str | None = None
    sf_user_id: str | None = None
    sn_user_sys_id: str | None = None
    sn_work_item_sys_id: str | None = None
    sf_agent_work_id: str | None = None
    sf_psr_id: str | None = None
    closed_at: datetime | None = None
    outcome: SegmentOutcome | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_live(self) -> bool:
        """Not settled yet: offered, or accepted and still held by its agent."""
        return self.outcome is None or self.outcome is SegmentOutcome.ACCEPTED


@dataclass(frozen=True)
class Correlation:
    """One conversation across both systems (mirrors the ledger's correlation + segments).

    ``data`` holds the engine's extras: ``agent_work`` (AgentWork id → {user, status}),
    ``work_items`` (awa_work_item sys_id → {user, state}), ``excluded`` (ServiceNow users who
    declined, rejected or timed out), ``expect`` (echo keys of changes the bridge caused).
    """

    id: str
    direction: Direction
    state: CorrelationState
    version: int = 1
    sf_work_item_id: str | None = None
    sf_psr_id: str | None = None
    sf_agent_work_id: str | None = None
    sf_conversation_id: str | None = None
    sf_queue_id: str | None = None
    sf_service_channel_id: str | None = None
    sf_user_id: str | None = None
    sn_document_table: str | None = None
    sn_document_sys_id: str | None = None
    sn_work_item_sys_id: str | None = None
    sn_queue_sys_id: str | None = None
    sn_user_sys_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    segments: tuple[Segment, ...] = ()


# --- engine output ----------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One call the dispatcher makes; ``idempotency_key`` makes a repeated decision a no-op."""

    system: System
    operation: Operation
    params: Mapping[str, Any]
    idempotency_key: str
    segment_seq: int | None = None


@dataclass(frozen=True)
class Decision:
    """What one event (or one command's answer) changes.

    ``correlation`` is the new state (None when the event opens nothing and changes nothing);
    ``segments_added`` / ``segments_updated`` are the rows the glue inserts / updates. The glue
    stores them whenever they are given, whatever the outcome (an echo still teaches ids, an
    error may still close a segment); ``version`` is left for the glue to move.
    """

    outcome: EventOutcome
    correlation: Correlation | None = None
    segments_added: tuple[Segment, ...] = ()
    segments_updated: tuple[Segment, ...] = ()
    commands: tuple[Command, ...] = ()
    reason: str | None = None
    rule_id: str | None = None
    trigger: str | None = None
