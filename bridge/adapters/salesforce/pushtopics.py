"""The PushTopics of the ``pushtopic`` intake: what they are, how their events become inbox
events, and creating / checking them over REST (``bridge salesforce setup``, ``bridge run``).

The PSR topic is the v56 Omni-Channel guide's (``... FROM PendingServiceRouting WHERE
RoutingModel = 'ExternalRouting'``, create / update / delete, ``NotifyForFields =
Referenced``) with the further fields the engine reads and the mapped queues (an
Omni-routed queue of ServiceNow-originated work), as the polls read them. A PushTopic event
carries every field of its query, so an update needs no merge. AgentWork of every queue, and
the work items that end (abandonment), are topics of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import requests

from bridge.adapters.http import call_with_token_refresh, error_of, make_session
from bridge.adapters.salesforce.auth import SYSTEM, SalesforceTokens, Token
from bridge.adapters.salesforce.client import (
    ERRORS,
    SalesforceAdapter,
    parse_sf_datetime,
    soql_string,
)
from bridge.adapters.salesforce.cometd import BayeuxClient, PushTopicSubscription
from bridge.adapters.salesforce.polling import (
    AGENT_WORK_FIELDS,
    ENDED_WORK_ITEM_STATUSES,
    EXTERNAL_ROUTING,
    PSR_FIELDS,
    SalesforceIntake,
    deleted_event,
)
from bridge.app.settings import Settings
from bridge.errors import ConfigError
from bridge.flow.stream_metrics import batch_observer
from bridge.flow.streams import StreamRunner
from bridge.ledger.ports import Ledger, NewEvent

TOPIC_PREFIX = "/topic/"
NAME_MAX = 25
QUERY_MAX = 1300
PSR_TOPIC = "BridgePSR"
AGENT_WORK_TOPIC = "BridgeAgentWork"


@dataclass(frozen=True)
class PushTopicDefinition:
    name: str
    sobject: str
    query: str
    api_version: str
    notify_for_fields: str = "Referenced"
    create: bool = True
    update: bool = True
    delete: bool = False
    undelete: bool = False

    @property
    def channel(self) -> str:
        return TOPIC_PREFIX + self.name

    def fields(self) -> dict[str, Any]:
        """The PushTopic record as REST writes it."""
        return {
            "Name": self.name,
            "Query": self.query,
            "ApiVersion": float(self.api_version),
            "IsActive": True,
            "NotifyForFields": self.notify_for_fields,
            "NotifyForOperationCreate": self.create,
            "NotifyForOperationUpdate": self.update,
            "NotifyForOperationDelete": self.delete,
            "NotifyForOperationUndelete": self.undelete,
        }

    def differences(self, record: Mapping[str, Any]) -> list[str]:
        """Fields of an existing PushTopic that differ from this definition."""
        wanted = self.fields()
        out = []
        for name, value in wanted.items():
            have = record.get(name)
            if name == "ApiVersion":
                same = have is not None and float(have) == float(value)
            elif name == "Query":
                same = " ".join(str(have or "").split()) == " ".join(str(value).split())
            else:
                same = have == value
            if not same:
                out.append(name)
        return out


def _select(sobject: str, fields: Sequence[str], where: str | None = None) -> str:
    columns = ", ".join(dict.fromkeys(["Id", "SystemModstamp", *fields]))
    return f"SELECT {columns} FROM {sobject}" + (f" WHERE {where}" if where else "")


def definitions(
    *, queue_ids: Sequence[str], work_item_types: Sequence[str], api_version: str
) -> list[PushTopicDefinition]:
    """The topics the bridge needs for this crosswalk (``ConfigError`` if one would exceed
    what a PushTopic allows)."""
    external = f"RoutingModel = {soql_string(EXTERNAL_ROUTING)}"
    queues = list(dict.fromkeys(queue_ids))
    if queues:
        listed = ", ".join(soql_string(q) for q in queues)
        psr_where = f"{external} OR QueueId IN ({listed})"
    else:
        psr_where = external
    topics = [
        PushTopicDefinition(
            PSR_TOPIC,
            "PendingServiceRouting",
            _select("PendingServiceRouting", PSR_FIELDS, psr_where),
            api_version,
            delete=True,  # the guide: acceptance deletes the PSR
        ),
        PushTopicDefinition(
            AGENT_WORK_TOPIC,
            "AgentWork",
            _select("AgentWork", AGENT_WORK_FIELDS),
            api_version,
        ),
    ]
    for sobject in dict.fromkeys(work_item_types):
        statuses = ENDED_WORK_ITEM_STATUSES.get(sobject)
        if statuses is None:
            continue
        ended = ", ".join(soql_string(s) for s in statuses)
        topics.append(
            PushTopicDefinition(
                f"Bridge{sobject}"[:NAME_MAX],
                sobject,
                _select(sobject, ("Status", "OwnerId"), f"Status IN ({ended})"),
                api_version,
            )
        )
    for topic in topics:
        if len(topic.query) > QUERY_MAX:
            raise ConfigError(
                f"PushTopic {topic.name}: its query is {len(topic.query)} characters, more "
                f"than a PushTopic allows ({QUERY_MAX}); map fewer queues"
            )
    return topics


class StreamEvents(Protocol):
    """What the polling intake knows of turning records into inbox events."""

    def stream_event(
        self, sobject: str, record: dict[str, Any], version: str
    ) -> NewEvent | None: ...


class TopicEvents:
    """Data messages of the topics as inbox events: the same ids as the polls' (the
    sweeper's reads and the stream's events meet in the inbox's unique key)."""

    def __init__(self, topics: Sequence[PushTopicDefinition], intake: StreamEvents) -> None:
        self._by_channel = {t.channel: t for t in topics}
        self._intake = intake

    def __call__(self, channel: str, data: Mapping[str, Any]) -> list[NewEvent]:
        topic = self._by_channel.get(channel)
        event = data.get("event") or {}
        record = dict(data.get("sobject") or {})
        if topic is None or "Id" not in record:
            return []
        kind = event.get("type")
        if kind == "deleted":
            if topic.sobject != "PendingServiceRouting":
                return []
            when = parse_sf_datetime(str(event["createdDate"]))
            return [deleted_event(str(record["Id"]), when)]
        key = "SystemModstamp" if topic.sobject == "PendingServiceRouting" else "Status"
        made = self._intake.stream_event(topic.sobject, record, str(record.get(key)))
        return [] if made is None else [made]


