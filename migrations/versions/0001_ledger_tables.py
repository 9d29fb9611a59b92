"""Ledger tables: correlation, segment, inbox_event, outbox_command, cursor,
reconcile_run, finding.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _id(name: str = "id") -> sa.Column:
    return sa.Column(name, sa.String(), nullable=False)


def _str(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(), nullable=nullable)


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, TS, nullable=nullable)


def _json(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.JSON(), nullable=nullable)


def _index(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column])


CORRELATION_IDS = (
    "sf_work_item_id",
    "sf_psr_id",
    "sf_agent_work_id",
    "sf_conversation_id",
    "sf_queue_id",
    "sf_service_channel_id",
    "sf_user_id",
    "sn_document_sys_id",
    "sn_work_item_sys_id",
    "sn_queue_sys_id",
    "sn_user_sys_id",
)
SEGMENT_IDS = (
    "sf_queue_id",
    "sn_queue_sys_id",
    "sf_user_id",
    "sn_user_sys_id",
    "sn_work_item_sys_id",
    "sf_agent_work_id",
    "sf_psr_id",
)


def upgrade() -> None:
    op.create_table(
        "correlation",
        _id(),
        _str("direction", nullable=False),
        _str("state", nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *(_str(name) for name in CORRELATION_IDS[:7]),
        _str("sn_document_table"),
        *(_str(name) for name in CORRELATION_IDS[7:]),
        _json("data"),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("closed_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("correlation", "direction", "state", "created_at", "updated_at", *CORRELATION_IDS)

    op.create_table(
        "cursor",
        _id("stream"),
        sa.Column("position", sa.Text(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("stream"),
    )

    op.create_table(
        "reconcile_run",
        _id(),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        _json("reconcilers"),
        _str("mode", nullable=False),
        _str("status", nullable=False),
        _json("summary"),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("reconcile_run", "started_at")

    op.create_table(
        "finding",
        _id(),
        _str("run_id", nullable=False),
        _str("reconciler", nullable=False),
        _str("kind", nullable=False),
        _str("subject", nullable=False),
        _str("correlation_id"),
        _str("action"),
        _str("status", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _json("detail"),
        _ts("created_at"),
        sa.ForeignKeyConstraint(["run_id"], ["reconcile_run.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("finding", "correlation_id", "run_id")

    op.create_table(
        "inbox_event",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("source", nullable=False),
        _str("stream", nullable=False),
        _str("source_event_id", nullable=False),
        _str("kind", nullable=False),
        _ts("occurred_at"),
        _ts("received_at"),
        _json("payload"),
        _str("correlation_id"),
        _str("status", nullable=False),
        _ts("processed_at", nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["correlation_id"], ["correlation.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "source_event_id", name="uq_inbox_event_source"),
    )
    _index("inbox_event", "correlation_id", "received_at")
    op.create_index("ix_inbox_event_status_id", "inbox_event", ["status", "id"])

    op.create_table(
        "segment",
        _id(),
        _str("correlation_id", nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        _str("external_segment_id", nullable=False),
        _str("kind", nullable=False),
        *(_str(name) for name in SEGMENT_IDS),
        _ts("opened_at"),
        _ts("closed_at", nullable=True),
        _str("outcome"),
        _json("detail"),
        sa.ForeignKeyConstraint(["correlation_id"], ["correlation.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("correlation_id", "seq", name="uq_segment_seq"),
        sa.UniqueConstraint("external_segment_id"),
    )
    _index("segment", "correlation_id", *SEGMENT_IDS)

    op.create_table(
        "outbox_command",
        _id(),
        _str("idempotency_key", nullable=False),
        _str("correlation_id", nullable=False),
        _str("segment_id"),
        _str("system", nullable=False),
        _str("operation", nullable=False),
        _json("payload"),
        _str("status", nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", nullable=True),
        _str("claimed_by"),
        _ts("lease_until", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("completed_at", nullable=True),
        _json("response", nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("caused_by_event_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["caused_by_event_id"], ["inbox_event.id"]),
        sa.ForeignKeyConstraint(["correlation_id"], ["correlation.id"]),
        sa.ForeignKeyConstraint(["segment_id"], ["segment.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    _index("outbox_command", "segment_id")
    op.create_index("ix_outbox_command_due", "outbox_command", ["status", "next_attempt_at"])
    op.create_index("ix_outbox_command_order", "outbox_command", ["correlation_id", "created_at"])


def downgrade() -> None:
    # Dropping a table drops its indexes on both databases.
    for name in (
        "outbox_command",
        "segment",
        "inbox_event",
        "finding",
        "reconcile_run",
        "cursor",
        "correlation",
    ):
        op.drop_table(name)
