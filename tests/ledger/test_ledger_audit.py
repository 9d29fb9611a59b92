"""Audit queries over a seeded ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bridge.errors import NotFound
from bridge.ledger import SqlLedger, audit
from tests.fixtures.ledger import T0, db_session, seed_ledger


@pytest.fixture
def seeded(ledger: SqlLedger) -> tuple[SqlLedger, dict[str, str]]:
    return ledger, seed_ledger(ledger)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["other", "correlation"]),
        ({"state": "active"}, ["correlation"]),
        ({"direction": "sn_to_sf"}, ["other"]),
        ({"since": T0 + timedelta(minutes=30)}, ["other"]),
        ({"until": T0 + timedelta(minutes=30)}, ["correlation"]),
        ({"queue": "00G000000000001AAA"}, ["correlation"]),
        ({"agent": "c" * 32}, ["correlation"]),
        ({"agent": "nobody"}, []),
        ({"state": "active", "direction": "sn_to_sf"}, []),
    ],
)
def test_list_filters(
    seeded: tuple[SqlLedger, dict[str, str]], filters: dict[str, object], expected: list[str]
) -> None:
    ledger, ids = seeded
    with db_session(ledger) as session:
        found = audit.AuditReader(session).list_correlations(audit.CorrelationFilter(**filters), 10)
    assert [c.id for c in found] == [ids[k] for k in expected]


def test_iter_correlations_streams_everything(seeded: tuple[SqlLedger, dict[str, str]]) -> None:
    ledger, ids = seeded
    with db_session(ledger) as session:
        found = {
            c.id
            for c in audit.AuditReader(session).iter_correlations(
                audit.CorrelationFilter(), batch=1
            )
        }
    assert found == {ids["correlation"], ids["other"]}


@pytest.mark.parametrize(
    "key",
    ["correlation", "psr", "work_item", "agent_work", "sn_work_item", "sn_document", "segment"],
)
def test_detail_by_any_id(seeded: tuple[SqlLedger, dict[str, str]], key: str) -> None:
    ledger, ids = seeded
    with db_session(ledger) as session:
        detail = audit.AuditReader(session).correlation_detail(ids[key])
    assert detail.correlation.id == ids["correlation"]
    assert [s.outcome for s in detail.segments] == ["accepted"]
    assert len(detail.events) == 2
    assert [c.operation for c in detail.commands] == ["offer"]
    assert [f.action for f in detail.findings] == ["delete_route"]


def test_detail_of_unknown_id(seeded: tuple[SqlLedger, dict[str, str]]) -> None:
    ledger, _ = seeded
    with (
        db_session(ledger) as session,
        pytest.raises(NotFound, match="no correlation has the id 'zzz'"),
    ):
        audit.AuditReader(session).correlation_detail("zzz")


def test_timeline_is_in_time_order(seeded: tuple[SqlLedger, dict[str, str]]) -> None:
    ledger, ids = seeded
    with db_session(ledger) as session:
        entries = audit.timeline(audit.AuditReader(session).correlation_detail(ids["psr"]))
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    assert [e.what for e in entries[:3]] == ["correlation", "event", "segment"]
    assert {e.what for e in entries} == {"correlation", "event", "segment", "command", "finding"}
    # in the systems' words (issue 14): which leg, to whom, what became of it
    assert any(e.summary == f"offer #1 to {ids['sn_agent']} accepted" for e in entries)


def test_stats(seeded: tuple[SqlLedger, dict[str, str]]) -> None:
    ledger, _ = seeded
    with db_session(ledger) as session:
        data = audit.AuditReader(session).stats()
    assert data["correlations"] == {
        "total": 2,
        "open": 2,
        "by_state": {"active": 1, "routing": 1},
        "by_direction": {"sf_to_sn": 1, "sn_to_sf": 1},
    }
    assert data["inbox"] == {"by_status": {"processed": 2}}
    assert data["outbox"]["by_status"] == {"pending": 1}
    assert data["outbox"]["oldest_unfinished_at"] is not None
    assert data["segments"] == {"by_outcome": {"accepted": 1}}
    assert data["cursors"]["sf:psr"]["position"] == "42"
    assert data["last_reconcile_run"]["status"] == "succeeded"


def test_reconcile_runs_and_findings(seeded: tuple[SqlLedger, dict[str, str]]) -> None:
    ledger, ids = seeded
    with db_session(ledger) as session:
        runs = audit.AuditReader(session).reconcile_runs(5)
        run, findings = audit.AuditReader(session).run_findings(ids["run"])
        with pytest.raises(NotFound):
            audit.AuditReader(session).run_findings("nope")
    assert [(r.id, counts) for r, counts in runs] == [(ids["run"], {"planned": 1})]
    assert run.summary == {"planned": 1}
    assert [f.subject for f in findings] == [ids["psr"]]
