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
