"""The bridge's error taxonomy.

Errors are data: every failure that crosses an adapter boundary is mapped, once, by a table
(``HTTP_ERRORS`` plus each adapter's per-endpoint overrides), to one of these branches, and
the dispatcher and intake act on the branch (and its ``code``), never on the client's
exception type or the server's wording.

- ``Retriable``: try again later (429, 5xx, time-outs, dropped connections); carries
  ``retry_after`` in seconds when the server said how long to wait.
- ``Permanent``: will never succeed as sent (validation errors, 4xx other than 429);
  the command is dead-lettered with the reason.
- ``OutcomeUnknown`` (a ``Retriable``): the request may have taken effect (an answer lost
  after it was sent); a create looks for what it may have made before it retries.
- ``Skippable``: nothing to do (the target is already in the wanted state, an event for
  something the bridge does not route); recorded and passed over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""

    kind: str = "error"

    def __init__(
        self,
        message: str,
        *,
        system: str | None = None,
        code: str | None = None,
        status: int | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.system = system
        self.code = code
        self.status = status
        self.detail = detail

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe description, for the ledger and for ``--json`` output."""
        out: dict[str, Any] = {"kind": self.kind, "message": self.message}
        for key in ("system", "code", "status"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def __str__(self) -> str:
        where = f"{self.system}: " if self.system else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{where}{self.message}{code}"


class Retriable(BridgeError):
    """A transient failure; the same request may succeed later."""

    kind = "retriable"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


class OutcomeUnknown(Retriable):
    """The request may have reached the server (time-out, dropped connection after send).

    A create must look before it retries: find what the first attempt may have made.
    """

    kind = "outcome_unknown"


class Permanent(BridgeError):
    """A failure that repeating will not fix; dead-letter with the reason."""

    kind = "permanent"


class Skippable(BridgeError):
    """Nothing to do; recorded and passed over."""

    kind = "skippable"


class ConfigError(BridgeError):
    """Invalid settings or mapping tables; names every bad field and why."""

    kind = "config"


class LedgerError(BridgeError):
    """The ledger is unreachable, corrupt, or not at the expected migration."""

    kind = "ledger"


class NotFound(BridgeError):
    """An id the user asked about is not in the ledger."""

    kind = "not_found"


class VersionConflict(BridgeError):
    """Optimistic versioning: the correlation changed since it was read."""

    kind = "version_conflict"


# -- the error table --------------------------------------------------------------------
# Adapters turn an HTTP error answer into (status, code, message) plus the request's method
# and endpoint label, and call ``from_http`` with their table; nothing else decides. A table
# is the adapter's per-endpoint overrides followed by ``HTTP_ERRORS``; the first matching
# row wins and an answer no row matches is ``Permanent``.


@dataclass(frozen=True)
class ErrorRule:
    """One row: the answers it matches (every field given must match) and what they mean.

    ``message`` is compared with the server's text as is (AWA's 409s carry no code);
    ``endpoint`` is a glob over the path as ``bridge.adapters.http.endpoint_of`` labels it
    (ids shown as ``{id}``). ``reason`` and ``as_code`` replace the server's message and
    code, so that callers can test a stable ``code`` rather than message text.
    """

    branch: type[BridgeError]
    status: int | None = None
    code: str | None = None
    message: str | None = None
    method: str | None = None
    endpoint: str | None = None
    reason: str | None = None
    as_code: str | None = None

    def matches(
        self, status: int, code: str | None, message: str, method: str | None, endpoint: str | None
    ) -> bool:
        return (
            (self.status is None or self.status == status)
            and (self.code is None or self.code == code)
            and (self.message is None or self.message == message)
            and (self.method is None or self.method == method)
            and (self.endpoint is None or fnmatchcase(endpoint or "", self.endpoint))
        )


HTTP_ERRORS: tuple[ErrorRule, ...] = (
    # Salesforce: the record is already gone; deleting it again is not a failure.
    ErrorRule(Skippable, code="ENTITY_IS_DELETED"),
    *(ErrorRule(Retriable, status=status) for status in (408, 425, 429, 500, 502, 503, 504)),
    ErrorRule(Retriable, code="REQUEST_LIMIT_EXCEEDED"),  # Salesforce limits: wait, retry
    ErrorRule(Retriable, code="UNABLE_TO_LOCK_ROW"),
    ErrorRule(Retriable, code="SERVER_UNAVAILABLE"),
)

_OTHERWISE = ErrorRule(Permanent)


def from_http(
    system: str,
    status: int,
    message: str,
    *,
    code: str | None = None,
    retry_after: float | None = None,
    detail: Any = None,
    method: str | None = None,
    endpoint: str | None = None,
    table: Sequence[ErrorRule] = HTTP_ERRORS,
) -> BridgeError:
    """Classify an HTTP error answer by the first row of ``table`` that matches it."""
    rule = next(
        (r for r in table if r.matches(status, code, message, method, endpoint)), _OTHERWISE
    )
    known: dict[str, Any] = {
        "system": system,
        "code": rule.as_code or code,
        "status": status,
        "detail": detail,
    }
    if issubclass(rule.branch, Retriable):
        return rule.branch(rule.reason or message, retry_after=retry_after, **known)
    return rule.branch(rule.reason or message, **known)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; dates are rare here)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def from_transport(system: str, exc: Exception) -> BridgeError:
    """Classify a failure below HTTP (requests' exceptions).

    A connection that failed before anything was sent is safe to retry; one that broke after
    the request went out (read time-out, connection dropped mid-answer) may have taken effect,
    so a create must look before it retries.
    """
    import requests  # noqa: PLC0415 - keep this module importable without requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Retriable(f"connect time-out: {exc}", system=system)
    if isinstance(exc, requests.exceptions.SSLError):
        return Permanent(f"TLS failure: {exc}", system=system)
    if isinstance(exc, requests.exceptions.ConnectionError) and _before_send(exc):
        return Retriable(f"connection failed: {exc}", system=system)
    if isinstance(
        exc,
        requests.exceptions.ReadTimeout
        | requests.exceptions.ConnectionError
        | requests.exceptions.ChunkedEncodingError,
    ):
        return OutcomeUnknown(f"no complete answer: {type(exc).__name__}", system=system)
    if isinstance(exc, requests.exceptions.RequestException):
        return Retriable(f"{type(exc).__name__}: {exc}", system=system)
    return Permanent(f"{type(exc).__name__}: {exc}", system=system)


