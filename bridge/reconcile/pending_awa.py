"""AWA work items still queued or pending accept for a conversation that ended in
Salesforce (the customer left, the work was closed): an agent would be offered a dead
conversation. They are cancelled."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime

from bridge.ledger.store import NewCommand
from bridge.model import CancelReason, Operation, WorkItemState
from bridge.reconcile.base import Context, PlannedFinding, Repairs
from bridge.reconcile.reads import FINAL_STATES, Facts, correlations_by, scan_sn, sn_queue_refs

KIND = "pending_awa"
WORK_ITEM_FIELDS = ("state", "document_id", "queue", "assigned_to", "external_segment_id")
# Status values of a Salesforce work item (MessagingSession, Case) once it is over.
SF_ENDED = frozenset({"Ended", "Closed"})


def _ended_in_salesforce(ctx: Context, corrs: Sequence[Facts]) -> dict[str, str]:
    """Facts id → how its Salesforce work item ended ("Ended", "Closed", "deleted"),
    for those that did: the ledger says so, or the work items, read in IN batches."""
    ended = {c.id: c.state for c in corrs if c.state in FINAL_STATES}
    by_type: dict[str, dict[str, str]] = defaultdict(dict)
    for corr in corrs:
        channel = ctx.tables.channel_by_sf(corr.sf_service_channel_id)
        if corr.id not in ended and corr.sf_work_item_id and channel is not None:
            by_type[channel.sf_work_item_type][corr.sf_work_item_id] = corr.id
    for sobject, wanted in by_type.items():
        found = {
            str(r["Id"]): str(r.get("Status"))
            for r in ctx.salesforce.fetch(sobject, list(wanted), ["Status"])
        }
        for work_item, corr_id in wanted.items():
            status = found.get(work_item, found.get(work_item[:15], "deleted"))
            if status in SF_ENDED or status == "deleted":
                ended[corr_id] = status
    return ended


class PendingAwa(Repairs):
    name = KIND
    description = "AWA work items still pending for conversations that ended in Salesforce"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        queues = sn_queue_refs(ctx.tables)
        if not queues:
            return
        states = f"{WorkItemState.QUEUED.value},{WorkItemState.PENDING_ACCEPT.value}"
        condition = f"active=true^stateIN{states}^queueIN{','.join(queues)}"
        for rows in scan_sn(
            ctx, "awa_work_item", WORK_ITEM_FIELDS, condition, since=since, task=self.name
        ):
            owners = correlations_by(
                ctx, "sn_document_sys_id", (r.get("document_id", "") for r in rows)
            )
            ended = _ended_in_salesforce(ctx, list(owners.values()))
            for row in rows:
                corr = owners.get(row.get("document_id", ""))
                if corr is None or corr.id not in ended:
                    continue
                yield self._finding(corr, row, ended[corr.id])

    @staticmethod
    def _finding(corr: Facts, row: dict[str, str], how: str) -> PlannedFinding:
        sys_id = row["sys_id"]
        command = NewCommand(
            idempotency_key=f"reconcile:{KIND}:{sys_id}",
            correlation_id=corr.id,
            system=Operation.CANCEL_WORK_ITEM.system.value,
            operation=Operation.CANCEL_WORK_ITEM.value,
            payload={"sys_id": sys_id, "cancel_reason": CancelReason.MANUALLY_ASSIGNED.value},
        )
        return PlannedFinding(
            kind=KIND,
            subject=sys_id,
            reason=(
                f"awa_work_item {sys_id} is still {row.get('state')} but the conversation "
                f"ended in Salesforce ({how})"
            ),
            action=command.operation,
            correlation_id=corr.id,
            detail={"state": row.get("state"), "assigned_to": row.get("assigned_to")},
            commands=(command,),
            expect=(f"awa_work_item_id:{sys_id}:{WorkItemState.CANCELED.value}",),
        )
