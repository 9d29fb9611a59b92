"""The sandbox org's Pub/Sub API, driven by a client written from the public docs alone: the
stubs generated from the unmodified proto, grpcio over TLS with the sandbox CA, fastavro
decoding with the schema ``GetSchema`` returns. No bridge code."""

from __future__ import annotations

import io
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import grpc
import pytest
import requests

from bridge.adapters.salesforce.pubsub import pubsub_api_pb2 as pb
from bridge.adapters.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.salesforce.changelog import ChangeLog
from bridge_sandbox.serving import Clock

CUSTOM = "/data/ExternalRoutingChannel__chn"
PSR_CHANNEL = "/data/PendingServiceRoutingChangeEvent"
AGENT_WORK_CHANNEL = "/data/AgentWorkChangeEvent"
CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
EXTERNAL_QUEUE = "Support_External"
OMNI_QUEUE = "SN_Overflow"  # Omni-Channel routes it itself (MostAvailable)
RUNNER = "import typer; from bridge_sandbox.salesforce.cli import salesforce; typer.run(salesforce)"


# -- a client from the docs ------------------------------------------------------------
def _channel(sf: SalesforceSandbox) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=sf.ca_bundle.read_bytes())
    return grpc.secure_channel(sf.pubsub_url, credentials)


def _metadata(sf: SalesforceSandbox, token: str | None = None) -> tuple[tuple[str, str], ...]:
    return (
        ("accesstoken", token if token is not None else sf.issue_token()),
        ("instanceurl", sf.instance_url),
        ("tenantid", sf.org_id),
    )


class Subscription:
    """One Subscribe call: FetchRequests on a queue, FetchResponses read on a thread."""

    def __init__(
        self,
        stub: pb_grpc.PubSubStub,
        metadata: tuple[tuple[str, str], ...],
        topic: str,
        preset: int = pb.LATEST,
        replay_id: bytes = b"",
        num_requested: int = 100,
    ) -> None:
        self._requests: queue.Queue[pb.FetchRequest | None] = queue.Queue()
        self._requests.put(
            pb.FetchRequest(
                topic_name=topic,
                replay_preset=preset,
                replay_id=replay_id,
                num_requested=num_requested,
            )
        )
        self.call = stub.Subscribe(iter(self._requests.get, None), metadata=metadata)
        self.responses: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as exc:
            self.responses.put(exc)

    def fetch(self, num_requested: int) -> None:
        self._requests.put(pb.FetchRequest(num_requested=num_requested))

    def next(self, timeout: float = 5.0) -> pb.FetchResponse:
        item = self.responses.get(timeout=timeout)
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def error(self, timeout: float = 5.0) -> grpc.RpcError:
        deadline = time.monotonic() + timeout
        while True:
            item = self.responses.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(item, grpc.RpcError):
                return item

    def events(self, count: int, timeout: float = 5.0) -> list[pb.ConsumerEvent]:
        out: list[pb.ConsumerEvent] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            out += self.next(max(0.01, deadline - time.monotonic())).events
        return out

    def quiet(self, seconds: float) -> list[pb.ConsumerEvent]:
        """The events that arrive within ``seconds`` (keepalives skipped)."""
        out: list[pb.ConsumerEvent] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out += self.next(left).events
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self.call.cancel()
        self._requests.put(None)


