"""``servicenow`` command: serves, writes servicenow.json, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.adapters.http import make_session

pytestmark = pytest.mark.integration

RUNNER = "import typer; from bridge_sandbox.servicenow.cli import servicenow; typer.run(servicenow)"


def test_serves_until_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "--state-dir", str(tmp_path)],
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
        with make_session(state["ca_bundle"]) as session:
            session.trust_env = False
            answer = session.get(
                f"{state['instance_url']}/api/now/table/awa_queue",
                auth=(state["username"], state["password"]),
                headers={"Connection": "close"},
            )
        assert answer.status_code == 200
        assert answer.headers["X-Total-Count"] == "3"
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert state["instance_url"] in out
    assert state["password"] not in out
