"""Unmapped input is refused in the open: a PSR on a Salesforce external-routing queue and
a work item on an AWA queue that the crosswalk does not map are each recorded once as
refused with the reason (``bridge ledger events --status error``), however often they are
polled or change, polls stop reading them once the overlap window behind the cursor has
passed, and the ``mapping`` reconciler reports them; work items of a mapped
queue whose document table no channel routes are refused too. Other traffic flows on."""

from __future__ import annotations

import pytest

from bridge.app.runtime import Runtime
from bridge.domain.mapping import Tables
from bridge.ledger import audit, rows
from bridge.reconcile import context_for, run
from bridge_sandbox import seed
from bridge_sandbox.traffic import SCENARIOS_BY_NAME
from tests.fixtures.bridge import BridgeRig
from tests.fixtures.ledger import db_session

ACCEPT = SCENARIOS_BY_NAME["accept"]
SUPPORT, BILLING, OVERFLOW = seed.QUEUES


@pytest.fixture
def rig(bridge_rig: BridgeRig) -> BridgeRig:
    """The bridge on a crosswalk without the Billing queue (both sides of it exist)."""
    tables = bridge_rig.runtime.tables
    crosswalk = tables.crosswalk
    kept = [
        q.model_copy(update={"fallback_queue": None})
        for q in crosswalk.queues
        if q.name != BILLING.name
    ]
    narrow = Tables(
        crosswalk.model_copy(update={"queues": kept}),
        tables.policies,
        tables.rules,
        tables.crosswalk_lines,
    )
    old = bridge_rig.runtime
    bridge_rig.runtime = Runtime(
        old.settings,
        bridge_rig.ledger,
        narrow,
        salesforce=old.salesforce,
        servicenow=old.servicenow,
        now=bridge_rig.clock.now,
    )
    old.close()
    return bridge_rig


def _errors(rig: BridgeRig) -> list[rows.InboxEvent]:
    with db_session(rig.ledger) as session:
        return audit.AuditReader(session).inbox_events(statuses=["error"], limit=1000)


def _naming(events: list[rows.InboxEvent], object_id: str) -> list[rows.InboxEvent]:
    return [e for e in events if object_id in e.source_event_id]


def _pumps(rig: BridgeRig, n: int) -> None:
    for _ in range(n):
        rig.pump()
        rig.clock.advance(1.0)


def test_unmapped_psr_and_work_item_are_refused_once_and_reported(rig: BridgeRig) -> None:
    sf, sn = rig.sf, rig.sn
    centre = rig.centre()
    # an ordinary conversation on a mapped queue, begun before and ended after
    conv = centre.drive(centre.begin(ACCEPT), until_step=1)

    refused_psr = sf.control.start_conversation(BILLING.sf_developer_name)
    refused_item = sn.control.create_interaction(BILLING.sn_queue_sys_id, "unmapped")
    _pumps(rig, 3)
    # the work item changes (as AWA's own record keeping does); polls go on
    rig.runtime.servicenow.update(
        "awa_work_item", refused_item["work_item"], {"external_segment_id": "nobody-routes-it"}
    )
    _pumps(rig, 3)
    centre.drive(conv)
    rig.runtime.settle()

    errors = _errors(rig)
    [psr_event] = _naming(errors, refused_psr["psr_id"])
    assert psr_event.kind == "psr"
    assert psr_event.error is not None
    assert "not mapped" in psr_event.error
    assert BILLING.sf_queue_id[:15] in psr_event.error
    [item_event] = _naming(errors, refused_item["work_item"])
    assert item_event.kind == "awa_work_item"
    assert item_event.error is not None
    assert "not mapped" in item_event.error
    assert BILLING.sn_queue_sys_id in item_event.error
    # nothing else about them in the inbox: one record per object, not per poll or change
    with db_session(rig.ledger) as session:
        everything = audit.AuditReader(session).inbox_events(limit=10_000)
    assert len(_naming(everything, refused_psr["psr_id"])) == 1
    assert len(_naming(everything, refused_item["work_item"])) == 1
    # nor are they read again and again: once the overlap window behind a stream's
    # watermark has been read after it passed, polls read strictly after the watermark
    rig.clock.advance(10.0)
    _pumps(rig, 2)
    rig.pump()
    quiet = {p.stream: (p.recorded, p.duplicates) for p in rig.history[-1].polled}
    assert quiet["salesforce:PendingServiceRouting"] == (0, 0)
    assert quiet["servicenow:awa_work_item"] == (0, 0)
    # (deletions are read a minute back by design: the org covers whole minutes only)
    assert {v for k, v in quiet.items() if not k.endswith(":deleted")} == {(0, 0)}, quiet

    # both systems: nobody routed them; the mapped conversation went on as usual
    psrs = {p["Id"]: p for p in sf.control.psrs()}
    assert refused_psr["psr_id"] in psrs
    assert not sf.org.where("AgentWork", WorkItemId=refused_psr["work_item_id"])
    item = sn.control.work_item(refused_item["work_item"])
    assert (item["state"], item["assigned_to"]) == ("queued", "")
    assert len(sn.control.work_items(refused_item["interaction"])) == 1
    assert centre.observe(conv) == ACCEPT.expected

    # the mapping reconciler names both queues and what waits on them
    report = run(context_for(rig.runtime, now=rig.clock.now()), ["mapping"], apply=False)
    found = {f["subject"]: f for f in report.findings if f["kind"] == "unmapped_input"}
    sf_finding = found[f"PendingServiceRouting.QueueId:{BILLING.sf_queue_id}"]
    assert refused_psr["psr_id"] in sf_finding["reason"]
    assert "1 PSR" in sf_finding["reason"]
    sn_finding = found[f"awa_work_item.queue:{BILLING.sn_queue_sys_id}"]
    assert refused_item["work_item"] in sn_finding["reason"]
    assert {f["status"] for f in found.values()} == {"unresolved"}
    assert report.exit_code == 1


@pytest.mark.parametrize(
    ("document_table", "document_id", "words"),
    [
        ("incident", seed.sys_id("an incident"), ("document_table 'incident'", "not routed")),
        ("", seed.sys_id("a document"), ("document_table", "missing")),
        ("interaction", "", ("document_id", "missing")),
    ],
    ids=["unknown document table", "no document table", "no document"],
)
def test_work_item_of_a_mapped_queue_with_a_bad_document_is_refused(
    bridge_rig: BridgeRig, document_table: str, document_id: str, words: tuple[str, ...]
) -> None:
    sn = bridge_rig.runtime.servicenow
    bridge_rig.sn.control.create_interaction(OVERFLOW.sn_queue_sys_id, "real")
    odd = sn.insert(
        "awa_work_item",
        {
            "queue": OVERFLOW.sn_queue_sys_id,
            "document_table": document_table,
            "document_id": document_id,
            "state": "queued",
        },
    )
    _pumps(bridge_rig, 3)

    [refused] = _naming(_errors(bridge_rig), odd["sys_id"])
    assert refused.error is not None
    for word in words:
        assert word in refused.error
    # nothing went to Salesforce for it: only the real work item was routed
    routed = bridge_rig.sf.scrt_counters.total("POST")
    assert routed == 1
