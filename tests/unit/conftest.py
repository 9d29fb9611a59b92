"""Unit tests are pure: the engine, the flow over the in-memory ledger, settings, tables.
A test here that opens a socket fails at once (such a test belongs in ``contract``,
``ledger`` or ``e2e``)."""

from __future__ import annotations

import socket
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, *args: Any) -> None:
        raise RuntimeError(f"unit tests open no sockets (connect to {args})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
