"""The sandbox instance's control surface: what customers and agents do outside the API.

The same operations as a Python API (``AwaControl``, ``sandbox.control``) and as JSON
routes under ``/__sandbox/`` (never faulted, counted apart). Errors are ServiceNow-shaped:
``{"error": {"message", "detail"}, "status": "failure"}``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge_sandbox.servicenow.awa import INTERACTION, WORK_ITEM, by_sys_id_or_name, json_body
from bridge_sandbox.servicenow.provider import check_endpoint
from bridge_sandbox.servicenow.store import ServiceNowApiError, format_datetime, json_response
from bridge_sandbox.serving import CONTROL_PREFIX, Fault

if TYPE_CHECKING:
    from bridge_sandbox.servicenow.app import ServiceNowSandbox

FAULT_FIELDS = frozenset(f.name for f in fields(Fault) if f.init and f.name != "id")


def bad_request(message: str, detail: str = "") -> ServiceNowApiError:
    return ServiceNowApiError(400, message, detail)


class AwaControl:
    """Drive the instance as its customers and agents would (``sandbox.control``)."""

    def __init__(self, sandbox: ServiceNowSandbox) -> None:
        self.sandbox = sandbox
        self.instance = sandbox.instance
        self.awa = sandbox.awa

    # -- customers -----------------------------------------------------------------------

    def create_interaction(self, queue: str, short_description: str = "") -> dict[str, str]:
        """A customer starts a conversation in ServiceNow: interaction ``on_hold`` and a
        ``queued`` work item on the queue (by sys_id, name or external_id)."""
        with self.instance.lock:
            target = self.queue(queue)
            interaction = self.instance.insert(
                INTERACTION,
                {
                    "state": "on_hold",
                    "type": "chat",
                    "channel": "chat",
                    "short_description": short_description,
                    "queue": target["sys_id"],
                    "opened_at": format_datetime(self.sandbox.clock.now()),
                },
            )
            item = self.awa.new_work_item(INTERACTION, interaction, target["sys_id"])
            return {"interaction": interaction["sys_id"], "work_item": item["sys_id"]}

    def close_interaction(self, sys_id: str) -> dict[str, str]:
        """The conversation ends normally: ``closed_complete``; active work items canceled."""
        return self._end_interaction(sys_id, "closed_complete")

    def abandon_interaction(self, sys_id: str) -> dict[str, str]:
        """The customer leaves: ``closed_abandoned``; active work items canceled."""
        return self._end_interaction(sys_id, "closed_abandoned")

    def _end_interaction(self, sys_id: str, state: str) -> dict[str, str]:
        with self.instance.lock:
            self._record(INTERACTION, sys_id)
            return self.instance.update(INTERACTION, sys_id, {"state": state})

    # -- agents --------------------------------------------------------------------------

    def accept(self, work_item: str) -> dict[str, str]:
        """The agent the work item is offered to accepts it."""
        with self.instance.lock:
            item = self._record(WORK_ITEM, work_item)
            return self.awa.accept(work_item, item["assigned_to"])

    def reject(self, work_item: str, reason: str = "Busy") -> dict[str, str]:
        """The offered agent rejects it (reason by awa_reject_reason sys_id or name)."""
        with self.instance.lock:
            item = self._record(WORK_ITEM, work_item)
            return self.awa.reject(work_item, item["assigned_to"], self.reject_reason(reason))

    def let_time_out(self, work_item: str) -> dict[str, str]:
        """The offered agent does nothing until the offer times out."""
        return self.awa.time_out_now(work_item)

    def transfer(self, work_item: str, target_type: str, target_id: str) -> dict[str, Any]:
        """The agent holding the work item transfers it (blind) to an agent or a queue
        (agent by sys_id or user_name; queue by sys_id, name or external_id)."""
        with self.instance.lock:
            item = self._record(WORK_ITEM, work_item)
            if target_type == "agent":
                target = self.user(target_id)
            elif target_type == "queue":
                target = self.queue(target_id)["sys_id"]
            else:
                raise bad_request(f"{target_type} is not a valid target type", "agent or queue")
            transfer = {
                "target_type": target_type,
                "target_id": target,
                "transfer_type": "blind",
                "source_queue_id": item["queue"],
            }
            return self.awa.offer(
                item["document_table"], item["document_id"], {"transfer": transfer}, caller=None
            )

    def set_presence(self, user: str, state_name: str) -> dict[str, str]:
        """An agent (sys_id or user_name) switches presence: Available, Away or Offline."""
        return self.awa.set_presence(self.user(user), state_name)

    # -- reads ---------------------------------------------------------------------------

    def interaction(self, sys_id: str) -> dict[str, str]:
        return self._record(INTERACTION, sys_id)

    def work_item(self, sys_id: str) -> dict[str, str]:
        return self._record(WORK_ITEM, sys_id)

    def work_items(self, document_id: str) -> list[dict[str, str]]:
        """The work items of a document, oldest first."""
        return self.awa.work_items(document_id)

    def pending_offers(self) -> list[dict[str, str]]:
        return self.awa.pending_offers()

    def presence(self, user: str) -> str:
        """The name of the agent's current presence state ("" if none)."""
        state = self.awa.presence_of(self.user(user))
        return "" if state is None else state["name"]

    # -- sandbox -------------------------------------------------------------------------

    def advance_clock(self, seconds: float) -> str:
        """Move sandbox time on (time-outs fall due); returns the new time."""
        if seconds < 0:
            raise bad_request("seconds must not be negative", str(seconds))
        return format_datetime(self.sandbox.clock.advance(seconds))

    def add_fault(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(spec) - FAULT_FIELDS)
        if unknown:
            raise bad_request("Unknown fault fields", ", ".join(unknown))
        try:
            fault = Fault(**spec)
        except (TypeError, ValueError, re.error) as exc:
            raise bad_request("Invalid fault", str(exc)) from None
        return self.sandbox.faults.add(fault).as_dict()

    def faults(self) -> list[dict[str, Any]]:
        return [fault.as_dict() for fault in self.sandbox.faults.list()]

    def clear_faults(self) -> None:
        self.sandbox.faults.clear()

    def counters(self) -> list[dict[str, Any]]:
        return self.sandbox.counters.snapshot()

    def reset_counters(self) -> None:
        self.sandbox.counters.reset()

    # -- the provider subflow (AWA External Routing deliveries) --------------------------

    def set_provider(
        self, url: str, username: str, password: str, ca_file: str | None = None
    ) -> dict[str, Any]:
        """Point the provider subflow at an endpoint (Basic auth; TLS verified against
        ``ca_file``, default the sandbox CA): every later work item / interaction change
        is POSTed there once. Returns the endpoint (without the password)."""
        endpoint = check_endpoint(url, username, password, ca_file)
        return self.sandbox.deliveries.configure(endpoint).as_dict()

    def provider(self) -> dict[str, Any] | None:
        endpoint = self.sandbox.deliveries.endpoint
        return None if endpoint is None else endpoint.as_dict()

    def clear_provider(self) -> None:
        """No provider: changes are not delivered (what was queued is discarded)."""
        self.sandbox.deliveries.unconfigure()

    def deliveries(
        self, sys_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The delivery log (like ``sys_flow_context``), oldest first: of one record if
        ``sys_id``, the last ``limit`` if given."""
        return self.sandbox.deliveries.log(sys_id, limit)

    def clear_deliveries(self) -> None:
        self.sandbox.deliveries.clear_log()

    def wait_deliveries(self, timeout: float = 5.0) -> bool:
        """Wait until no delivery is queued or in flight (False on time-out)."""
        return self.sandbox.deliveries.wait_idle(timeout)

    def set_delivery_faults(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Faults of the next deliveries: ``drop`` n, ``delay_ms``, ``duplicate`` n,
        ``reorder`` n (given ones set, the others kept). Returns the faults now."""
        return self.sandbox.deliveries.set_faults(spec).as_dict()

    def delivery_faults(self) -> dict[str, Any]:
        return self.sandbox.deliveries.faults().as_dict()

    def clear_delivery_faults(self) -> None:
        self.sandbox.deliveries.clear_faults()

    def pause_deliveries(self) -> None:
        """Hold deliveries (queued, in order) until ``resume_deliveries``."""
        self.sandbox.deliveries.pause()

    def resume_deliveries(self) -> None:
        self.sandbox.deliveries.resume()

    def reset(self) -> None:
        """Back to the seed: records, pending time-outs, tokens, faults and counters."""
        with self.instance.lock:
            self.sandbox.reset()
            self.awa.reset()

    # -- lookups -------------------------------------------------------------------------

    def queue(self, queue: str) -> dict[str, str]:
        """An awa_queue by sys_id, external_id or name."""
        found = self.awa.find_queue(queue, by_name=True)
        if found is not None:
            return found
        raise bad_request(
            f"Queue {queue} not found", "give an awa_queue sys_id, name or external_id"
        )

    def user(self, user: str) -> str:
        """A sys_user sys_id from a sys_id or user_name."""
        if self.instance.get("sys_user", user) is not None:
            return user
        found = self.instance.user_by_name(user)
        if found is None:
            raise bad_request(f"User {user} not found", "give a sys_user sys_id or user_name")
        return found["sys_id"]

    def reject_reason(self, reason: str) -> str:
        found = by_sys_id_or_name(self.instance, "awa_reject_reason", reason)
        if found is not None:
            return found["sys_id"]
        raise bad_request(f"Reject reason {reason} not found", "give a sys_id or name")

    def _record(self, table: str, sys_id: str) -> dict[str, str]:
        row = self.instance.get(table, sys_id)
        if row is None:
            raise ServiceNowApiError(404, "No Record found", f"{table} {sys_id} does not exist")
        return row


# -- HTTP ---------------------------------------------------------------------------------

Action = Callable[[AwaControl, Mapping[str, Any], Mapping[str, str]], object]


def _text(body: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise bad_request(f"Missing or invalid '{key}'", "a non-empty string is required")
    return value


def _number(body: Mapping[str, Any], key: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"Missing or invalid '{key}'", "a number is required")
    return float(value)


def _limit(query: Mapping[str, Any]) -> int | None:
    raw = query.get("limit")
    if raw in (None, ""):
        return None
    if not str(raw).isdigit():
        raise bad_request("Invalid 'limit'", "a whole number >= 0 is required")
    return int(str(raw))


def _action(control: AwaControl, act: Action) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            if request.method in ("POST", "PUT"):
                body = await json_body(request)
            else:  # a GET's parameters are in its query
                body = dict(request.query_params)
            result = act(control, body, request.path_params)
        except ServiceNowApiError as exc:
            return exc.response()
        return json_response({"result": result})

    return endpoint


def _nothing(do: Callable[[AwaControl], None]) -> Action:
    def act(control: AwaControl, body: Mapping[str, Any], path: Mapping[str, str]) -> object:
        do(control)
        return {"ok": True}

    return act


_ACTIONS: list[tuple[str, str, Action]] = [
    (
        "POST",
        "/interactions",
        lambda c, b, p: c.create_interaction(_text(b, "queue"), _text(b, "short_description", "")),
    ),
    ("GET", "/interactions/{sys_id}", lambda c, b, p: c.interaction(p["sys_id"])),
    ("GET", "/interactions/{sys_id}/work_items", lambda c, b, p: c.work_items(p["sys_id"])),
    ("POST", "/interactions/{sys_id}/close", lambda c, b, p: c.close_interaction(p["sys_id"])),
    ("POST", "/interactions/{sys_id}/abandon", lambda c, b, p: c.abandon_interaction(p["sys_id"])),
    ("GET", "/work_items/pending", lambda c, b, p: c.pending_offers()),
    ("GET", "/work_items/{sys_id}", lambda c, b, p: c.work_item(p["sys_id"])),
    ("POST", "/work_items/{sys_id}/accept", lambda c, b, p: c.accept(p["sys_id"])),
    (
        "POST",
        "/work_items/{sys_id}/reject",
        lambda c, b, p: c.reject(p["sys_id"], _text(b, "reason", "Busy")),
    ),
    ("POST", "/work_items/{sys_id}/time_out", lambda c, b, p: c.let_time_out(p["sys_id"])),
    (
        "POST",
        "/work_items/{sys_id}/transfer",
        lambda c, b, p: c.transfer(p["sys_id"], _text(b, "target_type"), _text(b, "target_id")),
    ),
    ("GET", "/agents/{user}/presence", lambda c, b, p: {"state": c.presence(p["user"])}),
    (
        "POST",
        "/agents/{user}/presence",
        lambda c, b, p: c.set_presence(p["user"], _text(b, "state")),
    ),
    ("POST", "/clock/advance", lambda c, b, p: {"now": c.advance_clock(_number(b, "seconds"))}),
    ("GET", "/faults", lambda c, b, p: c.faults()),
    ("POST", "/faults", lambda c, b, p: c.add_fault(b)),
    ("DELETE", "/faults", _nothing(AwaControl.clear_faults)),
    ("GET", "/counters", lambda c, b, p: c.counters()),
    ("DELETE", "/counters", _nothing(AwaControl.reset_counters)),
    ("POST", "/reset", _nothing(AwaControl.reset)),
    ("GET", "/provider", lambda c, b, p: c.provider()),
    (
        "POST",
        "/provider",
        lambda c, b, p: c.set_provider(
            _text(b, "url"), _text(b, "username"), _text(b, "password"), b.get("ca_file")
        ),
    ),
    ("DELETE", "/provider", _nothing(AwaControl.clear_provider)),
    (
        "GET",
        "/deliveries",
        lambda c, b, p: c.deliveries(b.get("sys_id") or None, _limit(b)),
    ),
    ("DELETE", "/deliveries", _nothing(AwaControl.clear_deliveries)),
    ("GET", "/deliveries/faults", lambda c, b, p: c.delivery_faults()),
    ("POST", "/deliveries/faults", lambda c, b, p: c.set_delivery_faults(b)),
    ("DELETE", "/deliveries/faults", _nothing(AwaControl.clear_delivery_faults)),
    ("POST", "/deliveries/pause", _nothing(AwaControl.pause_deliveries)),
    ("POST", "/deliveries/resume", _nothing(AwaControl.resume_deliveries)),
]


def routes(sandbox: ServiceNowSandbox) -> list[BaseRoute]:
    """The ``/__sandbox/`` routes, acting through ``sandbox.control``."""
    control: AwaControl = sandbox.control
    return [
        Route(CONTROL_PREFIX + path, _action(control, act), methods=[method])
        for method, path, act in _ACTIONS
    ]
