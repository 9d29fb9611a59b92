"""OAuth 2.0 client credentials for the bridge's ServiceNow connection.

The token rides on the adapter's own session (``Authorization`` header), so pysnc's
GlideRecord and the bridge's Table and AWA calls all use it without knowing about it.
"""

from __future__ import annotations

import threading

import requests
from pydantic import SecretStr

from bridge.errors import Permanent, from_transport

SYSTEM = "servicenow"


class ServiceNowTokens:
    """Fetches an access token when there is none, puts it on ``session``; ``refresh``
    after a 401."""

    def __init__(
        self,
        session: requests.Session,
        instance_url: str,
        *,
        client_id: str,
        client_secret: SecretStr,
    ) -> None:
        self._session = session
        self._url = f"{instance_url.rstrip('/')}/oauth_token.do"
        self._client_id = client_id
        self._client_secret = client_secret
        self._lock = threading.Lock()
        self._token: str | None = None

    def token(self) -> str:
        with self._lock:
            if self._token is None:
                self._token = self._fetch()
            return self._token

    def refresh(self, stale: str | None = None) -> str:
        """A new token, unless another thread already replaced ``stale``."""
        with self._lock:
            if self._token is None or self._token == stale or stale is None:
                self._token = self._fetch()
            return self._token

    def _fetch(self) -> str:
        try:
            response = self._session.post(
                self._url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self._client_id,
                    "client_secret": self._client_secret.get_secret_value(),
                },
            )
            token = str(response.json()["access_token"])
        except requests.RequestException as exc:
            raise from_transport(SYSTEM, exc) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise Permanent("OAuth answer without an access_token", system=SYSTEM) from exc
        self._session.headers["Authorization"] = f"Bearer {token}"
        return token
