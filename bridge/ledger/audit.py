"""Audit queries: what happened to a conversation, which segments an agent took, what a
reconciliation repaired. Read-only; each query is served by the ledger's indexes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from bridge.errors import NotFound
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

M = TypeVar("M", bound=SQLModel)


@dataclass(frozen=True)
class CorrelationFilter:
    """Filters of ``bridge ledger list`` / ``export``; None means any."""

    state: str | None = None
    direction: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    queue: str | None = None
    agent: str | None = None

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


def _either_side(value: str, sf: Any, sn: Any, seg_sf: Any, seg_sn: Any) -> ColumnElement[bool]:
    """The current holder on either side, or any segment of the correlation."""
    in_segments = select(col(Segment.correlation_id)).where(
        or_(col(seg_sf) == value, col(seg_sn) == value)
    )
    return or_(col(sf) == value, col(sn) == value, col(Correlation.id).in_(in_segments))


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
    summary: str
    ref: str
    detail: dict[str, Any]


def _segment_entries(seg: Segment) -> Iterator[TimelineEntry]:
    who = seg.sn_user_sys_id or seg.sf_user_id or seg.sn_queue_sys_id or seg.sf_queue_id or ""
    yield TimelineEntry(
        seg.opened_at,
        "segment",
        f"#{seg.seq} {seg.kind} opened {who}".rstrip(),
        seg.external_segment_id,
        {"kind": seg.kind, "to": who},
    )
    if seg.closed_at is not None:
        yield TimelineEntry(
            seg.closed_at,
            "segment",
            f"#{seg.seq} {seg.outcome or 'closed'}",
            seg.external_segment_id,
            {"outcome": seg.outcome},
        )


def _command_entries(cmd: OutboxCommand) -> Iterator[TimelineEntry]:
    name = f"{cmd.system} {cmd.operation}"
    yield TimelineEntry(
        cmd.created_at,
        "command",
        f"{name} enqueued",
        cmd.id,
        {"idempotency_key": cmd.idempotency_key},
    )
    if cmd.completed_at is not None:
        yield TimelineEntry(
            cmd.completed_at,
            "command",
            f"{name} {cmd.status}",
            cmd.id,
            {"attempts": cmd.attempts, "error": cmd.error},
        )


def timeline(detail: CorrelationDetail) -> list[TimelineEntry]:
    """Every event, segment change, command and finding of the correlation, in time order."""
    corr = detail.correlation
    entries = [
        TimelineEntry(corr.created_at, "correlation", f"opened ({corr.direction})", corr.id, {})
    ]
    for ev in detail.events:
        entries.append(
            TimelineEntry(
                ev.occurred_at,
                "event",
                f"{ev.source} {ev.kind} [{ev.status}]",
                ev.source_event_id,
                {"error": ev.error} if ev.error else {},
            )
        )
    for seg in detail.segments:
        entries.extend(_segment_entries(seg))
    for cmd in detail.commands:
        entries.extend(_command_entries(cmd))
    for f in detail.findings:
        entries.append(
            TimelineEntry(
                f.created_at,
                "finding",
                f"{f.reconciler}: {f.kind} [{f.status}]",
                f.run_id,
                {"action": f.action, "reason": f.reason},
            )
        )
    if corr.closed_at is not None:
        entries.append(
            TimelineEntry(corr.closed_at, "correlation", f"closed ({corr.state})", corr.id, {})
        )
    return sorted(entries, key=lambda e: e.at)


class AuditReader:
    """The audit queries over one read transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def list_correlations(self, flt: CorrelationFilter, limit: int) -> list[Correlation]:
        """Newest first."""
        return list(self._session.scalars(_filtered(flt).limit(limit)))

    def iter_correlations(self, flt: CorrelationFilter, batch: int = 1000) -> Iterator[Correlation]:
        """Every matching correlation, streamed (for exports)."""
        yield from self._session.scalars(_filtered(flt).execution_options(yield_per=batch))

    def _rows(self, model: type[M], correlation_id: str, order: Any) -> list[M]:
        stmt = select(model).where(col(model.correlation_id) == correlation_id)  # type: ignore[attr-defined]
        return list(self._session.scalars(stmt.order_by(order)))

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
                c.stream: {"position": c.position, "updated_at": c.updated_at}
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
