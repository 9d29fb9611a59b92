"""Settings: every knob of the bridge, from the environment (``BRIDGE_`` prefix, ``__`` for
nested sections), a ``.env`` file, a secrets directory (container secrets) or overrides.

Problems are reported all at once: ``load_settings`` raises one ``ConfigError`` that names
every bad field by its environment variable and says why. Credentials for a system are only
demanded by the commands that talk to it (``require_salesforce`` / ``require_servicenow``).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from bridge.errors import ConfigError

ENV_PREFIX = "BRIDGE_"
NESTED_DELIMITER = "__"
DEFAULT_SECRETS_DIR = Path("/run/secrets")
DEFAULT_ENV_FILE = Path(".env")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LEDGER_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")

Origin = Literal["default", "env", ".env", "secrets dir", "override"]


def _https_url(value: str | None) -> str | None:
    """Both systems are only reachable over TLS (the sandbox too); refuse anything else."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"must be an https:// URL with a host, got {value!r}")
    return value.rstrip("/")


def env_name(*path: str) -> str:
    """The environment variable that sets the field at ``path`` (``salesforce``, ``org_id``)."""
    return ENV_PREFIX + NESTED_DELIMITER.join(p.upper() for p in path)


class BridgeSecretsSource(NestedSecretsSettingsSource):
    """Container secrets: only files named like a bridge setting (``bridge_...``) are read.

    A mounted secrets directory usually holds other services' secrets too (a database
    password, a keystore); reading those would at best be useless and at worst fail on a
    binary file.
    """

    @classmethod
    def load_secrets(cls, path: Path) -> dict[str, str]:
        out: dict[str, str] = {}
        for file in cls._iter_secret_files(path):
            name = str(file.relative_to(path))
            if not name.lower().startswith(ENV_PREFIX.lower()):
                continue
            try:
                out[name] = file.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError:
                raise ConfigError(f"secret file {file} is not UTF-8 text") from None
        return out


class SalesforceSettings(BaseModel):
    """Salesforce org: REST (My Domain), OAuth token endpoint, Interaction Service (SCRT)."""

    instance_url: str | None = None
    login_url: str = "https://login.salesforce.com"
    api_version: str = "62.0"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    username: str | None = None
    jwt_key_file: Path | None = None
    scrt_url: str | None = None
    org_id: str | None = None
    authorization_context: str | None = None
    authorization_context_type: str = "ConversationChannelDefinition"
    poll_interval: float = Field(default=2.0, gt=0)
    # Change streams (DESIGN §8): pubsub | pushtopic | poll; the polls stay as a sweeper.
    intake: Literal["pubsub", "pushtopic", "poll"] = "poll"
    pubsub_url: str = "api.pubsub.salesforce.com:7443"
    pubsub_channel: str = "/data/ExternalRoutingChannel__chn"
    pubsub_batch: int = Field(default=100, ge=1, le=100)
    keepalive_timeout: float = Field(default=120.0, gt=0)
    sweep_interval: float = Field(default=600.0, gt=0)

    _urls = field_validator("instance_url", "login_url", "scrt_url")(_https_url)

    @field_validator("pubsub_url")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, colon, port = value.rpartition(":")
        if not (host and colon and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"must be host:port (gRPC over TLS), got {value!r}")
        return value

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        major, dot, minor = value.removeprefix("v").partition(".")
        if not (major.isdigit() and dot and minor.isdigit()):
            raise ValueError(f"must look like 62.0, got {value!r}")
        return f"{major}.{minor}"


class ServiceNowSettings(BaseModel):
    """ServiceNow instance: Table API and AWA APIs, basic auth or OAuth client credentials."""

    instance_url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    poll_interval: float = Field(default=2.0, gt=0)
    # push: the instance sends each change to the receiver (``BRIDGE_RECEIVER__*``) and the
    # polls run as a sweeper every ``sweep_interval`` s (ServiceNow does not retry a failed
    # push); poll: the polls every ``poll_interval`` s, no receiver.
    intake: Literal["push", "poll"] = "poll"
    sweep_interval: float = Field(default=300.0, gt=0)

    _urls = field_validator("instance_url")(_https_url)


