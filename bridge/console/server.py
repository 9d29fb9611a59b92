"""Serving an ASGI app from a background thread (``bridge console`` and the tests)."""

from __future__ import annotations

import threading
import time

import uvicorn
from starlette.types import ASGIApp


class Server:
    """uvicorn on a thread of its own; ``port`` 0 takes a free one (read it after start)."""

    def __init__(self, app: ASGIApp, *, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="console", daemon=True)
        self.host = host
        self.port = port

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"console did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        if self.port == 0:
            sockets = [s for server in self._server.servers for s in server.sockets]
            self.port = int(sockets[0].getsockname()[1])

    def wait(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
