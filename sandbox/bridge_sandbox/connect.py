"""Point a bridge at running sandboxes: the settings (and an env file) that connect the
real clients to the emulated org and instance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.app.settings import Settings, load_settings
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.tables import DIRECTORY as MAPPINGS_DIRECTORY

# A ConversationChannelDefinition developer name ({prefix}_{name}) the sandbox accepts.
AUTHORIZATION_CONTEXT = "Sandbox_BridgeChannel"


def sandbox_values(sf: SalesforceSandbox, sn: ServiceNowSandbox) -> dict[str, Any]:
    """Nested setting values for both sandboxes (both share one CA bundle) and their
    mapping tables (the product's default crosswalk names no seed record)."""
    return {
        "ca_bundle": sf.ca_bundle,
        "mappings_dir": MAPPINGS_DIRECTORY,
        "salesforce": {
            "instance_url": sf.instance_url,
            "login_url": sf.instance_url,
            "client_id": sf.client_id,
            "client_secret": sf.client_secret,
            "scrt_url": sf.scrt_url,
            "org_id": sf.org_id,
            "authorization_context": AUTHORIZATION_CONTEXT,
        },
        "servicenow": {
            "instance_url": sn.instance_url,
            "username": sn.username,
            "password": sn.password,
        },
    }


def sandbox_settings(sf: SalesforceSandbox, sn: ServiceNowSandbox, **overrides: Any) -> Settings:
    """Settings for a bridge on these sandboxes; ``overrides`` win (e.g. ``ledger_url``)."""
    values = sandbox_values(sf, sn)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return load_settings(env_file=None, **values)


def write_env(path: Path, sf: SalesforceSandbox, sn: ServiceNowSandbox) -> Path:
    """An env file with the sandbox connection, for ``bridge --env-file`` / ``set -a; .``."""
    lines = ["# Connection to the bridge sandboxes (loopback, throw-away CA)."]
    for key, value in sandbox_values(sf, sn).items():
        if isinstance(value, dict):
            lines += [f"BRIDGE_{key.upper()}__{k.upper()}={v}" for k, v in value.items()]
        else:
            lines.append(f"BRIDGE_{key.upper()}={value}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path
