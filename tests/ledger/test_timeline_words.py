"""The timeline speaks the systems' words (issue 14): each line says what happened and who
did it, with the crosswalk's names next to ids; times to the millisecond, in true order.
``bridge ledger list / show / timeline`` show the names; ``--json`` keeps the raw ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.app.cli import app
from bridge.domain.mapping import load_tables
from bridge.ledger import NewCommand, NewEvent, SqlLedger, audit
from bridge.ledger.rows import Correlation, InboxEvent, OutboxCommand, Segment
from bridge.ledger.words import Names, command_words, event_words, segment_words

SANDBOX_MAPPINGS = Path(__file__).resolve().parents[2] / "sandbox" / "bridge_sandbox" / "mappings"
NAMES = Names.from_tables(load_tables(SANDBOX_MAPPINGS))
ALICE_SF, ALICE_SN = "0055g0000000001AAA", "a9010da35d515caaa430b374dcb3a3da"
BOB_SN = "e5e296f73915522ea97b2a0f6be80883"
CAROL_SN = "d4572697450559818caee86263b7c1de"
SUPPORT_SF, SUPPORT_SN = "00G5g0000000001EAA", "d42451cd342c530d82ae640061f1842f"
T = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def _event(kind: str, payload: dict[str, Any], **row: Any) -> InboxEvent:
    source = "servicenow" if kind in ("awa_work_item", "interaction") else "salesforce"
    return InboxEvent(
        **{
            "source": source,
            "stream": f"{source}:{kind}",
            "source_event_id": f"{kind}:1",
            "kind": kind,
            "occurred_at": T,
            "payload": payload,
            "status": "processed",
            **row,
        }
    )


AWA = {"sys_id": "9" * 32, "number": "AWI0001009", "active": "true", "queue": SUPPORT_SN}


@pytest.mark.parametrize(
    ("kind", "payload", "row", "words", "actor"),
    [
        ("awa_work_item", {**AWA, "state": "accepted", "assigned_to": BOB_SN}, {},
         "AWA work item AWI0001009 accepted by bob.brown", "bob.brown"),
        # a ServiceNow pair (sysparm_display_value=all) reads as its value
        ("awa_work_item", {**AWA,
                           "state": {"value": "pending_accept", "display_value": "Pending Accept"},
                           "assigned_to": {"value": CAROL_SN, "display_value": "Carol Chen"}}, {},
         "AWA work item AWI0001009 offered to carol.chen", "carol.chen"),
        ("awa_work_item", {**AWA, "state": "queued", "timed_out": "true", "assigned_to": CAROL_SN},
         {}, "offer of AWA work item AWI0001009 to carol.chen timed out", "carol.chen"),
        ("awa_work_item", {**AWA, "state": "queued", "rejected": "true", "assigned_to": BOB_SN,
                           "reject_reason": "b" * 32}, {},
         "AWA work item AWI0001009 rejected by bob.brown", "bob.brown"),
        ("awa_work_item", {**AWA, "state": "queued"}, {},
         "AWA work item AWI0001009 queued on Support", None),
        ("awa_work_item", {**AWA, "state": "canceled", "active": "false",
                           "cancel_reason": "transfer_rejected"}, {},
         "AWA work item AWI0001009: transfer rejected", None),
        ("awa_work_item", {**AWA, "state": "canceled", "active": "false",
                           "cancel_reason": "timeout"}, {},
         "AWA work item AWI0001009 canceled (timeout)", None),
        # without its number (an older event) the sys_id names it
        ("awa_work_item", {"sys_id": "9" * 32, "state": "accepted", "active": "true",
                           "assigned_to": BOB_SN}, {},
         f"AWA work item {'9' * 32} accepted by bob.brown", "bob.brown"),
        ("agent_work", {"Id": "0Bz5g00000000GKCAY", "Status": "Opened", "UserId": ALICE_SF}, {},
         "AgentWork 0Bz5g00000000GKCAY Opened for alice.ahmed", "alice.ahmed"),
        ("agent_work", {"Id": "0Bz5g00000000GKCAY", "Status": "DeclinedOnPushTimeout",
                        "UserId": ALICE_SF[:15]}, {},  # the 15-character form names her too
         "AgentWork 0Bz5g00000000GKCAY DeclinedOnPushTimeout for alice.ahmed", "alice.ahmed"),
        ("psr", {"Id": "0JR5g00000000GJGAY", "QueueId": SUPPORT_SF, "Serial": 0,
                 "IsPushed": False}, {},
         "PSR 0JR5g00000000GJGAY created on Support", None),
        ("psr", {"Id": "0JR5g00000000GJGAY", "QueueId": SUPPORT_SF, "Serial": 0,
                 "IsPushed": False, "IsTransfer": True}, {},
         "transfer PSR 0JR5g00000000GJGAY created on Support", None),
        ("psr", {"Id": "0JR5g00000000GJGAY", "QueueId": SUPPORT_SF, "Serial": 2,
                 "IsPushed": False, "LastDeclinedAgentSession": "0Xx000000000001"}, {},
         "PSR 0JR5g00000000GJGAY back in queue on Support (Serial 2)", None),
        ("psr", {"Id": "0JR5g00000000GJGAY", "IsPushed": True}, {"status": "echo"},
         "PSR 0JR5g00000000GJGAY pushed to an agent (echo of the bridge's own change)", None),
        ("psr_deleted", {"Id": "0JR5g00000000GJGAY"}, {}, "PSR 0JR5g00000000GJGAY deleted", None),
        ("work_item", {"Id": "0Mw5g00000000GICAY", "Status": "Ended"}, {},
         "MessagingSession 0Mw5g00000000GICAY Ended", None),
        ("interaction", {"sys_id": "a" * 32, "state": "closed_abandoned"}, {},
         f"interaction {'a' * 32} Closed Abandoned", None),
        # refused input says why
        ("agent_work", {"Id": "0Bz5g00000000GKCAY", "Status": "Bogus"},
         {"status": "skipped",
          "error": json.dumps({"kind": "skippable", "message": "unknown Status 'Bogus'"})},
         "AgentWork 0Bz5g00000000GKCAY Bogus; skipped: unknown Status 'Bogus'", None),
    ],
)  # fmt: skip
def test_event_words(
    kind: str, payload: dict[str, Any], row: dict[str, Any], words: str, actor: str | None
) -> None:
    said = event_words(_event(kind, payload, **row), NAMES)
    assert said.text == words
    assert said.actor == actor


def _command(operation: str, payload: dict[str, Any], system: str = "servicenow") -> OutboxCommand:
    return OutboxCommand(
        idempotency_key=f"k:{operation}",
        correlation_id="c",
        system=system,
        operation=operation,
        payload=payload,
    )


@pytest.mark.parametrize(
    ("operation", "payload", "system", "words", "marks"),
    [
        ("offer", {"queue_id": SUPPORT_SN, "candidates": [CAROL_SN, BOB_SN]}, "servicenow",
         "offer to carol.chen (or 1 more) on Support", ()),
        ("transfer", {"target_type": "agent", "target_id": BOB_SN, "source_queue_id": SUPPORT_SN},
         "servicenow", "transfer to bob.brown on Support", ()),
        ("create_agent_work", {"UserId": ALICE_SF}, "salesforce",
         "create AgentWork for alice.ahmed", ()),
        ("delete_psr", {"id": "0JR5g00000000GJGAY"}, "salesforce",
         "delete PSR 0JR5g00000000GJGAY", ()),
        ("cancel_work_item", {"sys_id": "9" * 32, "cancel_reason": "manually_assigned"},
         "servicenow", f"cancel AWA work item {'9' * 32} (manually_assigned)", ()),
        ("close_interaction", {"sys_id": "a" * 32, "state": "closed_complete"}, "servicenow",
         f"close interaction {'a' * 32} as Closed Complete", ()),
        ("route", {"routingType": "Initial", "routingInfo": {"queueId": "00G5g0000000003EAA"}},
         "salesforce", "POST /route Initial to Salesforce Overflow", ()),
        # cancel before re-assign is the two-agent guard, and marked so
        ("update_agent_work", {"workId": "0Bz5g00000000GK", "status": "Cancel"}, "salesforce",
         "two-agent guard: PATCH /agentWork 0Bz5g00000000GK Cancel", ("guard",)),
    ],
)  # fmt: skip
def test_command_words(
    operation: str, payload: dict[str, Any], system: str, words: str, marks: tuple[str, ...]
) -> None:
    said = command_words(_command(operation, payload, system), NAMES)
    assert (said.text, said.marks) == (words, marks)


@pytest.mark.parametrize(
    ("segment", "outcome", "words"),
    [
        ({"kind": "offer", "seq": 2, "sn_user_sys_id": CAROL_SN}, "timed_out",
         "offer #2 to carol.chen timed out"),
        ({"kind": "transfer", "seq": 3, "sn_user_sys_id": BOB_SN}, "accepted",
         "transfer #3 to bob.brown accepted"),
        ({"kind": "route", "seq": 1, "sf_queue_id": "00G5g0000000003EAA"}, None,
         "route #1 to queue Salesforce Overflow opened"),
        ({"kind": "offer", "seq": 1, "sn_user_sys_id": "f" * 32}, "declined",
         f"offer #1 to {'f' * 32} declined"),  # not in the crosswalk: the id itself
    ],
)  # fmt: skip
def test_segment_words(segment: dict[str, Any], outcome: str | None, words: str) -> None:
    seg = Segment(correlation_id="c", external_segment_id="s", **segment)
    assert segment_words(seg, NAMES, outcome) == words


class Clock:
    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> datetime:
        return self.now

    def at(self, millis: int) -> None:
        self.now = T + timedelta(milliseconds=millis)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed_ledger(tmp_path: Path, clock: Clock) -> Iterator[tuple[SqlLedger, dict[str, str]]]:
    """One SF → SN offer within one second, on a ledger whose clock the test sets: the
    bridge offers (10:00:00.010, answered .015), ServiceNow's acceptance is stamped
    10:00:00 (to the second) and arrives at .139, the AgentWork is made at .150."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = SqlLedger(url, now=clock)
    ledger.upgrade()
    clock.at(5)
    psr = NewEvent(
        "salesforce",
        "psr:0JR5g00000000GJGAY:1",
        "psr",
        T + timedelta(milliseconds=2),
        {"Id": "0JR5g00000000GJGAY", "QueueId": SUPPORT_SF, "Serial": 0, "IsPushed": False},
    )
    with ledger.transaction() as tx:
        psr_id = tx.inbox.record("salesforce:PendingServiceRouting", [psr], None).inserted[0]
    clock.at(8)
    with ledger.transaction() as tx:
        corr = tx.correlations.create(
            direction="sf_to_sn",
            state="offered",
            sf_psr_id="0JR5g00000000GJGAY",
            sf_queue_id=SUPPORT_SF,
            sn_user_sys_id=BOB_SN,
        )
        tx.inbox.mark([psr_id], "processed", correlation_id=corr.id)
        seg = tx.correlations.add_segment(
            corr.id, kind="offer", sn_user_sys_id=BOB_SN, opened_at=psr.occurred_at
        )
    clock.at(10)
    with ledger.transaction() as tx:
        offer = tx.outbox.add(
            NewCommand(
                f"{corr.id}:1:offer",
                corr.id,
                "servicenow",
                "offer",
                {"queue_id": SUPPORT_SN, "candidates": [BOB_SN]},
                seg.id,
            )
        )[0]
    clock.at(15)
    with ledger.transaction() as tx:
        tx.outbox.complete(offer.id, {"sys_id": "9" * 32})
    clock.at(139)
    accepted = NewEvent(
        "servicenow",
        f"awa_work_item:{'9' * 32}:2",
        "awa_work_item",
        T,  # sys_updated_on: whole seconds
        {**AWA, "state": "accepted", "assigned_to": BOB_SN},
    )
    with ledger.transaction() as tx:
        event_id = tx.inbox.record("servicenow:awa_work_item", [accepted], None).inserted[0]
    clock.at(150)
    with ledger.transaction() as tx:
        tx.inbox.mark([event_id], "processed", correlation_id=corr.id)
        tx.outbox.add(
            NewCommand(
                f"{corr.id}:1:create_agent_work",
                corr.id,
                "salesforce",
                "create_agent_work",
                {"UserId": "0055g0000000002AAA"},
                seg.id,
                caused_by_event_id=event_id,
            )
        )
    try:
        yield ledger, {"correlation": corr.id}
    finally:
        ledger.close()


