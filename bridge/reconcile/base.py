"""Reconciliation: each reconciler compares one slice of reality with the ledger and plans
findings; a run records every finding (and the repair it wrote) in the ledger.

RepairWriter are ordinary outbox commands (the operations the engine emits, with idempotency
keys ``reconcile:<kind>:<subject>``) or ordinary inbox events (``source="reconciler"``:
"process this record as if intake had seen it"), written in the same transaction as the
finding. A one-off ``--apply`` run then drives the processor and the dispatcher until what
it wrote is done, so the systems are repaired when the command returns.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from bridge.adapters.salesforce.client import SalesforceApi, parse_sf_datetime
from bridge.adapters.servicenow.client import ServiceNowApi
from bridge.adapters.servicenow.polling import parse_sn_datetime
from bridge.domain import EventKind
from bridge.domain.mapping import Tables
from bridge.errors import ConfigError
from bridge.flow.dispatch import DEFAULT_MAX_ATTEMPTS
from bridge.ledger.ports import NewCommand, NewEvent
from bridge.ledger.rows import Finding
from bridge.ledger.sql import SqlLedger, SqlTx
from bridge.metrics import RECONCILE_FINDINGS

log = logging.getLogger(__name__)

SOURCE = "reconciler"
STREAM = "reconciler"
RECONCILER_FAILED = "reconciler_failed"
# Findings are written in batches of this many rows per transaction.
FINDING_BATCH = 500
FINAL_COMMAND_STATUSES = ("confirmed", "dead", "cancelled")
# The kind of the note a reconciler leaves about what it did not judge: younger than the
# grace (``Options.unseen_grace``), intake may simply not have read it yet.
WITHIN_GRACE = "within_grace"

Progress = Callable[[str, int, int | None], None]
"""``progress(task, advance, total)``: ``advance`` records done; ``total`` when known."""


def no_progress(task: str, advance: int, total: int | None) -> None:
    del task, advance, total


@dataclass(frozen=True)
class Options:
    """The knobs of the reconcilers (every one has a default)."""

    # unseen_psr, drift: what changed more recently may simply not be polled yet.
    unseen_grace: timedelta = timedelta(seconds=60)
    # offer_timeout: how long after an offer's time-out an event may still arrive.
    offer_grace: timedelta = timedelta(seconds=30)
    # stuck_outbox: an unfinished command untouched this long is stuck ...
    stuck_after: timedelta = timedelta(minutes=15)
    # ... and dead-lettered instead of released once it has had this many attempts.
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # stale_cursor: how long each source keeps its changes, by stream prefix.
    retention: Mapping[str, timedelta] = field(
        default_factory=lambda: {"salesforce:": timedelta(hours=72)}
    )
    # --apply: how long to drive the processor and dispatcher for the repairs.
    settle_timeout: float = 60.0


@dataclass
class Context:
    """What a reconciler reads from and writes to."""

    ledger: SqlLedger
    tables: Tables
    salesforce: SalesforceApi
    servicenow: ServiceNowApi
    now: datetime
    options: Options = field(default_factory=Options)
    progress: Progress = no_progress


@dataclass(frozen=True)
class PlannedFinding:
    """One piece of drift and its repair. ``action`` None: reported, nothing to apply."""

    kind: str
    subject: str
    reason: str
    action: str | None = None
    correlation_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    commands: tuple[NewCommand, ...] = ()
    events: tuple[NewEvent, ...] = ()
    # A note's own status (``skipped``); None: ``planned`` with an action, else unresolved.
    status: str | None = None


def grace_note(subject: str, counts: Mapping[str, int], grace: timedelta) -> PlannedFinding | None:
    """What a reconciler left unjudged because it is younger than ``grace`` (a ``skipped``
    note, not drift: intake may not have read it yet); None when nothing was."""
    counted = {what: n for what, n in counts.items() if n}
    if not counted:
        return None
    seconds = f"{grace.total_seconds():g}s"
    return PlannedFinding(
        kind=WITHIN_GRACE,
        subject=subject,
        reason=(
            f"{', '.join(f'{n} {what}' for what, n in counted.items())} younger than the "
            f"{seconds} grace not judged: intake may not have read them yet (run again "
            "later, or with --grace 0s)"
        ),
        detail={"grace_seconds": grace.total_seconds(), **counted},
        status="skipped",
    )


@dataclass
class Outcome:
    """What applying a finding did: its status, why, and what it wrote."""

    status: str
    reason: str | None = None
    command_ids: list[str] = field(default_factory=list)
    event_ids: list[int] = field(default_factory=list)


class Reconciler(Protocol):
    """``after_repairs = True`` (a class attribute, optional): a reconciler that only
    reports, run after a one-off ``--apply`` carried the others' repairs out, so that what
    it reports (and the exit code) is what the apply left."""

    name: str
    description: str

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]: ...

    def apply(self, ctx: Context, tx: SqlTx, finding: PlannedFinding) -> Outcome: ...


def salesforce_event(
    reconciler: str,
    kind: EventKind,
    record: Mapping[str, Any],
    correlation_id: str | None = None,
) -> NewEvent:
    """A Salesforce record as a reconciler read it, for the engine: keyed by its Id and
    SystemModstamp, so an unchanged record is fed once."""
    stamp = str(record["SystemModstamp"])
    return NewEvent(
        source=SOURCE,
        source_event_id=f"reconcile:{reconciler}:{record['Id']}:{stamp}",
        kind=kind.value,
        occurred_at=parse_sf_datetime(stamp),
        payload=dict(record),
        correlation_id=correlation_id,
    )


def servicenow_event(
    reconciler: str,
    kind: EventKind,
    row: Mapping[str, Any],
    correlation_id: str | None = None,
) -> NewEvent:
    """A ServiceNow row as a reconciler read it: keyed by sys_id and sys_mod_count."""
    return NewEvent(
        source=SOURCE,
        source_event_id=f"reconcile:{reconciler}:{row['sys_id']}:{row.get('sys_mod_count', '')}",
        kind=kind.value,
        occurred_at=parse_sn_datetime(str(row["sys_updated_on"])),
        payload=dict(row),
        correlation_id=correlation_id,
    )


def write_repair(tx: SqlTx, finding: PlannedFinding) -> Outcome:
    """Enqueue the finding's commands and record its events in ``tx``.

    A command whose key is already in the outbox (an earlier run's repair) is not written
    twice: the finding is ``skipped`` while that command is still on its way, and
    ``unresolved`` (saying how it ended) when it finished and the drift is still there."""
    written = tx.outbox.enqueue(*finding.commands)
    event_ids = [tx.inbox.add(e, STREAM) for e in finding.events]
    new_events = [i for i in event_ids if i is not None]
    command_ids = list(written.ids)
    if len(new_events) < len(finding.events):
        return _earlier_feed(tx, finding.events, command_ids, new_events)
    if written.duplicate_keys:
        return _earlier_repair(tx, written.duplicate_keys, command_ids)
    return Outcome("applied", None, command_ids, new_events)


def _earlier_feed(
    tx: SqlTx, events: Sequence[NewEvent], command_ids: list[str], new_events: list[int]
) -> Outcome:
    """The same record was fed before (it has not changed since): ``skipped`` while that
    event or its commands are on their way, ``unresolved`` with how it ended otherwise."""
    earlier = tx.inbox.find([(e.source, e.source_event_id) for e in events])
    fed = [e for e in earlier if e.id not in new_events]
    waiting = [e for e in fed if e.status == "pending"]
    if waiting:
        return Outcome(
            "skipped",
            f"an earlier run fed the same event ({waiting[0].source_event_id}); "
            "it is not processed yet",
            command_ids,
            new_events,
        )
    caused = tx.outbox.states(caused_by=[e.id for e in fed])
    unfinished = [c for c in caused if c.status not in FINAL_COMMAND_STATUSES]
    if unfinished:
        return Outcome(
            "skipped",
            f"an earlier run's repair is still on its way ({unfinished[0].operation} "
            f"{unfinished[0].status})",
            command_ids + [c.id for c in unfinished],
            new_events,
        )
    ended = ", ".join(
        [f"event {e.source_event_id} {e.status}{': ' + e.error if e.error else ''}" for e in fed]
        + [f"{c.operation} {c.status}{': ' + c.error if c.error else ''}" for c in caused]
    )
    return Outcome(
        "unresolved",
        f"an earlier run fed the same record ({ended}) and the drift is still there",
        command_ids,
        new_events,
    )


def _earlier_repair(tx: SqlTx, keys: Sequence[str], command_ids: list[str]) -> Outcome:
    earlier = tx.outbox.states(keys=keys)
    unfinished = [c for c in earlier if c.status not in FINAL_COMMAND_STATUSES]
    if unfinished:
        return Outcome(
            "skipped",
            f"an earlier run's repair is still on its way ({unfinished[0].status})",
            command_ids + [c.id for c in unfinished],
        )
    ended = ", ".join(f"{c.operation} {c.status}" for c in earlier)
    error = next((c.error for c in earlier if c.error), None)
    return Outcome(
        "unresolved",
        f"an earlier run's repair ended ({ended}{': ' + error if error else ''}) and the "
        "drift is still there",
        command_ids,
    )


class RepairWriter:
    """The usual ``apply``: write the finding's commands and events."""

    def apply(self, ctx: Context, tx: SqlTx, finding: PlannedFinding) -> Outcome:
        del ctx
        return write_repair(tx, finding)


# --- registry -------------------------------------------------------------------------


def registry() -> dict[str, Reconciler]:
    """Every reconciler by name, in the order they run."""
    from bridge.reconcile.catalog import RECONCILERS  # noqa: PLC0415 - they import this module

    return {r.name: r for r in RECONCILERS}


def select_reconcilers(
    names: Sequence[str] | None, known: Mapping[str, Reconciler] | None = None
) -> list[Reconciler]:
    """The named reconcilers (all when none is named); ConfigError lists the known ones."""
    known = registry() if known is None else known
    if not names:
        return list(known.values())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown reconciler(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in dict.fromkeys(names)]


# --- a run ----------------------------------------------------------------------------


class RepairDriver(Protocol):
    """What drives repairs to completion: the processor (inbox) and the dispatcher."""

    def process_pending(self) -> object: ...

    def dispatch_once(self) -> int:
        """Run due commands; returns how many were claimed."""
        ...


@dataclass
class RunReport:
    run_id: str
    mode: str
    started: datetime
    elapsed_seconds: float = 0.0
    findings: list[dict[str, Any]] = field(default_factory=list)
    failed_reconcilers: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per reconciler

    def counts(self) -> list[dict[str, Any]]:
        """Findings by (reconciler, kind, status)."""
        tally = Counter((f["reconciler"], f["kind"], f["status"]) for f in self.findings)
        return [
            {"reconciler": r, "kind": k, "status": s, "count": n}
            for (r, k, s), n in sorted(tally.items())
        ]

    @property
    def unresolved(self) -> int:
        """Findings that still need someone: planned, unresolved or failed."""
        return sum(1 for f in self.findings if f["status"] in ("planned", "unresolved", "failed"))

    @property
    def exit_code(self) -> int:
        return 1 if self.unresolved else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "started": self.started.isoformat(),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "unresolved": self.unresolved,
            "failed_reconcilers": self.failed_reconcilers,
            "seconds": {name: round(s, 3) for name, s in self.seconds.items()},
            "counts": self.counts(),
            "findings": self.findings,
        }