class Decoder:
    """Avro decoding with the schemas of GetSchema, cached by schema id."""

    def __init__(self, stub: pb_grpc.PubSubStub, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub, self._metadata = stub, metadata
        self.schemas: dict[str, Any] = {}
        self.json: dict[str, dict[str, Any]] = {}

    def __call__(self, event: pb.ConsumerEvent) -> dict[str, Any]:
        schema_id = event.event.schema_id
        if schema_id not in self.schemas:
            info = self._stub.GetSchema(
                pb.SchemaRequest(schema_id=schema_id), metadata=self._metadata
            )
            self.json[schema_id] = json.loads(info.schema_json)
            self.schemas[schema_id] = fastavro.parse_schema(self.json[schema_id])
        record: dict[str, Any] = fastavro.schemaless_reader(
            io.BytesIO(event.event.payload), self.schemas[schema_id]
        )
        return record

    def fields_of(self, event: pb.ConsumerEvent, bitmaps: list[str]) -> set[str]:
        """Field names of a bitmap list, as the pub-sub-api repository's utility reads them:
        the hex text's bits reversed, bit i = field i of the schema."""
        self(event)
        names = [f["name"] for f in self.json[event.event.schema_id]["fields"]]
        out: set[str] = set()
        for bitmap in bitmaps:
            assert bitmap.startswith("0x"), bitmap  # no compound fields on these objects
            bits = bin(int(bitmap[2:], 16))[2:][::-1]
            out |= {names[i] for i, bit in enumerate(bits) if bit == "1"}
        return out


@pytest.fixture
def stub(sf_sandbox: SalesforceSandbox) -> Iterator[pb_grpc.PubSubStub]:
    channel = _channel(sf_sandbox)
    yield pb_grpc.PubSubStub(channel)
    channel.close()


@pytest.fixture
def md(sf_sandbox: SalesforceSandbox) -> tuple[tuple[str, str], ...]:
    return _metadata(sf_sandbox)


@pytest.fixture
def decode(stub: pb_grpc.PubSubStub, md: tuple[tuple[str, str], ...]) -> Decoder:
    return Decoder(stub, md)


@pytest.fixture
def subscriptions() -> Iterator[list[Subscription]]:
    opened: list[Subscription] = []
    yield opened
    for subscription in opened:
        subscription.close()


def _open(
    sf: SalesforceSandbox,
    opened: list[Subscription],
    stub: pb_grpc.PubSubStub,
    topic: str,
    **kwargs: Any,
) -> Subscription:
    """Subscribe and wait until the server holds the stream (LATEST starts there)."""

    def subscribed() -> int:
        channel = sf.pubsub.deliveries()["channels"].get(topic, {})
        return int(channel.get("subscriptions", 0))

    before = subscribed()
    subscription = Subscription(stub, _metadata(sf), topic, **kwargs)
    opened.append(subscription)
    deadline = time.monotonic() + 5
    while subscribed() <= before:
        assert time.monotonic() < deadline, "the stream did not open"
        time.sleep(0.01)
    return subscription


def _control(sf: SalesforceSandbox, method: str, path: str, body: Any = None) -> Any:
    response = requests.request(
        method,
        f"{sf.instance_url}/__sandbox/streams/pubsub/{path}",
        json=body,
        verify=str(sf.ca_bundle),
        timeout=10,
    )
    assert response.status_code in (200, 204), response.text
    return response.json() if response.content else None


def _start(sf: SalesforceSandbox, queue_name: str = EXTERNAL_QUEUE) -> dict[str, str]:
    return sf.control.start_conversation(queue_name)


def _header(record: dict[str, Any]) -> dict[str, Any]:
    header: dict[str, Any] = record["ChangeEventHeader"]
    return header


def _psr_events(
    decode: Decoder, events: list[pb.ConsumerEvent]
) -> list[tuple[pb.ConsumerEvent, dict[str, Any]]]:
    decoded = [(e, decode(e)) for e in events]
    return [(e, r) for e, r in decoded if _header(r)["entityName"] == "PendingServiceRouting"]


# -- topics and schemas --------------------------------------------------------------------
def test_get_topic_names_the_channels_and_refuses_unknown_ones(
    sf_sandbox: SalesforceSandbox, stub: pb_grpc.PubSubStub, md: tuple[tuple[str, str], ...]
) -> None:
    custom = stub.GetTopic(pb.TopicRequest(topic_name=CUSTOM), metadata=md)
    assert (custom.topic_name, custom.tenant_guid) == (CUSTOM, sf_sandbox.org_id)
    assert custom.can_subscribe
    assert not custom.can_publish
    assert custom.rpc_id
    single = stub.GetTopic(pb.TopicRequest(topic_name=AGENT_WORK_CHANNEL), metadata=md)
    info = stub.GetSchema(pb.SchemaRequest(schema_id=single.schema_id), metadata=md)
    assert json.loads(info.schema_json)["name"] == "AgentWorkChangeEvent"
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetTopic(pb.TopicRequest(topic_name="/data/NoSuchChangeEvent"), metadata=md)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_get_schema_has_the_change_event_header_then_nullable_fields(
    stub: pb_grpc.PubSubStub, md: tuple[tuple[str, str], ...]
) -> None:
    topic = stub.GetTopic(pb.TopicRequest(topic_name=PSR_CHANNEL), metadata=md)
    info = stub.GetSchema(pb.SchemaRequest(schema_id=topic.schema_id), metadata=md)
    schema = json.loads(info.schema_json)
    assert info.schema_id == topic.schema_id
    assert (schema["namespace"], schema["name"]) == (
        "com.sforce.eventbus",
        "PendingServiceRoutingChangeEvent",
    )
    header = schema["fields"][0]
    assert header["name"] == "ChangeEventHeader"
    assert [f["name"] for f in header["type"]["fields"]] == [
        "entityName",
        "recordIds",
        "changeType",
        "changeOrigin",
        "transactionKey",
        "sequenceNumber",
        "commitTimestamp",
        "commitNumber",
        "commitUser",
        "nulledFields",
        "diffFields",
        "changedFields",
    ]
    by_name = {f["name"]: f["type"] for f in schema["fields"][1:]}
    assert by_name["IsReadyForRouting"] == ["null", "boolean"]
    assert by_name["RoutingModel"] == ["null", "string"]
    assert by_name["CreatedDate"] == ["null", "long"]
    assert "Id" not in by_name
    assert "SystemModstamp" not in by_name
    fastavro.parse_schema(schema)  # a schema fastavro takes as it is
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetSchema(pb.SchemaRequest(schema_id="nope"), metadata=md)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


# -- subscribe -----------------------------------------------------------------------------
def test_latest_then_changes_arrive_decoded_with_header_and_fields(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    decode: Decoder,
    subscriptions: list[Subscription],
) -> None:
    before = _start(sf_sandbox)  # before the subscription: LATEST does not replay it
    sub = _open(sf_sandbox, subscriptions, stub, CUSTOM)
    started = _start(sf_sandbox)
    events = sub.events(2)
    decoded = {_header(r)["entityName"]: (e, r) for e, r in ((e, decode(e)) for e in events)}
    assert set(decoded) >= {"MessagingSession", "PendingServiceRouting"}
    _, psr = decoded["PendingServiceRouting"]
    header = _header(psr)
    assert header["recordIds"] == [started["psr_id"]]
    assert header["changeType"] == "CREATE"
    assert header["commitUser"] == sf_sandbox.org.api_user_id
    assert header["transactionKey"]
    assert header["sequenceNumber"] >= 1
    held = sf_sandbox.org.get("PendingServiceRouting", started["psr_id"])
    assert held is not None
    assert abs(header["commitTimestamp"] - held["CreatedDate"].timestamp() * 1000) < 1000
    assert psr["WorkItemId"] == started["work_item_id"]
    assert psr["RoutingModel"] == "ExternalRouting"
    assert psr["IsReadyForRouting"] is True
    assert psr["QueueId"] == held["QueueId"]
    seen = {_header(decode(e))["recordIds"][0] for e in events}
    assert before["psr_id"] not in seen
    # replay ids are opaque bytes in increasing order
    ids = [e.replay_id for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_update_carries_only_changed_fields_and_bitmaps_and_the_filter_fields(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    decode: Decoder,
    subscriptions: list[Subscription],
) -> None:
    started = _start(sf_sandbox)
    custom = _open(sf_sandbox, subscriptions, stub, CUSTOM)
    single = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL)
    sf_sandbox.org.update(
        "PendingServiceRouting", started["psr_id"], {"RoutingPriority": 7}, system=True
    )
    for sub, enriched in ((custom, True), (single, False)):
        [(event, update)] = _psr_events(decode, sub.events(1))
        header = _header(update)
        assert header["changeType"] == "UPDATE"
        changed = decode.fields_of(event, header["changedFields"])
        assert {"RoutingPriority", "LastModifiedDate"} <= changed
        assert "QueueId" not in changed
        assert update["RoutingPriority"] == 7
        assert update["QueueId"] is None
        assert update["WorkItemId"] is None
        if enriched:  # the channel's filter fields ride along
            assert (update["RoutingModel"], update["IsReadyForRouting"]) == (
                "ExternalRouting",
                True,
            )
        else:
            assert (update["RoutingModel"], update["IsReadyForRouting"]) == (None, None)
    sf_sandbox.org.update(
        "PendingServiceRouting", started["psr_id"], {"CustomRequestedDateTime": None}, system=True
    )
    sf_sandbox.org.update(
        "PendingServiceRouting", started["psr_id"], {"PreferredUserId": None}, system=True
    )
    # a field set to null is named in nulledFields
    sf_sandbox.org.update(
        "PendingServiceRouting", started["psr_id"], {"SecondaryRoutingPriority": 3}, system=True
    )
    sf_sandbox.org.update(
        "PendingServiceRouting", started["psr_id"], {"SecondaryRoutingPriority": None}, system=True
    )
    [_, (event, nulled)] = _psr_events(decode, single.events(2))
    assert decode.fields_of(event, _header(nulled)["nulledFields"]) == {"SecondaryRoutingPriority"}


def test_custom_channel_filters_psrs_and_delete_carries_the_filter_fields(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    decode: Decoder,
    subscriptions: list[Subscription],
) -> None:
    custom = _open(sf_sandbox, subscriptions, stub, CUSTOM)
    single = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL)
    omni = _start(sf_sandbox, OMNI_QUEUE)
    external = _start(sf_sandbox)
    sf_sandbox.org.delete("PendingServiceRouting", external["psr_id"], system=True)
    on_single = {_header(r)["recordIds"][0] for _, r in _psr_events(decode, single.quiet(1.0))}
    assert {omni["psr_id"], external["psr_id"]} <= on_single
    on_custom = _psr_events(decode, custom.quiet(0.5))
    assert {_header(r)["recordIds"][0] for _, r in on_custom} == {external["psr_id"]}
    [deleted] = [r for _, r in on_custom if _header(r)["changeType"] == "DELETE"]
    assert (deleted["RoutingModel"], deleted["IsReadyForRouting"]) == ("ExternalRouting", True)
    assert deleted["WorkItemId"] is None


