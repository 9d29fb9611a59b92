"""The console: read-only pages over the audit ledger, rendered on the server (Jinja2), usable
without JavaScript. Every page reads through the ledger's read transaction and its audit
queries (``AuditReader``); there is no route that changes anything (GET and HEAD only, so
nothing to forge: no CSRF tokens needed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.app.commands import common
from bridge.console.auth import Credentials, RequireCredentials
from bridge.errors import ConfigError, NotFound
from bridge.ledger import audit
from bridge.ledger.rows import DIRECTIONS, utcnow
from bridge.ledger.sql import SqlLedger
from bridge.ledger.words import NO_NAMES, SALESFORCE, SERVICENOW, Names, reason

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
STATES = ("offered", "assigning", "transferring", "routing", "assigned", "active", "closed",
          "abandoned")  # fmt: skip


class BadInput(ValueError):
    """A filter the console cannot read: shown on the page, naming the field (400)."""


def parse_when(name: str, text: str, now: datetime) -> datetime:
    """A duration back from now (15m, 1h, 2d) or an ISO time (UTC without an offset), as
    the CLI's filters take it; the form's datetime-local inputs send the second kind."""
    try:
        return common.parse_when(text, now, option=name)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


def millis(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["millis"] = millis
    env.globals["reason"] = reason
    return env


@dataclass(frozen=True)
class LaneRow:
    """One line of the two-lane timeline: in the Salesforce lane, the ServiceNow lane, or
    across both (the bridge's own: the conversation opened or ended, findings)."""

    entry: audit.TimelineEntry
    lane: str  # salesforce | servicenow | both


def lanes(entries: list[audit.TimelineEntry]) -> list[LaneRow]:
    return [
        LaneRow(e, e.system if e.system in (SALESFORCE, SERVICENOW) else "both") for e in entries
    ]


SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # no script at all; styles from the console itself
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


class Console:
    """The pages; ``app`` is the ASGI application (credential required on every path)."""

    def __init__(
        self,
        ledger: SqlLedger,
        credentials: Credentials,
        *,
        names: Names = NO_NAMES,
        page_size: int = 50,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.ledger = ledger
        self.names = names
        self.page_size = page_size
        self.now = now
        self.env = _environment()
        routes: list[BaseRoute] = [
            Route("/", self.conversations, name="conversations"),
            Route("/search", self.search, name="search"),
            Route("/c/{any_id:path}", self.conversation, name="conversation"),
            Route("/problems", self.problems, name="problems"),
            Route("/reconciliations", self.reconciliations, name="reconciliations"),
            Route("/reconciliations/{run_id}", self.run, name="run"),
            Route("/streams", self.streams, name="streams"),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]
        inner = Starlette(routes=routes)
        inner.add_exception_handler(404, self._not_found_handler)
        self.app: ASGIApp = RequireCredentials(_Headers(inner), credentials)

    # -- rendering ------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        html = self.env.get_template(template).render(
            base=base, names=self.names, request=request, now=self.now(), **context
        )
        return HTMLResponse(html, status_code=status_code)

    def not_found(self, request: Request, message: str) -> HTMLResponse:
        return self.render(request, "not_found.html", 404, message=message)

    async def _not_found_handler(self, request: Request, exc: Exception) -> Response:
        return self.not_found(request, f"there is no page {request.url.path}")

    # -- pages ----------------------------------------------------------------------------

    def _filter(self, q: Mapping[str, str]) -> audit.CorrelationFilter:
        now = self.now()
        state = q.get("state") or None
        direction = q.get("direction") or None
        if state is not None and state not in STATES:
            raise BadInput(f"state: {state!r} is not one of {', '.join(STATES)}")
        if direction is not None and direction not in DIRECTIONS:
            raise BadInput(f"direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
        since = parse_when("since", q["since"], now) if q.get("since") else None
        until = parse_when("until", q["until"], now) if q.get("until") else None
        return audit.CorrelationFilter(
            state=state,
            direction=direction,
            since=since,
            until=until,
            queue=self._ids(q.get("queue")),
            agent=self._ids(q.get("agent")),
        )

    def _ids(self, value: str | None) -> str | tuple[str, ...] | None:
        """An id, or a crosswalk name standing for every id it has."""
        if not value or not value.strip():
            return None
        value = value.strip()
        return self.names.ids_of(value) or value

    def conversations(self, request: Request) -> Response:
        q = request.query_params
        raw = q.get("page") or "1"
        page = int(raw) if raw.isdigit() else 0
        if page < 1:
            return self.render(
                request, "error.html", 400, message=f"page: {raw!r} is not 1, 2, ..."
            )
        try:
            flt = self._filter(q)
        except BadInput as exc:
            return self.render(request, "error.html", 400, message=str(exc))
        with self.ledger.reading() as tx:
            rows = tx.audit.list_correlations(
                flt, self.page_size + 1, offset=(page - 1) * self.page_size
            )
        more = len(rows) > self.page_size
        kept = {k: v for k, v in q.items() if k != "page" and v}

        def page_link(n: int) -> str:
            return "?" + urlencode({**kept, "page": n})

        return self.render(
            request,
            "list.html",
            rows=rows[: self.page_size],
            q=q,
            page=page,
            prev_link=page_link(page - 1) if page > 1 else None,
            next_link=page_link(page + 1) if more else None,
            states=STATES,
            directions=DIRECTIONS,
        )

    def search(self, request: Request) -> Response:
        any_id = (request.query_params.get("id") or "").strip()
        if not any_id:
            return self.render(request, "error.html", 400, message="id: give an id to look for")
        with self.ledger.reading() as tx:
            found = tx.audit.find(any_id)
        if found is None:
            return self.not_found(request, _no_such(any_id))
        base = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(f"{base}/c/{found}", status_code=303)

    def conversation(self, request: Request) -> Response:
        any_id = request.path_params["any_id"]
        try:
            with self.ledger.reading() as tx:
                detail = tx.audit.correlation_detail(any_id)
        except NotFound:
            return self.not_found(request, _no_such(any_id))
        entries = audit.timeline(detail, self.names)
        return self.render(
            request,
            "conversation.html",
            c=detail.correlation,
            detail=detail,
            rows=lanes(entries),
            guard_cancels=len({e.ref for e in entries if "guard" in e.marks}),
        )

    def problems(self, request: Request) -> Response:
        with self.ledger.reading() as tx:
            refused = tx.audit.inbox_events(statuses=("error", "skipped"), limit=100)
            dead = tx.audit.dead_letters(limit=100)
        return self.render(request, "problems.html", refused=refused, dead=dead)

    def reconciliations(self, request: Request) -> Response:
        with self.ledger.reading() as tx:
            runs = tx.audit.reconcile_runs(50)
        return self.render(request, "reconciliations.html", runs=runs)

    def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            with self.ledger.reading() as tx:
                found, findings = tx.audit.run_findings(run_id)
        except NotFound:
            return self.not_found(request, f"no reconciliation run has the id {run_id!r}")
        return self.render(request, "run.html", run=found, findings=findings)

    def streams(self, request: Request) -> Response:
        with self.ledger.reading() as tx:
            found = tx.audit.streams()
        return self.render(request, "streams.html", streams=found)


def _no_such(any_id: str) -> str:
    return (
        f"no conversation has the id {any_id!r} (correlation id, PSR / work item / AgentWork "
        "id, sys_id or external_segment_id)"
    )


class _Headers:
    """The console's response headers on every answer (pages, static, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # how long the page took to make (browsers' developer tools show it)
                took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
                headers = [*message.get("headers", []), *self.extra, (b"server-timing", took)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def console_app(
    ledger: SqlLedger,
    credentials: Credentials,
    *,
    names: Names = NO_NAMES,
    page_size: int = 50,
    now: Callable[[], datetime] = utcnow,
) -> ASGIApp:
    """The console's ASGI app, to mount at ``/console``."""
    return Console(ledger, credentials, names=names, page_size=page_size, now=now).app


def standalone_app(console: ASGIApp) -> Starlette:
    """The console on a listener of its own (``bridge console``): under ``/console/``
    as on ``bridge run``'s, with ``/`` sending there."""

    def home(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    return Starlette(routes=[Route("/", home), Mount(PREFIX, app=console)])
