"""``bridge sandbox``: both emulators, the bridge daemon on a SQLite ledger in a temporary
directory, and a contact centre's worth of generated conversations through every kind of
scenario; ends with what happened, measured from the ledger and the emulators' counters."""

from __future__ import annotations

import logging
import random
import secrets
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge.app.daemon import Daemon
from bridge.app.runtime import Runtime
from bridge.app.settings import Settings
from bridge.ledger.sql import SqlLedger
from bridge.logging import configure_logging
from bridge.reconcile import run_with
from bridge_sandbox.connect import sandbox_settings
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.serving import CONTROL_PREFIX, Clock, Counters, SandboxCA
from bridge_sandbox.traffic import (
    SCENARIOS_BY_NAME,
    SF_CLOSE,
    ContactCentre,
    Conversation,
    Scenario,
    Step,
    Stuck,
)

log = logging.getLogger(__name__)

# The mix of the demo: name → weight. Conversations that the scenario leaves active are
# closed by the agent at the end, so that agents' capacity frees up for the next ones.
MIX: dict[str, int] = {
    "accept": 6,
    "omni_decline": 2,
    "omni_push_timeout": 1,
    "sn_reject": 2,
    "sn_time_out": 1,
    "transfer_to_queue": 1,
    "transfer_to_agent": 1,
    "customer_abandons": 2,
    "close_in_servicenow": 1,
    "sn_originated": 3,
}
POLL_SECONDS = 0.2
PUMP_SECONDS = 0.05
# At most this many conversations at once: four agents with a capacity of five each.
WINDOW = 8


def _closed(cc: ContactCentre, conv: Conversation) -> bool:
    return cc.correlation_state(conv) in ("closed", "abandoned")


CLOSED = Step("the bridge to record the conversation as closed", _closed, lambda cc, c: None)


def closing(scenario: Scenario) -> Scenario:
    """The scenario, then (if it leaves the conversation active) the agent closes it."""
    if scenario.expected.correlation_state != "active":
        return scenario
    return replace(scenario, steps=(*scenario.steps, SF_CLOSE, CLOSED))


def pick(conversations: int, seed: int) -> list[Scenario]:
    """``conversations`` scenarios drawn from ``MIX`` (every kind at least once)."""
    names = list(MIX)
    chooser = random.Random(seed)  # noqa: S311 - a demo's dice
    picked = names[:conversations] + chooser.choices(
        names, weights=[MIX[n] for n in names], k=max(0, conversations - len(names))
    )
    chooser.shuffle(picked)
    return [closing(SCENARIOS_BY_NAME[name]) for name in picked]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_calls(counters: Counters) -> int:
    """Calls a bridge made (the control surface the simulation uses is not counted)."""
    return sum(
        row["count"] for row in counters.snapshot() if not row["route"].startswith(CONTROL_PREFIX)
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, int(q) - 1)]


@dataclass
class DemoReport:
    directory: Path
    ledger_url: str
    conversations: int
    elapsed_seconds: float
    scenarios: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    api_calls: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    drift: int = 0
    reconcile_run: str = ""
    # push mode: the instance's deliveries to the bridge's receiver, by how they ended
    deliveries: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.stuck and not self.problems and self.drift == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "ledger_url": self.ledger_url,
            "conversations": self.conversations,
            "elapsed_seconds": round(self.elapsed_seconds, 2),
            "scenarios": dict(self.scenarios),
            "outcomes": dict(self.outcomes),
            "stuck": self.stuck,
            "problems": self.problems,
            "api_calls": self.api_calls,
            "latency_ms": self.latency_ms,
            "drift": self.drift,
            "reconcile_run": self.reconcile_run,
            "deliveries": dict(self.deliveries),
            "ok": self.ok,
        }


# The bridge's receiver in push mode (BRIDGE_SERVICENOW__INTAKE=push): the instance posts
# to it as this user.
RECEIVER_USER = "servicenow-sandbox"


def receiver_values(ca: SandboxCA) -> dict[str, Any]:
    """The receiver of a demo bridge: any free port, the sandboxes' certificate (the
    instance trusts its CA), fresh Basic credentials."""
    return {
        "host": "127.0.0.1",
        "port": 0,
        "cert_file": ca.cert_file,
        "key_file": ca.key_file,
        "username": RECEIVER_USER,
        "password": secrets.token_urlsafe(24),
    }


def wire_provider(sn: ServiceNowSandbox, daemon: Daemon, settings: Settings) -> None:
    """Point the instance's provider subflow at the daemon's receiver once it listens (a
    delivery before that would be lost until the sweeper's next run)."""
    receiver = daemon.receiver
    password = settings.receiver.password
    if receiver is None or password is None or settings.receiver.username is None:
        return
    deadline = time.monotonic() + 15
    while not receiver.listening:
        if time.monotonic() > deadline:
            raise RuntimeError("the bridge's ServiceNow events receiver did not start")
        time.sleep(0.01)
    sn.control.set_provider(
        receiver.url, settings.receiver.username, password.get_secret_value(), str(sn.ca_bundle)
    )


@contextmanager
def running_daemon(runtime: Runtime) -> Iterator[Daemon]:
    daemon = Daemon(runtime, host="127.0.0.1", port=free_port(), reconcile=None)
    thread = threading.Thread(
        target=daemon.run, kwargs={"install_signals": False}, name="bridge", daemon=True
    )
    thread.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        thread.join(timeout=15)


