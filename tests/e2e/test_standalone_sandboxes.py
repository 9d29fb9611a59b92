"""The README's three commands: both standalone sandboxes started with one ``--state-dir``
share one CA and leave env files there; ``bridge run`` with those files sourced (and
nothing else about the systems) connects to both and moves a conversation."""

from __future__ import annotations

import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from bridge_sandbox import seed
from bridge_sandbox.connect import SALESFORCE_ENV, SERVICENOW_ENV
from bridge_sandbox.serving import DEFAULT_STATE_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T = TypeVar("T")
SUPPORT = seed.QUEUES[0]
AGENTS = {a.sn_user_sys_id: a for a in seed.AGENTS}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(what: str, probe: Callable[[], T | None], seconds: float = 30.0) -> T:
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


def _env_values(path: Path) -> dict[str, str]:
    """What ``set -a; . FILE`` sets, read by the shell itself."""
    shown = subprocess.run(
        ["bash", "-c", f'set -a; . "{path}"; env -0'],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        check=True,
    ).stdout.decode()
    pairs = (item.split("=", 1) for item in shown.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("BRIDGE_")}


class Processes:
    """Subprocesses of one test, stopped (SIGTERM, then kill) at its end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.running.append((proc, log))
        return proc

    def tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for _, log in self.running)

    def stop(self) -> None:
        for proc, _ in self.running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.running:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop()


def test_both_sandboxes_default_to_one_state_dir() -> None:
    from bridge_sandbox.salesforce.cli import salesforce  # noqa: PLC0415
    from bridge_sandbox.servicenow.cli import servicenow  # noqa: PLC0415

    defaults = {
        inspect.signature(command).parameters["state_dir"].default
        for command in (salesforce, servicenow)
    }
    assert defaults == {DEFAULT_STATE_DIR}


def test_three_commands_connect_the_bridge_to_both_sandboxes(
    tmp_path: Path, processes: Processes
) -> None:
    state = tmp_path / "state"
    plain = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    cli = [sys.executable, "-m", "bridge.app.cli", "sandbox"]
    # started together: the second must find the first's CA, whichever it is
    for system in ("salesforce", "servicenow"):
        processes.start(system, [*cli, system, "--state-dir", str(state)], plain)
    sf_env_file, sn_env_file = state / SALESFORCE_ENV, state / SERVICENOW_ENV
    _until(
        "both env files written\n" + processes.tail(),
        lambda: sf_env_file.is_file() and sn_env_file.is_file(),
    )
    sf_env, sn_env = _env_values(sf_env_file), _env_values(sn_env_file)

    # one CA for both, one auth method each, the settings' own names
    assert sf_env["BRIDGE_CA_BUNDLE"] == sn_env["BRIDGE_CA_BUNDLE"]
    ca = sf_env["BRIDGE_CA_BUNDLE"]
    assert Path(ca).is_file()
    assert sf_env["BRIDGE_SALESFORCE__LOGIN_URL"] == sf_env["BRIDGE_SALESFORCE__INSTANCE_URL"]
    assert "BRIDGE_SALESFORCE__CLIENT_SECRET" in sf_env
    assert not {"BRIDGE_SALESFORCE__USERNAME", "BRIDGE_SALESFORCE__JWT_KEY_FILE"} & set(sf_env)
    assert sf_env["BRIDGE_SALESFORCE__AUTHORIZATION_CONTEXT"]
    assert "BRIDGE_SERVICENOW__PASSWORD" in sn_env
    assert not {"BRIDGE_SERVICENOW__CLIENT_ID", "BRIDGE_SERVICENOW__CLIENT_SECRET"} & set(sn_env)
    assert not {k for k in sf_env if k.startswith("BRIDGE_SERVICENOW__")}
    assert not {k for k in sn_env if k.startswith("BRIDGE_SALESFORCE__")}
    for stat in (sf_env_file.stat(), sn_env_file.stat()):
        assert stat.st_mode & 0o077 == 0  # secrets inside
    sf_url = sf_env["BRIDGE_SALESFORCE__INSTANCE_URL"]
    sn_url = sn_env["BRIDGE_SERVICENOW__INSTANCE_URL"]

    # the third command: the env files sourced, nothing else about the two systems
    port = _free_port()
    run_env = plain | {
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "BRIDGE_HTTP_PORT": str(port),
        "BRIDGE_SALESFORCE__POLL_INTERVAL": "0.2",
        "BRIDGE_SERVICENOW__POLL_INTERVAL": "0.2",
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_SECRETS_DIR": str(tmp_path),  # none: the machine's /run/secrets stays out
    }
    script = (
        f'set -a; . "{sf_env_file}"; . "{sn_env_file}"; set +a; '
        f'exec "{sys.executable}" -m bridge.app.cli run --reconcile-every 0'
    )
    bridge = processes.start("bridge", ["bash", "-c", script], run_env)

    def ready() -> bool:
        assert bridge.poll() is None, processes.tail()
        try:
            return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    _until("the bridge ready on both systems\n" + processes.tail(), ready, 60)

    def call(method: str, url: str, **kwargs: Any) -> Any:
        response = requests.request(method, url, verify=ca, timeout=10, **kwargs)
        assert response.ok, (url, response.status_code, response.text)
        body = response.json()
        # the instance's control surface answers as its Table API does: {"result": ...}
        return body["result"] if url.startswith(sn_url) else body

    started = call(
        "POST", f"{sf_url}/__sandbox/conversations", json={"queue": SUPPORT.sf_developer_name}
    )
    work_item_id = started["work_item_id"]

    def offered() -> dict[str, Any] | None:
        pending = call("GET", f"{sn_url}/__sandbox/work_items/pending")
        return next(iter(pending), None)  # nothing else runs on these sandboxes

    offer = _until("the PSR offered in AWA\n" + processes.tail(), offered)
    agent = AGENTS[offer["assigned_to"]]
    call("POST", f"{sn_url}/__sandbox/work_items/{offer['sys_id']}/accept")

    def agent_work() -> dict[str, Any] | None:
        found = call("GET", f"{sf_url}/__sandbox/users/{agent.sf_user_id}/agent-work")
        return next((w for w in found if w["WorkItemId"] == work_item_id), None)

    work = _until("the AgentWork for the accepting agent\n" + processes.tail(), agent_work)
    # what both systems hold: the AWA work item accepted by the agent, the interaction
    # it belongs to, and the AgentWork of the same agent on the Salesforce work item
    item = call("GET", f"{sn_url}/__sandbox/work_items/{offer['sys_id']}")
    assert (item["state"], item["assigned_to"]) == ("accepted", agent.sn_user_sys_id)
    interaction = call("GET", f"{sn_url}/__sandbox/interactions/{item['document_id']}")
    assert interaction["state"] != "closed_abandoned"
    assert work["UserId"][:15] == agent.sf_user_id[:15]
    assert work["Status"] in ("Assigned", "Opened")
    assert re.fullmatch(r"0Bz\w{15}", work["Id"])
