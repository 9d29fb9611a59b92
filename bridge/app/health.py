"""The daemon's HTTP endpoint: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from bridge.metrics import REGISTRY


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str = ""


ReadinessProbe = Callable[[], Mapping[str, Check]]

# A stream may be closed this long (reconnecting, resubscribing) before /readyz says so.
DEFAULT_STREAM_DOWN_AFTER = 120.0


class StreamState(Protocol):
    """What readiness reads of a change stream's status (``bridge.flow.streams``)."""

    connected: bool
    down_since: float | None  # monotonic
    error: str | None


def stream_check(
    state: StreamState, *, down_after: float = DEFAULT_STREAM_DOWN_AFTER, now: float | None = None
) -> Check:
    """Ready while the subscription is open or has been closed for at most ``down_after``
    seconds (a reconnect in progress); not ready past that, with why it is down."""
    if state.connected:
        return Check(True, "subscribed")
    now = time.monotonic() if now is None else now
    down_for = 0.0 if state.down_since is None else now - state.down_since
    why = state.error or "not subscribed yet"
    if down_for <= down_after:
        return Check(True, f"reconnecting for {down_for:.0f}s ({why})")
    return Check(False, f"stream down for {down_for:.0f}s (more than {down_after:.0f}s): {why}")


def health_app(readiness: ReadinessProbe, console: ASGIApp | None = None) -> Starlette:
    """The endpoint's routes; ``console`` (when enabled) is served under ``/console/``."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def readyz(request: Request) -> Response:
        checks = readiness()
        ready = all(check.ok for check in checks.values())
        body = {
            "status": "ready" if ready else "not ready",
            "checks": {
                name: {"ok": check.ok, "detail": check.detail} for name, check in checks.items()
            },
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]
    if console is not None:
        routes.append(Mount("/console", app=console))
    return Starlette(routes=routes)


class HealthServer:
    """Serves ``health_app`` from a background thread (plain HTTP: it sits behind the
    container platform's probes and the Prometheus scraper)."""

    def __init__(
        self, readiness: ReadinessProbe, *, host: str, port: int, console: ASGIApp | None = None
    ) -> None:
        config = uvicorn.Config(
            health_app(readiness, console),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="health", daemon=True)
        self.host = host
        self.port = port

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"health endpoint did not start on {self.host}:{self.port}")
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=timeout)
