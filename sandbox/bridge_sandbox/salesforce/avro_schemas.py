"""Avro schemas of the org's change events, in Salesforce's CDC shape, and their encoding.

A change event schema (``com.sforce.eventbus.<Entity>ChangeEvent``) has the
``ChangeEventHeader`` as its first field, then every field of the record except ``Id``
(in the header's ``recordIds``), ``IsDeleted`` and ``SystemModstamp``, each a nullable
union. Bit i of the header's bitmaps (``changedFields``, ``nulledFields``, ``diffFields``)
is field i of this schema, written as hex text (``0x...``) as Salesforce writes them.
Datetimes are epoch milliseconds (long), dates epoch days (int).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import fastavro

from bridge_sandbox.salesforce.changelog import ChangeEvent
from bridge_sandbox.salesforce.schema import Schema, SObject
from bridge_sandbox.salesforce.soql import FieldType

NAMESPACE = "com.sforce.eventbus"
CHANGE_TYPES = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
    "SNAPSHOT",
)
# Fields of the record a change event does not carry as fields.
_LEFT_OUT = frozenset({"Id", "IsDeleted", "SystemModstamp"})

_STRINGS = "string"
_AVRO_TYPES: dict[FieldType, str] = {
    FieldType.BOOLEAN: "boolean",
    FieldType.INT: "int",
    FieldType.DOUBLE: "double",
    FieldType.CURRENCY: "double",
    FieldType.PERCENT: "double",
    FieldType.DATETIME: "long",
    FieldType.DATE: "int",
}

HEADER_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "ChangeEventHeader",
    "namespace": NAMESPACE,
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {
            "name": "changeType",
            "type": {
                "type": "enum",
                "name": "ChangeType",
                "namespace": NAMESPACE,
                "symbols": list(CHANGE_TYPES),
            },
        },
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}


def event_name(entity: str) -> str:
    """The change event of an sObject: ``AgentWork`` -> ``AgentWorkChangeEvent``."""
    return f"{entity}ChangeEvent"


@dataclass(frozen=True)
class ChangeEventSchema:
    """The schema of one entity's change events, with its id and field positions."""

    entity: str
    schema_id: str
    schema_json: str
    field_names: tuple[str, ...]  # position i = bit i (0 is the header)
    field_types: Mapping[str, FieldType]
    parsed: Any

    def bitmap(self, fields: Iterable[str]) -> list[str]:
        """The header's bitmap list for these fields (empty list when none)."""
        bits = 0
        for name in fields:
            if name in self.field_types:
                bits |= 1 << self.field_names.index(name)
        return [f"0x{bits:X}"] if bits else []

    def body(
        self, event: ChangeEvent, enrich: Iterable[str] = ()
    ) -> tuple[dict[str, Any], list[str], list[str]]:
        """The fields an event carries, its changed fields and its nulled fields. ``enrich``
        names fields an UPDATE or DELETE carries besides the changed ones (a filtered
        channel member's filter fields)."""
        carried: dict[str, Any]
        changed: list[str] = []
        nulled: list[str] = []
        if event.change_type == "CREATE":
            carried = {k: v for k, v in event.values.items() if k in self.field_types}
        elif event.change_type == "UPDATE":
            changed = [f for f in event.changed_fields if f in self.field_types]
            if "LastModifiedDate" in self.field_types and "LastModifiedDate" in event.record:
                changed.append("LastModifiedDate")  # every update moves it
            carried = {f: event.record.get(f, event.values.get(f)) for f in changed}
            nulled = [f for f in changed if carried[f] is None]
        else:
            carried = {}
        if event.change_type in ("UPDATE", "DELETE"):
            for name in enrich:
                if name in self.field_types:
                    carried.setdefault(name, event.record.get(name))
        return carried, changed, nulled

    def merge_key(self, event: ChangeEvent, enrich: Iterable[str] = ()) -> Hashable:
        """Events of one transaction with the same key are one change event with several
        ``recordIds`` (Salesforce merges identical changes of several records)."""
        carried, changed, nulled = self.body(event, enrich)
        # one transaction writes one LastModifiedDate (the sandbox's may differ by a ms)
        carried.pop("LastModifiedDate", None)
        return (
            event.transaction_key,
            event.entity,
            event.change_type,
            tuple(sorted(carried.items())),
            tuple(changed),
            tuple(nulled),
        )

    def encode(
        self,
        events: Sequence[ChangeEvent],
        *,
        change_origin: str = "",
        enrich: Iterable[str] = (),
        gap: bool = False,
    ) -> bytes:
        """The Avro binary of one change event for ``events`` (one, or several merged:
        same transaction and changes). ``gap``: a GAP_ event, the header and no fields."""
        first = events[0]
        carried, changed, nulled = ({}, [], []) if gap else self.body(first, enrich)
        header = {
            "entityName": first.entity,
            "recordIds": [e.record_id for e in events],
            "changeType": f"GAP_{first.change_type}" if gap else first.change_type,
            "changeOrigin": change_origin,
            "transactionKey": first.transaction_key,
            "sequenceNumber": first.sequence_number,
            "commitTimestamp": _millis(first.commit_timestamp),
            "commitNumber": first.commit_number,
            "commitUser": first.commit_user,
            "nulledFields": self.bitmap(nulled),
            "diffFields": [],
            "changedFields": self.bitmap(changed),
        }
        record: dict[str, Any] = {"ChangeEventHeader": header}
        for name, ftype in self.field_types.items():
            record[name] = _avro_value(ftype, carried.get(name))
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self.parsed, record)
        return out.getvalue()


