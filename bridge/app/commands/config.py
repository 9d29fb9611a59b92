"""`bridge config ...`: the effective settings and where each came from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import typer
from pydantic import BaseModel, SecretStr
from rich.console import Console

from bridge.app.commands.common import JsonFlag, columns, emit, mask
from bridge.app.settings import (
    Settings,
    ca_bundle_problem,
    env_name,
    load_settings,
    setting_origins,
)
from bridge.domain.mapping import check_tables, default_directory
from bridge.ledger.database import masked_url

# At most this many mapping problems are listed; `bridge mappings check` lists them all.
SHOWN_TABLE_PROBLEMS = 10

app = typer.Typer(help="Inspect the bridge's settings.", no_args_is_help=True)


def _display(path: tuple[str, ...], value: Any, settings: Settings) -> Any:
    if isinstance(value, SecretStr):
        return mask(value)
    if path == ("ledger_url",):
        # The effective URL, never with its password.
        return masked_url(settings.effective_ledger_url)
    if path == ("mappings_dir",) and value is None:
        return f"{default_directory()} (packaged)"
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


def setting_problems(settings: Settings) -> list[str]:
    """What ``bridge run`` would refuse at start, one line each: a mappings directory that
    is missing or whose tables do not load, a CA bundle that is not PEM."""
    problems: list[str] = []
    name = env_name("mappings_dir")
    directory = settings.mappings_dir or default_directory()
    if not directory.is_dir():
        packaged = "" if settings.mappings_dir else " (the packaged tables)"
        problems.append(f"{name}: {directory} is not a directory{packaged}")
    else:
        _, found = check_tables(directory)
        lines = [" ".join(str(p).split()) for p in found]  # each problem on one line
        problems += [f"{name}: {directory}: {line}" for line in lines[:SHOWN_TABLE_PROBLEMS]]
        if found:
            more = len(found) - SHOWN_TABLE_PROBLEMS
            problems.append(
                f"{name}: {len(found)} problem(s) in the tables"
                + (f" ({more} more not shown)" if more > 0 else "")
                + f": see `bridge mappings check --dir {directory}`"
            )
    ca = ca_bundle_problem(settings.ca_bundle)
    if ca:
        problems.append(ca)
    return problems


@app.command("show")
def show(as_json: JsonFlag = False) -> None:
    """Print every effective setting (secrets masked) and where it came from:
    default, env, .env, secrets dir. Then what `bridge run` would refuse (a mappings
    directory that is missing or broken, a CA bundle that is not PEM): one line each on
    standard error, and exit 2."""
    settings = load_settings()
    rows = settings_rows(settings, setting_origins())
    emit(rows, columns("env", "value", "source"), as_json=as_json, title="settings")
    problems = setting_problems(settings)
    if problems:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        for problem in problems:
            err.print(f"problem: {problem}", markup=False)
        raise typer.Exit(2)
