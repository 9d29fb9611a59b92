"""Authentication of the sandbox instance: basic auth, OAuth grants, bearer expiry, roles."""

from __future__ import annotations

import pysnc
import pytest
from pysnc.auth import ServiceNowClientCredentialsFlow
from pysnc.exceptions import AuthenticationException, RoleException

from bridge.adapters.http import make_session
from bridge_sandbox import seed
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.servicenow.auth import ACCESS_TOKEN_SECONDS
from tests.fixtures.servicenow import sn_pysnc, sn_session

pytestmark = pytest.mark.integration

NOT_AUTHENTICATED = {
    "error": {
        "message": "User Not Authenticated",
        "detail": "Required to provide Auth information",
    },
    "status": "failure",
}


def _token(sandbox: ServiceNowSandbox, **form: str) -> tuple[int, dict[str, object]]:
    session = make_session(sandbox.ca_bundle)
    session.trust_env = False
    answer = session.post(f"{sandbox.instance_url}/oauth_token.do", data=form)
    body: dict[str, object] = answer.json()
    return answer.status_code, body


def _queues(sandbox: ServiceNowSandbox, authorization: str | None) -> int:
    session = make_session(sandbox.ca_bundle)
    session.trust_env = False
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = session.get(f"{sandbox.instance_url}/api/now/table/awa_queue", headers=headers)
    if answer.status_code == 401:
        assert answer.json() == NOT_AUTHENTICATED
        assert "WWW-Authenticate" in answer.headers
    return answer.status_code


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic Ym9ndXM6Ym9ndXM=", "Basic !!!", "Bearer not-a-token", "Digest abc"],
)
def test_missing_or_bad_credentials_get_401(
    sn_sandbox: ServiceNowSandbox, authorization: str | None
) -> None:
    assert _queues(sn_sandbox, authorization) == 401


def test_wrong_password_raises_authentication_exception(sn_sandbox: ServiceNowSandbox) -> None:
    client = sn_pysnc(sn_sandbox, sn_sandbox.username, "wrong")
    with pytest.raises(AuthenticationException):
        client.GlideRecord("awa_queue").query()


def test_inactive_user_cannot_log_in(sn_sandbox: ServiceNowSandbox) -> None:
    agent = seed.AGENTS[1]
    sn_sandbox.instance.update("sys_user", agent.sn_user_sys_id, {"active": False})
    with pytest.raises(AuthenticationException):
        sn_pysnc(sn_sandbox, agent.sn_user_name, "sandbox-agent-password").GlideRecord(
            "awa_queue"
        ).query()


def test_user_without_a_role_gets_role_exception(sn_sandbox: ServiceNowSandbox) -> None:
    sn_sandbox.instance.insert("sys_user", {"sys_id": "a" * 32, "user_name": "guest"})
    sn_sandbox.instance.set_password("a" * 32, "guest-pw")
    gr = sn_pysnc(sn_sandbox, "guest", "guest-pw").GlideRecord("awa_work_item")
    with pytest.raises(RoleException):
        gr.query()


def test_client_credentials_flow_of_pysnc(
    sn_sandbox: ServiceNowSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The flow posts to /oauth_token.do with module-level requests (no session to give a
    # CA to), so the environment names the sandbox CA for this test.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sn_sandbox.ca_bundle))
    flow = ServiceNowClientCredentialsFlow(
        sn_sandbox.oauth_client_id, sn_sandbox.oauth_client_secret
    )
    client = pysnc.ServiceNowClient(sn_sandbox.instance_url, flow)
    gr = client.GlideRecord("interaction")
    gr.initialize()
    gr.short_description = "via oauth"
    sys_id = gr.insert()
    stored = sn_sandbox.instance.get("interaction", str(sys_id))
    assert stored is not None
    assert stored["sys_created_by"] == seed.SN_INTEGRATION_USER


def test_password_grant_refresh_and_expiry(sn_sandbox: ServiceNowSandbox) -> None:
    status, body = _token(
        sn_sandbox,
        grant_type="password",
        username=sn_sandbox.username,
        password=sn_sandbox.password,
        client_id=sn_sandbox.oauth_client_id,
        client_secret=sn_sandbox.oauth_client_secret,
    )
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert _queues(sn_sandbox, f"Bearer {body['access_token']}") == 200

    sn_sandbox.clock.advance(ACCESS_TOKEN_SECONDS + 1)
    assert _queues(sn_sandbox, f"Bearer {body['access_token']}") == 401

    status, refreshed = _token(
        sn_sandbox,
        grant_type="refresh_token",
        refresh_token=str(body["refresh_token"]),
        client_id=sn_sandbox.oauth_client_id,
        client_secret=sn_sandbox.oauth_client_secret,
    )
    assert status == 200
    assert _queues(sn_sandbox, f"Bearer {refreshed['access_token']}") == 200


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "client_credentials", "client_secret": "nope"}, 401, "invalid_client"),
        (
            {"grant_type": "password", "username": "bridge.integration", "password": "x"},
            401,
            "server_error",
        ),
        ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
        ({"grant_type": "refresh_token", "refresh_token": "unknown"}, 401, "server_error"),
    ],
)
def test_token_endpoint_errors(
    sn_sandbox: ServiceNowSandbox, form: dict[str, str], status: int, error: str
) -> None:
    full = {
        "client_id": sn_sandbox.oauth_client_id,
        "client_secret": sn_sandbox.oauth_client_secret,
        **form,
    }
    answer_status, body = _token(sn_sandbox, **full)
    assert (answer_status, body["error"]) == (status, error)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/json"}, b'{"grant_type": "password"}'),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"grant_type=" + b"x" * 70_000),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"grant_type=\xff\xfe"),
    ],
)
def test_token_endpoint_needs_a_small_form(
    sn_sandbox: ServiceNowSandbox, headers: dict[str, str], body: bytes
) -> None:
    session = sn_session(sn_sandbox)
    answer = session.post(f"{sn_sandbox.instance_url}/oauth_token.do", data=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
