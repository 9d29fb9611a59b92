"""The console's door: the credential from the settings, compared in constant time; 401
with a challenge for anything else; settings that enable the console without a
credential are refused, naming the variables."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from pydantic import SecretStr

from bridge.app.settings import load_settings
from bridge.console.auth import Credentials, RequireCredentials
from bridge.errors import ConfigError

TOKEN = SecretStr("t0ken")
BOTH = Credentials(token=TOKEN, username="ops", password=SecretStr("pa:ss"))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("credentials", "header", "accepted"),
    [
        (BOTH, "Bearer t0ken", True),
        (BOTH, "bearer t0ken", True),  # the scheme is case-insensitive
        (BOTH, "Bearer t0ken2", False),
        (BOTH, "Bearer ", False),
        (BOTH, basic("ops", "pa:ss"), True),  # a colon in the password is the password's
        (BOTH, basic("ops", "pa"), False),
        (BOTH, basic("op", "pa:ss"), False),
        (BOTH, "Basic not-base64!", False),
        (BOTH, "Basic " + base64.b64encode(b"no-colon").decode(), False),
        (BOTH, "Digest x", False),
        (Credentials(token=TOKEN), basic("ops", "pa:ss"), False),  # basic not configured
        (Credentials(username="ops", password=SecretStr("pa:ss")), "Bearer t0ken", False),
    ],
)
def test_credentials(credentials: Credentials, header: str, accepted: bool) -> None:
    assert credentials.accepts(header) is accepted


def test_no_credential_no_console() -> None:
    with pytest.raises(ValueError, match="token or a username and password"):
        Credentials(username="ops")


def _call(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes]]:
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"page"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    asyncio.run(RequireCredentials(inner if app is None else app, BOTH)(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"])


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([], 401),
        ([(b"authorization", b"Bearer wrong")], 401),
        ([(b"authorization", b"Bearer t0ken")], 200),
        ([(b"authorization", basic("ops", "pa:ss").encode())], 200),
    ],
)
def test_the_door(headers: list[tuple[bytes, bytes]], status: int) -> None:
    got, answer = _call(None, headers)
    assert got == status
    if status == 401:
        assert answer[b"www-authenticate"] == b'Basic realm="bridge console", charset="UTF-8"'


@pytest.mark.parametrize(
    ("console", "problem"),
    [
        ({"enabled": True}, "BRIDGE_CONSOLE__TOKEN or BRIDGE_CONSOLE__USERNAME"),
        ({"enabled": True, "username": "ops"}, "BRIDGE_CONSOLE__PASSWORD: required"),
        ({"enabled": True, "password": "x"}, "BRIDGE_CONSOLE__USERNAME: required"),
        ({"enabled": True, "token": "t"}, None),
        ({"username": "ops", "password": "p"}, None),
    ],
)
def test_console_settings(console: dict[str, Any], problem: str | None) -> None:
    settings = load_settings(env_file=None, console=console)
    assert settings.console.host == "127.0.0.1"  # loopback unless asked
    if problem is None:
        assert settings.require_console() is settings.console
    else:
        with pytest.raises(ConfigError, match=problem):
            settings.require_console()


def test_the_console_is_off_and_its_secrets_masked_by_default() -> None:
    settings = load_settings(env_file=None, console={"token": "xyzzy-42"})
    assert settings.console.enabled is False
    assert "xyzzy-42" not in repr(settings.console)
