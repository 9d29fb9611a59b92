"""The sandbox org's Pub/Sub API: a gRPC server (TLS, sandbox CA) on the generated stubs.

``GetTopic``, ``GetSchema`` and ``Subscribe`` on Change Data Capture channels, fed by the
org's change log (``changelog.py``), events Avro-encoded per ``avro_schemas.py``.
Follows ``reference/salesforce/streaming-facts.md`` and ``pubsub_api.proto``:

- every call authenticates with the metadata ``accesstoken`` / ``instanceurl`` /
  ``tenantid`` (UNAUTHENTICATED otherwise);
- the replay preset of the first FetchRequest is the only one read (LATEST, EARLIEST,
  CUSTOM: delivery starts after the given id); a CUSTOM id the log does not know or that is
  outside retention fails the call (INVALID_ARGUMENT, trailer ``error-code:
  sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted``);
- credit: at most ``num_requested`` (capped at 100 per request) events until the client
  asks for more; with nothing to send, a keepalive (an empty batch with the latest replay
  id) every ``keepalive_interval`` seconds;
- channels: the custom channel ``/data/ExternalRoutingChannel__chn`` (PSR filtered
  ``RoutingModel = 'ExternalRouting' AND IsReadyForRouting = true``, enriched with those
  fields on UPDATE and DELETE; AgentWork; the work items; UserServicePresence) and the
  single-entity channels ``/data/<Entity>ChangeEvent``.

Controls (``/__sandbox/streams/pubsub/...``): drop every stream, stop keepalives, drop or
delay one event, expire retention, void the replay ids, count deliveries per channel.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from bridge.adapters.salesforce.pubsub import pubsub_api_pb2 as pb
from bridge.adapters.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc
from bridge_sandbox.salesforce import ids
from bridge_sandbox.salesforce.avro_schemas import ChangeEventSchema, Schemas, event_name
from bridge_sandbox.salesforce.changelog import ChangeEvent
from bridge_sandbox.serving import LOOPBACK, SandboxCA

if TYPE_CHECKING:
    from bridge_sandbox.salesforce.app import SalesforceSandbox

EXTERNAL_ROUTING_CHANNEL = "/data/ExternalRoutingChannel__chn"
PSR_FILTER = "RoutingModel = 'ExternalRouting' AND IsReadyForRouting = true"
# The work items the engine reads the end of (bridge/adapters/salesforce/polling.py).
WORK_ITEM_ENTITIES = ("MessagingSession", "Case")
ENTITIES = ("PendingServiceRouting", "AgentWork", "UserServicePresence", *WORK_ITEM_ENTITIES)
MAX_NUM_REQUESTED = 100
DEFAULT_KEEPALIVE_INTERVAL = 60.0  # the service sends one within 270 s

REPLAY_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
TOPIC_NOT_FOUND = "sfdc.platform.eventbus.grpc.service.topic.not.found"
SCHEMA_NOT_FOUND = "sfdc.platform.eventbus.grpc.service.schema.not.found"
INVALID_REQUEST = "sfdc.platform.eventbus.grpc.service.invalid.request"


@dataclass(frozen=True)
class Member:
    """A channel member: one entity's change events, optionally filtered (and enriched
    with the filter's fields)."""

    entity: str
    filter_text: str = ""
    filter_fields: tuple[str, ...] = ()
    accepts: Callable[[Mapping[str, Any]], bool] = field(default=lambda record: True)


@dataclass(frozen=True)
class Channel:
    name: str
    members: Mapping[str, Member]


def _external_routing(record: Mapping[str, Any]) -> bool:
    return (
        record.get("RoutingModel") == "ExternalRouting" and record.get("IsReadyForRouting") is True
    )


def channels() -> dict[str, Channel]:
    """The org's change event channels: the custom channel and one per entity."""
    psr = Member(
        "PendingServiceRouting",
        PSR_FILTER,
        ("RoutingModel", "IsReadyForRouting"),
        _external_routing,
    )
    custom = Channel(
        EXTERNAL_ROUTING_CHANNEL,
        {psr.entity: psr, **{e: Member(e) for e in ENTITIES if e != psr.entity}},
    )
    single = {
        f"/data/{event_name(e)}": Channel(f"/data/{event_name(e)}", {e: Member(e)})
        for e in ENTITIES
    }
    return {custom.name: custom, **single}


@dataclass
class _Fate:
    """What an injected stream fault does to the next matching event."""

    action: str  # drop | delay | gap
    channel: str | None
    entity: str | None
    seconds: float = 0.0
    id: int = 0

    def matches(self, channel: str, event: ChangeEvent) -> bool:
        return (self.channel is None or self.channel == channel) and (
            self.entity is None or self.entity == event.entity
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "channel": self.channel,
            "entity": self.entity,
            "seconds": self.seconds,
        }


