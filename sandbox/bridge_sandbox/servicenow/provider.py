"""The AWA External Routing provider subflow of the sandbox instance, with what
``deploy/servicenow`` installs: each event is POSTed to the configured provider endpoint,
asynchronously, once.

- External Event Definitions (``pushEvent`` from the AWA External Service API): a work item
  created on an External queue sends ``awa_work_item.created``, or
  ``awa_work_item.transferred`` when a transfer made it (it names ``previous_work_item``).
- The after-update Business Rules: a work item on an External queue, or an interaction on
  an External queue or with a ``correlation_id``, whose update changed a field the bridge
  reads, sends ``awa_work_item.updated`` / ``interaction.updated``.

The body is the ``BridgeAwaEvent`` script's: the record's key, version and the fields the
bridge's polls read, as the Table API returns them. The flow engine runs these in the
background, logs each execution in ``sys_flow_context`` and never retries a failed outbound
call; here a worker thread does the same, and the log is ``GET /__sandbox/deliveries``.

The store hook only copies the row and queues it (under the instance lock, so deliveries
keep the order of the changes); the JSON, TLS and the wait for the answer happen on the
worker, so the Table API does not slow down. Faults (drop, delay, duplicate, reorder) and
pause/resume exercise the receiver's idempotency and the sweeper's catch-up.
"""

from __future__ import annotations

import itertools
import json
import logging
import operator
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from bridge_sandbox.servicenow.store import ServiceNowApiError

if TYPE_CHECKING:
    from bridge_sandbox.servicenow.store import Instance
    from bridge_sandbox.serving import Clock

log = logging.getLogger(__name__)

WORK_ITEM = "awa_work_item"
INTERACTION = "interaction"
# What a delivery's record holds (``BridgeAwaEvent.fieldsOf``): key, version, and what the
# bridge's polls read; an update that changes none of the latter sends nothing.
# The same lists as deploy/servicenow/BridgeAwaEvent.js and the bridge's polling.py (a test
# holds them together); the instance does not import the bridge.
SYSTEM_FIELDS = ("sys_id", "sys_mod_count", "sys_updated_on")
WORK_ITEM_FIELDS = (
    "number",
    "state",
    "active",
    "document_table",
    "document_id",
    "queue",
    "assigned_to",
    "cancel_reason",
    "rejected",
    "timed_out",
    "reject_reason",
    "offered_on",
    "offer_count",
    "external_segment_id",
    "previous_work_item",
)
INTERACTION_FIELDS = ("state", "active", "queue", "assigned_to", "correlation_id", "closed_at")
READ_FIELDS: Mapping[str, tuple[str, ...]] = {
    WORK_ITEM: WORK_ITEM_FIELDS,
    INTERACTION: INTERACTION_FIELDS,
}
# A flow's REST step waits this long (connect, read) before it gives up: short, as the
# answer only acknowledges (the provider acts later through the Offer Work API).
TIMEOUT = (2.0, 5.0)
# How many deliveries the log keeps (oldest dropped first): enough for any test or bench.
LOG_SIZE = 10_000
# A delivery held back by the reorder fault waits this long for one to swap with.
REORDER_HOLD_SECONDS = 2.0
# How much of the provider's answer the log keeps.
ANSWER_CHARS = 2_000
FAULT_NAMES = ("drop", "delay_ms", "duplicate", "reorder")

# What a delivery is doing: waiting in the queue, held for a swap, or done.
QUEUED, HELD, SENT, FAILED, DROPPED, DISCARDED = (
    "queued",
    "held",
    "sent",
    "failed",
    "dropped",
    "discarded",
)


@dataclass(frozen=True)
class ProviderEndpoint:
    """The connection alias: endpoint, Basic credentials and the CA that verifies it."""

    url: str
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """What the control surface shows (the password never)."""
        return {"url": self.url, "username": self.username, "ca_file": self.ca_file}


@dataclass
class DeliveryFaults:
    """Faults of the next deliveries: ``drop`` n never sent; ``delay_ms`` each sent that
    late; ``duplicate`` n sent twice; ``reorder`` n each held back and sent right after
    the delivery that follows it (pairs swapped)."""

    drop: int = 0
    delay_ms: float = 0.0
    duplicate: int = 0
    reorder: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "drop": self.drop,
            "delay_ms": self.delay_ms,
            "duplicate": self.duplicate,
            "reorder": self.reorder,
        }