class PushTopicRest:
    """The few REST calls on the PushTopic sObject (query, create, update)."""

    def __init__(
        self,
        session: requests.Session,
        tokens: SalesforceTokens,
        *,
        api_version: str,
        instance_url: str | None = None,
    ) -> None:
        self._session = session
        self._tokens = tokens
        self._version = api_version
        self._instance_url = instance_url.rstrip("/") if instance_url else None

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        def attempt(token: Token) -> requests.Response:
            base = self._instance_url or token.instance_url.rstrip("/")
            response = self._session.request(
                method,
                f"{base}/services/data/v{self._version}{path}",
                headers={"Authorization": f"Bearer {token.access_token.get_secret_value()}"},
                **kwargs,
            )
            if response.status_code >= 400:
                raise error_of(SYSTEM, response, f"PushTopic {method}", table=ERRORS)
            return response

        return call_with_token_refresh(attempt, self._tokens, system=SYSTEM)

    def existing(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        listed = ", ".join(soql_string(n) for n in names)
        soql = (
            "SELECT Id, Name, Query, ApiVersion, IsActive, NotifyForFields, "
            "NotifyForOperationCreate, NotifyForOperationUpdate, NotifyForOperationDelete, "
            f"NotifyForOperationUndelete FROM PushTopic WHERE Name IN ({listed})"
        )
        body = self._request("GET", "/query", params={"q": soql}).json()
        return {str(r["Name"]): r for r in body.get("records", [])}

    def create(self, fields: Mapping[str, Any]) -> str:
        return str(self._request("POST", "/sobjects/PushTopic", json=dict(fields)).json()["id"])

    def update(self, record_id: str, fields: Mapping[str, Any]) -> None:
        changes = {k: v for k, v in fields.items() if k != "Name"}
        self._request("PATCH", f"/sobjects/PushTopic/{record_id}", json=changes)


def ensure(rest: PushTopicRest, topics: Sequence[PushTopicDefinition]) -> list[str]:
    """Create the missing topics and update those that differ; one line per topic."""
    have = rest.existing([t.name for t in topics])
    lines = []
    for topic in topics:
        record = have.get(topic.name)
        if record is None:
            lines.append(f"created {topic.name} ({rest.create(topic.fields())})")
            continue
        differ = topic.differences(record)
        if differ:
            rest.update(str(record["Id"]), topic.fields())
            lines.append(f"updated {topic.name} ({', '.join(differ)})")
        else:
            lines.append(f"unchanged {topic.name}")
    return lines


def check(rest: PushTopicRest, topics: Sequence[PushTopicDefinition]) -> list[str]:
    """What is missing or different (empty: the org has the topics as defined)."""
    have = rest.existing([t.name for t in topics])
    problems = []
    for topic in topics:
        record = have.get(topic.name)
        if record is None:
            problems.append(f"PushTopic {topic.name} is missing")
        elif differ := topic.differences(record):
            problems.append(f"PushTopic {topic.name} differs in {', '.join(differ)}")
    return problems


STREAM = "salesforce:pushtopic"


def _session(settings: Settings) -> requests.Session:
    # a session of its own: its cookie jar holds the Bayeux client's BAYEUX_BROWSER cookie
    return make_session(settings.ca_bundle, timeout=settings.http_timeout, system=SYSTEM)


def topic_rest(settings: Settings, adapter: SalesforceAdapter) -> PushTopicRest:
    sf = settings.require_salesforce()
    return PushTopicRest(
        _session(settings), adapter.tokens, api_version=sf.api_version, instance_url=sf.instance_url
    )


def pushtopic_runner(
    settings: Settings,
    adapter: SalesforceAdapter,
    intake: SalesforceIntake,
    ledger: Ledger,
    *,
    queue_ids: Sequence[str],
    on_recorded: Callable[[int], None] | None = None,
    verify: bool = True,
) -> StreamRunner:
    """The PushTopic intake the settings describe, on the stream base, the polling intake
    as its catch-up read. ``verify``: the org's topics are checked first (``ConfigError``
    naming what is missing or different, and the command that fixes it)."""
    sf = settings.require_salesforce()
    topics = definitions(
        queue_ids=queue_ids, work_item_types=intake.work_item_types, api_version=sf.api_version
    )
    if verify:
        problems = check(topic_rest(settings, adapter), topics)
        if problems:
            raise ConfigError(
                f"BRIDGE_SALESFORCE__INTAKE=pushtopic: {'; '.join(problems)} "
                "(run `bridge salesforce setup`)",
                detail=problems,
            )
    client = BayeuxClient(
        _session(settings), adapter.tokens, api_version=sf.api_version, instance_url=sf.instance_url
    )

    def catch_up() -> None:
        intake.poll(datetime.now(UTC))

    subscription = PushTopicSubscription(
        client, [t.channel for t in topics], TopicEvents(topics, intake), catch_up=catch_up
    )
    return StreamRunner(
        STREAM,
        subscription,
        ledger,
        catch_up=catch_up,
        keepalive_timeout=sf.keepalive_timeout,
        on_recorded=on_recorded,
        observe=batch_observer(",".join(t.channel for t in topics)),
    )