def test_custom_resumes_exactly_after_the_stored_replay_id(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    subscriptions: list[Subscription],
) -> None:
    first = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL)
    for _ in range(3):
        _start(sf_sandbox)
    events = first.events(3)
    first.close()
    resumed = _open(
        sf_sandbox,
        subscriptions,
        stub,
        PSR_CHANNEL,
        preset=pb.CUSTOM,
        replay_id=events[0].replay_id,
    )
    again = resumed.events(2)
    assert [e.replay_id for e in again] == [e.replay_id for e in events[1:3]]
    assert [e.event.payload for e in again] == [e.event.payload for e in events[1:3]]
    assert resumed.quiet(0.3) == []


def test_earliest_replays_everything_retained(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    decode: Decoder,
    subscriptions: list[Subscription],
) -> None:
    psrs = [_start(sf_sandbox)["psr_id"] for _ in range(2)]
    sub = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL, preset=pb.EARLIEST)
    records = [decode(e) for e in sub.events(2)]
    assert [_header(r)["recordIds"][0] for r in records] == psrs
    assert [_header(r)["changeType"] for r in records] == ["CREATE", "CREATE"]


def test_credit_bounds_delivery_until_the_client_asks_for_more(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    subscriptions: list[Subscription],
) -> None:
    sub = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL, num_requested=2)
    for _ in range(5):
        _start(sf_sandbox)
    got: list[pb.ConsumerEvent] = []
    last = None
    while len(got) < 2:
        last = sub.next()
        got += last.events
    assert len(got) == 2
    assert last is not None
    assert last.pending_num_requested == 0
    assert sub.quiet(0.5) == []  # no credit, no events
    sub.fetch(10)
    got += sub.events(3)
    assert len(got) == 5
    assert sub.quiet(0.3) == []
    counts = sf_sandbox.pubsub.deliveries()["channels"][PSR_CHANNEL]
    assert counts["events"] == 5


