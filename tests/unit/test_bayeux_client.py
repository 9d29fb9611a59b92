"""The Bayeux client's handling of the server's answers (advice, unknown client, invalid
session, replay refused), on a scripted transport: no socket."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from bridge.adapters.salesforce.auth import Token
from bridge.adapters.salesforce.cometd import BayeuxClient, PushTopicSubscription, ReplayRefused
from bridge.errors import Permanent
from bridge.flow.streams import PositionRefused

URL = "https://org.example.com"
REPLAY_INVALID = (
    "400::The replayId {5} you provided was invalid.  Please provide a valid ID, -2 to replay "
    "all events, or -1 to replay only new events."
)


class Answer:
    def __init__(self, body: Any, status: int = 200) -> None:
        self.status_code = status
        self._body = body
        self.text = json.dumps(body)

    def json(self) -> Any:
        return self._body


class Script:
    """A session answering each POST with the next scripted reply list."""

    def __init__(self, *answers: list[dict[str, Any]]) -> None:
        self.answers = list(answers)
        self.sent: list[list[dict[str, Any]]] = []
        self.tokens_used: list[str] = []

    def post(self, url: str, data: str, headers: dict[str, str], timeout: Any) -> Answer:
        assert url == f"{URL}/cometd/62.0"
        self.sent.append(json.loads(data))
        self.tokens_used.append(headers["Authorization"])
        return Answer(self.answers.pop(0))

    def close(self) -> None:
        return None


class Tokens:
    def __init__(self) -> None:
        self.issued = 0
        self.current = self._new()

    def _new(self) -> Token:
        self.issued += 1
        return Token(SecretStr(f"token-{self.issued}"), URL, 0.0)

    def token(self) -> Token:
        return self.current

    def refresh(self, stale: Token | None = None) -> Token:
        self.current = self._new()
        return self.current


def _ok(channel: str, **fields: Any) -> dict[str, Any]:
    return {"channel": channel, "successful": True, **fields}


HANDSHAKE = _ok("/meta/handshake", clientId="c1", ext={"replay": True})
SUBSCRIBED = _ok("/meta/subscribe", subscription="/topic/T")


def _client(script: Script, slept: list[float] | None = None) -> tuple[BayeuxClient, Tokens]:
    tokens = Tokens()
    client = BayeuxClient(
        script,  # type: ignore[arg-type]
        tokens,  # type: ignore[arg-type]
        api_version="62.0",
        instance_url=URL,
        sleep=(slept.append if slept is not None else lambda s: None),
    )
    return client, tokens


def _event(replay_id: int) -> dict[str, Any]:
    return {
        "channel": "/topic/T",
        "data": {
            "event": {
                "type": "created",
                "replayId": replay_id,
                "createdDate": "2026-01-01T00:00:00Z",
            },
            "sobject": {"Id": "x"},
        },
    }


def test_connect_follows_the_advice_interval_and_timeout() -> None:
    slept: list[float] = []
    script = Script(
        [HANDSHAKE],
        [SUBSCRIBED],
        [_ok("/meta/connect", advice={"interval": 250, "timeout": 2000, "reconnect": "retry"})],
        [_event(7), _ok("/meta/connect")],
    )
    client, _ = _client(script, slept)
    client.start({"/topic/T": -1})
    assert client.connect() == []
    assert slept == []  # no interval advised yet
    (message,) = client.connect()
    assert slept == [0.25]
    assert message["data"]["event"]["replayId"] == 7
    assert client.subscriptions == {"/topic/T": 7}
    assert script.sent[1][0]["ext"] == {"replay": {"/topic/T": -1}}
    assert all(m[0].get("clientId") == "c1" for m in script.sent[1:])


@pytest.mark.parametrize(
    ("failure", "reauthenticated"),
    [
        ({"error": "403::Unknown client", "advice": {"reconnect": "handshake"}}, False),
        ({"error": "401::Authentication invalid", "advice": {"reconnect": "none"}}, True),
    ],
)
def test_unknown_client_and_invalid_session_rejoin_after_the_newest_replay_id(
    failure: dict[str, Any], reauthenticated: bool
) -> None:
    script = Script(
        [HANDSHAKE],
        [SUBSCRIBED],
        [_event(9), _ok("/meta/connect")],
        [{"channel": "/meta/connect", "successful": False, **failure}],
        [_ok("/meta/handshake", clientId="c2")],
        [SUBSCRIBED],
    )
    client, tokens = _client(script)
    client.start({"/topic/T": -1})
    client.connect()
    assert client.connect() == []
    assert client.client_id == "c2"
    assert script.sent[-1][0]["ext"] == {"replay": {"/topic/T": 9}}  # resumes after 9
    assert (tokens.issued == 2) is reauthenticated
    assert script.tokens_used[-1] == f"Bearer token-{tokens.issued}"


def test_a_refused_handshake_gets_one_new_token_then_is_permanent() -> None:
    denied = {
        "channel": "/meta/handshake",
        "successful": False,
        "error": "403::Handshake denied",
        "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}},
    }
    client, tokens = _client(Script([denied], [denied]))
    with pytest.raises(Permanent, match="Handshake denied"):
        client.handshake()
    assert tokens.issued == 2


def test_a_refused_replay_id_is_a_refused_position() -> None:
    refused = {"channel": "/meta/subscribe", "successful": False, "error": REPLAY_INVALID}
    client, _ = _client(Script([HANDSHAKE], [refused]))
    with pytest.raises(ReplayRefused):
        client.start({"/topic/T": 5})
    client, _ = _client(Script([HANDSHAKE], [refused]))
    subscription = PushTopicSubscription(client, ["/topic/T"], lambda c, d: [])
    position = '{"replay_id": "{\\"/topic/T\\": 5}", "origin": "https://org.example.com"}'
    with pytest.raises(PositionRefused) as raised:
        subscription.open(position)
    assert raised.value.reason == f"/topic/T: {REPLAY_INVALID}"


def test_a_position_from_another_instance_is_refused() -> None:
    client, _ = _client(Script())
    subscription = PushTopicSubscription(client, ["/topic/T"], lambda c, d: [])
    position = '{"replay_id": "{\\"/topic/T\\": 5}", "origin": "https://old.example.com"}'
    with pytest.raises(PositionRefused, match="instance changed"):
        subscription.open(position)
