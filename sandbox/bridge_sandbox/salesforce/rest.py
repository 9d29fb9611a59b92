"""The sandbox org's REST API (``/services/data/vNN.N/``), in Salesforce's shapes.

Every answer carries ``Sforce-Limit-Info``; every error is the array form
``[{"message", "errorCode", "fields"}]``; nothing escapes as a bare 500.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge_sandbox.salesforce import ids
from bridge_sandbox.salesforce.auth import OAuth, Token
from bridge_sandbox.salesforce.changelog import RETENTION
from bridge_sandbox.salesforce.schema import SObject
from bridge_sandbox.salesforce.soql import json_value
from bridge_sandbox.salesforce.store import (
    Org,
    SalesforceApiError,
    id18,
    not_found,
    parse_datetime,
)

MIN_VERSION, MAX_VERSION = 41, 66
DEFAULT_PAGE_SIZE = 2000
DEFAULT_DAILY_API_LIMIT = 5_000_000
DEFAULT_MAX_BODY = 1_048_576
COMPOSITE_MAX = 200
MAX_CURSORS = 200
_VERSION = re.compile(r"^(\d{2})\.0$")

DATA = "/services/data"
V = DATA + "/v{version}"


@dataclass(frozen=True)
class Call:
    """What a handler gets besides the request: the API version and the caller's token."""

    version: str
    token: Token

    @property
    def prefix(self) -> str:
        return f"{DATA}/v{self.version}"

    def url(self, sobject: str, record_id: str) -> str:
        return f"{self.prefix}/sobjects/{sobject}/{record_id}"