def test_keepalives_carry_the_latest_replay_id_and_can_be_stopped(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    subscriptions: list[Subscription],
) -> None:
    assert _control(sf_sandbox, "POST", "keepalives", {"enabled": True, "interval": 0.2}) == {
        "enabled": True,
        "interval": 0.2,
    }
    sub = _open(sf_sandbox, subscriptions, stub, AGENT_WORK_CHANNEL)
    _start(sf_sandbox)  # no AgentWork: nothing for this channel
    keepalive = sub.next(2)
    while keepalive.latest_replay_id != sf_sandbox.org.changes.replay_bytes(
        sf_sandbox.org.changes.latest_replay_id
    ):
        keepalive = sub.next(2)
    assert list(keepalive.events) == []
    assert keepalive.pending_num_requested == 100
    # the keepalive's id is a valid position to resume from
    resumed = _open(
        sf_sandbox,
        subscriptions,
        stub,
        AGENT_WORK_CHANNEL,
        preset=pb.CUSTOM,
        replay_id=keepalive.latest_replay_id,
    )
    assert resumed.next(2).events == []
    _control(sf_sandbox, "POST", "keepalives", {"enabled": False})
    time.sleep(0.3)  # let a keepalive in flight arrive
    while not sub.responses.empty():
        sub.responses.get()
    with pytest.raises(queue.Empty):
        sub.next(0.8)
    kept = sf_sandbox.pubsub.deliveries()["channels"][AGENT_WORK_CHANNEL]["keepalives"]
    assert kept >= 2


