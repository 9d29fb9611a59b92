"""A conversation across both systems as the engine sees it: the correlation and its
segments (each offer, transfer or route leg)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.domain.vocabulary import (
    AgentWorkStatus,
    CorrelationState,
    Direction,
    SegmentKind,
    SegmentOutcome,
    WorkItemState,
)


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


@dataclass(frozen=True, slots=True)
class AgentWorkSeen:
    """An AgentWork of the conversation as last seen: its user and status, and whether the
    bridge made it."""

    user: str | None
    status: AgentWorkStatus
    own: bool = False


@dataclass(frozen=True, slots=True)
class AwaWorkItemSeen:
    """An awa_work_item of the conversation as last seen."""

    user: str | None
    state: WorkItemState
    active: bool


@dataclass(frozen=True)
class ConversationData:
    """What the engine keeps of a conversation beside the columns; changed by copy.

    ``excluded``: ServiceNow users who declined, rejected or timed out (not offered again);
    ``expect``: echo keys of the changes the bridge caused (``bridge.engine.echo``);
    ``routing_correlation_id``: from ``POST /route``'s answer, for ``POST /agentWork``;
    ``push_timeout`` and ``channel``: of the PSR the conversation started from.
    """

    agent_work: Mapping[str, AgentWorkSeen] = field(default_factory=dict)
    work_items: Mapping[str, AwaWorkItemSeen] = field(default_factory=dict)
    excluded: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()
    routing_correlation_id: str | None = None
    push_timeout: int = 0
    channel: str | None = None


@dataclass(frozen=True)
class Correlation:
    """One conversation across both systems (mirrors the ledger's correlation + segments);
    ``data`` is what the engine keeps beside the columns."""

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
    data: ConversationData = field(default_factory=ConversationData)
    segments: tuple[Segment, ...] = ()


def load_data(stored: Mapping[str, Any] | None) -> ConversationData:
    """The correlation's working data from its stored JSON (the ledger's ``data`` column)."""
    stored = stored or {}
    return ConversationData(
        agent_work={
            agent_work_id: AgentWorkSeen(
                user=seen.get("user"),
                status=AgentWorkStatus(seen.get("status", AgentWorkStatus.ASSIGNED)),
                own=bool(seen.get("own", False)),
            )
            for agent_work_id, seen in (stored.get("agent_work") or {}).items()
        },
        work_items={
            sys_id: AwaWorkItemSeen(
                user=seen.get("user"),
                state=WorkItemState(seen.get("state", WorkItemState.PENDING_ACCEPT)),
                active=bool(seen.get("active", False)),
            )
            for sys_id, seen in (stored.get("work_items") or {}).items()
        },
        excluded=tuple(stored.get("excluded") or ()),
        expect=tuple(stored.get("expect") or ()),
        routing_correlation_id=stored.get("routing_correlation_id"),
        push_timeout=int(stored.get("push_timeout") or 0),
        channel=stored.get("channel"),
    )


def dump_data(data: ConversationData) -> dict[str, Any]:
    """The correlation's working data as the JSON the ledger stores (the keys ledgers
    already hold; empty ones left out)."""
    stored: dict[str, Any] = {}
    if data.push_timeout:
        stored["push_timeout"] = data.push_timeout
    if data.channel is not None:
        stored["channel"] = data.channel
    if data.agent_work:
        stored["agent_work"] = {
            agent_work_id: {"user": seen.user, "status": seen.status.value, "own": seen.own}
            for agent_work_id, seen in data.agent_work.items()
        }
    if data.work_items:
        stored["work_items"] = {
            sys_id: {"user": seen.user, "state": seen.state.value, "active": seen.active}
            for sys_id, seen in data.work_items.items()
        }
    if data.excluded:
        stored["excluded"] = list(data.excluded)
    if data.expect:
        stored["expect"] = list(data.expect)
    if data.routing_correlation_id is not None:
        stored["routing_correlation_id"] = data.routing_correlation_id
    return stored
