"""The sandbox org's Streaming API (PushTopic over CometD) through a plain Bayeux client
written here from Salesforce's docs (requests, no bridge code), over HTTPS."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox

SUPPORT = seed.QUEUES[0]
VERSION = "56.0"
PSR_QUERY = (
    "Select Id, Serial, QueueId, WorkItemId, IsPushed, ServiceChannelId, "
    "LastDeclinedAgentSession, CreatedDate from PendingServiceRouting where RoutingModel = "
    "'ExternalRouting'"
)
CASE_QUERY = "SELECT Id, Subject, Status FROM Case WHERE Status != 'Closed'"


class Bayeux:
    """A Bayeux long-polling client as the Streaming API guide describes it: a JSON array
    per POST, the bearer token, the session cookie kept."""

    def __init__(self, sandbox: SalesforceSandbox, token: str | None = None) -> None:
        self.url = f"{sandbox.instance_url}/cometd/{VERSION}"
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(sandbox.ca_bundle)
        self.token = token or sandbox.issue_token()
        self.client_id: str | None = None
        self._id = 0

    def send(self, *messages: dict[str, Any], timeout: float = 10) -> list[dict[str, Any]]:
        for message in messages:
            self._id += 1
            message.setdefault("id", str(self._id))
            if self.client_id and message["channel"] != "/meta/handshake":
                message.setdefault("clientId", self.client_id)
        response = self.session.post(
            self.url,
            json=list(messages),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=timeout,
        )
        assert response.status_code == 200, response.text
        body: list[dict[str, Any]] = response.json()
        return body

    def handshake(self) -> dict[str, Any]:
        (reply,) = self.send(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                "ext": {"replay": True},
            }
        )
        self.client_id = reply.get("clientId")
        return reply

    def subscribe(self, channel: str, replay: int = -1) -> dict[str, Any]:
        (reply,) = self.send(
            {
                "channel": "/meta/subscribe",
                "subscription": channel,
                "ext": {"replay": {channel: replay}},
            }
        )
        return reply

    def connect(self, timeout: float = 10) -> list[dict[str, Any]]:
        return self.send(
            {"channel": "/meta/connect", "connectionType": "long-polling"}, timeout=timeout
        )

    def events(self, replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in replies if not r["channel"].startswith("/meta/")]


@pytest.fixture
def streaming(sf_sandbox: SalesforceSandbox) -> SalesforceSandbox:
    """Connects are held 1 s (not 110 s) so idle tests do not wait."""
    sf_sandbox.streaming.connect_timeout_ms = 1000
    return sf_sandbox


def _topic(sf: Salesforce, name: str, query: str, **extra: Any) -> str:
    fields = {
        "Name": name,
        "Query": query,
        "ApiVersion": 41.0,
        "NotifyForOperationCreate": True,
        "NotifyForOperationUpdate": True,
        "NotifyForOperationDelete": True,
        "NotifyForFields": "Referenced",
        **extra,
    }
    return str(sf.PushTopic.create(fields)["id"])


def _ready(client: Bayeux, channel: str, replay: int = -1) -> None:
    assert client.handshake()["successful"] is True
    assert client.subscribe(channel, replay)["successful"] is True
    first = client.connect()
    assert first[-1]["successful"] is True


def _drain(client: Bayeux, want: int, rounds: int = 5) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(rounds):
        got += client.events(client.connect())
        if len(got) >= want:
            break
    return got


# -- PushTopic sObject ---------------------------------------------------------------------
def test_pushtopic_crud_over_rest(sf_client: Salesforce) -> None:
    topic_id = _topic(sf_client, "PSRPushTopic", PSR_QUERY)
    record = sf_client.PushTopic.get(topic_id)
    assert record["Name"] == "PSRPushTopic"
    assert record["Query"] == PSR_QUERY
    assert record["IsActive"] is True
    assert record["NotifyForOperationUndelete"] is True  # defaulted on create
    assert topic_id.startswith("0IF")
    assert sf_client.PushTopic.update(topic_id, {"NotifyForFields": "All"}) == 204
    assert sf_client.PushTopic.get(topic_id)["NotifyForFields"] == "All"
    found = sf_client.query("SELECT Id, Name FROM PushTopic WHERE Name = 'PSRPushTopic'")
    assert [r["Id"] for r in found["records"]] == [topic_id]
    assert sf_client.PushTopic.delete(topic_id) == 204


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        ({"Query": "SELECT Id FROM NoSuchThing"}, "INVALID_TYPE", "NoSuchThing"),
        ({"Query": "SELECT Id, Nope__c FROM Case"}, "INVALID_FIELD", "Nope__c"),
        ({"Query": "SELECT Subject FROM Case"}, "INVALID_FIELD", "must select Id"),
        ({"Query": "SELECT Id FROM Case ORDER BY Subject"}, "INVALID_FIELD", "ORDER BY"),
        ({"Name": "N" * 26}, "STRING_TOO_LONG", "max length=25"),
    ],
)
def test_pushtopic_query_the_org_refuses(
    sf_client: Salesforce, fields: dict[str, Any], code: str, text: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as refused:
        _topic(sf_client, str(fields.pop("Name", "Refused")), str(fields.get("Query", CASE_QUERY)))
    (error,) = refused.value.content
    assert error["errorCode"] == code
    assert text in error["message"]
    assert sf_client.query("SELECT COUNT() FROM PushTopic")["totalSize"] == 0


def test_pushtopic_names_are_unique(sf_client: Salesforce) -> None:
    first = _topic(sf_client, "Cases", CASE_QUERY)
    with pytest.raises(SalesforceMalformedRequest) as refused:
        _topic(sf_client, "Cases", CASE_QUERY)
    assert refused.value.content[0]["errorCode"] == "DUPLICATE_VALUE"
    assert first in refused.value.content[0]["message"]


# -- handshake, subscribe, connect -----------------------------------------------------------
def test_handshake_answers_client_id_long_polling_and_replay(streaming: SalesforceSandbox) -> None:
    client = Bayeux(streaming)
    reply = client.handshake()
    assert reply["successful"] is True
    assert reply["clientId"]
    assert reply["supportedConnectionTypes"] == ["long-polling"]
    assert reply["ext"]["replay"] is True
    assert "BAYEUX_BROWSER" in client.session.cookies


def test_connect_advice_and_long_poll_held_until_timeout(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    client = Bayeux(streaming)
    _ready(client, "/topic/Cases")
    streaming.streaming.connect_timeout_ms = 300
    replies = client.connect()
    (reply,) = replies  # idle: no event, the connect is answered at the advice's timeout
    assert reply["successful"] is True
    assert reply["advice"] == {"interval": 0, "timeout": 300, "reconnect": "retry"}


def test_default_advice_is_salesforce_s(sf_sandbox: SalesforceSandbox) -> None:
    client = Bayeux(sf_sandbox)
    client.handshake()
    (reply,) = client.connect()  # the first connect answers at once with the advice
    assert reply["advice"] == {"interval": 0, "timeout": 110000, "reconnect": "retry"}


def test_events_match_the_where_and_carry_the_query_fields(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    client = Bayeux(streaming)
    _ready(client, "/topic/Cases")
    case_id = sf_client.Case.create({"Subject": "Printer on fire"})["id"]
    sf_client.Case.update(case_id, {"Subject": "Printer still on fire"})
    sf_client.Case.update(case_id, {"Origin": "Web"})  # not a referenced field: no event
    sf_client.Case.update(case_id, {"Status": "Closed"})  # no longer matches: no event
    sf_client.Case.create({"Subject": "born closed", "Status": "Closed"})  # never matches
    events = _drain(client, 2)
    assert [e["data"]["event"]["type"] for e in events] == ["created", "updated"]
    assert all(e["channel"] == "/topic/Cases" for e in events)
    assert events[0]["data"]["sobject"] == {
        "Id": case_id,
        "Subject": "Printer on fire",
        "Status": "New",
    }
    assert events[1]["data"]["sobject"]["Subject"] == "Printer still on fire"
    first, second = (e["data"]["event"]["replayId"] for e in events)
    assert second > first
    assert events[0]["data"]["event"]["createdDate"].endswith("Z")
    assert streaming.streaming.deliveries() == {"/topic/Cases": 2}
    assert client.events(client.connect()) == []  # nothing else came


def test_notify_for_fields_all_and_operations(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(
        sf_client,
        "AllCases",
        CASE_QUERY,
        NotifyForFields="All",
        NotifyForOperationCreate=False,
    )
    client = Bayeux(streaming)
    _ready(client, "/topic/AllCases")
    case_id = sf_client.Case.create({"Subject": "quiet create"})["id"]
    sf_client.Case.update(case_id, {"Origin": "Web"})  # any field notifies with All
    sf_client.Case.delete(case_id)
    events = _drain(client, 2)
    assert [e["data"]["event"]["type"] for e in events] == ["updated", "deleted"]
    assert events[1]["data"]["sobject"] == {"Id": case_id}


def test_the_guide_s_psr_topic_sees_external_routing_work(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(sf_client, "PSRPushTopic", PSR_QUERY)
    client = Bayeux(streaming)
    _ready(client, "/topic/PSRPushTopic")
    streaming.control.start_conversation(SUPPORT.sf_developer_name)
    psrs = sf_client.query("SELECT Id, WorkItemId, QueueId FROM PendingServiceRouting")["records"]
    events = _drain(client, len(psrs))
    created = [e["data"] for e in events if e["data"]["event"]["type"] == "created"]
    assert {e["sobject"]["Id"] for e in created} == {p["Id"] for p in psrs}
    assert set(created[0]["sobject"]) == {
        "Id",
        "Serial",
        "QueueId",
        "WorkItemId",
        "IsPushed",
        "ServiceChannelId",
        "LastDeclinedAgentSession",
        "CreatedDate",
    }
    assert created[0]["sobject"]["IsPushed"] is False


# -- replay ----------------------------------------------------------------------------------
def test_replay_all_retained_and_after_an_id(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    ids = [sf_client.Case.create({"Subject": f"case {n}"})["id"] for n in range(3)]

    everything = Bayeux(streaming)
    _ready(everything, "/topic/Cases", -2)
    replayed = _drain(everything, 3)
    assert [e["data"]["sobject"]["Id"] for e in replayed] == ids

    after_first = Bayeux(streaming)
    _ready(after_first, "/topic/Cases", replayed[0]["data"]["event"]["replayId"])
    assert [e["data"]["sobject"]["Id"] for e in _drain(after_first, 2)] == ids[1:]

    new_only = Bayeux(streaming)
    _ready(new_only, "/topic/Cases", -1)
    assert new_only.events(new_only.connect()) == []


def test_replay_id_outside_retention_is_refused(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    sf_client.Case.create({"Subject": "old news"})
    (event,) = streaming.streaming.events("/topic/Cases")
    replay_id = event.replay_id
    streaming.clock.advance(24 * 3600 + 1)  # past the 24 h retention (and the token's life)
    streaming.org.insert("Case", {"Subject": "news"})
    client = Bayeux(streaming)
    client.handshake()
    reply = client.subscribe("/topic/Cases", replay_id - 1)
    assert reply["successful"] is False
    assert reply["error"] == (
        f"400::The replayId {{{replay_id - 1}}} you provided was invalid.  Please provide a "
        "valid ID, -2 to replay all events, or -1 to replay only new events."
    )
    # -2 still works, and brings only what is retained
    assert client.subscribe("/topic/Cases", -2)["successful"] is True
    client.connect()
    (retained,) = _drain(client, 1)
    assert retained["data"]["sobject"]["Subject"] == "news"


def test_expire_control_voids_every_replay_id(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    sf_client.Case.create({"Subject": "soon forgotten"})
    (event,) = streaming.streaming.events("/topic/Cases")
    session = Bayeux(streaming).session
    expired = session.post(f"{streaming.instance_url}/__sandbox/streams/cometd/expire")
    assert expired.json() == {"expired": 1}
    client = Bayeux(streaming)
    client.handshake()
    reply = client.subscribe("/topic/Cases", event.replay_id - 1)
    assert reply["error"].startswith(f"400::The replayId {{{event.replay_id - 1}}}")


def test_unknown_topic_names_the_channel_in_braces(streaming: SalesforceSandbox) -> None:
    client = Bayeux(streaming)
    client.handshake()
    reply = client.subscribe("/topic/NoSuchTopic")
    assert reply["successful"] is False
    assert "{/topic/NoSuchTopic}" in reply["error"]


# -- errors ----------------------------------------------------------------------------------
def test_unknown_client_after_drop_advises_handshake(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    client = Bayeux(streaming)
    _ready(client, "/topic/Cases")
    dropped = client.session.post(
        f"{streaming.instance_url}/__sandbox/streams/cometd/drop-connections"
    )
    assert dropped.json() == {"dropped": 1}
    (reply,) = client.connect()
    assert reply["successful"] is False
    assert reply["error"] == "403::Unknown client"
    assert reply["advice"]["reconnect"] == "handshake"


def test_held_connect_ends_with_unknown_client_when_dropped(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    streaming.streaming.connect_timeout_ms = 10_000
    client = Bayeux(streaming)
    _ready(client, "/topic/Cases")
    timer = threading.Timer(0.3, streaming.streaming.drop_clients)
    timer.start()
    (reply,) = client.connect(timeout=5)
    timer.join()
    assert reply["error"] == "403::Unknown client"


def test_a_client_without_its_session_cookie_is_unknown(streaming: SalesforceSandbox) -> None:
    client = Bayeux(streaming)
    client.handshake()
    client.session.cookies.clear()
    (reply,) = client.connect()
    assert reply["error"] == "403::Unknown client"


def test_client_forgotten_after_40_s_without_connect(streaming: SalesforceSandbox) -> None:
    client = Bayeux(streaming)
    client.handshake()
    streaming.clock.advance(41)
    (reply,) = client.connect()
    assert reply["error"] == "403::Unknown client"


def test_revoked_session_is_authentication_invalid(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    client = Bayeux(streaming)
    _ready(client, "/topic/Cases")
    streaming.control.revoke_tokens()
    (reply,) = client.connect()
    assert reply["successful"] is False
    assert reply["error"] == "401::Authentication invalid"
    assert reply["advice"]["reconnect"] == "none"
    (handshake,) = Bayeux(streaming, token="00Dbogus!token").send(
        {"channel": "/meta/handshake", "version": "1.0"}
    )
    assert handshake["successful"] is False
    assert handshake["ext"]["sfdc"]["failureReason"] == "401::Authentication invalid"


def test_unsubscribe_and_disconnect(streaming: SalesforceSandbox, sf_client: Salesforce) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    client = Bayeux(streaming)
    _ready(client, "/topic/Cases")
    (reply,) = client.send({"channel": "/meta/unsubscribe", "subscription": "/topic/Cases"})
    assert reply["successful"] is True
    sf_client.Case.create({"Subject": "nobody listens"})
    assert client.events(client.connect()) == []
    (bye,) = client.send({"channel": "/meta/disconnect"})
    assert bye["successful"] is True
    (after,) = client.connect()
    assert after["error"] == "403::Unknown client"


# -- controls --------------------------------------------------------------------------------
def test_drop_and_delay_one_event(streaming: SalesforceSandbox, sf_client: Salesforce) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    client = Bayeux(streaming)
    _ready(client, "/topic/Cases")
    base = f"{streaming.instance_url}/__sandbox/streams/cometd"
    assert client.session.post(f"{base}/drop-event", json={"channel": "/topic/Cases"}).ok
    sf_client.Case.create({"Subject": "lost"})
    sf_client.Case.create({"Subject": "kept"})
    (kept,) = _drain(client, 1)
    assert kept["data"]["sobject"]["Subject"] == "kept"
    assert client.session.post(
        f"{base}/delay-event", json={"channel": "/topic/Cases", "seconds": 1.5}
    ).ok
    sf_client.Case.create({"Subject": "late"})
    assert client.events(client.connect()) == []  # held back past this 1 s long-poll
    (late,) = _drain(client, 1)
    assert late["data"]["sobject"]["Subject"] == "late"
    counted = client.session.get(f"{base}/deliveries").json()
    assert counted == {"/topic/Cases": 2}


def test_stalled_connects_are_not_answered(
    streaming: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _topic(sf_client, "Cases", CASE_QUERY)
    client = Bayeux(streaming)
    _ready(client, "/topic/Cases")
    base = f"{streaming.instance_url}/__sandbox/streams/cometd"
    client.session.post(f"{base}/settings", json={"stalled": True, "connect_timeout_ms": 100})
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.connect(timeout=1)
    bad = client.session.post(f"{base}/settings", json={"stalled": "yes"})
    assert bad.status_code == 400
    assert "stalled" in bad.json()["error"]