class ReceiverSettings(BaseModel):
    """The HTTPS listener of ``bridge run`` that takes the changes the ServiceNow instance
    pushes (``servicenow.intake = push``). Basic credentials and/or a client CA (mutual
    TLS; both set: both required); plain HTTP only behind a TLS-terminating ingress."""

    host: str = "127.0.0.1"
    port: int = Field(default=9443, ge=0, le=65535)
    path: str = "/servicenow/events"
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    allow_plain_http: bool = False
    max_body_bytes: int = Field(default=65536, ge=1024)
    # deliveries per second from one source address (burst: one second's worth)
    rate_limit: float = Field(default=1000.0, gt=0)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with /, got {value!r}")
        return value


class ConsoleSettings(BaseModel):
    """The read-only web console (``/console/`` of ``bridge run``, or ``bridge console``):
    off unless enabled; a bearer token or basic credentials are required."""

    enabled: bool = False
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    host: str = "127.0.0.1"  # ``bridge console`` on its own; loopback unless asked
    port: int = Field(default=9465, ge=0, le=65535)
    page_size: int = Field(default=50, ge=1, le=500)


class Settings(BaseSettings):
    """Everything the bridge reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        secrets_nested_delimiter=NESTED_DELIMITER,
        env_file=DEFAULT_ENV_FILE,
        extra="ignore",
        case_sensitive=False,
    )

    data_dir: Path = Path("data")
    ledger_url: str | None = None
    ca_bundle: Path | None = None
    http_connect_timeout: float = Field(default=5.0, gt=0)
    http_read_timeout: float = Field(default=30.0, gt=0)
    mappings_dir: Path | None = None
    dispatch_concurrency: int = Field(default=8, ge=1, le=256)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9464, ge=0, le=65535)
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"
    salesforce: SalesforceSettings = Field(default_factory=SalesforceSettings)
    servicenow: ServiceNowSettings = Field(default_factory=ServiceNowSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # nested secrets: a file BRIDGE_SALESFORCE__CLIENT_SECRET fills salesforce.client_secret
        secrets = BridgeSecretsSource(file_secret_settings)
        return (init_settings, env_settings, dotenv_settings, secrets)

    @field_validator("ledger_url")
    @classmethod
    def _ledger_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.partition("://")[0]
        if scheme not in LEDGER_SCHEMES:
            raise ValueError(
                f"scheme must be one of {', '.join(LEDGER_SCHEMES)}, got {scheme or value!r}"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return level

    @property
    def effective_ledger_url(self) -> str:
        """The configured ledger, or a SQLite file in the data directory."""
        return self.ledger_url or f"sqlite:///{self.data_dir / 'ledger.db'}"

    @property
    def http_timeout(self) -> tuple[float, float]:
        """(connect, read) time-outs for ``bridge.adapters.http.make_session``."""
        return (self.http_connect_timeout, self.http_read_timeout)

    def require_salesforce(self) -> SalesforceSettings:
        """The Salesforce section, checked complete: My Domain, client id and exactly one
        of the client secret (client credentials flow) or username + key (JWT bearer)."""
        sf = self.salesforce
        problems = _missing(
            ("salesforce", "instance_url", sf.instance_url),
            ("salesforce", "client_id", sf.client_id),
        )
        has_secret = sf.client_secret is not None
        has_jwt = sf.jwt_key_file is not None or sf.username is not None
        if has_secret and has_jwt:
            problems.append(
                f"{env_name('salesforce', 'client_secret')} and "
                f"{env_name('salesforce', 'jwt_key_file')}/{env_name('salesforce', 'username')}"
                ": set one way to authenticate, not both"
            )
        elif has_jwt:
            problems += _missing(
                ("salesforce", "username", sf.username),
                ("salesforce", "jwt_key_file", sf.jwt_key_file),
            )
            if sf.jwt_key_file is not None and not sf.jwt_key_file.is_file():
                problems.append(
                    f"{env_name('salesforce', 'jwt_key_file')}: no such file {sf.jwt_key_file}"
                )
        elif not has_secret:
            problems.append(
                f"{env_name('salesforce', 'client_secret')} or "
                f"{env_name('salesforce', 'jwt_key_file')} + {env_name('salesforce', 'username')}"
                ": one way to authenticate is required"
            )
        _raise_if(problems, "Salesforce settings are incomplete")
        return sf

    def require_interaction_service(self) -> SalesforceSettings:
        """The Salesforce section plus what the Interaction Service API needs."""
        sf = self.require_salesforce()
        _raise_if(
            _missing(
                ("salesforce", "scrt_url", sf.scrt_url),
                ("salesforce", "org_id", sf.org_id),
                ("salesforce", "authorization_context", sf.authorization_context),
            ),
            "Interaction Service settings are incomplete",
        )
        return sf

    def require_receiver(self) -> ReceiverSettings:
        """The receiver's section, checked complete: a way to authenticate the instance
        (basic credentials, a client CA, or both), and a certificate and key unless plain
        HTTP is explicitly allowed; every file named must exist."""
        rc = self.receiver
        problems: list[str] = []
        basic = rc.username is not None or rc.password is not None
        if basic:
            problems += _missing(
                ("receiver", "username", rc.username), ("receiver", "password", rc.password)
            )
        elif rc.client_ca_file is None:
            problems.append(
                f"{env_name('receiver', 'username')} + {env_name('receiver', 'password')} or "
                f"{env_name('receiver', 'client_ca_file')}: one way to authenticate the "
                "instance is required"
            )
        if rc.allow_plain_http:
            if rc.client_ca_file is not None:
                problems.append(
                    f"{env_name('receiver', 'client_ca_file')}: mutual TLS needs TLS, but "
                    f"{env_name('receiver', 'allow_plain_http')} is set"
                )
        else:
            problems += _missing(
                ("receiver", "cert_file", rc.cert_file), ("receiver", "key_file", rc.key_file)
            )
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(rc, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{env_name('receiver', name)}: no such file {path}")
        _raise_if(problems, "receiver settings are incomplete")
        return rc

    def require_servicenow(self) -> ServiceNowSettings:
        """The ServiceNow section, checked complete: instance URL and exactly one of basic
        auth (username + password) or OAuth client credentials (client id + secret)."""
        sn = self.servicenow
        problems = _missing(("servicenow", "instance_url", sn.instance_url))
        basic = sn.username is not None or sn.password is not None
        oauth = sn.client_id is not None or sn.client_secret is not None
        if basic and oauth:
            problems.append(
                f"{env_name('servicenow', 'username')}/{env_name('servicenow', 'password')} and "
                f"{env_name('servicenow', 'client_id')}/{env_name('servicenow', 'client_secret')}"
                ": set basic auth or OAuth, not both"
            )
        elif basic:
            problems += _missing(
                ("servicenow", "username", sn.username), ("servicenow", "password", sn.password)
            )
        elif oauth:
            problems += _missing(
                ("servicenow", "client_id", sn.client_id),
                ("servicenow", "client_secret", sn.client_secret),
            )
        else:
            problems.append(
                f"{env_name('servicenow', 'username')} + {env_name('servicenow', 'password')} or "
                f"{env_name('servicenow', 'client_id')} + "
                f"{env_name('servicenow', 'client_secret')}: one way to authenticate is required"
            )
        _raise_if(problems, "ServiceNow settings are incomplete")
        return sn

    def require_console(self) -> ConsoleSettings:
        """The console section, checked usable: a token, or a username with a password."""
        c = self.console
        problems: list[str] = []
        if c.username is not None or c.password is not None:
            problems += _missing(("console", "username", c.username))
            problems += _missing(("console", "password", c.password))
        elif c.token is None:
            problems.append(
                f"{env_name('console', 'token')} or {env_name('console', 'username')} + "
                f"{env_name('console', 'password')}: the console requires a credential"
            )
        _raise_if(problems, "console settings are incomplete")
        return c

    def require_ca_bundle(self) -> Path | None:
        """The CA bundle, checked usable (ConfigError naming the file and why)."""
        problem = ca_bundle_problem(self.ca_bundle)
        if problem:
            raise ConfigError(problem)
        return self.ca_bundle


PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


def ca_bundle_problem(path: Path | None) -> str | None:
    """Why ``BRIDGE_CA_BUNDLE`` cannot be used to verify the systems (None: it can, or
    none is set and the system store is used)."""
    if path is None:
        return None
    name = env_name("ca_bundle")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{name}: {path}: cannot read it: {exc.strerror or exc}"
    if PEM_CERTIFICATE not in data:
        return f"{name}: {path}: not a PEM CA bundle (no {PEM_CERTIFICATE.decode()} line)"
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError) as exc:
        return f"{name}: {path}: not a usable PEM CA bundle: {exc}"
    return None


def _missing(*fields: tuple[str, str, object]) -> list[str]:
    return [
        f"{env_name(section, name)}: required" for section, name, value in fields if value is None
    ]


def _raise_if(problems: list[str], title: str) -> None:
    if problems:
        raise ConfigError(f"{title}:\n  " + "\n  ".join(problems), detail=problems)


def secrets_dir() -> Path | None:
    """``BRIDGE_SECRETS_DIR``, else ``/run/secrets`` when it exists (container secrets)."""
    configured = os.environ.get(f"{ENV_PREFIX}SECRETS_DIR")
    if configured:
        return Path(configured)
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{env_name(*loc)}: {message}"


def load_settings(
    *,
    env_file: Path | None = DEFAULT_ENV_FILE,
    secrets: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Read the settings; raise one ``ConfigError`` listing every bad field and why."""
    secret_path = secrets if secrets is not None else secrets_dir()
    if secret_path is not None and not secret_path.is_dir():
        raise ConfigError(f"{ENV_PREFIX}SECRETS_DIR: not a directory: {secret_path}")
    try:
        return Settings(
            _env_file=env_file,
            _secrets_dir=secret_path,
            **overrides,
        )
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise ConfigError(
            "invalid settings:\n  " + "\n  ".join(problems), detail=problems
        ) from None


