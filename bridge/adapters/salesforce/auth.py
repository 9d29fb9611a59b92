"""OAuth 2.0 for the bridge's Salesforce connection: client credentials or JWT bearer.

simple-salesforce builds its token URL from a ``*.salesforce.com`` domain, which cannot
express a My Domain login host on another port or a sandbox; the bridge fetches tokens
itself and hands simple-salesforce a session id and instance URL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import requests
from pydantic import SecretStr

from bridge.adapters.http import error_of
from bridge.errors import ConfigError, Permanent, from_transport

SYSTEM = "salesforce"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PRODUCTION_AUDIENCE = "https://login.salesforce.com"
SANDBOX_AUDIENCE = "https://test.salesforce.com"


def jwt_audience(login_url: str) -> str:
    """The ``aud`` claim Salesforce expects for a token endpoint: its login host even when
    the token is fetched from a My Domain; any other host (the sandbox org) names itself."""
    host = (urlsplit(login_url).hostname or "").lower()
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return SANDBOX_AUDIENCE
    if host == "salesforce.com" or host.endswith(".salesforce.com"):
        return PRODUCTION_AUDIENCE
    return login_url.rstrip("/")


@dataclass(frozen=True)
class Token:
    access_token: SecretStr
    instance_url: str
    issued_at: float
    # the org the token is for, from the identity URL (``.../id/<org id>/<user id>``)
    org_id: str | None = None


class SalesforceTokens:
    """Fetches and caches an access token; ``refresh`` after a 401 ``INVALID_SESSION_ID``."""

    def __init__(
        self,
        session: requests.Session,
        *,
        login_url: str,
        client_id: str,
        client_secret: SecretStr | None = None,
        username: str | None = None,
        jwt_key_file: Path | None = None,
    ) -> None:
        if (client_secret is None) == (jwt_key_file is None):
            raise ConfigError(
                "Salesforce auth needs exactly one of a client secret "
                "(BRIDGE_SALESFORCE__CLIENT_SECRET) or a JWT key file "
                "(BRIDGE_SALESFORCE__JWT_KEY_FILE)"
            )
        if jwt_key_file is not None and not username:
            raise ConfigError("JWT bearer needs BRIDGE_SALESFORCE__USERNAME (the subject)")
        self._session = session
        self._login_url = login_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._username = username
        self._jwt_key_file = jwt_key_file
        self._lock = threading.Lock()
        self._token: Token | None = None

    def token(self) -> Token:
        with self._lock:
            if self._token is None:
                self._token = self._fetch()
            return self._token

    def refresh(self, stale: Token | None = None) -> Token:
        """A new token, unless another thread already replaced ``stale``."""
        with self._lock:
            if self._token is None or self._token is stale or stale is None:
                self._token = self._fetch()
            return self._token

    def _grant(self) -> dict[str, str]:
        if self._client_secret is not None:
            return {
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._client_secret.get_secret_value(),
            }
        assert self._jwt_key_file is not None
        try:
            key = self._jwt_key_file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read JWT key file {self._jwt_key_file}: {exc}") from exc
        claims = {
            "iss": self._client_id,
            "sub": self._username,
            "aud": jwt_audience(self._login_url),
            "exp": int(time.time()) + 180,
        }
        return {"grant_type": JWT_BEARER, "assertion": jwt.encode(claims, key, "RS256")}

    def _fetch(self) -> Token:
        url = f"{self._login_url}/services/oauth2/token"
        try:
            response = self._session.post(url, data=self._grant())
        except requests.RequestException as exc:
            raise from_transport(SYSTEM, exc) from exc
        if response.status_code != 200:
            raise error_of(SYSTEM, response, "OAuth token request failed")
        try:
            body = response.json()
            return Token(
                access_token=SecretStr(body["access_token"]),
                instance_url=body["instance_url"],
                issued_at=time.time(),
                org_id=_org_of(body.get("id")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise Permanent(
                f"OAuth answer without an access token and instance URL ({exc!r})", system=SYSTEM
            ) from exc


def _org_of(identity: object) -> str | None:
    """The org id of an identity URL ``https://login.salesforce.com/id/<org>/<user>``."""
    if not isinstance(identity, str):
        return None
    parts = urlsplit(identity).path.strip("/").split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "id" else None
