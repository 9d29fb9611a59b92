"""``bridge run``: intake, processing, dispatch and the reconcilers on threads under
APScheduler 3, with the health/metrics endpoint and an orderly SIGTERM.

A SIGTERM stops it within ``SHUTDOWN_BUDGET_SECONDS`` whatever is in flight, and keeps the
ledger whole: no job or outbound call starts any more; polls, the processor and the calls
out get ``DRAIN_SECONDS`` to finish (a poll commits its events and cursor together, or
neither); what is still claimed then (a call whose answer has not come) is given back,
due at once and marked so that the next attempt looks before it creates anything twice,
and the process leaves the calls behind. A SIGTERM during start-up (migrating the ledger,
checking access) unwinds it: the migration's transaction rolls back, then the process
exits (``StopRequested``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from starlette.types import ASGIApp

from bridge.app.health import Check, HealthServer, stream_check
from bridge.app.runtime import Runtime
from bridge.errors import BridgeError
from bridge.flow.intake import Intake
from bridge.flow.stream_metrics import StatusObserver
from bridge.ledger.rows import utcnow
from bridge.metrics import instance_id, observe_instance, observe_ledger, observe_poll

log = logging.getLogger(__name__)

MISFIRE_GRACE_SECONDS = 30
SHUTDOWN_BUDGET_SECONDS = 10.0
# Of the budget: how long what is in flight may take to finish; the rest is for giving
# back what did not and for closing the endpoint.
DRAIN_SECONDS = 7.0
IDLE_WAIT_SECONDS = 0.25
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(KeyboardInterrupt):
    """SIGTERM / SIGINT while the daemon is starting. A KeyboardInterrupt, so that it
    unwinds whatever start-up is doing: a database driver cancels the statement it waits
    on, the migration's transaction rolls back."""


