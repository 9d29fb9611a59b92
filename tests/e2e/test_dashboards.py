"""The Grafana dashboard and the Prometheus alert rules under deploy/ name only metrics that
a running bridge exports: `bridge run` as a subprocess against both sandboxes, one
conversation offered, one scheduled reconciliation, then /metrics. The rules pass
`promtool check rules` and their own `promtool test rules` cases (Debian package
`prometheus`; skipped without it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bridge_sandbox.connect import sandbox_values
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "bridge-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
METRIC = re.compile(r"\bbridge_[a-z0-9_]+\b")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _exprs(value)


def dashboard_metrics() -> set[str]:
    return {m for e in _exprs(json.loads(DASHBOARD.read_text())) for m in METRIC.findall(e)}


def rule_metrics() -> set[str]:
    return {m for e in _exprs(yaml.safe_load(RULES.read_text())) for m in METRIC.findall(e)}


def test_the_files_name_the_issue_s_panels_and_alerts() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    for title in (
        "Conversations by state",
        "Intake lag per stream",
        "Dispatch latency",
        "Dead letters",
        "Salesforce API usage vs allocation",
        "Reconcile findings",
        "Instances",
    ):
        assert title in titles
    for panel in dashboard["panels"]:
        assert panel["type"] == "row" or panel["targets"], panel["title"]
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {
        "BridgeStreamDown",
        "BridgeIntakeLag",
        "BridgeDeadLettersRising",
        "BridgeSalesforceApiUsageHigh",
        "BridgeReconcileFindingsUnresolved",
        "BridgeNoLeaseHolder",
    } <= alerts


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    return promtool


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_rule_cases() -> None:
    """Each alert fires on the series it is about (and the lease rules on one instance)."""
    result = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# --- a running bridge ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def bridge_url(
    sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox, tmp_path: Path
) -> Iterator[str]:
    """`bridge run` against both sandboxes, reconciling every 2 s; its /metrics URL base."""
    (tmp_path / "secrets").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    for key, value in sandbox_values(sf_sandbox, sn_sandbox).items():
        if isinstance(value, dict):
            env.update({f"BRIDGE_{key.upper()}__{k.upper()}": str(v) for k, v in value.items()})
        else:
            env[f"BRIDGE_{key.upper()}"] = str(value)
    port = _free_port()
    env |= {
        "BRIDGE_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "BRIDGE_DATA_DIR": str(tmp_path),
        "BRIDGE_HTTP_PORT": str(port),
        "BRIDGE_SALESFORCE__POLL_INTERVAL": "0.2",
        "BRIDGE_SERVICENOW__POLL_INTERVAL": "0.2",
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_SECRETS_DIR": str(tmp_path / "secrets"),
    }
    log = tmp_path / "bridge.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.app.cli", "run", "--reconcile-every", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get(url, "/readyz").status_code == 200, proc, log, "/readyz 200")
        yield url
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(url: str, path: str) -> requests.Response:
    # plain HTTP on loopback; no proxies or CA bundle from the environment
    session = requests.Session()
    session.trust_env = False
    try:
        return session.get(url + path, timeout=5)
    finally:
        session.close()


def _wait(ready: Any, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if ready():
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"never: {what}\n{log.read_text()[-3000:]}")


def _exported(text: str) -> tuple[set[str], dict[str, list[Any]]]:
    """Every metric name /metrics declares (with the suffixes its type implies), and the
    samples by name."""
    names: set[str] = set()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        base = family.name
        names.add(base)
        names.update(base + s for s in SUFFIXES.get(family.type, ()))
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return names, samples


@pytest.mark.integration
@pytest.mark.slow
def test_every_metric_the_dashboard_and_rules_name_is_exported(
    bridge_url: str, sf_sandbox: SalesforceSandbox, sn_sandbox: ServiceNowSandbox
) -> None:
    sf_sandbox.control.start_conversation("Support_External")
    deadline = time.monotonic() + 20
    while not sn_sandbox.control.pending_offers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sn_sandbox.control.pending_offers(), "the bridge never offered the conversation"

    def scraped() -> tuple[set[str], dict[str, list[Any]]]:
        return _exported(_get(bridge_url, "/metrics").text)

    deadline = time.monotonic() + 20
    names, samples = scraped()
    while "bridge_reconcile_last_run_findings" not in samples and time.monotonic() < deadline:
        time.sleep(0.2)
        names, samples = scraped()

    referenced = dashboard_metrics() | rule_metrics()
    assert len(referenced) >= 12
    missing = sorted(referenced - names)
    assert missing == [], f"named by deploy/ but not on /metrics: {missing}"
    # ... and with values from this bridge, not only declared
    for name in sorted(referenced):
        if name.endswith(("_bucket", "_total")):
            continue
        assert name in samples, f"{name} has no sample"

    def value(name: str, **labels: str) -> float:
        (match,) = [s for s in samples[name] if labels.items() <= s.labels.items()]
        return float(match.value)

    (info,) = samples["bridge_instance_info"]
    assert info.value == 1
    assert info.labels["ledger"] == "sqlite"
    holders = {s.labels["stream"]: s.value for s in samples["bridge_stream_holder"]}
    assert len(holders) >= 2
    assert set(holders.values()) == {1.0}
    assert {s.labels["holder"] for s in samples["bridge_stream_holder"]} == {info.labels["id"]}
    assert value("bridge_intake_up", intake="salesforce") == 1
    assert value("bridge_intake_up", intake="servicenow") == 1
    assert value("bridge_salesforce_api_usage", kind="max") > 0
    assert value("bridge_salesforce_api_usage", kind="used") > 0
    offers = [s for s in samples["bridge_dispatch_latency_seconds_count"] if s.value > 0]
    assert {s.labels["system"] for s in offers} >= {"servicenow"}
    assert value("bridge_reconcile_last_run_timestamp_seconds") > time.time() - 60
    statuses = {s.labels["status"] for s in samples["bridge_reconcile_last_run_findings"]}
    assert {"unresolved", "failed"} <= statuses
