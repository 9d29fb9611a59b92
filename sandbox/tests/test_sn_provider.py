"""The sandbox instance's AWA External Routing provider subflow: every work item /
interaction change POSTed once, asynchronously, to a real HTTPS receiver (its own CA),
with Basic auth; the faults, pause/resume, the delivery log and no retry on failure."""

from __future__ import annotations

import base64
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge_sandbox import seed
from bridge_sandbox.servicenow import provider
from bridge_sandbox.servicenow.app import INSTANCE_NAME, ServiceNowSandbox
from bridge_sandbox.servicenow.provider import (
    INTERACTION_FIELDS,
    WORK_ITEM_FIELDS,
    ProviderEndpoint,
)
from bridge_sandbox.servicenow.store import ServiceNowApiError
from bridge_sandbox.serving import SandboxCA, ServedApp
from tests.fixtures.servicenow import sn_session

pytestmark = pytest.mark.integration

PATH = "/servicenow/events"
USER, PASSWORD = "servicenow-events", "s3cret-receiver-password"
ALICE = seed.AGENTS[0].sn_user_sys_id
OVERFLOW = seed.QUEUES[2]
SUPPORT = seed.QUEUES[0]
SENT_AT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")
SN_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@dataclass
class Receiver:
    """A provider endpoint: records every request; answers ``status``."""

    ca: SandboxCA
    status: int = 202
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    served: ServedApp | None = None

    @property
    def url(self) -> str:
        assert self.served is not None
        return f"{self.served.url}{PATH}"

    async def endpoint(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self.lock:
            self.received.append(
                {
                    "at": time.monotonic(),
                    "authorization": request.headers.get("authorization", ""),
                    "content_type": request.headers.get("content-type", ""),
                    "body": body,
                }
            )
        return JSONResponse({"result": "recorded"}, status_code=self.status)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["body"] for r in self.received]

    def events(self) -> list[tuple[str, str, int]]:
        return [(b["event"], b["sys_id"], b["sys_mod_count"]) for b in self.bodies()]


@pytest.fixture(scope="module")
def receiver_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    receiver = Receiver(SandboxCA(tmp_path_factory.mktemp("receiver-ca"), server="receiver"))
    app = Starlette(routes=[Route(PATH, receiver.endpoint, methods=["POST"])])
    receiver.served = ServedApp(app, receiver.ca, name="test-receiver")
    with receiver.served:
        yield receiver


@pytest.fixture
def receiver(receiver_server: Receiver, sn_sandbox: ServiceNowSandbox) -> Iterator[Receiver]:
    """The receiver, empty, and the sandbox instance delivering to it."""
    receiver_server.status = 202
    receiver_server.received.clear()
    sn_sandbox.control.set_provider(
        receiver_server.url, USER, PASSWORD, str(receiver_server.ca.ca_bundle)
    )
    yield receiver_server
    sn_sandbox.control.clear_provider()
    sn_sandbox.control.resume_deliveries()


def settled(sandbox: ServiceNowSandbox) -> list[dict[str, Any]]:
    assert sandbox.control.wait_deliveries(10), sandbox.control.deliveries()
    return sandbox.control.deliveries()


def offer(sandbox: ServiceNowSandbox, interaction: str, agent: str = ALICE) -> str:
    body = {"queue_id": OVERFLOW.sn_external_id, "assignment": {"agent_sys_id": agent}}
    result = sandbox.awa.offer("interaction", interaction, body, caller=None)
    return str(result["work_item"]["sys_id"])


