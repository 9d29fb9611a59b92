"""Advanced Work Assignment in the sandbox instance: Offer Work API, Inbox Actions, the
work item lifecycle (offers, accept, reject, time-outs, cancel) and agent presence.

``Awa`` is both the instance's business rules for ``interaction``/``awa_work_item`` (a
``store.Behaviour``) and the operations the HTTP routes and the control surface call.
Time-outs (offer deadlines, queue max wait) fall due on the sandbox clock: they are applied
when the clock is advanced and at the start of every AWA request (``apply_due``).
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge_sandbox.servicenow.store import (
    Instance,
    ServiceNowApiError,
    format_datetime,
    json_response,
)

if TYPE_CHECKING:
    from bridge_sandbox.servicenow.app import ServiceNowSandbox

INTERACTION = "interaction"
WORK_ITEM = "awa_work_item"
AGENT_PRESENCE = "awa_agent_presence"
PRESENCE_STATE = "awa_presence_state"
REJECT_REASON = "awa_reject_reason"

OFFER_ROLES = frozenset({"awa_manager", "awa_integration_user"})
INBOX_ROLES = frozenset({"awa_integration_user"})
CLOSED_INTERACTION_STATES = frozenset({"closed_complete", "closed_abandoned"})
DISPLAY_OPTIONS = ("card_only", "card_and_tab")
TARGET_TYPES = ("agent", "queue")
TRANSFER_TYPES = ("blind", "consult")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_OFFERED_ON = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}$")
OFFERED_ON_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


class OfferRefused(ServiceNowApiError):
    """A refused offer: the documented ``result`` shape (success false, message) and the
    platform's ``error`` shape together, so either way of reading the answer works."""

    def body(self) -> dict[str, object]:
        return {
            "result": {"success": False, "message": self.message},
            "error": {"message": self.message, "detail": self.detail},
            "status": "failure",
        }


@dataclass(frozen=True)
class OfferOptions:
    """The ``assignment`` settings of one offer, validated."""

    timeout: float | None = None
    offered_on: datetime | None = None
    allowed_to_decline: bool = True
    enable_auto_assign: bool = False
    display_option: str = "card_only"
    after_timeout_presence: str = ""


@dataclass(frozen=True, order=True)
class _Deadline:
    """An offer that times out at ``at`` unless the item has moved on (``offer_count``)."""

    at: float
    seq: int
    work_item: str
    offer_count: str
    after_timeout_presence: str


def parse_boolean(value: object) -> bool:
    """ServiceNow's lenient boolean: true/yes/1 or false/no/0."""
    text = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise OfferRefused(400, f"{value} is not a valid boolean value")


def _given(mapping: Mapping[str, Any], key: str) -> bool:
    return mapping.get(key) not in (None, "")


def _text(mapping: Mapping[str, Any], key: str, where: str) -> str:
    """A required string parameter (400 naming it when absent)."""
    value = mapping.get(key)
    if value in (None, "") or isinstance(value, (dict, list)):
        raise OfferRefused(400, f"Missing required parameter: {where}{key}")
    return str(value)


