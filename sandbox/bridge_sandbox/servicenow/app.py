"""The sandbox ServiceNow instance served over HTTPS: Table API, Batch API, OAuth, AWA and
the control surface, behind authentication, rate limits, faults and counters."""

from __future__ import annotations

import json
import logging
import os
from http import HTTPStatus
from pathlib import Path
from types import TracebackType

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge_sandbox import seed
from bridge_sandbox.servicenow import awa, batch_api, control, table_api
from bridge_sandbox.servicenow.auth import Authenticator, OAuthClient
from bridge_sandbox.servicenow.provider import Deliveries
from bridge_sandbox.servicenow.ratelimit import RateLimitExceeded, RateLimits
from bridge_sandbox.servicenow.store import (
    INTEGRATION_PASSWORD,
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
    Instance,
    ServiceNowApiError,
)
from bridge_sandbox.serving import (
    CONTROL_PREFIX,
    Clock,
    Counters,
    Fault,
    Faults,
    SandboxCA,
    SandboxMiddleware,
    ServedApp,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024
TOKEN_PATH = "/oauth_token.do"  # noqa: S105 - a path, not a secret
STATE_FILE = "servicenow.json"
# What the instance calls itself (``dev12345`` on a developer instance): the deliveries'
# ``instance`` field.
INSTANCE_NAME = "sandbox"
_JSON_TYPES = ("application/json", "application/*", "*/*")


def _unknown_resource() -> ServiceNowApiError:
    return ServiceNowApiError(400, "Requested URI does not represent any resource", None)


def render_fault(status: int, fault: Fault) -> Response:
    """An injected fault's answer in the instance's error shape."""
    if status == 429:
        message = "Rate limit exceeded"
    else:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = "Error"
    return ServiceNowApiError(status, message, fault.error_code or "Injected fault").response()


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return _unknown_resource().response()
    if status == 405:
        return ServiceNowApiError(
            405, "Method not Supported", f"{request.method} is not supported here"
        ).response()
    return ServiceNowApiError(status, HTTPStatus(status).phrase, None).response()


async def _on_api_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RateLimitExceeded):
        return exc.response(exc.headers)
    if isinstance(exc, ServiceNowApiError):
        return exc.response()
    return await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    return ServiceNowApiError(500, "Internal server error", type(exc).__name__).response()


