"""Change events (CDC, as the Pub/Sub API delivers them) → inbox events of the kinds the
polls record (``psr``, ``agent_work``, ``work_item``, ``psr_deleted``).

- One inbox event per record id (an event may cover several records of one transaction).
- Its id names the record and the change (transaction key and sequence number; the replay
  id when the header has no transaction key), so a redelivered change is dropped by the
  inbox key. Where the polls record one event per record and status (AgentWork, the work
  item's end), per PSR deletion, or once per PSR (an unmapped queue), the stream keeps the
  polls' ids: the sweeper's repeats are dropped by the inbox key.
- CREATE and UNDELETE carry the whole record. UPDATE carries only what changed (the other
  fields null): it is merged onto the newest record the ledger holds for that id (or the
  previous change of the same batch); ``changedFields`` (decoded from the header's
  bitmaps) tells the engine what changed.
- GAP_* events say the changes could not be sent: those records are read by id; so is the
  record of an UPDATE the ledger holds nothing for (there is nothing to merge it onto).
- Datetime fields arrive as epoch milliseconds; they are written as the REST API writes
  them, so that a stream event reads like a polled one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge.adapters.salesforce.polling import KIND_FIELDS, SOURCE, deleted_event
from bridge.ledger.ports import NewEvent

HEADER = "ChangeEventHeader"
# Kinds the polls record once per (record, Status): what the engine acts on is a status
# change. Their stream events keep that id, so that the sweeper's reading of the same
# status is dropped by the inbox key (and a change that leaves the status is one too).
STATUS_KEYED = ("agent_work", "work_item")
GAP_PREFIX = "GAP_"


class Intake(Protocol):
    """What translation needs of the polling intake (``SalesforceIntake``)."""

    def kind_of(self, sobject: str) -> str | None: ...

    def stream_event(
        self, sobject: str, record: dict[str, Any], version: str
    ) -> NewEvent | None: ...

    def read_by_id(
        self, sobject: str, record_ids: Sequence[str], now: datetime
    ) -> list[NewEvent]: ...


# (source, kind, record ids) → the newest payload per id the ledger holds
LastRecords = Callable[[str, str, Sequence[str]], Mapping[str, Any]]


@dataclass(frozen=True)
class ChangeEvent:
    """One decoded change event."""

    entity: str
    change_type: str
    record_ids: tuple[str, ...]
    commit_at: datetime
    fields: Mapping[str, Any]
    changed: tuple[str, ...] = ()
    nulled: tuple[str, ...] = ()
    transaction_key: str = ""
    sequence: int = 0
    replay_id: str = ""  # hex of the replay id bytes
    header: Mapping[str, Any] = field(default_factory=dict)

    @property
    def change_key(self) -> str:
        """What names this change whatever record it is for."""
        if self.transaction_key:
            return f"{self.transaction_key}:{self.sequence}"
        return f"replay:{self.replay_id}"


class BadChangeEvent(ValueError):
    """A change event that cannot be read (names what is wrong)."""


# --- the header's bitmaps ----------------------------------------------------------------


def _value_schema(schema: Any) -> Any:
    """The non-null branch of a nullable union."""
    if isinstance(schema, list):
        return next((s for s in schema if s != "null"), "null")
    return schema


def _bits(hexa: str) -> list[int]:
    value = int(hexa, 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


def bitmap_fields(bitmaps: Sequence[str], schema: Mapping[str, Any]) -> list[str]:
    """Field names from the header's bitmap strings (``changedFields``, ``nulledFields``,
    ``diffFields``): ``0x..`` sets bit i for field i of the schema; ``N-0x..`` sets the
    sub-fields of compound field N (named ``Parent.Child``; the parent alone when all of
    them are set), as Salesforce's ChangeEventHeaderUtility reads them."""
    fields = list(schema.get("fields", ()))
    names: list[str] = []
    for bitmap in bitmaps:
        try:
            if "-" in bitmap:
                parent_at, _, sub = bitmap.partition("-")
                parent = fields[int(parent_at)]
                child = _value_schema(parent["type"])
                if not (isinstance(child, dict) and child.get("type") == "record"):
                    continue
                children = [f["name"] for f in child["fields"]]
                chosen = [children[i] for i in _bits(sub) if i < len(children)]
                if len(chosen) == len(children):
                    names.append(parent["name"])
                else:
                    names.extend(f"{parent['name']}.{c}" for c in chosen)
            else:
                names.extend(fields[i]["name"] for i in _bits(bitmap) if i < len(fields))
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise BadChangeEvent(f"unreadable field bitmap {bitmap!r}: {exc}") from exc
    return names


# --- decoding ------------------------------------------------------------------------------


