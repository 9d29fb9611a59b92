"""deploy/servicenow: the scripts a ServiceNow admin installs build the receiver's payload.

Read as text: the Script Include names exactly the fields the bridge's polls read, the body
has exactly the contract's keys, each script sends its own event name, and all of it is ES5
(Rhino). Run under Node with stand-ins for the GlideRecord APIs (skipped without Node): the
body is JSON with the Table API's raw values, and the Business Rules go through the subflow.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.servicenow.payload import check
from bridge.adapters.servicenow.polling import INTERACTION_FIELDS, WORK_ITEM_FIELDS, event_of

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "servicenow"
INCLUDE = DEPLOY / "BridgeAwaEvent.js"
SYSTEM_FIELDS = ("sys_id", "sys_mod_count", "sys_updated_on")
PAYLOAD_KEYS = {
    "event",
    "table",
    "sys_id",
    "sys_mod_count",
    "sys_updated_on",
    "record",
    "instance",
    "sent_at",
}
# script file → (table it runs on, the event it sends, how it sends it)
SCRIPTS = {
    "event_definition_work_item_created.js": ("awa_work_item", "awa_work_item.created", "payload"),
    "event_definition_work_item_transferred.js": (
        "awa_work_item",
        "awa_work_item.transferred",
        "payload",
    ),
    "business_rule_awa_work_item.js": ("awa_work_item", "awa_work_item.updated", "send"),
    "business_rule_interaction.js": ("interaction", "interaction.updated", "send"),
}


def _code(path: Path) -> str:
    """The script without its comments (what ServiceNow runs)."""
    text = path.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _js_array(name: str) -> tuple[str, ...]:
    match = re.search(rf"BridgeAwaEvent\.{name}\s*=\s*\[(.*?)\];", _code(INCLUDE), re.S)
    assert match, f"{INCLUDE.name} defines no {name}"
    return tuple(re.findall(r"'([^']*)'", match.group(1)))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("WORK_ITEM_FIELDS", WORK_ITEM_FIELDS),
        ("INTERACTION_FIELDS", INTERACTION_FIELDS),
        ("SYSTEM_FIELDS", SYSTEM_FIELDS),
    ],
)
def test_the_script_include_names_exactly_the_fields_the_bridge_reads(
    name: str, expected: tuple[str, ...]
) -> None:
    assert _js_array(name) == expected


def test_the_body_has_exactly_the_contract_keys() -> None:
    match = re.search(r"JSON\.stringify\(\{(.*?)\}\);", _code(INCLUDE), re.S)
    assert match, "the Script Include builds no JSON body"
    keys = set(re.findall(r"^\s*(\w+)\s*:", match.group(1), re.M))
    assert keys == PAYLOAD_KEYS


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_script_sends_its_own_event(script: str) -> None:
    _, event, call = SCRIPTS[script]
    calls = re.findall(
        r"new BridgeAwaEvent\(\)\.(\w+)\('([^']+)', current\)", _code(DEPLOY / script)
    )
    assert calls == [(call, event)]


@pytest.mark.parametrize("script", sorted([*SCRIPTS, INCLUDE.name]))
def test_the_scripts_are_es5(script: str) -> None:
    code = _code(DEPLOY / script)
    for es6 in (r"\blet\s", r"\bconst\s", r"=>", "`", r"\bclass\s"):
        assert not re.search(es6, code), f"{script}: {es6!r} is not ES5 (Rhino)"


def test_every_script_here_is_described_in_the_readme() -> None:
    readme = (DEPLOY / "README.md").read_text()
    scripts = {p.name for p in DEPLOY.glob("*.js")}
    assert scripts == {*SCRIPTS, INCLUDE.name}
    for name in scripts:
        assert f"`{name}`" in readme, name


# Stand-ins for what ServiceNow gives a server script: enough GlideRecord / GlideElement /
# GlideDateTime / gs / FlowAPI to run the scripts as the platform would.
HARNESS = r"""
const fs = require('fs');
const [include, script, table, recordJson, previousJson] = process.argv.slice(1);
const BOOLEANS = new Set(['active', 'rejected', 'timed_out']);
function GlideRecordStub(tableName, values) {
  this.tableName = tableName; this.values = values;
}
GlideRecordStub.prototype.getTableName = function () { return this.tableName; };
GlideRecordStub.prototype.getValue = function (name) {
  const v = this.values[name];
  if (v === undefined || v === '') return null;
  return BOOLEANS.has(name) ? (v === 'true' ? '1' : '0') : String(v);
};
GlideRecordStub.prototype.getElement = function (name) {
  if (!(name in this.values)) return null;
  return { getED: () => ({ getInternalType: () => (BOOLEANS.has(name) ? 'boolean' : 'string') }) };
};
global.GlideDateTime = function () {
  this.getValue = () => '2026-12-03 14:05:09';
  this.getNumericValue = () => 1796306709045;
};
global.gs = { getProperty: (name, fallback) => (name === 'instance_name' ? 'dev12345' : fallback) };
global.Class = { create: () => function () { this.initialize.apply(this, arguments); } };
const sent = [];
global.sn_fd = { FlowAPI: { getRunner: () => {
  const run = { name: null, background: false, inputs: null };
  const runner = {
    subflow: (n) => { run.name = n; return runner; },
    inBackground: () => { run.background = true; return runner; },
    withInputs: (i) => { run.inputs = i; return runner; },
    run: () => { sent.push(run); },
  };
  return runner;
} } };
const vm = require('vm');
vm.runInThisContext(fs.readFileSync(include, 'utf8'));
global.BridgeAwaEvent = BridgeAwaEvent;
global.current = new GlideRecordStub(table, JSON.parse(recordJson));
global.previous = new GlideRecordStub(table, JSON.parse(previousJson));
global.queueObj = {}; global.documentGR = {}; global.additionalParams = {};
const returned = vm.runInThisContext(fs.readFileSync(script, 'utf8'));
const changed = new BridgeAwaEvent().changed(global.current, global.previous);
const body = returned === undefined ? null : returned;
process.stdout.write(JSON.stringify({ returned: body, sent, changed }));
"""

WORK_ITEM = {
    "sys_id": "a" * 32,
    "sys_mod_count": "7",
    "sys_updated_on": "2026-12-03 14:05:09",
    "number": "AWI0001009",
    "state": "accepted",
    "active": "true",
    "document_table": "interaction",
    "document_id": "b" * 32,
    "queue": "c" * 32,
    "assigned_to": "d" * 32,
    "cancel_reason": "",
    "rejected": "false",
    "timed_out": "false",
    "reject_reason": "",
    "offered_on": "2026-12-03 14:05:01",
    "offer_count": "1",
    "external_segment_id": "seg-1",
    "previous_work_item": "",
}
INTERACTION = {
    "sys_id": "b" * 32,
    "sys_mod_count": "3",
    "sys_updated_on": "2026-12-03 14:06:00",
    "state": "closed_abandoned",
    "active": "false",
    "queue": "c" * 32,
    "assigned_to": "",
    "correlation_id": "0Mw000000000001",
    "closed_at": "2026-12-03 14:06:00",
}
# what the previous version held: the Business Rules send only when a read field changed
PREVIOUS = {
    "awa_work_item": {**WORK_ITEM, "state": "pending_accept", "sys_mod_count": "6"},
    "interaction": {**INTERACTION, "state": "work_in_progress", "active": "true"},
}


def _run(script: str, record: dict[str, str], previous: dict[str, str]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    table = SCRIPTS[script][0]
    out = subprocess.run(
        [
            node,
            "-e",
            HARNESS,
            str(INCLUDE),
            str(DEPLOY / script),
            table,
            json.dumps(record),
            json.dumps(previous),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _body_of(script: str, result: dict[str, Any]) -> dict[str, Any]:
    if SCRIPTS[script][2] == "payload":
        assert result["sent"] == []
        assert isinstance(result["returned"], str)  # an event definition returns a string
        body: dict[str, Any] = json.loads(result["returned"])
        return body
    [run] = result["sent"]
    assert run["name"] == "global.bridge_awa_send_event"
    assert run["background"] is True
    assert set(run["inputs"]) == {"payload"}
    sent: dict[str, Any] = json.loads(run["inputs"]["payload"])
    return sent


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_the_scripts_build_the_contract_payload_when_run(script: str) -> None:
    table, event, _ = SCRIPTS[script]
    record = WORK_ITEM if table == "awa_work_item" else INTERACTION
    result = _run(script, record, PREVIOUS[table])
    body = _body_of(script, result)
    assert set(body) == PAYLOAD_KEYS
    assert body["event"] == event
    assert body["table"] == table
    assert body["sys_id"] == record["sys_id"]
    assert body["sys_mod_count"] == int(record["sys_mod_count"])
    assert body["sys_updated_on"] == record["sys_updated_on"]
    assert body["instance"] == "dev12345"
    assert body["sent_at"] == "2026-12-03 14:05:09.045"
    # the Table API's raw values: booleans true/false, empty fields ''
    assert body["record"] == record
    assert result["changed"] is True
    # and the bridge's receiver takes it: the same event a poll of this row makes
    checked = check(json.dumps(body).encode(), {record["queue"]})
    assert checked.skipped is None
    assert checked.event == event_of(table, record, {record["queue"]})


@pytest.mark.parametrize("table", ["awa_work_item", "interaction"])
def test_an_update_that_changes_no_field_the_bridge_reads_is_not_a_change(table: str) -> None:
    record = WORK_ITEM if table == "awa_work_item" else INTERACTION
    script = (
        "business_rule_awa_work_item.js"
        if table == "awa_work_item"
        else ("business_rule_interaction.js")
    )
    # only the system fields moved (e.g. a field the bridge does not read was edited)
    previous = {**record, "sys_mod_count": "1", "sys_updated_on": "2026-12-03 14:00:00"}
    assert _run(script, record, previous)["changed"] is False
