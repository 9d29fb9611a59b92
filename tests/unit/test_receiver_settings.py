"""The receiver's and the ServiceNow intake's settings: environment names, defaults, and
what ``require_receiver`` refuses, every problem named by its variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.app.settings import load_settings
from bridge.errors import ConfigError


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "secrets"))
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("-----BEGIN X-----\n")
    return tmp_path


def test_defaults(clean: Path) -> None:
    s = load_settings(env_file=None)
    assert (s.servicenow.intake, s.servicenow.sweep_interval) == ("poll", 300.0)
    rc = s.receiver
    assert (rc.host, rc.port, rc.path) == ("127.0.0.1", 9443, "/servicenow/events")
    assert (rc.allow_plain_http, rc.max_body_bytes, rc.rate_limit) == (False, 65536, 1000.0)


def test_from_the_environment(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "BRIDGE_SERVICENOW__INTAKE": "push",
        "BRIDGE_SERVICENOW__SWEEP_INTERVAL": "60",
        "BRIDGE_RECEIVER__PORT": "8443",
        "BRIDGE_RECEIVER__USERNAME": "awa.provider",
        "BRIDGE_RECEIVER__PASSWORD": "pw",
        "BRIDGE_RECEIVER__CERT_FILE": str(clean / "cert.pem"),
        "BRIDGE_RECEIVER__KEY_FILE": str(clean / "key.pem"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings(env_file=None)
    assert (s.servicenow.intake, s.servicenow.sweep_interval, s.receiver.port) == (
        "push",
        60.0,
        8443,
    )
    assert s.require_receiver().password is not None
    assert "pw" not in repr(s.receiver)  # a SecretStr


@pytest.mark.parametrize(
    ("receiver", "problems"),
    [
        (
            {},
            [
                "BRIDGE_RECEIVER__USERNAME + BRIDGE_RECEIVER__PASSWORD or",
                "CERT_FILE: required",
                "KEY_FILE: required",
            ],
        ),
        ({"username": "u", "cert_file": "cert.pem", "key_file": "key.pem"}, ["PASSWORD: required"]),
        ({"client_ca_file": "ca.pem", "cert_file": "cert.pem", "key_file": "key.pem"}, []),
        ({"username": "u", "password": "p", "cert_file": "cert.pem", "key_file": "key.pem"}, []),
        ({"username": "u", "password": "p", "allow_plain_http": True}, []),
        (
            {"client_ca_file": "ca.pem", "allow_plain_http": True},
            ["CLIENT_CA_FILE: mutual TLS needs TLS"],
        ),
        (
            {"username": "u", "password": "p", "cert_file": "nope.pem", "key_file": "key.pem"},
            ["BRIDGE_RECEIVER__CERT_FILE: no such file nope.pem"],
        ),
    ],
)
def test_require_receiver(clean: Path, receiver: dict[str, Any], problems: list[str]) -> None:
    s = load_settings(env_file=None, receiver=receiver)
    if not problems:
        assert s.require_receiver() is s.receiver
        return
    with pytest.raises(ConfigError) as refused:
        s.require_receiver()
    assert len(refused.value.detail) == len(problems)
    for problem in problems:
        assert problem in str(refused.value)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"servicenow": {"intake": "stream"}}, "BRIDGE_SERVICENOW__INTAKE"),
        ({"servicenow": {"sweep_interval": 0}}, "BRIDGE_SERVICENOW__SWEEP_INTERVAL"),
        ({"receiver": {"path": "events"}}, "BRIDGE_RECEIVER__PATH"),
        ({"receiver": {"port": 70000}}, "BRIDGE_RECEIVER__PORT"),
        ({"receiver": {"rate_limit": 0}}, "BRIDGE_RECEIVER__RATE_LIMIT"),
    ],
)
def test_bad_values_are_named(clean: Path, values: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        load_settings(env_file=None, **values)
