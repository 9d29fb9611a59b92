"""The sandbox org's Streaming API: PushTopics and the CometD (Bayeux) endpoint.

``PushTopic`` is an sObject (created over REST); its ``Query`` is checked by the sandbox's
SOQL parser. Every write the org commits is evaluated against the active topics of its
sObject (the topics' WHERE and ``NotifyFor*`` settings) as the write happens, and a matching
one becomes an event ``{event: {type, createdDate, replayId}, sobject: {the query's
fields}}`` kept 24 h on the sandbox clock.

``POST {instance_url}/cometd/{version}`` takes a JSON array of Bayeux messages:
``/meta/handshake``, ``/meta/subscribe`` (replay extension: -1 new only, -2 all retained,
or a replay id: delivery starts after it), ``/meta/connect`` (long-polling, held until an
event or the advice's timeout), ``/meta/unsubscribe``, ``/meta/disconnect``. Replies carry
errors in the messages (HTTP 200), with Salesforce's texts: ``401::Authentication
invalid`` (advice ``reconnect: none``), ``403::Unknown client`` (advice ``reconnect:
handshake``), the ``400`` replay-invalid answer. A client that does not keep the
``BAYEUX_BROWSER`` cookie of its handshake is an unknown client, as behind Salesforce's
load balancers.

Known simplification: events are made by the org's write hooks, so a write that an
all-or-none call rolls back afterwards has already produced its event.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge_sandbox.salesforce import soql as soql_module
from bridge_sandbox.salesforce.store import Org, SalesforceApiError

if TYPE_CHECKING:
    from bridge_sandbox.salesforce.app import SalesforceSandbox

RETENTION = timedelta(hours=24)
CONNECT_TIMEOUT_MS = 110_000
# A client that sends no /meta/connect for this long after the last reply is forgotten.
CLIENT_TIMEOUT = timedelta(seconds=40)
TOPIC_PREFIX = "/topic/"
NAME_MAX = 25
QUERY_MAX = 1300
COOKIE = "BAYEUX_BROWSER"
_EVENT_TYPES = {"CREATE": "created", "UPDATE": "updated", "DELETE": "deleted"}
_OPERATION_FLAGS = {
    "created": "NotifyForOperationCreate",
    "updated": "NotifyForOperationUpdate",
    "deleted": "NotifyForOperationDelete",
    "undeleted": "NotifyForOperationUndelete",
}
AUTH_INVALID = "401::Authentication invalid"
UNKNOWN_CLIENT = "403::Unknown client"


def replay_invalid(replay_id: object) -> str:
    """Salesforce's answer to a replay id outside retention (two spaces after "invalid.")."""
    return (
        f"400::The replayId {{{replay_id}}} you provided was invalid.  Please provide a "
        "valid ID, -2 to replay all events, or -1 to replay only new events."
    )


def unknown_channel(channel: str) -> str:
    return f"400::The channel you requested to subscribe to does not exist {{{channel}}}"


@dataclass(frozen=True)
class TopicEvent:
    replay_id: int
    channel: str
    created: datetime
    data: dict[str, Any]
    not_before: float = 0.0  # wall time (monotonic) before which it is not delivered


@dataclass
class Client:
    client_id: str
    browser: str
    token: str
    subscriptions: dict[str, int] = field(default_factory=dict)  # channel -> last delivered
    last_seen: datetime | None = None
    connected: bool = False  # the first /meta/connect was answered


def _paths(condition: soql_module.Condition | None) -> list[soql_module.FieldPath]:
    if condition is None:
        return []
    if isinstance(condition, soql_module.And | soql_module.Or):
        return [p for part in condition.parts for p in _paths(part)]
    if isinstance(condition, soql_module.Not):
        return _paths(condition.part)
    return [condition.path]


@dataclass(frozen=True)
class Topic:
    """An active PushTopic, its query parsed."""

    id: str
    name: str
    query: soql_module.Query
    notify_for_fields: str
    operations: frozenset[str]

    @property
    def channel(self) -> str:
        return TOPIC_PREFIX + self.name

    def watched(self) -> set[str] | None:
        """Root fields whose change makes an update notify (None: any field)."""
        select = {p.field for p in self.query.fields if not p.hops}
        where = {p.field if not p.hops else p.hops[0][1] for p in _paths(self.query.where)}
        return {
            "All": None,
            "Select": select,
            "Where": where,
            "Referenced": select | where,
        }[self.notify_for_fields]


