"""Outbox commands stuck past a deadline (a worker died holding them, a retry scheduled
far out): released for an immediate retry, or dead-lettered once they have had their
attempts. Commands ``sent`` and awaiting a confirmation are reported, not re-sent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import select, update
from sqlmodel import col

from bridge.ledger.rows import UNFINISHED_COMMAND_STATUSES, OutboxCommand
from bridge.ledger.store import LedgerTx, table
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
        stmt = (
            select(OutboxCommand)
            .where(
                col(OutboxCommand.status).in_(UNFINISHED_COMMAND_STATUSES),
                col(OutboxCommand.updated_at) < deadline,
            )
            .order_by(col(OutboxCommand.id))
        )
        last = ""
        while True:
            with ctx.ledger.reading() as session:
                page = list(session.scalars(stmt.where(col(OutboxCommand.id) > last).limit(PAGE)))
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

    def apply(self, ctx: Context, tx: LedgerTx, finding: PlannedFinding) -> Outcome:
        if finding.action == DEAD_LETTER:
            tx.dead_letter(finding.subject, f"reconciler: {finding.reason}")
            return Outcome("applied")
        t = table(OutboxCommand)
        released = tx.session.execute(
            update(t)
            .where(t.c.id == finding.subject, t.c.status.in_(UNFINISHED_COMMAND_STATUSES))
            .values(
                status="pending",
                next_attempt_at=None,
                claimed_by=None,
                lease_until=None,
                updated_at=ctx.now,
            )
        )
        if released.rowcount == 0:  # type: ignore[attr-defined]
            return Outcome("skipped", "the command finished meanwhile")
        return Outcome("applied", command_ids=[finding.subject])
