"""A pushed delivery becomes the very inbox event a poll of the same change builds (key,
kind, payload, record version), or a refusal naming what is wrong; the inbox keeps one
event per key and records an older version than the one held as stale."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.adapters.servicenow.payload import Refused, check, parse
from bridge.adapters.servicenow.polling import (
    INTERACTION_FIELDS,
    WORK_ITEM_FIELDS,
    event_of,
)
from bridge.ledger.memory import MemoryLedger

ITEM = "a" * 32
INTERACTION = "b" * 32
MAPPED_QUEUE = "c" * 32
OTHER_QUEUE = "d" * 32
MAPPED = frozenset({MAPPED_QUEUE})
WHEN = "2026-12-03 14:05:09"


def record(table: str, sys_id: str, mod: int, **values: str) -> dict[str, str]:
    fields = WORK_ITEM_FIELDS if table == "awa_work_item" else INTERACTION_FIELDS
    row = dict.fromkeys(fields, "")
    row |= {"sys_id": sys_id, "sys_mod_count": str(mod), "sys_updated_on": WHEN}
    row |= {"queue": MAPPED_QUEUE, "state": "pending" if table == "awa_work_item" else "new"}
    return row | values


def delivery(
    table: str = "awa_work_item",
    event: str = "awa_work_item.created",
    sys_id: str = ITEM,
    mod: int = 3,
    **values: str,
) -> dict[str, Any]:
    return {
        "event": event,
        "table": table,
        "sys_id": sys_id,
        "sys_mod_count": mod,
        "sys_updated_on": WHEN,
        "record": record(table, sys_id, mod, **values),
        "instance": "dev12345",
        "sent_at": f"{WHEN}.123",
    }


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("data", "key", "version", "skipped"),
    [
        (delivery(), f"awa_work_item:{ITEM}:3", 3, False),
        (delivery(event="awa_work_item.transferred", mod=9), f"awa_work_item:{ITEM}:9", 9, False),
        (
            delivery(event="awa_work_item.updated", state="accepted"),
            f"awa_work_item:{ITEM}:3",
            3,
            False,
        ),
        # a work item of a queue the crosswalk does not map: one event per item (its refusal)
        (delivery(queue=OTHER_QUEUE), f"awa_work_item:{ITEM}:unmapped", None, False),
        (
            delivery("interaction", "interaction.updated", INTERACTION, 5),
            f"interaction:{INTERACTION}:5",
            5,
            False,
        ),
        # an interaction the bridge made (correlation_id) is read whatever its queue
        (
            delivery(
                "interaction", "interaction.updated", INTERACTION, 5, queue="", correlation_id="x"
            ),
            f"interaction:{INTERACTION}:5",
            5,
            False,
        ),
        # one no poll would read: recorded as skipped, not processed
        (
            delivery("interaction", "interaction.updated", INTERACTION, 5, queue=OTHER_QUEUE),
            f"interaction:{INTERACTION}:5",
            5,
            True,
        ),
    ],
)
def test_a_delivery_becomes_the_polls_event(
    data: dict[str, Any], key: str, version: int | None, skipped: bool
) -> None:
    checked = check(body(data), MAPPED)
    table = data["table"]
    polled_row = {
        f: data["record"][f]
        for f in (
            "sys_id",
            "sys_updated_on",
            "sys_mod_count",
            *(WORK_ITEM_FIELDS if table == "awa_work_item" else INTERACTION_FIELDS),
        )
    }
    assert checked.event == event_of(table, polled_row, MAPPED)  # what the poll builds
    assert checked.event.source_event_id == key
    assert checked.event.kind == table
    assert checked.event.record_key == f"{table}:{data['sys_id']}"
    assert checked.event.record_version == version
    assert checked.event.occurred_at == datetime(2026, 12, 3, 14, 5, 9, tzinfo=UTC)
    assert (checked.skipped is not None) == skipped


def test_fields_beyond_the_polls_are_not_kept_and_null_is_empty() -> None:
    data = delivery()
    data["record"] |= {"u_extra": "x", "assigned_to": None}
    payload = check(body(data), MAPPED).event.payload
    assert "u_extra" not in payload
    assert payload["assigned_to"] == ""


def _without(data: dict[str, Any], *path: str) -> dict[str, Any]:
    target = data
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return data


@pytest.mark.parametrize(
    ("raw", "reason", "table"),
    [
        (b"not json", "the body is not JSON", None),
        (b"[1, 2]", "one JSON object, not list", None),
        (
            body(_without(delivery(), "sys_mod_count")),
            "sys_mod_count: Field required",
            "awa_work_item",
        ),
        (
            body(delivery() | {"sys_mod_count": "3"}),
            "sys_mod_count: Input should be a valid integer",
            "awa_work_item",
        ),
        (
            body(delivery() | {"sys_mod_count": -1}),
            "sys_mod_count: Input should be greater",
            "awa_work_item",
        ),
        (
            body(delivery() | {"record": "x"}),
            "record: Input should be a valid dictionary",
            "awa_work_item",
        ),
        (
            body(delivery() | {"table": "incident"}),
            "table 'incident' is not one the bridge takes",
            None,
        ),
        (
            body(delivery() | {"event": "awa_work_item.deleted"}),
            "event 'awa_work_item.deleted' is not one",
            "awa_work_item",
        ),
        (
            body(delivery(event="interaction.updated")),
            "is about interaction, not awa_work_item",
            "awa_work_item",
        ),
        (
            body(delivery(sys_id="XYZ")),
            "sys_id 'XYZ' is not 32 hexadecimal digits",
            "awa_work_item",
        ),
        (
            body(delivery() | {"sys_updated_on": "yesterday"}),
            "sys_updated_on 'yesterday'",
            "awa_work_item",
        ),
        (
            body(_without(delivery(), "record", "queue")),
            f"record of awa_work_item {ITEM} lacks queue",
            "awa_work_item",
        ),
        (
            body(delivery() | {"sys_mod_count": 4}),
            "disagrees with the envelope: sys_mod_count '3' (envelope '4')",
            "awa_work_item",
        ),
    ],
)
def test_a_bad_delivery_is_refused_naming_what_and_where(
    raw: bytes, reason: str, table: str | None
) -> None:
    with pytest.raises(Refused) as refused:
        parse(raw)
    assert reason in refused.value.reason
    assert refused.value.table == table


NOW = datetime(2026, 12, 3, 14, 6, tzinfo=UTC)


def record_delivery(
    ledger: MemoryLedger, data: dict[str, Any]
) -> tuple[list[int], list[str], list[str]]:
    event = check(body(data), MAPPED).event
    with ledger.transaction() as tx:
        result = tx.inbox.record("servicenow:awa_work_item", [event], None)
    return result.inserted, result.duplicates, result.stale


@pytest.mark.parametrize(
    ("versions", "statuses"),
    [
        ([3, 3], ["pending"]),  # a repeat: one row
        ([3, 5], ["pending", "pending"]),
        ([5, 3], ["pending", "skipped"]),  # arrived late: stale
        ([5, 3, 3], ["pending", "skipped"]),  # a repeat of the stale one is a duplicate
        ([3, 5, 4, 6], ["pending", "pending", "skipped", "pending"]),
    ],
)
def test_order_and_repeats_in_the_inbox(versions: list[int], statuses: list[str]) -> None:
    ledger = MemoryLedger(now=lambda: NOW)
    results = [record_delivery(ledger, delivery(mod=v)) for v in versions]
    assert [e.status for e in ledger.events()] == statuses
    for (inserted, duplicates, stale), v in zip(results, versions, strict=True):
        assert len(inserted) + len(duplicates) + len(stale) == 1, v
    stale = [e for e in ledger.events() if e.status == "skipped"]
    for e in stale:
        assert "stale" in (e.error or "")
        assert "not acted on" in (e.error or "")
    with ledger.reading() as tx:
        assert len(tx.inbox.pending(100)) == statuses.count("pending")
