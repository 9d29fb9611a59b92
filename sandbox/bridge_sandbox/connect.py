"""Point a bridge at running sandboxes: the settings (and an env file) that connect the
real clients to the emulated org and instance."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.app.settings import ENV_PREFIX, NESTED_DELIMITER, Settings, load_settings
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.tables import DIRECTORY as MAPPINGS_DIRECTORY

# A ConversationChannelDefinition developer name ({prefix}_{name}) the sandbox accepts.
AUTHORIZATION_CONTEXT = "Sandbox_BridgeChannel"
# What a standalone sandbox leaves in its state directory for ``set -a; . FILE``.
SALESFORCE_ENV = "salesforce.env"
SERVICENOW_ENV = "servicenow.env"


def salesforce_values(sf: SalesforceSandbox) -> dict[str, Any]:
    """Nested setting values for the sandbox org: one auth method (client credentials, for
    which the token endpoint is the instance's My Domain URL), the Interaction Service API
    host and authorization context, the CA bundle and the sandbox's mapping tables."""
    return {
        "ca_bundle": sf.ca_bundle,
        "mappings_dir": MAPPINGS_DIRECTORY,
        "salesforce": {
            "instance_url": sf.instance_url,
            "login_url": sf.instance_url,
            "client_id": sf.client_id,
            "client_secret": sf.client_secret,
            "scrt_url": sf.scrt_url,
            "pubsub_url": sf.pubsub_url,
            "org_id": sf.org_id,
            "authorization_context": AUTHORIZATION_CONTEXT,
        },
    }


def servicenow_values(sn: ServiceNowSandbox) -> dict[str, Any]:
    """Nested setting values for the sandbox instance (basic auth), its CA bundle and the
    sandbox's mapping tables."""
    return {
        "ca_bundle": sn.ca_bundle,
        "mappings_dir": MAPPINGS_DIRECTORY,
        "servicenow": {
            "instance_url": sn.instance_url,
            "username": sn.username,
            "password": sn.password,
        },
    }


def sandbox_values(sf: SalesforceSandbox, sn: ServiceNowSandbox) -> dict[str, Any]:
    """Nested setting values for both sandboxes (both share one CA bundle) and their
    mapping tables (the product's default crosswalk names no seed record)."""
    return {**servicenow_values(sn), **salesforce_values(sf)}


def sandbox_settings(sf: SalesforceSandbox, sn: ServiceNowSandbox, **overrides: Any) -> Settings:
    """Settings for a bridge on these sandboxes; ``overrides`` win (e.g. ``ledger_url``)."""
    values = sandbox_values(sf, sn)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return load_settings(env_file=None, **values)


def env_lines(values: Mapping[str, Any]) -> list[str]:
    """``BRIDGE_*`` assignments for nested setting values, quoted for ``sh`` and dotenv."""
    lines: list[str] = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            lines += [
                f"{ENV_PREFIX}{key.upper()}{NESTED_DELIMITER}{k.upper()}={shlex.quote(str(v))}"
                for k, v in value.items()
            ]
        else:
            lines.append(f"{ENV_PREFIX}{key.upper()}={shlex.quote(str(value))}")
    return lines


def write_env_file(path: Path, values: Mapping[str, Any], title: str) -> Path:
    """An env file (mode 0600: it holds secrets), written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("\n".join([f"# {title}", *env_lines(values)]) + "\n")
    partial.chmod(0o600)
    partial.replace(path)
    return path


def write_env(path: Path, sf: SalesforceSandbox, sn: ServiceNowSandbox) -> Path:
    """An env file with the sandbox connection, for ``set -a; . FILE; set +a``."""
    title = "Connection to the bridge sandboxes (loopback, throw-away CA)."
    return write_env_file(path, sandbox_values(sf, sn), title)


def write_salesforce_env(directory: Path, sf: SalesforceSandbox) -> Path:
    """``DIR/salesforce.env``: the settings that connect a bridge to this sandbox org."""
    title = f"Sandbox Salesforce org {sf.org_id} (loopback, throw-away CA)."
    return write_env_file(directory / SALESFORCE_ENV, salesforce_values(sf), title)


def write_servicenow_env(directory: Path, sn: ServiceNowSandbox) -> Path:
    """``DIR/servicenow.env``: the settings that connect a bridge to this sandbox instance."""
    title = "Sandbox ServiceNow instance (loopback, throw-away CA)."
    return write_env_file(directory / SERVICENOW_ENV, servicenow_values(sn), title)
