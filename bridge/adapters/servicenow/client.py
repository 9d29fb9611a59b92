"""The ServiceNow adapter: queries through pysnc's GlideRecord, writes and AWA offers through
the same authenticated session, every failure mapped once to the bridge's error branches by
``ERRORS``, an OAuth token renewed once after a 401 (``call_with_token_refresh``).

pysnc's own retry (urllib3 ``Retry`` on 429/5xx) is switched off: it would retry outside
the ledger, ignore ``Retry-After`` and hide calls from the outbox's accounting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import requests
from pydantic import SecretStr
from pysnc import ServiceNowClient
from pysnc import exceptions as snc_errors

from bridge.adapters.http import (
    call_with_token_refresh,
    endpoint_of,
    make_session,
    raise_http_errors,
)
from bridge.adapters.servicenow.auth import SYSTEM, ServiceNowTokens
from bridge.app.settings import Settings
from bridge.errors import (
    HTTP_ERRORS,
    ConfigError,
    ErrorRule,
    Permanent,
    Skippable,
    from_http,
    from_transport,
)

T = TypeVar("T")

# sys_id IN (...) batches: keep URLs well below common 8 KB limits (and below the length at
# which pysnc silently switches a query to the Batch API, whose errors it swallows).
IN_BATCH = 100
# Rows per request when a query has no limit; the instance's default maximum per page.
PYSNC_PAGE = 1000
MAX_PAGE = 10_000

OFFER = "/api/now/awa/documents/*/offer"  # any document table and sys_id
# An offer or blind transfer AWA refused because the agent cannot take it now: the
# executor tries its next candidate on this code.
AGENT_NOT_AVAILABLE = "AGENT_NOT_AVAILABLE"

# The error table: ServiceNow's per-endpoint overrides, then the common rows. AWA's
# refusals carry no error code, only their documented message.
ERRORS: tuple[ErrorRule, ...] = (
    *(
        ErrorRule(
            Permanent,
            status=409,
            message=message,
            method="POST",
            endpoint=OFFER,
            as_code=AGENT_NOT_AVAILABLE,
        )
        for message in (
            "Agent is not available",
            "Transfer failed - couldn't blind transfer to agent",
        )
    ),
    # The document closed before the offer reached AWA (the customer left, or an agent closed
    # it in ServiceNow): there is nothing left to offer, and the close is the engine's news.
    ErrorRule(
        Skippable,
        status=409,
        message="Document is not active",
        method="POST",
        endpoint=OFFER,
        reason="the document closed before the offer reached AWA",
    ),
    *HTTP_ERRORS,
)


class ServiceNowApi(Protocol):
    """What the bridge needs from ServiceNow; the rest of the code depends on this only."""

    def changed(
        self,
        table: str,
        fields: Sequence[str],
        after: tuple[str, str] | None,
        limit: int,
        extra_query: str = "",
    ) -> list[dict[str, str]]: ...

    def fetch(
        self, table: str, sys_ids: Sequence[str], fields: Sequence[str]
    ) -> list[dict[str, str]]: ...

    def query(
        self, table: str, encoded_query: str, fields: Sequence[str], limit: int | None = None
    ) -> list[dict[str, str]]: ...

    def get(self, table: str, sys_id: str) -> dict[str, str] | None: ...

    def insert(self, table: str, values: Mapping[str, Any]) -> dict[str, str]: ...

    def update(self, table: str, sys_id: str, values: Mapping[str, Any]) -> dict[str, str]: ...

    def offer(
        self, document_table: str, document_sys_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...


def keyset_query(after: tuple[str, str] | None) -> str:
    """Rows after (sys_updated_on, sys_id), in that order.

    Offset paging skips or repeats rows when ACLs trim pages or rows change between pages;
    a keyset on (sys_updated_on, sys_id) does not.
    """
    if after is None:
        return "ORDERBYsys_updated_on"
    updated, sys_id = after
    if not sys_id:
        return f"sys_updated_on>={updated}^ORDERBYsys_updated_on"
    return (
        f"sys_updated_on>{updated}^NQsys_updated_on={updated}^sys_id>{sys_id}^ORDERBYsys_updated_on"
    )


class ServiceNowAdapter:
    """``ServiceNowApi`` over pysnc and the authenticated requests session."""

    def __init__(
        self,
        session: requests.Session,
        instance_url: str,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        client_id: str | None = None,
        client_secret: SecretStr | None = None,
    ) -> None:
        self._instance_url = instance_url.rstrip("/")
        raise_http_errors(session, SYSTEM, ERRORS)
        self._session = session
        self._tokens: ServiceNowTokens | None = None
        if client_id and client_secret:
            self._tokens = ServiceNowTokens(
                session, self._instance_url, client_id=client_id, client_secret=client_secret
            )
        else:
            if not (username and password):
                raise ConfigError(
                    "ServiceNow needs basic auth (BRIDGE_SERVICENOW__USERNAME/PASSWORD) or "
                    "OAuth (BRIDGE_SERVICENOW__CLIENT_ID/CLIENT_SECRET)",
                    system=SYSTEM,
                )
            session.auth = requests.auth.HTTPBasicAuth(username, password.get_secret_value())
        self._client = ServiceNowClient(self._instance_url, session, auto_retry=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceNowAdapter:
        """The adapter the settings describe (``ConfigError`` naming what is missing)."""
        sn = settings.require_servicenow()
        session = make_session(
            settings.ca_bundle,
            timeout=settings.http_timeout,
            pool_maxsize=max(settings.dispatch_concurrency, 4),
            system=SYSTEM,
        )
        return cls(
            session,
            str(sn.instance_url),
            username=sn.username,
            password=sn.password,
            client_id=sn.client_id,
            client_secret=sn.client_secret,
        )

    # -- auth and errors -------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one call; with OAuth, fetch a new token once on a 401; map errors."""

        def attempt(token: str | None = None) -> T:
            del token  # on the session already
            try:
                return fn()
            except requests.RequestException as exc:
                raise from_transport(SYSTEM, exc) from exc
            except snc_errors.RequestException as exc:  # an answer pysnc could not read
                raise Permanent(f"unreadable answer: {str(exc)[:300]}", system=SYSTEM) from exc

        if self._tokens is None:  # basic auth: a 401 is the password, no token to renew
            return attempt()
        return call_with_token_refresh(attempt, self._tokens, system=SYSTEM)

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        def send() -> dict[str, Any]:
            response = self._session.request(
                method,
                f"{self._instance_url}{path}",
                headers={"Accept": "application/json", "Content-Type": "application/json"},
                **kwargs,
            )
            if not response.content:
                return {}
            try:
                body = response.json()
            except ValueError as exc:
                raise Permanent(f"{method} {path}: the answer is not JSON", system=SYSTEM) from exc
            return body if isinstance(body, dict) else {"result": body}

        return self._call(send)

    # -- reads ------------------------------------------------------------------------------

    def query(
        self, table: str, encoded_query: str, fields: Sequence[str], limit: int | None = None
    ) -> list[dict[str, str]]:
        """Rows of an encoded query with raw values (no display values: fewer bytes)."""

        def run() -> list[dict[str, str]]:
            # one request per call when ``limit`` is given: no offset paging inside a page
            record = self._client.GlideRecord(table, batch_size=min(limit or PYSNC_PAGE, MAX_PAGE))
            record.display_value = False
            record.exclude_reference_link = True
            record.fields = list(dict.fromkeys(["sys_id", *fields]))
            if encoded_query:
                record.add_encoded_query(encoded_query)
            if limit is not None:
                record.limit = limit
            record.query()
            return [_row(record) for _ in record]

        return self._call(run)

    def changed(
        self,
        table: str,
        fields: Sequence[str],
        after: tuple[str, str] | None,
        limit: int,
        extra_query: str = "",
    ) -> list[dict[str, str]]:
        """One keyset page of rows changed after ``after`` = (sys_updated_on, sys_id)."""
        cols = ["sys_updated_on", "sys_mod_count", *fields]
        query = keyset_query(after)
        if extra_query:
            query = _and_each_branch(query, extra_query)
        return self.query(table, query, cols, limit=limit)

    def fetch(
        self, table: str, sys_ids: Sequence[str], fields: Sequence[str]
    ) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        unique = list(dict.fromkeys(sys_ids))
        for start in range(0, len(unique), IN_BATCH):
            batch = ",".join(unique[start : start + IN_BATCH])
            out.extend(self.query(table, f"sys_idIN{batch}", fields))
        return out

    def get(self, table: str, sys_id: str) -> dict[str, str] | None:
        try:
            body = self._request(
                "GET",
                f"/api/now/table/{table}/{sys_id}",
                params={"sysparm_exclude_reference_link": "true"},
            )
        except Permanent as exc:
            if exc.status == 404:
                return None
            raise
        result = body.get("result")
        return {k: _plain(v) for k, v in result.items()} if isinstance(result, dict) else None

    # -- writes -----------------------------------------------------------------------------

    def insert(self, table: str, values: Mapping[str, Any]) -> dict[str, str]:
        body = self._request(
            "POST",
            f"/api/now/table/{table}",
            params={"sysparm_exclude_reference_link": "true"},
            json=dict(values),
        )
        return {k: _plain(v) for k, v in body.get("result", {}).items()}

    def update(self, table: str, sys_id: str, values: Mapping[str, Any]) -> dict[str, str]:
        body = self._request(
            "PATCH",
            f"/api/now/table/{table}/{sys_id}",
            params={"sysparm_exclude_reference_link": "true"},
            json=dict(values),
        )
        return {k: _plain(v) for k, v in body.get("result", {}).items()}

    def offer(
        self, document_table: str, document_sys_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """AWA Offer Work API: a new assignment or a transfer."""
        path = f"/api/now/awa/documents/{document_table}/{document_sys_id}/offer"
        answer = self._request("POST", path, json=dict(body))
        result = answer.get("result", answer)
        if isinstance(result, dict) and result.get("success") is False:
            # a refusal in a 200: classified by the same table as one in a 4xx
            raise from_http(
                SYSTEM,
                200,
                str(result.get("message")),
                detail=result,
                method="POST",
                endpoint=endpoint_of(path),
                table=ERRORS,
            )
        return result if isinstance(result, dict) else {"result": result}


def _plain(value: Any) -> str:
    """A Table API value as its raw string (reference links and display pairs unwrapped)."""
    if isinstance(value, dict):
        return str(value.get("value", ""))
    return "" if value is None else str(value)


def _row(record: Any) -> dict[str, str]:
    return {name: _plain(value) for name, value in record.serialize().items()}


def _and_each_branch(query: str, condition: str) -> str:
    """AND ``condition`` into every ``^NQ`` branch (NQ starts an independent query)."""
    order = ""
    if "^ORDERBY" in query:
        query, order = query.split("^ORDERBY", 1)
        order = "^ORDERBY" + order
    elif query.startswith("ORDERBY"):
        return f"{condition}^{query}"
    return "^NQ".join(f"{branch}^{condition}" for branch in query.split("^NQ")) + order
