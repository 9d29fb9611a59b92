"""What a round of work did, as counters that add up."""

from __future__ import annotations

from dataclasses import fields
from typing import Self


class Counts:
    """A dataclass of counters: ``add`` sums every int field (and extends list fields)."""

    def add(self, other: Self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, int):
                setattr(self, f.name, mine + theirs)
            elif isinstance(mine, list):
                mine.extend(theirs)
