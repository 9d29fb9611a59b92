"""Salesforce record ids: 3-character key prefix, 15 case-sensitive characters, and the
3-character case-safe suffix that makes the 18-character form."""

from __future__ import annotations

from bridge.domain.sf_ids import is_valid, suffix, to15, to18

__all__ = ["KEY_PREFIX", "is_valid", "make_id", "suffix", "to15", "to18"]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Key prefixes of the objects the sandbox serves.
KEY_PREFIX: dict[str, str] = {
    "User": "005",
    "Group": "00G",
    "Organization": "00D",
    "Case": "500",
    "MessagingSession": "0Mw",
    "ServiceChannel": "0N9",
    "ServicePresenceStatus": "0N5",
    "UserServicePresence": "0Hn",
    "AgentWork": "0Bz",
    "PendingServiceRouting": "0JR",
    "QueueRoutingConfig": "0K9",
    "MessagingEndUser": "0PA",
    "ConnectedApplication": "0H4",
}


def make_id(prefix: str, number: int, pod: str = "5g") -> str:
    """The ``number``-th 18-character id with ``prefix`` (deterministic for seeds)."""
    digits = []
    for _ in range(9):
        number, rem = divmod(number, 62)
        digits.append(_BASE62[rem])
    body = prefix + pod + "0" + "".join(reversed(digits))
    return body + suffix(body)
