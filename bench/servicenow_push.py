"""Figures of the ServiceNow intake modes (issue 11), the sandboxes and ``bridge run`` each
in a process of their own (``bridge sandbox salesforce``, ``bridge sandbox servicenow``,
``bridge run``), talking over TLS as in production.

1. Idle ServiceNow calls per day of ``bridge run`` with default settings (no conversation
   active), per intake mode (``push``: receiver + sweeper every 300 s; ``poll``: the polls
   every 2 s): the sandbox instance's counters are zeroed once the daemon is ready, read
   after a measured window of whole reconcile periods (default one: 300 s, ``bridge run``'s
   default; wall time, not the sandbox clock: the daemon schedules on wall time) plus a
   margin, and scaled to 86,400 s. Everything the daemon sends is in it: polls or sweeps,
   the scheduled reconciliation, token requests. Control calls (``/__sandbox``) are not.
2. End-to-end latency, a work item change in the ServiceNow sandbox (a customer's chat
   queued on the AWA queue that overflows to Salesforce: the control call answered) → the
   resulting call (``POST /route``) received by the Salesforce sandbox's Interaction
   Service host, p50/p99, seen from this process (it reads the org's counters in a loop:
   each look is one local HTTPS call, about 2 ms, which is the resolution).
3. Receiver: deliveries accepted and committed per second on SQLite. The receiver of
   ``bridge run`` (``bridge.adapters.servicenow.receiver``) alone in a process of its own
   on a file ledger, HTTPS + Basic auth; this process posts distinct deliveries from
   ``--clients`` keep-alive connections; the figure counts 202 ``recorded`` answers over
   the wall time, and the inbox rows are counted afterwards (every answer was a commit).

    uv run python -m bench.servicenow_push [--modes push poll] [--periods 1]
        [--reconcile-every 300] [--latency-n 50] [--deliveries 3000] [--clients 8]
        [--skip idle latency receiver]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bridge.adapters.http import make_session
from bridge.adapters.servicenow.polling import INTERACTION_FIELDS, WORK_ITEM_FIELDS
from bridge_sandbox.serving import SandboxCA
from bridge_sandbox.traffic import SN_QUEUE

RESULTS = Path(__file__).parent / "results" / "servicenow_push.json"
MODES = ("push", "poll")
DAY = 86_400.0
RECONCILE_EVERY = 300.0  # ``bridge run --reconcile-every`` default
MARGIN = 5.0  # the reconciliation due at the end of the window has time to finish
ISSUE_TODAY = 86_400
AIMS = {"idle_calls_per_day": 1_500, "latency_p99_ms": 100.0, "receiver_per_second": 500.0}
BIN = Path(sys.executable).parent
USER, PASSWORD = "servicenow-events", "bench-receiver-password"
PATH = "/servicenow/events"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a sandbox env file (values are shell-quoted when needed)."""
    import shlex  # noqa: PLC0415

    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = shlex.split(value)[0] if value else ""
    return out