@dataclass
class Delivery:
    """One execution of the provider subflow (a ``sys_flow_context`` row)."""

    id: int
    event: str
    table: str
    sys_id: str
    sys_mod_count: int
    created: str
    # The stored row (the store replaces rows, never changes them in place): the payload
    # is built from it off the instance lock, when sent or read.
    row: Mapping[str, str] = field(repr=False)
    instance: str
    due: float  # monotonic time it may be sent (the delay fault)
    copies: int = 1
    hold: bool = False
    state: str = QUEUED
    sent_at: str | None = None
    attempts: int = 0
    status_code: int | None = None
    error: str | None = None
    answer: str | None = None
    statuses: list[int] = field(default_factory=list)
    _payload: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def payload(self) -> dict[str, Any]:
        """The body (``BridgeAwaEvent.payload``) but for ``sent_at``."""
        if self._payload is None:
            self._payload = {
                "event": self.event,
                "table": self.table,
                "sys_id": self.sys_id,
                "sys_mod_count": self.sys_mod_count,
                "sys_updated_on": self.row.get("sys_updated_on", ""),
                "record": record_of(self.table, self.row),
                "instance": self.instance,
            }
        return self._payload

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.event,
            "table": self.table,
            "sys_id": self.sys_id,
            "sys_mod_count": self.sys_mod_count,
            "created": self.created,
            "sent_at": self.sent_at,
            "state": self.state,
            "attempts": self.attempts,
            "status_code": self.status_code,
            "statuses": list(self.statuses),
            "error": self.error,
            "answer": self.answer,
            "payload": self.payload,
        }


def event_of(table: str, previous: Mapping[str, str] | None, row: Mapping[str, str]) -> str:
    """The event a change sends: the External Event Definitions' ``created`` and
    ``transferred`` (a work item made by a transfer names the one before it), else the
    Business Rules' ``updated``."""
    if table == WORK_ITEM and previous is None:
        return f"{WORK_ITEM}.{'transferred' if row.get('previous_work_item') else 'created'}"
    return f"{table}.updated"


def record_of(table: str, row: Mapping[str, str]) -> dict[str, str]:
    return {name: row.get(name, "") for name in (*SYSTEM_FIELDS, *READ_FIELDS[table])}


# The fields of READ_FIELDS out of a row in one call (the change check runs on every write).
_READ = {table: operator.itemgetter(*fields) for table, fields in READ_FIELDS.items()}


