"""Shared output helpers of the command groups."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import SecretStr

from bridge.app.commands.common import cell, columns, jsonable, parse_when, write_csv, write_jsonl
from bridge.errors import ConfigError

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("15m", NOW - timedelta(minutes=15)),
        ("1h", NOW - timedelta(hours=1)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        (" 3H ", NOW - timedelta(hours=3)),
        ("2026-01-01T08:00:00", datetime(2026, 1, 1, 8, tzinfo=UTC)),
        ("2026-01-01T08:00:00+02:00", datetime(2026, 1, 1, 6, tzinfo=UTC)),
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1y", "-1h", "", "h1"])
def test_parse_when_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--until: .* is neither a duration"):
        parse_when(text, NOW, "--until")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (datetime(2026, 1, 5, 14, 0, tzinfo=timezone(timedelta(hours=2))), "2026-01-05 12:00:00"),
        ({"a": [1, 2]}, '{"a":[1,2]}'),
        ({}, ""),
        (SecretStr("x"), "********"),
        (Path("/a/b"), "/a/b"),
        (3, "3"),
    ],
)
def test_cell(value: object, expected: str) -> None:
    assert cell(value) == expected


def test_jsonable_masks_secrets_and_formats_times() -> None:
    data = {"when": NOW, "secret": SecretStr("hunter2"), "nested": [{"p": Path("x")}]}
    assert jsonable(data) == {
        "when": "2026-01-05T12:00:00+00:00",
        "secret": "********",
        "nested": [{"p": "x"}],
    }


def test_csv_and_jsonl() -> None:
    rows = [{"id": "a", "at": NOW, "data": {"k": 1}, "x": None}, {"id": "b"}]
    out = io.StringIO()
    assert write_csv(rows, columns("id", "at", "data", "x"), out) == 2
    assert out.getvalue().splitlines() == [
        "id,at,data,x",
        'a,2026-01-05T12:00:00+00:00,"{""k"":1}",',
        "b,,,",
    ]
    lines = io.StringIO()
    assert write_jsonl(rows, lines) == 2
    assert lines.getvalue().splitlines()[0] == (
        '{"id":"a","at":"2026-01-05T12:00:00+00:00","data":{"k":1},"x":null}'
    )