@pytest.mark.parametrize("replay_id", [b"garbage", b"\x00" * 12, b"\x00\x00\x00\x01" + b"\xff" * 8])
def test_corrupted_replay_id_fails_with_the_documented_trailer(
    sf_sandbox: SalesforceSandbox, stub: pb_grpc.PubSubStub, replay_id: bytes
) -> None:
    sub = Subscription(stub, _metadata(sf_sandbox), PSR_CHANNEL, pb.CUSTOM, replay_id)
    error = sub.error()
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert ("error-code", CORRUPTED) in tuple(error.trailing_metadata())


@pytest.mark.parametrize("how", ["control", "clock", "void"])
def test_stored_replay_id_outside_retention_or_voided_is_refused(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    subscriptions: list[Subscription],
    how: str,
) -> None:
    sub = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL)
    _start(sf_sandbox)
    [stored] = sub.events(1)
    sub.close()
    if how == "control":
        assert _control(sf_sandbox, "POST", "retention/expire")["expired"] >= 2
    elif how == "clock":
        sf_sandbox.clock.advance(72 * 3600 + 60)
        _start(sf_sandbox)  # the log prunes as it goes
    else:
        assert _control(sf_sandbox, "POST", "replay-ids/void") is None
    retry = Subscription(stub, _metadata(sf_sandbox), PSR_CHANNEL, pb.CUSTOM, stored.replay_id)
    error = retry.error()
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert ("error-code", CORRUPTED) in tuple(error.trailing_metadata())


