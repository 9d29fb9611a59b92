"""Everything one bridge runs, built from settings: ledger, mapping tables, both adapters,
both intakes, the processor and the dispatcher. ``step`` drives one synchronous round
(used by the one-off commands, the sandbox demo and the end-to-end tests); the daemon in
``bridge.app.daemon`` runs the same pieces on threads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.salesforce.executor import SalesforceExecutor
from bridge.adapters.salesforce.polling import SalesforceIntake
from bridge.adapters.servicenow.client import ServiceNowAdapter
from bridge.adapters.servicenow.executor import ServiceNowExecutor
from bridge.adapters.servicenow.polling import ServiceNowIntake
from bridge.app.settings import Settings
from bridge.domain import Direction
from bridge.domain.mapping import Tables, load_tables
from bridge.flow.dispatch import Dispatcher, DispatchStats
from bridge.flow.intake import Intake, PollResult
from bridge.flow.processor import Processor, ProcessStats
from bridge.ledger.rows import utcnow
from bridge.ledger.sql import SqlLedger

log = logging.getLogger(__name__)


@dataclass
class StepStats:
    """What one round did."""

    polled: list[PollResult] = field(default_factory=list)
    processed: ProcessStats = field(default_factory=ProcessStats)
    dispatched: DispatchStats = field(default_factory=DispatchStats)

    @property
    def idle(self) -> bool:
        return (
            not any(p.recorded for p in self.polled)
            and self.processed.processed
            + self.processed.echoes
            + self.processed.skipped
            + self.processed.errors
            == 0
            and self.dispatched.claimed == 0
        )


class Runtime:
    """The assembled bridge."""

    def __init__(
        self,
        settings: Settings,
        ledger: SqlLedger,
        tables: Tables,
        *,
        salesforce: SalesforceAdapter,
        servicenow: ServiceNowAdapter,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.now = now
        self.ledger = ledger
        self.tables = tables
        self.salesforce = salesforce
        self.servicenow = servicenow
        queues = tables.crosswalk.queues
        self.intakes: Sequence[Intake] = (
            SalesforceIntake(
                salesforce,
                ledger,
                queue_ids=[q.sf_queue_id for q in queues],
                work_item_types=[c.sf_work_item_type for c in tables.crosswalk.channels],
            ),
            ServiceNowIntake(
                servicenow,
                ledger,
                queue_sys_ids=[q.sn_queue_sys_id for q in queues if q.sn_queue_sys_id],
            ),
        )
        self.processor = Processor(ledger, tables, now=now)
        self.dispatcher = Dispatcher(
            ledger,
            {
                "salesforce": SalesforceExecutor(salesforce),
                "servicenow": ServiceNowExecutor(servicenow),
            },
            concurrency=settings.dispatch_concurrency,
            now=now,
        )

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        ledger: SqlLedger | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> Runtime:
        """``now`` is the bridge's clock (a sandbox run may follow the sandbox clock)."""
        tables = load_tables(settings.mappings_dir)
        ledger = ledger or SqlLedger.from_settings(settings)
        return cls(
            settings,
            ledger,
            tables,
            salesforce=SalesforceAdapter.from_settings(settings),
            servicenow=ServiceNowAdapter.from_settings(settings),
            now=now,
        )

    def close(self) -> None:
        self.dispatcher.close()

    def directions(self) -> set[Direction]:
        return {q.direction for q in self.tables.crosswalk.queues}

    def poll(self, now: datetime | None = None) -> list[PollResult]:
        """Read what changed in both systems into the inbox."""
        now = now or self.now()
        return [result for intake in self.intakes for result in intake.poll(now)]

    def step(self, now: datetime | None = None) -> StepStats:
        """One round: each stream's changes are processed and dispatched as soon as the
        stream is read (as the daemon does), not after the other streams."""
        now = now or self.now()
        stats = StepStats()

        def drain(result: PollResult | None = None) -> None:
            processed = self.processor.process_pending(
                handoff=self.dispatcher, news=result is not None
            )
            stats.processed.add(processed)
            stats.dispatched.add(self.dispatcher.run(processed.handed))
            stats.dispatched.add(self.dispatcher.run_once())

        for intake in self.intakes:
            stats.polled.extend(intake.poll(now, on_recorded=drain))
        drain()  # what earlier rounds left due: deferred events, retries, waiting commands
        return stats

    def settle(self, *, rounds: int = 50) -> list[StepStats]:
        """Step until a round does nothing (or ``rounds`` is reached)."""
        history = []
        for _ in range(rounds):
            stats = self.step()
            history.append(stats)
            if stats.idle:
                break
        return history
