"""Transfers end on the right queue and agent in both systems (issue 15, defects 1 and 2).

Both sandboxes over TLS, the bridge's real clients, the bridge pumped round by round. Each
test asserts what Salesforce, ServiceNow and the ledger ended up holding."""

from __future__ import annotations

from typing import Any

from simple_salesforce import Salesforce

from bridge.adapters.http import make_session
from bridge.ledger import rows
from bridge_sandbox import seed
from bridge_sandbox.traffic import (
    ACTIVE,
    SF_ACCEPT,
    SF_TRANSFER_QUEUE,
    SN_ACCEPT,
    ContactCentre,
    Conversation,
    Observed,
    Scenario,
    Step,
    Stuck,
    customer_in_salesforce,
    ledger_problems,
)
from tests.fixtures.bridge import BridgeRig
from tests.fixtures.servicenow import sn_pysnc

SUPPORT, BILLING, _ = seed.QUEUES
_SN_OF_SF = {a.sf_user_id: a.sn_user_sys_id for a in seed.AGENTS}


_NOT_CHECKED = Observed(None, (), False, (), (), None)  # each test asserts for itself


def _begin(bridge_rig: BridgeRig, name: str) -> tuple[ContactCentre, Conversation]:
    """A Salesforce conversation accepted in AWA and in Omni-Channel (state active)."""
    centre = bridge_rig.centre()
    scenario = Scenario(
        name, customer_in_salesforce, (SN_ACCEPT, SF_ACCEPT, ACTIVE), _NOT_CHECKED, 0
    )
    conv = centre.drive(centre.begin(scenario))
    assert centre.correlation_state(conv) == "active"
    return centre, conv


def _pump_until(centre: ContactCentre, conv: Conversation, step: Step) -> None:
    """Pump the bridge until ``step`` is ready, then take it."""
    for _ in range(centre.max_pumps):
        if step.ready(centre, conv):
            step.act(centre, conv)
            return
        centre.pump()
    raise Stuck(f"waited {centre.max_pumps} rounds for {step.awaits}; now: {centre.observe(conv)}")


def _segments(centre: ContactCentre, conv: Conversation) -> list[rows.Segment]:
    corr = centre.correlation(conv)
    assert corr is not None
    with centre.ledger.reading() as tx:
        return list(tx.correlations.segment_rows(corr.id))


def _problems(centre: ContactCentre, conv: Conversation) -> list[str]:
    corr = centre.correlation(conv)
    assert corr is not None
    with centre.ledger.reading() as tx:
        return ledger_problems(tx, corr.id)


def _active_item(centre: ContactCentre, conv: Conversation) -> dict[str, str]:
    live = [i for i in centre.work_items(conv) if i["active"] == "true"]
    assert len(live) == 1, centre.work_items(conv)
    return live[0]


def _read_back(rig: BridgeRig, conv: Conversation) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """What the systems' own APIs show, read with real clients over TLS: the live AWA work
    item (pysnc) and the conversation's AgentWork (status, user) by SOQL (simple-salesforce)."""
    items = sn_pysnc(rig.sn).GlideRecord("awa_work_item")
    items.add_query("document_id", conv.interaction)
    items.add_query("active", "true")
    items.query()
    live = [
        {f: str(items.get_value(f)) for f in ("sys_id", "state", "queue", "assigned_to")}
        for _ in items
    ]
    assert len(live) == 1, live
    sf = Salesforce(
        instance_url=rig.sf.instance_url,
        session_id=rig.sf.issue_token(),
        version="62.0",
        session=make_session(rig.sf.ca_bundle),
    )
    found = sf.query(
        "SELECT Status, UserId FROM AgentWork "
        f"WHERE WorkItemId = '{conv.sf_work_item_id}' ORDER BY CreatedDate, Id"
    )
    return live[0], [(w["Status"], w["UserId"]) for w in found["records"]]


def _opened(centre: ContactCentre, conv: Conversation) -> dict[str, Any]:
    work = centre.opened_work(conv)
    assert work is not None
    return work


