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
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import update
from tenacity import RetryCallState, wait_exponential_jitter

from bridge.adapters.salesforce.client import SalesforceApi, soql_string
from bridge.adapters.servicenow.client import ServiceNowApi
from bridge.domain import Operation
from bridge.errors import BridgeError, OutcomeUnknown, Permanent, Retriable, Skippable
from bridge.flow.processor import apply_answer
from bridge.ledger import rows
from bridge.ledger.store import Ledger, table
from bridge.logging import bind_correlation
from bridge.metrics import COMMANDS, DISPATCH_LATENCY

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 10
# When no candidate agent is available, wait this long before looking again.
NO_AGENT_RETRY_SECONDS = 5.0
# AWA's answers (409) for an agent who cannot take an offer or a blind transfer now.
_AGENT_NOT_AVAILABLE = frozenset(
    {"Agent is not available", "Transfer failed - couldn't blind transfer to agent"}
)
# Written on commands while they are out with a worker; any recorded outcome replaces it.
# Still there at the next claim means the lease ran out mid-call: look before acting.
_IN_FLIGHT = json.dumps(
    OutcomeUnknown("the previous attempt ended without recording an outcome").as_dict(),
    sort_keys=True,
)


class Executor(Protocol):
    """Runs one command against one system; raises the bridge's errors."""

    def execute(self, command: rows.OutboxCommand, *, look_first: bool) -> dict[str, Any]: ...


def _fifteen(record_id: str) -> str:
    return record_id[:15]


class SalesforceExecutor:
    """Salesforce operations: REST (AgentWork, PSR) and the Interaction Service API."""

    def __init__(self, api: SalesforceApi) -> None:
        self._api = api

    def execute(self, command: rows.OutboxCommand, *, look_first: bool) -> dict[str, Any]:
        params = dict(command.payload)
        operation = Operation(command.operation)
        if operation is Operation.CREATE_AGENT_WORK:
            if look_first and (found := self._find_agent_work(params)) is not None:
                return {"id": found, "looked_up": True}
            return {"id": self._api.create("AgentWork", params)}
        if operation is Operation.DELETE_PSR:
            try:
                self._api.delete("PendingServiceRouting", str(params["id"]))
            except Permanent as exc:
                if exc.status == 404:
                    raise Skippable("the PSR is already gone", system="salesforce") from exc
                raise
            return {"deleted": params["id"]}
        # Interaction Service API: the command id is the RequestId, so a retry of a request
        # that did reach Salesforce returns the first answer instead of acting twice.
        request_id = command.id
        if operation is Operation.ROUTE:
            return self._api.route(request_id, params)
        if operation is Operation.CANCEL_ROUTE:
            return self._api.cancel_route(request_id, params)
        if operation is Operation.ASSIGN_AGENT_WORK:
            return self._api.assign_agent_work(request_id, params)
        if operation is Operation.UPDATE_AGENT_WORK:
            body: dict[str, Any] = {
                k: params[k] for k in ("workId", "status", "contextType") if k in params
            }
            return self._api.update_agent_work(request_id, body)
        raise Permanent(f"not a Salesforce operation: {operation}", system="salesforce")

    def _find_agent_work(self, params: Mapping[str, Any]) -> str | None:
        """The AgentWork an earlier attempt may have created (look before retrying)."""
        soql = (
            "SELECT Id FROM AgentWork WHERE PendingServiceRoutingId = "
            f"{soql_string(str(params['PendingServiceRoutingId']))} AND UserId = "
            f"{soql_string(str(params['UserId']))} AND Status IN ('Assigned', 'Opened') LIMIT 1"
        )
        for record in self._api.query(soql):
            return str(record["Id"])
        return None


