"""Salesforce commands → requests: REST (AgentWork, PSR) and the Interaction Service API.

Each answer is what Salesforce said, unwrapped once: the AgentWork ``id`` a create made,
the Interaction Service API's JSON as it came. Errors are the adapter's (``ERRORS``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, timedelta
from typing import Any

from bridge.adapters.salesforce.auth import SYSTEM
from bridge.adapters.salesforce.client import SalesforceApi, soql_datetime, soql_string
from bridge.domain import ClaimedCommand, Operation
from bridge.errors import Permanent

# How far the bridge's clock (a command's enqueue time) and Salesforce's (CreatedDate)
# may disagree when looking for what an earlier attempt created.
CLOCK_MARGIN = timedelta(seconds=30)
# What PATCH /agentWork takes; the command's other params are the engine's.
_UPDATE_AGENT_WORK_FIELDS = ("workId", "status", "contextType")


class SalesforceExecutor:
    """Runs one Salesforce command."""

    def __init__(self, api: SalesforceApi) -> None:
        self._api = api

    def execute(self, command: ClaimedCommand) -> Mapping[str, Any]:
        params = command.params
        operation = command.operation
        if operation is Operation.CREATE_AGENT_WORK:
            if command.look_first and (found := self._find_agent_work(command)) is not None:
                return {"id": found, "looked_up": True}
            return {"id": self._api.create("AgentWork", params)}
        if operation is Operation.DELETE_PSR:
            # a PSR already gone is Skippable by the error table
            self._api.delete("PendingServiceRouting", str(params["id"]))
            return {"deleted": params["id"]}
        # Interaction Service API: the command id is the RequestId, so a retry of a request
        # that did reach Salesforce returns the first answer instead of acting twice.
        if operation is Operation.ROUTE:
            return self._api.route(command.id, params)
        if operation is Operation.CANCEL_ROUTE:
            return self._api.cancel_route(command.id, params)
        if operation is Operation.ASSIGN_AGENT_WORK:
            return self._api.assign_agent_work(command.id, params)
        if operation is Operation.UPDATE_AGENT_WORK:
            body = {k: params[k] for k in _UPDATE_AGENT_WORK_FIELDS if k in params}
            return self._api.update_agent_work(command.id, body)
        raise Permanent(f"not a Salesforce operation: {operation}", system=SYSTEM)

    def _find_agent_work(self, command: ClaimedCommand) -> str | None:
        """The AgentWork an earlier attempt of this command may have created (look before
        retrying), in whatever status it is now: the agent may have accepted, closed or
        declined it since. An earlier leg's AgentWork for the same PSR and user predates
        the command, so only those created after it was enqueued count (less a margin for
        the two clocks), the newest first."""
        params = command.params
        since = command.created_at
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        soql = (
            "SELECT Id FROM AgentWork WHERE PendingServiceRoutingId = "
            f"{soql_string(str(params['PendingServiceRoutingId']))} AND UserId = "
            f"{soql_string(str(params['UserId']))} AND CreatedDate >= "
            f"{soql_datetime(since - CLOCK_MARGIN)} ORDER BY CreatedDate DESC, Id DESC LIMIT 1"
        )
        for record in self._api.query(soql):
            return str(record["Id"])
        return None
