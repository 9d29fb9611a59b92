"""AWA work items still queued or pending accept for a conversation that ended in
Salesforce (the customer left, the work was closed): an agent would be offered a dead
conversation.

When the bridge never heard of the end (its correlation is still open), the Salesforce
work item's status (or its deletion) is fed to the inbox as if intake had read it: the
engine then does the whole clean-up its rules say (cancel the offer, close the interaction,
delete the orphaned PSR). When the bridge knew (the correlation is over) but the AWA item
survived, the item as read is fed: the engine sees it left behind
(``work_item.still_pending``) and cancels it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.adapters.salesforce.client import parse_sf_datetime
from bridge.adapters.servicenow.polling import WORK_ITEM_FIELDS
from bridge.domain import EventKind, Operation, WorkItemState
from bridge.engine import SF_WORK_ITEM_ENDED
from bridge.ledger.lookups import CorrelationSummary
from bridge.ledger.ports import NewEvent
from bridge.reconcile.base import SOURCE, Context, PlannedFinding, RepairWriter, servicenow_event
from bridge.reconcile.reads import FINAL_STATES, correlations_by, scan_sn, sn_queue_refs

KIND = "pending_awa"
FIELDS = ("sys_updated_on", "sys_mod_count", *WORK_ITEM_FIELDS)
# How a Salesforce work item that no longer exists ended.
GONE = "deleted"


@dataclass(frozen=True)
class _Ended:
    """How a conversation ended: the ledger's final state, or the Salesforce work item's
    Status (or ``deleted``), with the work item's fields when it was read."""

    how: str
    work_item: dict[str, object] | None = None


def _ended(ctx: Context, corrs: Sequence[CorrelationSummary]) -> dict[str, _Ended]:
    """Correlation id → how it ended, for those that did; work items read in IN batches."""
    ended = {c.id: _Ended(c.state) for c in corrs if c.state in FINAL_STATES}
    by_type: dict[str, dict[str, str]] = defaultdict(dict)
    for corr in corrs:
        channel = ctx.tables.channel_by_sf(corr.sf_service_channel_id)
        if corr.id not in ended and corr.sf_work_item_id and channel is not None:
            by_type[channel.sf_work_item_type][corr.sf_work_item_id] = corr.id
    for sobject, wanted in by_type.items():
        found = {
            str(r["Id"]): {k: v for k, v in r.items() if k != "attributes"}
            for r in ctx.salesforce.fetch(sobject, list(wanted), ["Status", "SystemModstamp"])
        }
        for work_item, corr_id in wanted.items():
            record = found.get(work_item)
            if record is None:
                # Salesforce names a deleted record by IsDeleted; the engine reads it so.
                ended[corr_id] = _Ended(GONE, {"Id": work_item, "IsDeleted": True})
            elif record.get("Status") in SF_WORK_ITEM_ENDED:
                ended[corr_id] = _Ended(str(record["Status"]), record)
    return ended


class PendingAwa(RepairWriter):
    name = KIND
    description = "AWA work items still pending for conversations that ended in Salesforce"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        queues = sn_queue_refs(ctx.tables)
        if not queues:
            return
        states = f"{WorkItemState.QUEUED.value},{WorkItemState.PENDING_ACCEPT.value}"
        condition = f"active=true^stateIN{states}^queueIN{','.join(queues)}"
        for rows in scan_sn(ctx, "awa_work_item", FIELDS, condition, since=since, task=self.name):
            owners = correlations_by(
                ctx, "sn_document_sys_id", (r.get("document_id", "") for r in rows)
            )
            ended = _ended(ctx, list(owners.values()))
            fed: set[str] = set()
            for row in rows:
                corr = owners.get(row.get("document_id", ""))
                end = ended.get(corr.id) if corr is not None else None
                if corr is None or end is None:
                    continue
                if end.work_item is None:
                    yield _left_pending(corr, row, end.how)
                elif corr.id not in fed:  # one event per conversation, not per item
                    fed.add(corr.id)
                    yield _feed(ctx, corr, row, end)


def _reason(corr: CorrelationSummary, row: dict[str, str], how: str) -> str:
    return (
        f"awa_work_item {row['sys_id']} is still {row.get('state')} but the conversation "
        f"ended ({how}; correlation {corr.state})"
    )


def _left_pending(corr: CorrelationSummary, row: dict[str, str], how: str) -> PlannedFinding:
    """The AWA item as read: the engine cancels what an ended conversation left pending."""
    sys_id = row["sys_id"]
    event = servicenow_event(KIND, EventKind.AWA_WORK_ITEM, row, corr.id)
    return PlannedFinding(
        kind=KIND,
        subject=sys_id,
        reason=_reason(corr, row, how),
        action=Operation.CANCEL_WORK_ITEM.value,
        correlation_id=corr.id,
        detail={"state": row.get("state"), "assigned_to": row.get("assigned_to")},
        events=(event,),
    )


def _feed(
    ctx: Context, corr: CorrelationSummary, row: dict[str, str], end: _Ended
) -> PlannedFinding:
    """The Salesforce work item's end, as the event intake would have recorded."""
    assert end.work_item is not None
    record = end.work_item
    stamp = record.get("SystemModstamp")
    event = NewEvent(
        source=SOURCE,
        source_event_id=f"reconcile:{KIND}:{record['Id']}:{end.how}",
        kind=EventKind.WORK_ITEM.value,
        # a deleted work item has no stamp left: it was found gone now
        occurred_at=parse_sf_datetime(str(stamp)) if stamp else ctx.now,
        payload=record,
        correlation_id=corr.id,
    )
    return PlannedFinding(
        kind=KIND,
        subject=str(record["Id"]),
        reason=_reason(corr, row, end.how) + ", and the bridge never heard of the end",
        action="feed_event",
        correlation_id=corr.id,
        detail={"awa_work_item": row["sys_id"], "state": row.get("state")},
        events=(event,),
    )
