"""AgentWork still Assigned (pushed, not accepted) while the conversation was accepted by
someone else, or is over: two agents would hold one conversation. The AgentWork as read is
fed to the inbox; the engine sees it left behind (``agent_work.still_assigned``) and
cancels it (``PATCH /agentWork`` Cancel). A Salesforce transfer to an agent (the bridge's
``transferring`` state) keeps an Assigned AgentWork on purpose and is left alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from bridge import engine
from bridge.adapters.salesforce.client import parse_sf_datetime, soql_datetime
from bridge.domain import AgentWorkStatus, CorrelationState, EventKind, Operation
from bridge.ledger.lookups import CorrelationSummary
from bridge.reconcile.base import Context, PlannedFinding, RepairWriter, salesforce_event
from bridge.reconcile.reads import (
    FINAL_STATES,
    bridge_agent_work,
    correlations_by,
    scan_soql,
    sf18,
)

KIND = "assigned_elsewhere"
FIELDS = (
    "Status",
    "UserId",
    "WorkItemId",
    "PendingServiceRoutingId",
    "CreatedDate",
    "SystemModstamp",
)


def elsewhere(corr: CorrelationSummary, user_id: str | None, *, made_by_bridge: bool) -> bool:
    """Over: any Assigned AgentWork is stale. Accepted: an AgentWork the bridge made for
    another agent is stale (one made by Salesforce for another agent is a transfer the
    bridge has yet to hear of, and is left alone)."""
    return engine.agent_work_stale(
        CorrelationState(corr.state), sf18(corr.sf_user_id), user_id, made_by_bridge=made_by_bridge
    )


class AssignedElsewhere(RepairWriter):
    name = KIND
    description = "AgentWork still Assigned while the work was accepted elsewhere: cancel it"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        where = f"Status = '{AgentWorkStatus.ASSIGNED.value}'"
        if since is not None:
            where += f" AND CreatedDate >= {soql_datetime(since)}"
        soql = f"SELECT Id, {', '.join(FIELDS)} FROM AgentWork WHERE {where}"
        young = ctx.now - ctx.options.unseen_grace
        for page in scan_soql(ctx, soql, self.name):
            owners = correlations_by(
                ctx, "sf_work_item_id", (sf18(w["WorkItemId"]) or "" for w in page)
            )
            own = bridge_agent_work(ctx, [sf18(w["Id"]) or "" for w in page])
            for work in page:
                corr = owners.get(sf18(work["WorkItemId"]) or "")
                if corr is None or parse_sf_datetime(work["CreatedDate"]) > young:
                    continue  # not ours, or so new intake may not have read it
                made = sf18(work["Id"]) in own
                if elsewhere(corr, sf18(work["UserId"]), made_by_bridge=made):
                    yield self._finding(corr, work)

    @staticmethod
    def _finding(corr: CorrelationSummary, work: dict[str, Any]) -> PlannedFinding:
        work_id = sf18(work["Id"]) or str(work["Id"])
        event = salesforce_event(KIND, EventKind.AGENT_WORK, {**work, "Id": work_id}, corr.id)
        holder = "nobody: it is over" if corr.state in FINAL_STATES else corr.sf_user_id
        return PlannedFinding(
            kind=KIND,
            subject=work_id,
            reason=(
                f"AgentWork {work_id} of {work['UserId']} is still Assigned; the conversation "
                f"is {corr.state}, held by {holder}"
            ),
            action=Operation.UPDATE_AGENT_WORK.value,
            correlation_id=corr.id,
            detail={"user": work["UserId"], "state": corr.state},
            events=(event,),
        )
