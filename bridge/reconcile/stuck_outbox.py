"""Outbox commands stuck past a deadline (a worker died holding them, a retry scheduled
far out): released for an immediate retry, or dead-lettered once they have had their
attempts. Commands ``sent`` and awaiting a confirmation are reported, not re-sent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from bridge.ledger.rows import UNFINISHED_COMMAND_STATUSES, OutboxCommand
from bridge.ledger.sql import SqlTx
from bridge.reconcile.base import Context, Outcome, PlannedFinding
from bridge.reconcile.reads import PAGE

KIND = "stuck_outbox"
RELEASE = "release"
DEAD_LETTER = "dead_letter"


class StuckOutbox:
    name = KIND
    description = "Outbox commands stuck past a deadline: retry or dead-letter"

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        del since  # the deadline decides, not when the command was made
        deadline = ctx.now - ctx.options.stuck_after
        last = ""
        while True:
            with ctx.ledger.reading() as tx:
                page = tx.lookups.stuck_commands(
                    UNFINISHED_COMMAND_STATUSES, deadline, after=last, limit=PAGE
                )
            if not page:
                return
            ctx.progress(self.name, len(page), None)
            for command in page:
                yield self._finding(ctx, command)
            last = page[-1].id

    @staticmethod
    def _finding(ctx: Context, command: OutboxCommand) -> PlannedFinding:
        what = f"{command.operation} ({command.status}, {command.attempts} attempt(s))"
        since = command.updated_at.isoformat()
        action: str | None = RELEASE
        if command.status == "sent":
            action = None
            reason = f"{what} sent but never confirmed since {since}"
        elif command.attempts >= ctx.options.max_attempts:
            action = DEAD_LETTER
            reason = f"{what} stuck since {since}, out of attempts"
        else:
            reason = f"{what} stuck since {since}"
        return PlannedFinding(
            kind=KIND,
            subject=command.id,
            reason=reason,
            action=action,
            correlation_id=command.correlation_id,
            detail={
                "operation": command.operation,
                "status": command.status,
                "attempts": command.attempts,
                "error": command.error,
            },
        )

    def apply(self, ctx: Context, tx: SqlTx, finding: PlannedFinding) -> Outcome:
        if finding.action == DEAD_LETTER:
            tx.outbox.dead_letter(finding.subject, f"reconciler: {finding.reason}")
            return Outcome("applied")
        if not tx.outbox.release_stuck(finding.subject, ctx.now):
            return Outcome("skipped", "the command finished meanwhile")
        return Outcome("applied", command_ids=[finding.subject])