@pytest.mark.parametrize("wrong", ["token", "revoked", "instanceurl", "tenantid", "missing"])
def test_every_call_needs_the_orgs_token_instance_and_tenant(
    sf_sandbox: SalesforceSandbox, stub: pb_grpc.PubSubStub, wrong: str
) -> None:
    metadata = dict(_metadata(sf_sandbox))
    if wrong == "token":
        metadata["accesstoken"] = "00D000000000001!nope"
    elif wrong == "revoked":
        sf_sandbox.control.revoke_tokens()
    elif wrong == "instanceurl":
        metadata["instanceurl"] = "https://elsewhere.my.salesforce.com"
    elif wrong == "tenantid":
        metadata["tenantid"] = "00D000000000002AAA"
    else:
        del metadata["tenantid"]
    md = tuple(metadata.items())
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetTopic(pb.TopicRequest(topic_name=CUSTOM), metadata=md)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    error = Subscription(stub, md, CUSTOM).error()
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_transactions_events_share_its_key_and_show_only_when_it_commits(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    decode: Decoder,
    subscriptions: list[Subscription],
) -> None:
    started = _start(sf_sandbox)
    sub = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL)
    org = sf_sandbox.org

    def failing_call() -> None:
        with org.transaction():
            org.update(
                "PendingServiceRouting", started["psr_id"], {"RoutingPriority": 1}, system=True
            )
            raise RuntimeError("the call fails: nothing of it was committed")

    with pytest.raises(RuntimeError):
        failing_call()
    with org.transaction():
        for priority in (2, 3):
            org.update(
                "PendingServiceRouting",
                started["psr_id"],
                {"RoutingPriority": priority},
                system=True,
            )
        assert sub.quiet(0.3) == []  # not committed yet
    records = [decode(e) for e in sub.events(2)]
    assert [r["RoutingPriority"] for r in records] == [2, 3]
    headers = [_header(r) for r in records]
    assert headers[0]["transactionKey"] == headers[1]["transactionKey"]
    assert [h["sequenceNumber"] for h in headers] == [1, 2]
    assert headers[0]["commitNumber"] == headers[1]["commitNumber"]
    assert sub.quiet(0.3) == []


def test_alike_changes_of_one_transaction_are_one_event_with_several_record_ids(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    decode: Decoder,
    subscriptions: list[Subscription],
) -> None:
    psrs = [_start(sf_sandbox)["psr_id"] for _ in range(2)]
    org = sf_sandbox.org
    serials = {(org.get("PendingServiceRouting", p) or {}).get("Serial") for p in psrs}
    assert len(serials) == 1  # so that the changes are alike
    sub = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL)
    with org.transaction():
        for psr in psrs:
            org.update("PendingServiceRouting", psr, {"RoutingPriority": 9}, system=True)
    org.update("PendingServiceRouting", psrs[0], {"RoutingPriority": 8}, system=True)
    events = sub.events(2)
    merged, alone = (decode(e) for e in events)
    assert _header(merged)["recordIds"] == psrs
    assert merged["RoutingPriority"] == 9
    assert _header(alone)["recordIds"] == [psrs[0]]
    resumed = _open(
        sf_sandbox,
        subscriptions,
        stub,
        PSR_CHANNEL,
        preset=pb.CUSTOM,
        replay_id=events[0].replay_id,
    )
    assert [_header(decode(e))["recordIds"] for e in resumed.events(1)] == [[psrs[0]]]


def test_gap_event_sends_the_header_only(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    decode: Decoder,
    subscriptions: list[Subscription],
) -> None:
    assert _control(sf_sandbox, "POST", "gap-event", {"entity": "PendingServiceRouting"})
    sub = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL)
    gapped, whole = _start(sf_sandbox), _start(sf_sandbox)
    first, second = (decode(e) for e in sub.events(2))
    assert _header(first)["changeType"] == "GAP_CREATE"
    assert _header(first)["recordIds"] == [gapped["psr_id"]]
    assert first["WorkItemId"] is None
    assert _header(first)["changedFields"] == []
    assert _header(second)["changeType"] == "CREATE"
    assert second["WorkItemId"] == whole["work_item_id"]


