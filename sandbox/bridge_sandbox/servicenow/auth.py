"""Who is calling: basic auth, OAuth bearer tokens, and the ``/oauth_token.do`` endpoint.

Tokens expire on the sandbox clock, so a test can age a token without sleeping.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from bridge_sandbox.servicenow.store import Instance, ServiceNowApiError, json_response
from bridge_sandbox.servicenow.table_api import read_body
from bridge_sandbox.serving import Clock

ACCESS_TOKEN_SECONDS = 1800
REFRESH_TOKEN_SECONDS = 100 * 24 * 3600
_MAX_FORM_BYTES = 65_536


def not_authenticated() -> ServiceNowApiError:
    return ServiceNowApiError(401, "User Not Authenticated", "Required to provide Auth information")


@dataclass(frozen=True)
class OAuthClient:
    """An OAuth application registry entry; client-credentials tokens act as ``user``."""

    client_id: str
    client_secret: str
    user: str  # sys_user.sys_id of the OAuth application user


@dataclass(frozen=True)
class _Token:
    user: str
    client_id: str
    expires_at: float


class OAuthError(Exception):
    """An OAuth 2 error answer (``{"error", "error_description"}``)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> Response:
        return json_response(
            {"error": self.error, "error_description": self.description}, self.status
        )


class Authenticator:
    """Credentials and tokens of one instance."""

    def __init__(self, instance: Instance, clock: Clock) -> None:
        self.instance = instance
        self.clock = clock
        self._clients: dict[str, OAuthClient] = {}
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}
        self._lock = threading.Lock()

    def register_client(self, client: OAuthClient) -> None:
        with self._lock:
            self._clients[client.client_id] = client

    def revoke_all(self) -> None:
        with self._lock:
            self._access.clear()
            self._refresh.clear()

    # -- requests ------------------------------------------------------------------------

    def user_of(self, authorization: str | None) -> str:
        """The sys_user sys_id behind an ``Authorization`` header; 401 if none is valid."""
        if not authorization:
            raise not_authenticated()
        scheme, _, credentials = authorization.partition(" ")
        user: str | None = None
        if scheme.lower() == "basic":
            user = self._basic(credentials.strip())
        elif scheme.lower() == "bearer":
            user = self._bearer(credentials.strip())
        if user is None:
            raise not_authenticated()
        return user

    def _basic(self, credentials: str) -> str | None:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user_name, sep, password = decoded.partition(":")
        if not sep:
            return None
        return self.instance.check_password(user_name, password)

    def _bearer(self, token: str) -> str | None:
        with self._lock:
            found = self._access.get(token)
        if found is None or found.expires_at <= self.clock.timestamp():
            return None
        return found.user

    # -- /oauth_token.do -----------------------------------------------------------------

    async def token_endpoint(self, request: Request) -> Response:
        try:
            form = await _form(request)
            return json_response(self.grant(form, request.headers.get("authorization")))
        except OAuthError as exc:
            return exc.response()

    def grant(self, form: dict[str, str], authorization: str | None = None) -> dict[str, object]:
        """Answer one token request (password, client_credentials or refresh_token grant)."""
        client = self._client(form, authorization)
        grant_type = form.get("grant_type", "")
        if grant_type == "password":
            user = self.instance.check_password(form.get("username", ""), form.get("password", ""))
            if user is None:
                raise OAuthError(401, "server_error", "access_denied")
            return self._issue(user, client.client_id, with_refresh=True)
        if grant_type == "client_credentials":
            return self._issue(client.user, client.client_id, with_refresh=False)
        if grant_type == "refresh_token":
            with self._lock:
                found = self._refresh.get(form.get("refresh_token", ""))
            if found is None or found.expires_at <= self.clock.timestamp():
                raise OAuthError(401, "server_error", "access_denied")
            if found.client_id != client.client_id:
                raise OAuthError(401, "invalid_grant", "refresh token issued to another client")
            return self._issue(found.user, client.client_id, with_refresh=False)
        raise OAuthError(
            400, "unsupported_grant_type", f"grant_type '{grant_type}' is not supported"
        )

    def _client(self, form: dict[str, str], authorization: str | None) -> OAuthClient:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if authorization and authorization.lower().startswith("basic ") and not client_id:
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            client_id, _, secret = decoded.partition(":")
        with self._lock:
            client = self._clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, secret):
            raise OAuthError(401, "invalid_client", "client_id or client_secret is not valid")
        return client

    def _issue(self, user: str, client_id: str, *, with_refresh: bool) -> dict[str, object]:
        now = self.clock.timestamp()
        access = secrets.token_urlsafe(48)
        answer: dict[str, object] = {
            "access_token": access,
            "scope": "useraccount",
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_SECONDS - 1,
        }
        with self._lock:
            self._access[access] = _Token(user, client_id, now + ACCESS_TOKEN_SECONDS)
            if with_refresh:
                refresh = secrets.token_urlsafe(48)
                self._refresh[refresh] = _Token(user, client_id, now + REFRESH_TOKEN_SECONDS)
                answer["refresh_token"] = refresh
        return answer


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded form of a token request (parsed by hand: no multipart dependency)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        raise OAuthError(
            400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
        )
    try:
        raw = await read_body(request, max_bytes=_MAX_FORM_BYTES)
    except ServiceNowApiError:
        raise OAuthError(400, "invalid_request", "request body too large") from None
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise OAuthError(400, "invalid_request", "request body is not UTF-8") from None