def test_events_of_one_second_keep_their_true_order(
    timed_ledger: tuple[SqlLedger, dict[str, str]],
) -> None:
    ledger, ids = timed_ledger
    with ledger.reading() as tx:
        entries = audit.timeline(tx.audit.correlation_detail(ids["correlation"]), NAMES)
    lines = [(e.at, e.summary) for e in entries]
    assert lines == sorted(lines, key=lambda line: line[0])
    summaries = [s for _, s in lines]
    # the acceptance, stamped 10:00:00 by ServiceNow, comes after the offer it accepts was
    # answered (.015) and before the AgentWork it caused (.150): placed at its arrival
    assert summaries == [
        "PSR 0JR5g00000000GJGAY created on Support",
        "offer #1 to bob.brown opened",
        "conversation opened (sf_to_sn)",
        "offer to bob.brown on Support: enqueued",
        f"offer to bob.brown on Support: done → sys_id {'9' * 32}",
        "AWA work item AWI0001009 accepted by bob.brown",
        "create AgentWork for bob.brown: enqueued",
    ]
    accepted = next(e for e in entries if "accepted by" in e.summary)
    assert accepted.at == T + timedelta(milliseconds=139)
    assert accepted.detail["occurred_at"] == T  # ServiceNow's own stamp is kept
    assert (accepted.system, accepted.actor) == ("servicenow", "bob.brown")


