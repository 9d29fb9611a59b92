"""Skipped transitions: the engine reaches the right end state from any later snapshot.

A poll (or a catch-up read after an outage) shows only the latest state of a record: an
AgentWork read first as Opened, Closed or Transferred, a PSR deleted after the work moved
on, a Salesforce work item that ended after an agent took it. Each table row is a state, the
snapshots the intakes then deliver (in the order ``bridge/adapters/*/polling.py`` reads
them: PSRs, AgentWork, PSR deletions, Salesforce work items; then awa_work_item,
interaction) and the end state, commands and segment outcomes both systems call for.

The sweep at the end checks every (direction, state, AgentWork path) of the default rules:
reading the last snapshot alone ends where reading every intermediate one does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import pytest
from engine_builders import (
    ALICE,
    AW_ALICE,
    AW_BOB,
    AW_SN,
    AWI_SN,
    BILLING,
    BOB,
    DOC,
    OVERFLOW,
    PSR,
    PSR_SN,
    PSR_TRANSFER,
    SEG_2,
    SUPPORT,
    WI,
    WI_SN,
    awa,
    event,
    interaction,
    psr,
    psr_deleted,
    sf2sn,
    sn2sf,
    with_data,
)

from bridge.domain import (
    Correlation,
    CorrelationState,
    Decision,
    Event,
    EventKind,
    EventOutcome,
)
from bridge.domain.mapping import Tables, load_tables
from bridge.engine import translate
from bridge_sandbox.salesforce.ids import make_id

S = CorrelationState
AW_BOB_SN = make_id("0Bz", 4)  # Bob's AgentWork of the ServiceNow-started conversation
AWI_BOB = "3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e"  # the work item AWA made for Bob
ACCEPTED_AT = "2026-01-05T09:31:00.000Z"
CLOSED_AT = "2026-01-05T09:40:00.000Z"
# The statuses an AgentWork reaches only once it was accepted (AcceptDateTime is set).
ACCEPTED_STATUSES = ("Opened", "Closed", "Transferred")


@pytest.fixture(scope="module")
def tables() -> Tables:
    return load_tables()


def aw(
    status: str,
    *,
    aw_id: str = AW_ALICE,
    user: str = ALICE.sf_user_id,
    work_item: str = WI,
    psr_id: str = PSR,
) -> Event:
    """An AgentWork as a poll reads it: the date fields its status carries in the org."""
    record: dict[str, Any] = {
        "Id": aw_id,
        "UserId": user,
        "WorkItemId": work_item,
        "PendingServiceRoutingId": psr_id,
        "ServiceChannelId": "0N95g0000000001AAA",
        "Status": status,
        "AcceptDateTime": ACCEPTED_AT if status in ACCEPTED_STATUSES else None,
        "CloseDateTime": CLOSED_AT if status == "Closed" else None,
    }
    return event(EventKind.AGENT_WORK, record, f"agent_work:{aw_id}:{status}")


def sn_aw(status: str, *, aw_id: str = AW_SN, user: str = ALICE.sf_user_id) -> Event:
    return aw(status, aw_id=aw_id, user=user, work_item=WI_SN, psr_id=PSR_SN)


def ended(owner: str, work_item: str = WI) -> Event:
    """The Salesforce work item as the work item poll reads it: ended, and its owner (the
    queue while nobody accepted; the agent once one did)."""
    record = {"Id": work_item, "Status": "Ended", "OwnerId": owner}
    return event(EventKind.WORK_ITEM, record, f"work_item:{work_item}:Ended")


def transfer_psr() -> Event:
    return psr(psr_id=PSR_TRANSFER, queue=BILLING.sf_queue_id, transfer=True)


def assigning_after_transfer() -> Correlation:
    """Alice accepted, transferred to Billing; Bob accepted in AWA, his AgentWork Assigned."""
    return thread(
        sf2sn(S.ACTIVE),
        [
            transfer_psr(),
            awa("accepted", sys_id=AWI_BOB, assigned_to=BOB.sn_user_sys_id, segment=""),
        ],
    )


def thread(corr: Correlation, events: Sequence[Event], tables: Tables | None = None) -> Correlation:
    tables = tables or load_tables()
    for ev in events:
        decision = translate(ev, corr, tables)
        assert decision.correlation is not None, decision.reason
        corr = decision.correlation
    return corr


class Jump(NamedTuple):
    """``ops``: the commands of every snapshot, in order; a tuple of events instead: the
    changes a bridge reading every one would have seen (the commands must be those)."""

    name: str
    before: Callable[[], Correlation]
    snapshots: tuple[Event, ...]
    state: str
    ops: list[str] | tuple[Event, ...]
    outcomes: tuple[str | None, ...]
    check: Callable[[list[Decision]], bool] = lambda decisions: True


def read(corr: Correlation, events: Sequence[Event], tables: Tables) -> list[Decision]:
    """Every event through the engine in turn, none refused."""
    decisions: list[Decision] = []
    for ev in events:
        decision = translate(ev, corr, tables)
        assert decision.outcome is not EventOutcome.ERROR, decision.reason
        assert decision.correlation is not None, decision.reason
        decisions.append(decision)
        corr = decision.correlation
    return decisions


def ops_of(decisions: Sequence[Decision]) -> list[str]:
    return [c.operation.value for d in decisions for c in d.commands]


def _params(decisions: list[Decision], op: str) -> list[dict[str, Any]]:
    return [dict(c.params) for d in decisions for c in d.commands if c.operation.value == op]


def at(factory: Callable[[CorrelationState], Correlation], state: S) -> Callable[[], Correlation]:
    return lambda: factory(state)


JUMPS = [
    # ------------------------------------------------ sf_to_sn: the Salesforce agent's side
    Jump(
        "assigning: accepted unseen",
        at(sf2sn, S.ASSIGNING),
        (aw("Opened"), psr_deleted()),
        "active",
        [],
        ("accepted",),
    ),
    Jump(
        "assigning: accepted and closed while the bridge was down",
        at(sf2sn, S.ASSIGNING),
        (aw("Closed"), psr_deleted(), ended(ALICE.sf_user_id)),
        "closed",
        ["close_interaction"],
        ("closed",),
        lambda ds: _params(ds, "close_interaction")[0]["state"] == "closed_complete",
    ),
    Jump(
        "assigning: accepted and closed; the work item read before the AgentWork",
        at(sf2sn, S.ASSIGNING),
        (ended(ALICE.sf_user_id), aw("Closed"), psr_deleted()),
        "closed",
        ["close_interaction"],
        ("closed",),
        lambda ds: _params(ds, "close_interaction")[0]["state"] == "closed_complete",
    ),
    Jump(
        "assigning: the customer left before the agent accepted (owner still the queue)",
        at(sf2sn, S.ASSIGNING),
        (aw("Canceled"), ended(SUPPORT.sf_queue_id)),
        "abandoned",
        ["close_interaction", "delete_psr"],
        ("abandoned",),
    ),
    Jump(
        "assigning: the work item ended, owner still the queue, AgentWork not read yet",
        at(sf2sn, S.ASSIGNING),
        (ended(SUPPORT.sf_queue_id), aw("Canceled")),
        "abandoned",
        ["close_interaction", "delete_psr"],
        ("abandoned",),
    ),
    Jump(
        "assigning: accepted then transferred to a queue (PSR read first)",
        at(sf2sn, S.ASSIGNING),
        (transfer_psr(), aw("Transferred"), psr_deleted()),
        "offered",
        (aw("Opened"), psr_deleted(), transfer_psr(), aw("Transferred")),
        ("transferred", None),
        lambda ds: bool(_params(ds, "transfer")),
    ),
    Jump(
        "assigning: accepted then transferred to a queue (AgentWork read first)",
        at(sf2sn, S.ASSIGNING),
        (aw("Transferred"), psr_deleted(), transfer_psr()),
        "offered",
        (aw("Opened"), psr_deleted(), transfer_psr(), aw("Transferred")),
        ("transferred", None),
    ),
    Jump(
        "assigning: own AgentWork first read as Opened, before the create's answer",
        lambda: replace(
            with_data(
                sf2sn(S.ASSIGNING),
                agent_work={},
                expect=[f"agent_work:{WI}:{ALICE.sf_user_id}:Assigned"],
            ),
            sf_agent_work_id=None,
        ),
        (aw("Opened"),),
        "active",
        [],
        ("accepted",),
        lambda ds: (
            ds[-1].correlation is not None
            and ds[-1].correlation.sf_agent_work_id == AW_ALICE
            and ds[-1].correlation.data.agent_work[AW_ALICE].own
        ),
    ),
    Jump(
        "assigning after a transfer: customer left; the owner is the first agent",
        assigning_after_transfer,
        (
            aw("Canceled", aw_id=AW_BOB, user=BOB.sf_user_id, psr_id=PSR_TRANSFER),
            ended(ALICE.sf_user_id),
        ),
        "abandoned",
        ["close_interaction", "delete_psr"],
        ("transferred", "abandoned"),
        lambda ds: _params(ds, "delete_psr") == [{"id": PSR_TRANSFER}],
    ),
    Jump(
        "assigning after a transfer: the new agent accepted and closed unseen",
        assigning_after_transfer,
        (
            aw("Closed", aw_id=AW_BOB, user=BOB.sf_user_id, psr_id=PSR_TRANSFER),
            psr_deleted(PSR_TRANSFER),
            ended(BOB.sf_user_id),
        ),
        "closed",
        ["close_interaction"],
        ("transferred", "closed"),
    ),
    Jump(
        "offered: the old PSR's deletion read after the transfer PSR",
        lambda: thread(sf2sn(S.ASSIGNING), [transfer_psr()]),
        (psr_deleted(),),
        "offered",
        [],
        ("transferred", None),
        lambda ds: ds[-1].outcome is EventOutcome.SKIPPED,
    ),
    Jump(
        "active: transferred to another agent who accepted unseen",
        at(sf2sn, S.ACTIVE),
        (aw("Opened", aw_id=AW_BOB, user=BOB.sf_user_id, psr_id=""),),
        "active",
        (
            aw("Assigned", aw_id=AW_BOB, user=BOB.sf_user_id, psr_id=""),
            aw("Opened", aw_id=AW_BOB, user=BOB.sf_user_id, psr_id=""),
        ),
        ("transferred", "accepted"),
        lambda ds: (
            ds[-1].correlation is not None and ds[-1].correlation.sf_user_id == BOB.sf_user_id
        ),
    ),
    Jump(
        "active: transferred to another agent who accepted and closed unseen",
        at(sf2sn, S.ACTIVE),
        (
            aw("Closed", aw_id=AW_BOB, user=BOB.sf_user_id, psr_id=""),
            aw("Closed"),
            ended(BOB.sf_user_id),
        ),
        "closed",
        (
            aw("Assigned", aw_id=AW_BOB, user=BOB.sf_user_id, psr_id=""),
            aw("Opened", aw_id=AW_BOB, user=BOB.sf_user_id, psr_id=""),
            aw("Closed", aw_id=AW_BOB, user=BOB.sf_user_id, psr_id=""),
            aw("Closed"),
        ),
        ("transferred", "closed"),
    ),
    Jump(
        "active: a transfer to another agent declined unseen changes nothing",
        at(sf2sn, S.ACTIVE),
        (aw("Declined", aw_id=AW_BOB, user=BOB.sf_user_id, psr_id=""),),
        "active",
        [],
        ("accepted",),
    ),
    Jump(
        "active: closed",
        at(sf2sn, S.ACTIVE),
        (aw("Closed"), ended(ALICE.sf_user_id)),
        "closed",
        ["close_interaction"],
        ("closed",),
    ),
    Jump(
        "active: an AgentWork re-read in an earlier status is stale",
        at(sf2sn, S.ACTIVE),
        (aw("Assigned"),),
        "active",
        [],
        ("accepted",),
        lambda ds: ds[-1].outcome is EventOutcome.SKIPPED,
    ),
    Jump(
        "transferring: the new agent accepted and closed unseen",
        lambda: thread(sf2sn(S.ACTIVE), [aw("Assigned", aw_id=AW_BOB, user=BOB.sf_user_id)]),
        (aw("Closed", aw_id=AW_BOB, user=BOB.sf_user_id), aw("Closed")),
        "closed",
        (
            aw("Opened", aw_id=AW_BOB, user=BOB.sf_user_id),
            aw("Closed", aw_id=AW_BOB, user=BOB.sf_user_id),
            aw("Closed"),
        ),
        ("transferred", "closed"),
    ),
    Jump(
        "closed: late snapshots change nothing",
        at(sf2sn, S.CLOSED),
        (aw("Closed"), psr_deleted(), ended(ALICE.sf_user_id), interaction("closed_complete")),
        "closed",
        [],
        ("accepted",),
    ),
    Jump(
        "abandoned: late snapshots change nothing",
        at(sf2sn, S.ABANDONED),
        (aw("Canceled"), ended(SUPPORT.sf_queue_id)),
        "abandoned",
        [],
        ("accepted",),
    ),
    # ------------------------------------------------ sf_to_sn: the AWA agent's side
    Jump(
        "offered: work item first read accepted",
        at(sf2sn, S.OFFERED),
        (awa("accepted", assigned_to=ALICE.sn_user_sys_id),),
        "assigning",
        ["create_agent_work"],
        (None,),
    ),
    Jump(
        "offered: accepted, then transferred inside AWA and accepted there",
        at(sf2sn, S.OFFERED),
        (
            awa("accepted", active=False, assigned_to=ALICE.sn_user_sys_id),
            awa("accepted", sys_id=AWI_BOB, assigned_to=BOB.sn_user_sys_id, segment=""),
        ),
        "assigning",
        ["create_agent_work"],
        (None,),
        lambda ds: _params(ds, "create_agent_work")[0]["UserId"] == BOB.sf_user_id,
    ),
    Jump(
        "offered: accepted and the interaction closed in ServiceNow, unseen",
        at(sf2sn, S.OFFERED),
        (
            awa("canceled", active=False, assigned_to=ALICE.sn_user_sys_id),
            interaction("closed_complete"),
        ),
        "closed",
        [],
        ("cancelled",),
    ),
    Jump(
        "assigning: the interaction closed in ServiceNow before Salesforce accepted",
        at(sf2sn, S.ASSIGNING),
        (interaction("closed_complete"),),
        "closed",
        [],
        ("cancelled",),
    ),
    # ------------------------------------------------ sn_to_sf: the Salesforce agent's side
    Jump(
        "routing: Omni-Channel assigned and the agent accepted unseen (auto-accept)",
        at(sn2sf, S.ROUTING),
        (sn_aw("Opened"),),
        "active",
        ["offer"],
        ("accepted",),
        lambda ds: (
            _params(ds, "offer")[0]["candidates"] == [ALICE.sn_user_sys_id]
            and _params(ds, "offer")[0]["enable_auto_assign"] is True
            and ds[-1].correlation is not None
            and ds[-1].correlation.sf_agent_work_id == AW_SN
        ),
    ),
    Jump(
        "routing: assigned, accepted and closed unseen",
        at(sn2sf, S.ROUTING),
        (sn_aw("Closed"), ended(ALICE.sf_user_id, WI_SN)),
        "closed",
        ["offer", "close_interaction"],
        ("closed",),
        lambda ds: _params(ds, "close_interaction")[0]["state"] == "closed_complete",
    ),
    Jump(
        "routing: assigned, accepted and transferred unseen",
        at(sn2sf, S.ROUTING),
        (sn_aw("Transferred"),),
        "active",
        ["offer"],
        ("accepted",),
    ),
    Jump(
        "routing: assigned and declined unseen changes nothing",
        at(sn2sf, S.ROUTING),
        (sn_aw("Declined"),),
        "routing",
        [],
        (),
    ),
    Jump(
        "routing: the work item ended after an agent took it, AgentWork not read yet",
        at(sn2sf, S.ROUTING),
        (ended(ALICE.sf_user_id, WI_SN), sn_aw("Closed")),
        "closed",
        ["close_interaction"],
        (),
        lambda ds: _params(ds, "close_interaction")[0]["state"] == "closed_complete",
    ),
    Jump(
        "routing: the work item ended before anyone took it",
        at(sn2sf, S.ROUTING),
        (ended(OVERFLOW.sf_queue_id, WI_SN),),
        "abandoned",
        ["close_interaction"],
        (),
        lambda ds: _params(ds, "close_interaction")[0]["state"] == "closed_abandoned",
    ),
    Jump(
        "assigned: accepted and closed unseen",
        at(sn2sf, S.ASSIGNED),
        (sn_aw("Closed"), ended(ALICE.sf_user_id, WI_SN)),
        "closed",
        ["offer", "close_interaction"],
        ("closed",),
    ),
    Jump(
        "assigned: accepted and transferred unseen",
        at(sn2sf, S.ASSIGNED),
        (sn_aw("Transferred"),),
        "active",
        ["offer"],
        ("accepted",),
    ),
    Jump(
        "assigned: declined, then another agent accepted unseen",
        at(sn2sf, S.ASSIGNED),
        (sn_aw("Declined"), sn_aw("Opened", aw_id=AW_BOB_SN, user=BOB.sf_user_id)),
        "active",
        ["offer"],
        ("declined", "accepted"),
        lambda ds: _params(ds, "offer")[0]["candidates"] == [BOB.sn_user_sys_id],
    ),
    Jump(
        "assigned: the work item ended after the agent took it, AgentWork not read yet",
        at(sn2sf, S.ASSIGNED),
        (ended(ALICE.sf_user_id, WI_SN), sn_aw("Closed")),
        "closed",
        ["close_interaction"],
        ("closed",),
        lambda ds: _params(ds, "close_interaction")[0]["state"] == "closed_complete",
    ),
    Jump(
        "active: closed",
        at(sn2sf, S.ACTIVE),
        (sn_aw("Closed"),),
        "closed",
        ["close_interaction"],
        ("closed",),
    ),
    Jump(
        "active: an AgentWork re-read in an earlier status is stale",
        at(sn2sf, S.ACTIVE),
        (sn_aw("Assigned"),),
        "active",
        [],
        ("accepted",),
        lambda ds: ds[-1].outcome is EventOutcome.SKIPPED,
    ),
    Jump(
        "closed: late snapshots change nothing",
        at(sn2sf, S.CLOSED),
        (sn_aw("Closed"), ended(ALICE.sf_user_id, WI_SN), interaction("closed_complete", DOC)),
        "closed",
        [],
        ("accepted",),
    ),
    # ------------------------------------------------ sn_to_sf: the AWA side
    Jump(
        "routing: work item canceled in AWA (queue time-out)",
        at(sn2sf, S.ROUTING),
        (
            awa(
                "canceled",
                sys_id=AWI_SN,
                active=False,
                cancel_reason="timeout",
                queue=OVERFLOW.sn_queue_sys_id,
                document_id=DOC,
                segment="",
            ),
        ),
        "abandoned",
        ["cancel_route"],
        (),
    ),
    Jump(
        "active: work item first read accepted (the bridge's own auto-assigned offer)",
        lambda: thread(sn2sf(S.ROUTING), [sn_aw("Opened")]),
        (
            awa(
                "accepted",
                sys_id=AWI_SN,
                assigned_to=ALICE.sn_user_sys_id,
                queue=OVERFLOW.sn_queue_sys_id,
                document_id=DOC,
                segment="",
            ),
        ),
        "active",
        [],
        ("accepted",),
    ),
]


@pytest.mark.parametrize("jump", JUMPS, ids=[j.name for j in JUMPS])
def test_jump(jump: Jump, tables: Tables) -> None:
    decisions = read(jump.before(), jump.snapshots, tables)
    corr = decisions[-1].correlation
    assert corr is not None
    assert corr.state == jump.state
    if isinstance(jump.ops, list):
        assert ops_of(decisions) == jump.ops
    else:
        every = read(jump.before(), jump.ops, tables)
        assert ops_of(every), "the reference reading names commands"
        assert ops_of(decisions) == ops_of(every)
        assert every[-1].correlation is not None
        assert every[-1].correlation.state == jump.state
    assert tuple(s.outcome for s in corr.segments) == jump.outcomes
    assert jump.check(decisions)


def test_no_psr_delete_for_an_accepted_conversation(tables: Tables) -> None:
    """The PSR went with the acceptance: closing after it never asks to delete it."""
    for order in (
        (aw("Closed"), psr_deleted(), ended(ALICE.sf_user_id)),
        (ended(ALICE.sf_user_id), aw("Closed"), psr_deleted()),
        (psr_deleted(), ended(ALICE.sf_user_id), aw("Closed")),
    ):
        corr = sf2sn(S.ASSIGNING)
        ops: list[str] = []
        for snapshot in order:
            decision = translate(snapshot, corr, tables)
            assert decision.correlation is not None
            corr = decision.correlation
            ops += [c.operation.value for c in decision.commands]
        assert "delete_psr" not in ops, order
        assert corr.state is S.CLOSED


# --- second copies: a change read again through another stream, after others ------------


def again(ev: Event) -> Event:
    """The same change once more through another stream (another id: a change stream and
    the sweeper both read the row)."""
    return replace(ev, source_event_id=f"sweep:{ev.source_event_id}")


def sf2sn_declined_in_salesforce() -> Correlation:
    """Alice accepted the first offer in AWA, then declined the push in Salesforce: the
    engine offered the conversation again (segment 2)."""
    return thread(sf2sn(S.ASSIGNING), [aw("Declined")])


def sn2sf_bob_assigned_after_alice_declined() -> Correlation:
    """Alice declined in Omni-Channel; Omni pushed the work to Bob (segment 2)."""
    return thread(
        sn2sf(S.ASSIGNED),
        [sn_aw("Declined"), sn_aw("Assigned", aw_id=AW_BOB_SN, user=BOB.sf_user_id)],
    )


class Copy(NamedTuple):
    """A late second copy of an earlier segment's change: skipped as stale, nothing
    changed; then what follows still reaches the end both systems show."""

    name: str
    before: Callable[[], Correlation]
    copy: Event
    state: str
    then: tuple[Event, ...]
    end: str
    ops: list[str]


ALICE_ACCEPTED_IN_AWA = awa("accepted", assigned_to=ALICE.sn_user_sys_id)
COPIES = [
    # issue 15 defect 3, sf2sn-second-copy-of-the-awa-acceptance-after-the-salesforce-decline
    Copy(
        "sf2sn offered: the first offer's AWA acceptance again (its segment id)",
        sf2sn_declined_in_salesforce,
        again(ALICE_ACCEPTED_IN_AWA),
        "offered",
        (),
        "offered",
        [],
    ),
    Copy(
        "sf2sn offered: the first offer's AWA acceptance again (its work item, no segment id)",
        sf2sn_declined_in_salesforce,
        again(awa("accepted", assigned_to=ALICE.sn_user_sys_id, segment="")),
        "offered",
        (),
        "offered",
        [],
    ),
    Copy(
        "sf2sn offered: the first offer's AWA acceptance again, then Bob accepts the second",
        sf2sn_declined_in_salesforce,
        again(ALICE_ACCEPTED_IN_AWA),
        "offered",
        (awa("accepted", sys_id=AWI_BOB, assigned_to=BOB.sn_user_sys_id, segment=SEG_2),),
        "assigning",
        ["create_agent_work"],
    ),
    # issue 15 defect 3, sn2sf-second-copy-of-an-earlier-decline-while-another-agent-has-it
    Copy(
        "sn2sf assigned: Alice's Declined again while Bob's AgentWork is followed",
        sn2sf_bob_assigned_after_alice_declined,
        again(sn_aw("Declined")),
        "assigned",
        (sn_aw("Opened", aw_id=AW_BOB_SN, user=BOB.sf_user_id),),
        "active",
        ["offer"],
    ),
    Copy(
        "sn2sf assigned: Alice's push time-out again while Bob's AgentWork is followed",
        lambda: thread(
            sn2sf(S.ASSIGNED),
            [
                sn_aw("DeclinedOnPushTimeout"),
                sn_aw("Assigned", aw_id=AW_BOB_SN, user=BOB.sf_user_id),
            ],
        ),
        again(sn_aw("DeclinedOnPushTimeout")),
        "assigned",
        (sn_aw("Closed", aw_id=AW_BOB_SN, user=BOB.sf_user_id),),
        "closed",
        ["offer", "close_interaction"],
    ),
]


@pytest.mark.parametrize("copy", COPIES, ids=[c.name for c in COPIES])
def test_a_late_copy_of_an_earlier_segment_is_stale(copy: Copy, tables: Tables) -> None:
    before = copy.before()
    decision = translate(copy.copy, before, tables)
    assert decision.outcome is EventOutcome.SKIPPED, (decision.rule_id, decision.reason)
    assert decision.reason is not None
    assert decision.reason.startswith("stale"), decision.reason
    assert decision.commands == ()
    assert decision.correlation == before, "a stale copy changes nothing"
    decisions = read(before, copy.then, tables)
    end = decisions[-1].correlation if decisions else decision.correlation
    assert end is not None
    assert end.state == copy.end
    assert ops_of(decisions) == copy.ops


# --- the sweep: every state, every later AgentWork snapshot ------------------------------

# (status path an AgentWork takes; the statuses of an accepted one come after Opened)
PATHS = (
    ("Assigned", "Opened"),
    ("Assigned", "Opened", "Closed"),
    ("Assigned", "Opened", "Transferred"),
)
AW_CAROL = make_id("0Bz", 5)
CAROL_SF = make_id("005", 3)


def _actors() -> list[tuple[str, Correlation, dict[str, str]]]:
    """(name, conversation, AgentWork fields) for every state of both directions: the
    AgentWork the conversation knows (when it knows one) and one it never saw."""
    found: list[tuple[str, Correlation, dict[str, str]]] = []
    for state in (S.OFFERED, S.ASSIGNING, S.TRANSFERRING, S.ACTIVE, S.CLOSED, S.ABANDONED):
        corr = sf2sn(state)
        if AW_ALICE in corr.data.agent_work:
            found.append((f"sf2sn {state} own", corr, {}))
        found.append(
            (f"sf2sn {state} unseen", corr, {"aw_id": AW_CAROL, "user": CAROL_SF, "psr_id": ""})
        )
    for state in (S.ROUTING, S.ASSIGNED, S.ACTIVE, S.CLOSED, S.ABANDONED):
        corr = sn2sf(state)
        sn = {"work_item": WI_SN, "psr_id": PSR_SN}
        if AW_SN in corr.data.agent_work:
            found.append((f"sn2sf {state} known", corr, {"aw_id": AW_SN, **sn}))
        found.append((f"sn2sf {state} unseen", corr, {"aw_id": AW_CAROL, "user": CAROL_SF, **sn}))
    return found


def _sweep() -> list[tuple[str, Correlation, dict[str, str], tuple[str, ...]]]:
    cases = []
    for name, corr, fields in _actors():
        known = corr.data.agent_work.get(fields.get("aw_id", AW_ALICE))
        for path in PATHS:
            start = path.index(known.status.value) + 1 if known else 0
            later = path[start:]
            if len(later) >= 2:
                cases.append((f"{name}: {' > '.join(later)}", corr, fields, later))
    return cases


SWEEP = _sweep()


@pytest.mark.parametrize(("name", "corr", "fields", "later"), SWEEP, ids=[c[0] for c in SWEEP])
def test_last_snapshot_ends_where_every_snapshot_does(
    name: str, corr: Correlation, fields: dict[str, str], later: tuple[str, ...], tables: Tables
) -> None:
    """Reading only the last status of an AgentWork leads to the state, segments and
    commands that reading each status in turn leads to."""
    stepwise = corr
    stepwise_ops: list[str] = []
    for status in later:
        decision = translate(aw(status, **fields), stepwise, tables)
        assert decision.outcome is not EventOutcome.ERROR, (name, status, decision.reason)
        assert decision.correlation is not None
        stepwise = decision.correlation
        stepwise_ops += [c.operation.value for c in decision.commands]
    jumped = translate(aw(later[-1], **fields), corr, tables)
    assert jumped.outcome is not EventOutcome.ERROR, (name, jumped.reason)
    assert jumped.correlation is not None
    assert jumped.correlation.state == stepwise.state, name
    assert [s.outcome for s in jumped.correlation.segments] == [
        s.outcome for s in stepwise.segments
    ], name
    assert [c.operation.value for c in jumped.commands] == stepwise_ops, name


def test_the_sweep_covers_every_state_of_both_directions() -> None:
    states = {(c[1].direction.value, c[1].state.value) for c in SWEEP}
    assert states == {
        *(
            ("sf_to_sn", s)
            for s in ("offered", "assigning", "transferring", "active", "closed", "abandoned")
        ),
        *(("sn_to_sf", s) for s in ("routing", "assigned", "active", "closed", "abandoned")),
    }
