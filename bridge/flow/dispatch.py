"""Dispatch: outbox commands out to the two systems through the adapters.

- Commands are claimed from the ledger with a lease (several workers never share one; each
  conversation's commands go out in order) and run on a thread pool.
- A success is recorded together with what the answer teaches the engine (ids it created,
  who got an offer) in one transaction.
- Failures are data: ``Retriable`` → retried later with back-off, never sooner than the
  server's ``Retry-After``; ``OutcomeUnknown`` → the next attempt looks for what the first
  one may have made before creating again; ``Permanent`` → dead-lettered with the reason;
  ``Skippable`` → done, with the reason recorded.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from tenacity import RetryCallState, wait_exponential_jitter

from bridge.domain import ClaimedCommand
from bridge.errors import (
    BridgeError,
    OutcomeUnknown,
    Permanent,
    Retriable,
    Skippable,
    VersionConflict,
)
from bridge.flow.counts import Counts
from bridge.flow.processor import apply_answer
from bridge.ledger.ports import Ledger, LedgerTx
from bridge.ledger.rows import utcnow
from bridge.logging import bind_correlation
from bridge.metrics import COMMANDS, DISPATCH_LATENCY

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 10
# Applying an answer while the processor saves the same conversation: tries, and the
# pause (seconds, grows with each try) before the next one.
ANSWER_RETRIES = 8
ANSWER_RETRY_PAUSE = 0.02


class Executor(Protocol):
    """Runs one command against one system; raises the bridge's errors."""

    def execute(self, command: ClaimedCommand) -> Mapping[str, Any]: ...


@dataclass
class DispatchStats(Counts):
    claimed: int = 0
    done: int = 0
    retried: int = 0
    dead: int = 0