def _wait_for(path: Path, proc: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {seconds:.0f}s")
        time.sleep(0.1)


@contextmanager
def _process(command: list[str], log: Path, env: dict[str, str]) -> Iterator[Any]:
    proc = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Rig:
    tmp: Path
    sf: dict[str, Any]  # salesforce.json: how to reach the org
    sn: dict[str, Any]  # servicenow.json
    env: dict[str, str]  # the bridge's connection (both env files)
    ca: SandboxCA  # the receiver's certificate, of the sandboxes' CA (the instance trusts it)
    session: requests.Session

    def sf_control(self, method: str, path: str, **body: Any) -> Any:
        return self._control(f"{self.sf['instance_url']}/__sandbox{path}", method, body)

    def sn_control(self, method: str, path: str, **body: Any) -> Any:
        answer = self._control(f"{self.sn['instance_url']}/__sandbox{path}", method, body)
        return answer.get("result") if isinstance(answer, dict) else answer

    def _control(self, url: str, method: str, body: dict[str, Any]) -> Any:
        answer = self.session.request(method, url, json=body or None, timeout=30)
        answer.raise_for_status()
        return answer.json() if answer.content else None


@contextmanager
def sandboxes(name: str) -> Iterator[Rig]:
    """Both standalone sandboxes, each in its own process, sharing one state dir (and CA)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-sn-push-{name}-") as tmpname:
        tmp = Path(tmpname)
        state = tmp / "state"
        env = dict(os.environ)
        sf_cmd = [str(BIN / "bridge"), "sandbox", "salesforce", "--state-dir", str(state)]
        sn_cmd = [str(BIN / "bridge"), "sandbox", "servicenow", "--state-dir", str(state)]
        with _process(sf_cmd, tmp / "salesforce.log", env) as sf_proc:
            _wait_for(state / "salesforce.env", sf_proc)
            with _process(sn_cmd, tmp / "servicenow.log", env) as sn_proc:
                _wait_for(state / "servicenow.env", sn_proc)
                sf = json.loads((state / "salesforce.json").read_text())
                sn = json.loads((state / "servicenow.json").read_text())
                bridge_env = _env_file(state / "servicenow.env") | _env_file(
                    state / "salesforce.env"
                )
                ca = SandboxCA.shared(state, server="receiver")
                session = make_session(sf["ca_bundle"])
                session.trust_env = False
                yield Rig(tmp, sf, sn, bridge_env, ca, session)


@contextmanager
def bridge(rig: Rig, mode: str, reconcile_every: float) -> Iterator[str]:
    """``bridge run`` with default settings but the intake mode (and, in push mode, the
    receiver's certificate and credentials, the instance's provider pointed at it): yields
    its health URL once /readyz says ready."""
    port = _free_port()
    env = (
        dict(os.environ)
        | rig.env
        | {
            "BRIDGE_LEDGER_URL": f"sqlite:///{rig.tmp}/ledger-{mode}.db",
            "BRIDGE_HTTP_PORT": str(port),
            "BRIDGE_SERVICENOW__INTAKE": mode,
        }
    )
    receiver_port = _free_port()
    if mode == "push":
        env |= {
            "BRIDGE_RECEIVER__PORT": str(receiver_port),
            "BRIDGE_RECEIVER__CERT_FILE": str(rig.ca.cert_file),
            "BRIDGE_RECEIVER__KEY_FILE": str(rig.ca.key_file),
            "BRIDGE_RECEIVER__USERNAME": USER,
            "BRIDGE_RECEIVER__PASSWORD": PASSWORD,
        }
    command = [str(BIN / "bridge"), "run", "--reconcile-every", str(reconcile_every)]
    log = rig.tmp / f"bridge-{mode}.log"
    health = f"http://127.0.0.1:{port}"
    with _process(command, log, env) as proc:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bridge run ({mode}) exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{health}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"bridge run ({mode}) not ready: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        if mode == "push":
            url = f"https://127.0.0.1:{receiver_port}{PATH}"
            rig.sn_control("POST", "/provider", url=url, username=USER, password=PASSWORD)
        yield health


def idle(mode: str, periods: int, reconcile_every: float) -> dict[str, Any]:
    """(1) for one mode."""
    with sandboxes(mode) as rig, bridge(rig, mode, reconcile_every):
        rig.sn_control("DELETE", "/counters")
        started = time.monotonic()
        per_period: list[int] = []
        for k in range(1, periods + 1):
            time.sleep(max(0.0, started + k * reconcile_every + MARGIN - time.monotonic()))
            counts = rig.sn_control("GET", "/counters")
            total = sum(r["count"] for r in counts if not r["route"].startswith("/__sandbox"))
            per_period.append(total - sum(per_period))
        elapsed = time.monotonic() - started
        deliveries = rig.sn_control("GET", "/deliveries")
    by_route: Counter[str] = Counter()
    for row in counts:
        if not row["route"].startswith("/__sandbox"):
            by_route[f"{row['method']} {row['route']}"] += row["count"]
    calls = sum(by_route.values())
    per_day = calls * DAY / elapsed
    return {
        "mode": mode,
        "window_seconds": round(elapsed, 1),
        "clock": "wall time: a measured window, extrapolated to a day",
        "reconcile_every_seconds": reconcile_every,
        "reconcile_runs_in_window": periods,
        "calls_in_window": calls,
        "calls_by_route": dict(sorted(by_route.items())),
        "calls_per_reconcile_period": per_period,
        # the first period holds the start's reconciliation, which also runs the mapping
        # check (hourly after that): the last period is the steady state
        "last_period_per_day": round(per_period[-1] * DAY / reconcile_every),
        "deliveries_in_window": len(deliveries),
        "calls_per_day": round(per_day),
        "aim_per_day": AIMS["idle_calls_per_day"],
        "meets_aim": per_day <= AIMS["idle_calls_per_day"],
        "extrapolation": (
            f"{calls} calls in {elapsed:.0f} s ({periods} reconcile period(s) + "
            f"{MARGIN:.0f} s) x 86400/{elapsed:.0f}"
        ),
    }


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _routes_received(rig: Rig) -> int:
    counts = rig.sf_control("GET", "/counters/scrt")
    return sum(
        r["count"] for r in counts if r["method"] == "POST" and r["route"].endswith("/route")
    )


def latency(mode: str, n: int) -> dict[str, Any]:
    """(2) for one mode: a chat queued in AWA → ``POST /route`` received by Salesforce."""
    with sandboxes(f"latency-{mode}") as rig, bridge(rig, mode, 0):
        samples: list[float] = []
        for _ in range(n):
            time.sleep(random.uniform(0, 0.3))  # not in step with a poll schedule
            before = _routes_received(rig)
            started = time.perf_counter()
            rig.sn_control("POST", "/interactions", queue=SN_QUEUE, short_description="bench")
            deadline = started + 30
            while time.perf_counter() < deadline:
                if _routes_received(rig) > before:
                    samples.append((time.perf_counter() - started) * 1000)
                    break
        deliveries = rig.sn_control("GET", "/deliveries") if mode == "push" else []
    if not samples:
        return {"mode": mode, "measured": False, "why": "no /route call arrived"}
    return {
        "mode": mode,
        "measured": True,
        "conversations": len(samples),
        "timed_out": n - len(samples),
        "p50_ms": round(statistics.median(samples), 1),
        "p99_ms": round(_percentile(samples, 0.99), 1),
        "max_ms": round(max(samples), 1),
        "deliveries_answered": dict(Counter(str(d["status_code"]) for d in deliveries)),
        "aim_p99_ms": AIMS["latency_p99_ms"],
        "meets_aim": _percentile(samples, 0.99) <= AIMS["latency_p99_ms"],
    }


# -- (3) the receiver alone ---------------------------------------------------------------


def serve_receiver(directory: Path, port: int) -> None:
    """The child process of (3): the bridge's receiver on a SQLite ledger until SIGTERM."""
    from pydantic import SecretStr  # noqa: PLC0415

    from bridge.adapters.servicenow.receiver import Receiver  # noqa: PLC0415
    from bridge.app.settings import ReceiverSettings  # noqa: PLC0415
    from bridge.ledger import SqlLedger  # noqa: PLC0415

    ca = SandboxCA(directory, server="receiver")
    ledger = SqlLedger(f"sqlite:///{directory / 'ledger.db'}")
    ledger.upgrade()
    settings = ReceiverSettings(
        port=port,
        cert_file=ca.cert_file,
        key_file=ca.key_file,
        username=USER,
        password=SecretStr(PASSWORD),
        rate_limit=1e9,  # the figure is the receiver's, not the limiter's
    )
    receiver = Receiver(settings, ledger, mapped={"0" * 32})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    receiver.start()
    (directory / "ready").write_text(receiver.url)
    stop.wait()
    receiver.stop()
    ledger.close()


def _delivery(i: int) -> bytes:
    sys_id = f"{i:032x}"
    record = dict.fromkeys(WORK_ITEM_FIELDS, "") | {
        "sys_id": sys_id,
        "sys_mod_count": "1",
        "sys_updated_on": "2026-12-03 14:05:09",
        "number": f"AWI{i:07d}",
        "state": "queued",
        "active": "true",
        "rejected": "false",
        "timed_out": "false",
        "document_table": "interaction",
        "document_id": f"{i + 1:032x}",
        "queue": "0" * 32,
        "offer_count": "0",
    }
    assert set(INTERACTION_FIELDS)  # the interaction shape is the other table's
    body = {
        "event": "awa_work_item.created",
        "table": "awa_work_item",
        "sys_id": sys_id,
        "sys_mod_count": 1,
        "sys_updated_on": "2026-12-03 14:05:09",
        "record": record,
        "instance": "dev12345",
        "sent_at": "2026-12-03 14:05:09.123",
    }
    return json.dumps(body).encode()


def receiver(deliveries: int, clients: int) -> dict[str, Any]:
    """(3)."""
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as name:
        directory = Path(name)
        port = _free_port()
        command = [sys.executable, "-m", "bench.servicenow_push", "--serve-receiver", name]
        command += ["--receiver-port", str(port)]
        with _process(command, directory / "receiver.log", dict(os.environ)) as proc:
            _wait_for(directory / "ready", proc)
            url = (directory / "ready").read_text()
            bundle = str(directory / "sandbox-ca.pem")
            bodies = [_delivery(i) for i in range(deliveries)]
            local = threading.local()

            def post(body: bytes) -> str:
                session = getattr(local, "session", None)
                if session is None:
                    session = local.session = requests.Session()
                    session.trust_env = False
                answer = session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    auth=(USER, PASSWORD),
                    verify=bundle,
                    timeout=30,
                )
                return (
                    str(answer.json().get("result"))
                    if answer.status_code == 202
                    else (f"HTTP {answer.status_code}")
                )

            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(post, bodies[:clients]))  # connections open, TLS done
                started = time.perf_counter()
                answers = Counter(pool.map(post, bodies[clients:]))
                elapsed = time.perf_counter() - started
        with sqlite3.connect(directory / "ledger.db") as db:
            rows = db.execute("SELECT count(*) FROM inbox_event").fetchone()[0]
    measured = deliveries - clients
    per_second = answers["recorded"] / elapsed
    ceiling = _commits_per_second(min(300, deliveries))
    return {
        "deliveries": measured,
        "clients": clients,
        "seconds": round(elapsed, 2),
        "answers": dict(answers),
        "inbox_rows_after": rows,
        "accepted_and_committed_per_second": round(per_second),
        "aim_per_second": AIMS["receiver_per_second"],
        "meets_aim": per_second >= AIMS["receiver_per_second"],
        "ledger": "SQLite file (WAL, synchronous=FULL), one transaction per delivery",
        "ledger_alone_per_second": round(ceiling),
        "ledger_alone": (
            "the same deliveries checked and recorded one transaction each straight through "
            "SqlLedger in this process, no HTTP: the ceiling a commit (an fsync) per "
            "delivery sets on this disk"
        ),
    }


