"""Offers past their time-out with no event: the ServiceNow work item is read and what it
says (rejected, timed out, accepted, cancelled) is fed to the inbox as if intake had read
it, so the engine re-offers or goes on as usual. An item that is still pending is left to
AWA's own time-out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import aliased
from sqlmodel import col

from bridge.adapters.servicenow.intake import WORK_ITEM_FIELDS, parse_sn_datetime
from bridge.domain import CorrelationState, EventKind, Operation, WorkItemState
from bridge.ledger.rows import Correlation, InboxEvent, OutboxCommand, Segment
from bridge.ledger.store import NewEvent
from bridge.reconcile.base import SOURCE, Context, PlannedFinding, Repairs
from bridge.reconcile.reads import LEDGER_BATCH, PAGE, chunks

KIND = "offer_timeout"
INTAKE_SOURCE = "servicenow"
FIELDS = ("sys_updated_on", "sys_mod_count", *WORK_ITEM_FIELDS)


def _open_offers(ctx: Context, since: datetime | None) -> Iterator[list[Segment]]:
    """The newest segment of each ``offered`` correlation, when it is an open offer with a
    work item; keyset pages by correlation id."""
    later = aliased(Segment)
    stmt = (
        select(Segment)
        .join(Correlation, col(Correlation.id) == col(Segment.correlation_id))
        .where(
            col(Correlation.state) == CorrelationState.OFFERED.value,
            col(Segment.outcome).is_(None),
            col(Segment.sn_work_item_sys_id).is_not(None),
            col(Segment.kind).in_(("offer", "transfer")),
            ~exists().where(
                col(later.correlation_id) == col(Segment.correlation_id),
                col(later.seq) > col(Segment.seq),
            ),
        )
    )
    if since is not None:
        stmt = stmt.where(col(Correlation.updated_at) >= since)
    last = ""
    while True:
        with ctx.ledger.reading() as session:
            page = list(
                session.scalars(
                    stmt.where(col(Segment.correlation_id) > last)
                    .order_by(col(Segment.correlation_id))
                    .limit(PAGE)
                )
            )
        if not page:
            return
        yield page
        last = page[-1].correlation_id


def _timeouts(ctx: Context, segments: Sequence[Segment]) -> dict[str, int]:
    """Segment id → the time-out its offer was sent with (the policy default if none)."""
    operations = (Operation.OFFER.value, Operation.TRANSFER.value)
    stmt = select(col(OutboxCommand.segment_id), col(OutboxCommand.payload)).where(
        col(OutboxCommand.segment_id).in_([s.id for s in segments]),
        col(OutboxCommand.operation).in_(operations),
    )
    default = ctx.tables.policies.offer_timeout_default
    found = {s.id: default for s in segments}
    with ctx.ledger.reading() as session:
        for segment_id, payload in session.execute(stmt):
            timeout = (payload or {}).get("timeout")
            if segment_id is not None and isinstance(timeout, int) and timeout > 0:
                found[segment_id] = timeout
    return found


def _already_read(ctx: Context, rows: Sequence[dict[str, str]]) -> set[str]:
    """Source event ids intake has already recorded for these work item versions."""
    ids = [_intake_id(r) for r in rows]
    stmt = select(col(InboxEvent.source_event_id)).where(
        col(InboxEvent.source) == INTAKE_SOURCE, col(InboxEvent.source_event_id).in_(ids)
    )
    with ctx.ledger.reading() as session:
        return set(session.scalars(stmt))


def _intake_id(row: dict[str, str]) -> str:
    return f"awa_work_item:{row['sys_id']}:{row.get('sys_mod_count', '')}"


def _still_offered(row: dict[str, str], segment: Segment) -> bool:
    return (
        row.get("state") == WorkItemState.PENDING_ACCEPT.value
        and row.get("active") == "true"
        and row.get("external_segment_id") in ("", segment.external_segment_id)
    )


class OfferTimeout(Repairs):
    name = KIND
    description = "Offers past their time-out with no event: read the work item, feed it"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        for page in _open_offers(ctx, since):
            for batch in chunks(page, LEDGER_BATCH):
                yield from self._plan_batch(ctx, batch)

    def _plan_batch(self, ctx: Context, segments: Sequence[Segment]) -> Iterator[PlannedFinding]:
        timeouts = _timeouts(ctx, segments)
        grace = ctx.options.offer_grace
        overdue = {
            s.sn_work_item_sys_id: s
            for s in segments
            if s.sn_work_item_sys_id
            and s.opened_at + timedelta(seconds=timeouts[s.id]) + grace < ctx.now
        }
        if not overdue:
            return
        ctx.progress(self.name, len(overdue), None)
        rows = {
            r["sys_id"]: r for r in ctx.servicenow.fetch("awa_work_item", list(overdue), FIELDS)
        }
        seen = _already_read(ctx, list(rows.values()))
        for sys_id, segment in overdue.items():
            row = rows.get(sys_id)
            if row is None:
                yield PlannedFinding(
                    kind=KIND,
                    subject=sys_id,
                    reason=f"awa_work_item {sys_id} of an overdue offer no longer exists",
                    correlation_id=segment.correlation_id,
                )
            elif not _still_offered(row, segment) and _intake_id(row) not in seen:
                yield self._finding(segment, row)

    @staticmethod
    def _finding(segment: Segment, row: dict[str, Any]) -> PlannedFinding:
        sys_id = row["sys_id"]
        flags = [f for f in ("rejected", "timed_out") if row.get(f) == "true"]
        event = NewEvent(
            source=SOURCE,
            source_event_id=f"reconcile:{KIND}:{sys_id}:{row.get('sys_mod_count', '')}",
            kind=EventKind.AWA_WORK_ITEM.value,
            occurred_at=parse_sn_datetime(row["sys_updated_on"]),
            payload=row,
            correlation_id=segment.correlation_id,
        )
        return PlannedFinding(
            kind=KIND,
            subject=sys_id,
            reason=(
                f"offer {segment.external_segment_id} is past its time-out; the work item is "
                f"{row.get('state')}{' (' + ', '.join(flags) + ')' if flags else ''} and no "
                "event said so"
            ),
            action="feed_event",
            correlation_id=segment.correlation_id,
            detail={"state": row.get("state"), "flags": flags},
            events=(event,),
        )
