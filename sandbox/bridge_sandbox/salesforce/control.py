"""The sandbox org's control surface: what customers and agents do, the clock, faults,
counters; as ``/__sandbox/`` routes on the REST host and as the Python API ``OmniControl``
(``sandbox.control``). JSON in, JSON out; bad input answers 400 with what is wrong."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge_sandbox.salesforce.store import SalesforceApiError
from bridge_sandbox.serving import Counters, Fault, Faults

if TYPE_CHECKING:
    from bridge_sandbox.salesforce.app import SalesforceSandbox

HOSTS = ("rest", "scrt")
_FAULT_FIELDS: dict[str, tuple[type, ...]] = {
    "path": (str,),
    "method": (str, type(None)),
    "status": (int, type(None)),
    "latency_ms": (int, float),
    "drop": (str, type(None)),
    "probability": (int, float),
    "count": (int, type(None)),
    "retry_after": (int, float, type(None)),
    "error_code": (str, type(None)),
}


class ControlError(ValueError):
    """Bad input to the control surface."""


def jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """A record with datetimes as Salesforce-style ISO text."""
    return {k: _json_value(v) for k, v in record.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


class OmniControl:
    """What happens in the org outside the API: customers, agents, the clock, faults."""

    def __init__(self, sandbox: SalesforceSandbox) -> None:
        self.sandbox = sandbox

    # -- customers ------------------------------------------------------------------------
    def start_conversation(
        self,
        queue: str,
        channel: str = "Messaging",
        subject: str | None = None,
        conversation_identifier: str | None = None,
    ) -> dict[str, str]:
        """A customer starts a conversation on ``queue`` (id or DeveloperName)."""
        item, psr = self.sandbox.omni.start(
            queue, channel, subject=subject, conversation_identifier=conversation_identifier
        )
        answer = {"work_item_id": item["Id"], "psr_id": psr["Id"]}
        if item.get("ConversationIdentifier"):
            answer["conversation_identifier"] = item["ConversationIdentifier"]
        return answer

    def abandon(self, work_item_id: str) -> dict[str, Any]:
        return jsonable(self.sandbox.omni.abandon(work_item_id))

    # -- agents ---------------------------------------------------------------------------
    def accept(self, agent_work_id: str) -> dict[str, Any]:
        return jsonable(self.sandbox.omni.accept(agent_work_id))

    def decline(self, agent_work_id: str, reason: str | None = None) -> dict[str, Any]:
        return jsonable(self.sandbox.omni.decline(agent_work_id, reason))

    def push_timeout(self, agent_work_id: str) -> dict[str, Any]:
        return jsonable(self.sandbox.omni.push_timeout(agent_work_id))

    def close(self, agent_work_id: str) -> dict[str, Any]:
        return jsonable(self.sandbox.omni.close(agent_work_id))

    def transfer_to_queue(self, agent_work_id: str, queue: str) -> dict[str, Any]:
        """Returns the new PendingServiceRouting (IsTransfer = true)."""
        return jsonable(self.sandbox.omni.transfer_to_queue(agent_work_id, queue))

    def transfer_to_agent(self, agent_work_id: str, user_id: str) -> dict[str, Any]:
        """Returns the second AgentWork (Assigned to ``user_id``)."""
        return jsonable(self.sandbox.omni.transfer_to_agent(agent_work_id, user_id))

    def set_presence(
        self, user_id: str, online: bool, capacity: int | None = None
    ) -> dict[str, Any] | None:
        """Returns the current UserServicePresence, None once offline."""
        presence = self.sandbox.omni.set_presence(user_id, online, capacity=capacity)
        return jsonable(presence) if presence is not None else None

    # -- reads for tests ------------------------------------------------------------------
    def agent_work_for(self, user_id: str) -> list[dict[str, Any]]:
        return [jsonable(w) for w in self.sandbox.org.where("AgentWork", UserId=user_id)]

    def psrs(self) -> list[dict[str, Any]]:
        """The live PendingServiceRouting records, oldest first."""
        found = self.sandbox.org.all("PendingServiceRouting")
        return [jsonable(p) for p in sorted(found, key=lambda p: (p["CreatedDate"], p["Id"]))]

    # -- the sandbox ----------------------------------------------------------------------
    def advance_clock(self, seconds: float) -> str:
        """Move sandbox time forward; due push time-outs apply. Returns the new time."""
        if seconds < 0:
            raise ControlError("seconds must be >= 0 (sandbox time only moves forward)")
        return str(_json_value(self.sandbox.clock.advance(seconds)))

    def add_fault(self, host: str, **rule: Any) -> dict[str, Any]:
        """Add a fault rule (fields of ``serving.Fault``) on the ``rest`` or ``scrt`` host."""
        unknown = sorted(set(rule) - set(_FAULT_FIELDS))
        if unknown:
            raise ControlError(f"unknown fault fields: {', '.join(unknown)}")
        for name, value in rule.items():
            if not isinstance(value, _FAULT_FIELDS[name]) or isinstance(value, bool):
                raise ControlError(f"fault field {name!r} has a bad value: {value!r}")
        try:
            fault = Fault(**rule)
        except (ValueError, re.error) as exc:
            raise ControlError(f"bad fault: {exc}") from exc
        return self._faults(host).add(fault).as_dict()

    def faults(self, host: str) -> list[dict[str, Any]]:
        return [f.as_dict() for f in self._faults(host).list()]

    def clear_faults(self, host: str) -> None:
        self._faults(host).clear()

    def counters(self, host: str) -> list[dict[str, Any]]:
        return self._counters(host).snapshot()

    def reset_counters(self, host: str) -> None:
        self._counters(host).reset()

    def revoke_tokens(self) -> int:
        """Every access token stops working; returns how many were revoked."""
        return self.sandbox.oauth.revoke_all()

    def reset(self) -> None:
        """Back to the seed, no faults, zero counters."""
        self.sandbox.reset()

    def data_centre_switch(self, logout_agents: bool = True) -> dict[str, Any]:
        """The org is recovered on another instance (the Omni-Channel guide's data-centre
        switch): every replay id handed out so far is void on both stream APIs, every
        stream connection ends, and online agents are logged out (the recovery's
        downtime). The records and the REST endpoints stay as they are."""
        self.sandbox.pubsub.void_replay_ids()
        dropped = self.sandbox.pubsub.drop_connections()
        expired = self.sandbox.streaming.expire()  # a stored PushTopic replay id: 400
        clients = self.sandbox.streaming.drop_clients()  # 403::Unknown client
        logged_out: list[str] = []
        if logout_agents:
            online = self.sandbox.org.where("UserServicePresence", IsCurrentState=True)
            for user_id in sorted({str(p["UserId"]) for p in online}):
                self.sandbox.omni.set_presence(user_id, False)
                logged_out.append(user_id)
        return {
            "pubsub_streams_dropped": dropped,
            "cometd_events_expired": expired,
            "cometd_clients_dropped": clients,
            "agents_logged_out": logged_out,
        }

    # -- Pub/Sub API streams ----------------------------------------------------------------
    def pubsub_drop_connections(self) -> int:
        """Every open Subscribe call ends (UNAVAILABLE); returns how many."""
        return self.sandbox.pubsub.drop_connections()

    def pubsub_keepalives(self, enabled: bool, interval: float | None = None) -> dict[str, Any]:
        """Keepalives on or off (a stalled stream), optionally at a new interval (s)."""
        try:
            return self.sandbox.pubsub.set_keepalives(enabled, interval)
        except ValueError as exc:
            raise ControlError(str(exc)) from exc

    def pubsub_drop_event(
        self, channel: str | None = None, entity: str | None = None
    ) -> dict[str, Any]:
        """The next event a stream would deliver (on ``channel`` / of ``entity``) is lost."""
        return self._pubsub_fault("drop", channel, entity, 0.0)

    def pubsub_delay_event(
        self, seconds: float, channel: str | None = None, entity: str | None = None
    ) -> dict[str, Any]:
        """The next event a stream would deliver is held back ``seconds`` (real time)."""
        return self._pubsub_fault("delay", channel, entity, seconds)

    def pubsub_gap_event(
        self, channel: str | None = None, entity: str | None = None
    ) -> dict[str, Any]:
        """The next event a stream would deliver goes out as a GAP_ event (no fields)."""
        return self._pubsub_fault("gap", channel, entity, 0.0)

    def pubsub_expire_retention(self) -> int:
        """Every retained change event falls out of retention; returns how many."""
        return self.sandbox.pubsub.expire_retention()

    def pubsub_void_replay_ids(self) -> None:
        """Every replay id handed out so far is refused (the org moved instance)."""
        self.sandbox.pubsub.void_replay_ids()

    def pubsub_deliveries(self) -> dict[str, Any]:
        """Events, keepalives and subscriptions per channel; open streams."""
        return self.sandbox.pubsub.deliveries()

    def _pubsub_fault(
        self, action: str, channel: str | None, entity: str | None, seconds: float
    ) -> dict[str, Any]:
        try:
            return self.sandbox.pubsub.add_fault(action, channel, entity, seconds)
        except ValueError as exc:
            raise ControlError(str(exc)) from exc

    def _faults(self, host: str) -> Faults:
        return {"rest": self.sandbox.rest_faults, "scrt": self.sandbox.scrt_faults}[_host(host)]

    def _counters(self, host: str) -> Counters:
        return {"rest": self.sandbox.counters, "scrt": self.sandbox.scrt_counters}[_host(host)]


def _host(host: str) -> str:
    if host not in HOSTS:
        raise ControlError(f"host must be one of {', '.join(HOSTS)}, not {host!r}")
    return host


Action = Callable[[OmniControl, dict[str, str], dict[str, Any]], Any]


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ControlError(f"{name!r} must be a non-empty string")
    return value


def _required(body: dict[str, Any], name: str) -> str:
    return str(_text(body, name))


def _seconds(body: dict[str, Any]) -> float:
    value = body.get("seconds")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ControlError("'seconds' must be a number")
    return float(value)


def _keepalives(control: OmniControl, params: dict[str, str], body: dict[str, Any]) -> Any:
    enabled, interval = body.get("enabled"), body.get("interval")
    if not isinstance(enabled, bool):
        raise ControlError("'enabled' must be true or false")
    if interval is not None and (
        not isinstance(interval, int | float) or isinstance(interval, bool)
    ):
        raise ControlError("'interval' must be a number of seconds")
    return control.pubsub_keepalives(enabled, None if interval is None else float(interval))


def _presence(control: OmniControl, params: dict[str, str], body: dict[str, Any]) -> Any:
    online, capacity = body.get("online"), body.get("capacity")
    if not isinstance(online, bool):
        raise ControlError("'online' must be true or false")
    if capacity is not None and (not isinstance(capacity, int) or isinstance(capacity, bool)):
        raise ControlError("'capacity' must be an integer")
    return {"presence": control.set_presence(params["user_id"], online, capacity)}


_ACTIONS: list[tuple[str, str, Action]] = [
    (
        "POST",
        "/__sandbox/conversations",
        lambda c, p, b: c.start_conversation(
            _required(b, "queue"),
            str(_text(b, "channel", required=False) or "Messaging"),
            _text(b, "subject", required=False),
            _text(b, "conversation_identifier", required=False),
        ),
    ),
    (
        "POST",
        "/__sandbox/work-items/{work_item_id}/abandon",
        lambda c, p, b: c.abandon(p["work_item_id"]),
    ),
    ("POST", "/__sandbox/agent-work/{id}/accept", lambda c, p, b: c.accept(p["id"])),
    (
        "POST",
        "/__sandbox/agent-work/{id}/decline",
        lambda c, p, b: c.decline(p["id"], _text(b, "reason", required=False)),
    ),
    ("POST", "/__sandbox/agent-work/{id}/push-timeout", lambda c, p, b: c.push_timeout(p["id"])),
    ("POST", "/__sandbox/agent-work/{id}/close", lambda c, p, b: c.close(p["id"])),
    (
        "POST",
        "/__sandbox/agent-work/{id}/transfer-to-queue",
        lambda c, p, b: c.transfer_to_queue(p["id"], _required(b, "queue")),
    ),
    (
        "POST",
        "/__sandbox/agent-work/{id}/transfer-to-agent",
        lambda c, p, b: c.transfer_to_agent(p["id"], _required(b, "user_id")),
    ),
    ("POST", "/__sandbox/users/{user_id}/presence", _presence),
    (
        "GET",
        "/__sandbox/users/{user_id}/agent-work",
        lambda c, p, b: c.agent_work_for(p["user_id"]),
    ),
    ("GET", "/__sandbox/psrs", lambda c, p, b: c.psrs()),
    ("POST", "/__sandbox/clock/advance", lambda c, p, b: {"now": c.advance_clock(_seconds(b))}),
    ("GET", "/__sandbox/faults/{host}", lambda c, p, b: c.faults(p["host"])),
    ("POST", "/__sandbox/faults/{host}", lambda c, p, b: c.add_fault(p["host"], **b)),
    ("DELETE", "/__sandbox/faults/{host}", lambda c, p, b: c.clear_faults(p["host"])),
    ("GET", "/__sandbox/counters/{host}", lambda c, p, b: c.counters(p["host"])),
    ("DELETE", "/__sandbox/counters/{host}", lambda c, p, b: c.reset_counters(p["host"])),
    ("POST", "/__sandbox/tokens/revoke", lambda c, p, b: {"revoked": c.revoke_tokens()}),
    ("POST", "/__sandbox/reset", lambda c, p, b: c.reset()),
    (
        "POST",
        "/__sandbox/data-centre-switch",
        lambda c, p, b: c.data_centre_switch(b.get("logout_agents", True) is not False),
    ),
    (
        "POST",
        "/__sandbox/streams/pubsub/drop-connections",
        lambda c, p, b: {"dropped": c.pubsub_drop_connections()},
    ),
    ("POST", "/__sandbox/streams/pubsub/keepalives", _keepalives),
    (
        "POST",
        "/__sandbox/streams/pubsub/drop-event",
        lambda c, p, b: c.pubsub_drop_event(
            _text(b, "channel", required=False), _text(b, "entity", required=False)
        ),
    ),
    (
        "POST",
        "/__sandbox/streams/pubsub/delay-event",
        lambda c, p, b: c.pubsub_delay_event(
            _seconds(b), _text(b, "channel", required=False), _text(b, "entity", required=False)
        ),
    ),
    (
        "POST",
        "/__sandbox/streams/pubsub/gap-event",
        lambda c, p, b: c.pubsub_gap_event(
            _text(b, "channel", required=False), _text(b, "entity", required=False)
        ),
    ),
    (
        "POST",
        "/__sandbox/streams/pubsub/retention/expire",
        lambda c, p, b: {"expired": c.pubsub_expire_retention()},
    ),
    (
        "POST",
        "/__sandbox/streams/pubsub/replay-ids/void",
        lambda c, p, b: c.pubsub_void_replay_ids(),
    ),
    ("GET", "/__sandbox/streams/pubsub/deliveries", lambda c, p, b: c.pubsub_deliveries()),
]


def routes(sandbox: SalesforceSandbox) -> list[BaseRoute]:
    by_path: dict[str, dict[str, Action]] = {}
    for method, path, action in _ACTIONS:
        by_path.setdefault(path, {})[method] = action
    return [
        Route(path, _endpoint(sandbox, actions), methods=list(actions))
        for path, actions in by_path.items()
    ]


def _endpoint(
    sandbox: SalesforceSandbox, actions: dict[str, Action]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            body = _body(await request.body())
            sandbox.omni.apply_due()
            result = actions[request.method](sandbox.control, dict(request.path_params), body)
        except ControlError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except SalesforceApiError as exc:
            return JSONResponse({"error": exc.message, "errorCode": exc.error_code}, exc.status)
        if result is None:
            return Response(status_code=204)
        return JSONResponse(result)

    return endpoint


def _body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ControlError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    return body