class _OneRecord:
    """The SOQL evaluator's source: the written record as the root, the org for the rest."""

    def __init__(self, org: Org, root: str, record: dict[str, Any]) -> None:
        self._org, self._root, self._record = org, root, record

    def records(self, sobject: str, include_deleted: bool) -> list[dict[str, Any]]:
        if sobject == self._root:
            return [self._record]
        return self._org.all(sobject)

    def by_id(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        return self._org.get_any(record_id)


class StreamingApi:
    """PushTopic events and the Bayeux endpoint of one sandbox org."""

    def __init__(self, sandbox: SalesforceSandbox) -> None:
        self.sandbox = sandbox
        self.org = sandbox.org
        self.clock = sandbox.clock
        self.connect_timeout_ms = CONNECT_TIMEOUT_MS
        self._lock = threading.RLock()
        self._events: list[TopicEvent] = []
        self._purged: dict[str, int] = {}  # channel -> newest replay id purged
        self._next = 1
        self._clients: dict[str, Client] = {}
        self._deliveries: dict[str, int] = {}
        self._drop_next: dict[str, int] = {}  # channel -> events to drop
        self._delay_next: dict[str, float] = {}  # channel -> seconds
        self.stalled = False  # connects are held past their timeout (no answer)
        self._generation = 0  # bumped when clients are dropped: held connects end
        self.org.add_behaviour(self)
        self.org.on_reset(self.reset)
        self.clock.on_advance(self.purge)

    # -- state ------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self._events.clear()
            self._purged.clear()
            self._clients.clear()
            self._deliveries.clear()
            self._drop_next.clear()
            self._delay_next.clear()
            self.stalled = False
            self.connect_timeout_ms = CONNECT_TIMEOUT_MS
            self._generation += 1

    def purge(self) -> None:
        """Forget events older than the retention period."""
        cutoff = self.clock.now() - RETENTION
        with self._lock:
            keep = [e for e in self._events if e.created >= cutoff]
            for gone in self._events[: len(self._events) - len(keep)]:
                self._purged[gone.channel] = max(self._purged.get(gone.channel, 0), gone.replay_id)
            self._events = keep

    def expire(self) -> int:
        """Every retained event falls out of retention now; returns how many."""
        with self._lock:
            count = len(self._events)
            for gone in self._events:
                self._purged[gone.channel] = max(self._purged.get(gone.channel, 0), gone.replay_id)
            self._events = []
            return count

    def drop_clients(self) -> int:
        """Every client is forgotten (its next message: ``403::Unknown client``)."""
        with self._lock:
            count = len(self._clients)
            self._clients.clear()
            self._generation += 1
            return count

    def drop_next_event(self, channel: str) -> None:
        with self._lock:
            self._drop_next[channel] = self._drop_next.get(channel, 0) + 1

    def delay_next_event(self, channel: str, seconds: float) -> None:
        with self._lock:
            self._delay_next[channel] = seconds

    def deliveries(self) -> dict[str, int]:
        with self._lock:
            return dict(self._deliveries)

    def events(self, channel: str | None = None) -> list[TopicEvent]:
        with self._lock:
            return [e for e in self._events if channel is None or e.channel == channel]

    @property
    def latest_replay_id(self) -> int:
        with self._lock:
            return self._next - 1

    # -- topics -----------------------------------------------------------------------
    def topics(self, sobject: str) -> list[Topic]:
        out = []
        for record in self.org.where("PushTopic", IsActive=True):
            parsed = soql_module.parse(record["Query"], self.org.schema)
            if parsed.sobject != sobject:
                continue
            operations = frozenset(op for op, flag in _OPERATION_FLAGS.items() if record[flag])
            out.append(
                Topic(
                    record["Id"],
                    record["Name"],
                    parsed,
                    record["NotifyForFields"] or "Referenced",
                    operations,
                )
            )
        return out

    def _check_topic(self, record: dict[str, Any], existing_id: str | None) -> None:
        name = record.get("Name")
        if not name:
            raise SalesforceApiError(
                400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ["Name"]
            )
        if len(name) > NAME_MAX:
            raise SalesforceApiError(
                400,
                "STRING_TOO_LONG",
                f"Name: data value too large: {name} (max length={NAME_MAX})",
                ["Name"],
            )
        for other in self.org.where("PushTopic", Name=name):
            if other["Id"] != existing_id:
                raise SalesforceApiError(
                    400,
                    "DUPLICATE_VALUE",
                    f"duplicate value found: Name duplicates value on record with id: "
                    f"{other['Id']}",
                    ["Name"],
                )
        query = record.get("Query") or ""
        if len(query) > QUERY_MAX:
            raise SalesforceApiError(
                400,
                "STRING_TOO_LONG",
                f"Query: data value too large (max length={QUERY_MAX})",
                ["Query"],
            )
        try:
            parsed = soql_module.parse(query, self.org.schema)
        except soql_module.SoqlError as exc:
            raise SalesforceApiError(400, exc.error_code, exc.message, ["Query"]) from exc
        if parsed.counts or parsed.count_only or parsed.order_by or parsed.limit is not None:
            raise SalesforceApiError(
                400,
                "INVALID_FIELD",
                "Aggregate queries, ORDER BY and LIMIT are not supported in a PushTopic query",
                ["Query"],
            )
        if not any(p.field == "Id" and not p.hops for p in parsed.fields):
            raise SalesforceApiError(
                400, "INVALID_FIELD", "The PushTopic query must select Id", ["Query"]
            )
        if record.get("ApiVersion") is None:
            raise SalesforceApiError(
                400,
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [ApiVersion]",
                ["ApiVersion"],
            )

    # -- the org's write hooks (Behaviour) --------------------------------------------
    def before_insert(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        if sobject == "PushTopic":
            self._check_topic(record, None)

    def before_update(
        self, org: Org, sobject: str, old: dict[str, Any], changes: dict[str, Any], system: bool
    ) -> None:
        if sobject == "PushTopic":
            self._check_topic({**old, **changes}, old["Id"])

    def before_delete(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        return None

    def after_insert(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        self._written(sobject, "created", record, None)

    def after_update(
        self, org: Org, sobject: str, old: dict[str, Any], new: dict[str, Any], system: bool
    ) -> None:
        changed = {k for k in new if new.get(k) != old.get(k)}
        self._written(sobject, "updated", new, changed)

    def after_delete(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        live = {**record, "IsDeleted": False}  # matched as it was before the delete
        self._written(sobject, "deleted", live, None)

    def _written(
        self, sobject: str, kind: str, record: dict[str, Any], changed: set[str] | None
    ) -> None:
        if sobject == "PushTopic":
            return
        for topic in self.topics(sobject):
            if kind not in topic.operations:
                continue
            if changed is not None:
                watched = topic.watched()
                system_only = {"LastModifiedDate", "SystemModstamp", "LastModifiedById"}
                if not (changed - system_only if watched is None else changed & watched):
                    continue
            rows = soql_module.execute(
                topic.query,
                _OneRecord(self.org, sobject, record),
                now=self.clock.now(),
                url_for=lambda s, i: f"/services/data/v62.0/sobjects/{s}/{i}",
            ).records
            if not rows:
                continue
            values = {k: v for k, v in rows[0].items() if k != "attributes"}
            self._publish(
                topic.channel, kind, {"Id": record["Id"]} if kind == "deleted" else values
            )

    def _publish(self, channel: str, kind: str, sobject: dict[str, Any]) -> None:
        with self._lock:
            if self._drop_next.get(channel):
                self._drop_next[channel] -= 1
                return
            delay = self._delay_next.pop(channel, 0.0)
            replay_id = self._next
            self._next += 1
            now = self.clock.now()
            created = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            self._events.append(
                TopicEvent(
                    replay_id,
                    channel,
                    now,
                    {
                        "event": {"createdDate": created, "replayId": replay_id, "type": kind},
                        "sobject": sobject,
                    },
                    not_before=time.monotonic() + delay if delay else 0.0,
                )
            )

    # -- Bayeux -----------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [Route("/cometd/{version}", self.endpoint, methods=["POST"])]

    async def endpoint(self, request: Request) -> Response:
        version = request.path_params["version"]
        try:
            major = float(version)
        except ValueError:
            major = 0.0
        if major < 37.0:
            return JSONResponse(
                [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}],
                status_code=404,
            )
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse([{"successful": False, "error": "400::Bad JSON"}], 400)
        messages = body if isinstance(body, list) else [body]
        token = self.sandbox.oauth.check_header(request.headers.get("authorization"))
        browser = request.cookies.get(COOKIE)
        replies: list[dict[str, Any]] = []
        set_cookie: str | None = None
        for message in messages:
            if not isinstance(message, dict):
                replies.append({"successful": False, "error": "400::Bad message"})
                continue
            channel = message.get("channel")
            if channel == "/meta/handshake":
                reply, set_cookie = self._handshake(message, token)
                replies.append(reply)
            elif channel == "/meta/connect":
                replies.extend(await self._connect(message, token, browser))
            elif channel in ("/meta/subscribe", "/meta/unsubscribe"):
                replies.append(self._subscription(message, token, browser))
            elif channel == "/meta/disconnect":
                replies.append(self._disconnect(message, browser))
            else:
                replies.append(
                    _reply(message, successful=False, error=f"400::Unknown channel {{{channel}}}")
                )
        response = JSONResponse(replies)
        if set_cookie is not None:
            response.set_cookie(COOKIE, set_cookie, secure=True, httponly=True)
        return response

    def _handshake(self, message: dict[str, Any], token: Any) -> tuple[dict[str, Any], str | None]:
        if token is None:
            return (
                _reply(
                    message,
                    successful=False,
                    error="403::Handshake denied",
                    advice={"reconnect": "none"},
                    ext={"sfdc": {"failureReason": AUTH_INVALID}, "replay": True},
                ),
                None,
            )
        client = Client(secrets.token_urlsafe(18), secrets.token_hex(12), token.value)
        client.last_seen = self.clock.now()
        with self._lock:
            self._clients[client.client_id] = client
        return (
            _reply(
                message,
                successful=True,
                clientId=client.client_id,
                version="1.0",
                minimumVersion="1.0",
                supportedConnectionTypes=["long-polling"],
                ext={"replay": True, "payload.format": True},
                advice={"interval": 0, "timeout": self.connect_timeout_ms, "reconnect": "retry"},
            ),
            client.browser,
        )

    def _client(
        self, message: dict[str, Any], token: Any, browser: str | None
    ) -> Client | dict[str, Any]:
        """The message's client, or the error reply (session first, then the client)."""
        if token is None:
            return _reply(
                message, successful=False, error=AUTH_INVALID, advice={"reconnect": "none"}
            )
        self._expire_clients()
        with self._lock:
            client = self._clients.get(str(message.get("clientId")))
        if client is None or client.browser != browser:
            return _reply(
                message,
                successful=False,
                error=UNKNOWN_CLIENT,
                advice={"reconnect": "handshake", "interval": 0},
            )
        client.last_seen = self.clock.now()
        return client

    def _expire_clients(self) -> None:
        cutoff = self.clock.now() - CLIENT_TIMEOUT
        with self._lock:
            for client_id, client in list(self._clients.items()):
                if client.last_seen is not None and client.last_seen < cutoff:
                    del self._clients[client_id]

    def _subscription(
        self, message: dict[str, Any], token: Any, browser: str | None
    ) -> dict[str, Any]:
        found = self._client(message, token, browser)
        if isinstance(found, dict):
            return found
        client = found
        wanted = message.get("subscription")
        channels = wanted if isinstance(wanted, list) else [wanted]
        subscribe = message["channel"] == "/meta/subscribe"
        for channel in channels:
            if not isinstance(channel, str):
                return _reply(message, successful=False, error="400::Bad subscription")
            if not subscribe:
                with self._lock:
                    client.subscriptions.pop(channel, None)
                continue
            error = self._subscribe(client, channel, message)
            if error is not None:
                return _reply(message, successful=False, error=error, subscription=wanted)
        return _reply(message, successful=True, clientId=client.client_id, subscription=wanted)

    def _subscribe(self, client: Client, channel: str, message: dict[str, Any]) -> str | None:
        if not channel.startswith(TOPIC_PREFIX):
            return unknown_channel(channel)
        name = channel[len(TOPIC_PREFIX) :]
        if not any(t["IsActive"] for t in self.org.where("PushTopic", Name=name)):
            return unknown_channel(channel)
        ext = message.get("ext") or {}
        replay = ext.get("replay") if isinstance(ext, dict) else None
        requested = replay.get(channel, -1) if isinstance(replay, dict) else -1
        self.purge()
        with self._lock:
            if requested == -1:
                cursor = self._next - 1
            elif requested == -2:
                cursor = 0
            elif (
                isinstance(requested, int)
                and not isinstance(requested, bool)
                and self._purged.get(channel, 0) <= requested < self._next
            ):
                cursor = requested
            else:
                return replay_invalid(requested)
            client.subscriptions[channel] = cursor
        return None

    def _disconnect(self, message: dict[str, Any], browser: str | None) -> dict[str, Any]:
        with self._lock:
            client = self._clients.get(str(message.get("clientId")))
            if client is None or client.browser != browser:
                return _reply(message, successful=False, error=UNKNOWN_CLIENT)
            del self._clients[client.client_id]
        return _reply(message, successful=True, clientId=client.client_id)

    def _pending(self, client: Client) -> list[TopicEvent]:
        now = time.monotonic()
        with self._lock:
            out = []
            for event in self._events:
                after = client.subscriptions.get(event.channel)
                if after is None or event.replay_id <= after:
                    continue
                if event.not_before > now:
                    break  # a delayed event holds back the ones behind it, in order
                out.append(event)
            return out

    async def _connect(
        self, message: dict[str, Any], token: Any, browser: str | None
    ) -> list[dict[str, Any]]:
        found = self._client(message, token, browser)
        if isinstance(found, dict):
            return [found]
        client = found
        advice = {"interval": 0, "timeout": self.connect_timeout_ms, "reconnect": "retry"}
        generation = self._generation
        if not client.connected:
            # The first connect answers at once, with the advice.
            client.connected = True
            return [_reply(message, successful=True, clientId=client.client_id, advice=advice)]
        deadline = time.monotonic() + self.connect_timeout_ms / 1000
        while True:
            if self._generation != generation:  # dropped: a forgotten client gets nothing
                return [
                    _reply(
                        message,
                        successful=False,
                        error=UNKNOWN_CLIENT,
                        advice={"reconnect": "handshake", "interval": 0},
                    )
                ]
            events = self._pending(client)
            if events:
                break
            if time.monotonic() >= deadline and not self.stalled:
                break
            client.last_seen = self.clock.now()  # a held connect keeps the client alive
            await asyncio.sleep(0.01)
        replies: list[dict[str, Any]] = []
        with self._lock:
            for event in events:
                replies.append({"channel": event.channel, "data": event.data})
                client.subscriptions[event.channel] = event.replay_id
                self._deliveries[event.channel] = self._deliveries.get(event.channel, 0) + 1
        client.last_seen = self.clock.now()
        replies.append(_reply(message, successful=True, clientId=client.client_id, advice=advice))
        return replies

    # -- control surface --------------------------------------------------------------
    def control_routes(self) -> list[Route]:
        base = "/__sandbox/streams/cometd"
        table: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
            ("POST", "/drop-connections", lambda b: {"dropped": self.drop_clients()}),
            ("POST", "/expire", lambda b: {"expired": self.expire()}),
            ("POST", "/drop-event", lambda b: self.drop_next_event(_channel(b))),
            (
                "POST",
                "/delay-event",
                lambda b: self.delay_next_event(_channel(b), float(b.get("seconds", 1.0))),
            ),
            ("POST", "/settings", self._settings),
            ("GET", "/deliveries", lambda b: self.deliveries()),
            (
                "GET",
                "/events",
                lambda b: [{"channel": e.channel, **e.data} for e in self.events(b.get("channel"))],
            ),
        ]

        def endpoint(action: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
            async def run(request: Request) -> Response:
                raw = await request.body()
                try:
                    body = _control_body(raw, dict(request.query_params))
                    result = action(body)
                except (ValueError, TypeError, KeyError) as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
                return Response(status_code=204) if result is None else JSONResponse(result)

            return run

        return [Route(base + path, endpoint(a), methods=[m]) for m, path, a in table]

    def _settings(self, body: dict[str, Any]) -> dict[str, Any]:
        """``connect_timeout_ms`` (the advice's timeout, how long a connect is held) and
        ``stalled`` (connects are held with no answer: the keepalives stop)."""
        unknown = set(body) - {"connect_timeout_ms", "stalled"}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        if "connect_timeout_ms" in body:
            value = body["connect_timeout_ms"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("connect_timeout_ms must be an integer >= 0")
            self.connect_timeout_ms = value
        if "stalled" in body:
            if not isinstance(body["stalled"], bool):
                raise ValueError("stalled must be true or false")
            self.stalled = body["stalled"]
        return {"connect_timeout_ms": self.connect_timeout_ms, "stalled": self.stalled}


def _control_body(raw: bytes, query: dict[str, str]) -> dict[str, Any]:
    body = json.loads(raw) if raw.strip() else query
    if not isinstance(body, dict):
        raise TypeError("the body must be a JSON object")
    return body


def _channel(body: dict[str, Any]) -> str:
    channel = body.get("channel")
    if not isinstance(channel, str) or not channel.startswith(TOPIC_PREFIX):
        raise ValueError("channel must name a topic, e.g. /topic/PSRPushTopic")
    return channel


def _reply(message: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"channel": message.get("channel")}
    if "id" in message:
        out["id"] = message["id"]
    out.update(fields)
    return out
