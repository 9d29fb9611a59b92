"""`bridge mappings discover` end to end: settings from the environment, both sandboxes over
HTTPS with the real clients (small pages on both sides), the written crosswalk loaded by the
tables' validator, hand-made rows kept unless --force."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import bridge.discover
from bridge.app.cli import main
from bridge.domain.mapping import check_tables
from bridge.domain.sf_ids import to18
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.tables import DIRECTORY as SANDBOX_MAPPINGS

pytestmark = pytest.mark.integration

EXTERNAL = {q.name: q for q in seed.QUEUES if q.direction == "sf_to_sn"}
OVERFLOW = next(q for q in seed.QUEUES if q.direction == "sn_to_sf")


@pytest.fixture
def configured(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: ServiceNowSandbox,
) -> Path:
    """Settings for both sandboxes in the environment; pages of 2 rows on both sides."""
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
        "BRIDGE_SERVICENOW__INSTANCE_URL": sn_sandbox.instance_url,
        "BRIDGE_SERVICENOW__USERNAME": sn_sandbox.username,
        "BRIDGE_SERVICENOW__PASSWORD": sn_sandbox.password,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    sf_sandbox.rest.page_size = 2  # the fixture puts it back
    monkeypatch.setattr(bridge.discover, "SN_PAGE", 2)
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    for name in ("policies.yaml", "rules.yaml"):
        shutil.copyfile((SANDBOX_MAPPINGS / name).resolve(), mappings / name)
    return mappings


def discover(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["mappings", "discover", "--json", *args])
    out, _ = capsys.readouterr()
    return code, json.loads(out)


def _matched(report: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return [p for p in report["proposals"] if p["section"] == section and p["outcome"] == "matched"]


def test_dry_run_matches_the_seeded_agents_queues_and_channels(
    configured: Path,
    capsys: pytest.CaptureFixture[str],
    sf_sandbox: SalesforceSandbox,
    sn_sandbox: ServiceNowSandbox,
) -> None:
    code, report = discover(capsys)
    assert code == 0
    users = {
        (p["row"]["sf_user_id"], p["row"]["sn_user_sys_id"]) for p in _matched(report, "users")
    }
    assert users == {(to18(a.sf_user_id), a.sn_user_sys_id) for a in seed.AGENTS}
    # Salesforce mails are the sandbox logins: the federation id (= user_name) matched them.
    assert {p["by"] for p in _matched(report, "users")} == {"federation id"}
    queues = {p["row"]["name"]: p["row"] for p in _matched(report, "queues")}
    assert set(queues) == set(EXTERNAL)
    for name, pair in EXTERNAL.items():
        assert queues[name]["sf_queue_id"] == to18(pair.sf_queue_id)
        assert queues[name]["sn_queue_sys_id"] == pair.sn_queue_sys_id
        assert queues[name]["direction"] == "sf_to_sn"
    # SN_Overflow / Salesforce Overflow share neither an external id nor a name: left to a person.
    unmatched = {
        (p["salesforce"], p["servicenow"])
        for p in report["proposals"]
        if p["section"] == "queues" and p["outcome"] == "unmatched"
    }
    assert unmatched == {
        (f"{OVERFLOW.sf_developer_name} ({to18(OVERFLOW.sf_queue_id)})", None),
        (None, f"{OVERFLOW.name} ({OVERFLOW.sn_queue_sys_id})"),
    }
    channels = {p["row"]["sf_service_channel_id"]: p["row"] for p in _matched(report, "channels")}
    assert channels == {
        to18(c.sf_service_channel_id): {
            "name": c.name,
            "sf_service_channel_id": to18(c.sf_service_channel_id),
            "sf_work_item_type": c.sf_related_entity,
            "sn_document_table": c.sn_document_table,
            "sn_service_channel_sys_id": c.sn_service_channel_sys_id,
        }
        for c in seed.CHANNELS
    }
    # the integration user has no AWA agent on the other side
    lonely = [
        p for p in report["proposals"] if p["section"] == "users" and p["outcome"] != "matched"
    ]
    assert [p["salesforce"] for p in lonely] == [
        f"{seed.SF_INTEGRATION_USERNAME} ({to18(seed.SF_INTEGRATION_USER_ID)})"
    ]
    assert report["summary"]["users"] == {"matched": 4, "ambiguous": 0, "unmatched": 1}
    # paged reads: pages of 2 rows mean several query requests on each side
    sf_calls = sf_sandbox.counters.snapshot()
    sn_calls = sn_sandbox.counters.snapshot()
    assert sum(c["count"] for c in sf_calls if "query" in c["route"]) > 4  # 4 queries
    assert sum(c["count"] for c in sn_calls if c["route"] == "/api/now/table/{table}") > 5
    # a dry run reads only
    assert sn_sandbox.counters.writes() == 0
    assert [c for c in sf_calls if c["method"] != "GET" and "oauth2" not in c["route"]] == []


def test_write_produces_a_crosswalk_the_validator_accepts(
    configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = configured / "crosswalk.yaml"
    code, report = discover(capsys, "--write", str(target))
    assert code == 0, report["write"]
    assert report["write"]["written"] is True
    assert report["write"]["added"] == 4 + 2 + 2
    tables, problems = check_tables(configured)
    assert problems == []
    assert tables is not None
    for agent in seed.AGENTS:
        user = tables.user_by_sf(agent.sf_user_id)
        assert user is not None
        assert (user.name, user.sn_user_sys_id) == (agent.sn_user_name, agent.sn_user_sys_id)
    for pair in EXTERNAL.values():
        queue = tables.queue_by_sf(pair.sf_queue_id)
        assert queue is not None
        assert queue.sn_queue_sys_id == pair.sn_queue_sys_id
        assert queue.sn_external_id == pair.sn_external_id
    assert tables.channel_by_sf(seed.CHANNELS[0].sf_service_channel_id) is not None


def test_hand_made_rows_are_kept_unless_forced(
    configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The sandbox's own crosswalk is hand-made: its Overflow row must survive, and a row
    # that pairs alice with another sys_user is someone's decision until --force.
    hand = yaml.safe_load((SANDBOX_MAPPINGS / "crosswalk.yaml").read_text())
    alice, bob = seed.AGENTS[0], seed.AGENTS[1]
    other = "0" * 31 + "9"
    for row in hand["users"]:
        if row["name"] == alice.sn_user_name:
            row["sn_user_sys_id"] = other
    target = configured / "crosswalk.yaml"
    target.write_text(yaml.safe_dump(hand, sort_keys=False))

    code, report = discover(capsys, "--write", str(target))
    assert code == 0
    assert report["write"]["added"] == 0
    assert [k["hand_made"]["sn_user_sys_id"] for k in report["write"]["kept"]] == [other]
    written = yaml.safe_load(target.read_text())
    assert {r["name"] for r in written["queues"]} == {"Support", "Billing", OVERFLOW.name}
    alice_row = next(r for r in written["users"] if r["name"] == alice.sn_user_name)
    assert alice_row["sn_user_sys_id"] == other

    code, report = discover(capsys, "--write", str(target), "--force")
    assert code == 0
    assert report["write"]["replaced"] == 1
    tables, problems = check_tables(configured)
    assert problems == []
    assert tables is not None
    assert tables.user_by_sf(alice.sf_user_id).sn_user_sys_id == alice.sn_user_sys_id  # type: ignore[union-attr]
    assert tables.user_by_sf(bob.sf_user_id).sn_user_sys_id == bob.sn_user_sys_id  # type: ignore[union-attr]
    fallback = tables.queue_by_sf(EXTERNAL["Support"].sf_queue_id)
    assert fallback is not None
    assert fallback.fallback_queue == "Billing"  # hand-made columns stay


def test_table_names_each_entry_and_its_reason(
    configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["mappings", "discover"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "users: 4 matched, 0 ambiguous, 1 unmatched" in out
    assert "queues: 2 matched, 0 ambiguous, 2 unmatched" in out
    assert "no AWA queue with external_id SN_Overflow or name SN_Overflow" in out
    for agent in seed.AGENTS:
        assert f"{agent.sn_user_name} ({agent.sn_user_sys_id})" in out
