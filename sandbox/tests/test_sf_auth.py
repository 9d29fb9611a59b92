"""OAuth of the sandbox org: client credentials and JWT bearer through simple-salesforce."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceExpiredSession

from bridge.adapters.http import make_session
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.salesforce.auth import generate_jwt_key_pair


def _token_domain(sandbox: SalesforceSandbox) -> str:
    """simple-salesforce posts to ``https://{domain}.salesforce.com/services/oauth2/token``;
    a domain ending in ``#`` turns the rest into a URL fragment, which is never sent."""
    return sandbox.instance_url.removeprefix("https://") + "/services/oauth2/token#"


def _post_token(
    sandbox: SalesforceSandbox, data: dict[str, str], **kwargs: Any
) -> requests.Response:
    session = make_session(sandbox.ca_bundle)
    return session.post(f"{sandbox.instance_url}/services/oauth2/token", data=data, **kwargs)


def _assertion(sandbox: SalesforceSandbox, key_file: Path | None = None, **claims: Any) -> str:
    payload = {
        "iss": sandbox.client_id,
        "sub": sandbox.username,
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 180,
        **claims,
    }
    return jwt.encode(payload, (key_file or sandbox.jwt_key_file).read_bytes(), algorithm="RS256")


def _whoami(sf: Salesforce) -> str:
    return str(sf.query("SELECT Id FROM Organization")["records"][0]["Id"])


def test_client_credentials_through_simple_salesforce(sf_sandbox: SalesforceSandbox) -> None:
    sf = Salesforce(
        consumer_key=sf_sandbox.client_id,
        consumer_secret=sf_sandbox.client_secret,
        domain=_token_domain(sf_sandbox),
        session=make_session(sf_sandbox.ca_bundle),
        version="62.0",
    )
    assert sf.sf_instance == sf_sandbox.instance_url.removeprefix("https://")
    assert _whoami(sf) == seed.SF_ORG_ID


def test_jwt_bearer_through_simple_salesforce(sf_sandbox: SalesforceSandbox) -> None:
    sf = Salesforce(
        username=seed.AGENTS[0].sf_username,
        consumer_key=sf_sandbox.client_id,
        privatekey_file=str(sf_sandbox.jwt_key_file),
        instance_url=_token_domain(sf_sandbox),
        session=make_session(sf_sandbox.ca_bundle),
        version="62.0",
    )
    assert _whoami(sf) == seed.SF_ORG_ID
    token = sf_sandbox.oauth.check(sf.session_id)
    assert token is not None
    assert token.user_id == seed.AGENTS[0].sf_user_id


def test_token_answer_shape(sf_sandbox: SalesforceSandbox) -> None:
    answer = _post_token(
        sf_sandbox,
        {
            "grant_type": "client_credentials",
            "client_id": sf_sandbox.client_id,
            "client_secret": sf_sandbox.client_secret,
        },
    )
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) >= {
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
    }
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == sf_sandbox.instance_url
    assert body["id"].endswith(f"/{seed.SF_ORG_ID}/{seed.SF_INTEGRATION_USER_ID}")
    assert body["access_token"].startswith(seed.SF_ORG_ID[:15] + "!")
    assert abs(int(body["issued_at"]) / 1000 - sf_sandbox.clock.timestamp()) < 60


def _other_key(tmp_path: Path) -> Path:
    return generate_jwt_key_pair(tmp_path).key_file


