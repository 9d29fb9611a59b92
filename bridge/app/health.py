"""The daemon's HTTP endpoint: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