@dataclass
class _Pending:
    """Findings not yet in the ledger, written in batches."""

    ledger: SqlLedger
    run_id: str
    rows: list[Finding] = field(default_factory=list)

    def add(self, row: Finding) -> None:
        self.rows.append(row)
        if len(self.rows) >= FINDING_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        with self.ledger.transaction() as tx:
            tx.runs.add(*self.rows)
        self.rows = []


def _finding_row(
    ctx: Context, run_id: str, reconciler: str, finding: PlannedFinding, outcome: Outcome
) -> Finding:
    detail = dict(finding.detail)
    if finding.commands:
        detail["commands"] = [
            {"operation": c.operation, "system": c.system, "idempotency_key": c.idempotency_key}
            for c in finding.commands
        ]
    if finding.events:
        detail["events"] = [e.source_event_id for e in finding.events]
    return Finding(
        run_id=run_id,
        reconciler=reconciler,
        kind=finding.kind,
        subject=finding.subject,
        correlation_id=finding.correlation_id,
        action=finding.action,
        status=outcome.status,
        reason=outcome.reason or finding.reason,
        detail=detail,
        created_at=ctx.ledger.clock(),
    )


def run(
    ctx: Context,
    names: Sequence[str] | None = None,
    *,
    apply: bool,
    since: datetime | None = None,
    driver: RepairDriver | None = None,
    known: Mapping[str, Reconciler] | None = None,
) -> RunReport:
    """Run the reconcilers, record the run and every finding; with ``apply`` write the
    repairs and, given a ``driver``, drive them until done (or the settle time-out)."""
    chosen = select_reconcilers(names, known)
    mode = "apply" if apply else "dry_run"
    started = time.monotonic()
    with ctx.ledger.transaction() as tx:
        run_row = tx.runs.start([r.name for r in chosen], mode)
    report = RunReport(run_row.id, mode, run_row.started_at)
    pending = _Pending(ctx.ledger, run_row.id)
    written: list[tuple[Finding, Outcome]] = []
    later = [r for r in chosen if driver is not None and getattr(r, "after_repairs", False)]

    def plan_all(reconcilers: Sequence[Reconciler], ctx: Context) -> None:
        for reconciler in reconcilers:
            began = time.monotonic()
            try:
                for finding in reconciler.plan(ctx, since):
                    if apply and finding.action is not None:
                        written.append(_apply_one(ctx, run_row.id, reconciler, finding))
                    else:
                        default = "planned" if finding.action is not None else "unresolved"
                        outcome = Outcome(finding.status or default)
                        pending.add(
                            _finding_row(ctx, run_row.id, reconciler.name, finding, outcome)
                        )
            except Exception as exc:
                log.warning("reconciler %s failed: %s", reconciler.name, exc, exc_info=True)
                report.failed_reconcilers.append(reconciler.name)
                failed = PlannedFinding(
                    kind=RECONCILER_FAILED,
                    subject=reconciler.name,
                    reason=f"{type(exc).__name__}: {exc}",
                )
                row = _finding_row(ctx, run_row.id, reconciler.name, failed, Outcome("failed"))
                pending.add(row)
            report.seconds[reconciler.name] = time.monotonic() - began
        pending.flush()

    plan_all([r for r in chosen if r not in later], ctx)
    if driver is not None and written:
        settling = time.monotonic()
        _settle(ctx, driver, written)
        # what only reports looks at the systems as the repairs left them, at that time
        ctx = replace(ctx, now=ctx.now + timedelta(seconds=time.monotonic() - settling))
    plan_all(later, ctx)
    rows = _run_findings(ctx.ledger, run_row.id)
    for row in rows:
        RECONCILE_FINDINGS.labels(row.reconciler, row.kind, row.status).inc()
    report.findings = [_finding_dict(r) for r in rows]
    report.elapsed_seconds = time.monotonic() - started
    status = "failed" if report.failed_reconcilers else "succeeded"
    summary = {
        "unresolved": report.unresolved,
        "failed_reconcilers": report.failed_reconcilers,
        "counts": report.counts(),
    }
    with ctx.ledger.transaction() as tx:
        tx.runs.finish(run_row.id, status, summary)
    return report