def test_every_change_is_delivered_once_in_order_with_the_contract_payload(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    item = started["work_item"]
    offer(sn_sandbox, started["interaction"])
    sn_sandbox.control.accept(item)
    log = settled(sn_sandbox)

    interaction = sn_sandbox.control.interaction(started["interaction"])
    stored = sn_sandbox.control.work_item(item)
    # the interaction's insert sends nothing (its Business Rule is after update)
    assert receiver.events() == [
        ("awa_work_item.created", item, 0),
        ("awa_work_item.updated", item, 1),  # offered
        ("awa_work_item.updated", item, 2),  # accepted
        ("interaction.updated", interaction["sys_id"], 1),  # in progress with the agent
    ]
    assert (stored["sys_mod_count"], interaction["sys_mod_count"]) == ("2", "1")
    last_item, last_interaction = receiver.bodies()[2], receiver.bodies()[3]
    system = ("sys_id", "sys_mod_count", "sys_updated_on")
    # what the bridge's polls read, the Table API's values as stored
    assert last_item["record"] == {f: stored[f] for f in (*system, *WORK_ITEM_FIELDS)}
    assert last_interaction["record"] == {f: interaction[f] for f in (*system, *INTERACTION_FIELDS)}
    assert (last_item["table"], last_item["record"]["state"]) == ("awa_work_item", "accepted")
    assert last_item["sys_updated_on"] == stored["sys_updated_on"]
    assert SN_TIME.match(last_item["sys_updated_on"])
    for body in receiver.bodies():
        assert body["instance"] == INSTANCE_NAME
        assert SENT_AT.match(body["sent_at"]), body["sent_at"]
        assert body["sys_mod_count"] == int(body["record"]["sys_mod_count"])
    expected_auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert {r["authorization"] for r in receiver.received} == {expected_auth}
    assert {r["content_type"] for r in receiver.received} == {"application/json"}
    assert [(d["event"], d["sys_id"], d["sys_mod_count"]) for d in log] == receiver.events()
    assert {(d["state"], d["attempts"], d["status_code"], d["error"]) for d in log} == {
        ("sent", 1, 202, None)
    }
    assert all(d["sent_at"] and d["created"] and d["payload"]["record"] for d in log)


def test_a_transfer_makes_a_transferred_event(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    offer(sn_sandbox, started["interaction"])
    sn_sandbox.control.accept(started["work_item"])
    moved = sn_sandbox.control.transfer(started["work_item"], "queue", SUPPORT.name)
    settled(sn_sandbox)
    new = moved["work_item"]["sys_id"]
    transferred = [b for b in receiver.bodies() if b["event"] == "awa_work_item.transferred"]
    assert [(b["sys_id"], b["sys_mod_count"]) for b in transferred] == [(new, 0)]
    assert transferred[0]["record"]["previous_work_item"] == started["work_item"]
    previous = [b for b in receiver.bodies() if b["sys_id"] == started["work_item"]][-1]
    assert (previous["event"], previous["record"]["active"]) == ("awa_work_item.updated", "false")


def test_table_api_writes_are_delivered(sn_sandbox: ServiceNowSandbox, receiver: Receiver) -> None:
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    with sn_session(sn_sandbox) as session:
        answer = session.patch(
            f"{sn_sandbox.instance_url}/api/now/table/interaction/{started['interaction']}",
            json={"correlation_id": "0Mw000000000001"},
        )
    assert answer.status_code == 200, answer.text
    settled(sn_sandbox)
    last = receiver.bodies()[-1]
    assert (last["event"], last["sys_mod_count"], last["record"]["correlation_id"]) == (
        "interaction.updated",
        1,
        "0Mw000000000001",
    )


def test_queues_not_external_push_only_interactions_the_bridge_made(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    sn_sandbox.instance.update("awa_queue", OVERFLOW.sn_queue_sys_id, {"external": "false"})
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    offer(sn_sandbox, started["interaction"])
    assert settled(sn_sandbox) == []
    sn_sandbox.instance.update(
        "interaction", started["interaction"], {"correlation_id": "0Mw000000000002"}
    )
    settled(sn_sandbox)
    assert receiver.events() == [("interaction.updated", started["interaction"], 1)]


def test_an_update_of_fields_the_bridge_does_not_read_sends_nothing(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    with sn_session(sn_sandbox) as session:
        answer = session.patch(
            f"{sn_sandbox.instance_url}/api/now/table/interaction/{started['interaction']}",
            json={"short_description": "Printer on fire"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["sys_mod_count"] == "1"
    settled(sn_sandbox)
    assert receiver.events() == [("awa_work_item.created", started["work_item"], 0)]


def test_without_a_provider_nothing_is_delivered(
    sn_sandbox: ServiceNowSandbox, receiver_server: Receiver
) -> None:
    receiver_server.received.clear()
    sn_sandbox.control.create_interaction(OVERFLOW.name)
    assert sn_sandbox.control.wait_deliveries(1)
    assert (sn_sandbox.control.deliveries(), receiver_server.received) == ([], [])
    assert sn_sandbox.control.provider() is None


def test_drop(sn_sandbox: ServiceNowSandbox, receiver: Receiver) -> None:
    sn_sandbox.control.set_delivery_faults({"drop": 1})
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    offer(sn_sandbox, started["interaction"])
    log = settled(sn_sandbox)
    item = started["work_item"]
    assert receiver.events() == [("awa_work_item.updated", item, 1)]
    assert [(d["sys_mod_count"], d["state"], d["attempts"], d["sent_at"]) for d in log] == [
        (0, "dropped", 0, None),
        (1, "sent", 1, log[1]["sent_at"]),
    ]
    assert sn_sandbox.control.delivery_faults()["drop"] == 0  # used up


def test_delay(sn_sandbox: ServiceNowSandbox, receiver: Receiver) -> None:
    sn_sandbox.control.set_delivery_faults({"delay_ms": 400})
    changed = time.monotonic()
    sn_sandbox.control.create_interaction(OVERFLOW.name)
    settled(sn_sandbox)
    assert len(receiver.received) == 1
    assert receiver.received[0]["at"] - changed >= 0.4


def test_duplicate(sn_sandbox: ServiceNowSandbox, receiver: Receiver) -> None:
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    settled(sn_sandbox)
    sn_sandbox.control.set_delivery_faults({"duplicate": 1})
    offer(sn_sandbox, started["interaction"])
    log = settled(sn_sandbox)
    offered = ("awa_work_item.updated", started["work_item"], 1)
    assert receiver.events()[1:] == [offered, offered]
    assert receiver.bodies()[1] == receiver.bodies()[2]
    assert (log[-1]["attempts"], log[-1]["statuses"]) == (2, [202, 202])


def test_reorder_sends_pairs_swapped(sn_sandbox: ServiceNowSandbox, receiver: Receiver) -> None:
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    settled(sn_sandbox)
    sn_sandbox.control.set_delivery_faults({"reorder": 1})
    item = started["work_item"]
    with sn_sandbox.instance.lock:  # two changes before the worker looks
        offer(sn_sandbox, started["interaction"])
        sn_sandbox.control.accept(item)
    settled(sn_sandbox)
    assert receiver.events()[1:] == [
        ("awa_work_item.updated", item, 2),
        ("awa_work_item.updated", item, 1),
        ("interaction.updated", started["interaction"], 1),
    ]


def test_a_held_delivery_with_nothing_to_swap_with_goes_alone(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    settled(sn_sandbox)
    sn_sandbox.control.set_delivery_faults({"reorder": 1})
    offer(sn_sandbox, started["interaction"])
    time.sleep(0.2)
    assert [d["state"] for d in sn_sandbox.control.deliveries()][-1] == "held"
    settled(sn_sandbox)
    assert receiver.events()[1:] == [("awa_work_item.updated", started["work_item"], 1)]


def test_pause_holds_deliveries_and_resume_sends_them_in_order(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    sn_sandbox.control.pause_deliveries()
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    offer(sn_sandbox, started["interaction"])
    assert not sn_sandbox.control.wait_deliveries(0.3)
    assert receiver.received == []
    assert [d["state"] for d in sn_sandbox.control.deliveries()] == ["queued"] * 2
    sn_sandbox.control.resume_deliveries()
    settled(sn_sandbox)
    assert receiver.events() == [
        ("awa_work_item.created", started["work_item"], 0),
        ("awa_work_item.updated", started["work_item"], 1),
    ]


def test_a_refused_delivery_is_not_retried(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    receiver.status = 503
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    log = settled(sn_sandbox)
    time.sleep(0.3)  # a retry would have come by now
    assert len(receiver.received) == 1
    assert [
        (d["sys_id"], d["state"], d["attempts"], d["status_code"], d["error"]) for d in log
    ] == [(started["work_item"], "failed", 1, 503, "HTTP 503")]


def test_an_unreachable_provider_is_logged_and_not_retried(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    closed = ServedApp(Starlette(), receiver.ca, name="closed")
    port = closed.port
    closed.stop()  # the port is free again: connection refused
    sn_sandbox.control.set_provider(
        f"https://127.0.0.1:{port}{PATH}", USER, PASSWORD, str(receiver.ca.ca_bundle)
    )
    sn_sandbox.control.create_interaction(OVERFLOW.name)
    log = settled(sn_sandbox)
    assert [(d["state"], d["attempts"], d["status_code"]) for d in log] == [("failed", 1, None)]
    assert all("ConnectionError" in d["error"] for d in log)
    assert receiver.received == []


def test_tls_is_verified_against_the_configured_ca(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    # the sandbox's own CA (the default) did not issue the receiver's certificate
    sn_sandbox.control.set_provider(receiver.url, USER, PASSWORD)
    assert sn_sandbox.control.provider() == {
        "url": receiver.url,
        "username": USER,
        "ca_file": str(sn_sandbox.ca_bundle),
    }
    sn_sandbox.control.create_interaction(OVERFLOW.name)
    log = settled(sn_sandbox)
    assert receiver.received == []
    assert [(d["state"], d["attempts"]) for d in log] == [("failed", 1)]
    assert all("SSLError" in d["error"] for d in log)


def test_reset_clears_the_log_and_faults_and_keeps_the_provider(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    sn_sandbox.control.set_delivery_faults({"drop": 5, "delay_ms": 10})
    sn_sandbox.control.pause_deliveries()
    sn_sandbox.control.create_interaction(OVERFLOW.name)
    sn_sandbox.control.reset()
    assert sn_sandbox.control.deliveries() == []
    assert sn_sandbox.control.delivery_faults() == {
        "drop": 0,
        "delay_ms": 0.0,
        "duplicate": 0,
        "reorder": 0,
    }
    started = sn_sandbox.control.create_interaction(OVERFLOW.name)
    settled(sn_sandbox)
    assert [k[1] for k in receiver.events()] == [started["work_item"]]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"drop": -1}, "Invalid 'drop'"),
        ({"duplicate": 1.5}, "Invalid 'duplicate'"),
        ({"reorder": True}, "Invalid 'reorder'"),
        ({"delay_ms": "slow"}, "Invalid 'delay_ms'"),
        ({"lose": 1}, "Unknown delivery faults"),
    ],
)
def test_bad_faults_are_refused(
    sn_sandbox: ServiceNowSandbox, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ServiceNowApiError) as refused:
        sn_sandbox.control.set_delivery_faults(spec)
    assert (refused.value.status, refused.value.message) == (400, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "ftp://x/y", "username": "u", "password": "p"}, "Invalid 'url'"),
        ({"url": "https:///events", "username": "u", "password": "p"}, "Invalid 'url'"),
        ({"url": "https://h/e", "password": "p"}, "Missing or invalid 'username'"),
        ({"url": "https://h/e", "username": "u", "password": ""}, "Missing or invalid 'password'"),
        (
            {"url": "https://h/e", "username": "u", "password": "p", "ca_file": "/nowhere.pem"},
            "Invalid 'ca_file'",
        ),
    ],
)
def test_bad_provider_settings_are_refused_over_http(
    sn_sandbox: ServiceNowSandbox, body: dict[str, Any], message: str
) -> None:
    with sn_session(sn_sandbox) as session:
        session.auth = None
        answer = session.post(f"{sn_sandbox.instance_url}/__sandbox/provider", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == message
    assert sn_sandbox.control.provider() is None


def test_control_routes(sn_sandbox: ServiceNowSandbox, receiver_server: Receiver) -> None:
    receiver_server.status = 202
    receiver_server.received.clear()
    base = f"{sn_sandbox.instance_url}/__sandbox"
    with sn_session(sn_sandbox) as session:
        session.auth = None

        def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
            answer = session.request(method, base + path, json=body)
            assert answer.status_code == 200, answer.text
            return answer.json()["result"]

        try:
            configured = call(
                "POST",
                "/provider",
                {
                    "url": receiver_server.url,
                    "username": USER,
                    "password": PASSWORD,
                    "ca_file": str(receiver_server.ca.ca_bundle),
                },
            )
            assert configured == call("GET", "/provider")
            assert PASSWORD not in str(configured)
            assert call("POST", "/deliveries/faults", {"duplicate": 1, "delay_ms": 5}) == {
                "drop": 0,
                "delay_ms": 5.0,
                "duplicate": 1,
                "reorder": 0,
            }
            assert call("GET", "/deliveries/faults")["duplicate"] == 1
            call("DELETE", "/deliveries/faults")
            assert call("GET", "/deliveries/faults")["duplicate"] == 0
            call("POST", "/deliveries/pause")
            started = call("POST", "/interactions", {"queue": OVERFLOW.name})
            assert [d["state"] for d in call("GET", "/deliveries")] == ["queued"]
            call("POST", "/deliveries/resume")
            assert sn_sandbox.control.wait_deliveries(10)
            log = call("GET", "/deliveries")
            assert [(d["sys_id"], d["state"]) for d in log] == [(started["work_item"], "sent")]
            assert log[0]["payload"]["record"]["sys_id"] == started["work_item"]
            other = sn_sandbox.control.create_interaction(OVERFLOW.name)
            assert sn_sandbox.control.wait_deliveries(10)
            mine = call("GET", f"/deliveries?sys_id={started['work_item']}")
            assert [d["sys_id"] for d in mine] == [started["work_item"]]
            assert [d["sys_id"] for d in call("GET", "/deliveries?limit=1")] == [other["work_item"]]
            refused = session.get(f"{base}/deliveries?limit=-1")
            assert (refused.status_code, refused.json()["error"]["message"]) == (
                400,
                "Invalid 'limit'",
            )
            call("DELETE", "/deliveries")
            assert call("GET", "/deliveries") == []
            call("DELETE", "/provider")
            assert call("GET", "/provider") is None
        finally:
            sn_sandbox.control.clear_provider()
            sn_sandbox.control.resume_deliveries()
    assert len(receiver_server.received) == 2


def test_deliveries_do_not_hold_the_table_api(
    sn_sandbox: ServiceNowSandbox, receiver: Receiver
) -> None:
    """A slow provider delays deliveries, never the instance's writes."""
    sn_sandbox.control.set_delivery_faults({"delay_ms": 2000})
    started = time.monotonic()
    for _ in range(20):
        sn_sandbox.control.create_interaction(OVERFLOW.name)
    assert time.monotonic() - started < 1.0
    assert len(sn_sandbox.control.deliveries()) == 20
    sn_sandbox.control.clear_provider()  # discard the rest
    assert {d["state"] for d in sn_sandbox.control.deliveries()} <= {"discarded", "queued", "sent"}


def test_the_password_is_not_in_the_endpoint_repr() -> None:
    assert PASSWORD not in repr(ProviderEndpoint("https://h/e", USER, PASSWORD))


def test_the_record_fields_are_what_the_bridge_polls_and_deploy_scripts_read() -> None:
    """The instance's copy of ``BridgeAwaEvent``'s field lists (the emulator does not
    import the bridge) stays the bridge's polls' lists and the deploy script's."""
    # imported here: the rest of this file must not depend on the bridge's ledger imports
    polling = importlib.import_module("bridge.adapters.servicenow.polling")
    assert provider.WORK_ITEM_FIELDS == polling.WORK_ITEM_FIELDS
    assert provider.INTERACTION_FIELDS == polling.INTERACTION_FIELDS
    script = Path(__file__).parents[2] / "deploy" / "servicenow" / "BridgeAwaEvent.js"
    text = script.read_text()
    for name, fields in (
        ("WORK_ITEM_FIELDS", WORK_ITEM_FIELDS),
        ("INTERACTION_FIELDS", INTERACTION_FIELDS),
        ("SYSTEM_FIELDS", provider.SYSTEM_FIELDS),
    ):
        found = re.search(rf"BridgeAwaEvent\.{name} = \[(.*?)\];", text, re.DOTALL)
        assert found is not None, name
        assert tuple(re.findall(r"'(\w+)'", found.group(1))) == fields, name


CLI = "import typer; from bridge_sandbox.servicenow.cli import servicenow; typer.run(servicenow)"


def test_the_cli_flags_configure_the_provider(receiver_server: Receiver, tmp_path: Path) -> None:
    receiver_server.status = 202
    receiver_server.received.clear()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            "--state-dir",
            str(tmp_path),
            "--provider-url",
            receiver_server.url,
            "--provider-user",
            USER,
            "--provider-ca-file",
            str(receiver_server.ca.ca_bundle),
        ],
        env={**os.environ, "BRIDGE_SANDBOX_PROVIDER_PASSWORD": PASSWORD},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state_file = tmp_path / "servicenow.json"
        deadline = time.monotonic() + 30
        while not state_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no servicenow.json"
            time.sleep(0.1)
        state = json.loads(state_file.read_text())
        with requests.Session() as session:
            session.trust_env = False
            base = f"{state['instance_url']}/__sandbox"
            verify = state["ca_bundle"]
            started = session.post(
                f"{base}/interactions", json={"queue": OVERFLOW.name}, verify=verify
            ).json()["result"]
            provider_now = session.get(f"{base}/provider", verify=verify).json()["result"]
            deadline = time.monotonic() + 10
            while not receiver_server.received and time.monotonic() < deadline:
                time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert provider_now == {
        "url": receiver_server.url,
        "username": USER,
        "ca_file": str(receiver_server.ca.ca_bundle),
    }
    assert receiver_server.events() == [("awa_work_item.created", started["work_item"], 0)]
    assert f"Deliveries: {receiver_server.url} as {USER}" in out
    assert PASSWORD not in out + err


def test_the_cli_wants_credentials_with_a_provider_url(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", CLI, "--state-dir", str(tmp_path), "--provider-url", "https://h/e"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **{k: v for k, v in os.environ.items() if k != "BRIDGE_SANDBOX_PROVIDER_PASSWORD"},
            "COLUMNS": "300",  # the error box on one line
        },
    )
    assert finished.returncode == 2
    assert "--provider-url needs --provider-user and --provider-password" in finished.stderr
    assert not (tmp_path / "servicenow.json").exists()


def test_the_demo_wires_the_provider_in_push_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = importlib.import_module("bridge_sandbox.demo")
    monkeypatch.setenv("BRIDGE_SERVICENOW__INTAKE", "push")
    report = demo.run_demo(6, seed=2, directory=tmp_path)
    assert report.ok, report.as_dict()
    assert set(report.deliveries) == {"sent"}, report.deliveries
    assert report.deliveries["sent"] >= 6  # at least one work item created per conversation


def test_the_state_file_is_replaced_whole(sn_server: ServiceNowSandbox, tmp_path: Path) -> None:
    """A reader that sees servicenow.json (the CLI tests poll for it) never reads half of
    it: each write makes a new file and renames it over the old one (a new inode), rather
    than truncating and rewriting the one a reader may have open."""
    first = sn_server.write_state(tmp_path)
    inode = first.stat().st_ino
    again = sn_server.write_state(tmp_path)
    assert again.stat().st_ino != inode
    assert json.loads(again.read_text())["instance_url"] == sn_server.instance_url
    assert [p.name for p in tmp_path.iterdir()] == ["servicenow.json"]
