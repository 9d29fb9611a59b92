"""Offers past their time-out with no event: the ServiceNow work item is read and what it
says (rejected, timed out, accepted, cancelled) is fed to the inbox as if intake had read
it, so the engine re-offers or goes on as usual. An item that is still pending is left to
AWA's own time-out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from bridge.adapters.servicenow.polling import WORK_ITEM_FIELDS
from bridge.domain import CorrelationState, EventKind, Operation, WorkItemState
from bridge.ledger.lookups import BATCH as LEDGER_BATCH
from bridge.ledger.lookups import OpenOffer, chunks
from bridge.reconcile.base import Context, PlannedFinding, RepairWriter, servicenow_event
from bridge.reconcile.reads import PAGE

KIND = "offer_timeout"
INTAKE_SOURCE = "servicenow"
FIELDS = ("sys_updated_on", "sys_mod_count", *WORK_ITEM_FIELDS)


def _open_offers(ctx: Context, since: datetime | None) -> Iterator[list[OpenOffer]]:
    """The newest segment of each ``offered`` correlation, when it is an open offer with a
    work item; keyset pages by correlation id."""
    last = ""
    while True:
        with ctx.ledger.reading() as tx:
            page = tx.lookups.open_offers(
                CorrelationState.OFFERED.value, after=last, limit=PAGE, since=since
            )
        if not page:
            return
        yield page
        last = page[-1].correlation_id


def _timeouts(ctx: Context, offers: Sequence[OpenOffer]) -> dict[str, int]:
    """Segment id → the time-out its offer was sent with (the policy default if none)."""
    default = ctx.tables.policies.offer_timeout_default
    found = {o.segment_id: default for o in offers}
    operations = (Operation.OFFER.value, Operation.TRANSFER.value)
    with ctx.ledger.reading() as tx:
        sent = tx.lookups.command_payloads([o.segment_id for o in offers], operations)
    for segment_id, payload in sent:
        timeout = payload.get("timeout")
        if isinstance(timeout, int) and timeout > 0:
            found[segment_id] = timeout
    return found


def _already_read(ctx: Context, rows: Sequence[dict[str, str]]) -> set[str]:
    """Source event ids intake has already recorded for these work item versions."""
    with ctx.ledger.reading() as tx:
        return tx.lookups.inbox_seen(INTAKE_SOURCE, [_intake_id(r) for r in rows])


def _intake_id(row: dict[str, str]) -> str:
    return f"awa_work_item:{row['sys_id']}:{row.get('sys_mod_count', '')}"


def _still_offered(row: dict[str, str], segment: OpenOffer) -> bool:
    return (
        row.get("state") == WorkItemState.PENDING_ACCEPT.value
        and row.get("active") == "true"
        and row.get("external_segment_id") in ("", segment.external_segment_id)
    )


class OfferTimeout(RepairWriter):
    name = KIND
    description = "Offers past their time-out with no event: read the work item, feed it"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        for page in _open_offers(ctx, since):
            for batch in chunks(page, LEDGER_BATCH):
                yield from self._plan_batch(ctx, batch)

    def _plan_batch(self, ctx: Context, segments: Sequence[OpenOffer]) -> Iterator[PlannedFinding]:
        timeouts = _timeouts(ctx, segments)
        grace = ctx.options.offer_grace
        overdue = {
            s.sn_work_item_sys_id: s
            for s in segments
            if s.opened_at + timedelta(seconds=timeouts[s.segment_id]) + grace < ctx.now
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
    def _finding(segment: OpenOffer, row: dict[str, Any]) -> PlannedFinding:
        sys_id = row["sys_id"]
        flags = [f for f in ("rejected", "timed_out") if row.get(f) == "true"]
        event = servicenow_event(KIND, EventKind.AWA_WORK_ITEM, row, segment.correlation_id)
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
