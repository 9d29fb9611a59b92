"""Orphaned PSRs: a PendingServiceRouting still present after its conversation was accepted
(or ended). The org deletes the PSR on acceptance but not on abandonment, and a delete the
bridge sent may have failed: the PSR would keep the work item in routing for ever."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from bridge.domain import CorrelationState, Operation, RouteCancelReason
from bridge.engine import deletes_psr_by_route
from bridge.ledger.store import NewCommand
from bridge.reconcile.base import Context, PlannedFinding, Repairs
from bridge.reconcile.reads import FINAL_STATES, Facts, psr_owners, queue_ids, scan_psrs, sf18

KIND = "orphaned_psr"


def deletion(ctx: Context, corr: Facts, psr_id: str) -> NewCommand:
    """How this PSR is deleted: ``DELETE /route`` for conversations routed through the
    Interaction Service API (or when the policy says so), else the REST delete."""
    params: dict[str, Any]
    if deletes_psr_by_route(
        corr.direction, corr.sf_conversation_id, ctx.tables.policies.orphan_psr_deletion
    ):
        operation = Operation.CANCEL_ROUTE
        params = {
            "conversationIdentifier": corr.sf_conversation_id,
            "cancelReason": RouteCancelReason.CANCEL.value,
        }
    else:
        operation = Operation.DELETE_PSR
        params = {"id": psr_id}
    return NewCommand(
        idempotency_key=f"reconcile:{KIND}:{psr_id}",
        correlation_id=corr.id,
        system=operation.system.value,
        operation=operation.value,
        payload=params,
    )


def orphaned(corr: Facts, psr_id: str) -> bool:
    """Ended conversations keep no PSR; an accepted one keeps none of the PSR it was
    accepted from (a newer transfer PSR is a new routing, not an orphan)."""
    if corr.state in FINAL_STATES:
        return True
    return corr.state == CorrelationState.ACTIVE and corr.sf_psr_id == psr_id


class OrphanedPsr(Repairs):
    name = KIND
    description = "PSRs still present after acceptance or abandonment: delete them"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        for page in scan_psrs(ctx, queue_ids(ctx.tables), since, self.name):
            ids = [i for i in (sf18(p["Id"]) for p in page) if i]
            owners = psr_owners(ctx, ids)
            for psr_id in ids:
                corr = owners.get(psr_id)
                if corr is None or not orphaned(corr, psr_id):
                    continue
                command = deletion(ctx, corr, psr_id)
                yield PlannedFinding(
                    kind=KIND,
                    subject=psr_id,
                    reason=f"PSR {psr_id} still exists; its conversation is {corr.state}",
                    action=command.operation,
                    correlation_id=corr.id,
                    detail={"state": corr.state, "direction": corr.direction},
                    commands=(command,),
                    expect=(f"psr_deleted:{psr_id}",),
                )
