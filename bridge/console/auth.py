"""The console's one door: every request carries the configured bearer token or basic
credentials, compared in constant time; anything else gets 401 and nothing else."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

REALM = "bridge console"


@dataclass(frozen=True)
class Credentials:
    """What a request must present: a bearer token, basic credentials, or either."""

    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None

    def __post_init__(self) -> None:
        if self.token is None and (self.username is None or self.password is None):
            raise ValueError("the console needs a token or a username and password")

    def accepts(self, authorization: str) -> bool:
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token is not None:
            return _same(value.strip(), self.token.get_secret_value())
        if scheme == "basic" and self.username is not None and self.password is not None:
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, sep, password = decoded.partition(":")
            # both compared whatever the first says: the time tells nothing about either
            user_ok = _same(user, self.username)
            password_ok = _same(password, self.password.get_secret_value())
            return bool(sep) and user_ok and password_ok
        return False

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate header: basic first, so a browser asks for a login."""
        if self.username is not None:
            return f'Basic realm="{REALM}", charset="UTF-8"'
        return f'Bearer realm="{REALM}"'


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


UNAUTHORIZED = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>401 Unauthorized</title>"
    b"<h1>401 Unauthorized</h1><p>The bridge console needs its credential "
    b"(a bearer token or the basic login from the bridge's settings).</p></html>"
)


class RequireCredentials:
    """ASGI middleware: pass a request with the credential on, answer 401 otherwise."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        if given and self.credentials.accepts(given):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"www-authenticate", self.credentials.challenge.encode("latin-1")),
                    (b"cache-control", b"no-store"),
                    (b"content-length", str(len(UNAUTHORIZED)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": UNAUTHORIZED})
