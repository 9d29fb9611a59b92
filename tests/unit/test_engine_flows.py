"""Engine behaviour beyond rule selection: commands' parameters, the two-agent guard, echo
suppression, re-offer limit and fallback, bad input, idempotency, command answers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from engine_builders import (
    ALICE,
    AW_ALICE,
    AW_BOB,
    AW_SN,
    AWI_1,
    AWI_OLD,
    AWI_SN,
    BILLING,
    BOB,
    CAROL,
    DAN,
    DOC,
    INTERACTION,
    OVERFLOW,
    PSR,
    PSR_SN,
    PSR_TRANSFER,
    SEG_1,
    SEG_2,
    SF2SN_ID,
    SUPPORT,
    WI,
    WI_SN,
    agent_work,
    awa,
    event,
    interaction,
    psr,
    reconciled,
    sf2sn,
    sn2sf,
    with_data,
)

from bridge.domain import (
    Command,
    Correlation,
    CorrelationState,
    EventKind,
    EventOutcome,
    Operation,
    SegmentOutcome,
    System,
    Trigger,
)
from bridge.domain.mapping import Tables, load_tables
from bridge.engine import apply_result, classify, correlation_keys, translate
from bridge.engine.builders import spread
from bridge_sandbox.salesforce.ids import make_id, to15

S = CorrelationState
ALL_SN = [a.sn_user_sys_id for a in (ALICE, BOB, CAROL, DAN)]


@pytest.fixture(scope="module")
def tables() -> Tables:
    return load_tables()


def with_policies(tables: Tables, **changes: Any) -> Tables:
    return Tables(tables.crosswalk, tables.policies.model_copy(update=changes), tables.rules)


def ops(decision: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.operation.value, dict(c.params)) for c in decision.commands]


# --- the happy path, both directions ---------------------------------------------------


def test_sf_to_sn_accept_lifecycle(tables: Tables) -> None:
    opened = translate(psr(), None, tables)
    corr = opened.correlation
    assert corr is not None
    assert corr.state is S.OFFERED
    (create, create_params), (offer, offer_params) = ops(opened)
    assert create == "create_interaction"
    assert create_params["record"]["correlation_id"] == WI
    assert create_params["record"]["sys_id"] == INTERACTION == corr.sn_document_sys_id
    assert offer == "offer"
    assert sorted(offer_params["candidates"]) == sorted(ALL_SN)
    assert offer_params["timeout"] == 30
    assert offer_params["queue_id"] == SUPPORT.sn_queue_sys_id
    assert offer_params["external_segment_id"] == SEG_1
    assert [s.external_segment_id for s in opened.segments_added] == [SEG_1]

    answered = apply_result(
        corr,
        opened.commands[1],
        {"sys_id": AWI_1, "assigned_to": ALICE.sn_user_sys_id},
    )
    corr = answered.correlation
    assert corr is not None
    assert corr.segments[0].sn_user_sys_id == ALICE.sn_user_sys_id

    accepted = translate(awa("accepted", assigned_to=ALICE.sn_user_sys_id), corr, tables)
    assert ops(accepted) == [
        (
            "create_agent_work",
            {
                "UserId": ALICE.sf_user_id,
                "WorkItemId": WI,
                "PendingServiceRoutingId": PSR,
                "ServiceChannelId": corr.sf_service_channel_id,
                "CapacityWeight": 1.0,
            },
        )
    ]
    corr = accepted.correlation
    assert corr is not None
    corr = apply_result(corr, accepted.commands[0], {"id": AW_ALICE, "success": True}).correlation
    assert corr is not None
    assert corr.sf_agent_work_id == AW_ALICE

    own = translate(agent_work("Assigned"), corr, tables)
    assert own.outcome is EventOutcome.ECHO
    assert own.commands == ()
    corr = own.correlation
    assert corr is not None
    active = translate(agent_work("Opened"), corr, tables)
    assert active.correlation is not None
    assert active.correlation.state is S.ACTIVE
    assert [s.outcome for s in active.segments_updated] == [SegmentOutcome.ACCEPTED]


def test_sn_to_sf_route_accept_close(tables: Tables) -> None:
    queued = awa(
        "queued", sys_id=AWI_SN, queue=OVERFLOW.sn_queue_sys_id, document_id=DOC, segment=""
    )
    routed = translate(queued, None, tables)
    assert ops(routed) == [
        (
            "route",
            {
                "conversationIdentifier": DOC,
                "routingType": "Initial",
                "routingInfo": {"queueId": OVERFLOW.sf_queue_id},
            },
        )
    ]
    corr = routed.correlation
    assert corr is not None
    corr = apply_result(
        corr, routed.commands[0], {"psrId": to15(PSR_SN), "workItemId": WI_SN}
    ).correlation
    assert corr is not None
    assert (corr.sf_psr_id, corr.sf_work_item_id) == (PSR_SN, WI_SN)

    aw = {"aw_id": AW_SN, "work_item": WI_SN, "psr_id": PSR_SN}
    assigned = translate(agent_work("Assigned", **aw), corr, tables)
    (segment,) = assigned.segments_added
    assert (segment.kind, segment.sf_user_id, segment.sn_user_sys_id) == (
        "route",
        ALICE.sf_user_id,
        ALICE.sn_user_sys_id,
    )
    corr = assigned.correlation
    assert corr is not None
    opened = translate(agent_work("Opened", **aw), corr, tables)
    (offer,) = ops(opened)
    assert offer[1]["candidates"] == [ALICE.sn_user_sys_id]
    assert offer[1]["enable_auto_assign"] is True
    corr = opened.correlation
    assert corr is not None
    seg = corr.segments[0].external_segment_id
    echo = translate(
        awa(
            "accepted",
            sys_id=AWI_SN,
            queue=OVERFLOW.sn_queue_sys_id,
            document_id=DOC,
            segment=seg,
            assigned_to=ALICE.sn_user_sys_id,
        ),
        corr,
        tables,
    )
    assert echo.outcome is EventOutcome.ECHO
    closed = translate(interaction("closed_complete", DOC), corr, tables)
    assert ops(closed) == [
        (
            "update_agent_work",
            {
                "workId": to15(AW_SN),
                "workItemId": to15(WI_SN),
                "status": "Close",
                "contextType": "Agent",
            },
        )
    ]


# --- two-agent guard -------------------------------------------------------------------


def test_guard_cancels_assigned_agent_work_of_another_user(tables: Tables) -> None:
    corr = sf2sn(S.OFFERED)
    corr = with_data(
        corr,
        agent_work={AW_ALICE: {"user": ALICE.sf_user_id, "status": "Assigned", "own": True}},
    )
    decision = translate(awa("accepted", assigned_to=BOB.sn_user_sys_id), corr, tables)
    assert [op for op, _ in ops(decision)] == ["update_agent_work", "create_agent_work"]
    cancel, create = ops(decision)
    assert cancel[1]["workId"] == to15(AW_ALICE)
    assert cancel[1]["status"] == "Cancel"
    assert create[1]["UserId"] == BOB.sf_user_id
    # The cancel the bridge asked for comes back as an echo.
    after = decision.correlation
    assert after is not None
    assert translate(agent_work("Canceled"), after, tables).outcome is EventOutcome.ECHO


def test_guard_leaves_the_same_users_agent_work(tables: Tables) -> None:
    corr = sf2sn(S.OFFERED)
    corr = with_data(
        corr,
        agent_work={AW_ALICE: {"user": ALICE.sf_user_id, "status": "Assigned", "own": True}},
    )
    decision = translate(awa("accepted", assigned_to=ALICE.sn_user_sys_id), corr, tables)
    assert [op for op, _ in ops(decision)] == ["create_agent_work"]


def test_guard_cancels_a_pending_offer_before_a_new_one(tables: Tables) -> None:
    corr = sf2sn(S.OFFERED)
    items = {
        AWI_OLD: {"user": CAROL.sn_user_sys_id, "state": "pending_accept", "active": True},
    }
    corr = with_data(corr, work_items=items)
    decision = translate(awa("queued", timed_out=True), corr, tables)
    assert [op for op, _ in ops(decision)] == ["cancel_work_item", "offer"]
    assert ops(decision)[0][1] == {"sys_id": AWI_OLD, "cancel_reason": "manually_assigned"}


# --- echo suppression ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "before", "ev"),
    [
        ("own interaction", sf2sn(S.OFFERED), interaction("on_hold")),
        ("own offer", sf2sn(S.OFFERED), awa("pending_accept", assigned_to=ALICE.sn_user_sys_id)),
        (
            "own AgentWork (by work item and user)",
            with_data(
                sf2sn(S.ASSIGNING),
                agent_work={},
                expect=[f"agent_work:{WI}:{ALICE.sf_user_id}:Assigned"],
            ),
            agent_work("Assigned"),
        ),
        (
            "own close",
            with_data(
                sf2sn(S.CLOSED),
                expect=[f"interaction:{INTERACTION}:closed_complete"],
            ),
            interaction("closed_complete"),
        ),
    ],
)
def test_echo(name: str, before: Correlation, ev: Any, tables: Tables) -> None:
    decision = translate(ev, before, tables)
    assert decision.outcome is EventOutcome.ECHO, name
    assert decision.commands == ()
    assert decision.correlation is not None
    assert decision.correlation.state == before.state


def test_echo_learns_the_agent_work_id(tables: Tables) -> None:
    corr = sf2sn(S.ASSIGNING)
    corr = replace(
        with_data(corr, agent_work={}, expect=[f"agent_work:{WI}:{ALICE.sf_user_id}:Assigned"]),
        sf_agent_work_id=None,
    )
    decision = translate(agent_work("Assigned"), corr, tables)
    assert decision.correlation is not None
    assert decision.correlation.sf_agent_work_id == AW_ALICE
    assert decision.correlation.data.agent_work[AW_ALICE].own is True


def test_foreign_agent_work_is_a_transfer_not_an_echo(tables: Tables) -> None:
    decision = translate(
        agent_work("Assigned", aw_id=AW_BOB, user=BOB.sf_user_id), sf2sn(S.ACTIVE), tables
    )
    assert decision.outcome is EventOutcome.PROCESSED
    assert decision.correlation is not None
    assert decision.correlation.state is S.TRANSFERRING
    assert [s.seq for s in decision.segments_added] == [2]
    # AWA follows when Bob accepts: the work item goes to him then, accepted
    accepted = translate(
        agent_work("Opened", aw_id=AW_BOB, user=BOB.sf_user_id), decision.correlation, tables
    )
    (transfer,) = ops(accepted)
    assert transfer[1]["candidates"] == [BOB.sn_user_sys_id]
    assert transfer[1]["target_type"] == "agent"
    assert transfer[1]["enable_auto_assign"] is True
    assert transfer[1]["external_segment_id"] == SEG_2


# --- re-offer limit and fallback -------------------------------------------------------


def test_reoffer_excludes_who_rejected(tables: Tables) -> None:
    decision = translate(awa("queued", rejected=True), sf2sn(S.OFFERED), tables)
    (offer,) = ops(decision)
    assert sorted(offer[1]["candidates"]) == sorted(ALL_SN[1:])
    assert offer[1]["excluded"] == [ALICE.sn_user_sys_id]
    updated = {s.seq: s.outcome for s in decision.segments_updated}
    assert updated == {1: SegmentOutcome.DECLINED}
    assert [s.seq for s in decision.segments_added] == [2]


def test_reoffer_limit_moves_to_the_fallback_queue(tables: Tables) -> None:
    limited = with_policies(tables, reoffer_limit=1)
    decision = translate(awa("queued", rejected=True), sf2sn(S.OFFERED), limited)
    (offer,) = ops(decision)
    assert offer[1]["queue_id"] == BILLING.sn_queue_sys_id
    assert decision.segments_added[0].sn_queue_sys_id == BILLING.sn_queue_sys_id


def test_reoffer_stops_when_nobody_is_left(tables: Tables) -> None:
    corr = sf2sn(S.OFFERED)
    corr = with_data(corr, excluded=ALL_SN[1:])
    decision = translate(awa("queued", rejected=True), corr, tables)
    assert decision.outcome is EventOutcome.ERROR
    assert decision.reason is not None
    assert "no agent left to offer to on Support, Billing" in decision.reason


def test_stale_reject_of_an_earlier_offer_is_skipped(tables: Tables) -> None:
    decision = translate(awa("queued", rejected=True, segment=SEG_2), sf2sn(S.OFFERED), tables)
    assert decision.outcome is EventOutcome.SKIPPED
    assert decision.reason is not None
    assert "stale" in decision.reason


def test_timeout_default_when_the_psr_has_none(tables: Tables) -> None:
    record = dict(psr().record, PushTimeout=0)
    decision = translate(event(EventKind.PSR, record), None, tables)
    assert ops(decision)[1][1]["timeout"] == tables.policies.offer_timeout_default


def test_transfer_to_external_queue_moves_the_correlation(tables: Tables) -> None:
    ev = psr(psr_id=PSR_TRANSFER, queue=BILLING.sf_queue_id, transfer=True)
    decision = translate(ev, sf2sn(S.ACTIVE), tables)
    corr = decision.correlation
    assert corr is not None
    assert (corr.sf_psr_id, corr.sf_queue_id) == (PSR_TRANSFER, BILLING.sf_queue_id)
    assert corr.sn_queue_sys_id == BILLING.sn_queue_sys_id
    (transfer, offer) = ops(decision)
    assert transfer[1]["source_queue_id"] == SUPPORT.sn_queue_sys_id
    assert (transfer[1]["target_type"], transfer[1]["target_id"]) == (
        "queue",
        BILLING.sn_queue_sys_id,
    )
    # offered on Billing to anyone but Alice, who transferred it away
    assert offer[1]["queue_id"] == BILLING.sn_queue_sys_id
    assert sorted(offer[1]["candidates"]) == sorted(ALL_SN[1:])
    assert decision.segments_updated[0].outcome is SegmentOutcome.TRANSFERRED


def test_abandon_deletes_the_orphaned_psr_by_policy(tables: Tables) -> None:
    rest = translate(
        event(EventKind.WORK_ITEM, {"Id": WI, "Status": "Ended"}), sf2sn(S.OFFERED), tables
    )
    assert ops(rest)[-1] == ("delete_psr", {"id": PSR})
    route_api = with_policies(tables, orphan_psr_deletion="route_api")
    corr = replace(sf2sn(S.OFFERED), sf_conversation_id="conv-1")
    byo = translate(event(EventKind.WORK_ITEM, {"Id": WI, "Status": "Ended"}), corr, route_api)
    assert ops(byo)[-1] == (
        "cancel_route",
        {"conversationIdentifier": "conv-1", "cancelReason": "Cancel"},
    )
    # closing the interaction cancels its pending work item in AWA: no call of its own
    assert [op for op, _ in ops(rest)] == ["close_interaction", "delete_psr"]


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "before", "ev", "outcome", "reason"),
    [
        (
            "unknown AgentWork status",
            sf2sn(S.ACTIVE),
            agent_work("Snoozed"),
            "error",
            "unknown Status 'Snoozed'",
        ),
        ("unknown AgentWork code", sf2sn(S.ACTIVE), agent_work(9), "error", "unknown Status 9"),
        (
            "unknown work item state",
            sf2sn(S.OFFERED),
            awa("parked"),
            "error",
            "unknown state 'parked'",
        ),
        (
            "unknown interaction state",
            sf2sn(S.ACTIVE),
            interaction("frozen"),
            "error",
            "unknown state 'frozen'",
        ),
        (
            "PSR without Id",
            None,
            event(EventKind.PSR, {"QueueId": SUPPORT.sf_queue_id}),
            "error",
            "field Id missing",
        ),
        (
            "PSR with a bad id",
            None,
            event(EventKind.PSR, {"Id": "nope"}),
            "error",
            "field Id is not a Salesforce id",
        ),
        (
            "bad boolean",
            None,
            event(EventKind.PSR, {**psr().record, "IsPushed": "maybe"}),
            "error",
            "field IsPushed is not a boolean",
        ),
        (
            "unmapped queue",
            None,
            psr(queue=make_id("00G", 77)),
            "error",
            f"Salesforce queue {make_id('00G', 77)} is not mapped",
        ),
        (
            "unmapped AWA queue",
            None,
            awa("queued", queue="f" * 32),
            "error",
            f"AWA queue {'f' * 32} is not mapped",
        ),
        (
            "unmapped channel",
            None,
            psr(channel=make_id("0N9", 9)),
            "error",
            f"service channel {make_id('0N9', 9)} is not mapped",
        ),
        (
            "unmapped agent",
            sf2sn(S.TRANSFERRING),
            agent_work("Opened", aw_id=AW_BOB, user=make_id("005", 50)),
            "error",
            f"Salesforce user {make_id('005', 50)} is not mapped",
        ),
        (
            "unmapped ServiceNow agent accepts",
            sf2sn(S.OFFERED),
            awa("accepted", assigned_to="e" * 32),
            "error",
            f"ServiceNow user {'e' * 32} accepted but is not mapped",
        ),
        (
            "AgentWork of no conversation",
            None,
            agent_work("Opened"),
            "skipped",
            "belongs to no conversation",
        ),
        (
            "interaction of no conversation",
            None,
            interaction("closed_complete"),
            "skipped",
            "belongs to no conversation",
        ),
        (
            "transfer to a queue routed the other way",
            sf2sn(S.ACTIVE),
            psr(psr_id=PSR_TRANSFER, queue=OVERFLOW.sf_queue_id, transfer=True),
            "error",
            "which routes sn_to_sf",
        ),
    ],
)
def test_bad_input(
    name: str, before: Correlation | None, ev: Any, outcome: str, reason: str, tables: Tables
) -> None:
    decision = translate(ev, before, tables)
    assert decision.outcome == outcome, name
    assert decision.reason is not None
    assert reason in decision.reason, decision.reason
    assert decision.commands == ()


def test_no_rule_is_an_error(tables: Tables) -> None:
    rules = [r for r in tables.rules if r.id != "sf2sn.agent-work-closed"]
    sparse = Tables(tables.crosswalk, tables.policies, rules)
    decision = translate(agent_work("Closed"), sf2sn(S.ACTIVE), sparse)
    assert decision.outcome is EventOutcome.ERROR
    assert decision.reason == "no rule for sf_to_sn agent_work.closed in state active"


# --- determinism -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "ev"),
    [
        (None, psr()),
        (sf2sn(S.OFFERED), awa("queued", rejected=True)),
        (sf2sn(S.TRANSFERRING), agent_work("Opened", aw_id=AW_BOB, user=BOB.sf_user_id)),
        (sn2sf(S.ACTIVE), interaction("closed_complete", DOC)),
    ],
)
def test_same_input_same_decision(before: Correlation | None, ev: Any, tables: Tables) -> None:
    first = translate(ev, before, tables)
    second = translate(ev, before, tables)
    assert first == second
    keys = [c.idempotency_key for c in first.commands]
    assert keys
    assert len(set(keys)) == len(keys)
    corr_id = (first.correlation or before).id  # type: ignore[union-attr]
    assert all(k.startswith(f"{corr_id}:") for k in keys)


def test_new_correlation_id_is_derived_from_the_psr(tables: Tables) -> None:
    decision = translate(psr(), None, tables)
    assert decision.correlation is not None
    assert decision.correlation.id == SF2SN_ID


def test_translate_does_not_change_its_input(tables: Tables) -> None:
    before = sf2sn(S.OFFERED)
    snapshot = repr(before)
    translate(awa("queued", rejected=True), before, tables)
    assert repr(before) == snapshot


# --- classification and lookup keys ----------------------------------------------------


@pytest.mark.parametrize(
    ("ev", "trigger"),
    [
        (psr(), Trigger.PSR_CREATED),
        (psr(transfer=True), Trigger.PSR_CREATED_TRANSFER),
        (psr(pushed=True, serial=1), Trigger.PSR_PUSHED),
        (psr(serial=2, declined="0Xd5g0000000001"), Trigger.PSR_REQUEUED),
        (psr(transfer=True, serial=3), Trigger.PSR_REQUEUED),
        (event(EventKind.PSR_DELETED, {"Id": PSR}), Trigger.PSR_DELETED),
        (agent_work(0), Trigger.AGENT_WORK_ASSIGNED),
        (agent_work(5), Trigger.AGENT_WORK_DECLINED_ON_PUSH_TIMEOUT),
        (agent_work("Transferred"), Trigger.AGENT_WORK_TRANSFERRED),
        (event(EventKind.WORK_ITEM, {"Id": WI, "Status": "Closed"}), Trigger.SF_WORK_ITEM_ENDED),
        (event(EventKind.WORK_ITEM, {"Id": WI, "Status": "Active"}), Trigger.SF_WORK_ITEM_OPEN),
        (awa("queued"), Trigger.WORK_ITEM_QUEUED),
        (awa("queued", rejected=True), Trigger.WORK_ITEM_REJECTED),
        (awa("queued", timed_out=True), Trigger.WORK_ITEM_TIMED_OUT),
        (awa("pending_accept"), Trigger.WORK_ITEM_PENDING_ACCEPT),
        (awa("accepted"), Trigger.WORK_ITEM_ACCEPTED),
        (awa("accepted", active=False), Trigger.WORK_ITEM_CLOSED),
        (awa("canceled", active=False, cancel_reason="timeout"), Trigger.WORK_ITEM_CANCELED),
        (
            awa("canceled", active=False, cancel_reason="transfer_rejected"),
            Trigger.WORK_ITEM_TRANSFER_REJECTED,
        ),
        (interaction("wrap_up"), Trigger.INTERACTION_WRAP_UP),
        (
            event(
                EventKind.AWA_WORK_ITEM,
                {
                    "sys_id": {"value": AWI_1, "display_value": "AWI1"},
                    "state": {"value": "accepted"},
                    "active": {"value": "true"},
                },
            ),
            Trigger.WORK_ITEM_ACCEPTED,
        ),
    ],
)
def test_classify(ev: Any, trigger: Trigger) -> None:
    assert classify(ev, None) is trigger


@pytest.mark.parametrize(
    ("ev", "keys"),
    [
        (psr(work_item=to15(WI)), [PSR, WI]),
        (agent_work("Opened"), [AW_ALICE, PSR, WI]),
        (awa("accepted"), [SEG_1, AWI_1, INTERACTION]),
        (interaction("new"), [INTERACTION, WI]),
        (event(EventKind.PSR, {"Id": "junk"}), []),
    ],
)
def test_correlation_keys(ev: Any, keys: list[str]) -> None:
    assert correlation_keys(ev) == keys


# --- answers ---------------------------------------------------------------------------


def _command(operation: Operation, seq: int | None = 1, **params: Any) -> Command:
    return Command(operation.system, operation, params, f"k:{operation}", seq)


@pytest.mark.parametrize(
    ("name", "before", "command", "result", "check"),
    [
        (
            "offer answer names the agent and work item",
            sf2sn(S.OFFERED),
            _command(Operation.OFFER),
            {"sys_id": {"value": AWI_1}, "assigned_to": {"value": BOB.sn_user_sys_id}},
            lambda c: (
                (c.sn_work_item_sys_id, c.segments[0].sn_user_sys_id) == (AWI_1, BOB.sn_user_sys_id)
            ),
        ),
        (
            "AgentWork id, 15 chars in",
            sf2sn(S.ASSIGNING),
            _command(Operation.CREATE_AGENT_WORK, UserId=ALICE.sf_user_id),
            {"id": to15(AW_ALICE)},
            lambda c: c.sf_agent_work_id == AW_ALICE and c.data.agent_work[AW_ALICE].own,
        ),
        (
            "route answer ids",
            sn2sf(S.ROUTING),
            _command(Operation.ROUTE, None),
            {"psrId": PSR_SN, "workItemId": to15(WI_SN), "success": True},
            lambda c: (c.sf_psr_id, c.sf_work_item_id) == (PSR_SN, WI_SN),
        ),
        (
            "route answer's routing correlation id is kept for POST /agentWork",
            sn2sf(S.ROUTING),
            _command(Operation.ROUTE, None),
            {"psrId": PSR_SN, "routingCorrelationId": "rc-1", "success": True},
            lambda c: c.data.routing_correlation_id == "rc-1",
        ),
        (
            "POST /agentWork answer: agentWorkId, not the response's own id",
            sn2sf(S.ROUTING),
            _command(Operation.ASSIGN_AGENT_WORK, None, userId=ALICE.sf_user_id),
            {
                "id": "7f0c1a7e-3c1b-4e58-9d0a-2b1f0e9a5c11",
                "agentWorkId": AW_SN,
                "success": True,
            },
            lambda c: c.sf_agent_work_id == AW_SN,
        ),
        (
            "nothing to learn",
            sf2sn(S.ACTIVE),
            _command(Operation.CLOSE_INTERACTION),
            {},
            lambda c: c == sf2sn(S.ACTIVE),
        ),
    ],
)
def test_apply_result(
    name: str, before: Correlation, command: Command, result: dict[str, Any], check: Any
) -> None:
    decision = apply_result(before, command, result)
    assert decision.outcome is EventOutcome.PROCESSED, name
    assert decision.correlation is not None
    assert check(decision.correlation), name


@pytest.mark.parametrize(
    ("command", "result", "reason"),
    [
        (_command(Operation.OFFER), {"state": "pending_accept"}, "no work_item.sys_id"),
        (_command(Operation.CREATE_AGENT_WORK), {"success": True}, "no AgentWork id"),
        (_command(Operation.CREATE_AGENT_WORK), {"id": "not-an-id"}, "invalid id"),
    ],
)
def test_apply_result_bad_answer(command: Command, result: dict[str, Any], reason: str) -> None:
    decision = apply_result(sf2sn(S.OFFERED), command, result)
    assert decision.outcome is EventOutcome.ERROR
    assert decision.reason is not None
    assert reason in decision.reason


def test_commands_name_their_system(tables: Tables) -> None:
    decision = translate(psr(), None, tables)
    assert {c.system for c in decision.commands} == {System.SERVICENOW}
    assert all(c.segment_seq == 1 for c in decision.commands)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_offers_spread_over_the_queue_agents(n):
    """Each conversation prefers another agent first; all of them stay candidates."""
    agents = [f"agent{i}" for i in range(n)]
    firsts = {spread(agents, f"correlation-{k}")[0] for k in range(200)}
    assert firsts == set(agents)
    assert all(sorted(spread(agents, f"c{k}")) == agents for k in range(20))
    assert spread(agents, "same") == spread(agents, "same")


# --- what a reconciler's read left behind -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "before", "ev", "trigger"),
    [
        ("intake's PSR is a change, not an orphan", sf2sn(S.ABANDONED), psr(), "psr.created"),
        ("read PSR of an ended conversation", sf2sn(S.CLOSED), reconciled(psr()), "psr.orphaned"),
        ("read PSR still routing", sf2sn(S.OFFERED), reconciled(psr()), "psr.created"),
        (
            "read AgentWork the bridge made for another agent",
            replace(sf2sn(S.ACTIVE), sf_user_id=BOB.sf_user_id),
            reconciled(agent_work("Assigned")),
            "agent_work.still_assigned",
        ),
        (
            "read AgentWork Salesforce made: a transfer not yet seen",
            sf2sn(S.ACTIVE),
            reconciled(agent_work("Assigned", aw_id=AW_BOB, user=BOB.sf_user_id)),
            "agent_work.assigned",
        ),
        (
            "read AWA item pending for an ended conversation",
            sf2sn(S.ABANDONED),
            reconciled(awa("pending_accept")),
            "work_item.still_pending",
        ),
        (
            "read AWA item of a live offer",
            sf2sn(S.OFFERED),
            reconciled(awa("pending_accept")),
            "work_item.pending_accept",
        ),
        (
            "a deleted Salesforce work item has ended",
            sf2sn(S.OFFERED),
            event(EventKind.WORK_ITEM, {"Id": WI, "IsDeleted": True}),
            "sf_work_item.ended",
        ),
    ],
)
def test_left_behind(name: str, before: Correlation, ev: Any, trigger: str) -> None:
    assert classify(ev, before) == trigger, name


def test_what_was_left_behind_is_never_an_echo(tables: Tables) -> None:
    """The bridge expected its own offer's pending_accept; read after the end, it is drift."""
    decision = translate(reconciled(awa("pending_accept")), sf2sn(S.ABANDONED), tables)
    assert decision.outcome is EventOutcome.PROCESSED
    assert ops(decision) == [
        ("cancel_work_item", {"sys_id": AWI_1, "cancel_reason": "manually_assigned"})
    ]
