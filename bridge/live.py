"""What the two live systems hold, read through the adapters in a handful of batched
queries, for ``bridge mappings check --live``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from bridge.salesforce.api import SalesforceApi
from bridge.salesforce.ids import to18
from bridge.servicenow.api import ServiceNowApi

PAGE = 2000


class AdapterDirectory:
    """``bridge.mapping.LiveDirectory`` over the Salesforce and ServiceNow adapters."""

    def __init__(self, salesforce: SalesforceApi, servicenow: ServiceNowApi) -> None:
        self._sf = salesforce
        self._sn = servicenow

    def _sf_ids(self, soql: str) -> set[str]:
        return {to18(str(r["Id"])) for r in self._sf.query(soql)}

    def sf_queue_ids(self) -> set[str]:
        return self._sf_ids("SELECT Id FROM Group WHERE Type = 'Queue'")

    def sf_user_ids(self) -> set[str]:
        return self._sf_ids("SELECT Id FROM User WHERE IsActive = true")

    def sf_service_channel_ids(self) -> set[str]:
        return self._sf_ids("SELECT Id FROM ServiceChannel")

    def sn_queues(self) -> Mapping[str, str | None]:
        rows = self._sn.query("awa_queue", "ORDERBYsys_id", ("external_id",))
        return {r["sys_id"]: (r.get("external_id") or None) for r in rows}

    def sn_user_roles(self) -> Mapping[str, set[str]]:
        roles = {
            r["sys_id"]: r["name"]
            for r in self._sn.query("sys_user_role", "nameSTARTSWITHawa_", ("name",))
        }
        if not roles:
            return {}
        grants = self._sn.query("sys_user_has_role", f"roleIN{','.join(roles)}", ("user", "role"))
        out: dict[str, set[str]] = defaultdict(set)
        for grant in grants:
            out[grant["user"]].add(roles[grant["role"]])
        return dict(out)