@contextmanager
def stop_raises_during_startup() -> Iterator[None]:
    """Until ``Daemon.run`` installs its own handlers, a stop signal raises
    ``StopRequested`` where start-up is. The handlers are left in place on the way out
    (restoring the defaults would let a signal kill the process before the daemon's own
    are installed); on an error they are restored."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise StopRequested(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    except BaseException:
        for s, old in previous.items():
            signal.signal(s, old)
        raise


class _Jobs:
    """How many scheduled jobs are running (the shutdown waits for them)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._changed:
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._running == 0, timeout=max(0.0, timeout))


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
        console: ASGIApp | None = None,
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
        self.health = HealthServer(self.readiness, host=host, port=port, console=console)
        self._threads: list[threading.Thread] = []
        self._jobs = _Jobs()
        # Set when the stop left calls or jobs running: the process must not wait for them.
        self.left_running = False
        self._instance = instance_id()
        # ServiceNow in push mode: its receiver takes the changes, its polls sweep slowly.
        self.receiver = runtime.push_receiver(on_recorded=self._events.set)
        self._swept = {"servicenow"} if self.receiver is not None else set()
        # Salesforce in pubsub mode: its change stream takes the changes, its polls sweep.
        self.sf_stream = runtime.salesforce_stream(on_recorded=lambda _: self._events.set())
        if self.sf_stream is not None:
            self._swept.add("salesforce")
        self._stream_gauges = (
            None
            if self.sf_stream is None
            else StatusObserver(self.sf_stream.stream, runtime.settings.salesforce.intake)
        )

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
        if self.receiver is not None:
            listening = self.receiver.listening
            checks["servicenow receiver"] = Check(
                listening, self.receiver.url if listening else "not listening"
            )
        if self.sf_stream is not None:
            checks["salesforce stream"] = stream_check(
                self.sf_stream.status, down_after=self._max_lag, now=now
            )
        for name, state in self._polls.items():
            # a sweeper runs every few minutes, and what it reads is old by design
            swept = name in self._swept
            allowed = self._max_lag + (2 * self._interval(name) if swept else 0.0)
            if not state.ok:
                checks[name] = Check(False, state.error)
            elif now - state.at > allowed:
                checks[name] = Check(False, f"last successful poll {now - state.at:.0f}s ago")
            elif swept:
                checks[name] = Check(True, "authenticated, sweeping")
            elif state.lag is not None and state.lag > self._max_lag:
                checks[name] = Check(False, f"intake lag {state.lag:.0f}s")
            else:
                checks[name] = Check(True, "authenticated, polling")
        return checks

    def _interval(self, intake: str) -> float:
        """Seconds between two polls of an intake (a swept one: its sweep interval)."""
        settings = self.runtime.settings
        if intake in self._swept:
            if intake == "salesforce":
                return settings.salesforce.sweep_interval
            return settings.servicenow.sweep_interval
        intervals = {
            "salesforce": settings.salesforce.poll_interval,
            "servicenow": settings.servicenow.poll_interval,
        }
        return intervals.get(intake, 2.0)

    # -- jobs -------------------------------------------------------------------------------

    def _poll(self, intake: Intake) -> None:
        with self._jobs.running():
            self._poll_once(intake)

    def _poll_once(self, intake: Intake) -> None:
        state = self._polls[intake.name]
        try:
            results = intake.poll(utcnow(), on_recorded=lambda _: self._events.set())
        except BridgeError as exc:
            state.ok, state.error = False, str(exc)
            observe_poll(intake.name, False, time.time())
            log.warning("intake %s: %s", intake.name, exc)
            return
        except Exception as exc:
            state.ok, state.error = False, f"{type(exc).__name__}: {exc}"
            observe_poll(intake.name, False, time.time())
            log.exception("intake %s failed", intake.name)
            return
        observe_poll(intake.name, True, time.time())
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
            with self._jobs.running():
                self._reconcile()
        except Exception:
            log.exception("scheduled reconciliation failed")
        self._gauge_outbox()  # the run's findings on /metrics now, not at the next count

    def _gauge_outbox(self) -> None:
        if self._stream_gauges is not None and self.sf_stream is not None:
            self._stream_gauges.look(self.sf_stream.status)
        try:
            with self.runtime.ledger.reading() as tx:
                stats = tx.audit.stats()
                runs = tx.audit.reconcile_runs(1)
            observe_ledger(stats, (runs[0][0].started_at, runs[0][1]) if runs else None)
        except Exception:
            log.debug("ledger gauges failed", exc_info=True)

    def _observe_instance(self, *, holding: bool) -> None:
        # One instance runs every stream (no leases yet): it is their holder while it runs.
        streams = [s for intake in self.runtime.intakes for s in intake.streams()]
        ledger = self.runtime.settings.effective_ledger_url.split(":", 1)[0].split("+", 1)[0]
        observe_instance(self._instance, ledger, streams, holding)

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
        # the one daemon of this ledger: a predecessor's claims are dead ones (issue 15)
        self.runtime.dispatcher.take_back_claims()
        if self.receiver is not None:
            self.receiver.start()
            log.info("ServiceNow events receiver on %s", self.receiver.url)
        for intake in self.runtime.intakes:
            self._scheduler.add_job(
                self._poll,
                "interval",
                seconds=self._interval(intake.name),
                args=[intake],
                id=f"intake:{intake.name}",
                next_run_time=datetime.now(UTC),
            )
        self._observe_instance(holding=True)
        self._scheduler.add_job(
            self._gauge_outbox,
            "interval",
            seconds=15,
            id="ledger-gauges",
            next_run_time=datetime.now(UTC),
        )
        if self._reconcile is not None:
            self._scheduler.add_job(
                self._reconcile_job, "interval", seconds=self._reconcile_every, id="reconcile"
            )
        for target, name in ((self._process_loop, "process"), (self._dispatch_loop, "dispatch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.sf_stream is not None:
            stream = threading.Thread(
                target=self.sf_stream.run, args=(self._stop,), name="salesforce-stream", daemon=True
            )
            stream.start()
            self._threads.append(stream)
        self._scheduler.start()
        log.info("bridge running")
        self._stop.wait()
        return self._shutdown()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        self.stop()

    def _shutdown(self) -> int:
        """Stop within the budget, whatever is in flight (see the module's docstring)."""
        started = time.monotonic()
        drained_by = started + DRAIN_SECONDS

        def left() -> float:
            return max(0.0, drained_by - time.monotonic())

        if self.receiver is not None:  # no delivery is taken any more (the sweeper reads it)
            self.receiver.stop(timeout=min(2.0, left()))
        if self.sf_stream is not None:  # a batch being recorded commits or rolls back whole
            self.sf_stream.stop()
        self.runtime.stop_calls()
        self._scheduler.shutdown(wait=False)  # no job starts; running ones are waited below
        for thread in self._threads:
            thread.join(timeout=left())
        jobs_done = self._jobs.wait_idle(left())
        calls_done = self.runtime.calls.wait_idle(left())
        stuck = [t.name for t in self._threads if t.is_alive()]
        calls_out = self.runtime.calls.out
        settled = jobs_done and calls_done and not stuck
        self.runtime.close(wait=settled)
        try:
            given_back = self.runtime.give_back()
        except BridgeError as exc:  # the ledger is down: the next start takes them back
            log.warning("could not give back the commands still claimed: %s", exc)
            given_back = []
        self._observe_instance(holding=False)
        closing = started + SHUTDOWN_BUDGET_SECONDS - 1.5 - time.monotonic()
        self.health.stop(timeout=max(0.5, closing))
        took = time.monotonic() - started
        if not settled:
            self.left_running = True
            log.warning(
                "stopped after %.1fs with %d call(s) still out%s: %d command(s) given back, "
                "each looks before it acts at the next start",
                took,
                calls_out,
                "" if jobs_done else " and a scheduled job running",
                len(given_back),
                extra={"commands": given_back},
            )
        elif given_back:
            log.info("bridge stopped after %.1fs; %d command(s) given back", took, len(given_back))
        else:
            log.info("bridge stopped after %.1fs", took)
        return 0
