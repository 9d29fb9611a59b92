"""HTTP sessions for the clients (simple-salesforce, pysnc, the Interaction Service API).

Two things requests gets wrong for us by default, fixed here once for every adapter:

- ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` in the environment silently override a
  session's ``verify`` for every request that does not pass ``verify`` itself (and the
  clients never do). The adapter below pins the configured CA bundle on every send.
- requests has no default time-out; a hung peer would hang the bridge.

``raise_http_errors`` turns every error answer on a session into the bridge's error
branch at the source, by the adapter's error table, whatever client made the call:
simple-salesforce and pysnc raise their own exceptions without the answer's headers, so
``Retry-After`` would be lost. ``call_with_token_refresh`` is the one 401 → new token →
once more loop of every adapter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from bridge.errors import (
    HTTP_ERRORS,
    BridgeError,
    ErrorRule,
    Permanent,
    from_http,
    parse_retry_after,
)
from bridge.metrics import API_CALLS, SF_API_USAGE

DEFAULT_TIMEOUT = (5.0, 30.0)

K = TypeVar("K")
T = TypeVar("T")

# Ids in paths become placeholders so that the endpoint label stays low-cardinality.
_ID_SEGMENT = re.compile(
    r"/(?:[0-9a-f]{32}"  # ServiceNow sys_id
    r"|(?=[A-Za-z]*\d)[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?"  # Salesforce id (has a digit)
    r"|[0-9A-Za-z]{15,18}-\d+)"  # Salesforce query locator
    r"(?=/|$)"
)
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")


def endpoint_of(url: str) -> str:
    """``/services/data/v62.0/sobjects/AgentWork/0Bz...`` → ``.../sobjects/AgentWork/{id}``."""
    return _ID_SEGMENT.sub("/{id}", urlsplit(url).path)


class PinnedAdapter(HTTPAdapter):
    """Forces the session's CA bundle and a default time-out on every request."""

    def __init__(
        self,
        *,
        verify: str | bool,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        pool_maxsize: int = 32,
        system: str = "other",
    ) -> None:
        super().__init__(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
        self._verify = verify
        self._timeout = timeout
        self._system = system

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["verify"] = self._verify
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        endpoint = endpoint_of(request.url or "")
        try:
            response = super().send(request, **kwargs)
        except requests.RequestException:
            API_CALLS.labels(self._system, endpoint, "error").inc()
            raise
        API_CALLS.labels(self._system, endpoint, str(response.status_code)).inc()
        limit_info = response.headers.get("Sforce-Limit-Info")
        if limit_info and (match := _LIMIT_INFO.search(limit_info)):
            SF_API_USAGE.labels("used").set(int(match.group(1)))
            SF_API_USAGE.labels("max").set(int(match.group(2)))
        return response


def make_session(
    ca_bundle: str | Path | None = None,
    *,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    pool_maxsize: int = 32,
    system: str = "other",
) -> requests.Session:
    """A requests session that trusts ``ca_bundle`` (or the system store when None) and
    counts its calls by ``system`` and endpoint."""
    session = requests.Session()
    verify: str | bool = str(ca_bundle) if ca_bundle is not None else True
    session.verify = verify
    adapter = PinnedAdapter(
        verify=verify, timeout=timeout, pool_maxsize=pool_maxsize, system=system
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def describe_error(response: requests.Response) -> tuple[str, str | None, Any]:
    """(message, code, body) of an error answer, in whichever shape the server used:
    Salesforce REST ``[{"message", "errorCode"}]``, Interaction Service ``{"code",
    "message"}``, OAuth ``{"error", "error_description"}``, ServiceNow ``{"error":
    {"message", "detail"}}``."""
    try:
        body: Any = response.json()
    except ValueError:
        text = response.text.strip()[:300]
        return text or f"HTTP {response.status_code}", None, text
    first = body[0] if isinstance(body, list) and body else body
    if not isinstance(first, dict):
        return f"HTTP {response.status_code}", None, body
    error = first.get("error")
    if isinstance(error, dict):
        message = str(error.get("message") or f"HTTP {response.status_code}")
        detail = error.get("detail")
        return (f"{message} ({detail})" if detail else message), None, body
    if isinstance(error, str):
        return f"{error}: {first.get('error_description', '')}".rstrip(": "), error, body
    code = first.get("errorCode", first.get("code"))
    message = first.get("message") or f"HTTP {response.status_code}"
    return str(message), (None if code is None else str(code)), body


def error_of(
    system: str,
    response: requests.Response,
    context: str = "",
    table: Sequence[ErrorRule] = HTTP_ERRORS,
) -> BridgeError:
    """The bridge's error branch for an error answer, by ``table`` (``context`` prefixes
    the message)."""
    message, code, body = describe_error(response)
    request = response.request
    return from_http(
        system,
        response.status_code,
        f"{context}: {message}" if context else message,
        code=code,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        detail=body,
        method=request.method if request is not None else None,
        endpoint=endpoint_of(request.url or "") if request is not None else None,
        table=table,
    )


def raise_http_errors(
    session: requests.Session, system: str, table: Sequence[ErrorRule] = HTTP_ERRORS
) -> None:
    """Make every answer >= 400 on ``session`` raise its ``BridgeError`` (idempotent)."""

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.status_code >= 400:
            raise error_of(system, response, table=table)
        return response

    hooks = session.hooks.setdefault("response", [])
    if not any(getattr(h, "bridge_system", None) for h in hooks):
        hook.bridge_system = system  # type: ignore[attr-defined]
        hooks.append(hook)


class Tokens(Protocol[K]):
    """An access-token source: the current token, and a new one after the server refused
    ``stale`` (unless another thread already replaced it)."""

    def token(self) -> K: ...

    def refresh(self, stale: K) -> K: ...


def call_with_token_refresh(fn: Callable[[K], T], tokens: Tokens[K], *, system: str) -> T:
    """``fn(token)``; after a 401, once more with a fresh token. A 401 for the fresh token
    too is no expired session but refused credentials: ``Permanent``, naming the system."""
    token = tokens.token()
    try:
        return fn(token)
    except BridgeError as exc:
        if exc.status != 401:
            raise
    try:
        return fn(tokens.refresh(token))
    except BridgeError as exc:
        if exc.status != 401:
            raise
        raise Permanent(
            f"{system} refused a freshly issued token: {exc.message}",
            system=system,
            code=exc.code,
            status=exc.status,
            detail=exc.detail,
        ) from exc