class ServiceNowExecutor:
    """ServiceNow operations: the Table API and the AWA Offer Work API."""

    def __init__(self, api: ServiceNowApi) -> None:
        self._api = api

    def execute(self, command: rows.OutboxCommand, *, look_first: bool) -> dict[str, Any]:
        params = dict(command.payload)
        operation = Operation(command.operation)
        if operation is Operation.CREATE_INTERACTION:
            return self._create(params, look_first=look_first)
        if operation in (Operation.OFFER, Operation.TRANSFER):
            if look_first and (found := self._find_offer(params)) is not None:
                return {"work_item": found, "looked_up": True}
            return self._offer(operation, params)
        if operation is Operation.CANCEL_WORK_ITEM:
            values = {"state": "canceled", "cancel_reason": params.get("cancel_reason", "")}
            return {"result": self._api.update("awa_work_item", str(params["sys_id"]), values)}
        if operation is Operation.CLOSE_INTERACTION:
            values = {"state": str(params["state"])}
            return {"result": self._api.update("interaction", str(params["sys_id"]), values)}
        raise Permanent(f"not a ServiceNow operation: {operation}", system="servicenow")

    def _create(self, params: Mapping[str, Any], *, look_first: bool) -> dict[str, Any]:
        table = str(params.get("table", "interaction"))
        record = dict(params["record"])
        if look_first and (found := self._api.get(table, str(record["sys_id"]))) is not None:
            return {"result": found, "looked_up": True}
        return {"result": self._api.insert(table, record)}

    def _find_offer(self, params: Mapping[str, Any]) -> dict[str, str] | None:
        query = (
            f"document_id={params['document_id']}"
            f"^external_segment_id={params['external_segment_id']}^active=true"
        )
        found = self._api.query("awa_work_item", query, ("assigned_to", "state", "queue"), 1)
        return found[0] if found else None

    def _offer(self, operation: Operation, params: Mapping[str, Any]) -> dict[str, Any]:
        """Offer (or blind-transfer) to the first candidate AWA takes.

        No presence read first: AWA refuses an agent who is not Available with a 409 of
        its own, so the happy path costs one call and a busy agent one more.
        """
        target_type = params.get("target_type")
        if operation is Operation.TRANSFER and (target_type != "agent" or params.get("target_id")):
            return self._send(operation, params, params.get("target_id"))
        excluded = set(params.get("excluded") or [])
        for agent in (c for c in params.get("candidates") or [] if c not in excluded):
            try:
                return self._send(operation, params, agent)
            except Permanent as exc:
                if exc.status != 409 or exc.message not in _AGENT_NOT_AVAILABLE:
                    raise
                log.info("AWA agent %s is not available; trying the next candidate", agent)
        raise Retriable(
            "no candidate agent is available in AWA",
            system="servicenow",
            code="NO_AGENT_AVAILABLE",
            retry_after=NO_AGENT_RETRY_SECONDS,
        )

    def _send(
        self, operation: Operation, params: Mapping[str, Any], agent: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"external_segment_id": params["external_segment_id"]}
        if operation is Operation.OFFER:
            assignment = {
                key: params[key]
                for key in (
                    "timeout",
                    "allowed_to_decline",
                    "enable_auto_assign",
                    "display_option",
                    "after_timeout_presence",
                )
                if params.get(key) not in (None, "")
            }
            assignment["agent_sys_id"] = agent
            body |= {"queue_id": params["queue_id"], "assignment": assignment}
        else:
            target_type = params.get("target_type")
            body["transfer"] = {
                "source_queue_id": params["source_queue_id"],
                "target_id": agent if target_type == "agent" else params.get("target_id"),
                "target_type": target_type,
                "transfer_type": params.get("transfer_type", "blind"),
            }
            if target_type != "agent":
                agent = None
        answer = self._api.offer(str(params["document_table"]), str(params["document_id"]), body)
        item = dict(answer.get("work_item") or {})
        if agent:
            item.setdefault("assigned_to", agent)
        return {"work_item": item, "message": answer.get("message")}


