"""Figures of the Salesforce intake modes (issue 10), with the sandboxes and ``bridge run``
each in a process of their own (``bridge sandbox salesforce``, ``bridge sandbox
servicenow``, ``bridge run``), talking over TLS as in production.

1. Idle Salesforce REST calls per day of ``bridge run`` with default settings (no
   conversation active), per intake mode (``poll``, ``pubsub``, ``pushtopic``): the
   counters of the sandbox org's REST host are zeroed once the daemon is ready, read after a
   window of whole reconcile periods (default one: 300 s, ``bridge run``'s default) and
   scaled to 86,400 s. Everything the daemon sends meanwhile is in it: intake polls or the
   sweeper, the scheduled reconciliation, token requests. A token lives 2 h on the sandbox
   (Salesforce's default session time-out) and is fetched again on the 401 after that: a
   window shorter than that sees none, so one token request per lifetime (12/day) is
   added when the window saw none. CometD (``/cometd/...``) and Pub/Sub API (gRPC) traffic
   is counted apart: it is charged to the event-delivery allocations, not the REST one.
2. End-to-end latency, change committed in the org (the control call that starts a
   conversation answered) → the ServiceNow sandbox holding the interaction the bridge
   created, p50/p99, seen from this process (it looks every 5 ms: that is the resolution).

Modes whose pieces are not built yet (the setting does not know the mode) are reported
as such, not measured as something else.

    uv run python -m bench.salesforce_streams [--modes poll pubsub pushtopic]
        [--periods 1] [--reconcile-every 300] [--latency-n 30] [--skip idle latency]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bridge.adapters.http import make_session
from bridge.app.settings import SalesforceSettings
from bridge_sandbox.traffic import SF_QUEUE

RESULTS = Path(__file__).parent / "results" / "salesforce_streams.json"
MODES = ("poll", "pubsub", "pushtopic")
DAY = 86_400.0
TOKEN_LIFETIME = 2 * 3600.0  # the sandbox's DEFAULT_TOKEN_TTL, Salesforce's default session
RECONCILE_EVERY = 300.0  # ``bridge run --reconcile-every`` default
MARGIN = 5.0  # the reconciliation due at the end of the window has time to finish
ISSUE_TODAY = 216_000
AIM = 1_500
BIN = Path(sys.executable).parent


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
    session: requests.Session

    def control(self, method: str, path: str, **body: Any) -> Any:
        answer = self.session.request(
            method, f"{self.sf['instance_url']}/__sandbox{path}", json=body or None, timeout=30
        )
        answer.raise_for_status()
        return answer.json() if answer.content else None


@contextmanager
def sandboxes() -> Iterator[Rig]:
    """Both standalone sandboxes, each in its own process, sharing one state dir (and CA)."""
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as name:
        tmp = Path(name)
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
                session = make_session(sf["ca_bundle"])
                session.trust_env = False
                yield Rig(tmp, sf, sn, bridge_env, session)


def mode_known(mode: str) -> str | None:
    """Why ``mode`` cannot be measured yet, or None when the settings know it."""
    if mode == "poll" and "intake" not in SalesforceSettings.model_fields:
        return None  # today's only mode
    field = SalesforceSettings.model_fields.get("intake")
    if field is None:
        return "BRIDGE_SALESFORCE__INTAKE is not a setting yet"
    try:
        SalesforceSettings.model_validate({"intake": mode})
    except ValueError as exc:
        return f"BRIDGE_SALESFORCE__INTAKE={mode} is refused: {exc}".splitlines()[0]
    return None


@contextmanager
def bridge(rig: Rig, mode: str, reconcile_every: float) -> Iterator[str]:
    """``bridge run`` with default settings but the intake mode: yields its health URL once
    /readyz says ready."""
    port = _free_port()
    env = (
        dict(os.environ)
        | rig.env
        | {
            "BRIDGE_LEDGER_URL": f"sqlite:///{rig.tmp}/ledger-{mode}.db",
            "BRIDGE_HTTP_PORT": str(port),
            "BRIDGE_SALESFORCE__INTAKE": mode,
        }
    )
    if "intake" not in SalesforceSettings.model_fields:
        env.pop("BRIDGE_SALESFORCE__INTAKE")
    log = rig.tmp / f"bridge-{mode}.log"
    if mode == "pushtopic":  # the org's PushTopics first, as a user would
        setup = [str(BIN / "bridge"), "salesforce", "setup"]
        done = subprocess.run(setup, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"bridge salesforce setup failed: {done.stdout}{done.stderr}")
    command = [str(BIN / "bridge"), "run", "--reconcile-every", str(reconcile_every)]
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
        yield health


def _kind(route: str) -> str:
    if route.startswith("/__sandbox"):
        return "control"
    if route.startswith("/cometd"):
        return "streaming"
    if route.startswith("/services/oauth2"):
        return "token"
    return "rest"


def idle(mode: str, periods: int, reconcile_every: float) -> dict[str, Any]:
    """(1) for one mode."""
    why = mode_known(mode)
    if why is not None:
        return {"mode": mode, "measured": False, "why": why}
    with sandboxes() as rig, bridge(rig, mode, reconcile_every) as health:
        rig.control("DELETE", "/counters/rest")
        started = time.monotonic()
        # whole periods of every schedule: the reconciler's and, in a stream mode, the
        # sweeper's (every sweep_interval; its first run is at start, before the window)
        period = reconcile_every
        if mode != "poll":
            period = max(period, SalesforceSettings().sweep_interval)
        window = periods * period + MARGIN
        time.sleep(window)
        counts = rig.control("GET", "/counters/rest")
        elapsed = time.monotonic() - started
        metrics = requests.get(f"{health}/metrics", timeout=5).text
    by_route: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    for row in counts:
        key = f"{row['method']} {row['route']}"
        by_route[key] += row["count"]
        by_kind[_kind(row["route"])] += row["count"]
    scale = DAY / elapsed
    tokens_measured = by_kind["token"]
    tokens_per_day = tokens_measured * scale if tokens_measured else DAY / TOKEN_LIFETIME
    rest_per_day = by_kind["rest"] * scale
    total = rest_per_day + tokens_per_day
    return {
        "mode": mode,
        "measured": True,
        "window_seconds": round(elapsed, 1),
        "reconcile_every_seconds": reconcile_every,
        "schedule_period_seconds": period,
        "periods_in_window": periods,
        "calls_in_window": dict(by_kind),
        "calls_by_route": dict(sorted(by_route.items())),
        "rest_calls_per_day": round(rest_per_day),
        "token_requests_per_day": round(tokens_per_day),
        "token_requests_added": not tokens_measured,
        "streaming_requests_per_day": round(by_kind["streaming"] * scale),
        "calls_per_day": round(total),
        "aim_per_day": AIM,
        "meets_aim": total <= AIM,
        "extrapolation": (
            f"calls in {elapsed:.0f} s ({periods} x {period:.0f} s: whole reconcile"
            + (" and sweep" if mode != "poll" else "")
            + f" periods, + {MARGIN:.0f} s) "
            f"x 86400/{elapsed:.0f}; token requests: "
            + (
                "as measured"
                if tokens_measured
                else f"none in the window, 1 per {TOKEN_LIFETIME / 3600:.0f} h token added"
            )
        ),
        "bridge_stream_metrics": [
            line
            for line in metrics.splitlines()
            if line.startswith("bridge_stream") and not line.startswith("#")
        ],
    }


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def latency(mode: str, n: int) -> dict[str, Any]:
    """(2) for one mode: a conversation started in the org → its interaction in ServiceNow."""
    why = mode_known(mode)
    if why is not None:
        return {"mode": mode, "measured": False, "why": why}
    with sandboxes() as rig, bridge(rig, mode, 0) as _health:
        sn = make_session(rig.sn["ca_bundle"])
        sn.trust_env = False
        sn.auth = (rig.sn["username"], rig.sn["password"])
        table = f"{rig.sn['instance_url']}/api/now/table/interaction"
        samples: list[float] = []
        for _ in range(n):
            time.sleep(random.uniform(0, 0.5))  # not in step with a poll schedule
            before = _interaction_ids(sn, table)
            started = time.perf_counter()
            rig.control("POST", "/conversations", queue=SF_QUEUE)
            deadline = started + 30
            while time.perf_counter() < deadline:
                if _interaction_ids(sn, table) - before:
                    samples.append((time.perf_counter() - started) * 1000)
                    break
                time.sleep(0.005)
    if not samples:
        return {"mode": mode, "measured": False, "why": "no interaction appeared"}
    return {
        "mode": mode,
        "measured": True,
        "conversations": len(samples),
        "p50_ms": round(statistics.median(samples), 1),
        "p99_ms": round(_percentile(samples, 0.99), 1),
        "max_ms": round(max(samples), 1),
        "resolution_ms": 5,
    }


def _interaction_ids(session: requests.Session, table: str) -> set[str]:
    answer = session.get(table, params={"sysparm_fields": "sys_id"}, timeout=10)
    answer.raise_for_status()
    return {row["sys_id"] for row in answer.json()["result"]}


def intake(n: int) -> dict[str, Any]:
    """(3) Change events decoded and recorded per second by the Pub/Sub API stream: the
    stream runner of ``bridge run`` (in this process, without the engine) resumes from a
    stored replay id behind ``n`` conversations started in the org meanwhile (a PSR and
    its work item each), and works through the backlog in batches of ``num_requested``."""
    why = mode_known("pubsub")
    if why is not None:
        return {"mode": "pubsub", "measured": False, "why": why}
    from bridge.app.runtime import Runtime  # noqa: PLC0415
    from bridge.app.settings import load_settings  # noqa: PLC0415
    from bridge.ledger import SqlLedger  # noqa: PLC0415

    with sandboxes() as rig:
        saved = dict(os.environ)
        os.environ.update(rig.env | {"BRIDGE_SALESFORCE__INTAKE": "pubsub"})
        try:
            settings = load_settings(env_file=None)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        ledger = SqlLedger(f"sqlite:///{rig.tmp}/ledger-intake.db")
        ledger.upgrade()
        runtime = Runtime.build(settings, ledger=ledger)

        def run_until_quiet(quiet: float) -> tuple[Any, float, float]:
            runner = runtime.salesforce_stream()
            assert runner is not None
            thread = threading.Thread(target=runner.run, daemon=True)
            started = time.perf_counter()
            thread.start()
            last, last_at = -1, started
            while time.perf_counter() - last_at < quiet:
                seen = runner.status.recorded + runner.status.duplicates
                if seen != last:
                    last, last_at = seen, time.perf_counter()
                time.sleep(0.005)
            runner.stop()
            thread.join(10)
            return runner, started, last_at

        # a first start, and one conversation so that a replay id is stored
        first = runtime.salesforce_stream()
        assert first is not None
        thread = threading.Thread(target=first.run, daemon=True)
        thread.start()
        while not first.status.connected:
            time.sleep(0.01)
        time.sleep(0.5)
        rig.control("POST", "/conversations", queue=SF_QUEUE)
        while first.status.recorded == 0:
            time.sleep(0.01)
        first.stop()
        thread.join(10)
        for _ in range(n):  # the backlog, while the stream is stopped
            rig.control("POST", "/conversations", queue=SF_QUEUE)
        runner, started, finished = run_until_quiet(quiet=2.0)
        runtime.close()
        ledger.close()
    events = runner.status.recorded + runner.status.duplicates
    seconds = finished - started
    return {
        "mode": "pubsub",
        "measured": True,
        "conversations_in_backlog": n,
        "events_recorded": runner.status.recorded,
        "events_duplicate": runner.status.duplicates,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds) if seconds > 0 else None,
        "note": "from the resumed subscription to the last event recorded (connect included)",
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--periods", type=int, default=1, help="reconcile periods measured")
    parser.add_argument("--reconcile-every", type=float, default=RECONCILE_EVERY)
    parser.add_argument("--latency-n", type=int, default=30)
    parser.add_argument("--intake-n", type=int, default=1000, help="backlog conversations")
    parser.add_argument("--skip", nargs="*", default=[], choices=["idle", "latency", "intake"])
    args = parser.parse_args(argv)
    # a SIGTERM unwinds: the sandboxes and the bridge started are stopped with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    figures: dict[str, Any] = {"idle": {}, "latency": {}, "issue_today_per_day": ISSUE_TODAY}
    if RESULTS.exists():  # keep the modes not measured this time
        figures = json.loads(RESULTS.read_text()) | {"issue_today_per_day": ISSUE_TODAY}
    for mode in args.modes:
        if "idle" not in args.skip:
            figures.setdefault("idle", {})[mode] = result = idle(
                mode, args.periods, args.reconcile_every
            )
            print(f"idle {mode}: " + _line(result, "calls_per_day", "/day"), flush=True)
        if "latency" not in args.skip:
            figures.setdefault("latency", {})[mode] = result = latency(mode, args.latency_n)
            print(f"latency {mode}: " + _line(result, "p99_ms", " ms p99"), flush=True)
    if "intake" not in args.skip and "pubsub" in args.modes:
        figures["intake"] = result = intake(args.intake_n)
        print("intake pubsub: " + _line(result, "events_per_second", " events/s"), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written {RESULTS}")
    return figures


def _line(result: dict[str, Any], key: str, unit: str) -> str:
    if not result.get("measured"):
        return f"not measured ({result.get('why')})"
    return f"{result[key]:,}{unit} " + json.dumps(
        {k: v for k, v in result.items() if k in ("calls_in_window", "p50_ms", "extrapolation")}
    )


if __name__ == "__main__":
    main()
