"""Each reconciler against both sandboxes over HTTPS with the real clients: a state with
that drift (control surface + ledger rows) → plan finds it, a dry run writes nothing,
apply repairs both systems and the ledger records the run; a second plan finds nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.servicenow.client import ServiceNowAdapter
from bridge.app.runtime import Runtime
from bridge.app.settings import Settings
from bridge.domain.mapping import load_tables
from bridge.engine import interaction_sys_id
from bridge.ledger import Correlation, Finding, ReconcileRun, SqlLedger
from bridge.ledger.rows import utcnow
from bridge.reconcile import Options, RunReport, RuntimeDriver, context_for, run, scheduled
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from tests.fixtures.ledger import db_session, pending_events

pytestmark = pytest.mark.integration

OTHER_AGENT = seed.AGENTS[3]
FAST = Options(unseen_grace=timedelta(0), offer_grace=timedelta(0), settle_timeout=20.0)


@pytest.fixture
def runtime(
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: ServiceNowSandbox,
    sf_adapter: SalesforceAdapter,
    sn_adapter: ServiceNowAdapter,
    sqlite_ledger: SqlLedger,
) -> Iterator[Runtime]:
    list(sf_adapter.query("SELECT Id FROM Group"))  # signed in: no token call counts below
    rt = Runtime(
        Settings(_env_file=None),
        sqlite_ledger,
        load_tables(),
        salesforce=sf_adapter,
        servicenow=sn_adapter,
    )
    yield rt
    rt.close()


def reconcile(rt: Runtime, name: str, *, apply: bool, now: datetime | None = None) -> RunReport:
    ctx = context_for(rt, now=now or utcnow() + timedelta(seconds=2), options=FAST)
    driver = RuntimeDriver(rt) if apply else None
    return run(ctx, [name], apply=apply, driver=driver)


def writes(sf: SalesforceSandbox, sn: ServiceNowSandbox) -> int:
    return sf.counters.writes() + sf.scrt_counters.writes() + sn.counters.writes()


def kinds(report: RunReport) -> list[tuple[str, str]]:
    return [(f["kind"], f["status"]) for f in report.findings]


def correlation(ledger: SqlLedger) -> Correlation:
    with db_session(ledger) as session:
        rows = list(session.scalars(select(Correlation)))
    assert len(rows) == 1
    return rows[0]


def set_state(ledger: SqlLedger, state: str, **changes: Any) -> None:
    corr = correlation(ledger)
    with ledger.transaction() as tx:
        tx.correlations.update(corr, corr.version, state=state, **changes)


def offered(rt: Runtime, sf: SalesforceSandbox, sn: ServiceNowSandbox) -> dict[str, Any]:
    """A Support conversation the bridge offered in AWA; returns ids."""
    started = sf.control.start_conversation("Support_External")
    rt.settle()
    offers = sn.control.pending_offers()
    assert len(offers) == 1
    return {**started, "sn_work_item": offers[0]["sys_id"], "offer": offers[0]}


def agent_work(sf: SalesforceSandbox, work_item: str) -> list[dict[str, Any]]:
    return sf.org.where("AgentWork", WorkItemId=work_item)


def assert_dry_run_is_read_only(
    rt: Runtime, sf: SalesforceSandbox, sn: ServiceNowSandbox, name: str, kind: str
) -> RunReport:
    before = writes(sf, sn)
    report = reconcile(rt, name, apply=False)
    assert kinds(report) == [(kind, "planned")]
    assert writes(sf, sn) == before
    assert report.exit_code == 1
    return report


def assert_recorded(ledger: SqlLedger, report: RunReport, status: str = "applied") -> None:
    with db_session(ledger) as session:
        run_row = session.get(ReconcileRun, report.run_id)
        found = list(session.scalars(select(Finding).where(Finding.run_id == report.run_id)))
    assert run_row is not None
    assert run_row.mode == "apply"
    assert run_row.status == "succeeded"
    assert [f.status for f in found] == [status]


# --- orphaned_psr ------------------------------------------------------------------------


def test_orphaned_psr_of_an_abandoned_conversation_is_deleted(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    ids = offered(runtime, sf_sandbox, sn_sandbox)
    sf_sandbox.control.abandon(ids["work_item_id"])  # the org keeps the PSR
    set_state(runtime.ledger, "abandoned")  # the bridge knew, but its delete never went out
    assert [p["Id"] for p in sf_sandbox.control.psrs()] == [ids["psr_id"]]

    assert_dry_run_is_read_only(runtime, sf_sandbox, sn_sandbox, "orphaned_psr", "orphaned_psr")
    report = reconcile(runtime, "orphaned_psr", apply=True)

    assert kinds(report) == [("orphaned_psr", "applied")]
    assert report.findings[0]["action"] == "delete_psr"
    assert sf_sandbox.control.psrs() == []
    assert_recorded(runtime.ledger, report)
    assert reconcile(runtime, "orphaned_psr", apply=False).findings == []


# --- unseen_psr --------------------------------------------------------------------------


def test_a_psr_the_bridge_never_saw_is_adopted_and_offered(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    started = sf_sandbox.control.start_conversation("Support_External")  # intake never polls

    assert_dry_run_is_read_only(runtime, sf_sandbox, sn_sandbox, "unseen_psr", "unseen_psr")
    assert sn_sandbox.control.pending_offers() == []
    report = reconcile(runtime, "unseen_psr", apply=True)

    assert kinds(report) == [("unseen_psr", "applied")]
    corr = correlation(runtime.ledger)
    assert corr.sf_psr_id == started["psr_id"]
    assert corr.state == "offered"
    offers = sn_sandbox.control.pending_offers()
    assert [o["document_id"] for o in offers] == [interaction_sys_id(corr.id)]
    assert (
        sn_sandbox.control.interaction(interaction_sys_id(corr.id))["correlation_id"]
        == (started["work_item_id"])
    )
    assert_recorded(runtime.ledger, report)
    assert reconcile(runtime, "unseen_psr", apply=False).findings == []


def test_an_unseen_psr_already_pushed_is_reported_not_adopted(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sf_adapter: SalesforceAdapter
) -> None:
    started = sf_sandbox.control.start_conversation("Support_External")
    agent = seed.AGENTS[1]
    sf_adapter.create(
        "AgentWork",
        {
            "UserId": agent.sf_user_id,
            "WorkItemId": started["work_item_id"],
            "PendingServiceRoutingId": started["psr_id"],
            "ServiceChannelId": seed.CHANNELS[0].sf_service_channel_id,
        },
    )
    report = reconcile(runtime, "unseen_psr", apply=True)
    assert kinds(report) == [("unseen_psr", "unresolved")]
    assert report.findings[0]["action"] is None
    assert "pushed to an agent" in str(report.findings[0]["reason"])
    assert pending_events(runtime.ledger, 10) == []


def test_a_young_psr_is_left_to_intake(runtime: Runtime, sf_sandbox: SalesforceSandbox) -> None:
    sf_sandbox.control.start_conversation("Support_External")
    ctx = context_for(runtime, options=Options(unseen_grace=timedelta(minutes=5)))
    report = run(ctx, ["unseen_psr"], apply=False)
    # left to intake, and said so: a skipped note, nothing to repair (issue 15)
    assert [(f["kind"], f["status"]) for f in report.findings] == [("within_grace", "skipped")]
    assert report.findings[0]["reason"].startswith("1 PSR(s) no correlation knows younger than")
    assert report.unresolved == 0


# --- pending_awa -------------------------------------------------------------------------


def test_an_end_in_salesforce_the_bridge_never_heard_of_is_fed_and_cleaned_up(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    ids = offered(runtime, sf_sandbox, sn_sandbox)
    sf_sandbox.control.abandon(ids["work_item_id"])  # the bridge does not hear of it

    assert_dry_run_is_read_only(runtime, sf_sandbox, sn_sandbox, "pending_awa", "pending_awa")
    report = reconcile(runtime, "pending_awa", apply=True)

    assert kinds(report) == [("pending_awa", "applied")]
    assert report.findings[0]["action"] == "feed_event"
    item = sn_sandbox.control.work_item(ids["sn_work_item"])
    assert (item["state"], item["active"]) == ("canceled", "false")
    corr = correlation(runtime.ledger)
    assert corr.state == "abandoned"
    assert sn_sandbox.control.interaction(interaction_sys_id(corr.id))["state"] == (
        "closed_abandoned"
    )
    assert sf_sandbox.control.psrs() == []  # the engine's clean-up deleted the orphan
    assert_recorded(runtime.ledger, report)
    assert reconcile(runtime, "pending_awa", apply=False).findings == []


def test_an_offer_that_survived_a_conversation_the_bridge_ended_is_cancelled(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    ids = offered(runtime, sf_sandbox, sn_sandbox)
    set_state(runtime.ledger, "abandoned")  # the bridge knew, its cancel never went out

    assert_dry_run_is_read_only(runtime, sf_sandbox, sn_sandbox, "pending_awa", "pending_awa")
    report = reconcile(runtime, "pending_awa", apply=True)

    assert [(f["action"], f["status"]) for f in report.findings] == [
        ("cancel_work_item", "applied")
    ]
    item = sn_sandbox.control.work_item(ids["sn_work_item"])
    assert (item["state"], item["active"]) == ("canceled", "false")
    assert_recorded(runtime.ledger, report)
    assert reconcile(runtime, "pending_awa", apply=False).findings == []


def test_a_pending_offer_of_a_live_conversation_is_left_alone(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    offered(runtime, sf_sandbox, sn_sandbox)
    assert reconcile(runtime, "pending_awa", apply=False).findings == []


# --- assigned_elsewhere ------------------------------------------------------------------


@pytest.mark.parametrize(
    "meanwhile",
    [
        {"state": "closed"},  # the conversation ended
        {"state": "active", "sf_user_id": OTHER_AGENT.sf_user_id},  # someone else took it
    ],
)
def test_agent_work_the_bridge_made_still_assigned_elsewhere_is_cancelled(
    runtime: Runtime,
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: ServiceNowSandbox,
    meanwhile: dict[str, str],
) -> None:
    ids = offered(runtime, sf_sandbox, sn_sandbox)
    sn_sandbox.control.accept(ids["sn_work_item"])
    runtime.settle()  # the bridge creates the AgentWork for the accepting agent
    [work] = agent_work(sf_sandbox, ids["work_item_id"])
    assert work["Status"] == "Assigned"
    assert work["UserId"] != OTHER_AGENT.sf_user_id
    set_state(runtime.ledger, **meanwhile)

    assert_dry_run_is_read_only(
        runtime, sf_sandbox, sn_sandbox, "assigned_elsewhere", "assigned_elsewhere"
    )
    report = reconcile(runtime, "assigned_elsewhere", apply=True)

    assert kinds(report) == [("assigned_elsewhere", "applied")]
    [work] = agent_work(sf_sandbox, ids["work_item_id"])
    assert work["Status"] == "Canceled"
    assert_recorded(runtime.ledger, report)
    assert reconcile(runtime, "assigned_elsewhere", apply=False).findings == []


def test_a_salesforce_transfer_to_an_agent_is_left_alone(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    ids = offered(runtime, sf_sandbox, sn_sandbox)
    sn_sandbox.control.accept(ids["sn_work_item"])
    runtime.settle()
    [work] = agent_work(sf_sandbox, ids["work_item_id"])
    sf_sandbox.control.accept(work["Id"])
    runtime.settle()
    assert correlation(runtime.ledger).state == "active"
    sf_sandbox.control.transfer_to_agent(work["Id"], OTHER_AGENT.sf_user_id)  # not seen yet
    assert reconcile(runtime, "assigned_elsewhere", apply=False).findings == []


# --- offer_timeout -----------------------------------------------------------------------


def test_an_offer_timed_out_without_an_event_is_read_and_re_offered(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    ids = offered(runtime, sf_sandbox, sn_sandbox)
    first_agent = ids["offer"]["assigned_to"]
    sn_sandbox.control.let_time_out(ids["sn_work_item"])  # intake never polls it
    later = utcnow() + timedelta(minutes=5)

    before = writes(sf_sandbox, sn_sandbox)
    dry = reconcile(runtime, "offer_timeout", apply=False, now=later)
    assert kinds(dry) == [("offer_timeout", "planned")]
    assert "timed_out" in str(dry.findings[0]["reason"])
    assert writes(sf_sandbox, sn_sandbox) == before
    report = reconcile(runtime, "offer_timeout", apply=True, now=later)

    assert kinds(report) == [("offer_timeout", "applied")]
    offers = sn_sandbox.control.pending_offers()
    assert len(offers) == 1
    assert offers[0]["assigned_to"] not in ("", first_agent)
    assert_recorded(runtime.ledger, report)
    assert reconcile(runtime, "offer_timeout", apply=False, now=later).findings == []


def test_an_offer_still_pending_is_left_to_awa(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    offered(runtime, sf_sandbox, sn_sandbox)
    later = utcnow() + timedelta(minutes=5)
    assert reconcile(runtime, "offer_timeout", apply=False, now=later).findings == []


# --- drift -------------------------------------------------------------------------------


def test_drift_reports_gone_objects_and_untracked_interactions(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    ids = offered(runtime, sf_sandbox, sn_sandbox)
    sf_sandbox.org.delete("PendingServiceRouting", ids["psr_id"], system=True)
    stray = sn_sandbox.control.create_interaction("SF_OVERFLOW")

    before = writes(sf_sandbox, sn_sandbox)
    report = reconcile(runtime, "drift", apply=True, now=utcnow() + timedelta(seconds=5))

    assert writes(sf_sandbox, sn_sandbox) == before  # drift only reports
    assert sorted(kinds(report)) == [
        ("correlation_without_psr", "unresolved"),
        ("drift_summary", "unresolved"),
        ("interaction_without_correlation", "unresolved"),
    ]
    subjects = {f["kind"]: f["subject"] for f in report.findings}
    assert subjects["interaction_without_correlation"] == stray["interaction"]
    assert report.exit_code == 1


def test_no_drift_on_a_consistent_state(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    offered(runtime, sf_sandbox, sn_sandbox)
    report = reconcile(runtime, "drift", apply=False, now=utcnow() + timedelta(seconds=5))
    assert report.findings == []
    assert report.exit_code == 0


# --- the daemon's job --------------------------------------------------------------------


def test_the_scheduled_job_writes_repairs_for_the_daemon_to_send(
    runtime: Runtime, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    sf_sandbox.control.start_conversation("Support_External")
    scheduled(runtime, FAST)()

    with db_session(runtime.ledger) as session:
        [run_row] = list(session.scalars(select(ReconcileRun)))
        adopted = list(session.scalars(select(Finding).where(Finding.kind == "unseen_psr")))
    assert run_row.mode == "apply"
    assert [f.status for f in adopted] == ["applied"]
    assert sn_sandbox.control.pending_offers() == []  # written, not sent: the daemon sends
    assert [e.source for e in pending_events(runtime.ledger, 10)] == ["reconciler"]
