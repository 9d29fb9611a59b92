"""`bridge sandbox`: the demo exits 0 and its summary matches the ledger it wrote."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlmodel import select

from bridge.app.cli import main
from bridge.ledger import SqlLedger, rows
from bridge_sandbox.demo import MIX, pick
from tests.fixtures.ledger import db_session

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_of_20_conversations_matches_its_ledger(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["sandbox", "--conversations", "20", "--json", "--dir", str(tmp_path / "demo")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["ok"] is True
    assert report["stuck"] == []
    assert report["problems"] == []
    assert report["drift"] == 0
    assert sum(report["scenarios"].values()) == 20
    assert set(report["scenarios"]) == set(MIX)  # every kind of scenario played

    ledger = SqlLedger(report["ledger_url"])
    with db_session(ledger) as session:
        states = Counter(session.scalars(select(rows.Correlation.state)).all())
        dead = session.scalars(
            select(rows.OutboxCommand).where(rows.OutboxCommand.status == "dead")
        ).all()
        run = session.get(rows.ReconcileRun, report["reconcile_run"])
    ledger.close()
    assert dict(states) == report["outcomes"]
    assert sum(states.values()) == 20
    assert set(states) <= {"closed", "abandoned"}
    assert dead == []
    assert run is not None
    assert run.mode == "dry_run"
    assert all(calls > 0 for calls in report["api_calls"].values())
    assert report["latency_ms"]["commands"] > 0


@pytest.mark.parametrize("n", [1, 5, 10, 37])
def test_the_mix_plays_every_kind_once_it_can(n):
    names = [s.name for s in pick(n, seed=3)]
    assert len(names) == n
    assert len(set(names)) == min(n, len(MIX))
