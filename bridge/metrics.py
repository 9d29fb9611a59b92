"""Prometheus metrics of the bridge, in one registry so that tests and several bridges in
one process (the sandbox demo) do not collide with the default global registry."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bridge import __version__
from bridge.domain import CorrelationState

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

# --- counted from the ledger (``observe_ledger``, the daemon's periodic job) -------------

CONVERSATIONS = Gauge(
    "bridge_conversations",
    "Conversations (correlations) in the ledger by state at the last count.",
    ["state"],
    registry=REGISTRY,
)
INBOX_EVENTS = Gauge(
    "bridge_inbox_events",
    "Inbox events by status at the last count (error: refused input, with its reason).",
    ["status"],
    registry=REGISTRY,
)
RECONCILE_LAST_RUN = Gauge(
    "bridge_reconcile_last_run_findings",
    "Findings of the latest reconciliation run by status (unresolved and failed need a person).",
    ["status"],
    registry=REGISTRY,
)
RECONCILE_LAST_RUN_AT = Gauge(
    "bridge_reconcile_last_run_timestamp_seconds",
    "When the latest reconciliation run started (Unix time).",
    registry=REGISTRY,
)

# --- intake streams and instances (the daemon) -------------------------------------------

INTAKE_UP = Gauge(
    "bridge_intake_up",
    "1 when the intake's last poll succeeded (authenticated, read), 0 when it failed.",
    ["intake"],
    registry=REGISTRY,
)
INTAKE_LAST_SUCCESS = Gauge(
    "bridge_intake_last_success_timestamp_seconds",
    "When the intake last polled successfully (Unix time).",
    ["intake"],
    registry=REGISTRY,
)
INSTANCE_INFO = Gauge(
    "bridge_instance_info",
    "1 for each running bridge instance, labelled with its id (host:pid), version and ledger "
    "backend (not `instance`: Prometheus gives that label to the scrape target).",
    ["id", "version", "ledger"],
    registry=REGISTRY,
)
STREAM_HOLDER = Gauge(
    "bridge_stream_holder",
    "1 when this instance runs the intake stream (holds its lease), else 0. One instance "
    "runs every stream until leases arrive; the series is the lease view replicas will share.",
    ["stream", "holder"],  # holder: the instance id of bridge_instance_info
    registry=REGISTRY,
)

# --- change streams (issue 10; ``bridge.flow.stream_metrics`` feeds them) -----------------

STREAM_EVENTS = Counter(
    "bridge_stream_events_total",
    "Change events a stream delivered, by stream, channel, entity, change type and what the "
    "inbox did with them (recorded, duplicate, stale).",
    ["stream", "channel", "entity", "change_type", "outcome"],
    registry=REGISTRY,
)
STREAM_LAG = Histogram(
    "bridge_stream_lag_seconds",
    "From a change's commit at the source (CDC commitTimestamp, PushTopic createdDate) to "
    "the inbox commit that recorded it.",
    ["stream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
STREAM_RECONNECTS = Counter(
    "bridge_stream_reconnects_total",
    "Subscriptions opened again, by stream and reason (lost: the connection failed or "
    "ended; silent: the keepalive watchdog saw no event and no keepalive in time).",
    ["stream", "reason"],
    registry=REGISTRY,
)
STREAM_REPLAY_FALLBACKS = Counter(
    "bridge_stream_replay_fallbacks_total",
    "Stored positions the source refused (outside retention, corrupted, another org "
    "instance) or that were dropped (data-centre recovery), each followed by a catch-up "
    "read and a finding in the ledger.",
    ["stream", "reason"],
    registry=REGISTRY,
)
STREAM_UP = Gauge(
    "bridge_stream_up",
    "1 while the stream's subscription is open, by stream and intake mode.",
    ["stream", "mode"],
    registry=REGISTRY,
)
STREAM_DOWN_SECONDS = Gauge(
    "bridge_stream_down_seconds",
    "How long the stream's subscription has been closed (0 while it is open).",
    ["stream"],
    registry=REGISTRY,
)

# The ledger's finding statuses (bridge.ledger.rows; not imported: the adapters import this
# module, and they stay clear of the ledger).
FINDING_STATUSES = ("planned", "applied", "failed", "unresolved", "skipped")


def _set_all(gauge: Gauge, counts: Mapping[str, int], known: Iterable[str]) -> None:
    """Every known label to its count, absent ones to 0 (a state that empties drops to 0
    instead of keeping its last value)."""
    for label in {*known, *counts}:
        gauge.labels(label).set(counts.get(label, 0))


def observe_ledger(
    stats: Mapping[str, Any], last_run: tuple[datetime | None, Mapping[str, int]] | None
) -> None:
    """The gauges counted from the ledger: ``stats`` is ``audit.stats()``; ``last_run`` the
    latest reconciliation run's start and finding counts by status."""
    _set_all(
        CONVERSATIONS,
        stats["correlations"]["by_state"],
        (s.value for s in CorrelationState),
    )
    _set_all(INBOX_EVENTS, stats["inbox"]["by_status"], ("pending", "error"))
    _set_all(OUTBOX_DEPTH, stats["outbox"]["by_status"], ("pending", "dead"))
    if last_run is not None:
        started, counts = last_run
        _set_all(RECONCILE_LAST_RUN, counts, FINDING_STATUSES)
        if started is not None:
            RECONCILE_LAST_RUN_AT.set(started.timestamp())


def observe_poll(intake: str, ok: bool, at: float) -> None:
    """An intake's poll: up or down, and when it last succeeded (Unix time)."""
    INTAKE_UP.labels(intake).set(1 if ok else 0)
    if ok:
        INTAKE_LAST_SUCCESS.labels(intake).set(at)


def instance_id() -> str:
    """This process as an instance: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def observe_instance(instance: str, ledger: str, streams: Iterable[str], holding: bool) -> None:
    """This instance and the streams it runs (every stream while there are no leases)."""
    INSTANCE_INFO.labels(instance, __version__, ledger).set(1 if holding else 0)
    for stream in streams:
        STREAM_HOLDER.labels(stream, instance).set(1 if holding else 0)


def observe_stream_events(
    stream: str,
    channel: str,
    counts: Mapping[tuple[str, str, str], int],
    lags: Iterable[float] = (),
) -> None:
    """A stream's recorded batch: ``counts`` by (entity, change type, outcome) and the
    lag of each recorded event (seconds from its commit at the source)."""
    for (entity, change_type, outcome), count in counts.items():
        STREAM_EVENTS.labels(stream, channel, entity, change_type, outcome).inc(count)
    for lag in lags:
        STREAM_LAG.labels(stream).observe(max(0.0, lag))


def observe_stream_reconnect(stream: str, reason: str, count: int = 1) -> None:
    """The subscription opened again after ``reason`` (``lost`` or ``silent``)."""
    if count > 0:
        STREAM_RECONNECTS.labels(stream, reason).inc(count)


def observe_replay_fallback(stream: str, reason: str, count: int = 1) -> None:
    """A stored position given up (``refused`` by the source, ``reinitialized``)."""
    if count > 0:
        STREAM_REPLAY_FALLBACKS.labels(stream, reason).inc(count)


def observe_stream_up(stream: str, mode: str, up: bool, down_for: float) -> None:
    """Whether the subscription is open and, when not, for how long it has been closed."""
    STREAM_UP.labels(stream, mode).set(1 if up else 0)
    STREAM_DOWN_SECONDS.labels(stream).set(0.0 if up else max(0.0, down_for))
