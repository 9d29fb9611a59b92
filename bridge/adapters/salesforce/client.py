"""The Salesforce adapter: REST through simple-salesforce, the Interaction Service API
through the same authenticated requests session, every failure mapped once to the
bridge's error branches by ``ERRORS`` (``bridge.adapters.http.raise_http_errors`` on the
session), an expired session renewed once (``call_with_token_refresh``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError

from bridge.adapters.http import call_with_token_refresh, make_session, raise_http_errors
from bridge.adapters.salesforce.auth import SYSTEM, SalesforceTokens, Token
from bridge.app.settings import Settings
from bridge.errors import (
    HTTP_ERRORS,
    ErrorRule,
    Permanent,
    Skippable,
    from_http,
    from_transport,
)

T = TypeVar("T")

# SOQL `IN (...)` batches: 200 ids keep the query far below the 100,000-character limit.
IN_BATCH = 200

# The error table: Salesforce's per-endpoint overrides, then the common rows.
ERRORS: tuple[ErrorRule, ...] = (
    # Omni-Channel deletes the PSR itself when the work is accepted or the conversation
    # ends: a delete that finds none has nothing left to do.
    ErrorRule(
        Skippable,
        status=404,
        method="DELETE",
        endpoint="*/sobjects/PendingServiceRouting/{id}",
        reason="the PSR is already gone",
    ),
    *HTTP_ERRORS,
)


class SalesforceApi(Protocol):
    """What the bridge needs from Salesforce; the rest of the code depends on this only."""

    def query(self, soql: str) -> Iterator[dict[str, Any]]: ...

    def changed(
        self, sobject: str, fields: Sequence[str], since: datetime
    ) -> Iterator[dict[str, Any]]: ...

    def deleted(
        self, sobject: str, start: datetime, end: datetime
    ) -> list[tuple[str, datetime]]: ...

    def fetch(
        self, sobject: str, ids: Sequence[str], fields: Sequence[str]
    ) -> list[dict[str, Any]]: ...

    def create(self, sobject: str, fields: Mapping[str, Any]) -> str: ...

    def delete(self, sobject: str, record_id: str) -> None: ...

    def route(self, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def cancel_route(self, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def assign_agent_work(self, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def update_agent_work(self, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


def soql_datetime(value: datetime) -> str:
    """A SOQL datetime literal (UTC, second precision)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def soql_string(value: str) -> str:
    """A quoted SOQL string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def parse_sf_datetime(value: str) -> datetime:
    """``2024-01-31T10:00:00.000+0000`` (or ``...Z``) → aware UTC datetime."""
    text = value.replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"
    return datetime.fromisoformat(text).astimezone(UTC)


class SalesforceAdapter:
    """``SalesforceApi`` over simple-salesforce and the Interaction Service API."""

    def __init__(
        self,
        session: requests.Session,
        tokens: SalesforceTokens,
        *,
        api_version: str,
        scrt_url: str | None = None,
        org_id: str | None = None,
        authorization_context: str | None = None,
        authorization_context_type: str = "ConversationChannelDefinition",
        instance_url: str | None = None,
    ) -> None:
        raise_http_errors(session, SYSTEM, ERRORS)
        self._session = session
        self._tokens = tokens
        self._api_version = api_version
        self._scrt_url = scrt_url.rstrip("/") if scrt_url else None
        self._org_id = org_id[:15] if org_id else None
        self._authorization_context = authorization_context
        self._authorization_context_type = authorization_context_type
        self._instance_url = instance_url
        self._lock = threading.Lock()
        self._client: Salesforce | None = None
        self._client_token: Token | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SalesforceAdapter:
        """The adapter the settings describe (``ConfigError`` naming what is missing)."""
        sf = settings.require_salesforce()

        def session() -> requests.Session:
            return make_session(
                settings.ca_bundle,
                timeout=settings.http_timeout,
                pool_maxsize=max(settings.dispatch_concurrency, 4),
                system=SYSTEM,
            )

        tokens = SalesforceTokens(
            session(),
            login_url=sf.login_url,
            client_id=str(sf.client_id),
            client_secret=sf.client_secret,
            username=sf.username,
            jwt_key_file=sf.jwt_key_file,
        )
        return cls(
            session(),
            tokens,
            api_version=sf.api_version,
            scrt_url=sf.scrt_url,
            org_id=sf.org_id,
            authorization_context=sf.authorization_context,
            authorization_context_type=sf.authorization_context_type,
            instance_url=sf.instance_url,
        )

    @property
    def tokens(self) -> SalesforceTokens:
        """The login the adapter uses (the Pub/Sub API subscriber shares it)."""
        return self._tokens

    @property
    def org_id(self) -> str | None:
        return self._org_id

    # -- plumbing -------------------------------------------------------------------------

    def _client_for(self, token: Token) -> Salesforce:
        """The simple-salesforce client for ``token`` (a new one after a refresh)."""
        with self._lock:
            if self._client is None or self._client_token is not token:
                self._client = Salesforce(
                    instance_url=self._instance_url or token.instance_url,
                    session_id=token.access_token.get_secret_value(),
                    version=self._api_version,
                    session=self._session,
                )
                self._client_token = token
            return self._client

    def _call(self, fn: Callable[[Salesforce], T]) -> T:
        """Run one client call; re-authenticate once on an expired session; map errors."""

        def attempt(token: Token) -> T:
            try:
                return fn(self._client_for(token))
            except SalesforceError as exc:  # 3xx answers: the session hook raises for >= 400
                raise from_http(SYSTEM, exc.status, str(exc.content), table=ERRORS) from exc
            except requests.RequestException as exc:
                raise from_transport(SYSTEM, exc) from exc

        return call_with_token_refresh(attempt, self._tokens, system=SYSTEM)

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """(used, max) daily API requests from the last ``Sforce-Limit-Info`` seen."""
        if self._client is None:
            return None
        usage = self._client.api_usage.get("api-usage")
        if usage is None:
            return None
        return int(usage.used), int(usage.total)

    # -- REST -----------------------------------------------------------------------------

    def query(self, soql: str) -> Iterator[dict[str, Any]]:
        """Every record of a query, page by page (``nextRecordsUrl``); lazy: a failure
        raises while iterating, at the page that failed."""
        result: dict[str, Any] = self._call(lambda sf: dict(sf.query(soql)))
        while True:
            for record in result["records"]:
                yield dict(record)
            if result.get("done", True):
                return
            locator: str = result["nextRecordsUrl"]

            def more(sf: Salesforce, locator: str = locator) -> dict[str, Any]:
                return dict(sf.query_more(locator, identifier_is_url=True))

            result = self._call(more)

    def changed(
        self, sobject: str, fields: Sequence[str], since: datetime
    ) -> Iterator[dict[str, Any]]:
        """Records whose ``SystemModstamp`` is at or after ``since``, oldest first."""
        columns = ", ".join(dict.fromkeys(["Id", "SystemModstamp", *fields]))
        soql = (
            f"SELECT {columns} FROM {sobject} WHERE SystemModstamp >= {soql_datetime(since)} "
            "ORDER BY SystemModstamp ASC, Id ASC"
        )
        return self.query(soql)

    def deleted(self, sobject: str, start: datetime, end: datetime) -> list[tuple[str, datetime]]:
        """Ids deleted in [start, end] (``sobjects/X/deleted``), with when."""
        body = self._call(lambda sf: getattr(sf, sobject).deleted(start, end))
        return [
            (row["id"], parse_sf_datetime(row["deletedDate"]))
            for row in body.get("deletedRecords", [])
        ]

    def fetch(
        self, sobject: str, ids: Sequence[str], fields: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Records by id, ``IN`` batches of 200."""
        columns = ", ".join(dict.fromkeys(["Id", *fields]))
        out: list[dict[str, Any]] = []
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), IN_BATCH):
            batch = ", ".join(soql_string(i) for i in unique[start : start + IN_BATCH])
            soql = f"SELECT {columns} FROM {sobject} WHERE Id IN ({batch})"
            out.extend(self.query(soql))
        return out

    def create(self, sobject: str, fields: Mapping[str, Any]) -> str:
        result = self._call(lambda sf: getattr(sf, sobject).create(dict(fields)))
        return str(result["id"])

    def delete(self, sobject: str, record_id: str) -> None:
        self._call(lambda sf: getattr(sf, sobject).delete(record_id))

    # -- Interaction Service API ----------------------------------------------------------

    def _isapi(
        self, method: str, path: str, request_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        if not (self._scrt_url and self._org_id and self._authorization_context):
            raise Permanent(
                "the Interaction Service API needs BRIDGE_SALESFORCE__SCRT_URL, "
                "BRIDGE_SALESFORCE__ORG_ID and BRIDGE_SALESFORCE__AUTHORIZATION_CONTEXT",
                system=SYSTEM,
            )
        org_id, context = self._org_id, self._authorization_context
        url = f"{self._scrt_url}/api/v1{path}"

        def attempt(token: Token) -> dict[str, Any]:
            headers = {
                "Authorization": f"Bearer {token.access_token.get_secret_value()}",
                "OrgId": org_id,
                "AuthorizationContext": context,
                "RequestId": request_id,
                "Content-Type": "application/json",
            }
            if method == "PATCH":
                headers["AuthorizationContextType"] = self._authorization_context_type
            try:
                response = self._session.request(
                    method, url, headers=headers, data=json.dumps(body)
                )
                payload = response.json() if response.content else {}
            except requests.RequestException as exc:
                raise from_transport(SYSTEM, exc) from exc
            except ValueError as exc:
                raise Permanent(f"{method} {path}: the answer is not JSON", system=SYSTEM) from exc
            return payload if isinstance(payload, dict) else {"body": payload}

        return call_with_token_refresh(attempt, self._tokens, system=SYSTEM)

    def route(self, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /route``: route a conversation (Initial or Transfer) to a queue or flow."""
        return self._isapi("POST", "/route", request_id, body)

    def cancel_route(self, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``DELETE /route``: delete the conversation's PendingServiceRouting."""
        return self._isapi("DELETE", "/route", request_id, body)

    def assign_agent_work(self, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /agentWork``: assign the conversation's work to a user."""
        return self._isapi("POST", "/agentWork", request_id, body)

    def update_agent_work(self, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /agentWork``: Accept, Decline, Close or Cancel an AgentWork."""
        return self._isapi("PATCH", "/agentWork", request_id, body)
