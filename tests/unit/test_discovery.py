"""Crosswalk discovery's matching and merging, as tables of cases."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.domain.discovery import (
    Outcome,
    SfChannel,
    SfQueue,
    SfUser,
    SnAgent,
    SnChannel,
    SnQueue,
    discover_channels,
    discover_queues,
    discover_users,
    merge,
)
from bridge.domain.sf_ids import to18

U1, U2, U3 = (to18(f"0055g000000000{n}") for n in (1, 2, 3))
S1, S2, S3 = ("a" * 31 + "1", "a" * 31 + "2", "a" * 31 + "3")
Q1, Q2 = to18("00G5g0000000001"), to18("00G5g0000000002")


def _key(row: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in row)


def _outcomes(proposals: list[Any]) -> list[tuple[str, str | None, str | None, str | None]]:
    return sorted(
        ((p.outcome.value, p.salesforce, p.servicenow, p.by) for p in proposals), key=_key
    )


USER_CASES = [
    pytest.param(
        [SfUser(U1, "ann@sf", email="Ann@Example.com")],
        [SnAgent(S1, "ann", email="ann@example.com")],
        [("matched", f"ann@sf ({U1})", f"ann ({S1})", "email")],
        id="email, case-insensitive",
    ),
    pytest.param(
        [SfUser(U1, "ann@sf", email="ann@corp.invalid", federation_id="ann")],
        [SnAgent(S1, "ann", email="ann@example.com")],
        [("matched", f"ann@sf ({U1})", f"ann ({S1})", "federation id")],
        id="federation id when the email differs",
    ),
    pytest.param(
        [SfUser(U1, "ann@sf", email="x@example.com", federation_id="bob")],
        [
            SnAgent(S1, "ann", email="x@example.com"),
            SnAgent(S2, "bob", email="bob@example.com"),
        ],
        [
            ("matched", f"ann@sf ({U1})", f"ann ({S1})", "email"),
            ("unmatched", None, f"bob ({S2})", None),
        ],
        id="email wins over federation id",
    ),
    pytest.param(
        [SfUser(U1, "ann@sf", email="team@example.com")],
        [
            SnAgent(S1, "ann", email="team@example.com"),
            SnAgent(S2, "bob", email="team@example.com"),
        ],
        [
            ("ambiguous", f"ann@sf ({U1})", f"ann ({S1}), bob ({S2})", None),
            ("unmatched", None, f"ann ({S1})", None),
            ("unmatched", None, f"bob ({S2})", None),
        ],
        id="one email, two agents: ambiguous",
    ),
    pytest.param(
        [
            SfUser(U1, "ann@sf", email="team@example.com"),
            SfUser(U2, "ann2@sf", email="team@example.com"),
        ],
        [SnAgent(S1, "ann", email="team@example.com")],
        [
            ("ambiguous", f"ann2@sf ({U2})", f"ann ({S1})", None),
            ("ambiguous", f"ann@sf ({U1})", f"ann ({S1})", None),
            ("unmatched", None, f"ann ({S1})", None),
        ],
        id="two users, one agent: ambiguous for both",
    ),
    pytest.param(
        [
            SfUser(U1, "ann@sf", email="team@example.com"),
            SfUser(U2, "ann2@sf", email="team@example.com", federation_id="ann"),
        ],
        [SnAgent(S1, "ann", email="team@example.com")],
        [
            ("ambiguous", f"ann2@sf ({U2})", f"ann ({S1})", None),
            ("ambiguous", f"ann@sf ({U1})", f"ann ({S1})", None),
            ("unmatched", None, f"ann ({S1})", None),
        ],
        id="a contested agent is not taken by a weaker key later",
    ),
    pytest.param(
        [SfUser(U1, "ann@sf"), SfUser(U3, "cat@sf", email="cat@example.com")],
        [],
        [("unmatched", f"ann@sf ({U1})", None, None), ("unmatched", f"cat@sf ({U3})", None, None)],
        id="nothing to match",
    ),
]


@pytest.mark.parametrize(("users", "agents", "expected"), USER_CASES)
def test_users(users: list[SfUser], agents: list[SnAgent], expected: list[Any]) -> None:
    assert _outcomes(discover_users(users, agents)) == sorted(expected, key=_key)


def test_user_rows_and_reasons() -> None:
    proposals = discover_users(
        [SfUser("0055g0000000001", "ann@sf", email="ann@example.com"), SfUser(U2, "noone@sf")],
        [SnAgent(S1, "ann.a", email="ann@example.com")],
    )
    matched = [p for p in proposals if p.outcome is Outcome.MATCHED]
    assert [p.row for p in matched] == [{"name": "ann.a", "sf_user_id": U1, "sn_user_sys_id": S1}]
    (lonely,) = [p for p in proposals if p.outcome is Outcome.UNMATCHED]
    assert lonely.reason == "has no email and no FederationIdentifier"


QUEUE_CASES = [
    pytest.param(
        [SfQueue(Q1, "Support", "Support_External", "ExternalRouting")],
        [SnQueue(S1, "Whatever", external_id="support_external")],
        [("matched", f"Support ({Q1})", f"Whatever ({S1})", "external id")],
        {"direction": "sf_to_sn", "sn_external_id": "support_external"},
        id="external id = DeveloperName",
    ),
    pytest.param(
        [SfQueue(Q1, "Support", "Support_External", "ExternalRouting")],
        [SnQueue(S1, "Whatever", external_id=Q1[:15])],
        [("matched", f"Support ({Q1})", f"Whatever ({S1})", "external id")],
        {"sf_queue_id": Q1},
        id="external id = the 15-character Group Id",
    ),
    pytest.param(
        [SfQueue(Q1, "Overflow", "Overflow_Q", "MostAvailable")],
        [SnQueue(S1, "overflow", external_id="OTHER")],
        [("matched", f"Overflow ({Q1})", f"overflow ({S1})", "name")],
        {"direction": "sn_to_sf", "name": "overflow"},
        id="by name, Omni-routed: sn_to_sf",
    ),
    pytest.param(
        [SfQueue(Q1, "Support", "S1", "ExternalRouting")],
        [SnQueue(S1, "Support"), SnQueue(S2, "Support")],
        [
            ("ambiguous", f"Support ({Q1})", f"Support ({S1}), Support ({S2})", None),
            ("unmatched", None, f"Support ({S1})", None),
            ("unmatched", None, f"Support ({S2})", None),
        ],
        None,
        id="two AWA queues of one name",
    ),
    pytest.param(
        [SfQueue(Q1, "Support", "Support_External", "ExternalRouting"), SfQueue(Q2, "Billing")],
        [SnQueue(S1, "Sales")],
        [
            ("unmatched", f"Support ({Q1})", None, None),
            ("unmatched", f"Billing ({Q2})", None, None),
            ("unmatched", None, f"Sales ({S1})", None),
        ],
        None,
        id="no match",
    ),
]


@pytest.mark.parametrize(("queues", "awa", "expected", "row"), QUEUE_CASES)
def test_queues(
    queues: list[SfQueue], awa: list[SnQueue], expected: list[Any], row: dict[str, Any] | None
) -> None:
    proposals = discover_queues(queues, awa)
    assert _outcomes(proposals) == sorted(expected, key=_key)
    if row is not None:
        (found,) = [p.row for p in proposals if p.row]
        assert found is not None
        assert row.items() <= found.items()


def test_channels() -> None:
    c1, c2 = to18("0N95g0000000001"), to18("0N95g0000000002")
    proposals = discover_channels(
        [
            SfChannel(c1, "sfdc_livemessage", "Messaging", "MessagingSession"),
            SfChannel(c2, "sfdc_phone", "Phone", "VoiceCall"),
        ],
        [SnChannel(S1, "messaging", "interaction"), SnChannel(S2, "Chat")],
    )
    assert _outcomes(proposals) == sorted(
        [
            ("matched", f"Messaging ({c1})", f"messaging ({S1})", "name"),
            ("unmatched", f"Phone ({c2})", None, None),
            ("unmatched", None, f"Chat ({S2})", None),
        ],
        key=_key,
    )
    (matched,) = [p.row for p in proposals if p.row]
    assert matched == {
        "name": "messaging",
        "sf_service_channel_id": c1,
        "sf_work_item_type": "MessagingSession",
        "sn_document_table": "interaction",
        "sn_service_channel_sys_id": S1,
    }


ANN = {"name": "ann", "sf_user_id": U1, "sn_user_sys_id": S1}
BOB = {"name": "bob", "sf_user_id": U2, "sn_user_sys_id": S2}
HAND_ANN = {"name": "annie", "sf_user_id": U1[:15], "sn_user_sys_id": S1}  # 15-char id
HAND_OTHER = {"name": "ann", "sf_user_id": U1, "sn_user_sys_id": S3}  # pairs U1 differently
PLACEHOLDER = {"name": "first.agent", "sf_user_id": "<User Id, 005...>", "sn_user_sys_id": "<x>"}

MERGE_CASES = [
    pytest.param(None, [ANN, BOB], False, [ANN, BOB], "added", id="new file"),
    pytest.param({"users": [HAND_ANN]}, [ANN], False, [HAND_ANN], "unchanged", id="same pair"),
    pytest.param({"users": [HAND_OTHER]}, [ANN], False, [HAND_OTHER], "kept", id="hand-made kept"),
    pytest.param(
        {"users": [HAND_OTHER]},
        [ANN],
        True,
        [{"name": "ann", "sf_user_id": U1, "sn_user_sys_id": S1}],
        "replaced",
        id="--force",
    ),
    pytest.param(
        {"users": [PLACEHOLDER, {"name": "ann", "sf_user_id": U3, "sn_user_sys_id": S3}]},
        [ANN],
        False,
        [{"name": "ann", "sf_user_id": U3, "sn_user_sys_id": S3}, dict(ANN, name="ann (2)")],
        "added",
        id="placeholders dropped, names kept unique",
    ),
]


@pytest.mark.parametrize(("existing", "rows", "force", "users", "what"), MERGE_CASES)
def test_merge(
    existing: dict[str, Any] | None,
    rows: list[dict[str, Any]],
    force: bool,
    users: list[dict[str, Any]],
    what: str,
) -> None:
    proposals = discover_users(
        [SfUser(r["sf_user_id"], r["name"], email=f"{r['name']}@x") for r in rows],
        [SnAgent(r["sn_user_sys_id"], r["name"], email=f"{r['name']}@x") for r in rows],
    )
    result = merge(existing, proposals, force=force)
    assert result.crosswalk["users"] == users
    assert result.crosswalk["queues"] == []
    assert result.crosswalk["channels"] == []
    assert getattr(result, what), what
