"""The Pub/Sub API intake against the sandbox org's gRPC server over TLS (issue 10): the
bridge's subscriber on the stream base, the polls as its catch-up read.

First start subscribes from LATEST and catches up once; the cursor is the replay id of the
last recorded event, written with the inbox rows (a failure after the events are read
records neither, and the redelivery records them once); a restart resumes after the
stored id; a refused replay id is a catch-up read and a finding, then LATEST; a silent
stream is resubscribed by the watchdog; a revoked session takes a new token; credit is
asked for again as each batch is recorded."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import fastavro
import pytest
from sqlmodel import select

from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.salesforce.polling import SalesforceIntake
from bridge.adapters.salesforce.pubsub import pubsub_api_pb2 as pb
from bridge.adapters.salesforce.pubsub.client import PubSubClient, stream_name
from bridge.adapters.salesforce.pubsub.translate import Translator
from bridge.app.daemon import Daemon
from bridge.app.runtime import Runtime
from bridge.flow.streams import POSITION_REFUSED, StreamLedger, StreamPosition, StreamRunner
from bridge.ledger import Finding, InboxEvent, SqlLedger
from bridge_sandbox import seed
from bridge_sandbox.connect import sandbox_settings
from bridge_sandbox.demo import wait_quiet
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.traffic import SCENARIOS_BY_NAME, ContactCentre
from tests.fixtures.ledger import db_session, get_cursor, pending_events

CHANNEL = "/data/ExternalRoutingChannel__chn"
STREAM = stream_name(CHANNEL)
SUPPORT, BILLING, _ = (q.sf_queue_id for q in seed.QUEUES)


def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


class Rig:
    """The subscriber as the daemon builds it, on the sandbox org, plus what it did."""

    def __init__(
        self,
        sandbox: SalesforceSandbox,
        adapter: SalesforceAdapter,
        ledger: Any,
        *,
        batch: int = 100,
        keepalive_timeout: float = 30.0,
    ) -> None:
        self.sandbox = sandbox
        self.intake = SalesforceIntake(
            adapter, ledger, queue_ids=[SUPPORT, BILLING], work_item_types=["MessagingSession"]
        )
        self.client = PubSubClient(
            adapter.tokens,
            Translator(self.intake, StreamLedger(ledger).last_records),
            url=sandbox.pubsub_url,
            channel=CHANNEL,
            tenant_id=sandbox.org_id,
            ca_bundle=sandbox.ca_bundle,
            batch=batch,
        )
        self.catch_ups = 0
        self.runner = StreamRunner(
            STREAM,
            self.client,
            ledger,
            catch_up=self._catch_up,
            keepalive_timeout=keepalive_timeout,
            backoff_initial=0.05,
            backoff_max=0.3,
        )

    def _catch_up(self) -> None:
        self.intake.poll(self.sandbox.clock.now())
        self.catch_ups += 1

    @contextmanager
    def running(self) -> Iterator[StreamRunner]:
        subscribed = self.subscriptions()
        stop = threading.Event()
        thread = threading.Thread(target=self.runner.run, args=(stop,), daemon=True)
        thread.start()
        try:
            eventually(lambda: self.subscriptions() > subscribed, "subscribed")
            eventually(lambda: self.runner.status.connected, "connected")
            # a first start's catch-up read is over: what follows comes by the stream
            eventually(lambda: self.runner.status.catch_ups == self.catch_ups, "caught up")
            yield self.runner
        finally:
            stop.set()
            self.runner.stop()
            thread.join(timeout=10)
            self.client.shutdown()
            assert not thread.is_alive()

    def subscriptions(self) -> int:
        counts = self.sandbox.control.pubsub_deliveries()
        return int(_per_channel(counts, "subscriptions"))


def _per_channel(counts: dict[str, Any], what: str) -> int:
    channels = counts.get("channels", counts)
    entry = channels.get(CHANNEL, {}) if isinstance(channels, dict) else {}
    return int(entry.get(what, 0)) if isinstance(entry, dict) else 0


def events(ledger: SqlLedger, kind: str | None = None) -> list[InboxEvent]:
    found = pending_events(ledger, 10_000)
    return [e for e in found if kind is None or e.kind == kind]


def psr_ids(ledger: SqlLedger) -> list[str]:
    return [str(e.payload["Id"]) for e in events(ledger, "psr")]


def streamed(ledger: SqlLedger) -> list[str]:
    """The PSRs that came by the stream (not by a catch-up read)."""
    return [str(e.payload["Id"]) for e in events(ledger, "psr") if e.stream == STREAM]


def replay_of(ledger: SqlLedger) -> str | None:
    stored = get_cursor(ledger, STREAM)
    return None if stored is None else StreamPosition.decode(stored).replay_id


@pytest.fixture
def fast_keepalives(sf_sandbox: SalesforceSandbox) -> Iterator[None]:
    sf_sandbox.control.pubsub_keepalives(True, 0.2)
    yield
    sf_sandbox.control.pubsub_keepalives(True, 60.0)


pytestmark = pytest.mark.usefixtures("fast_keepalives")


def test_first_start_subscribes_from_latest_and_catches_up_once(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    before = sf_sandbox.control.start_conversation("Support_External")
    rig = Rig(sf_sandbox, sf_adapter, sqlite_ledger)
    with rig.running():
        # what was live before the subscription came from the catch-up read (a poll)
        eventually(lambda: rig.catch_ups == 1, "the catch-up read")
        (caught,) = events(sqlite_ledger, "psr")
        assert caught.payload["Id"] == before["psr_id"]
        assert get_cursor(sqlite_ledger, STREAM) is None  # nothing streamed yet
        after = sf_sandbox.control.start_conversation("Support_External")
        eventually(lambda: after["psr_id"] in psr_ids(sqlite_ledger), "the new PSR streamed")
        eventually(lambda: replay_of(sqlite_ledger), "the cursor")
    streamed = next(e for e in events(sqlite_ledger, "psr") if e.payload["Id"] == after["psr_id"])
    assert streamed.stream == STREAM
    assert streamed.payload["changeType"] == "CREATE"
    assert streamed.payload["QueueId"][:15] == SUPPORT[:15]
    # the org holds both PSRs; the ledger each once, and one catch-up only
    org_psrs = {p["Id"] for p in sf_sandbox.control.psrs()}
    assert {before["psr_id"], after["psr_id"]} <= org_psrs
    assert sorted(psr_ids(sqlite_ledger)) == sorted([before["psr_id"], after["psr_id"]])
    assert rig.catch_ups == 1


def test_restart_resumes_after_the_stored_replay_id(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    rig = Rig(sf_sandbox, sf_adapter, sqlite_ledger)
    with rig.running():
        first = sf_sandbox.control.start_conversation("Support_External")
        eventually(lambda: first["psr_id"] in psr_ids(sqlite_ledger), "first PSR")
        eventually(lambda: replay_of(sqlite_ledger), "the cursor")
    stored = replay_of(sqlite_ledger)
    # while the bridge is down
    second = sf_sandbox.control.start_conversation("Billing_External")
    again = Rig(sf_sandbox, sf_adapter, sqlite_ledger)
    with again.running():
        eventually(lambda: second["psr_id"] in streamed(sqlite_ledger), "the PSR made meanwhile")
    assert again.catch_ups == 0  # resumed from the stored id: no catch-up read
    assert psr_ids(sqlite_ledger).count(first["psr_id"]) == 1
    assert psr_ids(sqlite_ledger).count(second["psr_id"]) == 1
    assert replay_of(sqlite_ledger) != stored
    assert second["psr_id"] in {p["Id"] for p in sf_sandbox.control.psrs()}


def test_a_refused_replay_id_catches_up_and_records_a_finding_then_latest(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    rig = Rig(sf_sandbox, sf_adapter, sqlite_ledger)
    with rig.running():
        first = sf_sandbox.control.start_conversation("Support_External")
        eventually(lambda: replay_of(sqlite_ledger), "the cursor")
    refused = get_cursor(sqlite_ledger, STREAM)
    meanwhile = sf_sandbox.control.start_conversation("Billing_External")
    assert sf_sandbox.control.pubsub_expire_retention() > 0
    again = Rig(sf_sandbox, sf_adapter, sqlite_ledger)
    with again.running():
        assert again.runner.status.refused == 1
        eventually(lambda: again.catch_ups == 1, "the catch-up read")
        assert meanwhile["psr_id"] in psr_ids(sqlite_ledger)
        later = sf_sandbox.control.start_conversation("Support_External")
        eventually(lambda: later["psr_id"] in streamed(sqlite_ledger), "streamed from LATEST")
    with db_session(sqlite_ledger) as session:
        findings = list(session.scalars(select(Finding)))
    (finding,) = [f for f in findings if f.kind == POSITION_REFUSED]
    assert finding.subject == STREAM
    assert finding.detail == {"position": refused}
    assert "replayid.corrupted" in (finding.reason or "") or "Replay ID" in (finding.reason or "")
    assert first["psr_id"] in psr_ids(sqlite_ledger)
    assert psr_ids(sqlite_ledger).count(meanwhile["psr_id"]) == 1


class FailingWrites:
    """The ledger, with the next write that records events failing after the rows were
    written (a disk full, a lost connection at commit): the transaction rolls back."""

    def __init__(self, ledger: SqlLedger) -> None:
        self.ledger = ledger
        self.armed = False
        self.failed: list[tuple[int, str | None]] = []  # (inbox size, cursor) after each

    def transaction(self) -> AbstractContextManager[Any]:
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        try:
            with self.ledger.transaction() as tx:
                yield tx
                if self.armed:
                    self.armed = False
                    raise OSError("the ledger's disk is full")
        except OSError:
            self.failed.append((len(events(self.ledger)), get_cursor(self.ledger, STREAM)))
            raise

    def reading(self) -> AbstractContextManager[Any]:
        return self.ledger.reading()

    def close(self) -> None:
        self.ledger.close()


def test_a_failure_after_the_events_are_read_records_neither_events_nor_cursor(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    failing = FailingWrites(sqlite_ledger)
    rig = Rig(sf_sandbox, sf_adapter, failing)
    with rig.running():
        first = sf_sandbox.control.start_conversation("Support_External")
        eventually(lambda: first["psr_id"] in psr_ids(sqlite_ledger), "first PSR")
        eventually(lambda: replay_of(sqlite_ledger), "the cursor")
        time.sleep(0.5)  # the keepalives after it change nothing
        at_first = get_cursor(sqlite_ledger, STREAM)
        size = len(events(sqlite_ledger))
        failing.armed = True
        second = sf_sandbox.control.start_conversation("Billing_External")
        eventually(lambda: failing.failed, "the failed write")
        eventually(lambda: second["psr_id"] in streamed(sqlite_ledger), "redelivered")
    # at the failure: no event of the batch and the cursor where it was
    assert failing.failed == [(size, at_first)]
    assert rig.runner.status.reconnects >= 1
    assert rig.catch_ups == 1  # resubscribed after the stored id, not from LATEST
    assert psr_ids(sqlite_ledger).count(second["psr_id"]) == 1
    assert get_cursor(sqlite_ledger, STREAM) != at_first


def test_a_silent_stream_is_resubscribed_by_the_watchdog(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    rig = Rig(sf_sandbox, sf_adapter, sqlite_ledger, keepalive_timeout=0.6)
    with rig.running():
        sf_sandbox.control.pubsub_keepalives(False)
        subscribed = rig.subscriptions()
        eventually(lambda: rig.runner.status.watchdog_resubscribes >= 1, "watchdog")
        eventually(lambda: rig.subscriptions() > subscribed, "subscribed again")
        sf_sandbox.control.pubsub_keepalives(True, 0.2)
        later = sf_sandbox.control.start_conversation("Support_External")
        eventually(lambda: later["psr_id"] in streamed(sqlite_ledger), "streamed after it")
    assert psr_ids(sqlite_ledger).count(later["psr_id"]) == 1


def test_a_revoked_session_takes_a_new_token_and_subscribes_again(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    rig = Rig(sf_sandbox, sf_adapter, sqlite_ledger)
    with rig.running():
        # a stored replay id: the resubscription reads nothing over REST (which would
        # take a new token by itself)
        first = sf_sandbox.control.start_conversation("Support_External")
        eventually(lambda: first["psr_id"] in streamed(sqlite_ledger), "first PSR")
        old = sf_adapter.tokens.token()
        assert sf_sandbox.control.revoke_tokens() >= 1
        subscribed = rig.subscriptions()
        assert sf_sandbox.control.pubsub_drop_connections() == 1
        eventually(lambda: sf_adapter.tokens.token() is not old, "a new token")
        eventually(lambda: rig.subscriptions() > subscribed, "subscribed again")
        later = sf_sandbox.control.start_conversation("Support_External")
        eventually(lambda: later["psr_id"] in streamed(sqlite_ledger), "streamed after it")
    assert rig.catch_ups == 1  # the first start's only
    new = sf_adapter.tokens.token()
    assert new.access_token.get_secret_value() != old.access_token.get_secret_value()
    assert rig.runner.status.reconnects >= 1


def test_credit_is_asked_for_again_as_each_batch_is_recorded(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    rig = Rig(sf_sandbox, sf_adapter, sqlite_ledger, batch=1)
    with rig.running():
        started = [sf_sandbox.control.start_conversation("Support_External") for _ in range(3)]
        wanted = {s["psr_id"] for s in started}
        eventually(lambda: wanted <= set(streamed(sqlite_ledger)), "every PSR, one at a time")
    assert sorted(psr_ids(sqlite_ledger)) == sorted(wanted)
    assert rig.runner.status.reconnects == 0  # credit, not reconnections, brought them


def test_the_daemon_in_pubsub_mode_takes_salesforce_changes_from_the_stream(
    sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox, tmp_path: Path
) -> None:
    settings = sandbox_settings(
        sf_sandbox,
        sn_sandbox,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        salesforce={"intake": "pubsub", "poll_interval": 0.2},
        servicenow={"poll_interval": 0.2},
    )
    ledger = SqlLedger(settings.effective_ledger_url)
    ledger.upgrade()
    runtime = Runtime.build(settings, ledger=ledger)
    daemon = Daemon(runtime, host="127.0.0.1", port=0)
    assert daemon.sf_stream is not None
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        eventually(lambda: daemon.sf_stream is not None and daemon.sf_stream.status.connected, "up")
        assert daemon.readiness()["salesforce stream"].ok
        centre = ContactCentre(
            sf_sandbox, sn_sandbox, ledger, lambda: time.sleep(0.05), max_pumps=400
        )
        (conv,) = centre.run_many([SCENARIOS_BY_NAME["accept"]])
        assert wait_quiet(ledger)
        observed = centre.observe(conv)
        assert observed.correlation_state == "active", observed
        assert observed.problems == ()
        # the PSR came by the stream; the polls only sweep (every 10 minutes by default)
        assert any(e.stream == STREAM for e in _all_events(ledger, "psr"))
    finally:
        daemon.stop()
        thread.join(timeout=30)
        ledger.close()
    assert not thread.is_alive()


def _all_events(ledger: SqlLedger, kind: str) -> list[InboxEvent]:
    with db_session(ledger) as session:
        return list(session.scalars(select(InboxEvent).where(InboxEvent.kind == kind)))


def _encoded(schema_json: dict[str, Any], header: dict[str, Any], **fields: Any) -> bytes:
    record: dict[str, Any] = {f["name"]: None for f in schema_json["fields"]}
    record["ChangeEventHeader"] = header
    record.update(fields)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema_json), record)
    return out.getvalue()


def test_undecodable_avro_and_an_unknown_schema_id_are_recorded_as_errors_and_the_rest_goes_on(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    rig = Rig(sf_sandbox, sf_adapter, sqlite_ledger)
    client = rig.client
    schema_id = client.topic("/data/PendingServiceRoutingChangeEvent").schema_id
    schema = client.schema(schema_id).json  # GetSchema, as the org gives it
    header = {
        "entityName": "PendingServiceRouting",
        "recordIds": ["0JR5g00000000ZZGAI"],
        "changeType": "CREATE",
        "changeOrigin": "",
        "transactionKey": "tk-bad-input",
        "sequenceNumber": 1,
        "commitTimestamp": int(time.time() * 1000),
        "commitNumber": 1,
        "commitUser": "0055g000000001bAAA",
        "nulledFields": [],
        "diffFields": [],
        "changedFields": [],
    }
    good = _encoded(
        schema, header, QueueId=SUPPORT, IsPushed=False, IsReadyForRouting=True, Serial=0
    )

    def event(replay: int, payload: bytes, schema: str = schema_id) -> pb.ConsumerEvent:
        return pb.ConsumerEvent(
            event=pb.ProducerEvent(id=str(replay), schema_id=schema, payload=payload),
            replay_id=replay.to_bytes(8, "big"),
        )

    response = pb.FetchResponse(
        events=[event(1, b"\x02\xff not avro"), event(2, good), event(3, good, "no-such-id")],
        pending_num_requested=97,
    )
    batch = client.batch_of(response, sf_sandbox.instance_url)
    result = StreamLedger(sqlite_ledger).record(STREAM, batch.events, batch.position, batch.errors)
    client.shutdown()
    assert len(result.inserted) == 3  # the event and the record of each refusal
    # the readable event is recorded, the position is past all three
    (psr,) = events(sqlite_ledger, "psr")
    assert psr.payload["Id"] == "0JR5g00000000ZZGAI"
    assert replay_of(sqlite_ledger) == (3).to_bytes(8, "big").hex()
    errors = {e.source_event_id: e.error or "" for e in _all_events(sqlite_ledger, "change_event")}
    assert {e.status for e in _all_events(sqlite_ledger, "change_event")} == {"error"}
    assert "undecodable Avro" in errors[f"change_event:{(1).to_bytes(8, 'big').hex()}"]
    assert (
        "unknown schema id 'no-such-id'" in errors[f"change_event:{(3).to_bytes(8, 'big').hex()}"]
    )


def test_a_gap_event_reads_those_records_by_id(
    sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    rig = Rig(sf_sandbox, sf_adapter, sqlite_ledger)
    with rig.running():
        sf_sandbox.control.pubsub_gap_event(entity="PendingServiceRouting")
        started = sf_sandbox.control.start_conversation("Support_External")
        eventually(lambda: started["psr_id"] in streamed(sqlite_ledger), "the PSR, read by id")
    (psr,) = [e for e in events(sqlite_ledger, "psr") if e.payload["Id"] == started["psr_id"]]
    # the record as the org holds it (a GAP event carries no fields), under the polls' id
    (held,) = [p for p in sf_sandbox.control.psrs() if p["Id"] == started["psr_id"]]
    assert psr.source_event_id == f"psr:{held['Id']}:{psr.payload['SystemModstamp']}"
    assert psr.payload["QueueId"] == held["QueueId"]
    assert psr.payload["WorkItemId"] == started["work_item_id"]
    assert "changeType" not in psr.payload
