"""Orphaned PSRs: a PendingServiceRouting still present after its conversation was accepted
(or ended). The org deletes the PSR on acceptance but not on abandonment, and a delete the
bridge sent may have failed: the PSR would keep the work item in routing for ever.

The repair is the PSR as read, fed to the inbox: the engine sees it left behind
(``psr.orphaned``) and deletes it as its rules say."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from bridge import engine
from bridge.domain import CorrelationState, EventKind, Operation
from bridge.ledger.lookups import CorrelationSummary
from bridge.ledger.ports import NewEvent
from bridge.reconcile.base import Context, PlannedFinding, RepairWriter, salesforce_event
from bridge.reconcile.reads import psr_owners, queue_ids, scan_psrs, sf18

KIND = "orphaned_psr"


def deletion(ctx: Context, corr: CorrelationSummary) -> Operation:
    """How the engine deletes this conversation's PSR: ``DELETE /route`` for conversations
    routed through the Interaction Service API (or when the policy says so), else the REST
    delete (the finding's action; the engine decides the same way)."""
    by_route = engine.deletes_psr_by_route(
        corr.direction, corr.sf_conversation_id, ctx.tables.policies.orphan_psr_deletion
    )
    return Operation.CANCEL_ROUTE if by_route else Operation.DELETE_PSR


def orphaned(corr: CorrelationSummary, psr_id: str) -> bool:
    """Ended conversations keep no PSR; an accepted one keeps none of the PSR it was
    accepted from (a newer transfer PSR is a new routing, not an orphan)."""
    return engine.psr_orphaned(CorrelationState(corr.state), corr.sf_psr_id, psr_id)


def repair_event(psr: dict[str, Any], correlation_id: str) -> NewEvent:
    """The PSR as read, for the engine."""
    return salesforce_event(KIND, EventKind.PSR, psr, correlation_id)


class OrphanedPsr(RepairWriter):
    name = KIND
    description = "PSRs still present after acceptance or abandonment: delete them"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        for page in scan_psrs(ctx, queue_ids(ctx.tables), since, self.name):
            by_id = {i: p for p in page if (i := sf18(p["Id"]))}
            owners = psr_owners(ctx, list(by_id))
            for psr_id, psr in by_id.items():
                corr = owners.get(psr_id)
                if corr is None or not orphaned(corr, psr_id):
                    continue
                event = repair_event(psr, corr.id)
                yield PlannedFinding(
                    kind=KIND,
                    subject=psr_id,
                    reason=f"PSR {psr_id} still exists; its conversation is {corr.state}",
                    action=deletion(ctx, corr).value,
                    correlation_id=corr.id,
                    detail={"state": corr.state, "direction": corr.direction},
                    events=(event,),
                )
