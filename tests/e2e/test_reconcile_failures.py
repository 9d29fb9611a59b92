"""Bad input during a reconciliation: a system that answers errors or garbage, a mapping
that no longer matches the org. The finding is recorded with its reason, the other
reconcilers go on, the exit code says something is wrong."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.servicenow.client import ServiceNowAdapter
from bridge.app.runtime import Runtime
from bridge.app.settings import Settings
from bridge.domain.mapping import Tables, load_tables
from bridge.ledger import SqlLedger
from bridge.reconcile import RunReport, context_for, run
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.salesforce.ids import make_id
from bridge_sandbox.servicenow.app import ServiceNowSandbox

pytestmark = pytest.mark.integration

GONE_QUEUE = make_id("00G", 99)


def build(
    ledger: SqlLedger, sf: SalesforceAdapter, sn: ServiceNowAdapter, tables: Tables
) -> Runtime:
    return Runtime(Settings(_env_file=None), ledger, tables, salesforce=sf, servicenow=sn)


@pytest.fixture
def runtime(
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: ServiceNowSandbox,
    sf_adapter: SalesforceAdapter,
    sn_adapter: ServiceNowAdapter,
    sqlite_ledger: SqlLedger,
) -> Iterator[Runtime]:
    rt = build(sqlite_ledger, sf_adapter, sn_adapter, load_tables())
    yield rt
    rt.close()


def outcome(report: RunReport) -> dict[str, list[str]]:
    by_reconciler: dict[str, list[str]] = {}
    for f in report.findings:
        by_reconciler.setdefault(f["reconciler"], []).append(f["kind"])
    return by_reconciler


def test_salesforce_errors_fail_its_reconcilers_and_the_rest_go_on(
    runtime: Runtime, sf_sandbox: SalesforceSandbox
) -> None:
    sf_sandbox.control.add_fault("rest", path="/query", status=500)
    report = run(context_for(runtime), ["orphaned_psr", "pending_awa", "stuck_outbox"], apply=False)

    assert report.failed_reconcilers == ["orphaned_psr"]
    assert outcome(report) == {"orphaned_psr": ["reconciler_failed"]}
    assert "UNKNOWN_EXCEPTION" in str(report.findings[0]["reason"])
    assert report.exit_code == 1


@pytest.mark.parametrize("drop", ["before", "after"])
def test_servicenow_dropping_connections_fails_its_reconcilers_only(
    runtime: Runtime, sn_sandbox: ServiceNowSandbox, drop: str
) -> None:
    sn_sandbox.control.add_fault({"path": "awa_work_item", "drop": drop})
    report = run(context_for(runtime), ["pending_awa", "unseen_psr", "stale_cursor"], apply=False)

    assert report.failed_reconcilers == ["pending_awa"]
    [finding] = report.findings
    assert (finding["kind"], finding["status"]) == ("reconciler_failed", "failed")
    assert finding["reason"]
    assert report.exit_code == 1


def test_servicenow_answering_garbage_is_a_recorded_failure(
    runtime: Runtime, sn_sandbox: ServiceNowSandbox
) -> None:
    sn_sandbox.control.add_fault({"path": "awa_work_item", "status": 200})
    report = run(context_for(runtime), ["pending_awa", "drift"], apply=False)
    assert "pending_awa" in report.failed_reconcilers
    assert report.exit_code == 1


def test_a_mapping_that_no_longer_matches_the_org_is_reported(
    sqlite_ledger: SqlLedger,
    sf_adapter: SalesforceAdapter,
    sn_adapter: ServiceNowAdapter,
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: ServiceNowSandbox,
) -> None:
    tables = load_tables()
    gone_queue = tables.crosswalk.queues[0].model_copy(update={"sf_queue_id": GONE_QUEUE})
    crosswalk = tables.crosswalk.model_copy(
        update={"queues": [gone_queue, *tables.crosswalk.queues[1:]]}
    )
    rt = build(
        sqlite_ledger, sf_adapter, sn_adapter, Tables(crosswalk, tables.policies, tables.rules)
    )
    try:
        report = run(context_for(rt), ["mapping", "unseen_psr"], apply=False)
    finally:
        rt.close()

    assert [(f["kind"], f["status"]) for f in report.findings] == [
        ("mapping_mismatch", "unresolved")
    ]
    assert f"Salesforce queue {GONE_QUEUE} not found" in str(report.findings[0]["reason"])
    assert report.exit_code == 1
