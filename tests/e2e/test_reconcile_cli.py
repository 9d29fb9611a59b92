"""`bridge reconcile` end to end: settings from the environment, both sandboxes over
HTTPS, the ledger on SQLite; dry run, --apply, --json and the exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.app.cli import main
from bridge.app.runtime import Runtime
from bridge.app.settings import load_settings
from bridge.ledger import SqlLedger
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from tests.fixtures.adapters import AUTHORIZATION_CONTEXT

pytestmark = pytest.mark.integration


@pytest.fixture
def configured(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: ServiceNowSandbox,
) -> Path:
    """Settings for both sandboxes in the environment; an upgraded, empty ledger."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    env = {
        "BRIDGE_SECRETS_DIR": tmp_path / "secrets",
        "BRIDGE_DATA_DIR": tmp_path / "data",
        "BRIDGE_CA_BUNDLE": sf_sandbox.ca_bundle,
        "BRIDGE_SALESFORCE__INSTANCE_URL": sf_sandbox.instance_url,
        "BRIDGE_SALESFORCE__LOGIN_URL": sf_sandbox.instance_url,
        "BRIDGE_SALESFORCE__CLIENT_ID": sf_sandbox.client_id,
        "BRIDGE_SALESFORCE__CLIENT_SECRET": sf_sandbox.client_secret,
        "BRIDGE_SALESFORCE__SCRT_URL": sf_sandbox.scrt_url,
        "BRIDGE_SALESFORCE__ORG_ID": sf_sandbox.org_id,
        "BRIDGE_SALESFORCE__AUTHORIZATION_CONTEXT": AUTHORIZATION_CONTEXT,
        "BRIDGE_SERVICENOW__INSTANCE_URL": sn_sandbox.instance_url,
        "BRIDGE_SERVICENOW__USERNAME": sn_sandbox.username,
        "BRIDGE_SERVICENOW__PASSWORD": sn_sandbox.password,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    (tmp_path / "data").mkdir()
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    ledger.upgrade()
    ledger.close()
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["reconcile", *args])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = cli(capsys, *args, "--json")
    return code, json.loads(out)


def offered_then_abandoned(sf: SalesforceSandbox, sn: ServiceNowSandbox) -> dict[str, str]:
    """A conversation the bridge (built from the same settings) offered in AWA, then
    abandoned in Salesforce without the bridge hearing of it."""
    runtime = Runtime.build(load_settings())
    try:
        started = sf.control.start_conversation("Support_External")
        runtime.settle()
    finally:
        runtime.close()
    [offer] = sn.control.pending_offers()
    sf.control.abandon(started["work_item_id"])
    return {**started, "sn_work_item": offer["sys_id"]}


