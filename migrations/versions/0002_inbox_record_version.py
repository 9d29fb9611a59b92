"""Inbox events name the record they are a version of (record_key, record_version): a
ServiceNow delivery older than the newest version held is recorded as stale.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN of a nullable column: no table rebuild on SQLite, instant on PostgreSQL.
    op.add_column("inbox_event", sa.Column("record_key", sa.String(), nullable=True))
    op.add_column("inbox_event", sa.Column("record_version", sa.Integer(), nullable=True))
    op.create_index(
        "ix_inbox_event_record", "inbox_event", ["source", "record_key", "record_version"]
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_event_record", table_name="inbox_event")
    with op.batch_alter_table("inbox_event") as batch:
        batch.drop_column("record_version")
        batch.drop_column("record_key")
