"""The layout's rules, read from the source: only the ledger package talks to the database
(no SQLAlchemy / SQLModel import, no ``.session`` outside ``bridge/ledger``), and the
engine and the domain stay pure (no adapter, ledger or flow import)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"
DATABASE_MODULES = ("sqlalchemy", "sqlmodel", "alembic", "psycopg")


def _modules() -> list[Path]:
    return sorted(BRIDGE.rglob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(BRIDGE.parent)}:{line}"


def test_the_tree_is_there() -> None:
    assert len(_modules()) > 40
    assert (BRIDGE / "ledger" / "sql.py").is_file()


def test_only_the_ledger_touches_the_database() -> None:
    offenders = []
    for path in _modules():
        if path.is_relative_to(BRIDGE / "ledger"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        offenders += [
            f"{_where(path, line)} imports {name}"
            for line, name in _imports(tree)
            if name.split(".")[0] in DATABASE_MODULES
        ]
        offenders += [
            f"{_where(path, node.lineno)} uses .{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr in ("session", "_session")
            and not path.is_relative_to(BRIDGE / "adapters")  # HTTP sessions live there
        ]
    assert offenders == []


def test_no_http_session_is_called_a_database_session_in_the_adapters() -> None:
    """The adapters' ``session`` is a requests.Session; none of them imports the ledger's
    database layer."""
    for path in (BRIDGE / "adapters").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        names = [name for _, name in _imports(tree)]
        assert not [n for n in names if n.startswith(("bridge.ledger.sql", "sqlalchemy"))], path


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        (
            "domain",
            ("bridge.ledger", "bridge.flow", "bridge.adapters", "bridge.app", "bridge.engine"),
        ),
        ("engine", ("bridge.ledger", "bridge.flow", "bridge.adapters", "bridge.app")),
    ],
)
def test_the_middle_is_pure(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = []
    for path in sorted((BRIDGE / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        offenders += [
            f"{_where(path, line)} imports {name}"
            for line, name in _imports(tree)
            if name.startswith(forbidden)
        ]
    assert offenders == []
