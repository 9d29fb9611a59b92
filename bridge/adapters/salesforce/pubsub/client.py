"""The Salesforce Pub/Sub API subscriber: change events of one channel as stream batches.

gRPC over TLS (the CA bundle of the settings); every call carries the metadata
``accesstoken`` / ``instanceurl`` / ``tenantid`` of the bridge's Salesforce login.
``Subscribe`` is a bidirectional stream with bounded credit: ``num_requested`` events are
asked for, and more only once the server has sent them all and the batch is recorded
(``pending_num_requested`` 0). Events are Avro, decoded with the schema ``GetSchema`` gives
for their ``schema_id`` (cached by id). Failures go through ``GRPC_ERRORS``: a refused replay
id is ``PositionRefused`` (the stream base catches up), UNAUTHENTICATED takes a new token
before the stream base subscribes again, anything else is a lost connection.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
import grpc

from bridge.adapters.salesforce.auth import SalesforceTokens, Token
from bridge.adapters.salesforce.polling import SOURCE
from bridge.adapters.salesforce.pubsub import pubsub_api_pb2 as pb
from bridge.adapters.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc
from bridge.adapters.salesforce.pubsub.translate import (
    BadChangeEvent,
    ChangeEvent,
    Translator,
    change_event,
)
from bridge.errors import BridgeError, ConfigError, from_grpc
from bridge.flow.stream_metrics import batch_observer
from bridge.flow.streams import Batch, PositionRefused, StreamLedger, StreamPosition, StreamRunner
from bridge.ledger.ports import Ledger, NewEvent

if TYPE_CHECKING:
    from bridge.adapters.salesforce.client import SalesforceAdapter
    from bridge.adapters.salesforce.polling import SalesforceIntake
    from bridge.app.settings import Settings

log = logging.getLogger(__name__)

SYSTEM = "salesforce"
DEFAULT_URL = "api.pubsub.salesforce.com:7443"
MAX_BATCH = 100  # the most one FetchRequest may ask for
ERROR_CODE = "error-code"  # the trailer Salesforce names its errors in
# A call is given this long to answer GetSchema / GetTopic.
CALL_TIMEOUT = 30.0
_CLOSE = object()


def stream_name(channel: str) -> str:
    """The ledger cursor of a channel's subscription."""
    return f"salesforce:pubsub:{channel}"


@dataclass(frozen=True)
class Schema:
    schema_id: str
    json: dict[str, Any]
    parsed: Any


def error_of(exc: grpc.RpcError, what: str) -> BridgeError:
    """A failed call, through the error table (status and Salesforce's error-code)."""
    status = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    error_code = None
    if isinstance(exc, grpc.Call):
        for key, value in exc.trailing_metadata() or ():
            if key == ERROR_CODE:
                error_code = value if isinstance(value, str) else value.decode()
    return from_grpc(SYSTEM, status, f"{what}: {details or status}", error_code=error_code)


