"""Intake cursors older than their source keeps changes (Salesforce: 72 hours by default):
polling on from them would silently skip what the source has forgotten. The cursor is
reset, so the next poll is a full scan (the inbox drops what was already seen)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from bridge.ledger.sql import SqlTx
from bridge.reconcile.base import Context, Outcome, PlannedFinding

KIND = "stale_cursor"


class StaleCursor:
    name = KIND
    description = "Intake cursors older than the source's retention: reset to a full scan"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        del since
        with ctx.ledger.reading() as tx:
            cursors = tx.cursors.all()
        ctx.progress(self.name, len(cursors), len(cursors))
        for cursor in cursors:
            retention = next(
                (
                    r
                    for prefix, r in ctx.options.retention.items()
                    if cursor.stream.startswith(prefix)
                ),
                None,
            )
            if retention is None or ctx.now - cursor.updated_at <= retention:
                continue
            yield PlannedFinding(
                kind=KIND,
                subject=cursor.stream,
                reason=(
                    f"cursor {cursor.stream} last moved {cursor.updated_at.isoformat()}, longer "
                    f"ago than the source keeps changes ({retention})"
                ),
                action="reset_cursor",
                detail={"position": cursor.position},
            )

    def apply(self, ctx: Context, tx: SqlTx, finding: PlannedFinding) -> Outcome:
        del ctx
        tx.cursors.delete(finding.subject)
        return Outcome("applied")
