"""PushTopic intake over the Streaming API: a Bayeux long-polling client of our own.

Written on the project's requests session rather than a PyPI CometD client: aiosfstream-ng
and aiocometd-ng call ``asyncio.wait_for(..., loop=...)`` on reconnect, which fails on
Python >= 3.10.

``BayeuxClient`` speaks the protocol: ``/meta/handshake`` (the ``BAYEUX_BROWSER`` session
cookie is kept by the session's jar), ``/meta/subscribe`` with the replay extension (-1 new
only, -2 all retained, or the replay id to start after), ``/meta/connect`` long-polls that
follow the server's ``advice`` (``interval`` before the next connect, ``timeout`` as the
read deadline, ``reconnect: handshake``), a new handshake on ``403::Unknown client`` and a
new token on ``401::Authentication invalid``. A replay id the org refuses (``400::The
replayId {..} you provided was invalid``) is ``PositionRefused`` for the stream base.

``PushTopicSubscription`` plugs it into ``bridge.flow.streams.StreamRunner``: one client
subscribed to every topic; the position is the newest replay id delivered per channel (and
the instance it came from), recorded with the events in one transaction.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import requests

from bridge.adapters.salesforce.auth import SalesforceTokens, Token
from bridge.adapters.salesforce.client import parse_sf_datetime
from bridge.errors import Permanent, Retriable, from_transport
from bridge.flow.streams import Batch, PositionRefused, StreamPosition
from bridge.ledger.ports import NewEvent

log = logging.getLogger(__name__)

SYSTEM = "salesforce"
UNKNOWN_CLIENT = "403::Unknown client"
AUTH_INVALID = "401::Authentication invalid"
REPLAY_INVALID = "400::The replayId"
NEW_ONLY, ALL_RETAINED = -1, -2
# What a connect is held for when the server has not advised yet (Salesforce: 110 s).
DEFAULT_CONNECT_TIMEOUT_MS = 110_000
# Added to the advised timeout before the read gives up on a held connect.
READ_MARGIN = 15.0


class BayeuxError(Retriable):
    """The server answered a Bayeux message unsuccessfully (not one the client handles)."""


class ReplayRefused(Exception):
    def __init__(self, channel: str, replay_id: int, error: str) -> None:
        super().__init__(error)
        self.channel, self.replay_id, self.error = channel, replay_id, error


class BayeuxClient:
    """One Bayeux client of the org's ``/cometd/{version}`` endpoint."""

    def __init__(
        self,
        session: requests.Session,
        tokens: SalesforceTokens,
        *,
        api_version: str,
        instance_url: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._session = session
        self._tokens = tokens
        self._api_version = api_version
        self._instance_url = instance_url.rstrip("/") if instance_url else None
        self._sleep = sleep
        self._token: Token | None = None
        self._message_id = 0
        self.client_id: str | None = None
        self.advice: dict[str, Any] = {"interval": 0, "timeout": DEFAULT_CONNECT_TIMEOUT_MS}
        # channel -> replay to (re)subscribe with: the newest delivered replay id
        self.subscriptions: dict[str, int] = {}
        self.handshakes = 0
        self.reauthentications = 0
        self._closed = threading.Event()

    # -- plumbing ---------------------------------------------------------------------
    @property
    def instance_url(self) -> str:
        return self._instance_url or self._current_token().instance_url.rstrip("/")

    def _current_token(self) -> Token:
        if self._token is None:
            self._token = self._tokens.token()
        return self._token

    def _post(self, messages: list[dict[str, Any]], read_timeout: float) -> list[dict[str, Any]]:
        token = self._current_token()
        for message in messages:
            self._message_id += 1
            message["id"] = str(self._message_id)
            if self.client_id is not None and message["channel"] != "/meta/handshake":
                message["clientId"] = self.client_id
        url = f"{self.instance_url}/cometd/{self._api_version}"
        try:
            response = self._session.post(
                url,
                data=json.dumps(messages),
                headers={
                    "Authorization": f"Bearer {token.access_token.get_secret_value()}",
                    "Content-Type": "application/json",
                },
                timeout=(10.0, read_timeout),
            )
        except requests.RequestException as exc:
            raise from_transport(SYSTEM, exc) from exc
        if response.status_code == 401:
            return [{"channel": messages[0]["channel"], "successful": False, "error": AUTH_INVALID}]
        if response.status_code != 200:
            raise BayeuxError(
                f"Streaming API answered HTTP {response.status_code}: {response.text[:200]}",
                system=SYSTEM,
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise BayeuxError("Streaming API answered no JSON", system=SYSTEM) from exc
        return body if isinstance(body, list) else [body]

    def _reauthenticate(self) -> None:
        self.reauthentications += 1
        self._token = self._tokens.refresh(self._token)

    # -- protocol ---------------------------------------------------------------------
    def handshake(self) -> None:
        """A new client (a second refused session is ``Permanent``)."""
        for attempt in range(2):
            self.client_id = None
            (reply,) = self._meta(
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "minimumVersion": "1.0",
                    "supportedConnectionTypes": ["long-polling"],
                    "ext": {"replay": True},
                },
                read_timeout=30.0,
            )
            if reply.get("successful"):
                self.handshakes += 1
                self.client_id = str(reply["clientId"])
                self.advice.update(reply.get("advice") or {})
                return
            reason = (reply.get("ext") or {}).get("sfdc", {}).get("failureReason", "")
            if AUTH_INVALID in (reason, reply.get("error")) and attempt == 0:
                self._reauthenticate()
                continue
            raise Permanent(
                f"Streaming API handshake refused: {reply.get('error')} {reason}".strip(),
                system=SYSTEM,
            )

    def subscribe(self, channel: str, replay: int) -> None:
        (reply,) = self._meta(
            {
                "channel": "/meta/subscribe",
                "subscription": channel,
                "ext": {"replay": {channel: replay}},
            },
            read_timeout=30.0,
        )
        if reply.get("successful"):
            self.subscriptions[channel] = replay
            return
        error = str(reply.get("error", ""))
        if error.startswith(REPLAY_INVALID):
            raise ReplayRefused(channel, replay, error)
        raise Permanent(f"Streaming API refused {channel}: {error}", system=SYSTEM)

    def start(self, replays: Mapping[str, int]) -> None:
        """Handshake and subscribe to every channel (raises ``ReplayRefused``)."""
        self._closed.clear()
        self.handshake()
        self.subscriptions = {}
        for channel, replay in replays.items():
            self.subscriptions[channel] = replay
        self._resubscribe()

    def _resubscribe(self) -> None:
        for channel, replay in list(self.subscriptions.items()):
            self.subscribe(channel, replay)

    def _meta(self, message: dict[str, Any], read_timeout: float) -> list[dict[str, Any]]:
        replies = self._post([message], read_timeout)
        return [r for r in replies if r.get("channel") == message["channel"]] or [
            {"channel": message["channel"], "successful": False, "error": "no reply"}
        ]

    def connect(self) -> list[dict[str, Any]]:
        """One long-poll: the data messages it brought (none: the server's keepalive).
        Unknown client → handshake and resubscribe from the newest delivered replay ids;
        invalid session → new token, handshake, resubscribe."""
        interval = float(self.advice.get("interval") or 0) / 1000
        if interval > 0:
            self._sleep(interval)
        timeout = float(self.advice.get("timeout") or DEFAULT_CONNECT_TIMEOUT_MS) / 1000
        replies = self._post(
            [{"channel": "/meta/connect", "connectionType": "long-polling"}],
            read_timeout=timeout + READ_MARGIN,
        )
        data: list[dict[str, Any]] = []
        for reply in replies:
            channel = reply.get("channel")
            if channel != "/meta/connect":
                data.append(reply)
                event = (reply.get("data") or {}).get("event") or {}
                if isinstance(event.get("replayId"), int) and channel in self.subscriptions:
                    self.subscriptions[str(channel)] = int(event["replayId"])
                continue
            self.advice.update(reply.get("advice") or {})
            if reply.get("successful"):
                continue
            error = str(reply.get("error", ""))
            reconnect = (reply.get("advice") or {}).get("reconnect")
            if error.startswith("401"):
                log.info("Streaming API: session invalid; new token and handshake")
                self._reauthenticate()
                self._rejoin()
            elif error.startswith("403") or reconnect == "handshake":
                log.info("Streaming API: %s; handshake again", error)
                self._rejoin()
            elif reconnect == "none":
                raise Permanent(f"Streaming API ended the session: {error}", system=SYSTEM)
            else:
                raise BayeuxError(f"Streaming API connect failed: {error}", system=SYSTEM)
        return data

    def _rejoin(self) -> None:
        self.handshake()
        self._resubscribe()

    def disconnect(self) -> None:
        if self.client_id is None:
            return
        try:
            self._post([{"channel": "/meta/disconnect"}], read_timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - leaving anyway
            log.debug("Streaming API disconnect: %s", exc)
        self.client_id = None

    def close(self) -> None:
        """From another thread: stop after the connect in flight (its read deadline
        bounds the wait)."""
        self._closed.set()
        self._session.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


# Turns one data message of a topic into inbox events.
EventMaker = Callable[[str, Mapping[str, Any]], list[NewEvent]]


def encode_position(replays: Mapping[str, int], origin: str) -> str:
    """The stream position: replay id per channel, as one ``StreamPosition``."""
    return StreamPosition(json.dumps(dict(sorted(replays.items()))), origin).encode()


def decode_position(position: str) -> tuple[dict[str, int], str]:
    decoded = StreamPosition.decode(position)
    replays = json.loads(decoded.replay_id)
    if not isinstance(replays, dict):
        raise TypeError("a PushTopic position holds a replay id per channel")
    return {str(k): int(v) for k, v in replays.items()}, decoded.origin


class PushTopicSubscription:
    """``Subscription`` of the stream base over a ``BayeuxClient`` and its topics."""

    def __init__(
        self,
        client: BayeuxClient,
        channels: Sequence[str],
        make_events: EventMaker,
        *,
        catch_up: Callable[[], object] | None = None,
    ) -> None:
        self._client = client
        self._channels = list(channels)
        self._make_events = make_events
        self._catch_up = catch_up

    def open(self, position: str | None) -> Iterator[Batch]:
        replays = dict.fromkeys(self._channels, NEW_ONLY)
        if position is not None:
            try:
                stored, origin = decode_position(position)
            except (ValueError, KeyError, TypeError) as exc:
                raise PositionRefused(position, f"unreadable PushTopic position: {exc}") from exc
            if origin and origin != self._client.instance_url:
                raise PositionRefused(
                    position, f"the org's instance changed ({origin} → {self._client.instance_url})"
                )
            replays.update({c: r for c, r in stored.items() if c in replays})
        try:
            self._client.start(replays)
        except ReplayRefused as refused:
            raise PositionRefused(position, f"{refused.channel}: {refused.error}") from refused
        if position is not None:
            self._caught_up_if_unpositioned()
        return self._batches()

    def _caught_up_if_unpositioned(self) -> None:
        """A channel that has delivered nothing has no replay id to resume after (a
        restart, a new handshake): what it missed meanwhile is read once, as on a first
        start (by the polls' own cursors; the inbox drops what the stream also brings)."""
        if self._catch_up is not None and min(self._client.subscriptions.values(), default=0) < 0:
            self._catch_up()

    def _batches(self) -> Iterator[Batch]:
        client = self._client
        try:
            while not client.closed:
                handshakes = client.handshakes
                try:
                    messages = client.connect()
                except ReplayRefused as refused:  # on a resubscribe after a handshake
                    raise PositionRefused(None, f"{refused.channel}: {refused.error}") from refused
                if client.closed:
                    return
                if client.handshakes != handshakes:
                    self._caught_up_if_unpositioned()
                events: list[NewEvent] = []
                committed: datetime | None = None
                for message in messages:
                    data = message.get("data") or {}
                    events += self._make_events(str(message.get("channel")), data)
                    created = (data.get("event") or {}).get("createdDate")
                    if isinstance(created, str):
                        committed = parse_sf_datetime(created)
                # a channel that has delivered nothing yet is stored as -1 (see ``open``)
                position = encode_position(client.subscriptions, client.instance_url)
                yield Batch(events, position, committed)
        finally:
            client.disconnect()

    def close(self) -> None:
        self._client.close()
