"""`bridge config ...`: the effective settings and where each came from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import typer
from pydantic import BaseModel, SecretStr

from bridge.app.commands.common import JsonFlag, columns, emit, mask
from bridge.app.settings import Settings, env_name, load_settings, setting_origins
from bridge.ledger.database import masked_url

app = typer.Typer(help="Inspect the bridge's settings.", no_args_is_help=True)


def _display(path: tuple[str, ...], value: Any, settings: Settings) -> Any:
    if isinstance(value, SecretStr):
        return mask(value)
    if path == ("ledger_url",):
        # The effective URL, never with its password.
        return masked_url(settings.effective_ledger_url)
    return value


def _walk(model: BaseModel, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _walk(value, (*prefix, name))
        else:
            yield (*prefix, name), value


def settings_rows(settings: Settings, origins: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per setting: its variable, masked value and source."""
    return [
        {
            "setting": ".".join(path),
            "env": env_name(*path),
            "value": _display(path, value, settings),
            "source": origins.get(".".join(path), "default"),
        }
        for path, value in _walk(settings)
    ]


@app.command("show")
def show(as_json: JsonFlag = False) -> None:
    """Print every effective setting (secrets masked) and where it came from:
    default, env, .env, secrets dir."""
    settings = load_settings()
    rows = settings_rows(settings, setting_origins())
    emit(rows, columns("env", "value", "source"), as_json=as_json, title="settings")