runner = CliRunner()


@pytest.fixture
def cli_env(
    timed_ledger: tuple[SqlLedger, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("BRIDGE_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("BRIDGE_MAPPINGS_DIR", str(SANDBOX_MAPPINGS))
    return timed_ledger[1]


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_timeline_shows_milliseconds_words_and_names(cli_env: dict[str, str]) -> None:
    out = _cli("ledger", "timeline", cli_env["correlation"])
    assert "2026-12-03 10:00:00.139" in out
    assert "AWA work item AWI0001009 accepted by bob.brown" in out
    assert "servicenow awa_work_item [processed]" not in out


def test_cli_timeline_json_keeps_raw_ids_and_names(cli_env: dict[str, str]) -> None:
    entries = json.loads(_cli("ledger", "timeline", cli_env["correlation"], "--json"))
    accepted = next(e for e in entries if e["summary"].startswith("AWA work item"))
    assert accepted["at"] == "2026-12-03T10:00:00.139000+00:00"
    assert accepted["ref"] == f"awa_work_item:{'9' * 32}:2"
    assert accepted["detail"]["names"] == {"assigned_to": "bob.brown", "queue": "Support"}
    assert accepted["detail"]["actor"] == "bob.brown"


def test_cli_list_and_show_put_names_beside_ids(cli_env: dict[str, str]) -> None:
    assert f"{BOB_SN} (bob.brown)" in _cli("ledger", "list").replace("\n", "").replace(" │ ", "")
    rows = json.loads(_cli("ledger", "list", "--json"))
    assert rows[0]["sn_user_sys_id"] == BOB_SN  # the raw id stays
    assert rows[0]["names"] == {"sn_user_sys_id": "bob.brown", "sf_queue_id": "Support"}
    shown = json.loads(_cli("ledger", "show", cli_env["correlation"], "--json"))
    assert shown["correlation"]["names"]["sf_queue_id"] == "Support"
    assert shown["segments"][0]["names"] == {"sn_user_sys_id": "bob.brown"}
    assert "bob.brown" in _cli("ledger", "show", cli_env["correlation"])


def test_the_two_agent_guards_cancels_are_marked() -> None:
    """A pending offer cancelled in the decision that makes a new one (ServiceNow side) and
    PATCH /agentWork Cancel (Salesforce side) are the guard's; an ordinary cancel is not."""
    corr = Correlation(id="c", direction="sf_to_sn", state="offered", created_at=T, updated_at=T)

    def cmd(op: str, payload: dict[str, Any], caused_by: int, system: str) -> OutboxCommand:
        return OutboxCommand(
            id=f"{op}-{caused_by}", idempotency_key=f"{op}-{caused_by}", correlation_id="c",
            system=system, operation=op, payload=payload, caused_by_event_id=caused_by,
            created_at=T + timedelta(milliseconds=caused_by), status="pending",
        )  # fmt: skip

    detail = audit.CorrelationDetail(
        correlation=corr,
        commands=[
            cmd("cancel_work_item", {"sys_id": "1" * 32, "cancel_reason": "manually_assigned"},
                7, "servicenow"),
            cmd("transfer", {"target_id": BOB_SN}, 7, "servicenow"),
            cmd("cancel_work_item", {"sys_id": "2" * 32, "cancel_reason": "manually_assigned"},
                9, "servicenow"),
            cmd("update_agent_work", {"workId": "0Bz5g00000000GK", "status": "Cancel"}, 11,
                "salesforce"),
        ],
    )  # fmt: skip
    marked = [(e.summary, e.marks) for e in audit.timeline(detail, NAMES) if e.what == "command"]
    assert marked == [
        (f"two-agent guard: cancel AWA work item {'1' * 32} (manually_assigned): enqueued",
         ("guard",)),
        ("transfer to bob.brown: enqueued", ()),
        (f"cancel AWA work item {'2' * 32} (manually_assigned): enqueued", ()),
        ("two-agent guard: PATCH /agentWork 0Bz5g00000000GK Cancel: enqueued", ("guard",)),
    ]  # fmt: skip
