"""The working copy of a conversation while the engine decides: changes are collected on
a ``Draft`` and come out as one ``Decision``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from bridge.domain import (
    Command,
    Correlation,
    Decision,
    EventOutcome,
    Operation,
    Segment,
    SegmentKind,
    SegmentOutcome,
    Trigger,
)
from bridge.domain.conversation import AgentWorkSeen, AwaWorkItemSeen, ConversationData
from bridge.domain.mapping import Rule, Tables
from bridge.engine.ids import derived_id


class Reject(Exception):
    """Ends a translation with a non-processed outcome and its reason."""

    def __init__(self, outcome: EventOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass
class Draft:
    """A working copy of a correlation: column changes, data and segments, commands."""

    corr: Correlation
    fields: dict[str, Any] = field(default_factory=dict)
    data: ConversationData = field(init=False)
    segments: list[Segment] = field(init=False)
    added: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    # Commands a reconciler's event asks for are keyed by that event: a repair sends
    # again what an earlier command of the same conversation failed to do.
    key_suffix: str = ""

    def __post_init__(self) -> None:
        self.data = self.corr.data
        self.segments = list(self.corr.segments)

    def get(self, name: str) -> Any:
        return self.fields[name] if name in self.fields else getattr(self.corr, name)

    def set(self, **changes: Any) -> None:
        self.fields.update(changes)

    def change_data(self, **changes: Any) -> None:
        self.data = replace(self.data, **changes)

    def see_agent_work(self, agent_work_id: str, seen: AgentWorkSeen) -> None:
        self.change_data(agent_work={**self.data.agent_work, agent_work_id: seen})

    def see_work_item(self, sys_id: str, seen: AwaWorkItemSeen) -> None:
        self.change_data(work_items={**self.data.work_items, sys_id: seen})

    def expect(self, key: str) -> None:
        """An echo key (``bridge.engine.echo``) of a change the bridge is about to cause."""
        if key not in self.data.expect:
            self.change_data(expect=(*self.data.expect, key))

    def exclude(self, sn_user_sys_id: str) -> None:
        """Not offered this conversation again (declined, rejected, timed out)."""
        if sn_user_sys_id not in self.data.excluded:
            self.change_data(excluded=(*self.data.excluded, sn_user_sys_id))

    def current(self) -> Segment | None:
        return self.segments[-1] if self.segments else None

    def update_segment(self, seq: int, **changes: Any) -> Segment:
        segment = replace(self.segments[seq - 1], **changes)
        self.segments[seq - 1] = segment
        if seq not in self.added and seq not in self.updated:
            self.updated.append(seq)
        return segment

    def emit(self, operation: Operation, params: dict[str, Any], discriminator: str) -> None:
        segment = self.current()
        seq = segment.seq if segment else None
        key = f"{self.corr.id}:{seq or 0}:{operation.value}:{discriminator}{self.key_suffix}"
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
        corr = replace(self.corr, **self.fields, data=self.data, segments=tuple(self.segments))
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
class EventDraft(Draft):
    """A draft while translating an event: its time and the tables are at hand."""

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
        declined = outcome in (SegmentOutcome.DECLINED, SegmentOutcome.TIMED_OUT)
        if declined and segment.sn_user_sys_id:
            self.exclude(segment.sn_user_sys_id)

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
