"""Inbound REST rate limits: rule precedence (pure) and the 429 answer over HTTPS."""

from __future__ import annotations

import pytest

from bridge_sandbox import seed
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.servicenow.ratelimit import RateLimitExceeded, RateLimitRule, RateLimits
from bridge_sandbox.serving import Clock
from tests.fixtures.servicenow import sn_session

USER = "u" * 32
RULES = {
    "all": RateLimitRule(100, sys_id="all"),
    "all_small": RateLimitRule(10, sys_id="all_small"),
    "itil": RateLimitRule(100, role="itil", sys_id="itil"),
    "admin": RateLimitRule(500, role="import_admin", sys_id="admin"),
    "user": RateLimitRule(200, user=USER, sys_id="user"),
    "other_user": RateLimitRule(1, user="x" * 32, sys_id="other_user"),
    "get_only": RateLimitRule(5, method="GET", path="^/api/now/table/incident", sys_id="get_only"),
}


@pytest.mark.parametrize(
    ("rules", "method", "path", "roles", "applied"),
    [
        (["all", "itil", "user"], "GET", "/api/now/table/incident", {"itil"}, "user"),
        (["all", "itil"], "GET", "/api/now/table/incident", {"itil"}, "itil"),
        (["all", "itil", "admin"], "GET", "/x", {"itil", "import_admin"}, "itil"),
        (["all", "all_small"], "GET", "/x", set(), "all_small"),
        (["all", "itil"], "GET", "/x", set(), "all"),
        (["other_user"], "GET", "/x", set(), None),
        (["get_only"], "POST", "/api/now/table/incident", set(), None),
        (["get_only"], "GET", "/api/now/table/problem", set(), None),
        (["get_only"], "GET", "/api/now/table/incident", set(), "get_only"),
    ],
)
def test_rule_precedence(
    rules: list[str], method: str, path: str, roles: set[str], applied: str | None
) -> None:
    limits = RateLimits(Clock())
    for name in rules:
        limits.add(RULES[name])
    verdict = limits.check(method, path, USER, lambda: roles)
    assert (verdict.rule.sys_id if verdict else None) == applied


def test_counts_reset_with_the_hour() -> None:
    clock = Clock()
    limits = RateLimits(clock)
    limits.add(RateLimitRule(2, sys_id="r"))
    for _ in range(2):
        limits.check("GET", "/x", USER, set)
    with pytest.raises(RateLimitExceeded) as caught:
        limits.check("GET", "/x", USER, set)
    assert caught.value.detail == "Rate limit of 2 requests per hour for Table API exceeded"
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 3600
    clock.advance(3600)
    assert limits.check("GET", "/x", USER, set) is not None


@pytest.mark.integration
def test_over_the_limit_answers_429(sn_sandbox: ServiceNowSandbox) -> None:
    rule = sn_sandbox.rate_limits.add(
        RateLimitRule(3, user=seed.SN_INTEGRATION_USER_SYS_ID, path="^/api/now/table/")
    )
    session = sn_session(sn_sandbox)
    url = f"{sn_sandbox.instance_url}/api/now/table/awa_queue"
    for _ in range(3):
        ok = session.get(url)
        assert ok.status_code == 200
        assert ok.headers["X-RateLimit-Limit"] == "3"
        assert ok.headers["X-RateLimit-Rule"] == rule.sys_id
    refused = session.get(url)
    assert refused.status_code == 429
    assert refused.json() == {
        "error": {
            "message": "Rate limit exceeded",
            "detail": "Rate limit of 3 requests per hour for Table API exceeded",
        },
        "status": "failure",
    }
    assert int(refused.headers["Retry-After"]) >= 1
    assert int(refused.headers["X-RateLimit-Reset"]) % 3600 == 0
    agent = seed.AGENTS[0]
    other = sn_session(sn_sandbox, agent.sn_user_name, "sandbox-agent-password")
    assert other.get(url).status_code == 200
    assert "X-RateLimit-Limit" not in other.get(url).headers
