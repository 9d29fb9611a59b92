"""The change-stream settings of issue 10: names, defaults and the one-line errors that
name the setting."""

from __future__ import annotations

import pytest

from bridge.app.settings import load_settings
from bridge.errors import ConfigError


def test_the_defaults() -> None:
    sf = load_settings(env_file=None).salesforce
    assert sf.intake == "poll"  # flipped to pubsub once the suite passes in it
    assert sf.pubsub_url == "api.pubsub.salesforce.com:7443"
    assert sf.pubsub_channel == "/data/ExternalRoutingChannel__chn"
    assert (sf.pubsub_batch, sf.keepalive_timeout, sf.sweep_interval) == (100, 120.0, 600.0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PUBSUB_URL", "https://api.pubsub.salesforce.com", "must be host:port"),
        ("PUBSUB_URL", "api.pubsub.salesforce.com", "must be host:port"),
        ("PUBSUB_URL", "localhost:0", "must be host:port"),
        ("PUBSUB_BATCH", "101", "less than or equal to 100"),
        ("PUBSUB_BATCH", "0", "greater than or equal to 1"),
        ("INTAKE", "cometd", "pubsub"),
        ("KEEPALIVE_TIMEOUT", "0", "greater than 0"),
        ("SWEEP_INTERVAL", "-1", "greater than 0"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"BRIDGE_SALESFORCE__{name}", value)
    with pytest.raises(ConfigError) as raised:
        load_settings(env_file=None)
    line = next(line for line in str(raised.value).splitlines() if name in line)
    assert f"BRIDGE_SALESFORCE__{name}" in line
    assert message in line


@pytest.mark.parametrize("value", ["localhost:7443", "127.0.0.1:50051", "[::1]:7443"])
def test_a_host_and_port_is_taken(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BRIDGE_SALESFORCE__PUBSUB_URL", value)
    assert load_settings(env_file=None).salesforce.pubsub_url == value
