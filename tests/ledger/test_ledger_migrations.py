"""Migrations on SQLite and PostgreSQL; bad databases give a specific LedgerError."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from bridge.errors import LedgerError
from bridge.ledger import SqlLedger, migrate
from bridge.ledger.rows import metadata

TABLES = {
    "correlation",
    "segment",
    "inbox_event",
    "outbox_command",
    "cursor",
    "reconcile_run",
    "finding",
}


def tables(ledger: SqlLedger) -> set[str]:
    return set(inspect(ledger.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_from_empty_and_downgrade(ledger_url: str) -> None:
    ledger = SqlLedger(ledger_url)
    assert ledger.current() is None
    ledger.upgrade()
    assert ledger.current() == migrate.head()
    assert tables(ledger) == TABLES
    ledger.check_current()
    ledger.upgrade()  # idempotent
    ledger.downgrade("base")
    assert ledger.current() is None
    assert tables(ledger) == set()
    ledger.upgrade()
    assert tables(ledger) == TABLES
    ledger.close()


def test_autogenerate_finds_no_difference(ledger: SqlLedger) -> None:
    with ledger.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_check_current_refuses_an_unmigrated_ledger(ledger_url: str) -> None:
    ledger = SqlLedger(ledger_url)
    with pytest.raises(LedgerError, match="bridge db upgrade"):
        ledger.check_current()
    ledger.close()


def _broken_scripts(tmp_path: Path) -> Path:
    """The shipped migrations plus one that creates a table and then fails."""
    scripts = tmp_path / "scripts"
    shutil.copytree(migrate.migrations_dir(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    # on top of whatever the newest shipped migration is
    (scripts / "versions" / "9999_broken.py").write_text(
        '"""broken"""\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n"
        'revision = "9999"\n'
        f"down_revision = {migrate.head()!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n"
        "def upgrade():\n"
        '    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))\n'
        '    op.execute("SELECT * FROM no_such_table")\n'
        "def downgrade():\n"
        "    pass\n"
    )
    return scripts


def test_a_migration_failing_half_way_leaves_the_previous_revision(
    ledger: SqlLedger, tmp_path: Path
) -> None:
    scripts = _broken_scripts(tmp_path)
    with pytest.raises(LedgerError, match=f"left at revision {migrate.head()}"):
        migrate.upgrade(ledger.engine, "head", scripts)
    assert ledger.current() == migrate.head()
    assert "half_done" not in tables(ledger)


def test_a_ledger_newer_than_the_bridge_is_named(ledger: SqlLedger) -> None:
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff'")
    with pytest.raises(LedgerError, match="unknown to this bridge"):
        ledger.check_current()


def test_corrupt_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    ledger = SqlLedger(f"sqlite:///{path}")
    with pytest.raises(LedgerError, match="not a SQLite database"):
        ledger.current()


def test_unreachable_postgres() -> None:
    ledger = SqlLedger("postgresql://bridge:hunter2@127.0.0.1:1/ledger")
    with pytest.raises(LedgerError, match="unreachable") as info:
        ledger.current()
    assert "hunter2" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x@y/z", "unsupported ledger URL"),
        ("sqlite://", "must be a file"),
        ("sqlite:///:memory:", "must be a file"),
        ("::::", "invalid ledger URL"),
    ],
)
def test_bad_ledger_urls(url: str, message: str) -> None:
    with pytest.raises(LedgerError, match=message):
        SqlLedger(url)


def test_sqlite_connection_settings(sqlite_ledger: SqlLedger) -> None:
    with sqlite_ledger.engine.connect() as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "synchronous": 2,
        "busy_timeout": 30000,
    }
