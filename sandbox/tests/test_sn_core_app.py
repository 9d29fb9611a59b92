"""The sandbox instance as a whole: injected faults in ServiceNow's shape, state file, reset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.servicenow.ratelimit import RateLimitRule
from bridge_sandbox.serving import Fault
from tests.fixtures.servicenow import sn_session

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("status", "message", "retry_after"),
    [
        (429, "Rate limit exceeded", "7"),
        (503, "Service Unavailable", "1"),
        (500, "Internal Server Error", None),
    ],
)
def test_injected_faults_look_like_servicenow(
    sn_sandbox: ServiceNowSandbox, status: int, message: str, retry_after: str | None
) -> None:
    sn_sandbox.faults.add(
        Fault(path="/api/now/table/", status=status, retry_after=7 if status == 429 else None)
    )
    answer = sn_session(sn_sandbox).get(f"{sn_sandbox.instance_url}/api/now/table/awa_queue")
    assert answer.status_code == status
    assert answer.json()["status"] == "failure"
    assert answer.json()["error"]["message"] == message
    assert answer.headers.get("Retry-After") == retry_after


def test_write_state(sn_sandbox: ServiceNowSandbox, tmp_path: Path) -> None:
    path = sn_sandbox.write_state(tmp_path / "state")
    state = json.loads(path.read_text())
    assert path.name == "servicenow.json"
    assert state["instance_url"] == sn_sandbox.instance_url
    assert state["ca_bundle"] == str(sn_sandbox.ca_bundle)
    assert (state["username"], state["password"]) == (sn_sandbox.username, sn_sandbox.password)
    assert state["oauth_token_url"].endswith("/oauth_token.do")


def test_reset_clears_data_rules_faults_and_counters(sn_sandbox: ServiceNowSandbox) -> None:
    sn_sandbox.instance.insert("interaction", {})
    sn_sandbox.rate_limits.add(RateLimitRule(1))
    sn_sandbox.faults.add(Fault(path="/nowhere", status=500))
    sn_session(sn_sandbox).get(f"{sn_sandbox.instance_url}/api/now/table/awa_queue")
    sn_sandbox.reset()
    assert sn_sandbox.instance.rows("interaction") == []
    assert sn_sandbox.rate_limits.rules() == []
    assert sn_sandbox.faults.list() == []
    assert sn_sandbox.counters.total() == 0
