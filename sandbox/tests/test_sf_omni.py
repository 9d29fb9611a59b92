"""Omni-Channel in the sandbox org, driven through the REST API with simple-salesforce:
the expected-behaviour scenarios of external routing, the org's own router for Omni-routed
queues, capacity, the AgentWork / PSR field rules, and the change events each step leaves."""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.salesforce.omni import agent_session_id

ALICE, BOB, CAROL, DAN = (a.sf_user_id for a in seed.AGENTS)
SUPPORT, BILLING, OVERFLOW = (q.sf_queue_id for q in seed.QUEUES)
MESSAGING = seed.CHANNELS[0].sf_service_channel_id


def start(sandbox: SalesforceSandbox, queue: str = "Support_External") -> tuple[str, str]:
    started = sandbox.control.start_conversation(queue)
    return started["work_item_id"], started["psr_id"]


def assign(sf: Salesforce, work_item: str, psr: str | None, user: str, **extra: Any) -> str:
    fields = {
        "UserId": user,
        "WorkItemId": work_item,
        "ServiceChannelId": MESSAGING,
        "PendingServiceRoutingId": psr,
        **extra,
    }
    created: dict[str, Any] = sf.AgentWork.create(fields)
    return str(created["id"])


def psr_of(sf: Salesforce, psr: str) -> dict[str, Any]:
    return dict(sf.PendingServiceRouting.get(psr))


def work_of(sf: Salesforce, work: str) -> dict[str, Any]:
    return dict(sf.AgentWork.get(work))


def works_on(sf: Salesforce, work_item: str) -> list[tuple[str, str]]:
    rows = sf.query(
        f"SELECT UserId, Status FROM AgentWork WHERE WorkItemId = '{work_item}' "
        "ORDER BY CreatedDate, Id"
    )["records"]
    return [(r["UserId"], r["Status"]) for r in rows]


def open_psrs(sf: Salesforce, work_item: str) -> list[dict[str, Any]]:
    return list(
        sf.query(
            "SELECT Id, QueueId, IsTransfer, IsPushed, Serial FROM PendingServiceRouting "
            f"WHERE WorkItemId = '{work_item}'"
        )["records"]
    )


def error_code(exc: pytest.ExceptionInfo[SalesforceMalformedRequest]) -> str:
    return str(exc.value.content[0]["errorCode"])


def changes(sandbox: SalesforceSandbox, since: int) -> list[tuple[str, str, str]]:
    return [
        (e.entity, e.change_type, e.record_id)
        for e in sandbox.org.changes.since(since)
        if e.entity in ("PendingServiceRouting", "AgentWork")
    ]


