"""The receiver: the HTTPS listener of ``bridge run`` that takes the changes the ServiceNow
instance pushes (``BRIDGE_SERVICENOW__INTAKE=push``).

``POST {path}`` with one JSON delivery (``bridge.adapters.servicenow.payload``). In order:
the source's rate (429 with Retry-After), the instance's credentials (Basic, compared in
constant time; and/or a client certificate the TLS handshake verified against the client CA:
401 and nothing recorded), ``Content-Type`` (415), size (413), then the payload (400 with the
reason). What an authenticated sender got refused is recorded in the inbox with the reason
(``bridge ledger events --status error``).

The answer is 202 only once the inbox transaction has committed: ServiceNow does not retry,
so what it was told is taken is never lost; any failure is a 5xx (the sweeper reads the
change later). The delivery's event is keyed like the poll's (``table:sys_id:sys_mod_count``):
a repeat is a ``duplicate``, one older than the version the inbox holds is recorded ``stale``
and not acted on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import queue
import ssl
import threading
import time
from collections.abc import Callable, Container
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.adapters.servicenow.payload import Refused, check
from bridge.adapters.servicenow.polling import SOURCE, stream_of
from bridge.app.settings import ReceiverSettings
from bridge.errors import ConfigError
from bridge.ledger.ports import Ledger, NewEvent
from bridge.ledger.rows import utcnow
from bridge.metrics import EVENTS_IN

log = logging.getLogger(__name__)

# Where refused deliveries are recorded (they belong to no table's stream).
REFUSED_STREAM = stream_of("receiver")
# How much of a refused body is kept with the refusal (enough to see what was wrong).
KEPT_BODY_CHARS = 2048
# A delivery not written by then is answered 503 (it may still be written: a later repeat
# is then a duplicate, never a second event).
WRITE_TIMEOUT_SECONDS = 30.0


class RateLimit:
    """A token bucket per source address: ``rate`` a second, bursts of one second's worth."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = max(1.0, rate)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait(self, source: str) -> float:
        """0 when ``source`` may send now (a token is taken), else seconds until it may."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(source, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate)
            if tokens >= 1.0:
                self._buckets[source] = (tokens - 1.0, now)
                return 0.0
            self._buckets[source] = (tokens, now)
            if len(self._buckets) > 10_000:  # forget sources that went quiet
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
            return (1.0 - tokens) / self._rate


class Credentials:
    """The instance's Basic credentials, compared in constant time."""

    def __init__(self, username: str, password: str) -> None:
        self._username = username.encode()
        self._password = password.encode()

    def accept(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # both compared whatever the first gave: the time says nothing about which was wrong
        same_user = hmac.compare_digest(user, self._username)
        same_password = hmac.compare_digest(password, self._password)
        return bool(sep) and same_user and same_password


@dataclass
class _Delivery:
    stream: str
    event: NewEvent
    # recorded, duplicate or stale; set once the batch committed (or its error)
    done: Future[str] = field(default_factory=Future)


class GroupCommit:
    """Deliveries that arrive together are written in one inbox transaction: one commit
    (on SQLite with ``synchronous=FULL``, one fsync) for all of them. Each waits for the
    commit of its own batch and only then hears its result; a batch that fails is written
    again one delivery per transaction, so that one bad delivery fails only itself."""

    def __init__(
        self, ledger: Ledger, on_recorded: Callable[[], None] | None, *, batch: int = 500
    ) -> None:
        self._ledger = ledger
        self._on_recorded = on_recorded
        self._batch = batch
        self._queue: queue.SimpleQueue[_Delivery | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="receiver-commit", daemon=True)
        self._thread.start()

    async def record(self, stream: str, event: NewEvent) -> str:
        """Write one event, waiting (without holding a thread) until its batch committed:
        recorded, duplicate or stale; what the transaction raised, if it failed."""
        if not self._thread.is_alive():
            raise RuntimeError("the receiver is stopping: nothing is written any more")
        item = _Delivery(stream, event)
        self._queue.put(item)
        return await asyncio.wait_for(asyncio.wrap_future(item.done), WRITE_TIMEOUT_SECONDS)

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self._batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            try:
                self._write(batch)
            except Exception as failed:  # noqa: BLE001 - handed to the requests waiting
                if len(batch) == 1:
                    batch[0].done.set_exception(failed)
                else:
                    for item in batch:
                        if item.done.done():
                            continue
                        try:
                            self._write([item])
                        except Exception as exc:  # noqa: BLE001 - handed to its request
                            item.done.set_exception(exc)
            if stopping:
                return

    def _write(self, batch: list[_Delivery]) -> None:
        first_of: dict[tuple[str, str], _Delivery] = {}
        by_stream: dict[str, list[_Delivery]] = {}
        for item in batch:
            key = (item.event.source, item.event.source_event_id)
            if key in first_of:
                continue  # the same delivery twice in one batch: a duplicate of the first
            first_of[key] = item
            by_stream.setdefault(item.stream, []).append(item)
        results: dict[tuple[str, str], str] = {}
        inserted = 0
        with self._ledger.transaction() as tx:
            for stream, items in by_stream.items():
                got = tx.inbox.record(stream, [i.event for i in items], None)
                inserted += len(got.inserted)
                duplicates, stale = set(got.duplicates), set(got.stale)
                for i in items:
                    sid = i.event.source_event_id
                    outcome = (
                        "duplicate"
                        if sid in duplicates
                        else "stale"
                        if sid in stale
                        else "recorded"
                    )
                    results[(i.event.source, sid)] = outcome
        # committed: only now may the instance hear that its deliveries are taken
        for item in batch:
            key = (item.event.source, item.event.source_event_id)
            result = results[key] if first_of[key] is item else "duplicate"
            item.done.set_result(result)
            label = "recorded" if result == "recorded" else "duplicate"
            EVENTS_IN.labels(SOURCE, item.event.kind, label).inc()
        if inserted and self._on_recorded is not None:
            try:
                self._on_recorded()
            except Exception:  # the deliveries are taken; the processor's next wake finds them
                log.exception("waking the processor failed")


def _answer(status: int, **body: object) -> JSONResponse:
    return JSONResponse(body, status_code=status)


class Receiver:
    """The receiver's application and its listener (a uvicorn server on its own thread)."""

    def __init__(
        self,
        settings: ReceiverSettings,
        ledger: Ledger,
        *,
        mapped: Container[str],
        on_recorded: Callable[[], None] | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self._ledger = ledger
        self._mapped = mapped
        self._on_recorded = on_recorded
        self._now = now
        self._limit = RateLimit(settings.rate_limit)
        self._credentials = (
            Credentials(settings.username, settings.password.get_secret_value())
            if settings.username is not None and settings.password is not None
            else None
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._commit = GroupCommit(ledger, on_recorded)

    # -- the application ------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(routes=[Route(self.settings.path, self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        source = request.client.host if request.client else "unknown"
        wait = self._limit.wait(source)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            rate = self.settings.rate_limit
            return JSONResponse(
                {"error": f"more than {rate:g} deliveries a second from {source}"},
                status_code=429,
                headers={"Retry-After": str(retry)},
            )
        if self._credentials is not None and not self._credentials.accept(
            request.headers.get("authorization")
        ):
            # nothing recorded: anyone can knock
            return JSONResponse(
                {"error": "missing or wrong credentials"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="bridge servicenow events"'},
            )
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            reason = f"Content-Type must be application/json, not {media or '(none)'!r}"
            return await self._refuse(415, reason, b"", source)
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            reason = f"the body ({declared} bytes) is larger than {limit} bytes"
            return await self._refuse(413, reason, b"", source)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                reason = f"the body is larger than {limit} bytes"
                return await self._refuse(413, reason, bytes(body[:KEPT_BODY_CHARS]), source)
        try:
            checked = check(bytes(body), self._mapped)
        except Refused as refused:
            return await self._refuse(400, refused.reason, bytes(body), source, refused.table)
        event = checked.event
        if checked.skipped is not None:
            event = _settled(event, "skipped", checked.skipped)
        try:
            result = await self._commit.record(stream_of(event.kind), event)
        except Exception:
            log.exception("a delivery of %s was not recorded", event.source_event_id)
            return _answer(503, error="the delivery was not recorded; send it again")
        if result == "recorded" and checked.skipped is not None:
            result = "skipped"
        return _answer(202, result=result)

    async def _refuse(
        self, status: int, reason: str, body: bytes, source: str, table: str | None = None
    ) -> Response:
        """Answer ``status`` with the reason; recorded (the sender was authenticated), once
        per distinct body and reason."""
        digest = hashlib.sha256(reason.encode() + b"\0" + body).hexdigest()[:32]
        event = NewEvent(
            source=SOURCE,
            source_event_id=f"refused:{digest}",
            kind=table or "delivery",
            occurred_at=self._now(),
            payload={"from": source, "body": body.decode("utf-8", "replace")[:KEPT_BODY_CHARS]},
            status="error",
            error=json.dumps(
                {"kind": "permanent", "code": "refused_delivery", "message": reason},
                sort_keys=True,
            ),
        )
        try:
            await self._commit.record(REFUSED_STREAM, event)
        except Exception:
            # the sender cannot mend the delivery by sending it again: still its answer
            log.exception("a refused delivery (%s) was not recorded", reason)
        log.warning("refused a ServiceNow delivery from %s: %s", source, reason)
        return _answer(status, error=reason)

    # -- the listener ---------------------------------------------------------------------

    def config(self) -> uvicorn.Config:
        s = self.settings
        tls: dict[str, object] = {}
        if not s.allow_plain_http:
            if s.cert_file is None or s.key_file is None:
                raise ConfigError("the receiver needs BRIDGE_RECEIVER__CERT_FILE and __KEY_FILE")
            tls = {"ssl_certfile": str(s.cert_file), "ssl_keyfile": str(s.key_file)}
            if s.client_ca_file is not None:
                # mutual TLS: a client without a certificate of this CA fails the handshake
                tls |= {"ssl_ca_certs": str(s.client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return uvicorn.Config(
            self.app(),
            host=s.host,
            port=s.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            **tls,  # type: ignore[arg-type]
        )

    @property
    def port(self) -> int:
        """The bound port (the setting's, or the one picked for port 0)."""
        server = self._server
        if server is not None and server.servers:
            sockets = server.servers[0].sockets
            if sockets:
                return int(sockets[0].getsockname()[1])
        return self.settings.port

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.started and not self._server.should_exit

    @property
    def url(self) -> str:
        scheme = "http" if self.settings.allow_plain_http else "https"
        return f"{scheme}://{self.settings.host}:{self.port}{self.settings.path}"

    def start(self, timeout: float = 10.0) -> None:
        self._server = uvicorn.Server(self.config())
        self._thread = threading.Thread(target=self._server.run, name="receiver", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"the ServiceNow events receiver did not start on "
                    f"{self.settings.host}:{self.settings.port}"
                )
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._commit.stop(timeout=timeout)  # after the listener: what it took is written


def _settled(event: NewEvent, status: str, reason: str) -> NewEvent:
    error = json.dumps({"kind": "skippable", "message": reason}, sort_keys=True)
    return replace(event, status=status, error=error)
