"""A conversation across both systems as the engine sees it: the correlation and its
segments (each offer, transfer or route leg)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.domain.vocabulary import CorrelationState, Direction, SegmentKind, SegmentOutcome


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


def load_data(stored: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The correlation's working data from its stored JSON (the ledger's ``data`` column)."""
    return dict(stored or {})


def dump_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The correlation's working data as the JSON the ledger stores."""
    return dict(data)
