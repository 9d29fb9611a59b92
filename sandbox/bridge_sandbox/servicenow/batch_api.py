"""The Batch API: ``POST /api/now/v1/batch``.

Each item is executed through the sandbox's own ASGI stack, as a request of its own (the
caller's credentials, faults, rate limits and counters apply per item). Limits as the
instance documents them: an item body over ``max_item_bytes`` or an answer over
``max_output_bytes``, or a batch running over ``max_seconds``, ends the batch; that item
and the ones after it come back in ``unserviced_requests``.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Scope

from bridge_sandbox.servicenow.store import ServiceNowApiError, json_response
from bridge_sandbox.servicenow.table_api import check_api_version, read_json_object

if TYPE_CHECKING:
    from bridge_sandbox.servicenow.app import ServiceNowSandbox

MAX_ITEM_BYTES = 5 * 1024 * 1024
MAX_OUTPUT_BYTES = 10 * 1024 * 1024
MAX_SECONDS = 30.0
_BATCH_PATHS = ("/api/now/batch", "/api/now/v1/batch", "/api/now/v2/batch")


class _LimitReached(Exception):
    """The batch stops here; this item and the rest are unserviced."""


class _Unserviced(Exception):
    """This item could not be executed (the connection of the inner call failed)."""


@dataclass(frozen=True)
class BatchItem:
    id: str
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    exclude_response_headers: bool

    @classmethod
    def parse(cls, raw: object, index: int) -> BatchItem:
        where = f"rest_requests[{index}]"
        if not isinstance(raw, Mapping):
            raise _bad(f"{where} must be an object")
        for key in ("id", "method", "url"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise _bad(f"{where}.{key} is required and must be a string")
        url = urlsplit(raw["url"])
        if not url.path.startswith("/"):
            raise _bad(f"{where}.url must be a relative path starting with /")
        return cls(
            id=raw["id"],
            method=raw["method"].upper(),
            path=url.path,
            query=url.query.encode("latin-1", "replace"),
            headers=_headers(raw.get("headers", []), where),
            body=_body(raw.get("body"), where),
            exclude_response_headers=raw.get("exclude_response_headers") is True,
        )


def _bad(detail: str) -> ServiceNowApiError:
    return ServiceNowApiError(400, "Exception while reading request", detail)


def _headers(raw: object, where: str) -> list[tuple[bytes, bytes]]:
    if not isinstance(raw, list):
        raise _bad(f"{where}.headers must be a list")
    headers = []
    for header in raw:
        if (
            not isinstance(header, Mapping)
            or not isinstance(header.get("name"), str)
            or not isinstance(header.get("value"), str)
        ):
            raise _bad(f"{where}.headers entries must be {{'name','value'}} strings")
        headers.append(
            (header["name"].lower().encode("latin-1"), header["value"].encode("latin-1"))
        )
    return headers


def _body(raw: object, where: str) -> bytes:
    if raw is None or raw == "":
        return b""
    if not isinstance(raw, str):
        raise _bad(f"{where}.body must be a base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{where}.body is not valid base64") from None


class BatchApi:
    def __init__(self, sandbox: ServiceNowSandbox) -> None:
        self.sandbox = sandbox
        self.max_item_bytes = MAX_ITEM_BYTES
        self.max_output_bytes = MAX_OUTPUT_BYTES
        self.max_seconds = MAX_SECONDS

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/now/batch", self.batch, methods=["POST"]),
            Route("/api/now/{api_version}/batch", self.batch, methods=["POST"]),
        ]

    async def batch(self, request: Request) -> Response:
        check_api_version(request)
        body = await read_json_object(request, max_bytes=self.sandbox.max_body_bytes)
        raw_items = body.get("rest_requests")
        if not isinstance(raw_items, list):
            raise _bad("rest_requests is required and must be a list")
        items = [BatchItem.parse(raw, i) for i, raw in enumerate(raw_items)]
        started = time.monotonic()
        serviced: list[dict[str, Any]] = []
        unserviced: list[str] = []
        for position, item in enumerate(items):
            try:
                serviced.append(await self._execute(item, request.scope, started))
            except _LimitReached:
                unserviced += [later.id for later in items[position:]]
                break
            except _Unserviced:
                unserviced.append(item.id)
        answer = {
            "batch_request_id": str(body.get("batch_request_id", "")),
            "serviced_requests": serviced,
            "unserviced_requests": unserviced,
        }
        return json_response(answer)

    async def _execute(self, item: BatchItem, outer: Scope, started: float) -> dict[str, Any]:
        if len(item.body) > self.max_item_bytes or time.monotonic() - started > self.max_seconds:
            raise _LimitReached
        begun = time.monotonic()
        if item.path in _BATCH_PATHS:
            status, headers, body = _nested_batch()
        else:
            status, headers, body = await self._call(item, outer)
        if len(body) > self.max_output_bytes:
            raise _LimitReached
        answer: dict[str, Any] = {
            "id": item.id,
            "status_code": status,
            "status_text": _status_text(status),
            "body": base64.b64encode(body).decode("ascii"),
            "execution_time": int((time.monotonic() - begun) * 1000),
        }
        if not item.exclude_response_headers:
            answer["headers"] = [
                {"name": k.decode("latin-1"), "value": v.decode("latin-1")} for k, v in headers
            ]
        return answer

    async def _call(
        self, item: BatchItem, outer: Scope
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        headers = list(item.headers)
        names = {name for name, _ in headers}
        for name, value in outer["headers"]:
            if name in (b"authorization", b"host") and name not in names:
                headers.append((name, value))
        if item.body:
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            headers.append((b"content-length", str(len(item.body)).encode()))
        scope: Scope = {
            "type": "http",
            "asgi": outer.get("asgi", {"version": "3.0"}),
            "http_version": "1.1",
            "method": item.method,
            "scheme": outer.get("scheme", "https"),
            "path": item.path,
            "raw_path": item.path.encode("utf-8"),
            "root_path": "",
            "query_string": item.query,
            "headers": headers,
            "server": outer.get("server"),
            "client": outer.get("client"),
            "state": {},
        }
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": item.body, "more_body": False}

        status = 0
        out_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status = int(message["status"])
                out_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.sandbox.asgi(scope, receive, send)
        except Exception:  # noqa: BLE001 - an inner call that broke off is "unserviced"
            raise _Unserviced from None
        return status, out_headers, b"".join(chunks)


def _nested_batch() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    error = ServiceNowApiError(
        400, "Batch requests cannot be nested", "Remove the inner batch call"
    )
    response = error.response()
    return error.status, list(response.raw_headers), bytes(response.body)


def _status_text(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def routes(sandbox: ServiceNowSandbox) -> list[BaseRoute]:
    return BatchApi(sandbox).routes()
