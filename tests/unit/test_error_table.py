"""The error table: each adapter's per-endpoint overrides in front of the common rows, and
the one token refresh every adapter shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import requests

from bridge.adapters.http import call_with_token_refresh, error_of
from bridge.adapters.salesforce.client import ERRORS as SALESFORCE
from bridge.adapters.servicenow.client import AGENT_NOT_AVAILABLE
from bridge.adapters.servicenow.client import ERRORS as SERVICENOW
from bridge.errors import (
    HTTP_ERRORS,
    BridgeError,
    ErrorRule,
    Permanent,
    Retriable,
    Skippable,
    from_http,
)

PSR = "/services/data/v62.0/sobjects/PendingServiceRouting/{id}"
AGENT_WORK = "/services/data/v62.0/sobjects/AgentWork/{id}"
OFFER = "/api/now/awa/documents/interaction/{id}/offer"
TABLE = "/api/now/table/awa_work_item/{id}"
BUSY = "Agent is not available"
NO_BLIND_TRANSFER = "Transfer failed - couldn't blind transfer to agent"


@dataclass(frozen=True)
class Case:
    name: str
    table: tuple[ErrorRule, ...]
    method: str
    endpoint: str
    status: int
    code: str | None
    message: str
    branch: type[BridgeError]
    # what the error says: the server's code and message unless a row replaces them
    says: tuple[str | None, str] | None = None


CASES = [
    Case("sf psr delete 404", SALESFORCE, "DELETE", PSR, 404, "NOT_FOUND", "gone", Skippable,
         ("NOT_FOUND", "the PSR is already gone")),
    Case("sf psr deleted", SALESFORCE, "DELETE", PSR, 404, "ENTITY_IS_DELETED", "x", Skippable,
         ("ENTITY_IS_DELETED", "the PSR is already gone")),
    Case("sf psr read 404", SALESFORCE, "GET", PSR, 404, "NOT_FOUND", "gone", Permanent),
    Case("sf agentwork delete 404", SALESFORCE, "DELETE", AGENT_WORK, 404, "NOT_FOUND", "x",
         Permanent),
    Case("sf psr delete 500", SALESFORCE, "DELETE", PSR, 500, None, "boom", Retriable),
    Case("sf deleted record", SALESFORCE, "DELETE", AGENT_WORK, 404, "ENTITY_IS_DELETED", "x",
         Skippable, ("ENTITY_IS_DELETED", "x")),
    Case("sf request limit", SALESFORCE, "GET", "/services/data/v62.0/query", 403,
         "REQUEST_LIMIT_EXCEEDED", "limit", Retriable),
    Case("awa offer busy", SERVICENOW, "POST", OFFER, 409, None, BUSY, Permanent,
         (AGENT_NOT_AVAILABLE, BUSY)),
    Case("awa transfer busy", SERVICENOW, "POST", OFFER, 409, None, NO_BLIND_TRANSFER, Permanent,
         (AGENT_NOT_AVAILABLE, NO_BLIND_TRANSFER)),
    Case("awa already assigned", SERVICENOW, "POST", OFFER, 409, None, "Work Item is assigned",
         Permanent, (None, "Work Item is assigned")),
    Case("awa busy wording elsewhere", SERVICENOW, "PATCH", TABLE, 409, None, BUSY, Permanent,
         (None, BUSY)),
    Case("awa offer on a closed document", SERVICENOW, "POST", OFFER, 409, None,
         "Document is not active", Skippable,
         (None, "the document closed before the offer reached AWA")),
    Case("awa offer 429", SERVICENOW, "POST", OFFER, 429, None, "slow down", Retriable),
    Case("awa offer refused in a 200", SERVICENOW, "POST", OFFER, 200, None, "no", Permanent),
    Case("common rows alone", HTTP_ERRORS, "DELETE", PSR, 404, "NOT_FOUND", "gone", Permanent),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_first_matching_row_picks_the_branch(case: Case) -> None:
    error = from_http(
        "system",
        case.status,
        case.message,
        code=case.code,
        retry_after=2.0,
        method=case.method,
        endpoint=case.endpoint,
        table=case.table,
    )
    assert type(error) is case.branch
    assert (error.system, error.status) == ("system", case.status)
    assert (error.code, error.message) == (case.says or (case.code, case.message))
    if isinstance(error, Retriable):
        assert error.retry_after == 2.0


def _answer(method: str, url: str, status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.request = requests.Request(method, url).prepare()
    return response


def test_an_answer_is_classified_by_the_endpoint_of_its_request() -> None:
    body = b'{"error": {"message": "Agent is not available"}, "status": "failure"}'
    url = "https://sn/api/now/awa/documents/interaction/a9010da35d515caaa430b374dcb3a3da/offer"
    assert error_of("servicenow", _answer("POST", url, 409, body), table=SERVICENOW).code == (
        AGENT_NOT_AVAILABLE
    )
    table_url = "https://sn/api/now/table/interaction/a9010da35d515caaa430b374dcb3a3da"
    error = error_of("servicenow", _answer("PATCH", table_url, 409, body), table=SERVICENOW)
    assert (type(error), error.code) == (Permanent, None)


@dataclass
class _Tokens:
    """Numbered tokens; what the helper asked for."""

    issued: int = 1
    refreshed: list[int] = field(default_factory=list)

    def token(self) -> int:
        return self.issued

    def refresh(self, stale: int) -> int:
        self.refreshed.append(stale)
        self.issued += 1
        return self.issued


def _refusing(*statuses: int) -> tuple[Callable[[int], str], list[int]]:
    """A call that answers each status in turn (then succeeds), recording the tokens."""
    seen: list[int] = []
    answers = list(statuses)

    def call(token: int) -> str:
        seen.append(token)
        if answers:
            status = answers.pop(0)
            raise from_http("salesforce", status, f"HTTP {status}", code="INVALID_SESSION_ID")
        return f"ok with {token}"

    return call, seen


def test_a_401_refreshes_the_token_once_and_calls_again() -> None:
    tokens = _Tokens()
    call, seen = _refusing(401)
    assert call_with_token_refresh(call, tokens, system="salesforce") == "ok with 2"
    assert (seen, tokens.refreshed) == ([1, 2], [1])


def test_a_401_for_the_fresh_token_is_permanent_naming_the_system() -> None:
    tokens = _Tokens()
    call, seen = _refusing(401, 401)
    with pytest.raises(Permanent) as caught:
        call_with_token_refresh(call, tokens, system="salesforce")
    assert seen == [1, 2]
    assert tokens.refreshed == [1]
    assert (caught.value.system, caught.value.status) == ("salesforce", 401)
    assert caught.value.message.startswith("salesforce refused a freshly issued token")


@pytest.mark.parametrize("status", [400, 403, 429, 503])
def test_other_errors_pass_through_without_a_refresh(status: int) -> None:
    tokens = _Tokens()
    call, seen = _refusing(status)
    with pytest.raises(BridgeError) as caught:
        call_with_token_refresh(call, tokens, system="salesforce")
    assert caught.value.status == status
    assert (seen, tokens.refreshed) == ([1], [])


def test_an_error_after_the_refresh_is_the_one_raised() -> None:
    tokens = _Tokens()
    call, seen = _refusing(401, 503)
    with pytest.raises(Retriable) as caught:
        call_with_token_refresh(call, tokens, system="servicenow")
    assert caught.value.status == 503
    assert seen == [1, 2]