def _count(spec: Mapping[str, Any], name: str) -> int:
    value = spec[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ServiceNowApiError(400, f"Invalid '{name}'", "a whole number >= 0 is required")
    return value


def check_endpoint(
    url: object, username: object, password: object, ca_file: object = None
) -> ProviderEndpoint:
    """A provider endpoint from control input; 400 naming what is wrong."""
    if not isinstance(url, str) or urlsplit(url).scheme not in ("https", "http"):
        raise ServiceNowApiError(400, "Invalid 'url'", "an https:// (or http://) URL is required")
    if not urlsplit(url).hostname:
        raise ServiceNowApiError(400, "Invalid 'url'", f"{url} names no host")
    if ca_file is not None and (not isinstance(ca_file, str) or not Path(ca_file).is_file()):
        raise ServiceNowApiError(400, "Invalid 'ca_file'", f"{ca_file} is not a readable file")
    return ProviderEndpoint(
        url, _secret(username, "username"), _secret(password, "password"), ca_file
    )


def _secret(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ServiceNowApiError(400, f"Missing or invalid '{name}'", "a non-empty string")
    return value


class Deliveries:
    """The provider subflow of one instance: the store's change listener, the queue, the
    worker that POSTs, the faults and the delivery log."""

    def __init__(
        self, instance: Instance, clock: Clock, *, instance_name: str, default_ca: Path | None
    ) -> None:
        self.instance = instance
        self.clock = clock
        self.instance_name = instance_name
        self.default_ca = default_ca
        self._endpoint: ProviderEndpoint | None = None
        self._faults = DeliveryFaults()
        self._paused = False
        self._ids = itertools.count(1)
        self._queue: deque[Delivery] = deque()
        self._log: OrderedDict[int, Delivery] = OrderedDict()  # FIFO: O(1) at both ends
        self._busy = 0  # deliveries taken off the queue and not done yet
        self._cond = threading.Condition()
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._session: requests.Session | None = None
        instance.add_change_listener(self.on_change)

    # -- configuration -------------------------------------------------------------------

    @property
    def endpoint(self) -> ProviderEndpoint | None:
        return self._endpoint

    def configure(self, endpoint: ProviderEndpoint) -> ProviderEndpoint:
        """Set the provider (the connection alias); deliveries start with the next change."""
        if endpoint.ca_file is None and self.default_ca is not None:
            endpoint = replace(endpoint, ca_file=str(self.default_ca))
        with self._cond:
            self._endpoint = endpoint
            if self._worker is None or not self._worker.is_alive():
                self._stopping = False
                self._worker = threading.Thread(
                    target=self._run, name="servicenow-provider-subflow", daemon=True
                )
                self._worker.start()
            self._cond.notify_all()
        return endpoint

    def unconfigure(self) -> None:
        """No provider: changes send nothing; what was queued is discarded."""
        with self._cond:
            self._endpoint = None
            self._discard_queued()
            self._cond.notify_all()

    def faults(self) -> DeliveryFaults:
        with self._cond:
            return replace(self._faults)

    def set_faults(self, spec: Mapping[str, Any]) -> DeliveryFaults:
        """Set the given faults (others unchanged); 400 for unknown names or bad values."""
        unknown = sorted(set(spec) - set(FAULT_NAMES))
        if unknown:
            raise ServiceNowApiError(400, "Unknown delivery faults", ", ".join(unknown))
        values: dict[str, Any] = {}
        for name in ("drop", "duplicate", "reorder"):
            if name in spec:
                values[name] = _count(spec, name)
        if "delay_ms" in spec:
            delay = spec["delay_ms"]
            if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
                raise ServiceNowApiError(400, "Invalid 'delay_ms'", "a number >= 0 is required")
            values["delay_ms"] = float(delay)
        with self._cond:
            self._faults = replace(self._faults, **values)
            return replace(self._faults)

    def clear_faults(self) -> None:
        with self._cond:
            self._faults = DeliveryFaults()

    def pause(self) -> None:
        """Hold every delivery (they stay queued) until ``resume``."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def reset(self) -> None:
        """Back to a quiet subflow: queue discarded, log, faults and pause cleared; the
        provider endpoint (configuration, not data) stays."""
        with self._cond:
            self._discard_queued()
            self._log.clear()
            self._faults = DeliveryFaults()
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout=10)
        if self._session is not None:
            self._session.close()

    # -- the log -------------------------------------------------------------------------

    def log(self, sys_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The deliveries still in the log (of one record if ``sys_id``; the last ``limit``),
        oldest first."""
        with self._cond:
            chosen = [d for d in self._log.values() if sys_id is None or d.sys_id == sys_id]
            if limit is not None:
                chosen = chosen[-limit:] if limit > 0 else []
            return [delivery.as_dict() for delivery in chosen]

    def clear_log(self) -> None:
        """Forget finished deliveries (queued ones stay)."""
        with self._cond:
            for key in [k for k, d in self._log.items() if d.state not in (QUEUED, HELD)]:
                del self._log[key]

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is queued or in flight (False on time-out; a paused queue
        with deliveries in it is not idle)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # -- the store's change listener (under Instance.lock) -------------------------------

    def on_change(
        self, table: str, previous: Mapping[str, str] | None, row: Mapping[str, str]
    ) -> None:
        if self._endpoint is None or not self.sends(table, previous, row):
            return
        with self._cond:
            faults = self._faults
            delivery = Delivery(
                id=next(self._ids),
                event=event_of(table, previous, row),
                table=table,
                sys_id=row["sys_id"],
                sys_mod_count=int(row.get("sys_mod_count") or 0),
                created=row.get("sys_updated_on", ""),  # the change's own time
                row=row,
                instance=self.instance_name,
                due=time.monotonic() + faults.delay_ms / 1000,
            )
            self._remember(delivery)
            if faults.drop:
                faults.drop -= 1
                delivery.state = DROPPED
                return
            if faults.duplicate:
                faults.duplicate -= 1
                delivery.copies = 2
            if faults.reorder:
                faults.reorder -= 1
                delivery.hold = True
            self._queue.append(delivery)
            # Wake the worker only if it waits for this one: an idle queue, or a held
            # delivery waiting for one to swap with (waking it costs the writer the GIL).
            waiting = len(self._queue) == 1 or (len(self._queue) == 2 and self._queue[0].hold)
            if waiting and not self._paused:
                self._cond.notify_all()

    def sends(self, table: str, previous: Mapping[str, str] | None, row: Mapping[str, str]) -> bool:
        """Whether an event definition or Business Rule fires for this change."""
        fields = READ_FIELDS.get(table)
        if fields is None:
            return False
        if table == WORK_ITEM:
            fires = self._external_queue(row.get("queue", ""))
        else:  # the interaction rule is after update only
            fires = previous is not None and (
                self._external_queue(row.get("queue", "")) or bool(row.get("correlation_id"))
            )
        if not fires or previous is None:
            return fires
        read = _READ[table]
        try:
            return bool(read(previous) != read(row))
        except KeyError:  # a row without one of the fields (not from this schema)
            return any(previous.get(name, "") != row.get(name, "") for name in fields)

    def _external_queue(self, queue: str) -> bool:
        """External Routing pushes the work items of queues marked External only."""
        row = self.instance.live.get("awa_queue", queue) if queue else None
        return row is not None and row.get("external") == "true"

    def _remember(self, delivery: Delivery) -> None:
        self._log[delivery.id] = delivery
        if len(self._log) > LOG_SIZE:
            self._log.popitem(last=False)

    def _discard_queued(self) -> None:
        for delivery in self._queue:
            delivery.state = DISCARDED
        self._queue.clear()

    # -- the worker ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next()
            if batch is None:
                return
            try:
                for delivery in batch:
                    try:
                        self._send(delivery)
                    except Exception as exc:  # the worker outlives any one delivery
                        log.exception("servicenow sandbox: delivery %s broke", delivery.id)
                        delivery.state, delivery.error = FAILED, f"{type(exc).__name__}: {exc}"
            finally:
                with self._cond:
                    self._busy -= len(batch)
                    self._cond.notify_all()

    def _next(self) -> list[Delivery] | None:
        """The next deliveries to send, in order (a held one after the one behind it);
        None when stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._queue and not self._paused and self._endpoint is not None:
                    first = self._queue[0]
                    wait = first.due - time.monotonic()
                    if first.hold and len(self._queue) < 2:
                        first.state = HELD
                        wait = max(wait, first.due + REORDER_HOLD_SECONDS - time.monotonic())
                        if wait <= 0:  # nothing came to swap with: send it alone
                            first.hold = False
                            continue
                    elif wait <= 0:
                        self._queue.popleft()
                        batch = [first]
                        if first.hold:
                            batch.insert(0, self._queue.popleft())
                        self._busy += len(batch)
                        return batch
                    self._cond.wait(max(wait, 0.001))
                else:
                    self._cond.wait()

    def _send(self, delivery: Delivery) -> None:
        endpoint = self._endpoint
        if endpoint is None:
            delivery.state = DISCARDED
            return
        due = delivery.due - time.monotonic()
        if due > 0:  # the one swapped ahead of a delayed delivery waits its own delay
            time.sleep(due)
        if self._session is None:
            self._session = requests.Session()
            self._session.trust_env = False  # REQUESTS_CA_BUNDLE must not replace ca_file
        verify: str | bool = endpoint.ca_file or True
        delivery.sent_at = self.clock.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        body = json.dumps(
            {**delivery.payload, "sent_at": delivery.sent_at}, separators=(",", ":")
        ).encode()
        for _ in range(delivery.copies):
            delivery.attempts += 1
            try:
                answer = self._session.post(
                    endpoint.url,
                    data=body,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                    auth=(endpoint.username, endpoint.password),
                    verify=verify,
                    timeout=TIMEOUT,
                )
            except requests.RequestException as exc:
                # No retry: the flow's REST step fails and the execution ends in error.
                delivery.error = f"{type(exc).__name__}: {exc}"
                delivery.state = FAILED
                log.info("servicenow sandbox: delivery %s failed: %s", delivery.id, delivery.error)
                continue
            delivery.status_code = answer.status_code
            delivery.statuses.append(answer.status_code)
            delivery.answer = answer.text[:ANSWER_CHARS]
            if answer.ok:
                if delivery.state != FAILED:
                    delivery.state = SENT
            else:
                delivery.state = FAILED
                delivery.error = f"HTTP {answer.status_code}"