class Gate:
    """Authentication, rate limits, content negotiation and body size for the API routes.

    ``/oauth_token.do`` and the control surface are open; everything else needs basic
    auth or a bearer token.
    """

    def __init__(self, app: ASGIApp, sandbox: ServiceNowSandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(CONTROL_PREFIX) or path == TOKEN_PATH:
            await self.app(scope, receive, send)
            return
        try:
            extra = self._admit(scope)
        except RateLimitExceeded as exc:
            await exc.response(exc.headers)(scope, receive, send)
            return
        except ServiceNowApiError as exc:
            headers = (
                {"WWW-Authenticate": 'BASIC realm="Service-now"'} if exc.status == 401 else None
            )
            await exc.response(headers)(scope, receive, send)
            return

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if extra:
                    message = dict(message)
                    message["headers"] = [
                        *message.get("headers", []),
                        *((k.lower().encode(), v.encode()) for k, v in extra.items()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Starlette answered the 500 already and re-raises; swallowing it here keeps
            # the client's keep-alive connection usable.
            log.exception("servicenow sandbox: %s %s failed", scope["method"], path)
            if not started:
                error = ServiceNowApiError(500, "Internal server error", None)
                await error.response()(scope, receive, send)

    def _admit(self, scope: Scope) -> dict[str, str]:
        """Check one request; the extra answer headers (rate limit) if it may proceed."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        sandbox = self.sandbox
        user = sandbox.auth.user_of(headers.get("authorization"))
        scope.setdefault("state", {})["sn_user"] = user
        verdict = sandbox.rate_limits.check(
            scope["method"], scope["path"], user, lambda: sandbox.instance.user_roles(user)
        )
        accept = headers.get("accept", "application/json").lower()
        if not any(kind in accept for kind in _JSON_TYPES):
            raise ServiceNowApiError(
                406, "Not Acceptable", f"Accept {accept} is not supported; use application/json"
            )
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > sandbox.max_body_bytes:
            raise table_api.body_too_large(sandbox.max_body_bytes)
        sandbox.instance.on_request()
        return {} if verdict is None else verdict.headers


class ServiceNowSandbox:
    """One emulated ServiceNow instance on ``https://127.0.0.1:<port>``."""

    def __init__(
        self,
        *,
        ca: SandboxCA | None = None,
        clock: Clock | None = None,
        port: int = 0,
        state_dir: Path | None = None,
        strict_queries: bool = True,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.ca = ca or SandboxCA()
        self.clock = clock or Clock()
        self.state_dir = state_dir
        self.strict_queries = strict_queries
        self.max_body_bytes = max_body_bytes
        self.instance = Instance(self.clock)
        # The provider subflow trusts the sandbox CA unless told otherwise (a bridge
        # receiver may serve a certificate of that CA: ``ca.cert_file``).
        self.deliveries = Deliveries(
            self.instance, self.clock, instance_name=INSTANCE_NAME, default_ca=self.ca.ca_bundle
        )
        self.awa = awa.Awa(self.instance)
        self.instance.add_behaviour(self.awa)
        self.auth = Authenticator(self.instance, self.clock)
        self.auth.register_client(
            OAuthClient(OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, seed.SN_INTEGRATION_USER_SYS_ID)
        )
        self.faults = Faults()
        self.counters = Counters()
        self.rate_limits = RateLimits(self.clock)
        self.username = seed.SN_INTEGRATION_USER
        self.password = INTEGRATION_PASSWORD
        self.oauth_client_id = OAUTH_CLIENT_ID
        self.oauth_client_secret = OAUTH_CLIENT_SECRET
        self.control = control.AwaControl(self)
        self.batch = batch_api.BatchApi(self)
        starlette = Starlette(
            routes=[
                Route(TOKEN_PATH, self.auth.token_endpoint, methods=["POST"]),
                *table_api.routes(self),
                *self.batch.routes(),
                *awa.routes(self),
                *control.routes(self),
            ],
            exception_handlers={
                HTTPException: _on_http_exception,
                ServiceNowApiError: _on_api_error,
                Exception: _on_unexpected,
            },
        )
        self.asgi: ASGIApp = SandboxMiddleware(
            Gate(starlette, self),
            router=starlette.router,
            faults=self.faults,
            counters=self.counters,
            render_error=render_fault,
        )
        self._served = ServedApp(self.asgi, self.ca, port=port, name="servicenow-sandbox")

    @property
    def instance_url(self) -> str:
        return self._served.url

    @property
    def port(self) -> int:
        return self._served.port

    @property
    def ca_bundle(self) -> Path:
        return self.ca.ca_bundle

    def start(self) -> ServiceNowSandbox:
        self._served.start()
        if self.state_dir is not None:
            self.write_state(self.state_dir)
        return self

    def stop(self) -> None:
        self.deliveries.stop()
        self._served.stop()

    def __enter__(self) -> ServiceNowSandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to the seed: data, pending AWA deadlines, tokens, rate limits, faults,
        counters and the delivery log, queue and faults (the clock keeps its time, the
        provider endpoint stays configured)."""
        with self.instance.lock:
            self.instance.reset()
            self.awa.reset()
            self.deliveries.reset()
        self.auth.revoke_all()
        self.rate_limits.clear()
        self.faults.clear()
        self.counters.reset()

    def state(self) -> dict[str, object]:
        """How to reach this instance (what ``servicenow.json`` holds)."""
        return {
            "instance_url": self.instance_url,
            "ca_bundle": str(self.ca_bundle),
            "username": self.username,
            "password": self.password,
            "oauth_client_id": self.oauth_client_id,
            "oauth_client_secret": self.oauth_client_secret,
            "oauth_token_url": f"{self.instance_url}{TOKEN_PATH}",
        }

    def write_state(self, directory: Path) -> Path:
        """``servicenow.json``, written whole or not at all (readers poll for it; it holds
        the credentials: mode 0600)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / STATE_FILE
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(self.state(), indent=2) + "\n", encoding="utf-8")
        partial.chmod(0o600)
        partial.replace(path)
        return path
