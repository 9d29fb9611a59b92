"""The ledger: inbox, correlations and segments, outbox, cursors, reconciliation runs."""

from bridge.ledger.rows import (
    Correlation,
    Cursor,
    Finding,
    InboxEvent,
    OutboxCommand,
    ReconcileRun,
    Segment,
)
from bridge.ledger.store import Ledger, LedgerTx, NewCommand, NewEvent, RecordResult

__all__ = [
    "Correlation",
    "Cursor",
    "Finding",
    "InboxEvent",
    "Ledger",
    "LedgerTx",
    "NewCommand",
    "NewEvent",
    "OutboxCommand",
    "ReconcileRun",
    "RecordResult",
    "Segment",
]