def drive(
    cc: ContactCentre,
    scenarios: list[Scenario],
    on_done: Callable[[Conversation, str | None], None],
) -> None:
    """Run the conversations, ``WINDOW`` at a time; a stuck one is reported, not fatal."""
    queue = list(scenarios)
    live: list[Conversation] = []
    while queue or live:
        while queue and len(live) < WINDOW:
            scenario = queue.pop(0)
            conv = cc.begin(scenario)
            conv.scenario = scenario  # the demo's variant (closing at the end)
            live.append(conv)
        for conv in list(live):
            try:
                finished = cc.advance(conv)
            except Stuck as exc:
                live.remove(conv)
                on_done(conv, str(exc))
                continue
            if finished:
                live.remove(conv)
                on_done(conv, None)
        if live:
            time.sleep(PUMP_SECONDS)


def wait_quiet(ledger: SqlLedger, timeout: float = 20.0) -> bool:
    """Wait until the inbox is processed and the outbox has nothing left to send."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ledger.reading() as tx:
            stats = tx.audit.stats()
        outbox, inbox = stats["outbox"]["by_status"], stats["inbox"]["by_status"]
        busy = sum(outbox.get(s, 0) for s in ("pending", "claimed", "failed")) or inbox.get(
            "pending", 0
        )
        if not busy:
            return True
        time.sleep(POLL_SECONDS)
    return False


def _latencies(ledger: SqlLedger) -> dict[str, float]:
    """Milliseconds from an event's arrival in the inbox to its command's completion."""
    with ledger.reading() as tx:
        pairs = tx.audit.command_latencies()
    values = sorted(
        (done - received).total_seconds() * 1000 for received, done in pairs if done and received
    )
    return {
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "p99": round(percentile(values, 99), 1),
        "commands": float(len(values)),
    }


def _outcomes(ledger: SqlLedger) -> Counter[str]:
    with ledger.reading() as tx:
        by_state: dict[str, int] = tx.audit.stats()["correlations"]["by_state"]
    return Counter(by_state)


def run_demo(
    conversations: int = 50,
    *,
    seed: int = 1,
    directory: Path | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> DemoReport:
    """Everything ``bridge sandbox`` does, returning the report it prints."""
    directory = Path(directory or tempfile.mkdtemp(prefix="bridge-sandbox-"))
    directory.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    with (directory / "bridge.log").open("a") as log_file:
        configure_logging("INFO", "json", stream=log_file)
        try:
            return _run(conversations, seed, directory, progress)
        finally:
            # the log file closes here: give the process its own handlers back
            for handler in list(root.handlers):
                root.removeHandler(handler)
            for handler in saved[0]:
                root.addHandler(handler)
            root.setLevel(saved[1])


def _run(
    conversations: int, seed: int, directory: Path, progress: Callable[[int, int], None]
) -> DemoReport:
    ca = SandboxCA(directory / "ca")
    clock = Clock()
    ledger_url = f"sqlite:///{directory / 'ledger.db'}"
    with (
        SalesforceSandbox(ca=ca, clock=clock, state_dir=directory / "salesforce") as sf,
        ServiceNowSandbox(ca=ca, clock=clock, state_dir=directory / "servicenow") as sn,
    ):
        values: dict[str, Any] = {
            "data_dir": directory,
            "ledger_url": ledger_url,
            "salesforce": {"poll_interval": POLL_SECONDS},
            "servicenow": {"poll_interval": POLL_SECONDS},
        }
        settings = sandbox_settings(sf, sn, **values)
        if settings.servicenow.intake == "push":  # the instance delivers to a receiver
            settings = sandbox_settings(sf, sn, **values, receiver=receiver_values(ca))
        ledger = SqlLedger(ledger_url)
        ledger.upgrade()
        runtime = Runtime.build(settings, ledger=ledger)
        scenarios = pick(conversations, seed)
        report = DemoReport(directory, ledger_url, conversations, 0.0)
        report.scenarios.update(s.name for s in scenarios)
        started = time.monotonic()
        done = 0
        cc = ContactCentre(sf, sn, ledger, lambda: time.sleep(PUMP_SECONDS), max_pumps=400)

        ended: list[Conversation] = []

        def finished(conv: Conversation, stuck: str | None) -> None:
            nonlocal done
            done += 1
            if stuck:
                report.stuck.append(stuck)
            else:
                ended.append(conv)
            progress(done, len(scenarios))

        with running_daemon(runtime) as daemon:
            wire_provider(sn, daemon, settings)
            drive(cc, scenarios, finished)
            wait_quiet(ledger)
        for conv in ended:
            report.problems.extend(
                f"{conv.scenario.name}: {problem}" for problem in cc.observe(conv).problems
            )
        report.elapsed_seconds = time.monotonic() - started
        reconciliation = run_with(runtime, apply=False)
        report.drift = reconciliation.unresolved
        report.reconcile_run = reconciliation.run_id
        report.outcomes = _outcomes(ledger)
        report.latency_ms = _latencies(ledger)
        report.api_calls = {
            "salesforce_rest": api_calls(sf.counters),
            "salesforce_interaction_api": api_calls(sf.scrt_counters),
            "servicenow": api_calls(sn.counters),
        }
        report.deliveries = Counter(d["state"] for d in sn.control.deliveries())
        runtime.close()
        ledger.close()
        return report
