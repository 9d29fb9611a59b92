"""The sandbox Salesforce org as served: REST instance host and Interaction Service (SCRT) host.

Both hosts run over HTTPS on loopback with the sandbox CA, behind ``SandboxMiddleware``
(fault injection, call counters). The REST host also carries the OAuth token endpoint and
the ``/__sandbox/`` control surface.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge_sandbox.salesforce import control, interaction_api
from bridge_sandbox.salesforce.auth import DEFAULT_TOKEN_TTL, OAuth, generate_jwt_key_pair
from bridge_sandbox.salesforce.cometd import StreamingApi
from bridge_sandbox.salesforce.omni import OmniChannel
from bridge_sandbox.salesforce.pubsub import DEFAULT_KEEPALIVE_INTERVAL, PubSubApi, PubSubServer
from bridge_sandbox.salesforce.rest import (
    DEFAULT_DAILY_API_LIMIT,
    DEFAULT_PAGE_SIZE,
    RestApi,
)
from bridge_sandbox.salesforce.store import Org
from bridge_sandbox.seed import SF_INTEGRATION_USER_ID, SF_INTEGRATION_USERNAME
from bridge_sandbox.serving import (
    Clock,
    Counters,
    Fault,
    Faults,
    SandboxCA,
    SandboxMiddleware,
    ServedApp,
)

STATE_FILE = "salesforce.json"

# What an injected fault answers on the REST host when the rule names no error code.
_FAULT_CODES = {
    401: ("INVALID_SESSION_ID", "Session expired or invalid"),
    403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    404: ("NOT_FOUND", "The requested resource does not exist"),
    429: ("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
    503: ("SERVER_UNAVAILABLE", "Server temporarily unavailable"),
}


def render_rest_error(status: int, fault: Fault) -> Response:
    """An injected fault in the REST API's error array form."""
    code, message = _FAULT_CODES.get(status, ("UNKNOWN_EXCEPTION", "An unexpected error occurred"))
    return JSONResponse(
        [
            {
                "message": f"{message} (injected fault {fault.id})",
                "errorCode": fault.error_code or code,
                "fields": [],
            }
        ],
        status_code=status,
    )


