"""Everything one bridge runs, built from settings: ledger, mapping tables, both adapters,
both intakes, the processor and the dispatcher. ``step`` drives one synchronous round
(used by the one-off commands, the sandbox demo and the end-to-end tests); the daemon in
``bridge.app.daemon`` runs the same pieces on threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.salesforce.executor import SalesforceExecutor
from bridge.adapters.salesforce.polling import SalesforceIntake
from bridge.adapters.servicenow.client import ServiceNowAdapter
from bridge.adapters.servicenow.executor import ServiceNowExecutor
from bridge.adapters.servicenow.polling import ServiceNowIntake
from bridge.adapters.servicenow.receiver import Receiver
from bridge.app.settings import Settings
from bridge.domain import ClaimedCommand, Direction
from bridge.domain.mapping import Tables, load_tables
from bridge.errors import BridgeError, ConfigError, Retriable
from bridge.flow.dispatch import Dispatcher, DispatchStats, Executor
from bridge.flow.intake import Intake, PollResult
from bridge.flow.processor import Processor, ProcessStats
from bridge.flow.streams import StreamRunner
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


class CallGate:
    """Every outbound call of the dispatcher passes here: counted while it is out, and
    refused once the daemon stops (the command is retried at the next start, nothing is
    sent that the stop would cut off)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open = True
        self._out = 0

    def close(self) -> None:
        with self._changed:
            self._open = False

    @property
    def out(self) -> int:
        """Calls in flight now."""
        with self._changed:
            return self._out

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is out; False when some still are after ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: self._out == 0, timeout=max(0.0, timeout))

    def guard(self, system: str, executor: Executor) -> Executor:
        return _GatedExecutor(self, system, executor)

    def enter(self, system: str, command: ClaimedCommand) -> None:
        with self._changed:
            if not self._open:
                raise Retriable(
                    f"not sent: the bridge is stopping ({command.operation.value} goes out "
                    "at the next start)",
                    system=system,
                )
            self._out += 1

    def leave(self) -> None:
        with self._changed:
            self._out -= 1
            self._changed.notify_all()


@dataclass(frozen=True)
class _GatedExecutor:
    gate: CallGate
    system: str
    inner: Executor

    def execute(self, command: ClaimedCommand) -> Mapping[str, Any]:
        self.gate.enter(self.system, command)
        try:
            return self.inner.execute(command)
        finally:
            self.gate.leave()


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
        self.calls = CallGate()
        self.dispatcher = Dispatcher(
            ledger,
            {
                "salesforce": self.calls.guard("salesforce", SalesforceExecutor(salesforce)),
                "servicenow": self.calls.guard("servicenow", ServiceNowExecutor(servicenow)),
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

    def close(self, *, wait: bool = True) -> None:
        """``wait=False``: do not wait for calls still out (see ``give_back``)."""
        self.dispatcher.close(wait=wait)

    def stop_calls(self) -> None:
        """No outbound call starts from now on; those out may still answer."""
        self.calls.close()

    def give_back(self) -> list[str]:
        """Release what this runtime's dispatcher still has claimed (calls whose answer
        never came, runs dropped from its queue): due at once for whoever runs next, which
        looks before it acts. An answer recorded first is kept."""
        with self.ledger.transaction() as tx:
            return tx.outbox.release_claims(self.dispatcher.worker)

    def check_access(self) -> list[str]:
        """One authenticated read from each system, at start. A system that refuses the
        bridge (credentials rejected, its certificate not trusted, any permanent answer) is
        a ``ConfigError`` naming it: nothing would work until the settings change. One
        that cannot be reached now is only returned as a warning: the daemon starts not
        ready and its polls retry."""
        probes: dict[str, Callable[[], object]] = {
            "salesforce": lambda: next(
                iter(self.salesforce.query("SELECT Id FROM PendingServiceRouting LIMIT 1")),
                None,
            ),
            "servicenow": lambda: self.servicenow.query("awa_work_item", "", ("sys_id",), 1),
        }
        refused: list[str] = []
        unreachable: list[str] = []
        for system, probe in probes.items():
            try:
                probe()
            except Retriable as exc:
                unreachable.append(f"{system} not reachable at start: {exc.message}")
            except BridgeError as exc:
                code = f" [{exc.code}]" if exc.code else ""
                refused.append(f"{system} refused the bridge at start: {exc.message}{code}")
        if refused:
            raise ConfigError("; ".join(refused), detail=refused)
        return unreachable

    def push_receiver(self, on_recorded: Callable[[], None] | None = None) -> Receiver | None:
        """The listener for what the ServiceNow instance pushes, when its intake is
        ``push`` (settings checked complete: ``ConfigError`` naming what is missing)."""
        if self.settings.servicenow.intake != "push":
            return None
        queues = self.tables.crosswalk.queues
        return Receiver(
            self.settings.require_receiver(),
            self.ledger,
            mapped=frozenset(q.sn_queue_sys_id for q in queues if q.sn_queue_sys_id),
            on_recorded=on_recorded,
            now=self.now,
        )

    def salesforce_stream(
        self, on_recorded: Callable[[int], None] | None = None
    ) -> StreamRunner | None:
        """The Salesforce change stream, when its intake is ``pubsub`` (its polls then
        run as the sweeper and as the stream's catch-up read)."""
        if self.settings.salesforce.intake == "pushtopic":
            from bridge.adapters.salesforce.pushtopics import pushtopic_runner  # noqa: PLC0415

            reader = next(i for i in self.intakes if isinstance(i, SalesforceIntake))
            queue_ids = [q.sf_queue_id for q in self.tables.crosswalk.queues]
            return pushtopic_runner(
                self.settings,
                self.salesforce,
                reader,
                self.ledger,
                queue_ids=queue_ids,
                on_recorded=on_recorded,
            )
        if self.settings.salesforce.intake != "pubsub":
            return None
        # grpc is loaded only when the stream runs
        from bridge.adapters.salesforce.pubsub.client import pubsub_runner  # noqa: PLC0415

        intake = next(i for i in self.intakes if isinstance(i, SalesforceIntake))
        return pubsub_runner(
            self.settings,
            self.salesforce,
            intake,
            self.ledger,
            on_recorded=on_recorded,
            now=self.now,
        )

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