@pytest.mark.parametrize(
    ("case", "error", "description"),
    [
        ("wrong_secret", "invalid_client", "invalid client credentials"),
        ("unknown_client", "invalid_client_id", "client identifier invalid"),
        ("bad_grant", "unsupported_grant_type", "grant type not supported"),
        ("jwt_wrong_key", "invalid_grant", "invalid assertion"),
        ("jwt_garbage", "invalid_grant", "invalid assertion"),
        ("jwt_expired", "invalid_grant", "expired authorization code"),
        ("jwt_wrong_audience", "invalid_grant", "audience is invalid"),
        ("jwt_wrong_issuer", "invalid_client_id", "client identifier invalid"),
        ("jwt_unknown_user", "invalid_grant", "user hasn't approved this consumer"),
        ("jwt_missing", "invalid_request", "assertion is required"),
    ],
)
def test_token_errors(
    sf_sandbox: SalesforceSandbox, tmp_path: Path, case: str, error: str, description: str
) -> None:
    bearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    forms: dict[str, dict[str, str]] = {
        "wrong_secret": {"client_id": sf_sandbox.client_id, "client_secret": "nope"},
        "unknown_client": {"client_id": "nope", "client_secret": sf_sandbox.client_secret},
        "bad_grant": {"grant_type": "password"},
        "jwt_wrong_key": {
            "grant_type": bearer,
            "assertion": _assertion(sf_sandbox, _other_key(tmp_path)),
        },
        "jwt_garbage": {"grant_type": bearer, "assertion": "not.a.jwt"},
        "jwt_expired": {
            "grant_type": bearer,
            "assertion": _assertion(sf_sandbox, exp=int(time.time()) - 5),
        },
        "jwt_wrong_audience": {
            "grant_type": bearer,
            "assertion": _assertion(sf_sandbox, aud="https://evil.example"),
        },
        "jwt_wrong_issuer": {"grant_type": bearer, "assertion": _assertion(sf_sandbox, iss="nope")},
        "jwt_unknown_user": {
            "grant_type": bearer,
            "assertion": _assertion(sf_sandbox, sub="nobody@example.com"),
        },
        "jwt_missing": {"grant_type": bearer},
    }
    form = {"grant_type": "client_credentials", **forms[case]}
    answer = _post_token(sf_sandbox, form)
    assert answer.status_code == 400
    assert answer.json() == {"error": error, "error_description": description}


def test_simple_salesforce_raises_on_refused_login(sf_sandbox: SalesforceSandbox) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as failed:
        Salesforce(
            consumer_key=sf_sandbox.client_id,
            consumer_secret="wrong",
            domain=_token_domain(sf_sandbox),
            session=make_session(sf_sandbox.ca_bundle),
        )
    assert failed.value.code == "invalid_client"


def test_token_request_must_be_a_form(sf_sandbox: SalesforceSandbox) -> None:
    answer = _post_token(sf_sandbox, {}, json={"grant_type": "client_credentials"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"


def test_audience_may_be_this_instance(sf_sandbox: SalesforceSandbox) -> None:
    bearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    for audience in (sf_sandbox.instance_url, "https://test.salesforce.com"):
        answer = _post_token(
            sf_sandbox, {"grant_type": bearer, "assertion": _assertion(sf_sandbox, aud=audience)}
        )
        assert answer.status_code == 200, audience


def test_tokens_expire_on_the_sandbox_clock_and_can_be_revoked(
    sf_sandbox: SalesforceSandbox,
) -> None:
    session = make_session(sf_sandbox.ca_bundle)

    def client() -> Salesforce:
        return Salesforce(
            instance_url=sf_sandbox.instance_url,
            session_id=sf_sandbox.issue_token(),
            version="62.0",
            session=session,
        )

    short = client()
    sf_sandbox.clock.advance(sf_sandbox.oauth.token_ttl.total_seconds() - 60)
    assert _whoami(short) == seed.SF_ORG_ID
    sf_sandbox.clock.advance(120)
    with pytest.raises(SalesforceExpiredSession):
        _whoami(short)

    revoked = client()
    assert _whoami(revoked) == seed.SF_ORG_ID
    assert sf_sandbox.oauth.revoke_all() >= 1
    with pytest.raises(SalesforceExpiredSession):
        _whoami(revoked)


def test_jwt_files_are_written(sf_sandbox: SalesforceSandbox) -> None:
    assert sf_sandbox.jwt_key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert sf_sandbox.jwt_cert_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert sf_sandbox.jwt_key_file.stat().st_mode & 0o077 == 0
