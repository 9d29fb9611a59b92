"""What the instance pushes to the bridge's receiver, checked, and the inbox event it becomes.

The instance sends one JSON object per change: from the AWA External Routing event
definitions (``awa_work_item.created`` / ``.transferred``) and from the after-update Business
Rules of ``deploy/servicenow`` (``awa_work_item.updated``, ``interaction.updated``). Its
``record`` is the row as the Table API returns it (raw values, no reference links), so the
event built from it is the one a poll of the same change builds (``polling.event_of``): same
key ``table:sys_id:sys_mod_count``, kind and payload. The engine cannot tell them apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from bridge.adapters.servicenow.polling import event_of, fields_of, parse_sn_datetime, polled
from bridge.ledger.ports import NewEvent

# The event of each delivery, and the table it must name.
EVENTS: Mapping[str, str] = {
    "awa_work_item.created": "awa_work_item",
    "awa_work_item.transferred": "awa_work_item",
    "awa_work_item.updated": "awa_work_item",
    "interaction.updated": "interaction",
}
TABLES = ("awa_work_item", "interaction")
SYS_ID = re.compile(r"^[0-9a-f]{32}$")


class Refused(Exception):
    """A delivery the bridge does not take, with the reason (the 400's body, and what is
    recorded); ``table`` when the delivery named one the bridge knows."""

    def __init__(self, reason: str, *, table: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.table = table if table in TABLES else None


class Delivery(BaseModel):
    """The delivery's envelope; fields beyond these are allowed (a later script may add)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event: str
    table: str
    sys_id: str
    sys_mod_count: StrictInt = Field(ge=0)
    sys_updated_on: str
    record: dict[str, str | None]
    instance: str
    sent_at: str


@dataclass(frozen=True)
class Checked:
    """A delivery the bridge takes: its event, or None when no poll would read the record
    (``skipped`` says why: it is recorded so, not processed)."""

    delivery: Delivery
    event: NewEvent
    skipped: str | None = None


def parse(body: bytes) -> Delivery:
    """The delivery in ``body``, or ``Refused`` naming what is wrong and where."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Refused(f"the body must be one JSON object, not {type(data).__name__}")
    table = data.get("table") if isinstance(data.get("table"), str) else None
    try:
        delivery = Delivery.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        )
        raise Refused(f"the delivery does not match the schema: {problems}", table=table) from None
    _check(delivery)
    return delivery


def _check(d: Delivery) -> None:
    """What the schema's types cannot say: known table and event, one record, its keys."""
    if d.table not in TABLES:
        raise Refused(f"table {d.table!r} is not one the bridge takes ({', '.join(TABLES)})")
    wanted = EVENTS.get(d.event)
    if wanted is None:
        raise Refused(
            f"event {d.event!r} is not one the bridge takes ({', '.join(EVENTS)})", table=d.table
        )
    if wanted != d.table:
        raise Refused(f"event {d.event!r} is about {wanted}, not {d.table}", table=d.table)
    if not SYS_ID.match(d.sys_id):
        raise Refused(f"sys_id {d.sys_id!r} is not 32 hexadecimal digits", table=d.table)
    try:
        parse_sn_datetime(d.sys_updated_on)
    except ValueError:
        raise Refused(
            f"sys_updated_on {d.sys_updated_on!r} is not YYYY-MM-DD HH:MM:SS", table=d.table
        ) from None
    missing = [f for f in fields_of(d.table) if f not in d.record]
    if missing:
        raise Refused(f"record of {d.table} {d.sys_id} lacks {', '.join(missing)}", table=d.table)
    envelope = {
        "sys_id": d.sys_id,
        "sys_mod_count": str(d.sys_mod_count),
        "sys_updated_on": d.sys_updated_on,
    }
    differ = [
        f"{k} {d.record[k]!r} (envelope {v!r})" for k, v in envelope.items() if d.record[k] != v
    ]
    if differ:
        raise Refused(
            f"record of {d.table} {d.sys_id} disagrees with the envelope: {', '.join(differ)}",
            table=d.table,
        )


def row_of(d: Delivery) -> dict[str, str]:
    """The row a poll of this change reads: the same fields, the Table API's empty string
    for an empty value."""
    return {f: d.record[f] or "" for f in fields_of(d.table)}


def check(body: bytes, mapped: Container[str]) -> Checked:
    """The delivery in ``body`` and the inbox event it becomes (``Refused`` if none)."""
    delivery = parse(body)
    row = row_of(delivery)
    event = event_of(delivery.table, row, mapped)
    skipped = None
    if not polled(delivery.table, row, mapped):
        skipped = (
            f"interaction {delivery.sys_id} is on queue {row.get('queue') or '(none)'}, "
            "which the crosswalk does not map, and the bridge did not make it"
        )
    return Checked(delivery, event, skipped)
