"""Settings: sources, validation, per-system requirements, and `bridge config show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.app.cli import app, main
from bridge.app.settings import load_settings
from bridge.errors import ConfigError

runner = CliRunner()


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory (no .env) and an empty secrets directory."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "secrets"
    path.mkdir()
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(path))
    return path


def test_defaults(secrets: Path) -> None:
    s = load_settings()
    assert s.effective_ledger_url == "sqlite:///data/ledger.db"
    assert s.http_timeout == (5.0, 30.0)
    assert (s.salesforce.api_version, s.servicenow.poll_interval) == ("62.0", 2.0)


def test_sources_and_priority(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "BRIDGE_LOG_LEVEL=debug\nBRIDGE_SALESFORCE__ORG_ID=00Dfile\nBRIDGE_HTTP_PORT=1\n"
    )
    (secrets / "BRIDGE_SALESFORCE__CLIENT_SECRET").write_text("from-secret-file")
    (secrets / "BRIDGE_HTTP_PORT").write_text("2")
    monkeypatch.setenv("BRIDGE_SALESFORCE__ORG_ID", "00Denv")
    s = load_settings(dispatch_concurrency=3)
    assert s.log_level == "DEBUG"
    assert s.salesforce.org_id == "00Denv"
    assert s.salesforce.client_secret is not None
    assert s.salesforce.client_secret.get_secret_value() == "from-secret-file"
    assert s.http_port == 1  # .env beats the secrets dir
    assert s.dispatch_concurrency == 3


def test_every_bad_field_is_listed(secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_HTTP_PORT", "99999")
    monkeypatch.setenv("BRIDGE_LOG_FORMAT", "xml")
    monkeypatch.setenv("BRIDGE_SALESFORCE__INSTANCE_URL", "http://example.my.salesforce.com")
    monkeypatch.setenv("BRIDGE_SERVICENOW__INSTANCE_URL", "example.service-now.com")
    monkeypatch.setenv("BRIDGE_LEDGER_URL", "mysql://x@y/z")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert sorted(p.split(":")[0] for p in info.value.detail) == [
        "BRIDGE_HTTP_PORT",
        "BRIDGE_LEDGER_URL",
        "BRIDGE_LOG_FORMAT",
        "BRIDGE_SALESFORCE__INSTANCE_URL",
        "BRIDGE_SERVICENOW__INSTANCE_URL",
    ]
    assert "must be an https:// URL" in str(info.value)


SF_OK = {"instance_url": "https://acme.my.salesforce.com", "client_id": "cid"}
SN_OK = {"instance_url": "https://acme.service-now.com"}


@pytest.mark.parametrize(
    ("salesforce", "problems"),
    [
        ({**SF_OK, "client_secret": "s"}, []),
        ({**SF_OK, "username": "u@acme", "jwt_key_file": "KEY"}, []),
        (
            {},
            [
                "INSTANCE_URL: required",
                "CLIENT_ID: required",
                "one way to authenticate is required",
            ],
        ),
        ({**SF_OK, "client_secret": "s", "username": "u@acme"}, ["not both"]),
        ({**SF_OK, "username": "u@acme"}, ["JWT_KEY_FILE: required"]),
        ({**SF_OK, "username": "u@acme", "jwt_key_file": "missing.pem"}, ["no such file"]),
    ],
)
def test_require_salesforce(secrets: Path, salesforce: dict[str, Any], problems: list[str]) -> None:
    if salesforce.get("jwt_key_file") == "KEY":
        (secrets.parent / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
        salesforce = {**salesforce, "jwt_key_file": str(secrets.parent / "key.pem")}
    s = load_settings(salesforce=salesforce)
    if not problems:
        assert s.require_salesforce() is s.salesforce
        return
    with pytest.raises(ConfigError) as info:
        s.require_salesforce()
    assert len(info.value.detail) == len(problems)
    for expected, got in zip(problems, info.value.detail, strict=True):
        assert expected in got


@pytest.mark.parametrize(
    ("servicenow", "problems"),
    [
        ({**SN_OK, "username": "u", "password": "p"}, []),
        ({**SN_OK, "client_id": "c", "client_secret": "s"}, []),
        ({}, ["INSTANCE_URL: required", "one way to authenticate is required"]),
        ({**SN_OK, "username": "u", "client_id": "c"}, ["not both"]),
        ({**SN_OK, "username": "u"}, ["PASSWORD: required"]),
        ({**SN_OK, "client_secret": "s"}, ["CLIENT_ID: required"]),
    ],
)
def test_require_servicenow(secrets: Path, servicenow: dict[str, Any], problems: list[str]) -> None:
    s = load_settings(servicenow=servicenow)
    if not problems:
        assert s.require_servicenow() is s.servicenow
        return
    with pytest.raises(ConfigError) as info:
        s.require_servicenow()
    assert [any(p in got for got in info.value.detail) for p in problems] == [True] * len(problems)
    assert len(info.value.detail) == len(problems)


def test_require_interaction_service(secrets: Path) -> None:
    s = load_settings(salesforce={**SF_OK, "client_secret": "s"})
    with pytest.raises(ConfigError, match="BRIDGE_SALESFORCE__SCRT_URL: required"):
        s.require_interaction_service()


def test_config_show_masks_secrets_and_names_sources(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("BRIDGE_SERVICENOW__USERNAME=bridge\n")
    (secrets / "BRIDGE_SERVICENOW__PASSWORD").write_text("hunter2")
    monkeypatch.setenv("BRIDGE_LEDGER_URL", "postgresql+psycopg://bridge:s3cret@db/ledger")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.stdout
    assert "s3cret" not in result.stdout
    rows = {r["env"]: r for r in json.loads(result.stdout)}
    assert rows["BRIDGE_SERVICENOW__PASSWORD"] == {
        "setting": "servicenow.password",
        "env": "BRIDGE_SERVICENOW__PASSWORD",
        "value": "********",
        "source": "secrets dir",
    }
    assert (
        rows["BRIDGE_SERVICENOW__USERNAME"]["value"],
        rows["BRIDGE_SERVICENOW__USERNAME"]["source"],
    ) == ("bridge", ".env")
    assert rows["BRIDGE_LEDGER_URL"]["source"] == "env"
    assert rows["BRIDGE_LEDGER_URL"]["value"] == "postgresql+psycopg://bridge:***@db/ledger"
    assert rows["BRIDGE_HTTP_PORT"] == {
        "setting": "http_port",
        "env": "BRIDGE_HTTP_PORT",
        "value": 9464,
        "source": "default",
    }
    table = runner.invoke(app, ["config", "show"])
    assert "hunter2" not in table.stdout
    assert "secrets dir" in table.stdout


def test_config_show_with_invalid_settings_exits_2(
    secrets: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_HTTP_PORT", "many")
    monkeypatch.setenv("BRIDGE_DISPATCH_CONCURRENCY", "0")
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert "BRIDGE_HTTP_PORT" in err
    assert "BRIDGE_DISPATCH_CONCURRENCY" in err
    assert "Traceback" not in err


def test_missing_secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="BRIDGE_SECRETS_DIR: not a directory"):
        load_settings()


def test_secrets_dir_reads_only_bridge_settings(secrets: Path) -> None:
    """Other services' secrets in the same mount (even binary ones) are left alone."""
    (secrets / "keystore.p12").write_bytes(bytes(range(256)))
    (secrets / "postgres_password").write_text("not ours\n")
    (secrets / "BRIDGE_SERVICENOW__PASSWORD").write_text("s3cret\n")
    settings = load_settings(env_file=None, secrets=secrets)
    assert settings.servicenow.password is not None
    assert settings.servicenow.password.get_secret_value() == "s3cret"


def test_a_bridge_secret_that_is_not_text_is_a_clear_error(secrets: Path) -> None:
    (secrets / "BRIDGE_SERVICENOW__PASSWORD").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="BRIDGE_SERVICENOW__PASSWORD is not UTF-8 text"):
        load_settings(env_file=None, secrets=secrets)
