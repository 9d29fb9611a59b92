"""``bridge run``: intake, processing, dispatch and the reconcilers on threads under
APScheduler 3, with the health/metrics endpoint and an orderly SIGTERM.

Shutdown order keeps the ledger whole: intake jobs stop first (a poll in progress commits
its events and cursor together, or neither), then the processor finishes the event in
hand, then the dispatcher stops claiming and waits for calls in flight; a command whose
answer never came stays claimed and is picked up again after its lease, looking before it
creates anything twice.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from bridge.app.health import Check, HealthServer
from bridge.app.runtime import Runtime
from bridge.errors import BridgeError
from bridge.flow.intake import Intake
from bridge.ledger.rows import utcnow
from bridge.metrics import OUTBOX_DEPTH

log = logging.getLogger(__name__)

MISFIRE_GRACE_SECONDS = 30
SHUTDOWN_BUDGET_SECONDS = 10.0
IDLE_WAIT_SECONDS = 0.25


@dataclass
class PollState:
    at: float = 0.0
    ok: bool = False
    error: str = "not polled yet"
    lag: float | None = None


ReconcileJob = Callable[[], None]


class Daemon:
    """Runs one ``Runtime`` until stopped."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        host: str,
        port: int,
        max_intake_lag: float = 120.0,
        reconcile: ReconcileJob | None = None,
        reconcile_every: float = 300.0,
    ) -> None:
        self.runtime = runtime
        self._stop = threading.Event()
        self._events = threading.Event()
        self._polls: dict[str, PollState] = {i.name: PollState() for i in runtime.intakes}
        self._max_lag = max_intake_lag
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={
                "max_instances": 1,
                "coalesce": True,
                "misfire_grace_time": MISFIRE_GRACE_SECONDS,
            },
        )
        self._reconcile = reconcile
        self._reconcile_every = reconcile_every
        self.health = HealthServer(self.readiness, host=host, port=port)
        self._threads: list[threading.Thread] = []

    # -- readiness --------------------------------------------------------------------------

    def readiness(self) -> Mapping[str, Check]:
        checks: dict[str, Check] = {}
        try:
            with self.runtime.ledger.reading() as tx:
                tx.ping()
            checks["ledger"] = Check(True)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            checks["ledger"] = Check(False, f"{type(exc).__name__}: {exc}")
        now = time.monotonic()
        for name, state in self._polls.items():
            if not state.ok:
                checks[name] = Check(False, state.error)
            elif now - state.at > self._max_lag:
                checks[name] = Check(False, f"last successful poll {now - state.at:.0f}s ago")
            elif state.lag is not None and state.lag > self._max_lag:
                checks[name] = Check(False, f"intake lag {state.lag:.0f}s")
            else:
                checks[name] = Check(True, "authenticated, polling")
        return checks

    # -- jobs -------------------------------------------------------------------------------

    def _poll(self, intake: Intake) -> None:
        state = self._polls[intake.name]
        try:
            results = intake.poll(utcnow(), on_recorded=lambda _: self._events.set())
        except BridgeError as exc:
            state.ok, state.error = False, str(exc)
            log.warning("intake %s: %s", intake.name, exc)
            return
        except Exception as exc:
            state.ok, state.error = False, f"{type(exc).__name__}: {exc}"
            log.exception("intake %s failed", intake.name)
            return
        lags = [r.lag_seconds for r in results if r.lag_seconds is not None]
        state.at, state.ok, state.error = time.monotonic(), True, ""
        state.lag = max(lags) if lags else None
        if any(r.recorded for r in results):
            self._events.set()

    def _process_loop(self) -> None:
        while not self._stop.is_set():
            self._events.wait(IDLE_WAIT_SECONDS)
            self._events.clear()
            try:
                while not self._stop.is_set():
                    dispatcher = self.runtime.dispatcher
                    stats = self.runtime.processor.process_pending(limit=200, handoff=dispatcher)
                    dispatcher.submit(stats.handed)
                    if stats.commands:
                        dispatcher.wake.set()
                    if stats.processed + stats.echoes + stats.skipped + stats.errors == 0:
                        break
            except Exception:
                log.exception("processing the inbox failed; trying again")
                self._stop.wait(1.0)

    def _dispatch_loop(self) -> None:
        dispatcher = self.runtime.dispatcher
        while not self._stop.is_set():
            try:
                stats = dispatcher.run_once()
            except Exception:
                log.exception("dispatch failed; trying again")
                self._stop.wait(1.0)
                continue
            if stats.claimed == 0:
                dispatcher.wake.wait(IDLE_WAIT_SECONDS)
                dispatcher.wake.clear()

    def _reconcile_job(self) -> None:
        if self._reconcile is None:
            return
        try:
            self._reconcile()
        except Exception:
            log.exception("scheduled reconciliation failed")

    def _gauge_outbox(self) -> None:
        try:
            with self.runtime.ledger.reading() as tx:
                counts = tx.audit.stats()["outbox"]["by_status"]
            for status, count in counts.items():
                OUTBOX_DEPTH.labels(status).set(count)
        except Exception:
            log.debug("outbox gauge failed", exc_info=True)

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self._stop.set()
        self._events.set()
        self.runtime.dispatcher.wake.set()

    def run(self, *, install_signals: bool = True) -> int:
        # APScheduler logs every run of every job at INFO: a line per poll per second.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.health.start()
        log.info("health endpoint on http://%s:%d", self.health.host, self.health.port)
        settings = self.runtime.settings
        intervals = {
            "salesforce": settings.salesforce.poll_interval,
            "servicenow": settings.servicenow.poll_interval,
        }
        for intake in self.runtime.intakes:
            self._scheduler.add_job(
                self._poll,
                "interval",
                seconds=intervals.get(intake.name, 2.0),
                args=[intake],
                id=f"intake:{intake.name}",
                next_run_time=datetime.now(UTC),
            )
        self._scheduler.add_job(self._gauge_outbox, "interval", seconds=15, id="outbox-gauge")
        if self._reconcile is not None:
            self._scheduler.add_job(
                self._reconcile_job, "interval", seconds=self._reconcile_every, id="reconcile"
            )
        for target, name in ((self._process_loop, "process"), (self._dispatch_loop, "dispatch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._scheduler.start()
        log.info("bridge running")
        self._stop.wait()
        return self._shutdown()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        self.stop()

    def _shutdown(self) -> int:
        deadline = time.monotonic() + SHUTDOWN_BUDGET_SECONDS
        self._scheduler.shutdown(wait=True)
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self.runtime.close()
        self.health.stop()
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("stopped with work in flight in %s; leases will expire", stuck)
            return 1
        log.info("bridge stopped")
        return 0
