"""The PushTopic intake against the sandbox org over HTTPS: the bridge's Bayeux client on
the stream base records PushTopic events with their replay ids as the stream's position;
a restart resumes from it; an unknown client handshakes again; an invalid session gets a
new token; a replay id outside retention is a catch-up read and a finding."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.http import make_session
from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.salesforce.cometd import BayeuxClient, PushTopicSubscription, decode_position
from bridge.adapters.salesforce.polling import SalesforceIntake
from bridge.adapters.salesforce.pushtopics import (
    AGENT_WORK_TOPIC,
    PSR_TOPIC,
    STREAM,
    PushTopicDefinition,
    PushTopicRest,
    TopicEvents,
    check,
    definitions,
    ensure,
)
from bridge.app.cli import main
from bridge.app.runtime import Runtime
from bridge.app.settings import load_settings
from bridge.errors import ConfigError
from bridge.flow.streams import POSITION_REFUSED, StreamRunner
from bridge.ledger import SqlLedger
from bridge_sandbox import seed
from bridge_sandbox.connect import sandbox_values
from bridge_sandbox.salesforce.app import SalesforceSandbox
from tests.fixtures.adapters import API_VERSION, sf_tokens
from tests.fixtures.ledger import get_cursor, pending_events

ALICE = seed.AGENTS[0].sf_user_id
SUPPORT, BILLING, _ = (q.sf_queue_id for q in seed.QUEUES)
MESSAGING = seed.CHANNELS[0].sf_service_channel_id
PSR_CHANNEL = f"/topic/{PSR_TOPIC}"
AW_CHANNEL = f"/topic/{AGENT_WORK_TOPIC}"
TOPICS = definitions(
    queue_ids=[SUPPORT, BILLING], work_item_types=["MessagingSession"], api_version=API_VERSION
)


def _wait(what: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


class Running:
    """A PushTopic stream runner on a thread, as the daemon runs it."""

    def __init__(
        self,
        sandbox: SalesforceSandbox,
        adapter: SalesforceAdapter,
        ledger: SqlLedger,
        topics: list[PushTopicDefinition] = TOPICS,
    ) -> None:
        self.intake = SalesforceIntake(adapter, ledger, queue_ids=[SUPPORT, BILLING])
        self.client = BayeuxClient(
            make_session(sandbox.ca_bundle, system="salesforce"),
            sf_tokens(sandbox),
            api_version=API_VERSION,
        )
        self.catch_ups = 0

        def catch_up() -> None:
            self.catch_ups += 1
            self.intake.poll(datetime.now(UTC))

        self.runner = StreamRunner(
            STREAM,
            PushTopicSubscription(
                self.client,
                [t.channel for t in topics],
                TopicEvents(topics, self.intake),
                catch_up=catch_up,
            ),
            ledger,
            catch_up=catch_up,
            keepalive_timeout=10,
            backoff_initial=0.05,
            backoff_max=0.2,
        )
        self._thread = threading.Thread(target=self.runner.run, daemon=True)

    def __enter__(self) -> Running:
        self._thread.start()
        _wait(lambda: self.runner.status.connected)
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


@pytest.fixture
def org(sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter) -> SalesforceSandbox:
    """The sandbox with the bridge's PushTopics (made by ``ensure``), connects held 0.3 s."""
    rest = PushTopicRest(
        make_session(sf_sandbox.ca_bundle), sf_adapter.tokens, api_version=API_VERSION
    )
    lines = ensure(rest, TOPICS)
    assert [line.split()[0] for line in lines] == ["created"] * len(TOPICS)
    sf_sandbox.streaming.connect_timeout_ms = 300
    return sf_sandbox


def _events(ledger: SqlLedger, kind: str | None = None) -> list[Any]:
    return [e for e in pending_events(ledger, 10_000) if kind is None or e.kind == kind]


def _replays(ledger: SqlLedger) -> dict[str, int]:
    cursor = get_cursor(ledger, STREAM)
    assert cursor is not None
    return decode_position(cursor)[0]


def _positioned(ledger: SqlLedger, *channels: str) -> None:
    """Wait until the stream itself (not the catch-up read) has recorded those channels."""

    def done() -> bool:
        cursor = get_cursor(ledger, STREAM)
        return cursor is not None and all(
            decode_position(cursor)[0].get(c, -1) >= 0 for c in channels
        )

    _wait(done)


def _assign(adapter: SalesforceAdapter, started: dict[str, str]) -> str:
    return adapter.create(
        "AgentWork",
        {
            "UserId": ALICE,
            "WorkItemId": started["work_item_id"],
            "PendingServiceRoutingId": started["psr_id"],
            "ServiceChannelId": MESSAGING,
        },
    )