def test_credit_is_capped_at_100_per_request_and_the_topic_cannot_change(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    subscriptions: list[Subscription],
) -> None:
    sub = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL, num_requested=1000)
    sf_sandbox.pubsub.set_keepalives(True, 0.1)
    assert sub.next(2).pending_num_requested == 100
    sub._requests.put(pb.FetchRequest(topic_name=AGENT_WORK_CHANNEL, num_requested=1))
    assert sub.error().code() is grpc.StatusCode.INVALID_ARGUMENT


# -- controls ------------------------------------------------------------------------------
def test_drop_connections_ends_every_stream(
    sf_sandbox: SalesforceSandbox, stub: pb_grpc.PubSubStub, subscriptions: list[Subscription]
) -> None:
    subs = [_open(sf_sandbox, subscriptions, stub, t) for t in (CUSTOM, PSR_CHANNEL)]
    assert _control(sf_sandbox, "POST", "drop-connections") == {"dropped": 2}
    for sub in subs:
        assert sub.error().code() is grpc.StatusCode.UNAVAILABLE


def test_drop_event_loses_one_event_for_good(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    decode: Decoder,
    subscriptions: list[Subscription],
) -> None:
    rule = _control(
        sf_sandbox,
        "POST",
        "drop-event",
        {"channel": PSR_CHANNEL, "entity": "PendingServiceRouting"},
    )
    assert rule["action"] == "drop"
    sub = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL)
    lost, kept = _start(sf_sandbox), _start(sf_sandbox)
    [event] = sub.events(1)
    assert _header(decode(event))["recordIds"] == [kept["psr_id"]]
    earliest = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL, preset=pb.EARLIEST)
    replayed = [_header(decode(e))["recordIds"][0] for e in earliest.quiet(0.5)]
    assert lost["psr_id"] not in replayed
    assert kept["psr_id"] in replayed


def test_delay_event_holds_one_event_and_those_behind_it(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    decode: Decoder,
    subscriptions: list[Subscription],
) -> None:
    _control(sf_sandbox, "POST", "delay-event", {"seconds": 0.6, "channel": PSR_CHANNEL})
    sub = _open(sf_sandbox, subscriptions, stub, PSR_CHANNEL)
    started = time.monotonic()
    first, second = _start(sf_sandbox), _start(sf_sandbox)
    events = sub.events(2, timeout=5)
    assert time.monotonic() - started >= 0.5
    assert [_header(decode(e))["recordIds"][0] for e in events] == [
        first["psr_id"],
        second["psr_id"],
    ]


def test_deliveries_count_events_per_channel_and_bad_control_input_is_refused(
    sf_sandbox: SalesforceSandbox, stub: pb_grpc.PubSubStub, subscriptions: list[Subscription]
) -> None:
    custom = _open(sf_sandbox, subscriptions, stub, CUSTOM)
    _start(sf_sandbox)
    custom.events(2)
    counts = _control(sf_sandbox, "GET", "deliveries")
    assert counts["channels"][CUSTOM]["events"] >= 2
    assert counts["channels"][CUSTOM]["subscriptions"] == 1
    assert counts["open_streams"] == 1
    for path, body in (
        ("drop-event", {"channel": "/data/Nope"}),
        ("delay-event", {"seconds": "soon"}),
        ("keepalives", {"enabled": "yes"}),
        ("keepalives", {"enabled": True, "interval": 0}),
    ):
        response = requests.post(
            f"{sf_sandbox.instance_url}/__sandbox/streams/pubsub/{path}",
            json=body,
            verify=str(sf_sandbox.ca_bundle),
            timeout=10,
        )
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]


