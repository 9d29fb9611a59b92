"""Events: a change one system reported, and the readers that take its fields (naming the
field and the event when a value is missing or malformed)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.domain.vocabulary import AgentWorkStatus, EventKind, System
from bridge.errors import Permanent, Skippable

if TYPE_CHECKING:
    from bridge.domain.records import Record

E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class Event:
    """A change one system reported, as intake read it.

    ``record`` holds Salesforce field names with JSON values, or ServiceNow fields as raw
    strings (``{"value", "display_value"}`` pairs are accepted too: the value is used).
    """

    source: System
    kind: EventKind
    source_event_id: str
    occurred_at: datetime
    record: Mapping[str, Any]
    # Fed by a reconciler: the record as it stands once intake's grace has passed (the
    # settled state), not a change in flight that the system may still follow up.
    from_reconciler: bool = False

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError(f"event {self.source_event_id}: occurred_at must be aware UTC")

    @functools.cached_property
    def parsed(self) -> Record:
        """The record, typed (read once: Permanent / Skippable for bad input, each time)."""
        from bridge.domain.records import parse  # noqa: PLC0415 - records read events

        return parse(self)


def field_value(record: Mapping[str, Any], name: str) -> Any:
    """A field of a record; a ServiceNow ``{"value", "display_value"}`` pair gives its value."""
    value = record.get(name)
    if isinstance(value, dict) and "value" in value:  # dict, not Mapping: the hot path
        return value["value"]
    return value


def where(event: Event) -> str:
    """How an error names the event: source, kind and id."""
    return f"{event.source} {event.kind} event {event.source_event_id}"


def require_str(event: Event, name: str) -> str:
    """A non-empty string field, or Permanent naming the field and the event."""
    value = field_value(event.record, name)
    if not isinstance(value, str) or not value:
        raise Permanent(f"{where(event)}: field {name} missing or not a string: {value!r}")
    return value


def optional_str(event: Event, name: str) -> str | None:
    value = field_value(event.record, name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Permanent(f"{where(event)}: field {name} is not a string: {value!r}")
    return value


def flag(event: Event, name: str) -> bool:
    """A boolean field: JSON true/false (Salesforce) or "true"/"false" (ServiceNow)."""
    value = field_value(event.record, name)
    if isinstance(value, bool):
        return value
    if value in ("true", "1"):
        return True
    if value in (None, "", "false", "0"):
        return False
    raise Permanent(f"{where(event)}: field {name} is not a boolean: {value!r}")


def number(event: Event, name: str, default: int = 0) -> int:
    value = field_value(event.record, name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Permanent(f"{where(event)}: field {name} is not a number: {value!r}") from None


def status_of(event: Event, name: str, enum: type[E]) -> E:
    """An enum-valued field; an unknown value is Skippable naming the value and the field."""
    raw = field_value(event.record, name)
    if isinstance(raw, int) and enum is AgentWorkStatus:
        try:
            return enum(AgentWorkStatus.from_code(raw).value)
        except ValueError:
            pass
    try:
        return enum(raw)
    except ValueError:
        known = ", ".join(m.value for m in enum)
        raise Skippable(
            f"{where(event)}: unknown {name} {raw!r} (known: {known})", code="unknown_status"
        ) from None
