"""Alembic environment for the ledger.

The bridge runs migrations programmatically (``bridge.ledger.migrate``) and hands over an
open connection in ``config.attributes["connection"]``; the ``alembic`` command line works
too, with the URL from ``sqlalchemy.url`` or the bridge settings.
"""

from alembic import context
from sqlalchemy import Connection, create_engine

from bridge.app.settings import load_settings
from bridge.ledger.rows import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    # One transaction for the whole upgrade: a migration failing half-way leaves the
    # ledger at the revision it started from (SQLite DDL is transactional too).
    if connection.in_transaction():
        context.run_migrations()
    else:
        with connection.begin():
            context.run_migrations()


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    return load_settings().effective_ledger_url


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        with create_engine(_url()).connect() as conn:
            _run(conn)
