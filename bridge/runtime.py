"""Everything one bridge runs, built from settings: ledger, mapping tables, both adapters,
both intakes, the processor and the dispatcher. ``step`` drives one synchronous round
(used by the one-off commands, the sandbox demo and the end-to-end tests); the daemon in
``bridge.daemon`` runs the same pieces on threads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bridge.config import Settings
from bridge.dispatch import Dispatcher, DispatchStats, SalesforceExecutor, ServiceNowExecutor
from bridge.http import make_session
from bridge.intake import Intake, PollResult
from bridge.ledger.models import utcnow
from bridge.ledger.store import Ledger
from bridge.mapping import Tables, load_tables
from bridge.model import Direction
from bridge.pipeline import Processor, ProcessStats
from bridge.salesforce.api import SalesforceAdapter
from bridge.salesforce.auth import SalesforceTokens
from bridge.salesforce.intake import SalesforceIntake
from bridge.servicenow.api import ServiceNowAdapter
from bridge.servicenow.intake import ServiceNowIntake

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


def salesforce_adapter(settings: Settings) -> SalesforceAdapter:
    sf = settings.require_salesforce()
    session = make_session(settings.ca_bundle, timeout=settings.http_timeout, system="salesforce")
    assert sf.client_id is not None
    tokens = SalesforceTokens(
        session,
        login_url=sf.login_url,
        client_id=sf.client_id,
        client_secret=sf.client_secret,
        username=sf.username,
        jwt_key_file=sf.jwt_key_file,
    )
    return SalesforceAdapter(
        session,
        tokens,
        api_version=sf.api_version,
        scrt_url=sf.scrt_url,
        org_id=sf.org_id,
        authorization_context=sf.authorization_context,
        authorization_context_type=sf.authorization_context_type,
        instance_url=sf.instance_url,
    )


def servicenow_adapter(settings: Settings) -> ServiceNowAdapter:
    sn = settings.require_servicenow()
    session = make_session(settings.ca_bundle, timeout=settings.http_timeout, system="servicenow")
    assert sn.instance_url is not None
    return ServiceNowAdapter(
        session,
        sn.instance_url,
        username=sn.username,
        password=sn.password,
        client_id=sn.client_id,
        client_secret=sn.client_secret,
    )


class Runtime:
    """The assembled bridge."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
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
        self.processor = Processor(ledger, tables)
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
        ledger: Ledger | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> Runtime:
        """``now`` is the bridge's clock (a sandbox run may follow the sandbox clock)."""
        tables = load_tables(settings.mappings_dir)
        ledger = ledger or Ledger.from_settings(settings)
        return cls(
            settings,
            ledger,
            tables,
            salesforce=salesforce_adapter(settings),
            servicenow=servicenow_adapter(settings),
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
        """One round: each intake's changes are processed and dispatched as soon as that
        intake has read them (as the daemon does), not after the other system's poll."""
        now = now or self.now()
        stats = StepStats()
        for intake in self.intakes:
            polled = intake.poll(now)
            stats.polled.extend(polled)
            stats.processed.add(self.processor.process_pending())
            stats.dispatched.add(self.dispatcher.run_once())
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
