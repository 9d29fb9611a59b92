"""The two systems' vocabularies and the bridge's own: status values, kinds, triggers,
operations.

Salesforce values keep Salesforce spelling (``DeclinedOnPushTimeout``), ServiceNow values
keep ServiceNow spelling (``pending_accept``), so a value read from either system converts
with a plain ``Enum(value)``.
"""

from __future__ import annotations

from enum import StrEnum

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
    # ended, owned by the agent who accepted it: accepted although no Opened was seen
    SF_WORK_ITEM_ENDED_ACCEPTED = "sf_work_item.ended_accepted"
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
    # Only records a reconciler read (the settled state, not a change in flight) mean
    # these: what a conversation left behind that must be cleaned up.
    PSR_ORPHANED = "psr.orphaned"
    AGENT_WORK_STILL_ASSIGNED = "agent_work.still_assigned"
    WORK_ITEM_STILL_PENDING = "work_item.still_pending"


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