def _apply_one(
    ctx: Context, run_id: str, reconciler: Reconciler, finding: PlannedFinding
) -> tuple[Finding, Outcome]:
    """The repair and its finding in one transaction; a repair that cannot be written is
    a ``failed`` finding with the reason (in a transaction of its own)."""
    try:
        with ctx.ledger.transaction() as tx:
            outcome = reconciler.apply(ctx, tx, finding)
            row = _finding_row(ctx, run_id, reconciler.name, finding, outcome)
            tx.runs.add(row)
    except Exception as exc:  # noqa: BLE001 - recorded as the finding's outcome
        log.warning("%s: repair of %s failed: %s", reconciler.name, finding.subject, exc)
        outcome = Outcome("failed", f"repair not written: {type(exc).__name__}: {exc}")
        row = _finding_row(ctx, run_id, reconciler.name, finding, outcome)
        with ctx.ledger.transaction() as tx:
            tx.runs.add(row)
    return row, outcome


def _run_findings(ledger: SqlLedger, run_id: str) -> list[Finding]:
    with ledger.reading() as tx:
        return tx.runs.findings(run_id)


def _finding_dict(row: Finding) -> dict[str, Any]:
    return {
        "reconciler": row.reconciler,
        "kind": row.kind,
        "subject": row.subject,
        "correlation_id": row.correlation_id,
        "action": row.action,
        "status": row.status,
        "reason": row.reason,
    }


