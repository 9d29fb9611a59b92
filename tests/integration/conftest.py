"""Fixtures of the adapter and intake tests: the bridge's own adapters, built the way the
daemon builds them, pointed at the sandbox org and the sandbox instance over HTTPS."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from bridge.adapters.http import make_session
from bridge.adapters.salesforce.auth import SalesforceTokens
from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.servicenow.client import ServiceNowAdapter
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.serving import Clock

API_VERSION = "62.0"
AUTHORIZATION_CONTEXT = "BYO_SandboxChannel"


def sf_tokens(sandbox: SalesforceSandbox, *, jwt: bool = False) -> SalesforceTokens:
    session = make_session(sandbox.ca_bundle, system="salesforce")
    if jwt:
        return SalesforceTokens(
            session,
            login_url=sandbox.instance_url,
            client_id=sandbox.client_id,
            username=sandbox.username,
            jwt_key_file=sandbox.jwt_key_file,
        )
    return SalesforceTokens(
        session,
        login_url=sandbox.instance_url,
        client_id=sandbox.client_id,
        client_secret=SecretStr(sandbox.client_secret),
    )


def sf_adapter_for(sandbox: SalesforceSandbox, *, jwt: bool = False) -> SalesforceAdapter:
    return SalesforceAdapter(
        make_session(sandbox.ca_bundle, system="salesforce"),
        sf_tokens(sandbox, jwt=jwt),
        api_version=API_VERSION,
        scrt_url=sandbox.scrt_url,
        org_id=sandbox.org_id,
        authorization_context=AUTHORIZATION_CONTEXT,
    )


def keeping_time(clock: Clock) -> Iterator[None]:
    """Put a session-wide sandbox clock back where it was: the tests here move it."""
    offset = clock.timestamp() - time.time()
    yield
    clock.advance(offset - (clock.timestamp() - time.time()))


@pytest.fixture
def sf_adapter(sf_sandbox: SalesforceSandbox) -> Iterator[SalesforceAdapter]:
    """The Salesforce adapter, client-credentials flow."""
    for _ in keeping_time(sf_sandbox.clock):
        yield sf_adapter_for(sf_sandbox)


def sn_adapter_for(sandbox: ServiceNowSandbox, *, oauth: bool = False) -> ServiceNowAdapter:
    session = make_session(sandbox.ca_bundle, system="servicenow")
    if oauth:
        return ServiceNowAdapter(
            session,
            sandbox.instance_url,
            client_id=sandbox.oauth_client_id,
            client_secret=SecretStr(sandbox.oauth_client_secret),
        )
    return ServiceNowAdapter(
        session,
        sandbox.instance_url,
        username=sandbox.username,
        password=SecretStr(sandbox.password),
    )


@pytest.fixture
def sn_adapter(sn_sandbox: ServiceNowSandbox) -> Iterator[ServiceNowAdapter]:
    """The ServiceNow adapter, basic auth."""
    for _ in keeping_time(sn_sandbox.clock):
        yield sn_adapter_for(sn_sandbox)
