"""What every command shares: the global ``--debug`` flag, opening the ledger, and output
in the three shapes users ask for (rich tables for people, JSON / JSON lines / CSV for
machines). Rows are mappings; columns say which keys to show and how.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from pydantic import BaseModel, SecretStr
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bridge.app.settings import load_settings
from bridge.errors import ConfigError
from bridge.ledger import SqlLedger


@dataclass
class _State:
    debug: bool = False


state = _State()

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


PIPE_WIDTH = 200


def console() -> Console:
    """Standard output, resolved at call time (so redirected streams are honoured).
    Piped output is not squeezed to 80 columns: ids stay whole for grep and less."""
    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out.width = max(out.width, PIPE_WIDTH)
    return out


def jsonable(value: Any) -> Any:
    """Plain JSON values from models, dataclasses, datetimes, paths and secrets (masked)."""
    if isinstance(value, SecretStr):
        return mask(value)
    if isinstance(value, BaseModel):
        return jsonable(dict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return jsonable(vars(value))
    return value


def record(row: BaseModel) -> dict[str, Any]:
    """A ledger row as a dict, columns in their declared order."""
    return {name: getattr(row, name) for name in type(row).model_fields}


def mask(secret: SecretStr | None) -> str | None:
    return None if secret is None else "********"


def cell(value: Any) -> str:
    """One table cell: short UTC timestamps, empty for None, compact JSON for structures."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(jsonable(value), separators=(",", ":")) if value else ""
    return str(jsonable(value))


@dataclass(frozen=True)
class Column:
    """A column of tabular output: the row key, its header, and an optional formatter."""

    key: str
    header: str | None = None
    fmt: Callable[[Any], str] = cell

    @property
    def title(self) -> str:
        return self.header or self.key


def columns(*keys: str | Column) -> list[Column]:
    return [k if isinstance(k, Column) else Column(k) for k in keys]


def print_json(data: Any) -> None:
    typer.echo(json.dumps(jsonable(data), indent=2))


def print_table(
    rows: Iterable[Mapping[str, Any]], cols: Sequence[Column], title: str | None = None
) -> None:
    table = Table(
        title=title,
        title_justify="left",
        show_edge=False,
        pad_edge=False,
        min_width=len(title or ""),  # a title never wraps
    )
    for c in cols:
        table.add_column(c.title, overflow="fold")
    for row in rows:
        # Text, not markup: values such as "[processed]" are data, shown as they are.
        table.add_row(*(Text(c.fmt(row.get(c.key))) for c in cols))
    console().print(table)


def print_fields(fields: Mapping[str, Any], title: str | None = None) -> None:
    """A record as a two-column key / value table."""
    kv = [{"field": k, "value": v} for k, v in fields.items()]
    print_table(kv, columns("field", "value"), title)


def emit(
    rows: Sequence[Mapping[str, Any]],
    cols: Sequence[Column],
    *,
    as_json: bool,
    title: str | None = None,
) -> None:
    """Rows as JSON (every key) or as a table (the given columns)."""
    if as_json:
        print_json(list(rows))
    elif rows:
        print_table(rows, cols, title)
    else:
        typer.echo("(none)")


def write_jsonl(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    n = 0
    for row in rows:
        out.write(json.dumps(jsonable(row), separators=(",", ":")) + "\n")
        n += 1
    return n


def write_csv(rows: Iterable[Mapping[str, Any]], cols: Sequence[Column], out: IO[str]) -> int:
    """CSV with a header; timestamps in ISO 8601, structures as compact JSON."""
    writer = csv.writer(out)
    writer.writerow([c.key for c in cols])
    n = 0
    for row in rows:
        writer.writerow([_csv_value(row.get(c.key)) for c in cols])
        n += 1
    return n


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    plain = jsonable(value)
    return (
        json.dumps(plain, separators=(",", ":")) if isinstance(plain, (dict, list)) else str(plain)
    )


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, option: str) -> timedelta:
    """A length of time: ``0s``, ``90s``, ``15m``, ``1h``, ``2d``, ``1w``."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ConfigError(f"{option}: {text!r} is not a duration (0s, 90s, 15m, 1h)")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def parse_when(text: str, now: datetime, option: str = "--since") -> datetime:
    """A point in time: a duration back from ``now`` (``90s``, ``15m``, ``1h``, ``2d``,
    ``1w``) or an ISO 8601 timestamp (UTC when it has no offset)."""
    match = _DURATION.match(text.strip().lower())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{option}: {text!r} is neither a duration (15m, 1h, 2d) nor an ISO timestamp"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def open_ledger(*, check: bool = True) -> SqlLedger:
    """The configured ledger; by default refuses one that is not fully migrated."""
    ledger = SqlLedger.from_settings(load_settings())
    if check:
        ledger.check_current()
    return ledger
