"""The bridge's error taxonomy.

Errors are data: every failure that crosses an adapter boundary is mapped, once, to one of
three branches, and the dispatcher and intake act on the branch, never on the client's
exception type.

- ``Retriable``: try again later (429, 5xx, time-outs, dropped connections); carries
  ``retry_after`` in seconds when the server said how long to wait.
- ``Permanent``: will never succeed as sent (validation errors, 4xx other than 429);
  the command is dead-lettered with the reason.
- ``Skippable``: nothing to do (the target is already in the wanted state, an event for
  something the bridge does not route); recorded and passed over.
"""

from __future__ import annotations

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


# The one table from an HTTP answer to an error branch. Adapters turn their client's
# exception into (status, code, message) and call ``from_http``; nothing else decides.
_RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_SKIPPABLE_CODES = frozenset(
    {
        # Salesforce: the record is already gone; deleting it again is not a failure.
        "ENTITY_IS_DELETED",
    }
)
_RETRIABLE_CODES = frozenset(
    {
        "REQUEST_LIMIT_EXCEEDED",  # Salesforce daily/concurrent limit: wait, then retry
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
    }
)


def from_http(
    system: str,
    status: int,
    message: str,
    *,
    code: str | None = None,
    retry_after: float | None = None,
    detail: Any = None,
) -> BridgeError:
    """Classify an HTTP error answer: retriable, skippable or permanent."""
    if code in _SKIPPABLE_CODES:
        return Skippable(message, system=system, code=code, status=status, detail=detail)
    if status in _RETRIABLE_STATUS or code in _RETRIABLE_CODES:
        return Retriable(
            message,
            system=system,
            code=code,
            status=status,
            retry_after=retry_after,
            detail=detail,
        )
    return Permanent(message, system=system, code=code, status=status, detail=detail)


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