Handler = Callable[[Request, Call], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def error_response(exc: SalesforceApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


class ApiUsage:
    """Daily API request count against the org's limit (the day is the sandbox clock's)."""

    def __init__(self, org: Org, limit: int) -> None:
        self.org = org
        self.limit = limit
        self._used = 0
        self._day: date | None = None
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Count one request; False once the limit is used up."""
        with self._lock:
            self._roll()
            if self._used >= self.limit:
                return False
            self._used += 1
            return True

    @property
    def used(self) -> int:
        with self._lock:
            self._roll()
            return self._used

    def reset(self) -> None:
        with self._lock:
            self._used = 0

    def header(self) -> str:
        return f"api-usage={self.used}/{self.limit}"

    def _roll(self) -> None:
        today = self.org.clock.now().date()
        if today != self._day:
            self._day, self._used = today, 0


class Cursors:
    """Query results waiting for ``query/{locator}``: the newest ``MAX_CURSORS`` are kept."""

    def __init__(self) -> None:
        self._results: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._next = 1
        self._lock = threading.Lock()

    def open(self, records: list[dict[str, Any]]) -> str:
        with self._lock:
            locator = ids.make_id("01g", self._next)
            self._next += 1
            self._results[locator] = records
            while len(self._results) > MAX_CURSORS:
                self._results.popitem(last=False)
            return locator

    def get(self, locator: str) -> list[dict[str, Any]] | None:
        with self._lock:
            return self._results.get(locator)

    def clear(self) -> None:
        with self._lock:
            self._results.clear()


class RestApi:
    """Routes and handlers of the REST API over one ``Org``."""

    def __init__(
        self,
        org: Org,
        oauth: OAuth,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        daily_api_limit: int = DEFAULT_DAILY_API_LIMIT,
        max_body: int = DEFAULT_MAX_BODY,
        before_request: Callable[[], None] | None = None,
    ) -> None:
        self.org = org
        self.before_request = before_request
        self.oauth = oauth
        self.page_size = page_size
        self.max_body = max_body
        self.usage = ApiUsage(org, daily_api_limit)
        self.cursors = Cursors()

    def reset(self) -> None:
        self.usage.reset()
        self.cursors.clear()

    # -- routing ----------------------------------------------------------------------
    def routes(self) -> list[Route]:
        table: list[tuple[str, list[str], Handler]] = [
            (V, ["GET"], self.resources),
            (V + "/sobjects", ["GET"], self.sobjects),
            (V + "/sobjects/{sobject}", ["GET", "POST"], self.sobject),
            (V + "/sobjects/{sobject}/describe", ["GET"], self.describe),
            (V + "/sobjects/{sobject}/updated", ["GET"], self.updated),
            (V + "/sobjects/{sobject}/deleted", ["GET"], self.deleted),
            (V + "/sobjects/{sobject}/{record_id}", ["GET", "PATCH", "DELETE"], self.record),
            (V + "/query", ["GET"], self.query),
            (V + "/queryAll", ["GET"], self.query_all),
            (V + "/query/{locator}", ["GET"], self.query_more),
            (V + "/queryAll/{locator}", ["GET"], self.query_more),
            (V + "/composite/sobjects", ["POST", "PATCH", "DELETE"], self.composite),
            (V + "/limits", ["GET"], self.limits),
        ]
        routes = [Route(DATA, self._reporting_usage(self.versions), methods=["GET"])]
        routes += [Route(path, self._guarded(h), methods=m) for path, m, h in table]
        return routes

    def _guarded(self, handler: Handler) -> Endpoint:
        """Session and limit checks, then the handler; errors rendered, usage reported."""

        async def checked(request: Request) -> Response:
            return await self._answer(handler, request)

        return self._reporting_usage(checked)

    def _reporting_usage(self, endpoint: Endpoint) -> Endpoint:
        async def reporting(request: Request) -> Response:
            response = await endpoint(request)
            response.headers["Sforce-Limit-Info"] = self.usage.header()
            return response

        return reporting

    async def _answer(self, handler: Handler, request: Request) -> Response:
        try:
            call = self._authorize(request)
            if self.before_request is not None:
                self.before_request()
            return await handler(request, call)
        except SalesforceApiError as exc:
            return error_response(exc)
        except Exception as exc:  # noqa: BLE001 - the sandbox answers, it does not crash
            return unknown_exception(exc)

    def _authorize(self, request: Request) -> Call:
        """Version, then session, then the daily limit, as the org checks them."""
        version = _version(request.path_params["version"])
        token = self.oauth.check_header(request.headers.get("authorization"))
        if token is None:
            raise SalesforceApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if not self.usage.take():
            raise SalesforceApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        return Call(version, token)

    # -- bodies -----------------------------------------------------------------------
    async def _json(self, request: Request) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise SalesforceApiError(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                f"Content type '{content_type or 'none'}' is not supported: use application/json",
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise _too_large(self.max_body)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise _too_large(self.max_body)
        try:
            parsed = json.loads(body)
            # A lone surrogate (``"\\ud800"``) parses but could never be stored or sent back.
            json.dumps(parsed, ensure_ascii=False).encode()
        except (ValueError, UnicodeError) as exc:
            raise SalesforceApiError(
                400, "JSON_PARSER_ERROR", f"Malformed JSON body: {exc}"
            ) from exc
        return parsed

    async def _json_object(self, request: Request) -> dict[str, Any]:
        body = await self._json(request)
        if not isinstance(body, dict):
            raise SalesforceApiError(
                400,
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of the record from {type(body).__name__}: "
                "expected a JSON object",
            )
        return body

    def _sobject(self, request: Request) -> SObject:
        """The sObject named in the path; an unknown one is an unknown resource."""
        definition = self.org.schema.get(request.path_params["sobject"])
        if definition is None:
            raise not_found()
        return definition

    # -- resources --------------------------------------------------------------------
    async def versions(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"label": f"API {n}", "url": f"{DATA}/v{n}.0", "version": f"{n}.0"}
                for n in range(MIN_VERSION, MAX_VERSION + 1)
            ]
        )

    async def resources(self, request: Request, call: Call) -> Response:
        names = ("sobjects", "query", "queryAll", "composite", "limits")
        return JSONResponse({name: f"{call.prefix}/{name}" for name in names})

    async def sobjects(self, request: Request, call: Call) -> Response:
        return JSONResponse(
            {
                "encoding": "UTF-8",
                "maxBatchSize": COMPOSITE_MAX,
                "sobjects": [s.summary(call.prefix) for s in self.org.schema.sobjects.values()],
            }
        )

    async def sobject(self, request: Request, call: Call) -> Response:
        definition = self._sobject(request)
        if request.method == "GET":
            return JSONResponse(
                {"objectDescribe": definition.summary(call.prefix), "recentItems": []}
            )
        body = await self._json_object(request)
        record = self.org.insert(definition.name, _without_attributes(body))
        return JSONResponse({"id": record["Id"], "success": True, "errors": []}, status_code=201)

    async def describe(self, request: Request, call: Call) -> Response:
        definition = self._sobject(request)
        return JSONResponse(definition.describe(call.prefix))

    async def record(self, request: Request, call: Call) -> Response:
        definition = self._sobject(request)
        record_id = _path_id(
            definition.name, definition.key_prefix, request.path_params["record_id"]
        )
        if request.method == "GET":
            return JSONResponse(
                self._get(definition.name, record_id, request.query_params.get("fields"), call)
            )
        if request.method == "PATCH":
            body = await self._json_object(request)
            self.org.update(definition.name, record_id, _without_attributes(body))
            return Response(status_code=204)
        self.org.delete(definition.name, record_id)
        return Response(status_code=204)

    def _get(self, sobject: str, record_id: str, fields: str | None, call: Call) -> dict[str, Any]:
        record = self.org.get_including_deleted(sobject, record_id)
        if record is None:
            raise not_found()
        if record["IsDeleted"]:
            raise SalesforceApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
        definition = self.org.schema.sobjects[sobject]
        names = list(record)
        if fields:
            names = []
            for raw in fields.split(","):
                f = definition.field(raw.strip())
                if f is None:
                    raise SalesforceApiError(
                        400,
                        "INVALID_FIELD",
                        f"No such column '{raw.strip()}' on entity '{sobject}'. If you are "
                        "attempting to use a custom field, be sure to append the '__c' after "
                        "the custom field name.",
                    )
                names.append(f.name)
        return render(sobject, record, names, call)

    # -- replication ------------------------------------------------------------------
    async def updated(self, request: Request, call: Call) -> Response:
        sobject, start, end = self._window(request)
        return JSONResponse(
            {
                "ids": self.org.updated_ids(sobject, start, end),
                "latestDateCovered": json_value(_minute(end)),
            }
        )

    async def deleted(self, request: Request, call: Call) -> Response:
        sobject, start, end = self._window(request)
        earliest = self.org.clock.now() - RETENTION
        records = self.org.deleted_records(sobject, start, end)
        return JSONResponse(
            {
                "deletedRecords": [{"id": i, "deletedDate": json_value(d)} for i, d in records],
                "earliestDateAvailable": json_value(_minute(earliest)),
                "latestDateCovered": json_value(_minute(end)),
            }
        )

    def _window(self, request: Request) -> tuple[str, datetime, datetime]:
        definition = self._sobject(request)
        bounds: list[datetime] = []
        for name in ("start", "end"):
            raw = request.query_params.get(name)
            if not raw:
                raise SalesforceApiError(400, "MISSING_ARGUMENT", f"{name} parameter not specified")
            try:
                bounds.append(parse_datetime(raw))
            except ValueError as exc:
                raise SalesforceApiError(
                    400, "INVALID_REPLICATION_DATE", f"{name}: not a valid dateTime: {raw}"
                ) from exc
        start, end = bounds
        if start > end:
            raise SalesforceApiError(
                400, "INVALID_REPLICATION_DATE", "start date must be before end date"
            )
        if start < self.org.clock.now() - timedelta(days=30):
            raise SalesforceApiError(
                400, "INVALID_REPLICATION_DATE", "start date cannot be more than 30 days ago"
            )
        return definition.name, start, end

    # -- query ------------------------------------------------------------------------
    async def query(self, request: Request, call: Call) -> Response:
        return self._query(request, call, include_deleted=False)

    async def query_all(self, request: Request, call: Call) -> Response:
        return self._query(request, call, include_deleted=True)

    def _query(self, request: Request, call: Call, *, include_deleted: bool) -> Response:
        soql = request.query_params.get("q")
        if not soql:
            raise SalesforceApiError(400, "MALFORMED_QUERY", "A query string (q) is required")
        result = self.org.query(soql, include_deleted=include_deleted, api_version=call.version)
        resource = "queryAll" if include_deleted else "query"
        return JSONResponse(
            self._page(
                result.records,
                total=result.total_size,
                offset=0,
                locator=None,
                resource=resource,
                call=call,
            )
        )

    async def query_more(self, request: Request, call: Call) -> Response:
        locator, _, offset_text = request.path_params["locator"].rpartition("-")
        records = self.cursors.get(locator) if offset_text.isdigit() else None
        if records is None or int(offset_text) > len(records):
            raise SalesforceApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        resource = request.url.path.split("/")[4]
        return JSONResponse(
            self._page(
                records,
                total=len(records),
                offset=int(offset_text),
                locator=locator,
                resource=resource,
                call=call,
            )
        )

    def _page(
        self,
        records: list[dict[str, Any]],
        *,
        total: int,
        offset: int,
        locator: str | None,
        resource: str,
        call: Call,
    ) -> dict[str, Any]:
        end = offset + self.page_size
        page: dict[str, Any] = {
            "totalSize": total,
            "done": end >= len(records),
            "records": records[offset:end],
        }
        if not page["done"]:
            locator = locator or self.cursors.open(records)
            page["nextRecordsUrl"] = f"{call.prefix}/{resource}/{locator}-{end}"
        return page

    # -- composite --------------------------------------------------------------------
    async def composite(self, request: Request, call: Call) -> Response:
        if request.method == "DELETE":
            raw_ids = [i for i in request.query_params.get("ids", "").split(",") if i]
            all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"
            _check_count(len(raw_ids))
            return JSONResponse(self._each(raw_ids, all_or_none, self._delete_one))
        body = await self._json_object(request)
        records = body.get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SalesforceApiError(400, "JSON_PARSER_ERROR", "records must be a list of objects")
        _check_count(len(records))
        all_or_none = body.get("allOrNone", False) is True
        one = self._create_one if request.method == "POST" else self._update_one
        return JSONResponse(self._each(records, all_or_none, one))

    def _each(
        self, items: list[Any], all_or_none: bool, one: Callable[[Any], str]
    ) -> list[dict[str, Any]]:
        """Apply ``one`` to each item; with all-or-none, one failure rolls all back."""
        results: list[dict[str, Any]] = []

        def run() -> None:
            for item in items:
                try:
                    results.append({"id": one(item), "success": True, "errors": []})
                except SalesforceApiError as exc:
                    results.append({"success": False, "errors": [_composite_error(exc)]})

        if not all_or_none:
            run()
            return results
        try:
            with self.org.transaction():
                run()
                _require_all(results)
        except _RolledBack:
            rolled = {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the "
                "request was using AllOrNone header",
                "fields": [],
            }
            return [
                r if not r["success"] else {"id": r["id"], "success": False, "errors": [rolled]}
                for r in results
            ]
        return results

    def _create_one(self, record: dict[str, Any]) -> str:
        sobject = _record_type(record)
        if "id" in record or "Id" in record:
            raise SalesforceApiError(
                400, "INVALID_FIELD", "Id not specified in a create request", ["Id"]
            )
        return str(self.org.insert(sobject, _without_attributes(record))["Id"])

    def _update_one(self, record: dict[str, Any]) -> str:
        sobject = _record_type(record)
        fields = _without_attributes(record)
        record_id = fields.pop("id", None) or fields.pop("Id", None)
        if not isinstance(record_id, str):
            raise SalesforceApiError(
                400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"]
            )
        return str(self.org.update(sobject, record_id, fields)["Id"])

    def _delete_one(self, record_id: str) -> str:
        sobject = self.org.sobject_of(record_id)
        if sobject is None:
            raise SalesforceApiError(400, "MALFORMED_ID", f"malformed id {record_id}", [])
        return str(self.org.delete(sobject, record_id)["Id"])

    async def http_exception(self, request: Request, exc: Exception) -> Response:
        """Starlette's own 404/405 (no route, wrong method) and anything uncaught, in the
        REST array form."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 405:
            response: Response = error_response(
                SalesforceApiError(
                    405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed."
                )
            )
        elif status == 404:
            response = error_response(not_found())
        else:
            response = unknown_exception(exc)
        response.headers["Sforce-Limit-Info"] = self.usage.header()
        return response

    async def limits(self, request: Request, call: Call) -> Response:
        used = self.usage.used
        return JSONResponse(
            {
                "DailyApiRequests": {
                    "Max": self.usage.limit,
                    "Remaining": max(self.usage.limit - used, 0),
                }
            }
        )


class _RolledBack(Exception):
    """Raised inside an all-or-none transaction to put the org back."""


def _require_all(results: list[dict[str, Any]]) -> None:
    if not all(r["success"] for r in results):
        raise _RolledBack


def render(sobject: str, record: dict[str, Any], names: list[str], call: Call) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": {"type": sobject, "url": call.url(sobject, record["Id"])}}
    for name in names:
        out[name] = json_value(record[name])
    return out


def unknown_exception(exc: BaseException) -> JSONResponse:
    return JSONResponse(
        [
            {
                "errorCode": "UNKNOWN_EXCEPTION",
                "message": f"An unexpected error occurred: {type(exc).__name__}",
                "fields": [],
            }
        ],
        status_code=500,
    )


def _version(text: str) -> str:
    match = _VERSION.match(text)
    if match is None or not MIN_VERSION <= int(match.group(1)) <= MAX_VERSION:
        raise not_found()
    return text


def _path_id(sobject: str, prefix: str, raw: str) -> str:
    if id18(raw) is None:
        if len(raw) in (15, 18):
            raise SalesforceApiError(
                400, "MALFORMED_ID", f"{sobject} ID: id value of incorrect type: {raw}"
            )
        raise SalesforceApiError(
            404,
            "NOT_FOUND",
            f"Provided external ID field does not exist or is not accessible: {raw}",
        )
    if raw[:3] != prefix:
        raise SalesforceApiError(
            400, "MALFORMED_ID", f"{sobject} ID: id value of incorrect type: {raw}"
        )
    return raw


def _without_attributes(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "attributes"}


def _record_type(record: dict[str, Any]) -> str:
    attributes = record.get("attributes")
    sobject = attributes.get("type") if isinstance(attributes, dict) else None
    if not isinstance(sobject, str) or not sobject:
        raise SalesforceApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
    return sobject


def _composite_error(exc: SalesforceApiError) -> dict[str, Any]:
    return {"statusCode": exc.error_code, "message": exc.message, "fields": exc.fields}


def _check_count(count: int) -> None:
    if count > COMPOSITE_MAX:
        raise SalesforceApiError(
            400,
            "EXCEEDED_ID_LIMIT",
            f"record limit reached. cannot submit more than {COMPOSITE_MAX} records into this call",
        )


def _too_large(limit: int) -> SalesforceApiError:
    return SalesforceApiError(413, "REQUEST_TOO_LARGE", f"The request body exceeds {limit} bytes")


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)
