"""The mapping tables against the live systems: every mapped queue, user and channel still
exists and the agents still hold their AWA roles. A table that no longer matches the org
makes every other reconciler's view wrong, so this runs first and reports each mismatch.

It also reports work that waits for the bridge on a queue the tables do not map (PSRs of
Salesforce external-routing queues, live work items of External AWA queues): intake refuses
each once (``bridge ledger events --status error``); this says, on every run, which queues
still hold such work: one finding per queue, not per record, however much waits there."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import datetime

from bridge.adapters.salesforce.client import SalesforceApi, soql_string
from bridge.adapters.salesforce.polling import EXTERNAL_ROUTING
from bridge.adapters.servicenow.client import ServiceNowApi
from bridge.adapters.servicenow.polling import EXTERNAL_QUEUE
from bridge.domain.mapping import AWA_AGENT_ROLES, check_live
from bridge.reconcile.base import Context, PlannedFinding, RepairWriter
from bridge.reconcile.reads import queue_ids, scan_soql, sf18, sn_queue_refs

KIND = "mapping_mismatch"
UNMAPPED_KIND = "unmapped_input"
# Record ids named in a finding's reason (its detail holds up to DETAIL_IDS of them).
REASON_IDS = 5
DETAIL_IDS = 100


class AdapterDirectory:
    """``bridge.domain.mapping.LiveDirectory`` read through the two adapters (a few calls each)."""

    def __init__(self, salesforce: SalesforceApi, servicenow: ServiceNowApi) -> None:
        self._sf = salesforce
        self._sn = servicenow

    def _sf_ids(self, soql: str) -> set[str]:
        return {i for i in (sf18(r.get("Id")) for r in self._sf.query(soql)) if i}

    def sf_queue_ids(self) -> set[str]:
        return self._sf_ids("SELECT Id FROM Group WHERE Type = 'Queue'")

    def sf_user_ids(self) -> set[str]:
        return self._sf_ids("SELECT Id FROM User WHERE IsActive = true")

    def sf_service_channel_ids(self) -> set[str]:
        return self._sf_ids("SELECT Id FROM ServiceChannel")

    def sn_queues(self) -> Mapping[str, str | None]:
        rows = self._sn.query("awa_queue", "", ("external_id",))
        return {r["sys_id"]: r.get("external_id") or None for r in rows}

    def sn_user_roles(self) -> Mapping[str, set[str]]:
        names = ",".join(AWA_AGENT_ROLES)
        roles = {
            r["sys_id"]: r["name"]
            for r in self._sn.query("sys_user_role", f"nameIN{names}", ("name",))
        }
        found: dict[str, set[str]] = defaultdict(set)
        if roles:
            grants = self._sn.query(
                "sys_user_has_role", f"roleIN{','.join(roles)}", ("user", "role")
            )
            for grant in grants:
                found[grant["user"]].add(roles[grant["role"]])
        active = self._sn.query("sys_user", "active=true", ("user_name",))
        return {r["sys_id"]: found.get(r["sys_id"], set()) for r in active}


class MappingCheck(RepairWriter):
    name = "mapping"
    description = "The mapping tables against the live systems: queues, users, channels"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        del since
        problems = check_live(ctx.tables, AdapterDirectory(ctx.salesforce, ctx.servicenow))
        ctx.progress(self.name, 1, 1)
        for problem in problems:
            yield PlannedFinding(
                kind=KIND,
                subject=f"{problem.file}:{problem.key}",
                reason=f"{problem.message}: fix the mapping tables or the org",
            )
        yield from unmapped_input(ctx)


def _waiting_psrs(ctx: Context) -> dict[str, list[str]]:
    """PSRs of external-routing queues the tables do not map, by queue (one query)."""
    where = f"RoutingModel = {soql_string(EXTERNAL_ROUTING)}"
    mapped = queue_ids(ctx.tables)
    if mapped:
        where += f" AND QueueId NOT IN ({', '.join(soql_string(q) for q in mapped)})"
    soql = f"SELECT Id, QueueId FROM PendingServiceRouting WHERE {where} ORDER BY Id"
    found: dict[str, list[str]] = defaultdict(list)
    for page in scan_soql(ctx, soql, MappingCheck.name):
        for psr in page:
            found[str(sf18(psr.get("QueueId")) or psr.get("QueueId"))].append(str(psr["Id"]))
    return found


def _waiting_work_items(ctx: Context) -> dict[str, list[str]]:
    """Live work items of External AWA queues the tables do not map, by queue."""
    condition = f"active=true^{EXTERNAL_QUEUE}"
    mapped = sn_queue_refs(ctx.tables)
    if mapped:
        condition += f"^queueNOT IN{','.join(mapped)}"
    found: dict[str, list[str]] = defaultdict(list)
    for row in ctx.servicenow.query("awa_work_item", f"{condition}^ORDERBYsys_id", ("queue",)):
        found[row.get("queue", "")].append(row["sys_id"])
    return found


def _unmapped_finding(subject: str, what: str, queue: str, ids: list[str]) -> PlannedFinding:
    named = ", ".join(ids[:REASON_IDS]) + (", ..." if len(ids) > REASON_IDS else "")
    return PlannedFinding(
        kind=UNMAPPED_KIND,
        subject=subject,
        reason=(
            f"{len(ids)} {what} wait on {queue}, which crosswalk.yaml does not map ({named}); "
            "the bridge refuses them (bridge ledger events --status error): map the queue "
            "or route its work elsewhere"
        ),
        detail={"queue": queue, "count": len(ids), "ids": ids[:DETAIL_IDS]},
    )


def unmapped_input(ctx: Context) -> Iterator[PlannedFinding]:
    """One finding per unmapped queue that holds work waiting for the bridge."""
    for queue, psrs in sorted(_waiting_psrs(ctx).items()):
        yield _unmapped_finding(
            f"PendingServiceRouting.QueueId:{queue}",
            "PSR(s)",
            f"Salesforce external-routing queue {queue}",
            psrs,
        )
    for queue, items in sorted(_waiting_work_items(ctx).items()):
        yield _unmapped_finding(
            f"awa_work_item.queue:{queue}",
            "work item(s)",
            f"External AWA queue {queue}",
            items,
        )
