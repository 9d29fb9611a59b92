"""`bridge ledger stats` shows each stream's mode and position (a change stream's replay
id and the org instance it came from) and the configured intake modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.app.cli import app
from bridge.flow.recovery import RECOVERY, drop_positions
from bridge.flow.streams import StreamPosition
from bridge.ledger import SqlLedger

runner = CliRunner()
PUBSUB_STREAM = "salesforce:pubsub:/data/ExternalRoutingChannel__chn"
REPLAY_ID = "000000000000a1b2"
ORIGIN = "https://acme.my.salesforce.com"


@pytest.fixture
def ledger_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BRIDGE_SALESFORCE__INTAKE", "pubsub")
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    ledger.upgrade()
    with ledger.transaction() as tx:
        tx.cursors.set(PUBSUB_STREAM, StreamPosition(REPLAY_ID, ORIGIN).encode())
        tx.cursors.set("salesforce:PendingServiceRouting", '{"at": "2026-01-05T09:00:00+00:00"}')
    ledger.close()
    return tmp_path


def test_stats_json_names_each_streams_mode_and_replay_id(ledger_dir: Path) -> None:
    result = runner.invoke(app, ["ledger", "stats", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    stream = data["cursors"][PUBSUB_STREAM]
    assert (stream["mode"], stream["replay_id"], stream["origin"]) == ("pubsub", REPLAY_ID, ORIGIN)
    assert data["cursors"]["salesforce:PendingServiceRouting"]["mode"] == "poll"
    assert data["intake"]["salesforce"] == "pubsub (sweeper every 600s)"
    assert data["intake"]["servicenow"].startswith("poll")


def test_stats_table_shows_the_replay_id_not_the_encoded_position(ledger_dir: Path) -> None:
    result = runner.invoke(app, ["ledger", "stats"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "intake modes" in result.stdout
    line = next(line for line in result.stdout.splitlines() if PUBSUB_STREAM in line)
    assert all(word in line for word in ("pubsub", REPLAY_ID, ORIGIN)), line
    assert "replay_id" not in result.stdout  # the JSON encoding stays out of the table


def test_drop_positions_forgets_every_salesforce_stream_and_files_a_finding_each(
    tmp_path: Path,
) -> None:
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.upgrade()
    pubsub = StreamPosition(REPLAY_ID, ORIGIN).encode()
    with ledger.transaction() as tx:
        tx.cursors.set(PUBSUB_STREAM, pubsub)
        tx.cursors.set("salesforce:AgentWork", '{"at": "2026-01-05T09:00:00+00:00"}')
        tx.cursors.set("servicenow:awa_work_item", "2026-01-05 09:00:00|abc")
    recovery = drop_positions(ledger, "the org moved")
    assert set(recovery.dropped) == {PUBSUB_STREAM, "salesforce:AgentWork"}
    assert recovery.dropped[PUBSUB_STREAM] == pubsub
    with ledger.reading() as tx:
        assert tx.cursors.get(PUBSUB_STREAM) is None
        assert tx.cursors.get("salesforce:AgentWork") is None
        assert tx.cursors.get("servicenow:awa_work_item") is not None  # the other system's
        assert recovery.run_id is not None
        _run, found = tx.audit.run_findings(recovery.run_id)
    assert sorted((f.kind, f.subject, f.reason) for f in found) == [
        (RECOVERY, "salesforce:AgentWork", "the org moved"),
        (RECOVERY, PUBSUB_STREAM, "the org moved"),
    ]
    assert found[0].detail["position"] in recovery.dropped.values()
    # nothing stored: the recovery is still on record
    again = drop_positions(ledger, "again")
    assert again.dropped == {}
    with ledger.reading() as tx:
        assert again.run_id is not None
        assert [f.subject for f in tx.audit.run_findings(again.run_id)[1]] == ["salesforce:"]
    ledger.close()