def test_new_conversation_has_a_psr_ready_for_external_routing(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    work_item, psr_id = start(sf_sandbox)
    psr = psr_of(sf_client, psr_id)
    assert {
        k: psr[k]
        for k in (
            "WorkItemId",
            "QueueId",
            "RoutingModel",
            "RoutingType",
            "IsReadyForRouting",
            "IsPushed",
            "IsTransfer",
            "Serial",
            "PushTimeout",
            "CapacityWeight",
            "ServiceChannelId",
        )
    } == {
        "WorkItemId": work_item,
        "QueueId": SUPPORT,
        "RoutingModel": "ExternalRouting",
        "RoutingType": "QueueBased",
        "IsReadyForRouting": True,
        "IsPushed": False,
        "IsTransfer": False,
        "Serial": 0,
        "PushTimeout": seed.DEFAULT_PUSH_TIMEOUT_SECONDS,
        "CapacityWeight": 1.0,
        "ServiceChannelId": MESSAGING,
    }
    assert sf_client.MessagingSession.get(work_item)["Status"] == "Waiting"
    assert works_on(sf_client, work_item) == []


def test_agent_accepts(sf_sandbox: SalesforceSandbox, sf_client: Salesforce) -> None:
    work_item, psr_id = start(sf_sandbox)
    mark = sf_sandbox.org.changes.latest_replay_id
    work_id = assign(sf_client, work_item, psr_id, ALICE)
    work = work_of(sf_client, work_id)
    assert work["Status"] == "Assigned"
    assert work["AssignedDateTime"]
    assert work["RequestDateTime"]
    assert work["PushTimeoutDateTime"]
    assert work["PushTimeout"] == seed.DEFAULT_PUSH_TIMEOUT_SECONDS
    pushed = psr_of(sf_client, psr_id)
    assert (pushed["IsPushed"], pushed["Serial"]) == (True, 1)

    sf_sandbox.control.accept(work_id)

    work = work_of(sf_client, work_id)
    assert work["Status"] == "Opened"
    assert work["AcceptDateTime"]
    assert open_psrs(sf_client, work_item) == []
    deleted = sf_client.query_all(
        f"SELECT Id, IsDeleted FROM PendingServiceRouting WHERE Id = '{psr_id}'",
        include_deleted=True,
    )["records"]
    assert [r["IsDeleted"] for r in deleted] == [True]
    session = sf_client.MessagingSession.get(work_item)
    assert (session["Status"], session["OwnerId"]) == ("Active", ALICE)
    assert changes(sf_sandbox, mark) == [
        ("AgentWork", "CREATE", work_id),
        ("PendingServiceRouting", "UPDATE", psr_id),
        ("AgentWork", "UPDATE", work_id),
        ("PendingServiceRouting", "DELETE", psr_id),
    ]


@pytest.mark.parametrize(
    ("act", "status"),
    [
        ("decline", "Declined"),
        ("push_timeout", "DeclinedOnPushTimeout"),
        ("clock", "DeclinedOnPushTimeout"),
        ("offline", "Unavailable"),
    ],
)
def test_work_not_taken_hands_the_psr_back(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce, act: str, status: str
) -> None:
    work_item, psr_id = start(sf_sandbox)
    work_id = assign(sf_client, work_item, psr_id, ALICE)
    mark = sf_sandbox.org.changes.latest_replay_id
    if act == "decline":
        sf_sandbox.control.decline(work_id, reason="Busy with another customer")
    elif act == "push_timeout":
        sf_sandbox.control.push_timeout(work_id)
    elif act == "clock":
        sf_sandbox.control.advance_clock(seed.DEFAULT_PUSH_TIMEOUT_SECONDS - 5)
        assert work_of(sf_client, work_id)["Status"] == "Assigned"
        sf_sandbox.control.advance_clock(10)
    else:
        sf_sandbox.control.set_presence(ALICE, online=False)

    work = work_of(sf_client, work_id)
    assert work["Status"] == status
    if act == "decline":
        assert work["DeclineReason"] == "Busy with another customer"
    psr = psr_of(sf_client, psr_id)
    assert (psr["IsPushed"], psr["Serial"]) == (False, 2)
    assert psr["LastDeclinedAgentSession"] == agent_session_id(ALICE)
    assert ("PendingServiceRouting", "UPDATE", psr_id) in changes(sf_sandbox, mark)
    assert ("AgentWork", "UPDATE", work_id) in changes(sf_sandbox, mark)
    # The partner routes again, to somebody else.
    again = assign(sf_client, work_item, psr_id, BOB)
    assert work_of(sf_client, again)["Status"] == "Assigned"
    assert psr_of(sf_client, psr_id)["IsPushed"] is True


def test_transfer_to_external_queue_creates_a_transfer_psr(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    work_item, psr_id = start(sf_sandbox)
    work_id = assign(sf_client, work_item, psr_id, ALICE)
    sf_sandbox.control.accept(work_id)
    mark = sf_sandbox.org.changes.latest_replay_id

    new_psr = sf_sandbox.control.transfer_to_queue(work_id, "Billing_External")

    assert work_of(sf_client, work_id)["Status"] == "Transferred"
    [psr] = open_psrs(sf_client, work_item)
    assert psr["Id"] == new_psr["Id"] != psr_id
    assert (psr["QueueId"], psr["IsTransfer"], psr["IsPushed"], psr["Serial"]) == (
        BILLING,
        True,
        False,
        0,
    )
    assert changes(sf_sandbox, mark) == [
        ("AgentWork", "UPDATE", work_id),
        ("PendingServiceRouting", "CREATE", psr["Id"]),
    ]


def test_transfer_to_agent_adds_a_second_agent_work_and_no_psr(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    work_item, psr_id = start(sf_sandbox)
    first = assign(sf_client, work_item, psr_id, ALICE)
    sf_sandbox.control.accept(first)

    second = sf_sandbox.control.transfer_to_agent(first, BOB)["Id"]

    assert works_on(sf_client, work_item) == [(ALICE, "Opened"), (BOB, "Assigned")]
    assert open_psrs(sf_client, work_item) == []
    sf_sandbox.control.accept(second)
    assert works_on(sf_client, work_item) == [(ALICE, "Opened"), (BOB, "Opened")]
    assert sf_client.MessagingSession.get(work_item)["OwnerId"] == BOB


def test_close_ends_the_conversation(sf_sandbox: SalesforceSandbox, sf_client: Salesforce) -> None:
    work_item, psr_id = start(sf_sandbox)
    work_id = assign(sf_client, work_item, psr_id, ALICE)
    sf_sandbox.control.accept(work_id)
    sf_sandbox.control.close(work_id)
    work = work_of(sf_client, work_id)
    assert work["Status"] == "Closed"
    assert work["CloseDateTime"]
    assert sf_client.MessagingSession.get(work_item)["Status"] == "Ended"


def test_case_work_item_closes_as_case(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    started = sf_sandbox.control.start_conversation("Support_External", channel="Case")
    work_item, psr_id = started["work_item_id"], started["psr_id"]
    assert work_item.startswith("500")
    case_channel = seed.CHANNELS[1].sf_service_channel_id
    work_id = assign(sf_client, work_item, psr_id, ALICE, ServiceChannelId=case_channel)
    sf_sandbox.control.accept(work_id)
    sf_sandbox.control.close(work_id)
    case = sf_client.Case.get(work_item)
    assert (case["Status"], case["OwnerId"], case["IsClosed"]) == ("Closed", ALICE, True)


def test_abandon_leaves_the_orphaned_psr(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    work_item, psr_id = start(sf_sandbox)
    work_id = assign(sf_client, work_item, psr_id, ALICE)

    sf_sandbox.control.abandon(work_item)

    assert sf_client.MessagingSession.get(work_item)["Status"] == "Ended"
    assert work_of(sf_client, work_id)["Status"] == "Canceled"
    assert [p["Id"] for p in open_psrs(sf_client, work_item)] == [psr_id]
    # The partner cleans it up.
    sf_client.PendingServiceRouting.delete(psr_id)
    assert open_psrs(sf_client, work_item) == []
    with pytest.raises(SalesforceMalformedRequest) as refused:
        assign(sf_client, work_item, None, BOB)
    assert error_code(refused) == "FIELD_INTEGRITY_EXCEPTION"
    assert "has ended" in refused.value.content[0]["message"]


def test_offline_user_cannot_receive_work(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    sf_sandbox.control.set_presence(CAROL, online=False)
    work_item, psr_id = start(sf_sandbox)
    with pytest.raises(SalesforceMalformedRequest) as refused:
        assign(sf_client, work_item, psr_id, CAROL)
    assert error_code(refused) == "FIELD_INTEGRITY_EXCEPTION"
    assert "not online" in refused.value.content[0]["message"]
    sf_sandbox.control.set_presence(CAROL, online=True)
    assert work_of(sf_client, assign(sf_client, work_item, psr_id, CAROL))["Status"] == "Assigned"


def test_capacity_is_checked_unless_skipped(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    sf_sandbox.control.set_presence(DAN, online=True, capacity=1)
    first_item, first_psr = start(sf_sandbox)
    assign(sf_client, first_item, first_psr, DAN)
    second_item, second_psr = start(sf_sandbox)
    with pytest.raises(SalesforceMalformedRequest) as refused:
        assign(sf_client, second_item, second_psr, DAN)
    assert "capacity" in refused.value.content[0]["message"]
    skipped = assign(sf_client, second_item, second_psr, DAN, ShouldSkipCapacityCheck=True)
    assert work_of(sf_client, skipped)["Status"] == "Assigned"


def test_a_pushed_psr_takes_no_second_agent_work(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    work_item, psr_id = start(sf_sandbox)
    assign(sf_client, work_item, psr_id, ALICE)
    with pytest.raises(SalesforceMalformedRequest) as refused:
        assign(sf_client, work_item, psr_id, BOB)
    assert error_code(refused) == "FIELD_INTEGRITY_EXCEPTION"
    assert works_on(sf_client, work_item) == [(ALICE, "Assigned")]


def test_agent_work_fields_cannot_be_updated(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    work_item, psr_id = start(sf_sandbox)
    work_id = assign(sf_client, work_item, psr_id, ALICE)
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf_client.AgentWork.update(work_id, {"OwnerId": BOB})
    assert error_code(refused) == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert work_of(sf_client, work_id)["OwnerId"] == ALICE


@pytest.mark.parametrize(
    ("steps", "deletable"),
    [
        ((), False),
        (("accept",), False),
        (("decline",), True),
        (("push_timeout",), False),
        (("offline",), True),
        (("accept", "close"), True),
    ],
)
def test_agent_work_is_deletable_only_when_closed_declined_or_unavailable(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce, steps: tuple[str, ...], deletable: bool
) -> None:
    work_item, psr_id = start(sf_sandbox)
    work_id = assign(sf_client, work_item, psr_id, ALICE)
    for step in steps:
        if step == "offline":
            sf_sandbox.control.set_presence(ALICE, online=False)
        else:
            getattr(sf_sandbox.control, step)(work_id)
    if deletable:
        sf_client.AgentWork.delete(work_id)
        assert sf_client.query(f"SELECT Id FROM AgentWork WHERE Id = '{work_id}'")["totalSize"] == 0
    else:
        with pytest.raises(SalesforceMalformedRequest) as refused:
            sf_client.AgentWork.delete(work_id)
        assert error_code(refused) == "DELETE_FAILED"


def test_psr_ready_for_routing_cannot_be_edited_but_can_be_deleted(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    work_item, psr_id = start(sf_sandbox)
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf_client.PendingServiceRouting.update(psr_id, {"RoutingPriority": 5})
    assert error_code(refused) == "FIELD_INTEGRITY_EXCEPTION"
    mark = sf_sandbox.org.changes.latest_replay_id
    sf_client.PendingServiceRouting.delete(psr_id)
    assert open_psrs(sf_client, work_item) == []
    assert changes(sf_sandbox, mark) == [("PendingServiceRouting", "DELETE", psr_id)]


def test_psr_created_over_rest_takes_its_queue_configuration(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    work_item, psr_id = start(sf_sandbox)
    sf_client.PendingServiceRouting.delete(psr_id)
    created = sf_client.PendingServiceRouting.create(
        {
            "WorkItemId": work_item,
            "ServiceChannelId": MESSAGING,
            "GroupId": BILLING,
            "IsReadyForRouting": False,
        }
    )
    psr = psr_of(sf_client, created["id"])
    assert (psr["QueueId"], psr["RoutingModel"], psr["PushTimeout"]) == (
        BILLING,
        "ExternalRouting",
        seed.DEFAULT_PUSH_TIMEOUT_SECONDS,
    )
    sf_client.PendingServiceRouting.update(psr["Id"], {"IsReadyForRouting": True})
    assert psr_of(sf_client, psr["Id"])["IsReadyForRouting"] is True
    with pytest.raises(SalesforceMalformedRequest) as duplicate:
        sf_client.PendingServiceRouting.create(
            {"WorkItemId": work_item, "ServiceChannelId": MESSAGING, "GroupId": SUPPORT}
        )
    assert error_code(duplicate) == "DUPLICATE_VALUE"


def test_omni_routed_queue_assigns_the_most_available_agent(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    for user, capacity in ((ALICE, 2), (BOB, 4), (CAROL, 9), (DAN, 3)):
        sf_sandbox.control.set_presence(user, online=True, capacity=capacity)
    work_item, psr_id = start(sf_sandbox, "SN_Overflow")
    assert works_on(sf_client, work_item) == [(CAROL, "Assigned")]
    assert psr_of(sf_client, psr_id)["IsPushed"] is True


def test_omni_routed_queue_reroutes_and_waits_for_an_agent(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    for user in (BOB, CAROL, DAN):
        sf_sandbox.control.set_presence(user, online=False)
    work_item, psr_id = start(sf_sandbox, "SN_Overflow")
    [(user, _)] = works_on(sf_client, work_item)
    assert user == ALICE
    first = sf_client.query(f"SELECT Id FROM AgentWork WHERE WorkItemId = '{work_item}'")
    sf_sandbox.control.decline(first["records"][0]["Id"])
    # Nobody else is online and Alice declined: the PSR waits.
    assert works_on(sf_client, work_item) == [(ALICE, "Declined")]
    assert psr_of(sf_client, psr_id)["IsPushed"] is False
    sf_sandbox.control.set_presence(DAN, online=True)
    assert works_on(sf_client, work_item) == [(ALICE, "Declined"), (DAN, "Assigned")]
    dan_work = sf_sandbox.control.agent_work_for(DAN)[-1]["Id"]
    sf_sandbox.control.advance_clock(seed.DEFAULT_PUSH_TIMEOUT_SECONDS + 1)
    assert works_on(sf_client, work_item) == [(ALICE, "Declined"), (DAN, "DeclinedOnPushTimeout")]
    sf_sandbox.control.set_presence(BOB, online=True)
    bob_work = sf_sandbox.control.agent_work_for(BOB)[-1]["Id"]
    sf_sandbox.control.accept(bob_work)
    assert dan_work != bob_work
    assert open_psrs(sf_client, work_item) == []
    assert sf_client.MessagingSession.get(work_item)["OwnerId"] == BOB


def test_omni_routed_queue_waits_for_free_capacity(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    for user in (BOB, CAROL, DAN):
        sf_sandbox.control.set_presence(user, online=False)
    sf_sandbox.control.set_presence(ALICE, online=True, capacity=1)
    first_item, _ = start(sf_sandbox, "SN_Overflow")
    second_item, _ = start(sf_sandbox, "SN_Overflow")
    assert works_on(sf_client, second_item) == []
    [first_work] = sf_sandbox.control.agent_work_for(ALICE)
    sf_sandbox.control.accept(first_work["Id"])
    sf_sandbox.control.close(first_work["Id"])
    assert works_on(sf_client, second_item) == [(ALICE, "Assigned")]
    assert works_on(sf_client, first_item) == [(ALICE, "Closed")]


def test_psr_serial_moves_only_when_the_org_changes_it(
    sf_sandbox: SalesforceSandbox, sf_client: Salesforce
) -> None:
    _, psr_id = start(sf_sandbox)
    sf_sandbox.org.update("PendingServiceRouting", psr_id, {"IsPushed": False}, system=True)
    assert psr_of(sf_client, psr_id)["Serial"] == 0
    sf_sandbox.org.update("PendingServiceRouting", psr_id, {"RoutingPriority": 3}, system=True)
    assert psr_of(sf_client, psr_id)["Serial"] == 1
