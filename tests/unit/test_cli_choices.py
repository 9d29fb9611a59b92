"""Bad input to the CLI is exit 2 with a message naming the option and the value, never
exit 70 ("internal error") nor a silent "(none)": every option with a fixed set of values
is a choice, checked before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app.cli import EXIT_ERROR, main
from bridge.app.commands import ledger as ledger_cmd
from bridge.domain import CorrelationState, Direction, EventKind
from bridge.ledger import SqlLedger
from bridge.ledger.rows import DIRECTIONS, EVENT_SOURCES, EVENT_STATUSES


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory, an empty secrets dir and a migrated SQLite ledger."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(tmp_path / "data"))
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    ledger.upgrade()
    ledger.close()
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["ledger", "export", "--format", "xml"], ["--format", "xml", "jsonl", "csv"]),
        (["ledger", "events", "--status", "weird"], ["--status", "weird", "error", "skipped"]),
        (["ledger", "events", "--status", "error", "--status", "eror"], ["--status", "eror"]),
        (["ledger", "events", "--source", "sap"], ["--source", "sap", "reconciler"]),
        (["ledger", "events", "--kind", "case"], ["--kind", "case", "awa_work_item"]),
        (["ledger", "list", "--state", "open"], ["--state", "open", "offered"]),
        (["ledger", "list", "--direction", "both"], ["--direction", "both", "sf_to_sn"]),
        (["ledger", "export", "--state", "weird"], ["--state", "weird"]),
        (["ledger", "export", "--direction", "weird"], ["--direction", "weird"]),
        (["ledger", "list", "--limit", "0"], ["--limit"]),
        (["ledger", "list", "--since", "yesterday"], ["--since", "yesterday"]),
        (["ledger", "nope"], ["nope"]),
        (["run", "--bogus"], ["--bogus"]),
        (["reconcile", "--grace", "soon"], ["--grace", "soon"]),
    ],
)
def test_bad_input_is_exit_2_naming_what(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], names: list[str]
) -> None:
    assert main(argv) == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert "internal error" not in err
    assert "Traceback" not in err
    for name in names:
        assert name in err, err


def test_good_choices_still_run(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["ledger", "events", "--status", "error", "--status", "skipped"]
    assert main([*argv, "--source", "reconciler", "--kind", "psr"]) == 0
    assert capsys.readouterr().out.strip() == "(none)"
    assert main(["ledger", "list", "--state", "offered", "--direction", "sn_to_sf"]) == 0
    assert capsys.readouterr().out.strip() == "(none)"
    assert main(["ledger", "export", "--format", "csv", "--state", "closed"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("id,")


def test_the_choices_are_the_ledgers_own_values() -> None:
    """The options offer exactly what the ledger can hold (no value can be asked for that
    never matches, none that can be held is refused)."""
    assert [s.value for s in ledger_cmd.EventStatus] == list(EVENT_STATUSES)
    assert [s.value for s in ledger_cmd.EventSource] == list(EVENT_SOURCES)
    assert [d.value for d in Direction] == list(DIRECTIONS)
    assert {k.value for k in EventKind} >= {"psr", "agent_work", "awa_work_item"}
    assert "offered" in {s.value for s in CorrelationState}