@dataclass
class _Group:
    """Change events a stream sends as one (merged when of one transaction and alike)."""

    events: list[ChangeEvent]
    member: Member
    key: Hashable
    gap: bool = False


class _Stream:
    """One Subscribe call: where it is in the log, its credit, why it must stop."""

    def __init__(self, channel: Channel, position: int, credit: int) -> None:
        self.channel = channel
        self.position = position
        self.credit = credit
        self.wake = threading.Event()
        self.dropped = False
        self.error: tuple[grpc.StatusCode, str, str] | None = None


class PubSubApi(pb_grpc.PubSubServicer):
    """The service: authentication, topics, schemas, subscriptions, stream controls."""

    def __init__(
        self, sandbox: SalesforceSandbox, keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    ) -> None:
        self.sandbox = sandbox
        self.org = sandbox.org
        self.channels = channels()
        self.schemas = Schemas(self.org.schema, ENTITIES)
        self.default_keepalive_interval = keepalive_interval
        self.keepalive_interval = keepalive_interval
        self.keepalives = True
        self._lock = threading.Lock()
        self._streams: set[_Stream] = set()
        self._faults: list[_Fate] = []
        self._fault_ids = 0
        self._dropped: set[int] = set()
        self._gaps: set[int] = set()
        self._held: dict[int, float] = {}  # replay id -> monotonic release time
        self._deliveries: Counter[str] = Counter()
        self._keepalives_sent: Counter[str] = Counter()
        self._subscriptions: Counter[str] = Counter()
        self.org.changes.listen(self._wake_all)

    # -- RPCs -------------------------------------------------------------------------
    def GetTopic(self, request: Any, context: grpc.ServicerContext) -> Any:
        rpc_id = self._authenticate(context)
        channel = self._channel(request.topic_name, context, rpc_id)
        single = [self.schemas.by_entity[e] for e in channel.members]
        return pb.TopicInfo(
            topic_name=channel.name,
            tenant_guid=self.org.org_id,
            can_publish=False,  # change events are the org's own
            can_subscribe=True,
            # a channel of several entities has no one schema: each event names its own
            schema_id=single[0].schema_id if len(single) == 1 else "",
            rpc_id=rpc_id,
        )

    def GetSchema(self, request: Any, context: grpc.ServicerContext) -> Any:
        rpc_id = self._authenticate(context)
        schema = self.schemas.by_id.get(request.schema_id)
        if schema is None:
            _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"Schema not found: {request.schema_id!r}",
                SCHEMA_NOT_FOUND,
                rpc_id,
            )
        return pb.SchemaInfo(
            schema_json=schema.schema_json, schema_id=schema.schema_id, rpc_id=rpc_id
        )

    def Subscribe(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        rpc_id = self._authenticate(context)
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        channel = self._channel(first.topic_name, context, rpc_id)
        log = self.org.changes
        if first.replay_preset == pb.CUSTOM:
            position = log.position(bytes(first.replay_id))
            if position is None:
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "The Replay ID validation failed: the replay id is not valid or is "
                    "outside the retention window.",
                    REPLAY_CORRUPTED,
                    rpc_id,
                )
        elif first.replay_preset == pb.EARLIEST:
            position = log.earliest_position
        else:
            position = log.committed_replay_id
        stream = _Stream(channel, position, _credit(first.num_requested))
        with self._lock:
            self._streams.add(stream)
            self._subscriptions[channel.name] += 1
        context.add_callback(stream.wake.set)  # a cancelled call ends at once
        reader = threading.Thread(
            target=self._read_requests,
            args=(stream, request_iterator),
            name="pubsub-fetch-requests",
            daemon=True,
        )
        reader.start()
        try:
            yield from self._deliver(stream, context, rpc_id)
        finally:
            with self._lock:
                self._streams.discard(stream)

    # -- subscription -----------------------------------------------------------------
    def _read_requests(self, stream: _Stream, requests: Iterator[Any]) -> None:
        """Later FetchRequests add credit; their replay options are ignored (the proto)."""
        try:
            for request in requests:
                if request.topic_name and request.topic_name != stream.channel.name:
                    stream.error = (
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"The topic {request.topic_name!r} does not match the subscription's "
                        f"topic {stream.channel.name!r}.",
                        INVALID_REQUEST,
                    )
                    stream.wake.set()
                    return
                with self._lock:
                    stream.credit += _credit(request.num_requested)
                stream.wake.set()
        except (grpc.RpcError, ValueError):
            pass  # the call ended

    def _deliver(
        self, stream: _Stream, context: grpc.ServicerContext, rpc_id: str
    ) -> Iterator[Any]:
        last_sent = time.monotonic()
        while True:
            stream.wake.clear()
            if stream.error is not None:
                _abort(context, stream.error[0], stream.error[1], stream.error[2], rpc_id)
            if stream.dropped:
                _abort(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    "The stream was closed by the server (sandbox control).",
                    "",
                    rpc_id,
                )
            if not context.is_active():
                return
            events, hold = self._collect(stream)
            now = time.monotonic()
            if events:
                yield self._response(stream, events, rpc_id)
                last_sent = now
                continue
            interval = self.keepalive_interval
            if self.keepalives and now - last_sent >= interval:
                yield self._response(stream, [], rpc_id)
                with self._lock:
                    self._keepalives_sent[stream.channel.name] += 1
                last_sent = now
            timeout = 1.0  # look at context.is_active() now and then
            if self.keepalives:
                timeout = min(timeout, max(0.0, last_sent + interval - now))
            if hold is not None:
                timeout = min(timeout, max(0.0, hold - now))
            stream.wake.wait(max(timeout, 0.005))

    def _response(self, stream: _Stream, events: list[Any], rpc_id: str) -> Any:
        with self._lock:
            pending = stream.credit
            if events:
                self._deliveries[stream.channel.name] += len(events)
        return pb.FetchResponse(
            events=events,
            latest_replay_id=self.org.changes.replay_bytes(stream.position),
            rpc_id=rpc_id,
            pending_num_requested=pending,
        )

    def _collect(self, stream: _Stream) -> tuple[list[Any], float | None]:
        """The next events this stream may send now (within its credit, at most one batch),
        and when a held event is released (None: nothing held)."""
        log = self.org.changes
        groups: list[_Group] = []
        while True:
            page = log.after(stream.position, 500)
            if not page:
                return self._encode(groups), None
            for event in page:
                member = stream.channel.members.get(event.entity)
                if member is None or not member.accepts(event.record):
                    stream.position = event.replay_id
                    continue
                schema = self.schemas.by_entity[event.entity]
                key = schema.merge_key(event, member.filter_fields)
                last = groups[-1] if groups else None
                if last is not None and not last.gap and last.key == key:
                    # same transaction, same changes: one event with several recordIds
                    last.events.append(event)
                    stream.position = event.replay_id
                    continue
                with self._lock:
                    if stream.credit <= 0 or len(groups) >= MAX_NUM_REQUESTED:
                        return self._encode(groups), None
                fate = self._fate(stream.channel.name, event)
                if fate == "drop":
                    stream.position = event.replay_id
                    continue
                if isinstance(fate, float) and fate > time.monotonic():
                    return self._encode(groups), fate
                groups.append(_Group([event], member, key, gap=fate == "gap"))
                with self._lock:
                    stream.credit -= 1
                stream.position = event.replay_id

    def _encode(self, groups: list[_Group]) -> list[Any]:
        return [self._consumer_event(g.events, g.member, g.gap) for g in groups]

    def _fate(self, channel: str, event: ChangeEvent) -> str | float | None:
        """``drop``, ``gap``, a release time, or None: injected faults decide once per
        event, for every stream."""
        with self._lock:
            if event.replay_id in self._dropped:
                return "drop"
            if event.replay_id in self._gaps:
                return "gap"
            if event.replay_id in self._held:
                return self._held[event.replay_id]
            for fault in self._faults:
                if fault.matches(channel, event):
                    self._faults.remove(fault)
                    if fault.action == "drop":
                        self._dropped.add(event.replay_id)
                        return "drop"
                    if fault.action == "gap":
                        self._gaps.add(event.replay_id)
                        return "gap"
                    release = time.monotonic() + fault.seconds
                    self._held[event.replay_id] = release
                    threading.Timer(fault.seconds, self._wake_all).start()
                    return release
        return None

    def _consumer_event(self, events: list[ChangeEvent], member: Member, gap: bool) -> Any:
        event = events[-1]  # a merged event has the replay id of its last part
        schema: ChangeEventSchema = self.schemas.by_entity[event.entity]
        payload = schema.encode(events, enrich=member.filter_fields, gap=gap)
        return pb.ConsumerEvent(
            event=pb.ProducerEvent(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.org.org_id}/{event.replay_id}")),
                schema_id=schema.schema_id,
                payload=payload,
            ),
            replay_id=self.org.changes.replay_bytes(event.replay_id),
        )

    # -- checks -----------------------------------------------------------------------
    def _authenticate(self, context: grpc.ServicerContext) -> str:
        rpc_id = str(uuid.uuid4())
        metadata = {k.lower(): v for k, v in context.invocation_metadata()}
        token = metadata.get("accesstoken")
        instance = str(metadata.get("instanceurl", "")).rstrip("/")
        tenant = str(metadata.get("tenantid", ""))
        org = self.org.org_id
        if (
            not token
            or self.sandbox.oauth.check(str(token)) is None
            or instance != self.sandbox.instance_url.rstrip("/")
            or tenant not in (org, ids.to15(org))
        ):
            _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "The session is invalid or the metadata accesstoken, instanceurl and tenantid "
                "do not name this org.",
                AUTH_ERROR,
                rpc_id,
            )
        return rpc_id

    def _channel(self, name: str, context: grpc.ServicerContext, rpc_id: str) -> Channel:
        channel = self.channels.get(name)
        if channel is None:
            _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"The topic {name!r} does not exist or you do not have access to it.",
                TOPIC_NOT_FOUND,
                rpc_id,
            )
        return channel

    # -- controls ---------------------------------------------------------------------
    def _wake_all(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.wake.set()

    def drop_connections(self) -> int:
        """Every open Subscribe call ends with UNAVAILABLE; returns how many."""
        with self._lock:
            streams = list(self._streams)
            self._streams.clear()
        for stream in streams:
            stream.dropped = True
            stream.wake.set()
        return len(streams)

    def set_keepalives(self, enabled: bool, interval: float | None = None) -> dict[str, Any]:
        self.keepalives = enabled
        if interval is not None:
            if interval <= 0:
                raise ValueError("the keepalive interval must be > 0 seconds")
            self.keepalive_interval = interval
        self._wake_all()
        return {"enabled": self.keepalives, "interval": self.keepalive_interval}

    def add_fault(
        self,
        action: str,
        channel: str | None = None,
        entity: str | None = None,
        seconds: float = 0.0,
    ) -> dict[str, Any]:
        """The next event delivered (on ``channel`` / of ``entity``, if given) is dropped
        from the stream for good, held back ``seconds`` (later events wait behind it), or
        sent as a GAP_ event (header only: the subscriber must read the record)."""
        if action not in ("drop", "delay", "gap"):
            raise ValueError("action must be 'drop', 'delay' or 'gap'")
        if channel is not None and channel not in self.channels:
            raise ValueError(f"unknown channel {channel!r}")
        if entity is not None and entity not in ENTITIES:
            raise ValueError(f"no change events of {entity!r} on any channel")
        if action == "delay" and seconds <= 0:
            raise ValueError("a delay needs 'seconds' > 0")
        with self._lock:
            self._fault_ids += 1
            fate = _Fate(action, channel, entity, seconds, self._fault_ids)
            self._faults.append(fate)
        return fate.as_dict()

    def expire_retention(self) -> int:
        """Every retained change event falls out of retention; returns how many."""
        return self.org.changes.expire()

    def void_replay_ids(self) -> None:
        """Every replay id handed out so far is refused (an org moved instance)."""
        self.org.changes.void()

    def deliveries(self) -> dict[str, Any]:
        with self._lock:
            names = sorted(
                set(self._deliveries) | set(self._keepalives_sent) | set(self._subscriptions)
            )
            return {
                "channels": {
                    n: {
                        "events": self._deliveries[n],
                        "keepalives": self._keepalives_sent[n],
                        "subscriptions": self._subscriptions[n],
                    }
                    for n in names
                },
                "open_streams": len(self._streams),
            }

    def reset(self) -> None:
        """No open streams (the org they followed is gone), no faults, counters at zero,
        keepalives on at the default interval."""
        self.drop_connections()
        with self._lock:
            self._faults.clear()
            self._dropped.clear()
            self._gaps.clear()
            self._held.clear()
            self._deliveries.clear()
            self._keepalives_sent.clear()
            self._subscriptions.clear()
        self.set_keepalives(True, self.default_keepalive_interval)


def _credit(num_requested: int) -> int:
    return max(0, min(int(num_requested), MAX_NUM_REQUESTED))


def _abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str, error_code: str, rpc_id: str
) -> NoReturn:
    trailers = [("rpc-id", rpc_id)]
    if error_code:
        trailers.insert(0, ("error-code", error_code))
    context.set_trailing_metadata(trailers)
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort raises


class PubSubServer:
    """The Pub/Sub API served over TLS on loopback (the sandbox CA's server certificate)."""

    def __init__(self, api: PubSubApi, ca: SandboxCA, *, port: int = 0, workers: int = 64) -> None:
        self.api = api
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pubsub"),
            options=[("grpc.so_reuseport", 0)],
        )
        pb_grpc.add_PubSubServicer_to_server(api, self._server)  # type: ignore[no-untyped-call]
        credentials = grpc.ssl_server_credentials(
            [(ca.key_file.read_bytes(), ca.cert_file.read_bytes())]
        )
        self.port: int = self._server.add_secure_port(f"{LOOPBACK}:{port}", credentials)
        if not self.port:
            raise RuntimeError(f"pubsub: cannot listen on {LOOPBACK}:{port}")

    @property
    def url(self) -> str:
        """``host:port``, as ``BRIDGE_SALESFORCE__PUBSUB_URL`` takes it."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> PubSubServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self.api.drop_connections()
        self._server.stop(grace=1).wait(5)