def _object(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise OfferRefused(400, f"{name} must be a JSON object")
    return value


def _timeout(assignment: Mapping[str, Any]) -> float | None:
    if not _given(assignment, "timeout"):
        return None
    raw = assignment["timeout"]
    if isinstance(raw, bool):
        raise OfferRefused(400, f"{raw} is not a valid timeout value")
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise OfferRefused(400, f"{raw} is not a valid timeout value") from None
    if seconds < 0:
        raise OfferRefused(400, "Timeout value cannot be negative")
    return seconds or None  # 0 means no time limit


def _offered_on(raw: str, timeout: float, now: datetime) -> datetime:
    if not _OFFERED_ON.match(raw):
        raise OfferRefused(
            400, f"Offered time ({raw}) must be in the following format: yyyy-MM-dd'T'HH:mm:ss.SSS"
        )
    try:
        moment = datetime.strptime(raw, OFFERED_ON_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise OfferRefused(
            400, f"Offered time ({raw}) must be in the following format: yyyy-MM-dd'T'HH:mm:ss.SSS"
        ) from None
    if moment > now:
        raise OfferRefused(
            400,
            f"Offered time ({raw}) must be before the current time, otherwise agent will have "
            "more time to accept the work item",
        )
    if moment + timedelta(seconds=timeout) <= now:
        raise OfferRefused(
            400,
            f"Timestamp after timeout ({raw}) must be after the current time, otherwise agent "
            "has no time to accept the work item",
        )
    return moment


def by_sys_id_or_name(instance: Instance, table: str, key: str) -> dict[str, str] | None:
    """A record of a small lookup table by sys_id or by its name (case-insensitive)."""
    row = instance.get(table, key)
    if row is not None:
        return row
    wanted = key.lower()
    return next((r for r in instance.rows(table) if r.get("name", "").lower() == wanted), None)


class Awa:
    """The AWA business rules and operations of one instance (a ``store.Behaviour``).

    ``Awa(instance)`` hooks its time-outs to the instance's requests and clock; the owner
    registers it as a business rule with ``instance.add_behaviour(awa)``.
    """

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.clock = instance.clock
        self._due: list[_Deadline] = []
        self._seq = itertools.count()
        instance.add_request_hook(self.apply_due)
        self.clock.on_advance(self.apply_due)

    def reset(self) -> None:
        """Forget pending deadlines (after ``instance.reset()``)."""
        with self.instance.lock:
            self._due.clear()

    # -- reads ---------------------------------------------------------------------------

    def work_items(self, document_id: str) -> list[dict[str, str]]:
        """Every work item of a document, oldest first."""
        items = self.instance.where(WORK_ITEM, document_id=document_id)
        return sorted(items, key=lambda row: (row["sys_created_on"], row["number"]))

    def active_work_item(self, document_id: str) -> dict[str, str] | None:
        """The document's current work item: active and not canceled (the newest)."""
        live = [
            row
            for row in self.work_items(document_id)
            if row["active"] == "true" and row["state"] != "canceled"
        ]
        return live[-1] if live else None

    def pending_offers(self) -> list[dict[str, str]]:
        return self.instance.where(WORK_ITEM, state="pending_accept", active="true")

    def presence_of(self, agent: str) -> dict[str, str] | None:
        """The agent's current awa_presence_state row (None if the agent has no presence)."""
        with self.instance.lock:
            rows = self.instance.where(AGENT_PRESENCE, agent=agent)
            if not rows:
                return None
            return self.instance.get(PRESENCE_STATE, rows[0]["current_presence_state"])

    def is_available(self, agent: str) -> bool:
        state = self.presence_of(agent)
        return state is not None and state.get("available") == "true"

    def reject_reasons(self, channel_id: str) -> list[dict[str, object]]:
        """The reject reasons offered for a service channel (404 for an unknown channel)."""
        if self.instance.get("awa_service_channel", channel_id) is None:
            raise ServiceNowApiError(
                404,
                "Record not found",
                f"There is no record for awa_service_channel : {channel_id}",
            )
        reasons = [
            row
            for row in self.instance.rows(REJECT_REASON)
            if row.get("active", "true") == "true"
            and row.get("service_channel", "") in ("", channel_id)
        ]
        return [
            {
                "order": int(row.get("order") or position),
                "value": row["name"],
                "display_value": row["name"],
                "sys_id": row["sys_id"],
            }
            for position, row in enumerate(reasons, start=1)
        ]

    # -- presence ------------------------------------------------------------------------

    def presence_state(self, state: str) -> dict[str, str]:
        """An awa_presence_state by sys_id or name (case-insensitive)."""
        row = by_sys_id_or_name(self.instance, PRESENCE_STATE, state)
        if row is None:
            raise ServiceNowApiError(404, f"{state} is not a valid presence state")
        return row

    def set_presence(self, agent: str, state: str) -> dict[str, str]:
        """Switch an agent's presence (state by sys_id or name); returns the presence row."""
        with self.instance.lock:
            self._user(agent)
            target = self.presence_state(state)
            values = {"current_presence_state": target["sys_id"], "state_changed_on": self._now()}
            rows = self.instance.where(AGENT_PRESENCE, agent=agent)
            if rows:
                return self.instance.update(AGENT_PRESENCE, rows[0]["sys_id"], values)
            return self.instance.insert(AGENT_PRESENCE, {"agent": agent, **values})

    # -- Offer Work API ------------------------------------------------------------------

    def offer(
        self,
        document_table: str,
        document_sys_id: str,
        body: Mapping[str, Any],
        *,
        caller: str | None,
    ) -> dict[str, Any]:
        """``POST .../awa/documents/{table}/{sys_id}/offer``: a new assignment, or a transfer
        when ``transfer`` is given. ``caller`` None is the instance itself (no role check).
        Returns the ``result`` object; raises OfferRefused with the documented message."""
        with self.instance.lock:
            self.apply_due()
            if caller is not None:
                self._require_caller_role(caller)
            document = self._active_document(document_table, document_sys_id)
            if _given(body, "transfer"):
                item = self._transfer(document_table, document, body, caller)
            else:
                item = self._assign(document_table, document, body, caller)
            return {
                "work_item": {
                    "display_name": item["display_name"],
                    "sys_id": item["sys_id"],
                    "document_id": item["document_id"],
                    "document_table": item["document_table"],
                    "queue": item["queue"],
                },
                "success": True,
                "message": "Manual assignment successfully requested.",
            }

    def _assign(
        self,
        document_table: str,
        document: Mapping[str, str],
        body: Mapping[str, Any],
        caller: str | None,
    ) -> dict[str, str]:
        queue = self.queue(_text(body, "queue_id", ""))
        assignment = _object(body.get("assignment"), "assignment")
        agent = _text(assignment, "agent_sys_id", "assignment.")
        self._require_agent(agent)
        options = self.offer_options(assignment)
        item = self.active_work_item(document["sys_id"])
        if item is not None:
            self._require_assignable(item)
        if not self.is_available(agent):
            raise OfferRefused(409, "Agent is not available")
        if item is None:
            item = self.new_work_item(document_table, document, queue["sys_id"])
        return self._offer_to(item, agent, queue["sys_id"], options, body=body, caller=caller)

    def _transfer(
        self,
        document_table: str,
        document: Mapping[str, str],
        body: Mapping[str, Any],
        caller: str | None,
    ) -> dict[str, str]:
        transfer = _object(body.get("transfer"), "transfer")
        target_type = _text(transfer, "target_type", "transfer.")
        if target_type not in TARGET_TYPES:
            raise OfferRefused(400, f"{target_type} is not a valid target type")
        target_id = _text(transfer, "target_id", "transfer.")
        transfer_type = _text(transfer, "transfer_type", "transfer.")
        if transfer_type not in TRANSFER_TYPES:
            raise OfferRefused(400, f"{transfer_type} is not a valid transfer type")
        source_queue = self.queue(_text(transfer, "source_queue_id", "transfer."))
        assignment = body.get("assignment")
        options = self.offer_options(_object(assignment, "assignment")) if assignment else None
        if target_type == "agent":
            self._require_agent(target_id)
            if not self.is_available(target_id):
                raise OfferRefused(409, "Transfer failed - couldn't blind transfer to agent")
        else:
            target_queue = self.queue(target_id)
        previous = self.active_work_item(document["sys_id"])
        if previous is None:
            previous = self.new_work_item(document_table, document, source_queue["sys_id"])
        self.instance.update(WORK_ITEM, previous["sys_id"], {"active": "false"})
        queue = previous["queue"] if target_type == "agent" else target_queue["sys_id"]
        item = self.new_work_item(
            document_table,
            document,
            queue,
            previous_work_item=previous["sys_id"],
            external_segment_id=str(body.get("external_segment_id") or ""),
        )
        if target_type == "queue":
            return item
        return self._offer_to(
            item, target_id, queue, options or OfferOptions(), body=body, caller=caller
        )

    def offer_options(self, assignment: Mapping[str, Any]) -> OfferOptions:
        """Validate the ``assignment`` values in the documented order."""
        now = self.clock.now()
        timeout = _timeout(assignment)
        offered_on = None
        if timeout is not None and _given(assignment, "offered_on"):
            offered_on = _offered_on(str(assignment["offered_on"]), timeout, now)
        display_option = str(assignment.get("display_option") or "card_only")
        if display_option not in DISPLAY_OPTIONS:
            raise OfferRefused(400, f"{display_option} is not a valid display option")
        allowed = assignment.get("allowed_to_decline", True)
        auto = assignment.get("enable_auto_assign", False)
        presence = str(assignment.get("after_timeout_presence") or "")
        if timeout is not None and presence and self.instance.get(PRESENCE_STATE, presence) is None:
            raise OfferRefused(400, f"{presence} is not a valid presence state")
        return OfferOptions(
            timeout=timeout,
            offered_on=offered_on,
            allowed_to_decline=parse_boolean(allowed) if allowed not in (None, "") else True,
            enable_auto_assign=parse_boolean(auto) if auto not in (None, "") else False,
            display_option=display_option,
            after_timeout_presence=presence if timeout is not None else "",
        )

    def _offer_to(
        self,
        item: Mapping[str, str],
        agent: str,
        queue: str,
        options: OfferOptions,
        *,
        body: Mapping[str, Any],
        caller: str | None,
    ) -> dict[str, str]:
        offered_on = options.offered_on or self.clock.now()
        offer_count = str(int(item.get("offer_count") or "0") + 1)
        changes = {
            "state": "accepted" if options.enable_auto_assign else "pending_accept",
            "assigned_to": agent,
            "queue": queue,
            "offered_on": format_datetime(offered_on),
            "offer_count": offer_count,
            "allowed_to_decline": "true" if options.allowed_to_decline else "false",
            "allocated_by": caller or "",
            "rejected": "false",
            "timed_out": "false",
            "reject_reason": "",
        }
        if _given(body, "external_segment_id"):
            changes["external_segment_id"] = str(body["external_segment_id"])
        updated = self.instance.update(WORK_ITEM, item["sys_id"], changes)
        if options.timeout is not None and not options.enable_auto_assign:
            deadline = offered_on.timestamp() + options.timeout
            heapq.heappush(
                self._due,
                _Deadline(
                    deadline,
                    next(self._seq),
                    item["sys_id"],
                    offer_count,
                    options.after_timeout_presence,
                ),
            )
        return updated

    def new_work_item(
        self,
        document_table: str,
        document: Mapping[str, str],
        queue: str,
        **extra: str,
    ) -> dict[str, str]:
        return self.instance.insert(
            WORK_ITEM,
            {
                "document_table": document_table,
                "document_id": document["sys_id"],
                "queue": queue,
                "state": "queued",
                **extra,
            },
        )

    # -- Inbox Actions -------------------------------------------------------------------

    def accept(self, work_item_id: str, agent_id: str) -> dict[str, str]:
        """The agent accepts a pending offer: work item ``accepted``, interaction in
        progress with the agent. Returns the work item."""
        with self.instance.lock:
            self.apply_due()
            item = self._pending_item_of(work_item_id, agent_id, "Wrong work item ID")
            return self.instance.update(WORK_ITEM, item["sys_id"], {"state": "accepted"})

    def reject(self, work_item_id: str, agent_id: str, reject_reason_id: str) -> dict[str, str]:
        """The agent rejects a pending offer: back to ``queued`` (rejected, unassigned), or
        ``canceled``/``transfer_rejected`` for a transferred item. Returns the work item."""
        with self.instance.lock:
            self.apply_due()
            self._user(agent_id)
            if self.instance.get(REJECT_REASON, reject_reason_id) is None:
                raise ServiceNowApiError(
                    404,
                    "Record not found",
                    f"There is no record for awa_reject_reason : {reject_reason_id}",
                )
            item = self._pending_item_of(
                work_item_id, agent_id, f"There is no record for awa_work_item : {work_item_id}"
            )
            if item["allowed_to_decline"] == "false":
                raise ServiceNowApiError(
                    400, "Invalid request", "Work item is not allowed to be rejected"
                )
            changes = {"rejected": "true", "reject_reason": reject_reason_id, "assigned_to": ""}
            if item["previous_work_item"]:
                changes.update(state="canceled", cancel_reason="transfer_rejected")
            else:
                changes["state"] = "queued"
            return self.instance.update(WORK_ITEM, item["sys_id"], changes)

    def _pending_item_of(self, work_item_id: str, agent_id: str, missing: str) -> dict[str, str]:
        item = self.instance.get(WORK_ITEM, work_item_id)
        if item is None:
            raise ServiceNowApiError(404, "Record not found", missing)
        if not self._is_pending(item):
            raise ServiceNowApiError(
                400, "Invalid request", "Work item is not in pending accept state"
            )
        if item["assigned_to"] != agent_id:
            raise ServiceNowApiError(
                400, "Invalid request", "Work item is assigned to a different agent"
            )
        return item

    def cancel(self, work_item_id: str, cancel_reason: str = "manually_assigned") -> dict[str, str]:
        """Cancel a work item as the router does (Table API ``state=canceled``)."""
        with self.instance.lock:
            return self.instance.update(
                WORK_ITEM, work_item_id, {"state": "canceled", "cancel_reason": cancel_reason}
            )

    # -- time ----------------------------------------------------------------------------

    def apply_due(self) -> None:
        """Apply the offer time-outs and queue max waits that the sandbox clock has reached."""
        with self.instance.lock:
            now = self.clock.now()
            while self._due and self._due[0].at <= now.timestamp():
                self._time_out(heapq.heappop(self._due))
            self._expire_queued(now)

    def _time_out(self, due: _Deadline) -> None:
        item = self.instance.live.get(WORK_ITEM, due.work_item)
        if item is not None and item["offer_count"] == due.offer_count:
            self._apply_time_out(item, due.after_timeout_presence)

    def time_out_now(self, work_item_id: str) -> dict[str, str]:
        """Let a pending offer time out now, as if its deadline had passed (control surface)."""
        with self.instance.lock:
            item = self.instance.get(WORK_ITEM, work_item_id)
            if item is None or not self._is_pending(item):
                raise ServiceNowApiError(
                    409, "Work item is not in pending accept state", f"awa_work_item {work_item_id}"
                )
            presence = next(
                (
                    due.after_timeout_presence
                    for due in self._due
                    if due.work_item == work_item_id and due.offer_count == item["offer_count"]
                ),
                "",
            )
            self._apply_time_out(item, presence)
            return self.instance.get(WORK_ITEM, work_item_id) or item

    @staticmethod
    def _is_pending(item: Mapping[str, str]) -> bool:
        return item["state"] == "pending_accept" and item["active"] == "true"

    def _apply_time_out(self, item: Mapping[str, str], after_timeout_presence: str) -> None:
        if not self._is_pending(item):
            return
        agent = item["assigned_to"]
        self.instance.update(
            WORK_ITEM, item["sys_id"], {"state": "queued", "timed_out": "true", "assigned_to": ""}
        )
        if after_timeout_presence and agent:
            self.set_presence(agent, after_timeout_presence)

    def _expire_queued(self, now: datetime) -> None:
        waits = [
            (queue["sys_id"], int(queue.get("max_wait_time") or "0"))
            for queue in self.instance.live.rows("awa_queue")
        ]
        for queue, max_wait in waits:
            if max_wait <= 0:
                continue
            cutoff = format_datetime(now - timedelta(seconds=max_wait))
            for item in self.instance.where(WORK_ITEM, queue=queue, state="queued"):
                if item["active"] == "true" and item["sys_created_on"] <= cutoff:
                    self.cancel(item["sys_id"], "timeout")

    # -- business rules (store.Behaviour) ------------------------------------------------

    def before_insert(
        self, inst: Instance, table: str, row: dict[str, str], user: str | None
    ) -> None:
        if table != WORK_ITEM:
            return
        row["state_changed_on"] = row["sys_created_on"]
        if not row.get("display_name"):
            row["display_name"] = self._display_name(row["document_table"], row["document_id"])
        if not row.get("service_channel") and row.get("queue"):
            queue = inst.live.get("awa_queue", row["queue"])
            row["service_channel"] = "" if queue is None else queue.get("service_channel", "")

    def after_insert(
        self, inst: Instance, table: str, row: dict[str, str], user: str | None
    ) -> None:
        return None

    def before_update(
        self,
        inst: Instance,
        table: str,
        old: dict[str, str],
        changes: dict[str, str],
        user: str | None,
    ) -> None:
        state = changes.get("state")
        if state is None or state == old.get("state"):
            return
        if table == WORK_ITEM:
            changes["state_changed_on"] = self._now()
            if state == "canceled":
                changes["active"] = "false"
                changes["cancel_reason"] = changes.get("cancel_reason") or "manually_assigned"
        elif table == INTERACTION and state in CLOSED_INTERACTION_STATES:
            changes["active"] = "false"
            changes["closed_at"] = changes.get("closed_at") or self._now()

    def after_update(
        self,
        inst: Instance,
        table: str,
        old: dict[str, str],
        new: dict[str, str],
        user: str | None,
    ) -> None:
        if new.get("state") == old.get("state"):
            return
        if table == WORK_ITEM and new["state"] == "accepted":
            self._follow_acceptance(new)
        elif table == INTERACTION and new["state"] in CLOSED_INTERACTION_STATES:
            for item in inst.where(WORK_ITEM, document_id=new["sys_id"], active="true"):
                self.cancel(item["sys_id"], "disqualified")

    def before_delete(
        self, inst: Instance, table: str, row: dict[str, str], user: str | None
    ) -> None:
        return None

    def _follow_acceptance(self, item: Mapping[str, str]) -> None:
        """The interaction goes in progress with the agent who accepted its work item."""
        if item["document_table"] != INTERACTION:
            return
        interaction = self.instance.live.get(INTERACTION, item["document_id"])
        if interaction is None or interaction["active"] != "true":
            return
        self.instance.update(
            INTERACTION,
            item["document_id"],
            {"state": "work_in_progress", "assigned_to": item["assigned_to"]},
        )

    # -- lookups and checks --------------------------------------------------------------

    def find_queue(self, queue_id: str, *, by_name: bool = False) -> dict[str, str] | None:
        """An awa_queue by sys_id or external_id (or, if asked, name)."""
        found = self.instance.where("awa_queue", external_id=queue_id)
        if found:
            return found[0]
        if by_name:
            return by_sys_id_or_name(self.instance, "awa_queue", queue_id)
        return self.instance.get("awa_queue", queue_id)

    def queue(self, queue_id: str) -> dict[str, str]:
        """An awa_queue by sys_id or external_id (404 if neither)."""
        row = self.find_queue(queue_id)
        if row is None:
            raise OfferRefused(404, f"Queue {queue_id} not found")
        return row

    def _user(self, user: str) -> dict[str, str]:
        row = self.instance.get("sys_user", user)
        if row is None:
            raise ServiceNowApiError(
                404, "Record not found", f"There is no record for sys_user : {user}"
            )
        return row

    def has_role(self, user: str, roles: frozenset[str]) -> bool:
        granted = self.instance.user_roles(user)
        return "admin" in granted or bool(granted & roles)

    def _require_caller_role(self, caller: str) -> None:
        if not self.has_role(caller, OFFER_ROLES):
            raise OfferRefused(
                403, f"Caller {caller} does not have the awa_manager or awa_integration_user role"
            )

    def _require_agent(self, agent: str) -> None:
        if self.instance.get("sys_user", agent) is None or not self.has_role(
            agent, frozenset({"awa_agent"})
        ):
            raise OfferRefused(409, f"{agent} is not a valid agent")
        if not self.has_role(agent, frozenset({"awa_external_user"})):
            raise OfferRefused(409, "The user does not have the 'awa_external_user' role")

    def _require_assignable(self, item: Mapping[str, str]) -> None:
        if item["state"] == "accepted":
            raise OfferRefused(409, "Work Item accepted can not be assigned")
        if item["state"] == "pending_accept":
            raise OfferRefused(409, f"Work Item is already assigned to {item['assigned_to']}")

    def _active_document(self, table: str, sys_id: str) -> dict[str, str]:
        if self.instance.schema.table(table) is None:
            raise OfferRefused(404, f"Document table {table} not found")
        document = self.instance.get(table, sys_id)
        if document is None:
            raise OfferRefused(404, f"Document {table}:{sys_id} not found")
        if document.get("active", "true") != "true":
            raise OfferRefused(409, "Document is not active")
        return document

    def _display_name(self, table: str, sys_id: str) -> str:
        spec = self.instance.schema.table(table)
        document = self.instance.live.get(table, sys_id) if spec is not None else None
        if spec is None or document is None:
            return ""
        label = table.replace("_", " ").title()
        return f"{label}: {document.get(spec.display_field, sys_id)}"

    def _now(self) -> str:
        return format_datetime(self.clock.now())


# -- HTTP ---------------------------------------------------------------------------------

Authenticate = Callable[[Request], str]
Handler = Callable[[str, Mapping[str, Any], Mapping[str, str]], object]


async def json_body(request: Request) -> Mapping[str, Any]:
    """The request's JSON object (empty for no body); 400 for anything else."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ServiceNowApiError(
            400, "Exception while reading request", "The payload is not valid JSON."
        ) from None
    if not isinstance(body, Mapping):
        raise ServiceNowApiError(
            400, "Exception while reading request", "The payload must be a JSON object."
        )
    return body


def _endpoint(
    authenticate: Authenticate, handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that authenticates, reads the JSON body, and answers ``{"result": ...}``
    or the ServiceNow error the handler raised."""

    async def endpoint(request: Request) -> Response:
        try:
            caller = authenticate(request)
            body = await json_body(request) if request.method != "GET" else {}
            result = handler(caller, body, request.path_params)
        except ServiceNowApiError as exc:
            return exc.response()
        return json_response({"result": result})

    return endpoint


def _required(body: Mapping[str, Any], key: str, detail: str) -> str:
    value = body.get(key)
    if value in (None, "") or isinstance(value, (dict, list)):
        raise ServiceNowApiError(400, "Invalid request", detail)
    return str(value)


def _inbox_agent(awa: Awa, caller: str, body: Mapping[str, Any]) -> str:
    """The agent an inbox action is for: the integration user acts for ``agent_id``; an
    agent may also act for themselves."""
    agent = _required(body, "agent_id", "Missing agent ID")
    if caller != agent:
        _require_inbox_role(awa, caller, INBOX_ROLES)
    return agent


def _require_inbox_role(awa: Awa, caller: str, roles: frozenset[str]) -> None:
    if not awa.has_role(caller, roles):
        raise ServiceNowApiError(
            403, "User Not Authorized", "The user doesn't have the awa_integration_user role"
        )


def build_routes(awa: Awa, authenticate: Authenticate) -> list[BaseRoute]:
    """The Offer Work and Inbox Actions routes (default and versioned URLs)."""

    def offer(caller: str, body: Mapping[str, Any], path: Mapping[str, str]) -> object:
        return awa.offer(path["document_table"], path["document_sys_id"], body, caller=caller)

    def reject_reasons(caller: str, body: Mapping[str, Any], path: Mapping[str, str]) -> object:
        _require_inbox_role(awa, caller, INBOX_ROLES | {"awa_agent"})
        return awa.reject_reasons(path["channel_id"])

    def accept(caller: str, body: Mapping[str, Any], path: Mapping[str, str]) -> object:
        agent = _inbox_agent(awa, caller, body)
        item = awa.accept(_required(body, "work_item_id", "Missing work item ID"), agent)
        return {"documentSysId": item["document_id"], "documentTable": item["document_table"]}

    def reject(caller: str, body: Mapping[str, Any], path: Mapping[str, str]) -> object:
        agent = _inbox_agent(awa, caller, body)
        work_item_id = _required(body, "work_item_id", "Missing work item ID")
        reason = _required(body, "reject_reason_id", "Missing reject reason item ID")
        awa.reject(work_item_id, agent, reason)
        return {"work_item_id": work_item_id, "reject_reason_id": reason, "agent_id": agent}

    endpoints: list[tuple[str, Handler, str]] = [
        ("/awa/documents/{document_table}/{document_sys_id}/offer", offer, "POST"),
        ("/awa/inbox/actions/reject_reasons/{channel_id}", reject_reasons, "GET"),
        ("/awa/inbox/actions/accept", accept, "POST"),
        ("/awa/inbox/actions/reject", reject, "POST"),
    ]
    return [
        Route(prefix + path, _endpoint(authenticate, handler), methods=[method])
        for prefix in ("/api/now", "/api/now/{api_version}")
        for path, handler, method in endpoints
    ]


def routes(sandbox: ServiceNowSandbox) -> list[BaseRoute]:
    """The Offer Work and Inbox Actions routes of a sandbox instance."""

    def authenticate(request: Request) -> str:
        """The user the gate authenticated (or authenticate here if it did not)."""
        known = request.scope.get("state", {}).get("sn_user")
        if isinstance(known, str):
            return known
        return sandbox.auth.user_of(request.headers.get("authorization"))

    return build_routes(sandbox.awa, authenticate)