def test_transfer_to_a_queue_lands_on_the_target_queue_with_another_agent(
    bridge_rig: BridgeRig,
) -> None:
    centre, conv = _begin(bridge_rig, "transfer_to_queue_lands")
    first = _opened(centre, conv)
    transferring_sf, transferring_sn = first["UserId"], _SN_OF_SF[first["UserId"]]
    centre.sf.control.transfer_to_queue(first["Id"], SF_TRANSFER_QUEUE)

    # the bridge offers the work on the target queue, to someone else
    _pump_until(centre, conv, Step("an offer after the transfer", _offer_seen, _keep))
    offered = conv.marks["offer"]
    assert offered["queue"] == BILLING.sn_queue_sys_id
    assert offered["assigned_to"] not in ("", transferring_sn)

    for step in (SN_ACCEPT, SF_ACCEPT):
        _pump_until(centre, conv, step)
    bridge_rig.runtime.settle()

    # ServiceNow: the live work item is on the target queue, accepted by the other agent
    item = _active_item(centre, conv)
    assert (item["queue"], item["state"]) == (BILLING.sn_queue_sys_id, "accepted")
    assert item["assigned_to"] == offered["assigned_to"] != transferring_sn
    # Salesforce: the transferred AgentWork, and the new agent's Opened one on the new PSR
    statuses = [(w["Status"], w["UserId"]) for w in centre.agent_work(conv)]
    assert statuses[0] == ("Transferred", transferring_sf)
    (new_status, new_user) = statuses[-1]
    assert new_status == "Opened"
    assert new_user != transferring_sf
    assert _SN_OF_SF[new_user] == item["assigned_to"]
    assert not centre.psr_open(conv)
    # the ledger agrees with both
    corr = centre.correlation(conv)
    assert corr is not None
    assert (corr.state, corr.sn_queue_sys_id, corr.sf_queue_id) == (
        "active",
        BILLING.sn_queue_sys_id,
        BILLING.sf_queue_id,
    )
    segments = _segments(centre, conv)
    assert [s.outcome for s in segments] == ["transferred", "accepted"]
    last = segments[-1]
    assert (last.sn_queue_sys_id, last.sn_user_sys_id, last.sn_work_item_sys_id) == (
        item["queue"],
        item["assigned_to"],
        item["sys_id"],
    )
    assert last.sf_user_id == new_user
    assert _problems(centre, conv) == []
    live, agent_work = _read_back(bridge_rig, conv)
    assert live == {k: item[k] for k in live}
    assert agent_work == statuses


def test_transfer_to_an_agent_ends_with_the_new_agent_holding_the_work(
    bridge_rig: BridgeRig,
) -> None:
    centre, conv = _begin(bridge_rig, "transfer_to_agent_holds")
    first = _opened(centre, conv)
    other = next(a for a in seed.AGENTS if a.sf_user_id != first["UserId"])
    second = centre.sf.control.transfer_to_agent(first["Id"], other.sf_user_id)

    # the new agent accepts in Salesforce only (nobody acts in ServiceNow)
    _pump_until(centre, conv, _salesforce_acts_on(second["Id"], "accept"))
    bridge_rig.runtime.settle()

    # Salesforce: the new agent's AgentWork is Opened
    work = {w["Id"]: w for w in centre.agent_work(conv)}
    assert (work[second["Id"]]["Status"], work[second["Id"]]["UserId"]) == (
        "Opened",
        other.sf_user_id,
    )
    # ServiceNow: the new agent holds the work item, nothing is left pending
    item = _active_item(centre, conv)
    assert (item["state"], item["assigned_to"]) == ("accepted", other.sn_user_sys_id)
    assert not [i for i in centre.work_items(conv) if i["state"] == "pending_accept"]
    interaction = centre.sn.control.interaction(conv.interaction or "")
    assert interaction["assigned_to"] == other.sn_user_sys_id
    # the ledger agrees
    corr = centre.correlation(conv)
    assert corr is not None
    assert (corr.state, corr.sf_user_id, corr.sn_user_sys_id) == (
        "active",
        other.sf_user_id,
        other.sn_user_sys_id,
    )
    last = _segments(centre, conv)[-1]
    assert (last.outcome, last.sf_user_id, last.sn_user_sys_id, last.sn_work_item_sys_id) == (
        "accepted",
        other.sf_user_id,
        other.sn_user_sys_id,
        item["sys_id"],
    )
    assert _problems(centre, conv) == []
    live, agent_work = _read_back(bridge_rig, conv)
    assert live == {k: item[k] for k in live}
    assert agent_work[-1] == ("Opened", other.sf_user_id)


