"""Figures of the bridge's flows against both sandboxes (in this process, over HTTPS).

1. Bridge-added latency: from the intake having read a change (the moment it hands the
   event to the inbox) to the resulting outbound call reaching the sandbox (the record
   hook of the emulator), p50/p99. Poll waits are excluded: conversations run one at a
   time and the clock starts after the read.
2. Sustained full Salesforce → ServiceNow lifecycles per second (PSR → interaction +
   offer → AWA accept → AgentWork → Salesforce accept → close → interaction closed) with
   ``--latency-ms`` injected on every sandbox call: ``throughput`` runs the bridge in this
   process round by round (``Runtime.step``), ``throughput_daemon`` runs ``bridge run`` in a
   process of its own (the emulators and the simulated agents keep this one).
3. API calls per lifecycle for each scenario against its minimum (dispatch only; polling
   costs per round, not per conversation).

    uv run python -m bench.flow [--latency-n 200] [--throughput-n 400] [--in-flight 100]
        [--latency-ms 20] [--concurrency 32] [--poll-seconds 0.25] [--skip latency ...]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.app.runtime import Runtime
from bridge.flow.intake import Watermark
from bridge.ledger import NewEvent, RecordResult, SqlLedger
from bridge_sandbox import seed
from bridge_sandbox.connect import sandbox_settings, write_env
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.serving import Clock, Counters, SandboxCA
from bridge_sandbox.traffic import SCENARIOS, SCENARIOS_BY_NAME, ContactCentre, Stuck

RESULTS = Path(__file__).parent / "results" / "flow.json"
LIFECYCLE = "close_in_salesforce"
AGENT_CAPACITY = 10_000
# How often the simulated agents look again while the daemon works.
SIMULATION_PUMP_SECONDS = 0.02


class _Stamps:
    """Server-side receive times of the calls that create records, keyed by what links
    them to the change that caused them (the Salesforce work item id)."""

    def __init__(self) -> None:
        self.received: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def stamp(self, what: str, key: str | None) -> None:
        if key:
            with self._lock:
                self.received.setdefault((what, key), time.perf_counter())


class _SalesforceHook:
    """Org behaviour: stamps AgentWork inserts (every other hook does nothing)."""

    def __init__(self, stamps: _Stamps) -> None:
        self._stamps = stamps

    def before_insert(self, org: Any, sobject: str, record: dict[str, Any], system: bool) -> None:
        if sobject == "AgentWork" and not system:
            self._stamps.stamp("agent_work", str(record.get("WorkItemId") or "")[:15])

    def after_insert(self, *args: Any) -> None: ...
    def before_update(self, *args: Any) -> None: ...
    def after_update(self, *args: Any) -> None: ...
    def before_delete(self, *args: Any) -> None: ...
    def after_delete(self, *args: Any) -> None: ...


class _ServiceNowHook:
    """Instance behaviour: stamps interaction inserts made by the bridge."""

    def __init__(self, stamps: _Stamps) -> None:
        self._stamps = stamps

    def before_insert(self, inst: Any, table: str, row: dict[str, str], user: str | None) -> None:
        if table == "interaction":
            self._stamps.stamp("interaction", (row.get("correlation_id") or "")[:15])

    def after_insert(self, *args: Any) -> None: ...
    def before_update(self, *args: Any) -> None: ...
    def after_update(self, *args: Any) -> None: ...
    def before_delete(self, *args: Any) -> None: ...
    def after_delete(self, *args: Any) -> None: ...


class _ReadTimes:
    """Wraps each intake's ``StreamRecorder.record``: the moment the intake hands over
    what it read."""

    def __init__(self, runtime: Runtime) -> None:
        self.read: dict[tuple[str, str], float] = {}
        for intake in runtime.intakes:
            recorder = intake._recorder  # type: ignore[attr-defined]
            recorder.record = self._wrap(recorder.record)

    def _wrap(self, record: Callable[..., RecordResult]) -> Callable[..., RecordResult]:
        def recording(
            stream: str, events: Sequence[NewEvent], reached: Watermark | None
        ) -> RecordResult:
            now = time.perf_counter()
            for event in events:
                payload = event.payload
                if event.kind == "psr":
                    self.read.setdefault(("interaction", str(payload["WorkItemId"])[:15]), now)
                elif event.kind == "awa_work_item" and payload.get("state") == "accepted":
                    self.read.setdefault(("agent_work", str(payload.get("document_id"))), now)
            return record(stream, events, reached)

        return recording


@dataclass
class Rig:
    sf: SalesforceSandbox
    sn: ServiceNowSandbox
    clock: Clock
    ledger: SqlLedger
    runtime: Runtime
    bridge_seconds: float = 0.0

    def pump(self) -> None:
        started = time.perf_counter()
        self.runtime.step()
        self.bridge_seconds += time.perf_counter() - started

    def centre(self, max_pumps: int = 50) -> ContactCentre:
        return ContactCentre(self.sf, self.sn, self.ledger, self.pump, max_pumps=max_pumps)


@contextmanager
def rig(concurrency: int) -> Iterator[Rig]:
    """Both sandboxes (shared CA and clock), a SQLite ledger in a temp dir, a bridge."""
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        clock = Clock()
        ca = SandboxCA(Path(tmp) / "ca")
        with (
            SalesforceSandbox(ca=ca, clock=clock, state_dir=Path(tmp) / "sf") as sf,
            ServiceNowSandbox(ca=ca, clock=clock) as sn,
        ):
            settings = sandbox_settings(
                sf,
                sn,
                ledger_url=f"sqlite:///{tmp}/ledger.db",
                dispatch_concurrency=concurrency,
            )
            ledger = SqlLedger(settings.effective_ledger_url, now=clock.now)
            ledger.upgrade()
            runtime = Runtime.build(settings, ledger=ledger, now=clock.now)
            _roomy(sf)
            try:
                yield Rig(sf, sn, clock, ledger, runtime)
            finally:
                runtime.close()
                ledger.close()


def _roomy(sf: SalesforceSandbox) -> None:
    """Agents with capacity for every conversation in flight (the seed gives them 5)."""
    for agent in seed.AGENTS:
        sf.control.set_presence(agent.sf_user_id, True, capacity=AGENT_CAPACITY)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(n: int, concurrency: int) -> dict[str, Any]:
    """(1) intake read → outbound call received, per change, conversations one at a time."""
    with rig(concurrency) as r:
        stamps = _Stamps()
        r.sf.org.add_behaviour(_SalesforceHook(stamps))
        r.sn.instance.add_behaviour(_ServiceNowHook(stamps))
        reads = _ReadTimes(r.runtime)
        centre = r.centre()
        lifecycle = SCENARIOS_BY_NAME[LIFECYCLE]
        for _ in range(n):
            centre.run(lifecycle)
        samples = {
            "interaction": [
                (received - reads.read[key]) * 1000
                for key, received in stamps.received.items()
                if key[0] == "interaction" and key in reads.read
            ],
            "agent_work": _agent_work_latency(r, stamps, reads),
        }
        everything = samples["interaction"] + samples["agent_work"]
        return {
            "conversations": n,
            "samples": len(everything),
            "p50_ms": round(statistics.median(everything), 2),
            "p99_ms": round(_percentile(everything, 0.99), 2),
            "by_call": {
                what: {
                    "p50_ms": round(statistics.median(v), 2),
                    "p99_ms": round(_percentile(v, 0.99), 2),
                }
                for what, v in samples.items()
                if v
            },
        }


def _agent_work_latency(r: Rig, stamps: _Stamps, reads: _ReadTimes) -> list[float]:
    """The accepted work item is read by its interaction; the AgentWork names the
    Salesforce work item: join the two through the interaction's correlation_id."""
    out = []
    for item in r.sn.instance.rows("interaction"):
        work_item = (item.get("correlation_id") or "")[:15]
        read = reads.read.get(("agent_work", item["sys_id"]))
        received = stamps.received.get(("agent_work", work_item))
        if read is not None and received is not None:
            out.append((received - read) * 1000)
    return out