def test_dry_run_prints_the_plan_and_apply_repairs(
    configured: Path,
    capsys: pytest.CaptureFixture[str],
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: ServiceNowSandbox,
) -> None:
    ids = offered_then_abandoned(sf_sandbox, sn_sandbox)

    code, out, _ = cli(capsys, "--only", "pending_awa", "--only", "stale_cursor")
    assert code == 1
    assert "repair plan (dry run: nothing changed)" in out
    assert ids["work_item_id"] in out
    assert "feed_event" in out
    assert "findings by kind" in out
    assert sn_sandbox.control.work_item(ids["sn_work_item"])["state"] == "pending_accept"

    code, report = as_json(capsys, "--only", "pending_awa", "--apply", "--since", "1h")
    assert code == 0
    assert report["mode"] == "apply"
    assert [(f["kind"], f["status"]) for f in report["findings"]] == [("pending_awa", "applied")]
    assert report["counts"] == [
        {"reconciler": "pending_awa", "kind": "pending_awa", "status": "applied", "count": 1}
    ]
    assert sn_sandbox.control.work_item(ids["sn_work_item"])["state"] == "canceled"

    code, report = as_json(capsys, "--only", "pending_awa", "--only", "mapping")
    assert code == 0, report
    assert report["findings"] == []
    assert report["unresolved"] == 0

    assert main(["ledger", "reconciliations", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_a_young_unseen_psr_is_left_to_intake(
    configured: Path, capsys: pytest.CaptureFixture[str], sf_sandbox: SalesforceSandbox
) -> None:
    sf_sandbox.control.start_conversation("Support_External")
    code, out, _ = cli(capsys, "--only", "unseen_psr")
    assert code == 0
    assert "0 finding(s), 0 unresolved" in out
    # ... and says so: how many, and why
    assert (
        "skipped by unseen_psr: 1 PSR(s) no correlation knows younger than the 60s grace "
        "not judged: intake may not have read them yet"
    ) in out, out


def test_an_unknown_reconciler_name_lists_the_known_ones(
    configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "--only", "orphaned_psr", "--only", "nope")
    assert code == 2
    assert "unknown reconciler(s): nope" in err
    assert "orphaned_psr" in err
    assert "drift" in err


def test_a_bad_since_is_an_error(configured: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "--since", "yesterday")
    assert code == 2
    assert "--since" in err


def test_incomplete_settings_are_an_error(
    configured: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BRIDGE_SERVICENOW__INSTANCE_URL")
    code, _, err = cli(capsys)
    assert code == 2
    assert "BRIDGE_SERVICENOW__INSTANCE_URL" in err


def test_young_psrs_are_counted_and_grace_judges_them(
    configured: Path, capsys: pytest.CaptureFixture[str], sf_sandbox: SalesforceSandbox
) -> None:
    """Three PSRs nobody has read yet: a dry run says three were skipped and why (not a
    bare "0 findings"); ``--grace 0s`` judges them: three PSRs to adopt."""
    psrs = [sf_sandbox.control.start_conversation("Support_External")["psr_id"] for _ in "abc"]
    code, report = as_json(capsys, "--only", "unseen_psr", "--only", "drift")
    assert code == 0, report
    notes = {f["reconciler"]: f for f in report["findings"] if f["kind"] == "within_grace"}
    assert set(notes) == {"unseen_psr", "drift"}, report
    assert all(n["status"] == "skipped" for n in notes.values())
    assert notes["unseen_psr"]["reason"].startswith("3 PSR(s) no correlation knows younger")
    assert "3 PSR(s)" in notes["drift"]["reason"]
    assert report["unresolved"] == 0

    code, report = as_json(capsys, "--only", "unseen_psr", "--grace", "0s")
    assert code == 1  # a plan to carry out
    planned = [f for f in report["findings"] if f["kind"] == "unseen_psr"]
    assert sorted(f["subject"] for f in planned) == sorted(psrs)
    assert {f["status"] for f in planned} == {"planned"}
    assert not [f for f in report["findings"] if f["kind"] == "within_grace"]


def test_apply_exit_code_is_what_the_repairs_left(
    configured: Path,
    capsys: pytest.CaptureFixture[str],
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: ServiceNowSandbox,
) -> None:
    """A PSR the bridge never read, adopted by --apply: the drift summary is taken after
    the repair is carried out, so a run that repaired everything exits 0."""
    started = sf_sandbox.control.start_conversation("Support_External")
    only = ("--only", "unseen_psr", "--only", "drift")
    code, out, _ = cli(capsys, *only, "--apply", "--grace", "0s")
    assert code == 0, out
    assert "1 finding(s), 0 unresolved" in out, out
    assert "skipped by" not in out, out
    # both systems: AWA holds the offer of the adopted PSR's conversation, the ledger knows it
    offers = sn_sandbox.control.pending_offers()
    assert len(offers) == 1, offers
    ledger = SqlLedger(f"sqlite:///{configured / 'data' / 'ledger.db'}")
    try:
        with ledger.reading() as tx:
            corr = tx.correlations.find_row(started["work_item_id"])
        assert corr is not None
        assert corr.state == "offered", corr
        assert corr.sf_psr_id == started["psr_id"]
        assert offers[0]["document_id"] == corr.sn_document_sys_id
    finally:
        ledger.close()

    code, report = as_json(capsys, "--only", "unseen_psr", "--only", "drift", "--grace", "0s")
    assert code == 0, report
    assert report["findings"] == []
