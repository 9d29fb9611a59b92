"""Shared plumbing of the emulators: per-run CA, HTTPS on loopback, a controllable clock,
fault injection per route, and counters of every call received."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trustme
import uvicorn
from starlette.responses import Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK = "127.0.0.1"


# Where the standalone sandboxes write their state (CA, env files, JSON) by default: one
# directory for both, so that they share one CA and the bridge needs one bundle.
DEFAULT_STATE_DIR = Path(".sandbox")
CA_ORGANIZATION = "Bridge Sandbox CA"


class SandboxCA:
    """A throw-away certificate authority and one server certificate for loopback.

    ``server`` names the server certificate's files, so that several sandboxes can keep
    theirs in one directory beside one CA (see ``shared``)."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        ca: trustme.CA | None = None,
        server: str = "sandbox",
    ) -> None:
        self.directory = Path(directory or tempfile.mkdtemp(prefix="bridge-sandbox-ca-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca = ca or trustme.CA(organization_name=CA_ORGANIZATION)
        self._cert = self._ca.issue_cert("localhost", LOOPBACK, "::1")
        self.ca_bundle = self.directory / "sandbox-ca.pem"
        self.cert_file = self.directory / f"{server}-server.pem"
        self.key_file = self.directory / f"{server}-server.key"
        if ca is None:
            self._ca.cert_pem.write_to_path(str(self.ca_bundle))
        _write_private(self.key_file, self._cert.private_key_pem.bytes())
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in self._cert.cert_chain_pems))

    @classmethod
    def shared(cls, directory: Path, server: str) -> SandboxCA:
        """The CA kept in ``directory``: made by the first sandbox that starts there, loaded
        by the others (under a file lock: two sandboxes may start at the same moment), so
        that one bundle (``sandbox-ca.pem``) verifies every sandbox of that directory."""
        directory = Path(directory).resolve()  # the env files name it from anywhere
        directory.mkdir(parents=True, exist_ok=True)
        bundle, key = directory / "sandbox-ca.pem", directory / "sandbox-ca.key"
        with (directory / ".ca.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if bundle.is_file() and key.is_file():
                    ca = trustme.CA.from_pem(bundle.read_bytes(), key.read_bytes())
                else:
                    ca = trustme.CA(organization_name=CA_ORGANIZATION)
                    _write_private(key, ca.private_key_pem.bytes())
                    _replace(bundle, ca.cert_pem.bytes())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return cls(directory, ca=ca, server=server)


def _replace(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` whole or not at all (a reader never sees half a file)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.chmod(mode)
    partial.replace(path)


def _write_private(path: Path, data: bytes) -> None:
    _replace(path, data, 0o600)


class Clock:
    """Sandbox time: real time plus an offset that tests advance.

    Time-outs in the emulators (push time-outs, offer time-outs, token expiry, change-log
    retention) read this clock, so a test can let an offer time out without sleeping.
    """

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = offset
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp(), tz=UTC)

    def timestamp(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> datetime:
        """Move sandbox time forward and let the emulators apply what fell due."""
        with self._lock:
            self._offset += seconds
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return self.now()

    def reset(self) -> None:
        """Back to wall time (nothing falls due by going back)."""
        with self._lock:
            self._offset = 0.0

    def on_advance(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def after(self, seconds: float) -> datetime:
        return self.now() + timedelta(seconds=seconds)


@dataclass
class Fault:
    """One injected fault. ``path`` is a regular expression searched in the request path.

    - ``status``: answer this status without processing (429 and 503 get ``Retry-After``).
    - ``latency_ms``: wait before processing.
    - ``drop``: ``"before"`` closes the connection without processing; ``"after"``
      processes the request, then closes the connection before the answer is complete
      (a time-out after the request reached the server).
    - ``probability``: chance per matching request; ``count``: how many times, then gone.
    """

    path: str = ".*"
    method: str | None = None
    status: int | None = None
    latency_ms: float = 0.0
    drop: str | None = None
    probability: float = 1.0
    count: int | None = None
    retry_after: float | None = None
    error_code: str | None = None
    id: int = 0
    _regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.path)
        if self.drop not in (None, "before", "after"):
            raise ValueError("drop must be 'before' or 'after'")

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return bool(self._regex.search(path))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "method": self.method,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "drop": self.drop,
            "probability": self.probability,
            "count": self.count,
            "retry_after": self.retry_after,
            "error_code": self.error_code,
        }


class Faults:
    """The fault rules of one emulator; thread-safe."""

    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[Fault] = []
        self._lock = threading.Lock()
        self._next = 1
        self._random = random.Random(seed)  # noqa: S311 - fault dice, not crypto

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            fault.id = self._next
            self._next += 1
            self._rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._rules)

    def pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                return rule
        return None


class Counters:
    """Counts of every call received, by method, route template and status."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, int]] = Counter()
        self._lock = threading.Lock()

    def record(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self._counts[(method, route, status)] += 1

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            items = sorted(self._counts.items())
        return [{"method": m, "route": r, "status": s, "count": c} for (m, r, s), c in items]

    def total(self, method: str | None = None, route: str | None = None) -> int:
        """Calls received, optionally only of one method and/or one route template."""
        with self._lock:
            return sum(
                c
                for (m, r, _s), c in self._counts.items()
                if (method is None or m == method) and (route is None or r == route)
            )

    def writes(self) -> int:
        """Calls that could have changed state (anything but GET/HEAD), control excluded."""
        with self._lock:
            return sum(
                c
                for (m, r, _s), c in self._counts.items()
                if m not in ("GET", "HEAD") and not r.startswith(CONTROL_PREFIX)
            )


CONTROL_PREFIX = "/__sandbox"

ErrorRenderer = Callable[[int, Fault], Response]


class _DroppedConnection(Exception):
    """Raised after a partial answer so that the server closes the connection."""


class _QuietDrops(logging.Filter):
    """uvicorn logs the exception that closes a dropped connection; that drop is on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _DroppedConnection):
            return False
        # Stopping with idle keep-alive connections open is the normal end of a test.
        return "timeout graceful shutdown exceeded" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class SandboxMiddleware:
    """Counts calls, applies faults; the control surface is counted apart and never faulted."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        faults: Faults,
        counters: Counters,
        render_error: ErrorRenderer,
    ) -> None:
        self.app = app
        self.router = router
        self.faults = faults
        self.counters = counters
        self.render_error = render_error

    def _route_of(self, scope: Scope) -> str:
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", scope["path"]))
        return "<unrouted>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        route = self._route_of(scope)
        status_box = [0]

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = int(message["status"])
            await send(message)

        fault = None if path.startswith(CONTROL_PREFIX) else self.faults.pick(method, path)
        try:
            if fault is not None:
                await self._apply(fault, scope, receive, send, counting_send)
            else:
                await self.app(scope, receive, counting_send)
        finally:
            self.counters.record(method, route, status_box[0] or 499)

    async def _apply(
        self,
        fault: Fault,
        scope: Scope,
        receive: Receive,
        send: Send,
        counting_send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000.0)
        if fault.drop == "before":
            await _drop(send)
        if fault.drop == "after":

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
            await _drop(send)
        if fault.status is not None:
            response = self.render_error(fault.status, fault)
            if fault.status in (429, 503) and "retry-after" not in response.headers:
                response.headers["Retry-After"] = str(int(fault.retry_after or 1))
            await response(scope, receive, counting_send)
            return
        await self.app(scope, receive, counting_send)


async def _drop(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"100000"), (b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    raise _DroppedConnection


class ServedApp:
    """An ASGI app served over HTTPS on loopback from a background thread."""

    def __init__(
        self, app: ASGIApp, ca: SandboxCA, *, port: int = 0, name: str = "sandbox"
    ) -> None:
        self.app = app
        self.ca = ca
        self.name = name
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, port))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            ssl_certfile=str(ca.cert_file),
            ssl_keyfile=str(ca.key_file),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            # Stop at once: idle keep-alive connections of test clients must not hold a
            # test's teardown for the whole keep-alive time.
            timeout_graceful_shutdown=1,
            h11_max_incomplete_event_size=1_048_576,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    def start(self) -> ServedApp:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: HTTPS server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ServedApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
