"""Audit queries: what happened to a conversation, which segments an agent took, what a
reconciliation repaired. Read-only; each query is served by the ledger's indexes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from bridge.domain.events import field_value
from bridge.errors import NotFound
from bridge.ledger import words
from bridge.ledger.lookups import find_correlation_id
from bridge.ledger.rows import (
    Correlation,
    Cursor,
    Finding,
    InboxEvent,
    OutboxCommand,
    ReconcileRun,
    Segment,
)
from bridge.ledger.words import BRIDGE

M = TypeVar("M", bound=SQLModel)


def cursor_mode(stream: str, position: str) -> dict[str, str]:
    """How a stream reads, told by its name and its stored position: ``pubsub`` /
    ``pushtopic`` (a change stream: a replay id, and the org instance it came from) or
    ``poll`` (a watermark: a time and a tie-breaker key)."""
    try:
        data = json.loads(position) if position.startswith("{") else None
    except ValueError:
        data = None
    if isinstance(data, dict) and "replay_id" in data:
        lowered = stream.lower()
        if "/topic/" in lowered or "pushtopic" in lowered:
            mode = "pushtopic"
        elif "/data/" in lowered or "pubsub" in lowered:
            mode = "pubsub"
        else:
            mode = "stream"
        found = {"mode": mode, "replay_id": str(data["replay_id"])}
        if data.get("origin"):
            found["origin"] = str(data["origin"])
        return found
    return {"mode": "poll"}


@dataclass(frozen=True)
class CorrelationFilter:
    """Filters of ``bridge ledger list`` / ``export``; None means any."""

    state: str | None = None
    direction: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    queue: str | tuple[str, ...] | None = None  # one id, or any of several (a name's ids)
    agent: str | tuple[str, ...] | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.state is not None:
            out.append(col(Correlation.state) == self.state)
        if self.direction is not None:
            out.append(col(Correlation.direction) == self.direction)
        if self.since is not None:
            out.append(col(Correlation.created_at) >= self.since)
        if self.until is not None:
            out.append(col(Correlation.created_at) < self.until)
        if self.queue is not None:
            out.append(
                _either_side(
                    self.queue,
                    Correlation.sf_queue_id,
                    Correlation.sn_queue_sys_id,
                    Segment.sf_queue_id,
                    Segment.sn_queue_sys_id,
                )
            )
        if self.agent is not None:
            out.append(
                _either_side(
                    self.agent,
                    Correlation.sf_user_id,
                    Correlation.sn_user_sys_id,
                    Segment.sf_user_id,
                    Segment.sn_user_sys_id,
                )
            )
        return out


def _either_side(
    value: str | tuple[str, ...], sf: Any, sn: Any, seg_sf: Any, seg_sn: Any
) -> ColumnElement[bool]:
    """The current holder on either side, or any segment of the correlation."""
    values = (value,) if isinstance(value, str) else value
    in_segments = select(col(Segment.correlation_id)).where(
        or_(col(seg_sf).in_(values), col(seg_sn).in_(values))
    )
    return or_(col(sf).in_(values), col(sn).in_(values), col(Correlation.id).in_(in_segments))


def _filtered(flt: CorrelationFilter) -> Select[Correlation]:
    stmt = select(Correlation).where(*flt.clauses())
    return stmt.order_by(col(Correlation.created_at).desc(), col(Correlation.id))


@dataclass
class CorrelationDetail:
    """A correlation with everything recorded about it."""

    correlation: Correlation
    segments: list[Segment] = field(default_factory=list)
    events: list[InboxEvent] = field(default_factory=list)
    commands: list[OutboxCommand] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    what: str  # correlation | event | segment | command | finding
    summary: str  # what happened, in the systems' words, with the crosswalk's names
    ref: str
    detail: dict[str, Any]
    system: str = BRIDGE  # salesforce | servicenow | bridge: the lane it belongs to
    actor: str | None = None  # who did it: an agent's name, the bridge, a reconciler
    marks: tuple[str, ...] = ()  # guard, dead, refused, skipped, echo


# Order among entries of one instant: what caused a change before the change, a change
# before the commands it wrote.
_RANK = {"opened": 0, "event": 1, "segment": 2, "command": 3, "finding": 4, "closed": 5}


def _refined(ev: InboxEvent) -> datetime:
    """When the event happened, to the millisecond. ServiceNow stamps records to the
    second: the event happened in that second and before it reached the ledger, so the
    earlier of its arrival and the end of the second is the closer bound (and keeps it
    after the bridge's own calls that preceded it)."""
    at, got = ev.occurred_at, ev.received_at
    if at.microsecond != 0 or got is None or got < at:
        return at
    # arrived later than its second: the end of that second is the closest bound
    return min(got, at + timedelta(microseconds=999_999))


_Keyed = tuple[tuple[datetime, int, int], TimelineEntry]


def _cause(
    when: datetime, verb: str | None, events: Sequence[tuple[InboxEvent, words.Said]]
) -> tuple[datetime, int] | None:
    """Where a segment change recorded at ``when`` (its event's own time) sits: with the
    processed event of that time that reports this outcome, else the first of that time."""
    same = [
        (ev, said) for ev, said in events if ev.occurred_at == when and ev.status == "processed"
    ]
    if not same:
        return None
    chosen = next((ev for ev, said in same if verb and said.verb == verb), same[0][0])
    return _refined(chosen), chosen.id or 0


def _segment_entries(
    seg: Segment, names: words.Names, events: Sequence[tuple[InboxEvent, words.Said]]
) -> Iterator[_Keyed]:
    lane = words.segment_system(seg)
    base = {
        "kind": seg.kind,
        "seq": seg.seq,
        "to": words.segment_target(seg, words.NO_NAMES),
        "names": names.of(
            {
                "sf_user_id": seg.sf_user_id,
                "sn_user_sys_id": seg.sn_user_sys_id,
                "sf_queue_id": seg.sf_queue_id,
                "sn_queue_sys_id": seg.sn_queue_sys_id,
            }
        ),
    }
    placed = _cause(seg.opened_at, None, events)
    at, tie = placed or (seg.opened_at, 0)
    yield (
        (at, _RANK["segment"], tie),
        TimelineEntry(
            at,
            "segment",
            words.segment_words(seg, names),
            seg.external_segment_id,
            {**base, "recorded_at": seg.opened_at},
            system=lane,
        ),
    )
    if seg.outcome is None:
        return
    # An accepted leg stays open (no closed_at): it sits with the event that accepted it.
    when = seg.closed_at
    placed = _cause(when, seg.outcome, events) if when is not None else None
    if placed is None and when is None:
        placed = next(
            ((_refined(ev), ev.id or 0) for ev, said in events if said.verb == seg.outcome),
            None,
        )
    at, tie = placed or (when or seg.opened_at, 0)
    yield (
        (at, _RANK["segment"], tie),
        TimelineEntry(
            at,
            "segment",
            words.segment_words(seg, names, seg.outcome),
            seg.external_segment_id,
            {**base, "outcome": seg.outcome, "recorded_at": seg.closed_at},
            system=lane,
        ),
    )


def _command_entries(
    cmd: OutboxCommand, names: words.Names, offers_caused_by: set[int]
) -> Iterator[_Keyed]:
    said = words.command_words(cmd, names)
    if cmd.operation == "cancel_work_item" and cmd.caused_by_event_id in offers_caused_by:
        # a pending offer cancelled in the decision that makes a new one: no two agents
        said = words.Said(f"two-agent guard: {said.text}", said.actor, said.verb, ("guard",))
    base = {
        "operation": cmd.operation,
        "status": cmd.status,
        "attempts": cmd.attempts,
        "idempotency_key": cmd.idempotency_key,
        "names": names.of({k: v for k, v in (cmd.payload or {}).items() if isinstance(v, str)}),
    }
    yield (
        (cmd.created_at, _RANK["command"], 0),
        TimelineEntry(
            cmd.created_at,
            "command",
            f"{said.text}: enqueued",
            cmd.id,
            base,
            system=cmd.system,
            actor="bridge",
            marks=said.marks,
        ),
    )
    why = words.reason(cmd.error)
    if cmd.completed_at is not None:
        if cmd.status == "confirmed":
            outcome = f"done{words.answer_words(cmd)}"
        elif cmd.status == "dead":
            outcome = f"dead letter: {why or 'no reason recorded'}"
        else:
            outcome = cmd.status + (f": {why}" if why else "")
        tries = f" (attempt {cmd.attempts})" if cmd.attempts > 1 else ""
        marks = (*said.marks, "dead") if cmd.status == "dead" else said.marks
        yield (
            (cmd.completed_at, _RANK["command"], 1),
            TimelineEntry(
                cmd.completed_at,
                "command",
                f"{said.text}: {outcome}{tries}",
                cmd.id,
                {**base, "error": cmd.error, "answer": cmd.response},
                system=cmd.system,
                actor="bridge",
                marks=marks,
            ),
        )
    elif cmd.status == "failed":
        retry = cmd.next_attempt_at.isoformat() if cmd.next_attempt_at else "?"
        yield (
            (cmd.updated_at, _RANK["command"], 1),
            TimelineEntry(
                cmd.updated_at,
                "command",
                f"{said.text}: failed (attempt {cmd.attempts}): {why}; next attempt {retry}",
                cmd.id,
                {**base, "error": cmd.error},
                system=cmd.system,
                actor="bridge",
                marks=said.marks,
            ),
        )


def timeline(detail: CorrelationDetail, names: words.Names | None = None) -> list[TimelineEntry]:
    """Every event, segment change, command and finding of the correlation, in time order
    (to the millisecond; ties in cause-and-effect order), each in the systems' words with
    the crosswalk's names (``names``) next to ids."""
    names = names or words.NO_NAMES
    corr = detail.correlation
    keyed: list[_Keyed] = [
        (
            (corr.created_at, _RANK["opened"], 0),
            TimelineEntry(
                corr.created_at,
                "correlation",
                f"conversation opened ({corr.direction})",
                corr.id,
                {},
            ),
        )
    ]
    said_events = [(ev, words.event_words(ev, names)) for ev in detail.events]
    for ev, said in said_events:
        at = _refined(ev)
        keyed.append(
            (
                (at, _RANK["event"], ev.id or 0),
                TimelineEntry(
                    at,
                    "event",
                    said.text,
                    ev.source_event_id,
                    {
                        "kind": ev.kind,
                        "source": ev.source,
                        "status": ev.status,
                        "occurred_at": ev.occurred_at,
                        "received_at": ev.received_at,
                        **({"error": ev.error} if ev.error else {}),
                        "names": names.of(
                            {
                                k: field_value(ev.payload or {}, k)
                                for k in ("UserId", "QueueId", "assigned_to", "queue")
                            }
                        ),
                    },
                    system=words.event_system(ev),
                    actor=said.actor,
                    marks=said.marks,
                ),
            )
        )
    for seg in detail.segments:
        keyed.extend(_segment_entries(seg, names, said_events))
    offers_caused_by = {
        c.caused_by_event_id
        for c in detail.commands
        if c.operation in ("offer", "transfer") and c.caused_by_event_id is not None
    }
    for cmd in detail.commands:
        keyed.extend(_command_entries(cmd, names, offers_caused_by))
    for f in detail.findings:
        keyed.append(
            (
                (f.created_at, _RANK["finding"], 0),
                TimelineEntry(
                    f.created_at,
                    "finding",
                    f"reconciler {f.reconciler}: {f.kind} {f.subject}"
                    + (f", {f.action}" if f.action else "")
                    + f" [{f.status}]"
                    + (f": {f.reason}" if f.reason else ""),
                    f.run_id,
                    {"action": f.action, "reason": f.reason, "status": f.status},
                    actor=f"reconciler {f.reconciler}",
                ),
            )
        )
    if corr.closed_at is not None:
        keyed.append(
            (
                (corr.closed_at, _RANK["closed"], 0),
                TimelineEntry(
                    corr.closed_at,
                    "correlation",
                    f"conversation {corr.state}",
                    corr.id,
                    {},
                ),
            )
        )
    keyed.sort(key=lambda pair: pair[0])
    return [entry for _, entry in keyed]


class AuditReader:
    """The audit queries over one read transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def list_correlations(
        self, flt: CorrelationFilter, limit: int, offset: int = 0
    ) -> list[Correlation]:
        """Newest first; ``offset`` rows skipped (pages)."""
        return list(self._session.scalars(_filtered(flt).limit(limit).offset(offset)))

    def iter_correlations(self, flt: CorrelationFilter, batch: int = 1000) -> Iterator[Correlation]:
        """Every matching correlation, streamed (for exports)."""
        yield from self._session.scalars(_filtered(flt).execution_options(yield_per=batch))

    def _rows(self, model: type[M], correlation_id: str, order: Any) -> list[M]:
        stmt = select(model).where(col(model.correlation_id) == correlation_id)  # type: ignore[attr-defined]
        return list(self._session.scalars(stmt.order_by(order)))

    def find(self, any_id: str) -> str | None:
        """The id of the correlation ``any_id`` names (see ``find_correlation_id``)."""
        return find_correlation_id(self._session, any_id)

    def correlation_detail(self, any_id: str) -> CorrelationDetail:
        """Look up by any id (see ``find_correlation_id``); ``NotFound`` if none matches."""
        found = find_correlation_id(self._session, any_id)
        corr = None if found is None else self._session.get(Correlation, found)
        if corr is None:
            raise NotFound(
                f"no correlation has the id {any_id!r} (correlation id, PSR / work item / "
                "AgentWork id, sys_id or external_segment_id)"
            )
        return CorrelationDetail(
            correlation=corr,
            segments=self._rows(Segment, corr.id, col(Segment.seq)),
            events=self._rows(InboxEvent, corr.id, col(InboxEvent.id)),
            commands=self._rows(OutboxCommand, corr.id, col(OutboxCommand.created_at)),
            findings=self._rows(Finding, corr.id, col(Finding.created_at)),
        )

    def _counts(self, column: Any) -> dict[str, int]:
        rows = self._session.execute(select(column, func.count()).group_by(column))
        return {str(key): int(n) for key, n in rows}

    def stats(self) -> dict[str, Any]:
        """Counts by state and status, open correlations, the oldest unfinished command,
        intake cursors and the last reconciliation."""
        open_count = self._session.execute(
            select(func.count()).where(col(Correlation.closed_at).is_(None))
        ).scalar_one()
        oldest = self._session.execute(
            select(func.min(col(OutboxCommand.created_at))).where(
                col(OutboxCommand.status).in_(("pending", "claimed", "failed"))
            )
        ).scalar()
        last_run = self._session.scalars(
            select(ReconcileRun).order_by(col(ReconcileRun.started_at).desc()).limit(1)
        ).first()
        by_state = self._counts(col(Correlation.state))
        return {
            "correlations": {
                "total": sum(by_state.values()),
                "open": int(open_count),
                "by_state": by_state,
                "by_direction": self._counts(col(Correlation.direction)),
            },
            "segments": {"by_outcome": self._counts(func.coalesce(col(Segment.outcome), "open"))},
            "inbox": {"by_status": self._counts(col(InboxEvent.status))},
            "outbox": {
                "by_status": self._counts(col(OutboxCommand.status)),
                "oldest_unfinished_at": oldest,
            },
            "cursors": {
                c.stream: {
                    "position": c.position,
                    "updated_at": c.updated_at,
                    **cursor_mode(c.stream, c.position),
                }
                for c in self._session.scalars(select(Cursor).order_by(col(Cursor.stream)))
            },
            "last_reconcile_run": None if last_run is None else last_run.model_dump(),
        }

    def command_latencies(self) -> list[tuple[datetime, datetime]]:
        """(event received, command completed) of every completed command an event caused."""
        stmt = (
            select(col(InboxEvent.received_at), col(OutboxCommand.completed_at))
            .join(OutboxCommand, col(OutboxCommand.caused_by_event_id) == col(InboxEvent.id))
            .where(col(OutboxCommand.completed_at).is_not(None))
        )
        return [(a, b) for a, b in self._session.execute(stmt) if a and b]

    def reconcile_runs(self, limit: int) -> list[tuple[ReconcileRun, dict[str, int]]]:
        """The latest runs, newest first, each with its finding counts by status."""
        runs = list(
            self._session.scalars(
                select(ReconcileRun).order_by(col(ReconcileRun.started_at).desc()).limit(limit)
            )
        )
        counts: dict[str, dict[str, int]] = {run.id: {} for run in runs}
        if runs:
            rows = self._session.execute(
                select(col(Finding.run_id), col(Finding.status), func.count())
                .where(col(Finding.run_id).in_(list(counts)))
                .group_by(col(Finding.run_id), col(Finding.status))
            )
            for run_id, status, n in rows:
                counts[run_id][status] = int(n)
        return [(run, counts[run.id]) for run in runs]

    def run_findings(self, run_id: str) -> tuple[ReconcileRun, Sequence[Finding]]:
        run = self._session.get(ReconcileRun, run_id)
        if run is None:
            raise NotFound(f"no reconcile run {run_id!r}")
        findings = self._session.scalars(
            select(Finding).where(col(Finding.run_id) == run_id).order_by(col(Finding.created_at))
        )
        return run, list(findings)

    def inbox_events(
        self,
        *,
        statuses: Sequence[str] = (),
        source: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[InboxEvent]:
        """Inbox events, newest first: what intake received and what became of each (the
        place where bad input, refused with its reason, stays visible)."""
        stmt = select(InboxEvent)
        if statuses:
            stmt = stmt.where(col(InboxEvent.status).in_(statuses))
        if source:
            stmt = stmt.where(col(InboxEvent.source) == source)
        if kind:
            stmt = stmt.where(col(InboxEvent.kind) == kind)
        if since is not None:
            stmt = stmt.where(col(InboxEvent.received_at) >= since)
        return list(self._session.scalars(stmt.order_by(col(InboxEvent.id).desc()).limit(limit)))

    def dead_letters(self, limit: int = 50) -> list[OutboxCommand]:
        """Commands given up on (dead-lettered), newest first, with their reasons."""
        stmt = (
            select(OutboxCommand)
            .where(col(OutboxCommand.status) == "dead")
            .order_by(col(OutboxCommand.updated_at).desc())
        )
        return list(self._session.scalars(stmt.limit(limit)))

    def streams(self) -> list[StreamState]:
        """Each intake stream: its cursor's position and when it last moved, the newest
        event it recorded and how many of its events wait for the engine."""
        newest = dict(
            self._session.execute(
                select(col(InboxEvent.stream), func.max(col(InboxEvent.received_at))).group_by(
                    col(InboxEvent.stream)
                )
            ).all()
        )
        waiting = dict(
            self._session.execute(
                select(col(InboxEvent.stream), func.count())
                .where(col(InboxEvent.status) == "pending")
                .group_by(col(InboxEvent.stream))
            ).all()
        )
        cursors = {c.stream: c for c in self._session.scalars(select(Cursor))}
        out = []
        for stream in sorted(set(cursors) | set(newest)):
            cursor = cursors.get(stream)
            out.append(
                StreamState(
                    stream=stream,
                    position=None if cursor is None else cursor.position,
                    moved_at=None if cursor is None else cursor.updated_at,
                    newest_event_at=_aware(newest.get(stream)),
                    pending=int(waiting.get(stream, 0)),
                )
            )
        return out


@dataclass(frozen=True)
class StreamState:
    stream: str
    position: str | None
    moved_at: datetime | None
    newest_event_at: datetime | None
    pending: int

    def lag(self, now: datetime) -> float | None:
        """Seconds since the stream last recorded anything (its cursor moved or an event
        arrived): how far behind the source it may be."""
        seen = [t for t in (self.moved_at, self.newest_event_at) if t is not None]
        return None if not seen else max(0.0, (now - max(seen)).total_seconds())


def _aware(value: object) -> datetime | None:
    """A MAX() over a UTC column comes back without the column type (naive on SQLite)."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
