"""`bridge run` killed with kill -9 while a command is out: the restarted daemon takes
back its dead predecessor's claim at start (outcome unknown: it looks before it acts)
and the conversation completes in seconds, not after the 60 s lease."""

from __future__ import annotations

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
from sqlmodel import col, select

from bridge.flow.dispatch import DEFAULT_LEASE_SECONDS
from bridge.ledger import SqlLedger, rows
from bridge_sandbox.connect import sandbox_values
from bridge_sandbox.demo import wait_quiet
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.traffic import SCENARIOS_BY_NAME, ContactCentre
from tests.fixtures.ledger import db_session

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCEPT = SCENARIOS_BY_NAME["accept"]
# "well under the lease": what the restarted daemon, once up, may take to finish the
# conversation (generous for a loaded machine; waiting out the lease takes 60 s)
RESTART_BUDGET_SECONDS = 20.0
# The offer hangs this long in AWA, then the connection drops unprocessed (so nothing
# lands after the restart behind the new daemon's back).
HANG_MS = 3_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Daemon:
    """`python -m bridge.app.cli run` with its settings in the environment."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.url = f"http://127.0.0.1:{env['BRIDGE_HTTP_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge.app.cli", "run", "--reconcile-every", "0"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError("the daemon never answered /healthz")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def daemon_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite (one instance by nature) and PostgreSQL (one instance assumed)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def daemon(
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: ServiceNowSandbox,
    tmp_path: Path,
    daemon_ledger_url: str,
) -> Iterator[_Daemon]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    for key, value in sandbox_values(sf_sandbox, sn_sandbox).items():
        if isinstance(value, dict):
            env.update({f"BRIDGE_{key.upper()}__{k.upper()}": str(v) for k, v in value.items()})
        else:
            env[f"BRIDGE_{key.upper()}"] = str(value)
    env |= {
        "BRIDGE_LEDGER_URL": daemon_ledger_url,
        "BRIDGE_DATA_DIR": str(tmp_path),
        "BRIDGE_HTTP_PORT": str(_free_port()),
        "BRIDGE_SALESFORCE__POLL_INTERVAL": "0.2",
        "BRIDGE_SERVICENOW__POLL_INTERVAL": "0.2",
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_SECRETS_DIR": str(secrets),
    }
    process = _Daemon(env, tmp_path / "bridge.log")
    yield process
    process.stop()


def _offer_commands(ledger: SqlLedger) -> list[rows.OutboxCommand]:
    with db_session(ledger) as session:
        stmt = select(rows.OutboxCommand).where(col(rows.OutboxCommand.operation) == "offer")
        return list(session.scalars(stmt))


def test_a_daemon_killed_mid_call_is_followed_by_one_that_takes_its_claims_back(
    daemon: _Daemon, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    assert RESTART_BUDGET_SECONDS < DEFAULT_LEASE_SECONDS / 2
    sn_sandbox.control.add_fault(
        {"path": "/offer$", "method": "POST", "latency_ms": HANG_MS, "drop": "before", "count": 1}
    )
    daemon.start()
    ledger = SqlLedger(daemon.env["BRIDGE_LEDGER_URL"])
    centre = ContactCentre(
        sf_sandbox, sn_sandbox, ledger, lambda: time.sleep(0.05), max_pumps=10**6
    )
    try:
        conv = centre.begin(ACCEPT)
        deadline = time.monotonic() + 20
        while not [c for c in _offer_commands(ledger) if c.status == "claimed"]:
            assert time.monotonic() < deadline, "the offer was never out"
            time.sleep(0.05)
        daemon.kill9()  # the offer is out: its claim and lease stay in the ledger
        [offer] = _offer_commands(ledger)
        assert offer.status == "claimed"
        sn_sandbox.control.clear_faults()

        daemon.start()
        restarted = time.monotonic()  # up (answering /healthz): the clock starts
        while not centre.advance(conv):
            assert time.monotonic() - restarted < RESTART_BUDGET_SECONDS, (
                f"not done {RESTART_BUDGET_SECONDS}s after the restart: {centre.observe(conv)}\n"
                + daemon.log.read_text()[-6000:]
            )
            time.sleep(0.05)
        assert wait_quiet(ledger, timeout=RESTART_BUDGET_SECONDS)
        took = time.monotonic() - restarted
        assert took < RESTART_BUDGET_SECONDS

        # both systems and the ledger: the conversation went through, once
        observed = centre.observe(conv)
        assert observed == ACCEPT.expected, daemon.log.read_text()[-4000:]
        items = centre.work_items(conv)
        assert [(i["state"], i["offer_count"]) for i in items] == [("accepted", "1")]
        assert [w["Status"] for w in centre.agent_work(conv)] == ["Opened"]
        [offer] = _offer_commands(ledger)
        # the killed attempt counts; the next one looked first (found nothing) and offered
        assert (offer.status, offer.attempts) == ("confirmed", 2)
        assert not (offer.response or {}).get("looked_up")
    finally:
        ledger.close()
