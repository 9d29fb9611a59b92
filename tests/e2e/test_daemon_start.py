"""`bridge run` at start: a credential a system rejects, or a CA bundle that is not PEM (or
does not trust the system), is one clear line and exit 2, not a daemon that runs on and is
never ready. A system that cannot be reached at start, and any failure later, only makes
the daemon not ready; it retries and becomes ready when the system is back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme

from bridge_sandbox.serving import Fault
from tests.e2e import test_daemon
from tests.e2e.test_daemon import BridgeProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

bridge_env = test_daemon.bridge_env  # the daemon tests' settings fixture, shared


def _run_to_exit(env: dict[str, str], timeout: float = 30.0) -> tuple[int, list[str]]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "run", "--reconcile-every", "0"],
        env={**env, "BRIDGE_LOG_FORMAT": "text"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert time.monotonic() - started < timeout
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


def _error_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("error:")]


def _wrong_pem(tmp_path: Path) -> str:
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda env, tmp: {"BRIDGE_SALESFORCE__CLIENT_SECRET": "not-the-secret"},
            "salesforce refused the bridge at start: OAuth token request failed",
        ),
        (
            lambda env, tmp: {"BRIDGE_SERVICENOW__PASSWORD": "not-the-password"},
            "servicenow refused the bridge at start",
        ),
        (
            lambda env, tmp: {"BRIDGE_CA_BUNDLE": str(_write(tmp / "ca.txt", "not a cert\n"))},
            "BRIDGE_CA_BUNDLE: ",
        ),
        (
            lambda env, tmp: {"BRIDGE_CA_BUNDLE": _wrong_pem(tmp)},
            "refused the bridge at start: TLS failure",
        ),
    ],
    ids=["salesforce-secret", "servicenow-password", "ca-not-pem", "ca-not-trusting"],
)
def test_rejected_at_start_is_one_line_and_exit_2(bridge_env, tmp_path, change, expected):
    env = {**bridge_env, **change(bridge_env, tmp_path)}
    code, lines = _run_to_exit(env)
    assert code == 2, lines
    errors = _error_lines(lines)
    assert len(errors) == 1, lines
    assert expected in errors[0], lines
    assert not any("Traceback" in line for line in lines), lines
    assert not any("bridge running" in line for line in lines), lines
    if "secret" in expected or "password" in expected:
        assert "not-the-" not in "\n".join(lines)  # the secret is never printed


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unreachable_at_start_runs_not_ready_then_ready(bridge_env, sn_sandbox, tmp_path):
    sn_sandbox.faults.add(Fault(path="^/api/", status=503))
    bridge = BridgeProcess(bridge_env, tmp_path / "bridge.log").start()
    try:
        down = bridge.wait_for("/readyz", 503).json()
        assert down["checks"]["servicenow"]["ok"] is False
        assert "servicenow not reachable at start" in bridge.log.read_text()
        sn_sandbox.faults.clear()
        assert bridge.wait_for("/readyz", 200).json()["status"] == "ready"
    finally:
        bridge.kill()


def test_a_credential_rejected_later_is_not_ready_and_retried(bridge_env, sf_sandbox, tmp_path):
    bridge = BridgeProcess(bridge_env, tmp_path / "bridge.log").start()
    try:
        bridge.wait_for("/readyz", 200)
        # the org refuses every REST call and token as if the connected app were revoked
        sf_sandbox.rest_faults.add(
            Fault(path="^/services/", status=401, error_code="INVALID_SESSION_ID")
        )
        down = bridge.wait_for("/readyz", 503).json()
        assert down["checks"]["salesforce"]["ok"] is False
        assert bridge.proc is not None
        assert bridge.proc.poll() is None  # still running
        sf_sandbox.rest_faults.clear()
        assert bridge.wait_for("/readyz", 200).json()["status"] == "ready"
    finally:
        bridge.kill()
