"""ServiceNow commands → requests: the Table API and the AWA Offer Work API.

Each answer is the record, unwrapped once: the row a Table API write returns (no
``result`` wrapper), the AWA work item an offer or transfer made (``sys_id``, ``queue``,
``assigned_to`` = the agent offered, ...). A look-before-retry that finds what an earlier
attempt made returns the same shape with ``looked_up``. Errors are the adapter's
(``ERRORS``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bridge.adapters.servicenow.auth import SYSTEM
from bridge.adapters.servicenow.client import AGENT_NOT_AVAILABLE, ServiceNowApi
from bridge.domain import ClaimedCommand, Operation
from bridge.errors import Permanent, Retriable

log = logging.getLogger(__name__)

# When no candidate agent is available, wait this long before looking again.
NO_AGENT_RETRY_SECONDS = 5.0
# The offer's ``assignment`` settings the engine may give (empty ones are left out).
_ASSIGNMENT_FIELDS = (
    "timeout",
    "allowed_to_decline",
    "enable_auto_assign",
    "display_option",
    "after_timeout_presence",
)


class ServiceNowExecutor:
    """Runs one ServiceNow command."""

    def __init__(self, api: ServiceNowApi) -> None:
        self._api = api

    def execute(self, command: ClaimedCommand) -> Mapping[str, Any]:
        params = command.params
        operation = command.operation
        if operation is Operation.CREATE_INTERACTION:
            return self._create(params, look_first=command.look_first)
        if operation in (Operation.OFFER, Operation.TRANSFER):
            if command.look_first and (found := self._find_offer(params)) is not None:
                return {**found, "looked_up": True}
            return self._offer(operation, params)
        if operation is Operation.CANCEL_WORK_ITEM:
            values = {"state": "canceled", "cancel_reason": params.get("cancel_reason", "")}
            return self._api.update("awa_work_item", str(params["sys_id"]), values)
        if operation is Operation.CLOSE_INTERACTION:
            values = {"state": str(params["state"])}
            return self._api.update("interaction", str(params["sys_id"]), values)
        raise Permanent(f"not a ServiceNow operation: {operation}", system=SYSTEM)

    def _create(self, params: Mapping[str, Any], *, look_first: bool) -> Mapping[str, Any]:
        table = str(params.get("table", "interaction"))
        record = dict(params["record"])
        if look_first and (found := self._api.get(table, str(record["sys_id"]))) is not None:
            return {**found, "looked_up": True}
        return self._api.insert(table, record)

    def _find_offer(self, params: Mapping[str, Any]) -> dict[str, str] | None:
        """The work item an earlier attempt of this offer or transfer made, in whatever
        state it is now (accepted, rejected, closed, transferred on: not only while it is
        active). The segment's ``external_segment_id`` is this leg's alone."""
        query = (
            f"document_id={params['document_id']}"
            f"^external_segment_id={params['external_segment_id']}"
        )
        found = self._api.query("awa_work_item", query, ("assigned_to", "state", "queue"), 1)
        return found[0] if found else None

    def _offer(self, operation: Operation, params: Mapping[str, Any]) -> dict[str, Any]:
        """Offer (or blind-transfer) to the first candidate AWA takes.

        No presence read first: AWA refuses an agent who is not Available with a 409 of
        its own, so the happy path costs one call and a busy agent one more.
        """
        target_type = params.get("target_type")
        if operation is Operation.TRANSFER and (target_type != "agent" or params.get("target_id")):
            return self._send(operation, params, params.get("target_id"))
        excluded = set(params.get("excluded") or [])
        for agent in (c for c in params.get("candidates") or [] if c not in excluded):
            try:
                return self._send(operation, params, agent)
            except Permanent as exc:
                if exc.code != AGENT_NOT_AVAILABLE:
                    raise
                log.info("AWA agent %s is not available; trying the next candidate", agent)
        raise Retriable(
            "no candidate agent is available in AWA",
            system=SYSTEM,
            code="NO_AGENT_AVAILABLE",
            retry_after=NO_AGENT_RETRY_SECONDS,
        )

    def _send(
        self, operation: Operation, params: Mapping[str, Any], agent: str | None
    ) -> dict[str, Any]:
        """One Offer Work API call; the work item it made, with the agent it went to."""
        body: dict[str, Any] = {"external_segment_id": params["external_segment_id"]}
        assignment = {
            key: params[key] for key in _ASSIGNMENT_FIELDS if params.get(key) not in (None, "")
        }
        if operation is Operation.OFFER:
            assignment["agent_sys_id"] = agent
            body |= {"queue_id": params["queue_id"], "assignment": assignment}
        else:
            target_type = params.get("target_type")
            body["transfer"] = {
                "source_queue_id": params["source_queue_id"],
                "target_id": agent if target_type == "agent" else params.get("target_id"),
                "target_type": target_type,
                "transfer_type": params.get("transfer_type", "blind"),
            }
            if target_type != "agent":
                agent = None
            elif assignment:
                # the transferred work item's offer settings (time-out, auto-assign)
                body["assignment"] = {**assignment, "agent_sys_id": agent}
        answer = self._api.offer(str(params["document_table"]), str(params["document_id"]), body)
        item = dict(answer.get("work_item") or {})
        if agent:
            item.setdefault("assigned_to", agent)
        return item
