"""SIGTERM stops `bridge run` within its 10 s budget whatever is in flight, and during
start-up: a call the sandbox holds for 15 s is given back for a look-before-retry (the next
run completes the conversation, once, in both systems); a SIGTERM while the ledger
migrates lets the migration finish or roll back, then the process exits."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bridge.ledger import SqlLedger
from bridge.ledger.ports import outcome_was_unknown
from bridge_sandbox.demo import wait_quiet
from bridge_sandbox.serving import Fault
from bridge_sandbox.traffic import SCENARIOS_BY_NAME, ContactCentre, Conversation
from tests.e2e import test_daemon
from tests.e2e.test_daemon import BridgeProcess, _free_port

bridge_env = test_daemon.bridge_env  # the daemon tests' settings fixture, shared

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUDGET = 10.0
HELD_SECONDS = 15.0  # longer than the budget: only giving the call back can stop in time


def _wait(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    tail = log.read_text()[-3000:] if log is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def _commands(ledger: SqlLedger, centre: ContactCentre, conv: Conversation) -> list:
    corr = centre.correlation(conv)
    if corr is None:
        return []
    with ledger.reading() as tx:
        return list(tx.audit.correlation_detail(corr.id).commands)


def test_sigterm_with_a_call_in_flight_stops_in_time_and_gives_the_command_back(
    bridge_env, sf_sandbox, sn_sandbox, tmp_path
):
    log = tmp_path / "bridge.log"
    bridge = BridgeProcess(bridge_env, log).start()
    ledger = SqlLedger(bridge_env["BRIDGE_LEDGER_URL"])
    try:
        bridge.wait_for("/readyz", 200)
        # AWA holds the first offer for 15 s before taking it.
        sn_sandbox.faults.add(Fault(path="/offer$", latency_ms=HELD_SECONDS * 1000, count=1))
        centre = ContactCentre(sf_sandbox, sn_sandbox, ledger, lambda: time.sleep(0.05))
        conv = centre.begin(SCENARIOS_BY_NAME["accept"])

        def offer_out() -> bool:
            return any(
                c.operation == "offer" and c.status == "claimed"
                for c in _commands(ledger, centre, conv)
            )

        _wait(offer_out, 15, "the offer to go out", log)
        sent = time.monotonic()
        time.sleep(0.5)  # the call is in the sandbox's hands now

        code, took = bridge.terminate()
        assert code == 0, log.read_text()[-3000:]
        assert took <= BUDGET, f"stopping took {took:.1f}s\n{log.read_text()[-3000:]}"

        # The unfinished offer is given back, marked so that the next attempt looks first.
        offer = next(c for c in _commands(ledger, centre, conv) if c.operation == "offer")
        assert offer.status == "pending", offer
        assert offer.claimed_by is None, offer
        assert offer.lease_until is None, offer
        assert outcome_was_unknown(offer.error), offer

        # Let AWA finish with the held request (it drops it: the caller is gone), so the
        # next run's look cannot race it; the next run looks, then offers once.
        time.sleep(max(0.0, sent + HELD_SECONDS + 1.0 - time.monotonic()))
        bridge.start()
        _wait(lambda: centre.advance(conv), 30, "the conversation to end", log)
        assert wait_quiet(ledger), "the bridge still had work after the conversation ended"
        observed = centre.observe(conv)
        assert observed.correlation_state == "active", observed
        assert observed.problems == (), observed
        # both systems: one offer in AWA, one AgentWork Opened in Salesforce, nothing twice
        items = centre.work_items(conv)
        assert [i["state"] for i in items] == ["accepted"], items
        assert sum(int(i["offer_count"]) for i in items) == 1, items
        assert observed.agent_work == ("Opened",), observed
        assert centre.interaction_state(conv) not in (None, "closed_abandoned"), observed
        offer = next(c for c in _commands(ledger, centre, conv) if c.operation == "offer")
        assert offer.status == "confirmed", offer
        assert offer.attempts == 2, offer  # the given-back call, then the one that went through
    finally:
        bridge.kill()
        ledger.close()


# --- SIGTERM during start-up -----------------------------------------------------------


def _start_run(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge.app.cli", "run", "--reconcile-every", "0"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def postgres_env(bridge_env, postgres_url) -> dict[str, str]:
    return {**bridge_env, "BRIDGE_LEDGER_URL": postgres_url}


@pytest.mark.postgres
def test_sigterm_while_migrating_rolls_back_and_exits(postgres_env, tmp_path):
    """The migration is held on a lock another session has (its own uncommitted
    ``alembic_version``); SIGTERM rolls it back and the process exits 0 within the budget,
    leaving the ledger empty, not half-made; the next start migrates it."""
    url = postgres_env["BRIDGE_LEDGER_URL"]
    log = tmp_path / "bridge.log"
    blocker = create_engine(url)
    with blocker.connect() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
        proc = _start_run(postgres_env, log)
        try:
            _wait(lambda: "Context impl" in log.read_text(), 20, "the migration", log)
            time.sleep(1.0)  # blocked on the other session's table
            assert proc.poll() is None, log.read_text()
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=20)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
        conn.rollback()
    blocker.dispose()
    text_log = log.read_text()
    assert code == 0, text_log[-3000:]
    assert took <= BUDGET, f"stopping took {took:.1f}s\n{text_log[-3000:]}"
    assert "stopped during start-up" in text_log, text_log[-3000:]

    ledger = SqlLedger(url)
    try:
        assert ledger.current() is None  # rolled back whole: nothing half-migrated
        port = _free_port()
        env = {**postgres_env, "BRIDGE_HTTP_PORT": str(port)}
        again = BridgeProcess(env, tmp_path / "again.log").start()
        try:
            again.wait_for("/readyz", 200)
            ledger.check_current()
            code, took = again.terminate()
            assert code == 0
            assert took <= BUDGET
        finally:
            again.kill()
    finally:
        ledger.close()


def test_sigterm_while_migrating_sqlite_finishes_or_rolls_back(bridge_env, tmp_path):
    """SQLite: the migration waits for another writer; SIGTERM arrives meanwhile. The
    migration finishes or rolls back (never half-made), then the process exits 0 without
    starting the daemon."""
    url = bridge_env["BRIDGE_LEDGER_URL"]
    path = url.removeprefix("sqlite:///")
    log = tmp_path / "bridge.log"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")  # the writer lock, held for a moment
    proc = _start_run(bridge_env, log)
    try:
        _wait(lambda: "Context impl" in log.read_text(), 20, "the migration", log)
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        holder.execute("ROLLBACK")  # the writer lets go: the migration may go on
        code = proc.wait(timeout=20)
        took = time.monotonic() - started
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
    text_log = log.read_text()
    assert code == 0, text_log[-3000:]
    assert took <= BUDGET, f"stopping took {took:.1f}s\n{text_log[-3000:]}"
    assert "stopped during start-up" in text_log, text_log[-3000:]
    assert "bridge running" not in text_log, text_log[-3000:]
    ledger = SqlLedger(url)
    try:
        at = ledger.current()
        if at is not None:
            ledger.check_current()  # finished: the whole schema, stamped
        else:
            engine = create_engine(url)
            with engine.connect() as conn:
                names = conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
                assert [row[0] for row in names] == [], "rolled back, but tables were left"
            engine.dispose()
        ledger.upgrade()
        ledger.check_current()
    finally:
        ledger.close()
