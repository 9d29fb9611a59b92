"""Reconcilers: compare both systems with the ledger and repair drift (see ``base``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.app.runtime import Runtime
from bridge.ledger.rows import utcnow
from bridge.reconcile.base import (
    Context,
    Options,
    Outcome,
    PlannedFinding,
    Progress,
    Reconciler,
    RunReport,
    no_progress,
    registry,
    run,
    select_reconcilers,
)

log = logging.getLogger(__name__)

__all__ = [
    "Context",
    "Options",
    "Outcome",
    "PlannedFinding",
    "Progress",
    "Reconciler",
    "RunReport",
    "RuntimeDriver",
    "context_for",
    "no_progress",
    "registry",
    "run",
    "run_with",
    "scheduled",
    "select_reconcilers",
]


@dataclass
class RuntimeDriver:
    """The runtime's processor and dispatcher, driven by a one-off ``--apply`` run."""

    runtime: Runtime

    def process_pending(self) -> object:
        return self.runtime.processor.process_pending()

    def dispatch_once(self) -> int:
        return self.runtime.dispatcher.run_once().claimed


def context_for(
    runtime: Runtime,
    *,
    now: datetime | None = None,
    options: Options | None = None,
    progress: Progress = no_progress,
) -> Context:
    return Context(
        ledger=runtime.ledger,
        tables=runtime.tables,
        salesforce=runtime.salesforce,
        servicenow=runtime.servicenow,
        now=now or utcnow(),
        options=options or Options(),
        progress=progress,
    )


def run_with(
    runtime: Runtime,
    names: Sequence[str] | None = None,
    *,
    apply: bool,
    since: datetime | None = None,
    settle: bool = True,
    options: Options | None = None,
    progress: Progress = no_progress,
) -> RunReport:
    """One reconciliation with the runtime's adapters; ``settle`` drives the repairs through
    its processor and dispatcher before returning (one-off runs)."""
    ctx = context_for(runtime, options=options, progress=progress)
    driver = RuntimeDriver(runtime) if apply and settle else None
    return run(ctx, names, apply=apply, since=since, driver=driver)


# The mapping check reads configuration (queues, roles, users: five ServiceNow reads even
# when nothing is open); it need not run every few minutes: the idle call budget.
MAPPING_CHECK_EVERY_SECONDS = 3600.0


def scheduled(
    runtime: Runtime,
    options: Options | None = None,
    *,
    mapping_every: float = MAPPING_CHECK_EVERY_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[], None]:
    """The daemon's reconciliation job: every reconciler (the mapping check at most every
    ``mapping_every`` seconds), repairs written to the ledger (the daemon's own dispatcher
    sends them)."""
    mapping_at: list[float] = []

    def job() -> None:
        names = None
        now = clock()
        if mapping_at and now - mapping_at[0] < mapping_every:
            names = [name for name in registry() if name != "mapping"]
        else:
            mapping_at[:] = [now]
        report = run_with(runtime, names, apply=True, settle=False, options=options)
        log.info(
            "reconciliation %s: %d finding(s), %d unresolved",
            report.run_id,
            len(report.findings),
            report.unresolved,
            extra={"counts": report.counts()},
        )

    return job