def _every_call_slowed(r: Rig, latency_ms: float) -> None:
    r.sf.control.add_fault("rest", latency_ms=latency_ms)
    r.sf.control.add_fault("scrt", latency_ms=latency_ms)
    r.sn.control.add_fault({"latency_ms": latency_ms})


def throughput(n: int, concurrency: int, latency_ms: float, batch: int) -> dict[str, Any]:
    """(2) full lifecycles per second, ``batch`` conversations in flight at a time."""
    with rig(concurrency) as r:
        _every_call_slowed(r, latency_ms)
        centre = r.centre(max_pumps=200)
        scenario = SCENARIOS_BY_NAME[LIFECYCLE]
        r.pump()  # token, cursors
        r.bridge_seconds = 0.0
        started = time.perf_counter()
        done = 0
        while done < n:
            size = min(batch, n - done)
            centre.run_many([scenario] * size)
            done += size
        elapsed = time.perf_counter() - started
        return {
            "lifecycles": n,
            "in_flight": batch,
            "latency_ms_per_call": latency_ms,
            "dispatch_concurrency": concurrency,
            "seconds": round(elapsed, 2),
            "lifecycles_per_second": round(n / elapsed, 1),
            "bridge_share_of_time": round(r.bridge_seconds / elapsed, 3),
        }


