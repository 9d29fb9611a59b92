"""The one table from HTTP answers and transport failures to error branches."""

from __future__ import annotations

import pytest
import requests

from bridge.adapters.http import endpoint_of
from bridge.errors import (
    OutcomeUnknown,
    Permanent,
    Retriable,
    Skippable,
    from_http,
    from_transport,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (429, None, Retriable),
        (503, None, Retriable),
        (500, None, Retriable),
        (502, None, Retriable),
        (504, None, Retriable),
        (408, None, Retriable),
        (403, "REQUEST_LIMIT_EXCEEDED", Retriable),
        (400, "UNABLE_TO_LOCK_ROW", Retriable),
        (400, "MALFORMED_QUERY", Permanent),
        (400, "INVALID_FIELD_FOR_INSERT_UPDATE", Permanent),
        (401, "INVALID_SESSION_ID", Permanent),
        (403, None, Permanent),
        (404, "NOT_FOUND", Permanent),
        (409, None, Permanent),
        (404, "ENTITY_IS_DELETED", Skippable),
    ],
)
def test_http_status_and_code_pick_the_branch(status, code, expected):
    error = from_http("salesforce", status, "boom", code=code, retry_after=3)
    assert type(error) is expected
    assert error.status == status
    assert error.system == "salesforce"
    if expected is Retriable:
        assert error.retry_after == 3


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (requests.exceptions.ConnectTimeout("t"), Retriable),
        (requests.exceptions.ConnectionError("NewConnectionError: refused"), Retriable),
        (requests.exceptions.ReadTimeout("r"), OutcomeUnknown),
        (requests.exceptions.ChunkedEncodingError("dropped"), OutcomeUnknown),
        (requests.exceptions.ConnectionError("RemoteDisconnected"), OutcomeUnknown),
        (requests.exceptions.SSLError("bad cert"), Permanent),
        (ValueError("x"), Permanent),
    ],
)
def test_transport_failures_pick_the_branch(exc, expected):
    assert type(from_transport("servicenow", exc)) is expected


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("5", 5.0), ("0", 0.0), ("1.5", 1.5), (None, None), ("", None), ("Wed, 21 Oct", None)],
)
def test_retry_after_header(header, seconds):
    assert parse_retry_after(header) == seconds


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        (
            "https://h/services/data/v62.0/sobjects/AgentWork/0Bz5g0000000001AAA",
            "/services/data/v62.0/sobjects/AgentWork/{id}",
        ),
        (
            "https://h/api/now/table/awa_work_item/a9010da35d515caaa430b374dcb3a3da?x=1",
            "/api/now/table/awa_work_item/{id}",
        ),
        (
            "https://h/api/now/awa/documents/interaction/a9010da35d515caaa430b374dcb3a3da/offer",
            "/api/now/awa/documents/interaction/{id}/offer",
        ),
        (
            "https://h/services/data/v62.0/query/01g5g00000000001-2000",
            "/services/data/v62.0/query/{id}",
        ),
        ("https://h/api/v1/route", "/api/v1/route"),
        (
            "https://h/services/data/v62.0/sobjects/MessagingSession/describe",
            "/services/data/v62.0/sobjects/MessagingSession/describe",
        ),
    ],
)
def test_endpoint_labels_hide_ids(url, endpoint):
    assert endpoint_of(url) == endpoint