@dataclass
class DispatchStats:
    claimed: int = 0
    done: int = 0
    retried: int = 0
    dead: int = 0

    def add(self, other: DispatchStats) -> None:
        for name in ("claimed", "done", "retried", "dead"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _backoff(attempt: int) -> float:
    """Exponential back-off with jitter (tenacity's strategy), capped at five minutes."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return float(wait_exponential_jitter(multiplier=0.5, max=300)(state))


def _error_text(error: BridgeError) -> str:
    return json.dumps(error.as_dict(), sort_keys=True, default=str)


def _looks_unknown(command: rows.OutboxCommand) -> bool:
    """Did the previous attempt end without knowing whether it took effect? Either it
    failed with ``OutcomeUnknown`` or its lease ran out before it recorded anything (the
    in-flight mark written at claim time is still there)."""
    if not command.error:
        return False
    try:
        return bool(json.loads(command.error).get("kind") == OutcomeUnknown.kind)
    except ValueError:
        return False


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
        now: Callable[[], datetime] = rows.utcnow,
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

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def run_once(self, limit: int | None = None) -> DispatchStats:
        """Claim what is due and run it; returns when every claimed command is recorded."""
        batch = self._ledger.claim_commands(
            self.worker, limit or self._concurrency * 4, self._lease, self._now()
        )
        self._mark_in_flight(batch)
        stats = DispatchStats(claimed=len(batch))
        for outcome in self._pool.map(self._run, batch):
            if outcome == "done":
                stats.done += 1
            elif outcome == "retry":
                stats.retried += 1
            else:
                stats.dead += 1
        return stats

    def _mark_in_flight(self, batch: list[rows.OutboxCommand]) -> None:
        """One statement for the batch: the mark outlives a worker that dies mid-call.

        The rows keep what the previous attempt left (the executors look at it); only
        the stored rows carry the mark.
        """
        if not batch:
            return
        t = table(rows.OutboxCommand)
        with self._ledger.transaction() as tx:
            tx.session.execute(
                update(t).where(t.c.id.in_([c.id for c in batch])).values(error=_IN_FLIGHT)
            )

    def _run(self, command: rows.OutboxCommand) -> str:
        with bind_correlation(command.correlation_id):
            executor = self._executors.get(command.system)
            if executor is None:
                return self._dead(command, Permanent(f"no executor for {command.system!r}"))
            try:
                answer = executor.execute(command, look_first=_looks_unknown(command))
            except Skippable as exc:
                return self._succeed(command, {"skipped": exc.message})
            except Retriable as exc:
                return self._retry(command, exc)
            except BridgeError as exc:
                return self._dead(command, exc)
            except Exception as exc:
                log.exception("command %s (%s) failed unexpectedly", command.id, command.operation)
                return self._dead(command, Permanent(f"{type(exc).__name__}: {exc}"))
            return self._succeed(command, answer)

    def _succeed(self, command: rows.OutboxCommand, answer: dict[str, Any]) -> str:
        with self._ledger.transaction() as tx:
            tx.complete_command(command.id, answer)
            apply_answer(tx, command, answer)
        COMMANDS.labels(command.system, command.operation, "confirmed").inc()
        DISPATCH_LATENCY.labels(command.system, command.operation).observe(
            max(0.0, (self._now() - command.created_at).total_seconds())
        )
        log.info("command %s (%s) done", command.id, command.operation)
        return "done"

    def _retry(self, command: rows.OutboxCommand, error: Retriable) -> str:
        attempts = command.attempts + 1
        if attempts >= self._max_attempts:
            return self._dead(command, error, f"gave up after {attempts} attempts: ")
        delay = max(_backoff(attempts), error.retry_after or 0.0)
        self._ledger.fail_command(
            command.id, _error_text(error), self._now() + timedelta(seconds=delay)
        )
        COMMANDS.labels(command.system, command.operation, "failed").inc()
        log.info(
            "command %s (%s) will be retried in %.1fs: %s",
            command.id,
            command.operation,
            delay,
            error,
        )
        return "retry"

    def _dead(self, command: rows.OutboxCommand, error: BridgeError, prefix: str = "") -> str:
        self._ledger.dead_letter(command.id, prefix + _error_text(error))
        COMMANDS.labels(command.system, command.operation, "dead").inc()
        log.error("command %s (%s) dead-lettered: %s", command.id, command.operation, error)
        return "dead"