def _flatten(values: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in values.items():
        path = (*prefix, key.lower())
        if isinstance(value, Mapping):
            yield from _flatten(value, path)
        else:
            yield path


def setting_origins(
    *,
    env_file: Path | None = DEFAULT_ENV_FILE,
    secrets: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Origin]:
    """Where each explicitly set field came from, keyed by dotted path
    (``salesforce.client_id``); fields absent here have their default."""
    secret_path = secrets if secrets is not None else secrets_dir()
    layers: list[tuple[Origin, PydanticBaseSettingsSource | Mapping[str, Any]]] = []
    if secret_path is not None and secret_path.is_dir():
        flat = SecretsSettingsSource(Settings, secrets_dir=secret_path)
        layers.append(("secrets dir", BridgeSecretsSource(flat, secrets_dir=secret_path)))
    if env_file is not None:
        layers.append((".env", DotEnvSettingsSource(Settings, env_file=env_file)))
    layers.append(("env", EnvSettingsSource(Settings)))
    layers.append(("override", dict(overrides or {})))
    origins: dict[str, Origin] = {}
    for origin, source in layers:  # lowest priority first, so later layers win
        values = source() if isinstance(source, PydanticBaseSettingsSource) else source
        for path in _flatten(values):
            origins[".".join(path)] = origin
    return origins