def _backoff(attempt: int) -> float:
    """Exponential back-off with jitter (tenacity's strategy), capped at five minutes."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return float(wait_exponential_jitter(multiplier=0.5, max=300)(state))


def _error_text(error: BridgeError) -> str:
    return json.dumps(error.as_dict(), sort_keys=True, default=str)


class Dispatcher:
    """Claims due commands and runs them; one instance per process."""

    def __init__(
        self,
        ledger: Ledger,
        executors: Mapping[str, Executor],
        *,
        concurrency: int = 8,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        now: Callable[[], datetime] = utcnow,
        worker: str | None = None,
    ) -> None:
        self._ledger = ledger
        self._executors = dict(executors)
        self._concurrency = max(1, concurrency)
        self._lease = lease_seconds
        self._max_attempts = max_attempts
        self._now = now
        self.worker = worker or f"dispatch-{uuid.uuid4().hex[:8]}"
        self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="dispatch")
        self.wake = threading.Event()

    def close(self, *, wait: bool = True) -> None:
        """``wait=False`` (a daemon out of time): queued runs are dropped, calls still out
        are left to the process's exit; their commands stay claimed for the caller to
        release."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def take_back_claims(self) -> int:
        """At daemon start: commands a dead predecessor left claimed (killed mid-call)
        are due at once, looking before they act, instead of waiting out its lease.
        Only for the one daemon of a ledger (see ``Outbox.release_abandoned``): a one-off
        command's dispatcher must not call it while a daemon runs."""
        with self._ledger.transaction() as tx:
            released = tx.outbox.release_abandoned(self._now(), except_worker=self.worker)
        if released:
            log.warning(
                "took back %d command(s) a previous run left in flight; each looks first",
                len(released),
                extra={"commands": released},
            )
        return len(released)

    def run_once(self, limit: int | None = None) -> DispatchStats:
        """Claim what is due and run it; returns when every claimed command is recorded.
        A worker that finishes a command takes its conversation's next one in the same
        transaction as the outcome (no claim of its own): a conversation's commands
        follow each other without waiting for the next round."""
        now = self._now()
        with self._ledger.reading() as tx:  # nothing due: no write transaction
            if not tx.outbox.has_due(now):
                return DispatchStats()
        with self._ledger.transaction() as tx:
            batch = tx.outbox.claim(self.worker, limit or self._concurrency * 4, self._lease, now)
        return self.run(batch)

    def take(self, tx: LedgerTx, correlation_ids: Sequence[str]) -> list[ClaimedCommand]:
        """Claim, in the caller's transaction, the next command of each conversation (the
        processor hands over what it just enqueued)."""
        now = self._now()
        claimed: list[ClaimedCommand] = []
        for correlation_id in correlation_ids:
            claimed += tx.outbox.claim(
                self.worker, 1, self._lease, now, correlation_id=correlation_id
            )
        return claimed

    def run(self, batch: Sequence[ClaimedCommand]) -> DispatchStats:
        """Run claimed commands (and whatever each conversation has next) on the pool."""
        stats = DispatchStats()
        for outcomes in self._pool.map(self._run_chain, batch):
            stats.claimed += len(outcomes)
            for outcome in outcomes:
                if outcome == "done":
                    stats.done += 1
                elif outcome == "retry":
                    stats.retried += 1
                else:
                    stats.dead += 1
        return stats

    def submit(self, batch: Sequence[ClaimedCommand]) -> None:
        """Run claimed commands on the pool without waiting for them (the daemon)."""
        for command in batch:
            self._pool.submit(self._run_chain, command)

    def _run_chain(self, command: ClaimedCommand) -> list[str]:
        outcomes: list[str] = []
        current: ClaimedCommand | None = command
        while current is not None:
            outcome, current = self._run(current)
            outcomes.append(outcome)
        return outcomes

    def _run(self, command: ClaimedCommand) -> tuple[str, ClaimedCommand | None]:
        with bind_correlation(command.correlation_id):
            executor = self._executors.get(command.system.value)
            if executor is None:
                return self._dead(command, Permanent(f"no executor for {command.system!r}")), None
            try:
                answer = executor.execute(command)
            except Skippable as exc:
                return self._succeed(command, {"skipped": exc.message})
            except Retriable as exc:
                return self._retry(command, exc), None
            except BridgeError as exc:
                return self._dead(command, exc), None
            except Exception as exc:
                log.exception("command %s (%s) failed unexpectedly", command.id, command.operation)
                return self._dead(command, Permanent(f"{type(exc).__name__}: {exc}")), None
            return self._succeed(command, answer)

    def _succeed(
        self, command: ClaimedCommand, answer: Mapping[str, Any]
    ) -> tuple[str, ClaimedCommand | None]:
        """The outcome, what the answer teaches, and the conversation's next command
        claimed: one transaction. The processor may save the same conversation meanwhile
        (its version moves on under our read): then the whole transaction is done again
        on a fresh read, so the answer is applied to what the conversation is now."""
        for attempt in range(1, ANSWER_RETRIES + 1):
            try:
                with self._ledger.transaction() as tx:
                    tx.outbox.complete(command.id, answer)
                    apply_answer(tx, command, answer)
                    following = tx.outbox.claim(
                        self.worker,
                        1,
                        self._lease,
                        self._now(),
                        correlation_id=command.correlation_id,
                    )
                break
            except VersionConflict:
                log.info(
                    "command %s (%s): conversation changed while its answer was applied; again",
                    command.id,
                    command.operation.value,
                )
                # a short, growing pause: the other writer is mid-batch
                time.sleep(random.uniform(0, ANSWER_RETRY_PAUSE * attempt))  # noqa: S311
        else:
            return self._answer_not_applied(command), None
        COMMANDS.labels(command.system.value, command.operation.value, "confirmed").inc()
        DISPATCH_LATENCY.labels(command.system.value, command.operation.value).observe(
            max(0.0, (self._now() - command.created_at).total_seconds())
        )
        log.info("command %s (%s) done", command.id, command.operation.value)
        return "done", following[0] if following else None

    def _answer_not_applied(self, command: ClaimedCommand) -> str:
        """The conversation kept changing under every try: the system acted but the ledger
        could not learn from it. The command goes again soon as an outcome unknown, so
        the next attempt looks before acting (finds what this one made, or gets the first
        answer again by its RequestId) and applies that answer."""
        error = OutcomeUnknown(
            f"the answer could not be applied: the conversation changed {ANSWER_RETRIES} "
            "times meanwhile"
        )
        with self._ledger.transaction() as tx:
            tx.outbox.fail(
                command.id,
                _error_text(error),
                self._now() + timedelta(seconds=ANSWER_RETRY_PAUSE * ANSWER_RETRIES),
            )
        COMMANDS.labels(command.system.value, command.operation.value, "failed").inc()
        log.warning("command %s (%s): %s", command.id, command.operation.value, error)
        return "retry"

    def _retry(self, command: ClaimedCommand, error: Retriable) -> str:
        attempts = command.attempts + 1
        if attempts >= self._max_attempts:
            return self._dead(command, error, f"gave up after {attempts} attempts: ")
        delay = max(_backoff(attempts), error.retry_after or 0.0)
        with self._ledger.transaction() as tx:
            tx.outbox.fail(command.id, _error_text(error), self._now() + timedelta(seconds=delay))
        COMMANDS.labels(command.system.value, command.operation.value, "failed").inc()
        log.info(
            "command %s (%s) will be retried in %.1fs: %s",
            command.id,
            command.operation.value,
            delay,
            error,
        )
        return "retry"

    def _dead(self, command: ClaimedCommand, error: BridgeError, prefix: str = "") -> str:
        with self._ledger.transaction() as tx:
            tx.outbox.dead_letter(command.id, prefix + _error_text(error))
        COMMANDS.labels(command.system.value, command.operation.value, "dead").inc()
        log.error("command %s (%s) dead-lettered: %s", command.id, command.operation.value, error)
        return "dead"
