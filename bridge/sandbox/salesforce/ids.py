"""Salesforce record ids: 3-character key prefix, 15 case-sensitive characters, and the
3-character case-safe suffix that makes the 18-character form."""

from __future__ import annotations

import re

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15 = re.compile(r"^[0-9A-Za-z]{15}$")
_ID18 = re.compile(r"^[0-9A-Za-z]{18}$")

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


def suffix(id15: str) -> str:
    """The 3-character case-safe suffix of a 15-character id."""
    out = []
    for chunk in range(3):
        flags = 0
        for pos, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                flags |= 1 << pos
        out.append(_SUFFIX[flags])
    return "".join(out)


def to18(record_id: str) -> str:
    """The 18-character form of a 15- or 18-character id; ValueError if it is neither."""
    if _ID18.match(record_id):
        if suffix(record_id[:15]) != record_id[15:].upper():
            raise ValueError(f"invalid id: {record_id}")
        return record_id[:15] + suffix(record_id[:15])
    if _ID15.match(record_id):
        return record_id + suffix(record_id)
    raise ValueError(f"invalid id: {record_id}")


def to15(record_id: str) -> str:
    return to18(record_id)[:15]


def make_id(prefix: str, number: int, pod: str = "5g") -> str:
    """The ``number``-th 18-character id with ``prefix`` (deterministic for seeds)."""
    digits = []
    for _ in range(9):
        number, rem = divmod(number, 62)
        digits.append(_BASE62[rem])
    body = prefix + pod + "0" + "".join(reversed(digits))
    return body + suffix(body)


def is_valid(record_id: str) -> bool:
    try:
        to18(record_id)
    except ValueError:
        return False
    return True
