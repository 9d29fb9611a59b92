"""What the engine decides: commands for either system and the decision that carries them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.domain.conversation import Correlation, Segment
from bridge.domain.vocabulary import EventOutcome, Operation, System


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


@dataclass(frozen=True)
class ClaimedCommand:
    """An outbox command as a dispatch worker holds it: what to run, and whether the
    previous attempt ended without knowing if it took effect (``look_first``: find what
    it may have made before creating again)."""

    id: str
    correlation_id: str
    system: System
    operation: Operation
    params: Mapping[str, Any]
    attempts: int
    created_at: datetime
    segment_id: str | None = None
    # the segment's place in its conversation (what the engine knows it by)
    segment_seq: int | None = None
    look_first: bool = False
