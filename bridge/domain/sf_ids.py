"""Salesforce record ids: 15 case-sensitive characters, and the 3-character case-safe
suffix that makes the 18-character form. Ids compare in their 18-character form."""

from __future__ import annotations

import re
from functools import lru_cache

_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15 = re.compile(r"^[0-9A-Za-z]{15}$")
_ID18 = re.compile(r"^[0-9A-Za-z]{18}$")


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


@lru_cache(maxsize=65536)
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


def is_valid(record_id: str) -> bool:
    try:
        to18(record_id)
    except ValueError:
        return False
    return True
