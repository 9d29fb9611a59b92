"""Alembic, configured in code: the migrations are found in a source checkout
(``migrations/``) and in an installed wheel (``bridge/_migrations``); alembic.ini is optional.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine

from bridge.errors import LedgerError
from bridge.ledger.database import describe, guard

_PACKAGE = Path(__file__).resolve().parent.parent


def migrations_dir() -> Path:
    """Where the migration scripts are: packaged first, then the source checkout."""
    for candidate in (_PACKAGE / "_migrations", _PACKAGE.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise LedgerError("ledger migrations not found (neither bridge/_migrations nor migrations/)")


def alembic_config(scripts: Path | None = None) -> Config:
    """Alembic configured in code; ``scripts`` overrides where the migrations are."""
    cfg = Config()
    cfg.set_main_option("script_location", str(scripts or migrations_dir()))
    return cfg


def head(scripts: Path | None = None) -> str:
    """The newest migration this bridge ships."""
    revision = ScriptDirectory.from_config(alembic_config(scripts)).get_current_head()
    if revision is None:
        raise LedgerError("ledger migrations have no head revision")
    return revision


def current(engine: Engine) -> str | None:
    """The revision the ledger is at (None: never migrated)."""
    with guard(engine, "reading the migration revision"), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _run(engine: Engine, action: str, revision: str, scripts: Path | None) -> None:
    cfg = alembic_config(scripts)
    before = current(engine)
    try:
        with guard(engine, f"migrating ({action} to {revision})"), engine.connect() as conn:
            cfg.attributes["connection"] = conn
            if action == "upgrade":
                command.upgrade(cfg, revision)
            else:
                command.downgrade(cfg, revision)
    except LedgerError as exc:
        raise LedgerError(
            f"{exc.message}; the ledger was left at revision {before or '(empty)'}"
        ) from exc
    except CommandError as exc:
        raise LedgerError(f"cannot {action} ledger {describe(engine)}: {exc}") from exc


def upgrade(engine: Engine, revision: str = "head", scripts: Path | None = None) -> None:
    _run(engine, "upgrade", revision, scripts)


def downgrade(engine: Engine, revision: str, scripts: Path | None = None) -> None:
    _run(engine, "downgrade", revision, scripts)


def check_current(engine: Engine) -> None:
    """Raise ``LedgerError`` unless the ledger is at this bridge's head revision."""
    at, want = current(engine), head()
    if at == want:
        return
    if at is None:
        raise LedgerError(f"ledger {describe(engine)} has no tables yet: run `bridge db upgrade`")
    known = {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
    if at not in known:
        raise LedgerError(
            f"ledger {describe(engine)} is at revision {at}, unknown to this bridge "
            f"(newer version?); this bridge expects {want}"
        )
    raise LedgerError(
        f"ledger {describe(engine)} is at revision {at}, this bridge needs {want}: "
        "run `bridge db upgrade`"
    )
