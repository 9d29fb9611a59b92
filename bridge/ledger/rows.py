"""Ledger tables (SQLModel). Timestamps are timezone-aware UTC on every database.

Unique keys carry idempotency: (source, source_event_id) on inbox events, the idempotency
key on outbox commands, ``external_segment_id`` on segments.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Index, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

DIRECTIONS = ("sf_to_sn", "sn_to_sf")
SEGMENT_KINDS = ("offer", "transfer", "route")
SEGMENT_OUTCOMES = (
    "accepted",
    "declined",
    "timed_out",
    "transferred",
    "cancelled",
    "abandoned",
    "closed",
)
EVENT_SOURCES = ("salesforce", "servicenow", "reconciler")
EVENT_STATUSES = ("pending", "processed", "echo", "skipped", "error")
COMMAND_STATUSES = ("pending", "claimed", "sent", "confirmed", "failed", "dead", "cancelled")
UNFINISHED_COMMAND_STATUSES = ("pending", "claimed", "sent", "failed")
RUN_MODES = ("dry_run", "apply")
FINDING_STATUSES = ("planned", "applied", "failed", "unresolved", "skipped")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, always returns aware UTC datetimes (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the ledger stores aware UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _json() -> Any:
    return Field(default_factory=dict, sa_type=JSON)


class Correlation(SQLModel, table=True):
    """One conversation across both systems."""

    __tablename__ = "correlation"

    id: str = Field(default_factory=new_id, primary_key=True)
    direction: str = Field(index=True)
    state: str = Field(index=True)
    version: int = Field(default=1)
    sf_work_item_id: str | None = Field(default=None, index=True)
    sf_psr_id: str | None = Field(default=None, index=True)
    sf_agent_work_id: str | None = Field(default=None, index=True)
    sf_conversation_id: str | None = Field(default=None, index=True)
    sf_queue_id: str | None = Field(default=None, index=True)
    sf_service_channel_id: str | None = Field(default=None, index=True)
    sf_user_id: str | None = Field(default=None, index=True)
    sn_document_table: str | None = Field(default=None)
    sn_document_sys_id: str | None = Field(default=None, index=True)
    sn_work_item_sys_id: str | None = Field(default=None, index=True)
    sn_queue_sys_id: str | None = Field(default=None, index=True)
    sn_user_sys_id: str | None = Field(default=None, index=True)
    data: dict[str, Any] = _json()
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    closed_at: datetime | None = _ts()


class Segment(SQLModel, table=True):
    """One offer / transfer / route leg of a correlation, in order."""

    __tablename__ = "segment"
    __table_args__ = (UniqueConstraint("correlation_id", "seq", name="uq_segment_seq"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    correlation_id: str = Field(foreign_key="correlation.id", index=True)
    seq: int
    external_segment_id: str = Field(unique=True)
    kind: str
    sf_queue_id: str | None = Field(default=None, index=True)
    sn_queue_sys_id: str | None = Field(default=None, index=True)
    sf_user_id: str | None = Field(default=None, index=True)
    sn_user_sys_id: str | None = Field(default=None, index=True)
    sn_work_item_sys_id: str | None = Field(default=None, index=True)
    sf_agent_work_id: str | None = Field(default=None, index=True)
    sf_psr_id: str | None = Field(default=None, index=True)
    opened_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: datetime | None = _ts()
    outcome: str | None = None
    detail: dict[str, Any] = _json()


class InboxEvent(SQLModel, table=True):
    """Every event received from either system (or raised by a reconciler)."""

    __tablename__ = "inbox_event"
    __table_args__ = (
        UniqueConstraint("source", "source_event_id", name="uq_inbox_event_source"),
        Index("ix_inbox_event_status_id", "status", "id"),
        Index("ix_inbox_event_record", "source", "record_key", "record_version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str
    stream: str
    source_event_id: str
    kind: str
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    payload: dict[str, Any] = _json()
    correlation_id: str | None = Field(default=None, foreign_key="correlation.id", index=True)
    status: str = "pending"
    processed_at: datetime | None = _ts()
    error: str | None = Field(default=None, sa_type=Text)
    # The record this event is a version of (``awa_work_item:<sys_id>``) and which version
    # (``sys_mod_count``): how a late delivery is known to be older than what is held.
    record_key: str | None = None
    record_version: int | None = None


class OutboxCommand(SQLModel, table=True):
    """A command for one system, written with the state change that caused it."""

    __tablename__ = "outbox_command"
    __table_args__ = (
        Index("ix_outbox_command_due", "status", "next_attempt_at"),
        Index("ix_outbox_command_order", "correlation_id", "created_at"),
    )

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True)
    idempotency_key: str = Field(unique=True)
    correlation_id: str = Field(foreign_key="correlation.id")
    segment_id: str | None = Field(default=None, foreign_key="segment.id", index=True)
    system: str
    operation: str
    payload: dict[str, Any] = _json()
    status: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = _ts()
    claimed_by: str | None = None
    lease_until: datetime | None = _ts()
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    completed_at: datetime | None = _ts()
    response: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    error: str | None = Field(default=None, sa_type=Text)
    caused_by_event_id: int | None = Field(default=None, foreign_key="inbox_event.id")


class Cursor(SQLModel, table=True):
    """The position of one intake stream (replay id, watermark)."""

    __tablename__ = "cursor"

    stream: str = Field(primary_key=True)
    position: str = Field(sa_type=Text)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReconcileRun(SQLModel, table=True):
    """One reconciliation: which reconcilers ran, in which mode, and what they found."""

    __tablename__ = "reconcile_run"

    id: str = Field(default_factory=new_id, primary_key=True)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    finished_at: datetime | None = _ts()
    reconcilers: list[str] = Field(default_factory=list, sa_type=JSON)
    mode: str
    status: str = "running"
    summary: dict[str, Any] = _json()


class Finding(SQLModel, table=True):
    """One piece of drift a reconciler saw, and what was (or would be) done about it."""

    __tablename__ = "finding"

    id: str = Field(default_factory=new_id, primary_key=True)
    run_id: str = Field(foreign_key="reconcile_run.id", index=True)
    reconciler: str
    kind: str
    subject: str
    correlation_id: str | None = Field(default=None, index=True)
    action: str | None = None
    status: str
    reason: str | None = Field(default=None, sa_type=Text)
    detail: dict[str, Any] = _json()
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


metadata = SQLModel.metadata