@contextmanager
def sandboxes() -> Iterator[tuple[SalesforceSandbox, ServiceNowSandbox, Path]]:
    """Both sandboxes (shared CA and clock) and a temp dir, without a bridge."""
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        clock = Clock()
        ca = SandboxCA(Path(tmp) / "ca")
        with (
            SalesforceSandbox(ca=ca, clock=clock, state_dir=Path(tmp) / "sf") as sf,
            ServiceNowSandbox(ca=ca, clock=clock) as sn,
        ):
            _roomy(sf)
            yield sf, sn, Path(tmp)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def daemon_process(
    sf: SalesforceSandbox,
    sn: ServiceNowSandbox,
    tmp: Path,
    ledger_url: str,
    concurrency: int,
    poll_seconds: float,
) -> Iterator[subprocess.Popen[bytes]]:
    """``bridge run`` in a process of its own (its own interpreter lock), polling fast."""
    env_file = write_env(tmp / "bridge.env", sf, sn)
    extra = {
        "BRIDGE_LEDGER_URL": ledger_url,
        "BRIDGE_DISPATCH_CONCURRENCY": str(concurrency),
        "BRIDGE_SALESFORCE__POLL_INTERVAL": str(poll_seconds),
        "BRIDGE_SERVICENOW__POLL_INTERVAL": str(poll_seconds),
        "BRIDGE_HTTP_PORT": str(_free_port()),
        "BRIDGE_LOG_LEVEL": "WARNING",
    }
    lines = env_file.read_text().splitlines()
    env = dict(os.environ) | dict(line.split("=", 1) for line in lines if "=" in line) | extra
    command = [str(Path(sys.executable).parent / "bridge"), "run", "--reconcile-every", "0"]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=(tmp / "bridge.log").open("wb")
    )
    try:
        yield proc
    except Exception:
        print((tmp / "bridge.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def throughput_daemon(
    n: int, concurrency: int, latency_ms: float, batch: int, poll_seconds: float
) -> dict[str, Any]:
    """(2) as ``throughput``, with the bridge as a daemon in its own process (the
    sandboxes and the simulated agents keep this one)."""
    with sandboxes() as (sf, sn, tmp):
        ledger_url = f"sqlite:///{tmp}/ledger.db"
        ledger = SqlLedger(ledger_url)
        ledger.upgrade()
        with daemon_process(sf, sn, tmp, ledger_url, concurrency, poll_seconds):
            centre = ContactCentre(
                sf, sn, ledger, lambda: time.sleep(SIMULATION_PUMP_SECONDS), max_pumps=2000
            )
            centre.run(SCENARIOS_BY_NAME[LIFECYCLE])  # the daemon is up and polling
            sf.control.add_fault("rest", latency_ms=latency_ms)
            sf.control.add_fault("scrt", latency_ms=latency_ms)
            sn.control.add_fault({"latency_ms": latency_ms})
            started = time.perf_counter()
            done = 0
            while done < n:
                size = min(batch, n - done)
                centre.run_many([SCENARIOS_BY_NAME[LIFECYCLE]] * size)
                done += size
            elapsed = time.perf_counter() - started
        ledger.close()
        return {
            "lifecycles": n,
            "in_flight": batch,
            "latency_ms_per_call": latency_ms,
            "dispatch_concurrency": concurrency,
            "poll_interval_seconds": poll_seconds,
            "seconds": round(elapsed, 2),
            "lifecycles_per_second": round(n / elapsed, 1),
        }


def _counts(r: Rig) -> Counter[str]:
    hosts: dict[str, Counters] = {
        "sf": r.sf.counters,
        "scrt": r.sf.scrt_counters,
        "sn": r.sn.counters,
    }
    out: Counter[str] = Counter()
    for host, counters in hosts.items():
        for row in counters.snapshot():
            if not row["route"].startswith("/__sandbox"):
                out[f"{host} {row['method']} {row['route']}"] += row["count"]
    return out


def calls_per_scenario(concurrency: int) -> dict[str, Any]:
    """(3) the calls each scenario's commands make (polling excluded)."""
    out: dict[str, Any] = {}
    with rig(concurrency) as r:
        calls: Counter[str] = Counter()

        def counting_pump() -> int:
            r.runtime.poll()
            r.runtime.processor.process_pending()
            before = _counts(r)
            claimed = r.runtime.dispatcher.run_once().claimed
            calls.update(_counts(r) - before)
            return claimed

        centre = ContactCentre(r.sf, r.sn, r.ledger, counting_pump, max_pumps=30)
        r.pump()
        for scenario in SCENARIOS:
            calls.clear()
            try:
                centre.run(scenario)
            except Stuck as exc:
                out[scenario.name] = {"error": str(exc)}
                continue
            # what the scenario's last events cause goes out in the rounds after it ends
            while counting_pump() or counting_pump():
                pass
            out[scenario.name] = {
                "calls": sum(calls.values()),
                "minimum": scenario.minimum_calls,
                "by_endpoint": dict(sorted(calls.items())),
            }
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-n", type=int, default=200)
    parser.add_argument("--throughput-n", type=int, default=400)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--poll-seconds", type=float, default=0.25, help="daemon poll interval")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["latency", "throughput", "throughput_daemon", "calls"],
    )
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {}
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "latency": lambda: latency(args.latency_n, args.concurrency),
        "throughput": lambda: throughput(
            args.throughput_n, args.concurrency, args.latency_ms, args.in_flight
        ),
        "throughput_daemon": lambda: throughput_daemon(
            args.throughput_n, args.concurrency, args.latency_ms, args.in_flight, args.poll_seconds
        ),
        "calls": lambda: calls_per_scenario(args.concurrency),
    }
    for name, run in steps.items():
        if name in args.skip:
            continue
        figures[name] = run()
        print(name, json.dumps(figures[name], indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
