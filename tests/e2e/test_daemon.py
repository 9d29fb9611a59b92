"""`bridge run` as a subprocess against both sandboxes: it serves traffic, answers
/healthz, /readyz (which flips when a system is down) and /metrics, and a SIGTERM in the
middle of traffic followed by a restart loses nothing and does nothing twice."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bridge.ledger import SqlLedger
from bridge_sandbox.connect import sandbox_values
from bridge_sandbox.demo import wait_quiet
from bridge_sandbox.serving import Fault
from bridge_sandbox.traffic import SCENARIOS_BY_NAME, ContactCentre

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BridgeProcess:
    """`python -m bridge.app.cli run` with its settings in the environment."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = int(env["BRIDGE_HTTP_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BridgeProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge.app.cli", "run", "--reconcile-every", "0"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.wait_for("/healthz", 200)
        return self

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=5)

    def wait_for(self, path: str, status: int, timeout: float = 20.0) -> requests.Response:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                response = self.get(path)
                if response.status_code == status:
                    return response
                last = response.text
            except requests.ConnectionError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"{path} never answered {status}; last: {last}")

    def terminate(self) -> tuple[int, float]:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def bridge_env(sf_sandbox, sn_sandbox, tmp_path) -> dict[str, str]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    for key, value in sandbox_values(sf_sandbox, sn_sandbox).items():
        if isinstance(value, dict):
            env.update({f"BRIDGE_{key.upper()}__{k.upper()}": str(v) for k, v in value.items()})
        else:
            env[f"BRIDGE_{key.upper()}"] = str(value)
    env |= {
        "BRIDGE_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "BRIDGE_DATA_DIR": str(tmp_path),
        "BRIDGE_HTTP_PORT": str(_free_port()),
        "BRIDGE_SALESFORCE__POLL_INTERVAL": "0.2",
        "BRIDGE_SERVICENOW__POLL_INTERVAL": "0.2",
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_SECRETS_DIR": str(secrets),
    }
    return env


@pytest.fixture
def bridge(bridge_env, tmp_path) -> Iterator[BridgeProcess]:
    process = BridgeProcess(bridge_env, tmp_path / "bridge.log").start()
    yield process
    process.kill()


def _centre(sf, sn, env) -> tuple[ContactCentre, SqlLedger]:
    ledger = SqlLedger(env["BRIDGE_LEDGER_URL"])
    return ContactCentre(sf, sn, ledger, lambda: time.sleep(0.05), max_pumps=400), ledger


def test_serves_traffic_and_reports_health_and_metrics(bridge, sf_sandbox, sn_sandbox):
    ready = bridge.wait_for("/readyz", 200).json()
    assert ready["status"] == "ready"
    assert set(ready["checks"]) == {"ledger", "salesforce", "servicenow"}

    centre, ledger = _centre(sf_sandbox, sn_sandbox, bridge.env)
    conversations = centre.run_many(
        [SCENARIOS_BY_NAME["accept"], SCENARIOS_BY_NAME["sn_originated"]]
    )
    assert wait_quiet(ledger)
    for conv in conversations:
        observed = centre.observe(conv)
        assert observed.correlation_state == "active", observed
        assert observed.problems == ()

    families = {f.name: f for f in text_string_to_metric_families(bridge.get("/metrics").text)}
    events = {
        (s.labels["source"], s.labels["kind"]): s.value
        for s in families["bridge_events"].samples
        if s.name == "bridge_events_total" and s.labels["outcome"] == "recorded"
    }
    assert events[("salesforce", "psr")] >= 1
    assert events[("servicenow", "awa_work_item")] >= 1
    commands = {
        s.labels["operation"]
        for s in families["bridge_commands"].samples
        if s.name == "bridge_commands_total" and s.labels["status"] == "confirmed"
    }
    assert {"create_interaction", "offer", "create_agent_work", "route"} <= commands
    calls = [s for s in families["bridge_api_calls"].samples if s.name == "bridge_api_calls_total"]
    assert {s.labels["system"] for s in calls} == {"salesforce", "servicenow"}
    assert "bridge_dispatch_latency_seconds" in families
    ledger.close()


def test_log_lines_are_json_with_the_correlation_id(bridge, sf_sandbox, sn_sandbox):
    centre, ledger = _centre(sf_sandbox, sn_sandbox, bridge.env)
    conv = centre.run(SCENARIOS_BY_NAME["accept"])
    correlation = centre.correlation(conv)
    assert correlation is not None
    lines = [json.loads(line) for line in bridge.log.read_text().splitlines() if line.strip()]
    assert lines, "the daemon wrote no log lines"
    assert all(
        {"ts", "level", "logger", "message", "correlation_id"} <= set(line) for line in lines
    )
    # what the bridge did for the conversation is logged under its correlation id
    tagged = [line for line in lines if line["correlation_id"] == correlation.id]
    assert tagged, "no log line carries the conversation's correlation id"
    ledger.close()


def test_readyz_flips_while_a_system_is_down(bridge, sn_sandbox):
    bridge.wait_for("/readyz", 200)
    sn_sandbox.faults.add(Fault(path="^/api/", status=503))
    down = bridge.wait_for("/readyz", 503).json()
    assert down["checks"]["servicenow"]["ok"] is False
    assert down["checks"]["salesforce"]["ok"] is True
    sn_sandbox.faults.clear()
    assert bridge.wait_for("/readyz", 200).json()["status"] == "ready"


def test_sigterm_mid_traffic_then_restart_loses_nothing(bridge, sf_sandbox, sn_sandbox):
    centre, ledger = _centre(sf_sandbox, sn_sandbox, bridge.env)
    scenarios = [SCENARIOS_BY_NAME[n] for n in ("accept", "sn_reject", "accept", "sn_originated")]
    conversations = [centre.begin(s) for s in scenarios]
    for conv in conversations:
        centre.advance(conv)
    time.sleep(0.3)  # some commands are in flight

    code, took = bridge.terminate()
    assert code == 0, bridge.log.read_text()[-2000:]
    assert took < 10.0

    bridge.start()
    while not all(centre.advance(c) for c in conversations):
        time.sleep(0.05)
    assert wait_quiet(ledger), "the bridge still had work after the conversations ended"
    for conv in conversations:
        observed = centre.observe(conv)
        assert observed.correlation_state == "active", observed
        assert observed.problems == (), bridge.log.read_text()[-6000:]
        # nothing twice: AWA counted exactly one offer per segment, one agent holds the work
        offers = sum(int(item["offer_count"]) for item in centre.work_items(conv))
        assert offers == len(observed.segment_outcomes), observed
        assert observed.agent_work.count("Opened") == 1, observed
        assert observed.agent_work.count("Assigned") == 0, observed
    ledger.close()
