"""The ledger: inbox and cursors, correlations and segments, outbox, reconciliation runs.

``ports`` names the roles; ``sql`` implements them on SQLite and PostgreSQL, ``memory`` in
memory (for engine and processor tests). Nothing outside this package holds a session.
"""

from bridge.ledger.ports import (
    CommandState,
    Enqueued,
    EventState,
    Ledger,
    LedgerTx,
    NewCommand,
    NewEvent,
    PendingEvent,
    RecordResult,
    Saved,
)
from bridge.ledger.rows import (
    Correlation,
    Cursor,
    Finding,
    InboxEvent,
    OutboxCommand,
    ReconcileRun,
    Segment,
)
from bridge.ledger.sql import SqlLedger, SqlTx

__all__ = [
    "CommandState",
    "Correlation",
    "Cursor",
    "Enqueued",
    "EventState",
    "Finding",
    "InboxEvent",
    "Ledger",
    "LedgerTx",
    "NewCommand",
    "NewEvent",
    "OutboxCommand",
    "PendingEvent",
    "ReconcileRun",
    "RecordResult",
    "Saved",
    "Segment",
    "SqlLedger",
    "SqlTx",
]
