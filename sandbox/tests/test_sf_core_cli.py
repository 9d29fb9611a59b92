"""``bridge sandbox salesforce`` as a process: serves, writes its state file, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from simple_salesforce import Salesforce

from bridge.adapters.http import make_session
from bridge_sandbox import seed

RUNNER = "import typer; from bridge_sandbox.salesforce.cli import salesforce; typer.run(salesforce)"


def _wait_for(path: Path, process: subprocess.Popen[str], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, "the sandbox exited before writing its state"
        assert time.monotonic() < deadline, f"no {path} after {seconds} s"
        time.sleep(0.1)


def test_serves_until_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state_file = tmp_path / "salesforce.json"
        _wait_for(state_file, process)
        facts = json.loads(state_file.read_text())
        sf = Salesforce(
            consumer_key=facts["client_id"],
            consumer_secret=facts["client_secret"],
            domain=facts["instance_url"].removeprefix("https://") + "/services/oauth2/token#",
            session=make_session(facts["ca_bundle"]),
            version="62.0",
        )
        assert sf.query("SELECT COUNT() FROM User")["totalSize"] == len(seed.AGENTS) + 1
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert facts["instance_url"] in stdout
    assert facts["client_secret"] not in stdout
    assert "stopped" in stdout