def test_a_declined_transfer_to_an_agent_leaves_the_first_agent_holding_the_work(
    bridge_rig: BridgeRig,
) -> None:
    centre, conv = _begin(bridge_rig, "transfer_to_agent_declined")
    first = _opened(centre, conv)
    holder_sn = _SN_OF_SF[first["UserId"]]
    before = _active_item(centre, conv)
    other = next(a for a in seed.AGENTS if a.sf_user_id != first["UserId"])
    second = centre.sf.control.transfer_to_agent(first["Id"], other.sf_user_id)

    _pump_until(centre, conv, _salesforce_acts_on(second["Id"], "decline"))
    bridge_rig.runtime.settle()

    work = {w["Id"]: w["Status"] for w in centre.agent_work(conv)}
    assert (work[first["Id"]], work[second["Id"]]) == ("Opened", "Declined")
    # ServiceNow still shows the first agent holding the work, as Salesforce does
    item = _active_item(centre, conv)
    assert (item["sys_id"], item["state"], item["assigned_to"]) == (
        before["sys_id"],
        "accepted",
        holder_sn,
    )
    assert not [i for i in centre.work_items(conv) if i["state"] == "pending_accept"]
    corr = centre.correlation(conv)
    assert corr is not None
    assert (corr.state, corr.sf_user_id) == ("active", first["UserId"])
    assert [s.outcome for s in _segments(centre, conv)] == ["transferred", "declined"]
    assert _problems(centre, conv) == []


def test_a_transfer_to_an_agent_offline_in_awa_waits_until_they_are_available(
    bridge_rig: BridgeRig,
) -> None:
    """The new agent accepts in Salesforce while Offline in AWA: AWA refuses the hand-over
    for now, the bridge retries (nothing pending meanwhile) and hands it over once the
    agent is Available again."""
    centre, conv = _begin(bridge_rig, "transfer_to_agent_offline")
    first = _opened(centre, conv)
    holder_sn = _SN_OF_SF[first["UserId"]]
    other = next(a for a in seed.AGENTS if a.sf_user_id != first["UserId"])
    centre.sn.control.set_presence(other.sn_user_sys_id, "Offline")
    second = centre.sf.control.transfer_to_agent(first["Id"], other.sf_user_id)
    _pump_until(centre, conv, _salesforce_acts_on(second["Id"], "accept"))
    bridge_rig.runtime.settle()

    item = _active_item(centre, conv)
    assert (item["state"], item["assigned_to"]) == ("accepted", holder_sn)
    assert any("no candidate agent is available" in p for p in _problems(centre, conv))

    centre.sn.control.set_presence(other.sn_user_sys_id, "Available")
    bridge_rig.tick = 10.0  # the retry falls due on the sandbox clock
    for _ in range(6):
        bridge_rig.pump()
    bridge_rig.runtime.settle()
    item = _active_item(centre, conv)
    assert (item["state"], item["assigned_to"]) == ("accepted", other.sn_user_sys_id)
    assert _problems(centre, conv) == []


# -- steps ---------------------------------------------------------------------------------


def _offer_seen(cc: ContactCentre, conv: Conversation) -> bool:
    item = cc.offer(conv)
    if item is None:
        return False
    conv.marks["offer"] = item
    return True


def _keep(cc: ContactCentre, conv: Conversation) -> None:
    del cc, conv  # SN_ACCEPT takes the offer kept in the marks


def _salesforce_acts_on(agent_work_id: str, action: str) -> Step:
    """Once the bridge has read the AgentWork Assigned, the Salesforce agent acts on it."""

    def ready(cc: ContactCentre, conv: Conversation) -> bool:
        del conv
        return (
            cc.bridge_saw(f"agent_work:{agent_work_id}:Assigned")
            and (cc.sf.org.get("AgentWork", agent_work_id) or {}).get("Status") == "Assigned"
        )

    def act(cc: ContactCentre, conv: Conversation) -> None:
        conv.marks.setdefault("agent_work_seen", set()).add(agent_work_id)
        if action == "accept":
            cc.sf.control.accept(agent_work_id)
        else:
            cc.sf.control.decline(agent_work_id, "Busy")

    return Step(f"the bridge to read AgentWork {agent_work_id} Assigned", ready, act)
