"""The Table API: ``/api/now/[v1|v2/]table/{table}[/{sys_id}]``.

What the instance does and pysnc relies on: ``{"result": ...}`` bodies, fields shaped by
``sysparm_display_value`` (``all`` → ``{"display_value", "value"}``) and
``sysparm_exclude_reference_link``, ``X-Total-Count`` on lists, ``Link`` paging headers,
``sysparm_offset``/``sysparm_limit`` paging, encoded queries, 201 + ``Location`` on create
(a ``sys_id`` in the body is honoured), 204 on delete. Unknown fields in a body are
ignored, as the instance does.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge_sandbox.servicenow.encoded_query import EncodedQueryError, parse, run
from bridge_sandbox.servicenow.schema import Field, Table
from bridge_sandbox.servicenow.store import (
    Instance,
    ServiceNowApiError,
    json_response,
    no_record,
)

if TYPE_CHECKING:
    from bridge_sandbox.servicenow.app import ServiceNowSandbox

DEFAULT_LIMIT = 10_000
_CACHED_QUERIES = 32
API_VERSIONS = ("v1", "v2")
_TRUE = "true"


def current_user(request: Request) -> str:
    """The sys_user sys_id the request authenticated as (set by the sandbox's gate)."""
    user: str = request.scope["state"]["sn_user"]
    return user


def check_api_version(request: Request) -> None:
    version = request.path_params.get("api_version")
    if version is not None and version not in API_VERSIONS:
        raise ServiceNowApiError(
            400, "Requested URI does not represent any resource", f"Unknown API version {version}"
        )


def _flag(request: Request, name: str, default: bool = False) -> bool:
    value = request.query_params.get(name)
    return default if value is None else value.strip().lower() == _TRUE


def _count(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ServiceNowApiError(
            400, f"Invalid value for {name}", f"'{raw}' is not a whole number"
        ) from None
    if value < 0:
        raise ServiceNowApiError(400, f"Invalid value for {name}", f"{value} is negative")
    return value


async def read_json_object(request: Request, *, max_bytes: int) -> dict[str, Any]:
    """The request's JSON object body; the instance's 400/413/415 errors otherwise."""
    content_type = request.headers.get("content-type", "application/json")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ServiceNowApiError(
            415, "Unsupported Media Type", f"Content-Type {content_type} is not supported"
        )
    raw = await read_body(request, max_bytes=max_bytes)
    try:
        body = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ServiceNowApiError(
            400, "Exception while reading request", f"The payload is not valid JSON: {exc}"
        ) from None
    if not isinstance(body, dict):
        raise ServiceNowApiError(
            400, "Exception while reading request", "The payload must be a JSON object"
        )
    return body


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """The request body, read no further than ``max_bytes`` (413 beyond)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise body_too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def body_too_large(max_bytes: int) -> ServiceNowApiError:
    return ServiceNowApiError(
        413, "Request entity too large", f"The request body exceeds {max_bytes} bytes"
    )


@dataclass(frozen=True)
class Shape:
    """How fields are rendered: ``sysparm_display_value`` and reference links."""

    display: str  # "true" | "false" | "all"
    links: bool
    base_url: str

    @classmethod
    def of(cls, request: Request, base_url: str) -> Shape:
        display = request.query_params.get("sysparm_display_value", "false").strip().lower()
        return cls(
            display=display if display in ("true", "all") else "false",
            links=not _flag(request, "sysparm_exclude_reference_link"),
            base_url=base_url,
        )


class RecordRenderer:
    """Render stored rows as the Table API answers them."""

    def __init__(self, instance: Instance, shape: Shape) -> None:
        self.instance = instance
        self.shape = shape

    def render(
        self, spec: Table, row: Mapping[str, str], fields: list[str] | None
    ) -> dict[str, object]:
        if fields is None:
            return {f.name: self._field(f, row.get(f.name, "")) for f in spec.fields.values()}
        out: dict[str, object] = {}
        for name in fields:
            resolved = self._resolve(spec, row, name)
            if resolved is not None:
                out[name] = self._field(resolved[0], resolved[1])
        return out

    def _resolve(self, spec: Table, row: Mapping[str, str], name: str) -> tuple[Field, str] | None:
        """The field (one dot-walk level through a reference allowed) and its value;
        None for a field the table does not have (ignored, as the instance does)."""
        head, _, rest = name.partition(".")
        field = spec.fields.get(head)
        if field is None:
            return None
        value = row.get(head, "")
        if not rest:
            return field, value
        if field.reference is None:
            return None
        target = self.instance.schema.table(field.reference)
        if target is None or "." in rest or rest not in target.fields:
            return None
        target_row = self.instance.live.get(field.reference, value) if value else None
        return target.fields[rest], "" if target_row is None else target_row.get(rest, "")

    def _field(self, field: Field, value: str) -> object:
        shape = self.shape
        if field.reference is None and not field.choices:
            # Plain fields: the display value is the value (dates are shown in UTC).
            if shape.display == "all":
                return {"display_value": value, "value": value}
            return value
        link = None
        if field.reference is not None and shape.links and value:
            link = f"{shape.base_url}/api/now/table/{field.reference}/{value}"
        if shape.display == "false":
            return value if link is None else {"link": link, "value": value}
        display = self.instance.display_of(field, value)
        if shape.display == "true":
            return display if link is None else {"display_value": display, "link": link}
        if link is None:
            return {"display_value": display, "value": value}
        return {"display_value": display, "link": link, "value": value}


def _fields(request: Request) -> list[str] | None:
    raw = request.query_params.get("sysparm_fields")
    if not raw:
        return None
    return [f.strip() for f in raw.split(",") if f.strip()]


class TableApi:
    """The Table API handlers of one sandbox."""

    def __init__(self, sandbox: ServiceNowSandbox) -> None:
        self.sandbox = sandbox
        # Recent query results by (table, query, strict): paging through one query
        # filters and sorts the table once, not once per page.
        self._results: OrderedDict[tuple[str, str, bool], tuple[object, list[Mapping[str, str]]]]
        self._results = OrderedDict()

    @property
    def instance(self) -> Instance:
        return self.sandbox.instance

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        for prefix in ("/api/now/table", "/api/now/{api_version}/table"):
            routes += [
                Route(f"{prefix}/{{table}}", self.list_records, methods=["GET"]),
                Route(f"{prefix}/{{table}}", self.create_record, methods=["POST"]),
                Route(f"{prefix}/{{table}}/{{sys_id}}", self.get_record, methods=["GET"]),
                Route(
                    f"{prefix}/{{table}}/{{sys_id}}", self.update_record, methods=["PATCH", "PUT"]
                ),
                Route(f"{prefix}/{{table}}/{{sys_id}}", self.delete_record, methods=["DELETE"]),
            ]
        return routes

    def _renderer(self, request: Request) -> RecordRenderer:
        return RecordRenderer(self.instance, Shape.of(request, self.sandbox.instance_url))

    async def list_records(self, request: Request) -> Response:
        check_api_version(request)
        table = request.path_params["table"]
        user = current_user(request)
        limit = _count(request, "sysparm_limit", DEFAULT_LIMIT)
        offset = _count(request, "sysparm_offset", 0)
        text = request.query_params.get("sysparm_query", "")
        renderer = self._renderer(request)
        fields = _fields(request)
        inst = self.instance
        with inst.lock:
            spec = inst.check_read(table, user)
            rows = self._select(table, text)
            total = len(rows)
            result = [renderer.render(spec, row, fields) for row in rows[offset : offset + limit]]
        headers = {"X-Total-Count": str(total)}
        if not _flag(request, "sysparm_suppress_pagination_header"):
            headers["Link"] = _link_header(request, self.sandbox.instance_url, offset, limit, total)
        return json_response({"result": result}, 200, headers)

    def _select(self, table: str, text: str) -> list[Mapping[str, str]]:
        """The rows matching ``text`` in its order (call under the instance lock)."""
        inst = self.instance
        strict = self.sandbox.strict_queries
        key = (table, text, strict)
        version = inst.version(table)
        cached = self._results.get(key)
        if cached is not None and cached[0] == version:
            self._results.move_to_end(key)
            return cached[1]
        try:
            query = parse(text, table, inst.schema) if text else None
            rows = run(query, table, inst.live, strict=strict)
        except EncodedQueryError as exc:
            raise ServiceNowApiError(400, "Invalid query", exc.message) from None
        self._results[key] = (version, rows)
        if len(self._results) > _CACHED_QUERIES:
            self._results.popitem(last=False)
        return rows

    async def get_record(self, request: Request) -> Response:
        check_api_version(request)
        table, sys_id = request.path_params["table"], request.path_params["sys_id"]
        renderer = self._renderer(request)
        inst = self.instance
        with inst.lock:
            spec = inst.check_read(table, current_user(request))
            row = inst.live.get(table, sys_id)
            if row is None:
                raise no_record()
            result = renderer.render(spec, row, _fields(request))
        return json_response({"result": result})

    async def create_record(self, request: Request) -> Response:
        check_api_version(request)
        table = request.path_params["table"]
        self.instance.table(table)  # unknown table before reading the body
        body = await read_json_object(request, max_bytes=self.sandbox.max_body_bytes)
        row = self.instance.insert(table, body, user=current_user(request))
        location = f"{self.sandbox.instance_url}/api/now/table/{table}/{row['sys_id']}"
        return self._answer(request, table, row, 201, {"Location": location})

    async def update_record(self, request: Request) -> Response:
        check_api_version(request)
        table, sys_id = request.path_params["table"], request.path_params["sys_id"]
        self.instance.table(table)
        body = await read_json_object(request, max_bytes=self.sandbox.max_body_bytes)
        row = self.instance.update(table, sys_id, body, user=current_user(request))
        return self._answer(request, table, row, 200)

    async def delete_record(self, request: Request) -> Response:
        check_api_version(request)
        table, sys_id = request.path_params["table"], request.path_params["sys_id"]
        self.instance.delete(table, sys_id, user=current_user(request))
        return Response(status_code=204)

    def _answer(
        self,
        request: Request,
        table: str,
        row: Mapping[str, str],
        status: int,
        headers: dict[str, str] | None = None,
    ) -> Response:
        renderer = self._renderer(request)
        with self.instance.lock:
            result = renderer.render(self.instance.table(table), row, _fields(request))
        return json_response({"result": result}, status, headers)


def _link_header(request: Request, base_url: str, offset: int, limit: int, total: int) -> str:
    """first/prev/next/last links, as the instance builds them from the request."""
    params = [
        (k, v)
        for k, v in request.query_params.multi_items()
        if k not in ("sysparm_offset", "sysparm_limit")
    ]
    url = f"{base_url}{request.url.path}"
    step = limit or DEFAULT_LIMIT

    def link(at: int, rel: str) -> str:
        query = urlencode([*params, ("sysparm_offset", str(at)), ("sysparm_limit", str(step))])
        return f'<{url}?{query}>;rel="{rel}"'

    last = max(0, ((total - 1) // step) * step) if total else 0
    links = [link(0, "first")]
    if offset > 0:
        links.append(link(max(0, offset - step), "prev"))
    if offset + step < total:
        links.append(link(offset + step, "next"))
    links.append(link(last, "last"))
    return ",".join(links)


def routes(sandbox: ServiceNowSandbox) -> list[BaseRoute]:
    return TableApi(sandbox).routes()