# --- settling: drive the repairs until they are done -----------------------------------


def _settle(ctx: Context, driver: RepairDriver, written: list[tuple[Finding, Outcome]]) -> None:
    tracked = [(row, outcome) for row, outcome in written if outcome.status == "applied"]
    deadline = time.monotonic() + ctx.options.settle_timeout
    while True:
        driver.process_pending()
        claimed = driver.dispatch_once()
        verdicts = {row.id: _verdict(ctx.ledger, outcome) for row, outcome in tracked}
        if all(v[0] != "unresolved" for v in verdicts.values()) or time.monotonic() > deadline:
            break
        if claimed == 0:
            time.sleep(0.1)  # retries wait for their back-off
    with ctx.ledger.transaction() as tx:
        for row, _ in tracked:
            tx.runs.set_status(row.id, *verdicts[row.id])


def _verdict(ledger: SqlLedger, outcome: Outcome) -> tuple[str, str | None]:
    """applied (every command confirmed, every event processed), failed (a command dead or
    an event in error, with why) or unresolved (still on its way)."""
    with ledger.reading() as tx:
        events = tx.inbox.states(outcome.event_ids)
        commands = tx.outbox.states(ids=outcome.command_ids, caused_by=outcome.event_ids)
    for event in events:
        if event.status in ("error", "skipped"):
            return "failed", f"event {event.source_event_id}: {event.error}"
        if event.status == "pending":
            return "unresolved", f"event {event.source_event_id} not processed yet"
    for command in commands:
        if command.status in ("dead", "cancelled"):
            return "failed", f"{command.operation} {command.status}: {command.error}"
    for command in commands:
        if command.status not in FINAL_COMMAND_STATUSES:
            return "unresolved", f"{command.operation} still {command.status} in the outbox"
    return "applied", None