class _StripTrailingSlash:
    """``/services/data/v62.0/query/`` and ``.../query`` are the same resource (no redirect)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = dict(scope)
            scope["path"] = path.rstrip("/") or "/"
        await self.app(scope, receive, send)


class SalesforceSandbox:
    """An emulated org: records, Omni-Channel, OAuth, REST API, Interaction Service API."""

    def __init__(
        self,
        *,
        ca: SandboxCA | None = None,
        clock: Clock | None = None,
        port: int = 0,
        scrt_port: int = 0,
        state_dir: Path | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        daily_api_limit: int = DEFAULT_DAILY_API_LIMIT,
        token_ttl: timedelta = DEFAULT_TOKEN_TTL,
        pubsub_port: int = 0,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
    ) -> None:
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="bridge-sf-sandbox-"))
        self.ca = ca or SandboxCA(self.state_dir / "ca")
        self.clock = clock or Clock()
        self.org = Org(self.clock)
        self.username = SF_INTEGRATION_USERNAME
        self.client_id = "3MVG9" + secrets.token_urlsafe(60).replace("-", "A").replace("_", "B")
        self.client_secret = secrets.token_hex(32).upper()
        key_pair = generate_jwt_key_pair(self.state_dir / "jwt")
        self.jwt_key_file = key_pair.key_file
        self.jwt_cert_file = key_pair.cert_file
        self.oauth = OAuth(
            self.org,
            client_id=self.client_id,
            client_secret=self.client_secret,
            key_pair=key_pair,
            run_as_user_id=SF_INTEGRATION_USER_ID,
            token_ttl=token_ttl,
        )
        self.rest = RestApi(
            self.org,
            self.oauth,
            page_size=page_size,
            daily_api_limit=daily_api_limit,
            before_request=self._apply_due,
        )
        self.rest_faults = Faults()
        self.scrt_faults = Faults()
        self.counters = Counters()
        self.scrt_counters = Counters()
        self.clock.on_advance(self.org.purge)

        self.omni = OmniChannel(self)
        self.org.add_behaviour(self.omni)
        self.control = control.OmniControl(self)
        # the Pub/Sub API (gRPC) on the org's change log
        self.pubsub = PubSubApi(self, keepalive_interval=keepalive_interval)
        self._pubsub_host = PubSubServer(self.pubsub, self.ca, port=pubsub_port)
        # PushTopics and the CometD endpoint (Streaming API)
        self.streaming = StreamingApi(self)

        rest_app = Starlette(
            routes=[
                *self.oauth.routes(),
                *self.rest.routes(),
                *control.routes(self),
                *self.streaming.routes(),
                *self.streaming.control_routes(),
            ],
            exception_handlers={
                HTTPException: self.rest.http_exception,
                Exception: self.rest.http_exception,
            },
        )
        self._rest_host = ServedApp(
            _StripTrailingSlash(
                SandboxMiddleware(
                    rest_app,
                    router=rest_app.router,
                    faults=self.rest_faults,
                    counters=self.counters,
                    render_error=render_rest_error,
                )
            ),
            self.ca,
            port=port,
            name="salesforce-rest",
        )
        scrt_app = Starlette(routes=interaction_api.routes(self))
        self._scrt_host = ServedApp(
            _StripTrailingSlash(
                SandboxMiddleware(
                    scrt_app,
                    router=scrt_app.router,
                    faults=self.scrt_faults,
                    counters=self.scrt_counters,
                    render_error=interaction_api.render_error,
                )
            ),
            self.ca,
            port=scrt_port,
            name="salesforce-scrt",
        )
        self.oauth.instance_url = self.instance_url

    def _apply_due(self) -> None:
        """Time-outs fall due on the sandbox clock; every API call applies those that did."""
        self.omni.apply_due()

    # -- facts ------------------------------------------------------------------------
    @property
    def instance_url(self) -> str:
        return self._rest_host.url

    @property
    def scrt_url(self) -> str:
        return self._scrt_host.url

    @property
    def pubsub_url(self) -> str:
        """The Pub/Sub API endpoint as ``host:port``."""
        return self._pubsub_host.url

    @property
    def ca_bundle(self) -> Path:
        return self.ca.ca_bundle

    @property
    def org_id(self) -> str:
        return self.org.org_id

    def issue_token(self) -> str:
        """An access token of the integration user (as the client-credentials flow gives)."""
        return self.oauth.issue().value

    def facts(self) -> dict[str, Any]:
        """What a client needs to connect (no secret is left out: this is a sandbox)."""
        return {
            "instance_url": self.instance_url,
            "scrt_url": self.scrt_url,
            "pubsub_url": self.pubsub_url,
            "ca_bundle": str(self.ca_bundle),
            "org_id": self.org_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "username": self.username,
            "jwt_key_file": str(self.jwt_key_file),
            "jwt_cert_file": str(self.jwt_cert_file),
            "token_url": f"{self.instance_url}/services/oauth2/token",
            "api_version": "62.0",
        }

    def write_state(self, directory: Path | None = None) -> Path:
        target = Path(directory or self.state_dir)
        target.mkdir(parents=True, exist_ok=True)
        path = target / STATE_FILE
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(self.facts(), indent=2) + "\n")
        partial.chmod(0o600)
        partial.replace(path)  # readers never see half a file
        return path

    # -- lifecycle --------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the seed, no faults, zero counters and API usage; tokens stay valid."""
        self.org.reset()
        self.rest.reset()
        self.pubsub.reset()
        for faults in (self.rest_faults, self.scrt_faults):
            faults.clear()
        for counters in (self.counters, self.scrt_counters):
            counters.reset()

    def start(self) -> SalesforceSandbox:
        self._rest_host.start()
        try:
            self._scrt_host.start()
            self._pubsub_host.start()
        except BaseException:
            self._scrt_host.stop()
            self._rest_host.stop()
            raise
        return self

    def stop(self) -> None:
        self._pubsub_host.stop()
        self._scrt_host.stop()
        self._rest_host.stop()

    def __enter__(self) -> SalesforceSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