def test_agent_work_and_presence_changes_reach_their_channels(
    sf_sandbox: SalesforceSandbox,
    stub: pb_grpc.PubSubStub,
    decode: Decoder,
    subscriptions: list[Subscription],
) -> None:
    agent_work = _open(sf_sandbox, subscriptions, stub, AGENT_WORK_CHANNEL)
    custom = _open(sf_sandbox, subscriptions, stub, CUSTOM)
    omni = _start(sf_sandbox, OMNI_QUEUE)  # Omni-Channel pushes it to an agent
    [work] = [w for w in sf_sandbox.org.all("AgentWork") if w["WorkItemId"] == omni["work_item_id"]]
    sf_sandbox.control.accept(work["Id"])
    records = [decode(e) for e in agent_work.quiet(1.0)]
    kinds = [(_header(r)["changeType"], r["Status"]) for r in records]
    assert kinds[0] == ("CREATE", "Assigned")
    assert ("UPDATE", "Opened") in kinds
    assert {_header(r)["recordIds"][0] for r in records} == {work["Id"]}
    sf_sandbox.control.set_presence(work["UserId"], online=False)
    on_custom = [decode(e) for e in custom.quiet(1.0)]
    entities = {_header(r)["entityName"] for r in on_custom}
    assert {"AgentWork", "MessagingSession", "UserServicePresence"} <= entities
    assert "PendingServiceRouting" not in entities  # an Omni-routed queue's PSRs: filtered


def test_standalone_sandbox_serves_pubsub_and_names_it_in_its_state(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "--state-dir", str(tmp_path), "--keepalive", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state_file = tmp_path / "salesforce.json"
        deadline = time.monotonic() + 30
        while not state_file.exists():
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.1)
        facts = json.loads(state_file.read_text())
        env = (tmp_path / "salesforce.env").read_text()
        assert f"BRIDGE_SALESFORCE__PUBSUB_URL={facts['pubsub_url']}" in env
        token = requests.post(
            facts["token_url"],
            data={
                "grant_type": "client_credentials",
                "client_id": facts["client_id"],
                "client_secret": facts["client_secret"],
            },
            verify=facts["ca_bundle"],
            timeout=10,
        ).json()["access_token"]
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(facts["ca_bundle"]).read_bytes()
        )
        with grpc.secure_channel(facts["pubsub_url"], credentials) as channel:
            stub = pb_grpc.PubSubStub(channel)
            md = (
                ("accesstoken", token),
                ("instanceurl", facts["instance_url"]),
                ("tenantid", facts["org_id"]),
            )
            topic = stub.GetTopic(pb.TopicRequest(topic_name=CUSTOM), metadata=md)
            assert topic.topic_name == CUSTOM
            sub = Subscription(stub, md, CUSTOM)
            keepalive = sub.next(5)  # the interval the command line set
            assert list(keepalive.events) == []
            assert keepalive.latest_replay_id
            sub.close()
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert facts["pubsub_url"] in stdout


# -- the change log's replay positions (no server) ---------------------------------------------
def _log_after(action: str) -> tuple[ChangeLog, dict[str, tuple[int, bytes]]]:
    """A log with events a (then b): a client stored a's replay id, then ``action``."""
    clock = Clock()
    log = ChangeLog(clock)
    a = log.append("X", "CREATE", "a", [])
    marks = {"a": (a, log.replay_bytes(a))}
    if action == "reset":
        log.clear()
    elif action == "expire":
        log.expire()
    elif action == "void":
        log.void()
    elif action == "age":
        clock.advance(72 * 3600 + 1)
    b = log.append("X", "CREATE", "b", [])
    marks["b"] = (b, log.replay_bytes(b))
    return log, marks


@pytest.mark.parametrize(
    ("action", "stored", "valid"),
    [
        ("none", "a", True),
        ("none", "b", True),
        ("reset", "a", True),  # the mark where the log restarted: nothing after it is lost
        ("expire", "a", False),
        ("void", "a", False),
        ("void", "b", True),
        ("age", "a", False),
        ("age", "b", True),
    ],
)
def test_which_stored_replay_ids_a_subscriber_may_resume_from(
    action: str, stored: str, valid: bool
) -> None:
    log, marks = _log_after(action)
    replay_id, wire = marks[stored]
    assert (log.position(wire) == replay_id) is valid
    assert log.position(log.replay_bytes(marks["b"][0] + 1)) is None  # never handed out
