"""HTTP sessions for the clients (simple-salesforce, pysnc, the Interaction Service API).

Two things requests gets wrong for us by default, fixed here once for every adapter:

- ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` in the environment silently override a
  session's ``verify`` for every request that does not pass ``verify`` itself (and the
  clients never do). The adapter below pins the configured CA bundle on every send.
- requests has no default time-out; a hung peer would hang the bridge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

DEFAULT_TIMEOUT = (5.0, 30.0)


class PinnedAdapter(HTTPAdapter):
    """Forces the session's CA bundle and a default time-out on every request."""

    def __init__(
        self,
        *,
        verify: str | bool,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        pool_maxsize: int = 32,
    ) -> None:
        super().__init__(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
        self._verify = verify
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["verify"] = self._verify
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


def make_session(
    ca_bundle: str | Path | None = None,
    *,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    pool_maxsize: int = 32,
) -> requests.Session:
    """A requests session that trusts ``ca_bundle`` (or the system store when None)."""
    session = requests.Session()
    verify: str | bool = str(ca_bundle) if ca_bundle is not None else True
    session.verify = verify
    adapter = PinnedAdapter(verify=verify, timeout=timeout, pool_maxsize=pool_maxsize)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
