"""`bridge db` and `bridge ledger` through typer's runner on a seeded SQLite ledger."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.app.cli import app, main
from bridge.ledger import NewEvent, SqlLedger, migrate
from tests.fixtures.ledger import record_events, seed_ledger

runner = CliRunner()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No .env, no secrets dir and a data directory of its own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture
def ids(isolated: Path) -> dict[str, str]:
    ledger = SqlLedger(f"sqlite:///{isolated / 'data' / 'ledger.db'}")
    ledger.upgrade()
    try:
        return seed_ledger(ledger)
    finally:
        ledger.close()


def run_json(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_db_upgrade_then_current(isolated: Path) -> None:
    head = migrate.head()  # the newest migration shipped
    first = runner.invoke(app, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert f"upgraded (empty) -> {head}" in first.stdout
    assert f"already at {head}" in runner.invoke(app, ["db", "upgrade"]).stdout
    assert (isolated / "data" / "ledger.db").is_file()
    assert run_json("db", "current") == {
        "url": f"sqlite:///{isolated / 'data' / 'ledger.db'}",
        "current": head,
        "head": head,
        "up_to_date": True,
    }
    down = runner.invoke(app, ["db", "downgrade", "base"])
    assert f"{head} -> (empty)" in down.stdout


def test_list_json_shape(ids: dict[str, str]) -> None:
    rows = run_json("ledger", "list")
    assert [r["id"] for r in rows] == [ids["other"], ids["correlation"]]
    assert {"id", "direction", "state", "version", "sf_psr_id", "created_at", "data"} <= set(
        rows[0]
    )
    assert rows[1]["created_at"] == "2026-01-05T09:00:00+00:00"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--state", "routing"], ["other"]),
        (["--direction", "sf_to_sn"], ["correlation"]),
        (["--agent", "c" * 32], ["correlation"]),
        (["--queue", "00G000000000001AAA"], ["correlation"]),
        (["--since", "2026-01-05T09:30:00"], ["other"]),
        (["--until", "2026-01-05T09:30:00Z"], ["correlation"]),
        (["--since", "1h"], []),
        (["--limit", "1"], ["other"]),
    ],
)
def test_list_filters(ids: dict[str, str], args: list[str], expected: list[str]) -> None:
    assert [r["id"] for r in run_json("ledger", "list", *args)] == [ids[k] for k in expected]


def test_list_table(ids: dict[str, str]) -> None:
    result = runner.invoke(app, ["ledger", "list", "--state", "routing"])
    assert result.exit_code == 0
    assert "correlations" in result.stdout
    assert "sn_to_sf" in result.stdout


@pytest.mark.parametrize("key", ["correlation", "psr", "agent_work", "sn_work_item", "segment"])
def test_show_json_by_any_id(ids: dict[str, str], key: str) -> None:
    data = run_json("ledger", "show", ids[key])
    assert set(data) == {"correlation", "segments", "events", "commands", "findings"}
    assert data["correlation"]["id"] == ids["correlation"]
    assert data["segments"][0]["external_segment_id"] == ids["segment"]
    assert data["commands"][0]["status"] == "pending"


def test_show_table(ids: dict[str, str]) -> None:
    result = runner.invoke(app, ["ledger", "show", ids["psr"]])
    assert result.exit_code == 0
    for title in ("correlation", "segments", "events", "commands"):
        assert title in result.stdout


def test_timeline_json(ids: dict[str, str]) -> None:
    entries = run_json("ledger", "timeline", ids["sn_work_item"])
    assert set(entries[0]) == {"at", "what", "summary", "ref", "detail"}
    assert entries == sorted(entries, key=lambda e: e["at"])
    assert entries[0]["what"] == "correlation"


@pytest.mark.parametrize("command", ["show", "timeline"])
def test_unknown_id_is_not_found_exit_1(
    ids: dict[str, str], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ledger", command, "no-such-id"]) == 1
    err = capsys.readouterr().err
    assert "not found" in err
    assert "no-such-id" in err
    assert "Traceback" not in err


def test_export_jsonl_and_csv(ids: dict[str, str], isolated: Path) -> None:
    jsonl = runner.invoke(app, ["ledger", "export", "--format", "jsonl", "--state", "active"])
    assert jsonl.exit_code == 0
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["id"] for r in lines] == [ids["correlation"]]

    out = isolated / "export.csv"
    written = runner.invoke(app, ["ledger", "export", "--format", "csv", "-o", str(out)])
    assert written.exit_code == 0
    assert "2 correlation(s) written" in written.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["id"] for r in rows} == {ids["correlation"], ids["other"]}
    assert rows[1]["sf_psr_id"] == ids["psr"]
    assert rows[1]["data"] == "{}"


def test_stats_json(ids: dict[str, str]) -> None:
    data = run_json("ledger", "stats")
    assert data["correlations"]["total"] == 2
    assert data["outbox"]["by_status"] == {"pending": 1}
    assert data["cursors"]["sf:psr"]["position"] == "42"


def test_stats_table(ids: dict[str, str]) -> None:
    result = runner.invoke(app, ["ledger", "stats"])
    assert result.exit_code == 0
    assert "outbox by status" in result.stdout


def test_reconciliations(ids: dict[str, str]) -> None:
    runs = run_json("ledger", "reconciliations")
    assert [(r["id"], r["findings"]) for r in runs] == [(ids["run"], {"planned": 1})]
    one = run_json("ledger", "reconciliations", "--run", ids["run"])
    assert one["run"]["mode"] == "dry_run"
    assert [f["action"] for f in one["findings"]] == ["delete_route"]
    assert runner.invoke(app, ["ledger", "reconciliations", "--run", ids["run"]]).exit_code == 0


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["ledger", "stats"], 2, "has no tables yet: run `bridge db upgrade`"),
        (["ledger", "list", "--since", "yesterday"], 2, "--since: 'yesterday' is neither"),
        (["ledger", "reconciliations", "--run", "nope"], 1, "no reconcile run 'nope'"),
    ],
)
def test_errors_are_one_clear_message(
    isolated: Path, argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if code == 1:
        SqlLedger(f"sqlite:///{isolated / 'data' / 'ledger.db'}").upgrade()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_corrupt_ledger_message(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (isolated / "data").mkdir()
    (isolated / "data" / "ledger.db").write_bytes(b"garbage" * 1000)
    assert main(["ledger", "stats"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not a SQLite database" in err
    assert main(["--debug", "ledger", "stats"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_events_lists_refused_input_with_its_reason(isolated: Path) -> None:
    ledger = SqlLedger(f"sqlite:///{isolated / 'data' / 'ledger.db'}")
    ledger.upgrade()
    now = datetime.now(UTC)
    recorded = record_events(
        ledger,
        "salesforce:AgentWork",
        [
            NewEvent("salesforce", "agent_work:0Bz1:Weird", "agent_work", now, {"Status": "Weird"}),
            NewEvent("salesforce", "agent_work:0Bz2:Opened", "agent_work", now, {}),
            NewEvent("servicenow", "awa_work_item:abc:1", "awa_work_item", now, {}),
        ],
        None,
    )
    bad, skipped, fine = recorded.inserted
    with ledger.transaction() as tx:
        tx.inbox.mark(
            [bad], "error", error="unknown AgentWork Status 'Weird' (event agent_work:0Bz1)"
        )
        tx.inbox.mark([skipped], "skipped", error="belongs to no conversation the bridge routes")
        tx.inbox.mark([fine], "processed")
    ledger.close()

    refused = run_json("ledger", "events", "--status", "error", "--status", "skipped")
    assert [e["id"] for e in refused] == [skipped, bad]  # newest first
    assert refused[1]["error"].startswith("unknown AgentWork Status 'Weird'")
    only_sn = run_json("ledger", "events", "--source", "servicenow")
    assert [e["status"] for e in only_sn] == ["processed"]
    table = runner.invoke(app, ["ledger", "events", "--status", "error"])
    assert table.exit_code == 0
    assert "Weird" in table.stdout