def _before_send(exc: Exception) -> bool:
    """True when the connection failed while connecting (nothing reached the server)."""
    text = repr(exc)
    return any(
        marker in text
        for marker in ("NewConnectionError", "Connection refused", "Name or service not known")
    )


# -- gRPC (the Salesforce Pub/Sub API) ----------------------------------------------------
# A failed call gives a status name (``UNAVAILABLE``) and, from Salesforce, an ``error-code``
# trailer; the first row matching both wins, as for HTTP (``status`` unused).

# The trailer of a replay id that is invalid or outside retention.
REPLAY_ID_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"


@dataclass(frozen=True)
class GrpcRule:
    branch: type[BridgeError]
    status: str | None = None  # grpc.StatusCode name
    error_code: str | None = None  # the ``error-code`` trailer
    as_code: str | None = None

    def matches(self, status: str, error_code: str | None) -> bool:
        return (self.status is None or self.status == status) and (
            self.error_code is None or self.error_code == error_code
        )


GRPC_ERRORS: tuple[GrpcRule, ...] = (
    # the stored position is refused: catch up by reading, then start from the newest
    GrpcRule(Permanent, error_code=REPLAY_ID_CORRUPTED, as_code="replay_refused"),
    # the token expired or was revoked: a new token, then subscribe again
    GrpcRule(Retriable, status="UNAUTHENTICATED", as_code="unauthenticated"),
    *(
        GrpcRule(Retriable, status=status)
        for status in (
            "UNAVAILABLE",
            "DEADLINE_EXCEEDED",
            "RESOURCE_EXHAUSTED",
            "ABORTED",
            "INTERNAL",
            "UNKNOWN",
            "CANCELLED",
        )
    ),
    # a channel that does not exist or that the user may not read: a setting to fix
    GrpcRule(ConfigError, status="NOT_FOUND"),
    GrpcRule(ConfigError, status="PERMISSION_DENIED"),
)


def from_grpc(
    system: str, status: str, message: str, *, error_code: str | None = None
) -> BridgeError:
    """Classify a failed gRPC call by the first row of ``GRPC_ERRORS`` that matches it."""
    rule = next((r for r in GRPC_ERRORS if r.matches(status, error_code)), None)
    branch = rule.branch if rule is not None else Permanent
    code = (rule.as_code if rule is not None else None) or error_code or status
    return branch(message, system=system, code=code, detail={"grpc_status": status})
