"""A bridge on both sandboxes for the benchmarks that count what the bridge does (not how
fast): the emulators in this process, a SQLite ledger in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.app.runtime import Runtime, StepStats
from bridge.ledger import SqlLedger
from bridge_sandbox.connect import sandbox_settings
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.serving import Clock, SandboxCA
from bridge_sandbox.traffic import SCENARIOS_BY_NAME, ContactCentre, Conversation

LIFECYCLE = "close_in_salesforce"


@dataclass
class Rig:
    runtime: Runtime
    ledger: SqlLedger
    centre: ContactCentre
    conversation: Conversation | None = None

    @property
    def ledger_engine(self) -> Any:
        return self.ledger.engine

    def step(self) -> StepStats:
        return self.runtime.step()

    def settle(self) -> None:
        self.runtime.settle()

    def start_sf_conversation(self) -> None:
        self.conversation = self.centre.begin(SCENARIOS_BY_NAME[LIFECYCLE])

    def offer_path(self) -> None:
        """The PSR stream read, its events processed and handed over, their commands run."""
        psr_stream = self.runtime.intakes[0]._poll_psr  # type: ignore[attr-defined]
        psr_stream(self.runtime.now())
        processed = self.runtime.processor.process_pending(
            handoff=self.runtime.dispatcher, news=True
        )
        self.runtime.dispatcher.run(processed.handed)

    def offered(self) -> bool:
        assert self.conversation is not None
        return self.centre.offer(self.conversation) is not None


@contextmanager
def sandboxes(tmp: Path) -> Iterator[Rig]:
    clock = Clock()
    ca = SandboxCA()
    sf = SalesforceSandbox(ca=ca, clock=clock, state_dir=tmp / "sf")
    sn = ServiceNowSandbox(ca=ca, clock=clock)
    with sf, sn:
        settings = sandbox_settings(sf, sn, ledger_url=f"sqlite:///{tmp / 'ledger.db'}")
        ledger = SqlLedger(settings.effective_ledger_url, now=clock.now)
        ledger.upgrade()
        runtime = Runtime.build(settings, ledger=ledger, now=clock.now)
        try:
            yield Rig(runtime, ledger, ContactCentre(sf, sn, ledger, runtime.step))
        finally:
            runtime.close()
            ledger.close()
