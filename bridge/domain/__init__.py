"""The bridge's domain: both systems' vocabularies, events, conversations, commands.

No I/O here.
"""

from bridge.domain.commands import (
    ClaimedCommand,
    Command,
    Decision,
)
from bridge.domain.conversation import (
    Correlation,
    Segment,
)
from bridge.domain.events import (
    Event,
    field_value,
    flag,
    number,
    optional_str,
    require_str,
    status_of,
)
from bridge.domain.vocabulary import (
    DIRECTION_STATES,
    NO_CORRELATION,
    QUEUE_TRIGGERS,
    AgentWorkPatchStatus,
    AgentWorkStatus,
    CancelReason,
    CorrelationState,
    Direction,
    EventKind,
    EventOutcome,
    InteractionState,
    Operation,
    RouteCancelReason,
    RoutingModel,
    RoutingType,
    SegmentKind,
    SegmentOutcome,
    System,
    Trigger,
    WorkItemState,
)

__all__ = [
    "DIRECTION_STATES",
    "NO_CORRELATION",
    "QUEUE_TRIGGERS",
    "AgentWorkPatchStatus",
    "AgentWorkStatus",
    "CancelReason",
    "ClaimedCommand",
    "Command",
    "Correlation",
    "CorrelationState",
    "Decision",
    "Direction",
    "Event",
    "EventKind",
    "EventOutcome",
    "InteractionState",
    "Operation",
    "RouteCancelReason",
    "RoutingModel",
    "RoutingType",
    "Segment",
    "SegmentKind",
    "SegmentOutcome",
    "System",
    "Trigger",
    "WorkItemState",
    "field_value",
    "flag",
    "number",
    "optional_str",
    "require_str",
    "status_of",
]