def build(definition: SObject) -> ChangeEventSchema:
    """The change event schema of one sObject of the org's schema."""
    fields: list[dict[str, Any]] = [
        {"name": "ChangeEventHeader", "type": HEADER_SCHEMA, "doc": "Data:ChangeEventHeader"}
    ]
    types: dict[str, FieldType] = {}
    for f in definition.fields.values():
        if f.name in _LEFT_OUT:
            continue
        types[f.name] = f.type
        fields.append(
            {"name": f.name, "type": ["null", _AVRO_TYPES.get(f.type, _STRINGS)], "default": None}
        )
    schema = {
        "type": "record",
        "name": event_name(definition.name),
        "namespace": NAMESPACE,
        "fields": fields,
    }
    text = json.dumps(schema, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).digest()
    schema_id = base64.urlsafe_b64encode(digest).decode()[:22]
    return ChangeEventSchema(
        definition.name,
        schema_id,
        text,
        ("ChangeEventHeader", *types),
        types,
        fastavro.parse_schema(json.loads(text)),
    )


class Schemas:
    """The change event schemas of some entities, by entity and by schema id."""

    def __init__(self, schema: Schema, entities: Iterable[str]) -> None:
        self.by_entity: dict[str, ChangeEventSchema] = {}
        for entity in entities:
            definition = schema.get(entity)
            if definition is not None:
                self.by_entity[definition.name] = build(definition)
        self.by_id = {s.schema_id: s for s in self.by_entity.values()}


def _millis(moment: datetime) -> int:
    whole = int(moment.replace(microsecond=0).timestamp())
    return whole * 1000 + moment.microsecond // 1000


def _avro_value(ftype: FieldType, value: Any) -> Any:
    if value is None:
        return None
    if ftype is FieldType.DATETIME and isinstance(value, datetime):
        return _millis(value)
    if ftype is FieldType.DATE and isinstance(value, date):
        return (value - date(1970, 1, 1)).days
    if ftype in (FieldType.DOUBLE, FieldType.CURRENCY, FieldType.PERCENT):
        return float(value)
    if ftype is FieldType.INT or ftype is FieldType.BOOLEAN:
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)
