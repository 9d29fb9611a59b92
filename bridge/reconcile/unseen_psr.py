"""PSRs the bridge never saw: a PSR of a mapped external-routing queue that no correlation
knows (a missed poll, a cursor reset too late). It is adopted: fed to the inbox as if intake
had read it, so the engine opens the conversation and offers it as usual."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from bridge import engine
from bridge.adapters.salesforce.client import parse_sf_datetime
from bridge.domain import Direction, Event, EventKind, System, Trigger
from bridge.errors import BridgeError
from bridge.ledger.ports import NewEvent
from bridge.reconcile.base import (
    Context,
    PlannedFinding,
    RepairWriter,
    grace_note,
    salesforce_event,
)
from bridge.reconcile.reads import psr_owners, queue_ids, scan_psrs, sf18

KIND = "unseen_psr"
ADOPTABLE = (Trigger.PSR_CREATED, Trigger.PSR_CREATED_TRANSFER)


def _event(psr: dict[str, Any]) -> NewEvent:
    return salesforce_event(KIND, EventKind.PSR, psr)


def _trigger(psr: dict[str, Any], event: NewEvent) -> Trigger | None:
    try:
        return engine.classify(
            Event(System.SALESFORCE, EventKind.PSR, event.source_event_id, event.occurred_at, psr)
        )
    except BridgeError:
        return None


class UnseenPsr(RepairWriter):
    name = KIND
    description = "PSRs of mapped queues no correlation knows: adopt them"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        queues = queue_ids(ctx.tables, Direction.SF_TO_SN)
        young = ctx.now - ctx.options.unseen_grace
        too_young = 0
        for page in scan_psrs(ctx, queues, since, self.name):
            owners = psr_owners(ctx, [i for i in (sf18(p["Id"]) for p in page) if i])
            for psr in page:
                psr_id = sf18(psr["Id"])
                if psr_id is None or psr_id in owners:
                    continue
                if parse_sf_datetime(psr["CreatedDate"]) > young:
                    too_young += 1  # intake may simply not have read it yet
                    continue
                yield self._finding(psr_id, psr)
        grace = ctx.options.unseen_grace
        note = grace_note(self.name, {"PSR(s) no correlation knows": too_young}, grace)
        if note is not None:
            yield note

    @staticmethod
    def _finding(psr_id: str, psr: dict[str, Any]) -> PlannedFinding:
        event = _event(psr)
        trigger = _trigger(psr, event)
        detail = {"queue": psr.get("QueueId"), "work_item": psr.get("WorkItemId")}
        if trigger not in ADOPTABLE:
            return PlannedFinding(
                kind=KIND,
                subject=psr_id,
                reason=(
                    f"PSR {psr_id} is unknown to the bridge and already "
                    f"{'pushed to an agent' if psr.get('IsPushed') else 'declined or malformed'}"
                    ": adopt it by hand (or delete it)"
                ),
                detail=detail,
            )
        return PlannedFinding(
            kind=KIND,
            subject=psr_id,
            reason=f"PSR {psr_id} on a mapped queue has no correlation",
            action="adopt",
            detail=detail,
            events=(event,),
        )
