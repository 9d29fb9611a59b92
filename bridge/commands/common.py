"""What every command shares: the global ``--debug`` flag and output helpers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _State:
    debug: bool = False


state = _State()