def test_setup_is_idempotent_and_check_finds_drift(
    org: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    rest = PushTopicRest(make_session(org.ca_bundle), sf_adapter.tokens, api_version=API_VERSION)
    assert check(rest, TOPICS) == []
    assert all(line.startswith("unchanged") for line in ensure(rest, TOPICS))
    (psr,) = org.org.where("PushTopic", Name=PSR_TOPIC)
    org.org.update("PushTopic", psr["Id"], {"NotifyForOperationDelete": False})
    assert check(rest, TOPICS) == [f"PushTopic {PSR_TOPIC} differs in NotifyForOperationDelete"]
    assert f"updated {PSR_TOPIC} (NotifyForOperationDelete)" in ensure(rest, TOPICS)
    assert check(rest, TOPICS) == []


def test_events_are_recorded_with_their_replay_ids_as_the_position(
    org: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    with Running(org, sf_adapter, sqlite_ledger) as running:
        assert running.catch_ups == 1  # first start: subscribed from the newest, then read
        started = org.control.start_conversation("Support_External")
        (psr,) = _wait(lambda: _events(sqlite_ledger, "psr"))
        assert psr.payload["Id"] == started["psr_id"]
        assert psr.payload["WorkItemId"] == started["work_item_id"]
        assert psr.source_event_id == f"psr:{psr.payload['Id']}:{psr.payload['SystemModstamp']}"
        work = _assign(sf_adapter, started)
        org.control.accept(work)
        _wait(lambda: _events(sqlite_ledger, "psr_deleted"))
        statuses = _wait(
            lambda: (
                [e.payload["Status"] for e in _events(sqlite_ledger, "agent_work")]
                if len(_events(sqlite_ledger, "agent_work")) >= 2
                else None
            )
        )
        assert statuses == ["Assigned", "Opened"]
    # both systems: what the org sent is what the ledger holds, position = newest replay ids
    sent = {c: [e.replay_id for e in org.streaming.events(c)] for c in (PSR_CHANNEL, AW_CHANNEL)}
    replays = _replays(sqlite_ledger)
    assert replays[PSR_CHANNEL] == max(sent[PSR_CHANNEL])
    assert replays[AW_CHANNEL] == max(sent[AW_CHANNEL])
    assert org.streaming.deliveries()[PSR_CHANNEL] == len(sent[PSR_CHANNEL])


def test_a_restart_resumes_after_the_stored_replay_ids(
    org: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    with Running(org, sf_adapter, sqlite_ledger):
        first = org.control.start_conversation("Support_External")
        _positioned(sqlite_ledger, PSR_CHANNEL)
    stored = _replays(sqlite_ledger)
    # while the bridge is down: a conversation starts and the first one is assigned
    second = org.control.start_conversation("Billing_External")
    _assign(sf_adapter, first)
    with Running(org, sf_adapter, sqlite_ledger) as running:
        psrs = _wait(lambda: e if len(e := _events(sqlite_ledger, "psr")) >= 2 else None)
        assert {p.payload["Id"] for p in psrs} == {first["psr_id"], second["psr_id"]}
        (work,) = _wait(lambda: _events(sqlite_ledger, "agent_work"))
        assert work.payload["Status"] == "Assigned"
        # the PSR channel resumed after its stored id: the org delivered what was missed
        resumed = [e.data["sobject"]["Id"] for e in org.streaming.events(PSR_CHANNEL)]
        _wait(lambda: org.streaming.deliveries()[PSR_CHANNEL] == len(resumed), 3)
        # the AgentWork channel had delivered nothing (no id to resume after): one read
        assert running.catch_ups == 1
    assert stored[AW_CHANNEL] == -1
    assert _replays(sqlite_ledger)[PSR_CHANNEL] > stored[PSR_CHANNEL]
    # every PSR state the org sent is one event (the catch-up read met them in the inbox)
    assert len(_events(sqlite_ledger, "psr")) == len(org.streaming.events(PSR_CHANNEL)) == 3


def test_a_restart_with_every_channel_positioned_reads_nothing_by_query(
    org: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    topics = [t for t in TOPICS if t.channel in (PSR_CHANNEL, AW_CHANNEL)]
    with Running(org, sf_adapter, sqlite_ledger, topics) as running:
        started = org.control.start_conversation("Support_External")
        work = _assign(sf_adapter, started)
        _positioned(sqlite_ledger, PSR_CHANNEL, AW_CHANNEL)
    org.control.accept(work)  # while down
    with Running(org, sf_adapter, sqlite_ledger, topics) as running:
        _wait(lambda: _events(sqlite_ledger, "psr_deleted"))
        opened = _wait(
            lambda: [
                e for e in _events(sqlite_ledger, "agent_work") if e.payload["Status"] == "Opened"
            ]
        )
        assert len(opened) == 1
        assert running.catch_ups == 0  # resumed from the stored ids alone


def test_an_unknown_client_handshakes_again_and_loses_nothing(
    org: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    psr_only = [t for t in TOPICS if t.channel == PSR_CHANNEL]
    with Running(org, sf_adapter, sqlite_ledger, psr_only) as running:
        org.control.start_conversation("Support_External")
        _positioned(sqlite_ledger, PSR_CHANNEL)
        assert org.streaming.drop_clients() == 1
        org.control.start_conversation("Billing_External")  # while no client is known
        _wait(lambda: len(_events(sqlite_ledger, "psr")) == 2)
        assert running.client.handshakes == 2
        # resubscribed after the newest delivered id: the stream brought it, no read
        assert running.catch_ups == 1  # the first start's only (no channel unpositioned)
        assert org.streaming.deliveries()[PSR_CHANNEL] == 2


def test_an_invalid_session_gets_a_new_token(
    org: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    with Running(org, sf_adapter, sqlite_ledger) as running:
        org.control.revoke_tokens()
        # the connect held then ends; the next one is 401::Authentication invalid
        _wait(lambda: running.client.reauthentications >= 1 and running.client.handshakes >= 2)
        _wait(lambda: running.catch_ups == 2)  # PSR had no id yet: read once after it
        started = org.control.start_conversation("Support_External")
        (psr,) = _wait(lambda: _events(sqlite_ledger, "psr"))
        assert psr.payload["Id"] == started["psr_id"]
        _positioned(sqlite_ledger, PSR_CHANNEL)  # delivered on the new session's client


def test_a_replay_id_outside_retention_is_a_catch_up_and_a_finding(
    org: SalesforceSandbox, sf_adapter: SalesforceAdapter, sqlite_ledger: SqlLedger
) -> None:
    with Running(org, sf_adapter, sqlite_ledger):
        org.control.start_conversation("Support_External")
        _positioned(sqlite_ledger, PSR_CHANNEL)
    stale = get_cursor(sqlite_ledger, STREAM)
    missed = org.control.start_conversation("Billing_External")  # while down...
    assert org.streaming.expire() >= 1  # ...and its event falls out of retention
    with Running(org, sf_adapter, sqlite_ledger) as running:
        _wait(lambda: running.catch_ups == 1)
        psrs = _wait(lambda: e if len(e := _events(sqlite_ledger, "psr")) >= 2 else None)
        assert missed["psr_id"] in {p.payload["Id"] for p in psrs}  # found by the read
        assert running.runner.status.refused == 1
        _wait(lambda: get_cursor(sqlite_ledger, STREAM) not in (None, stale))
    with sqlite_ledger.reading() as tx:
        runs = tx.audit.reconcile_runs(10)
        findings = [f for run, _ in runs for f in tx.audit.run_findings(run.id)[1]]
    (finding,) = [f for f in findings if f.kind == POSITION_REFUSED]
    assert finding.subject == STREAM
    assert "400::The replayId {" in str(finding.reason)
    assert finding.detail == {"position": stale}
    # then resumed from the newest: a new conversation arrives by the stream again
    assert _replays(sqlite_ledger) != decode_position(str(stale))[0]


# -- bridge salesforce setup / the start-up check ------------------------------------------------
@pytest.fixture
def live_env(
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> SalesforceSandbox:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key, value in sandbox_values(sf_sandbox, sn_sandbox).items():
        if isinstance(value, dict):
            for sub, v in value.items():
                monkeypatch.setenv(f"BRIDGE_{key.upper()}__{sub.upper()}", str(v))
        else:
            monkeypatch.setenv(f"BRIDGE_{key.upper()}", str(value))
    monkeypatch.setenv("BRIDGE_SALESFORCE__INTAKE", "pushtopic")
    return sf_sandbox


def test_setup_command_creates_then_checks_the_topics(
    live_env: SalesforceSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["salesforce", "setup", "--check"]) == 1
    assert f"PushTopic {PSR_TOPIC} is missing" in capsys.readouterr().out
    assert main(["salesforce", "setup", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert all(line.startswith("created ") for line in done["done"])
    names = {t["name"] for t in done["topics"]}
    held = {r["Name"]: r for r in live_env.org.all("PushTopic")}
    assert set(held) == names  # what the org now holds
    assert PSR_TOPIC in names
    assert held[PSR_TOPIC]["Query"] == next(
        t["query"] for t in done["topics"] if t["name"] == PSR_TOPIC
    )
    assert main(["salesforce", "setup", "--check"]) == 0
    assert "every PushTopic is as defined" in capsys.readouterr().out


def test_run_refuses_to_start_without_the_topics(
    live_env: SalesforceSandbox, sqlite_ledger: SqlLedger
) -> None:
    settings = load_settings()
    runtime = Runtime.build(settings, ledger=sqlite_ledger)
    try:
        with pytest.raises(ConfigError) as refused:
            runtime.salesforce_stream()
    finally:
        runtime.close()
    assert "BRIDGE_SALESFORCE__INTAKE=pushtopic" in refused.value.message
    assert f"PushTopic {PSR_TOPIC} is missing" in refused.value.message
    assert "bridge salesforce setup" in refused.value.message