def _commits_per_second(n: int) -> float:
    from bridge.adapters.servicenow.payload import check  # noqa: PLC0415
    from bridge.adapters.servicenow.polling import stream_of  # noqa: PLC0415
    from bridge.ledger import SqlLedger  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as name:
        ledger = SqlLedger(f"sqlite:///{Path(name) / 'ledger.db'}")
        ledger.upgrade()
        events = [check(_delivery(i), {"0" * 32}).event for i in range(n)]
        started = time.perf_counter()
        for event in events:
            with ledger.transaction() as tx:
                tx.inbox.record(stream_of(event.kind), [event], None)
        elapsed = time.perf_counter() - started
        ledger.close()
    return n / elapsed


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--periods", type=int, default=1, help="reconcile periods measured")
    parser.add_argument("--reconcile-every", type=float, default=RECONCILE_EVERY)
    parser.add_argument("--latency-n", type=int, default=50)
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[], choices=["idle", "latency", "receiver"])
    parser.add_argument("--serve-receiver", help=argparse.SUPPRESS)
    parser.add_argument("--receiver-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_receiver:
        serve_receiver(Path(args.serve_receiver), args.receiver_port)
        return {}
    figures: dict[str, Any] = {}
    if "idle" not in args.skip:
        # the modes side by side: each has its own sandboxes and daemon, and the window is
        # wall time, so running them together halves the wait without changing a count
        with ThreadPoolExecutor(len(args.modes)) as pool:
            runs = {
                mode: pool.submit(idle, mode, args.periods, args.reconcile_every)
                for mode in args.modes
            }
            for mode, run in runs.items():
                figures.setdefault("idle", {})[mode] = result = run.result()
                print(f"idle {mode}: {result['calls_per_day']:,}/day ({result['extrapolation']})")
    if "latency" not in args.skip:
        for mode in args.modes:
            figures.setdefault("latency", {})[mode] = result = latency(mode, args.latency_n)
            line = {k: result.get(k) for k in ("p50_ms", "p99_ms", "max_ms", "timed_out")}
            print(f"latency {mode}: {json.dumps(line)}", flush=True)
    if "receiver" not in args.skip:
        figures["receiver"] = result = receiver(args.deliveries, args.clients)
        print(
            f"receiver: {result['accepted_and_committed_per_second']:,}/s "
            f"({json.dumps({k: result[k] for k in ('answers', 'seconds', 'inbox_rows_after')})}; "
            f"the ledger alone: {result['ledger_alone_per_second']:,}/s)",
            flush=True,
        )
    # merged into what is there when written (keeps the figures not measured this time,
    # also those another run wrote meanwhile)
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for key in ("idle", "latency"):
        if key in figures:
            figures[key] = stored.get(key, {}) | figures[key]
    figures = stored | figures | {"issue_today_per_day": ISSUE_TODAY, "aims": AIMS}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written {RESULTS}")
    return figures


if __name__ == "__main__":
    main()
