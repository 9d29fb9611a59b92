"""Database engines for the ledger: SQLite (one file, WAL) or PostgreSQL (psycopg 3).

Database errors leave this package as ``LedgerError`` with a message that names the
ledger (password masked) and what was being done, never as a driver traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from bridge.errors import BridgeError, LedgerError

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "ledger_read_only"


def normalize_url(url: str) -> URL:
    """Parse the ledger URL; plain ``postgresql://`` means psycopg 3."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise LedgerError(f"invalid ledger URL {url!r}: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "postgresql+psycopg"):
        raise LedgerError(
            f"unsupported ledger URL {parsed.render_as_string(hide_password=True)}: "
            "use sqlite:///path or postgresql+psycopg://user@host/db"
        )
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun explicitly (see _sqlite_begin), not by the sqlite3 module.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cur.close()


def _sqlite_begin(conn: Any) -> None:
    # Writers take the lock up front: no deadlock upgrading a read lock, and claimers
    # of the outbox are serialised. Audit reads begin deferred and never block writers.
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine with the ledger's connection settings for the URL's database."""
    parsed = normalize_url(url)
    if parsed.drivername == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise LedgerError("the SQLite ledger must be a file: sqlite:///path/to/ledger.db")
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_size=8,
            max_overflow=8,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        connect_args={"connect_timeout": 10},
    )


def masked_url(url: str) -> str:
    """A ledger URL as it may be shown: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


def describe(engine: Engine) -> str:
    """The ledger's URL with the password masked, for messages."""
    return engine.url.render_as_string(hide_password=True)


def _reason(exc: sa_exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def guard(engine: Engine, doing: str) -> Iterator[None]:
    """Turn database failures into one ``LedgerError`` naming the ledger and the action."""
    try:
        yield
    except BridgeError:
        raise
    except sa_exc.OperationalError as exc:
        raise LedgerError(
            f"ledger {describe(engine)} is unreachable or unusable while {doing}: {_reason(exc)}"
        ) from exc
    except sa_exc.SQLAlchemyError as exc:
        reason = _reason(exc)
        if "not a database" in reason:
            reason += " (the file is corrupt or not a SQLite database)"
        raise LedgerError(f"ledger {describe(engine)}: error while {doing}: {reason}") from exc
