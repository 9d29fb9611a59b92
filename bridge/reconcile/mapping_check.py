"""The mapping tables against the live systems: every mapped queue, user and channel still
exists and the agents still hold their AWA roles. A table that no longer matches the org
makes every other reconciler's view wrong, so this runs first and reports each mismatch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import datetime

from bridge.adapters.salesforce.client import SalesforceApi
from bridge.adapters.servicenow.client import ServiceNowApi
from bridge.domain.mapping import AWA_AGENT_ROLES, check_live
from bridge.reconcile.base import Context, PlannedFinding, RepairWriter
from bridge.reconcile.reads import sf18

KIND = "mapping_mismatch"


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