class PubSubClient:
    """Subscribes to one channel; ``open`` yields batches for the stream base."""

    def __init__(
        self,
        tokens: SalesforceTokens,
        translator: Translator | None,
        *,
        url: str = DEFAULT_URL,
        channel: str,
        tenant_id: str | None = None,
        ca_bundle: Path | None = None,
        batch: int = MAX_BATCH,
        instance_url: str | None = None,
    ) -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise ConfigError(f"BRIDGE_SALESFORCE__PUBSUB_BATCH must be 1..{MAX_BATCH}")
        self._tokens = tokens
        self._translator = translator
        self._url = url
        self.channel = channel
        self._tenant_id = tenant_id
        self._ca_bundle = ca_bundle
        self._batch = batch
        self._instance_url = instance_url
        self._schemas: dict[str, Schema] = {}
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.PubSubStub | None = None
        self._call: Any = None
        self._requests: queue.Queue[object] | None = None
        self._closing = threading.Event()

    # -- plumbing ---------------------------------------------------------------------------
    def _connect(self) -> pb_grpc.PubSubStub:
        with self._lock:
            if self._stub is None:
                roots = self._ca_bundle.read_bytes() if self._ca_bundle else None
                credentials = grpc.ssl_channel_credentials(root_certificates=roots)
                self._channel = grpc.secure_channel(self._url, credentials)
                self._stub = pb_grpc.PubSubStub(self._channel)  # type: ignore[no-untyped-call]
            return self._stub

    def _metadata(self, token: Token) -> tuple[tuple[str, str], ...]:
        tenant = self._tenant_id or token.org_id
        if not tenant:
            raise ConfigError(
                "the Pub/Sub API needs the org id (BRIDGE_SALESFORCE__ORG_ID): the token "
                "answer did not name it"
            )
        return (
            ("accesstoken", token.access_token.get_secret_value()),
            ("instanceurl", self._instance_url or token.instance_url),
            ("tenantid", tenant),
        )

    def origin(self) -> str:
        """The org instance the stream reads (a replay id is void on another)."""
        return self._instance_url or self._tokens.token().instance_url

    def schema(self, schema_id: str) -> Schema:
        """The Avro schema of ``schema_id`` (GetSchema once per id)."""
        known = self._schemas.get(schema_id)
        if known is not None:
            return known
        token = self._tokens.token()
        try:
            info = self._connect().GetSchema(
                pb.SchemaRequest(schema_id=schema_id),
                metadata=self._metadata(token),
                timeout=CALL_TIMEOUT,
            )
        except grpc.RpcError as exc:
            raise error_of(exc, f"GetSchema {schema_id}") from exc
        data = json.loads(info.schema_json)
        schema = Schema(schema_id, data, fastavro.parse_schema(data))
        self._schemas[schema_id] = schema
        return schema

    def topic(self, name: str | None = None) -> pb.TopicInfo:
        """GetTopic of the channel, or of another topic (``ConfigError`` when it does not
        exist or may not be read)."""
        token = self._tokens.token()
        name = name or self.channel
        try:
            info: pb.TopicInfo = self._connect().GetTopic(
                pb.TopicRequest(topic_name=name),
                metadata=self._metadata(token),
                timeout=CALL_TIMEOUT,
            )
        except grpc.RpcError as exc:
            raise error_of(exc, f"GetTopic {name}") from exc
        return info

    def decode(self, event: pb.ConsumerEvent) -> ChangeEvent:
        """One delivered event, decoded (``BadChangeEvent`` naming what is wrong)."""
        schema_id = event.event.schema_id
        try:
            schema = self.schema(schema_id)
        except BridgeError as exc:
            status = exc.detail.get("grpc_status") if isinstance(exc.detail, dict) else None
            if status in ("NOT_FOUND", "INVALID_ARGUMENT"):  # this id, not the connection
                raise BadChangeEvent(f"unknown schema id {schema_id!r}: {exc}") from exc
            raise
        try:
            decoded = fastavro.schemaless_reader(io.BytesIO(event.event.payload), schema.parsed)
        except Exception as exc:  # any decoder failure is this event's fault
            raise BadChangeEvent(
                f"undecodable Avro for schema {schema_id}: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(decoded, dict):
            raise BadChangeEvent(f"event of schema {schema_id} is not a record")
        return change_event(decoded, schema.json, event.replay_id.hex())

    # -- the subscription ----------------------------------------------------------------
    def close(self) -> None:
        self._closing.set()
        call, requests = self._call, self._requests
        if requests is not None:
            requests.put(_CLOSE)
        if call is not None:
            call.cancel()

    def shutdown(self) -> None:
        self.close()
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = self._stub = None

    def _fetch(self, first: pb.FetchRequest | None = None) -> pb.FetchRequest:
        return first or pb.FetchRequest(topic_name=self.channel, num_requested=self._batch)

    def open(self, position: str | None) -> Iterator[Batch]:
        """Subscribe after ``position`` (CUSTOM) or from the newest (LATEST). The call is
        started before this returns (the stream base's first-start catch-up reads after
        the subscription is asked for)."""
        self._closing.clear()
        token = self._tokens.token()
        origin = self._instance_url or token.instance_url
        first = pb.FetchRequest(topic_name=self.channel, num_requested=self._batch)
        if position is None:
            first.replay_preset = pb.ReplayPreset.LATEST
        else:
            stored = StreamPosition.decode(position)
            if stored.origin and stored.origin.rstrip("/") != origin.rstrip("/"):
                raise PositionRefused(
                    position,
                    f"the org's instance changed ({stored.origin} → {origin}): its replay "
                    "ids are void",
                )
            first.replay_preset = pb.ReplayPreset.CUSTOM
            first.replay_id = bytes.fromhex(stored.replay_id)
        requests: queue.Queue[object] = queue.Queue()
        requests.put(first)

        def send() -> Iterator[pb.FetchRequest]:
            while True:
                item = requests.get()
                if item is _CLOSE:
                    return
                assert isinstance(item, pb.FetchRequest)
                yield item

        call = self._connect().Subscribe(send(), metadata=self._metadata(token))
        self._call, self._requests = call, requests
        if self._closing.is_set():  # closed while the call was being made
            call.cancel()
        return self._batches(call, requests, token, position, origin)

    def _batches(
        self,
        call: Any,
        requests: queue.Queue[object],
        token: Token,
        position: str | None,
        origin: str,
    ) -> Iterator[Batch]:
        last = StreamPosition.decode(position).replay_id if position else None
        try:
            for response in call:
                batch = self.batch_of(response, origin, last)
                if batch.position is not None:
                    last = StreamPosition.decode(batch.position).replay_id
                yield batch
                # the batch is recorded: ask for more once the server has used the credit
                if response.pending_num_requested == 0:
                    requests.put(self._fetch())
        except grpc.RpcError as exc:
            if self._closing.is_set():
                return
            error = error_of(exc, f"Subscribe {self.channel}")
            if error.code == "replay_refused":
                raise PositionRefused(position, str(error)) from exc
            if error.code == "unauthenticated":
                log.info("Pub/Sub API: session refused; a new token, then subscribe again")
                self._tokens.refresh(token)
            raise error from exc
        finally:
            requests.put(_CLOSE)
            call.cancel()
            if self._call is call:
                self._call = self._requests = None

    def batch_of(self, response: pb.FetchResponse, origin: str, last: str | None = None) -> Batch:
        """One FetchResponse as a batch: its events decoded and translated (those that
        cannot be read as errors), the position after it (None: unchanged since ``last``)."""
        changes: list[ChangeEvent] = []
        errors: list[tuple[NewEvent, str]] = []
        for event in response.events:
            try:
                changes.append(self.decode(event))
            except BadChangeEvent as exc:
                errors.append((_bad_event(self.channel, event, str(exc)), str(exc)))
        if self._translator is None:
            raise ConfigError("a Pub/Sub client made for checks cannot subscribe")
        translated = self._translator.translate(changes, datetime.now(UTC))
        newest = response.events[-1].replay_id if response.events else response.latest_replay_id
        at = max((c.commit_at for c in changes), default=None)
        position = None
        if newest and (response.events or newest.hex() != last):
            # a keepalive names the newest replay id of the channel: kept as the position
            # when it moved (events the channel's filter left out), not rewritten otherwise
            position = StreamPosition(newest.hex(), origin, at).encode()
        return Batch(translated.events, position, committed_at=at, errors=errors)


def _bad_event(channel: str, event: pb.ConsumerEvent, reason: str) -> NewEvent:
    """An event that could not be read, as a record of the refusal."""
    replay = event.replay_id.hex()
    return NewEvent(
        source=SOURCE,
        source_event_id=f"change_event:{replay}",
        kind="change_event",
        occurred_at=datetime.now(UTC),
        payload={
            "channel": channel,
            "replayId": replay,
            "schemaId": event.event.schema_id,
            "error": reason,
        },
    )


def expected_members(work_item_types: Sequence[str]) -> list[str]:
    """The change events the bridge expects on its channel."""
    return [
        "PendingServiceRoutingChangeEvent",
        "AgentWorkChangeEvent",
        *(f"{t}ChangeEvent" for t in work_item_types),
    ]


def pubsub_client(
    settings: Settings, adapter: SalesforceAdapter, translator: Translator | None = None
) -> PubSubClient:
    """The subscriber the settings describe, on the adapter's login (no translator: for
    GetTopic / GetSchema checks only)."""
    sf = settings.require_salesforce()
    return PubSubClient(
        adapter.tokens,
        translator,
        url=sf.pubsub_url,
        channel=sf.pubsub_channel,
        tenant_id=sf.org_id,
        ca_bundle=settings.ca_bundle,
        batch=sf.pubsub_batch,
        instance_url=sf.instance_url,
    )


def pubsub_runner(
    settings: Settings,
    adapter: SalesforceAdapter,
    intake: SalesforceIntake,
    ledger: Ledger,
    *,
    on_recorded: Callable[[int], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> StreamRunner:
    """The Pub/Sub API intake the settings describe: the channel's subscription on the
    stream base, the polling intake as its catch-up read."""
    sf = settings.require_salesforce()
    memory = StreamLedger(ledger)
    client = pubsub_client(settings, adapter, Translator(intake, memory.last_records))
    return StreamRunner(
        stream_name(sf.pubsub_channel),
        client,
        ledger,
        catch_up=lambda: intake.poll(now()),
        keepalive_timeout=sf.keepalive_timeout,
        on_recorded=on_recorded,
        observe=batch_observer(sf.pubsub_channel),
    )


def channel_problems(client: PubSubClient, work_item_types: Sequence[str]) -> list[str]:
    """What is wrong with the channel the bridge subscribes to, as the org answers
    GetTopic: the channel itself (exists, may be subscribed to) and each change event it
    must carry (the entity's change events are enabled: ``/data/<Entity>ChangeEvent``)."""
    try:
        info = client.topic()
    except BridgeError as exc:
        return [f"channel {client.channel}: {exc.message}"]
    problems: list[str] = []
    if not info.can_subscribe:
        problems.append(f"channel {client.channel}: the bridge's user may not subscribe to it")
    for member in expected_members(work_item_types):
        try:
            client.topic(f"/data/{member}")
        except BridgeError as exc:
            problems.append(f"channel {client.channel}: member {member}: {exc.message}")
    return problems
