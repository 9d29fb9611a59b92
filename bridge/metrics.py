"""Prometheus metrics of the bridge, in one registry so that tests and several bridges in
one process (the sandbox demo) do not collide with the default global registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_IN = Counter(
    "bridge_events_total",
    "Events received by intake, by source, kind and outcome.",
    ["source", "kind", "outcome"],
    registry=REGISTRY,
)
COMMANDS = Counter(
    "bridge_commands_total",
    "Outbox commands by system, operation and final status of the attempt.",
    ["system", "operation", "status"],
    registry=REGISTRY,
)
DISPATCH_LATENCY = Histogram(
    "bridge_dispatch_latency_seconds",
    "From the command's creation to its outbound call completing.",
    ["system", "operation"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
INTAKE_LAG = Gauge(
    "bridge_intake_lag_seconds",
    "Age of the newest change an intake stream has seen at its last poll.",
    ["stream"],
    registry=REGISTRY,
)
API_CALLS = Counter(
    "bridge_api_calls_total",
    "Outbound API calls by system, endpoint and HTTP status.",
    ["system", "endpoint", "status"],
    registry=REGISTRY,
)
SF_API_USAGE = Gauge(
    "bridge_salesforce_api_usage",
    "Salesforce daily API requests from Sforce-Limit-Info (used and max).",
    ["kind"],
    registry=REGISTRY,
)
RECONCILE_FINDINGS = Counter(
    "bridge_reconcile_findings_total",
    "Reconciliation findings by reconciler, kind and status.",
    ["reconciler", "kind", "status"],
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "bridge_outbox_commands",
    "Outbox commands by status at the last dispatcher pass.",
    ["status"],
    registry=REGISTRY,
)