def _millis(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def rest_datetime(value: datetime) -> str:
    """As the REST API writes a datetime: ``2024-01-31T10:00:00.000+0000``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _datetime_fields(schema: Mapping[str, Any]) -> set[str]:
    """The schema's datetime fields: CDC writes them as ``long`` (epoch ms; dates are
    ``int`` days, numbers ``int`` / ``double``)."""
    return {
        f["name"]
        for f in schema.get("fields", ())
        if isinstance(f, Mapping) and _value_schema(f.get("type")) == "long"
    }


def _plain_value(value: Any, is_datetime: bool) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime) or (
        is_datetime and isinstance(value, int) and not isinstance(value, bool)
    ):
        return rest_datetime(_millis(value))
    return value


def change_event(
    decoded: Mapping[str, Any], schema: Mapping[str, Any], replay_id: str = ""
) -> ChangeEvent:
    """A decoded Avro record of a change event, read (``BadChangeEvent`` naming what is
    missing or wrong)."""
    header = decoded.get(HEADER)
    if not isinstance(header, Mapping):
        raise BadChangeEvent(f"change event without {HEADER}")
    try:
        entity = str(header["entityName"])
        change_type = str(header["changeType"])
        record_ids = tuple(str(i) for i in header["recordIds"])
        commit_at = _millis(header["commitTimestamp"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadChangeEvent(f"{HEADER} without a readable {exc}") from exc
    datetimes = _datetime_fields(schema)
    fields = {
        name: _plain_value(value, name in datetimes)
        for name, value in decoded.items()
        if name != HEADER
    }
    return ChangeEvent(
        entity=entity,
        change_type=change_type,
        record_ids=record_ids,
        commit_at=commit_at,
        fields=fields,
        changed=tuple(bitmap_fields(header.get("changedFields") or (), schema)),
        nulled=tuple(bitmap_fields(header.get("nulledFields") or (), schema)),
        transaction_key=str(header.get("transactionKey") or ""),
        sequence=int(header.get("sequenceNumber") or 0),
        replay_id=replay_id,
        header=dict(header),
    )


# --- translation ---------------------------------------------------------------------------


@dataclass
class Translated:
    """What a batch of change events became."""

    events: list[NewEvent] = field(default_factory=list)
    # change events the bridge has no use for (e.g. UserServicePresence), by entity
    ignored: dict[str, int] = field(default_factory=dict)
    # records of GAP events, read by id
    gaps: int = 0
    # records of UPDATEs the ledger held nothing for, read by id
    unseen: int = 0


class Translator:
    """Change events → inbox events, merged with what the ledger holds."""

    def __init__(self, intake: Intake, last_records: LastRecords) -> None:
        self._intake = intake
        self._last = last_records

    def translate(self, changes: Sequence[ChangeEvent], now: datetime) -> Translated:
        out = Translated()
        # the newest full record per (kind, id) in this batch: an UPDATE merges onto the
        # one before it in the same batch, not onto the ledger's older record
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        wanted: dict[str, set[str]] = {}
        for change in changes:
            kind = self._intake.kind_of(change.entity)
            if kind is not None and change.change_type == "UPDATE":
                wanted.setdefault(kind, set()).update(change.record_ids)
        known: dict[tuple[str, str], Mapping[str, Any]] = {}
        for kind, ids in wanted.items():
            for rid, payload in self._last(SOURCE, kind, sorted(ids)).items():
                known[kind, rid] = payload
        for change in changes:
            kind = self._intake.kind_of(change.entity)
            if kind is None:
                out.ignored[change.entity] = out.ignored.get(change.entity, 0) + 1
                continue
            if change.change_type.startswith(GAP_PREFIX):
                out.gaps += len(change.record_ids)
                out.events += self._intake.read_by_id(change.entity, change.record_ids, now)
                continue
            if change.change_type == "DELETE":
                if kind == "psr":
                    out.events += [
                        deleted_event(rid, change.commit_at) for rid in change.record_ids
                    ]
                else:
                    out.ignored[change.entity] = out.ignored.get(change.entity, 0) + 1
                continue
            unseen: list[str] = []
            for rid in change.record_ids:
                if (
                    change.change_type == "UPDATE"
                    and (kind, rid) not in merged
                    and (kind, rid) not in known
                ):
                    unseen.append(rid)  # nothing to merge onto: read the whole record
                    continue
                event = self._one(kind, rid, change, merged, known)
                if event is not None:
                    out.events.append(event)
            if unseen:
                out.unseen += len(unseen)
                out.events += self._intake.read_by_id(change.entity, unseen, now)
        return out

    def _one(
        self,
        kind: str,
        rid: str,
        change: ChangeEvent,
        merged: dict[tuple[str, str], dict[str, Any]],
        known: Mapping[tuple[str, str], Mapping[str, Any]],
    ) -> NewEvent | None:
        columns = KIND_FIELDS[kind]
        sent = {k: v for k, v in change.fields.items() if k in columns}
        if change.change_type == "UPDATE":
            before = merged.get((kind, rid))
            if before is None:
                before = {k: v for k, v in known.get((kind, rid), {}).items() if k in columns}
            record = dict(before)
            # unchanged fields are null on an UPDATE; a field set to null is named in
            # nulledFields (and changedFields)
            record.update({k: v for k, v in sent.items() if v is not None})
            for name in change.nulled:
                if name in columns:
                    record[name] = None
        else:  # CREATE, UNDELETE: the whole record
            record = {name: sent.get(name) for name in columns}
        record["Id"] = rid
        if sent.get("SystemModstamp") is None:
            # the change's commit is when the record last changed
            record["SystemModstamp"] = rest_datetime(change.commit_at)
        merged[kind, rid] = dict(record)
        payload = {
            **record,
            "changeType": change.change_type,
            "changedFields": list(change.changed),
        }
        version = change.change_key
        if kind in STATUS_KEYED and record.get("Status"):
            version = str(record["Status"])
        return self._intake.stream_event(change.entity, payload, version)
