"""Typed views of the records events carry, one class per kind, read once per event
(``Event.parsed``) and used by classification, correlation keys, echo keys and the
command builders alike.

A malformed field is Permanent and an unknown status Skippable, naming the field and the
event (the readers of ``bridge.domain.events``). Ids that only name a correlation are read
leniently (None when they are not ids): such a record still finds its conversation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from bridge.domain.events import (
    Event,
    field_value,
    flag,
    number,
    optional_str,
    require_str,
    status_of,
    where,
)
from bridge.domain.sf_ids import to18 as _to18
from bridge.domain.vocabulary import AgentWorkStatus, EventKind, InteractionState, WorkItemState
from bridge.errors import Permanent

# Every event carries a handful of Salesforce ids, and the same ones again and again.
to18 = functools.lru_cache(maxsize=1 << 16)(_to18)


def sf_id(event: Event, name: str) -> str | None:
    """A Salesforce id field in its 18-character form; None when absent."""
    value = optional_str(event, name)
    return None if value is None else _as_sf_id(event, name, value)


def _required_sf_id(event: Event, name: str) -> str:
    return _as_sf_id(event, name, require_str(event, name))


def _as_sf_id(event: Event, name: str, value: str) -> str:
    try:
        return to18(value)
    except ValueError:
        raise Permanent(f"{where(event)}: field {name} is not a Salesforce id: {value!r}") from None


def lenient_sf_id(record_value: object) -> str | None:
    """A value as an 18-character Salesforce id, or None when it is not one."""
    if not isinstance(record_value, str) or not record_value:
        return None
    try:
        return to18(record_value)
    except ValueError:
        return None


def required(event: Event, name: str, value: str | None) -> str:
    """A field a use needs (opening a conversation, naming an agent): Permanent when the
    record did not carry it."""
    if value is None:
        raise Permanent(
            f"{where(event)}: field {name} missing or not a string: "
            f"{field_value(event.record, name)!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class PsrRecord:
    """PendingServiceRouting."""

    id: str
    pushed: bool
    last_declined_agent_session: str | None
    serial: int
    transfer: bool
    work_item_id: str | None
    queue_id: str | None
    service_channel_id: str | None
    push_timeout: int


@dataclass(frozen=True, slots=True)
class PsrDeletedRecord:
    id: str


@dataclass(frozen=True, slots=True)
class AgentWorkRecord:
    id: str
    status: AgentWorkStatus
    user_id: str | None
    work_item_id: str | None
    psr_id: str | None  # lenient: only names the correlation


@dataclass(frozen=True, slots=True)
class SfWorkItemRecord:
    """The Salesforce work item itself (MessagingSession, Case)."""

    id: str
    status: str | None  # None only when deleted
    deleted: bool


@dataclass(frozen=True, slots=True)
class AwaWorkItemRecord:
    sys_id: str
    state: WorkItemState
    active: bool
    queue: str | None
    document_table: str | None
    document_id: str | None
    assigned_to: str | None
    external_segment_id: str | None
    cancel_reason: object
    rejected: bool
    timed_out: bool


@dataclass(frozen=True, slots=True)
class InteractionRecord:
    sys_id: str
    state: InteractionState
    correlation_id: str | None  # lenient: only names the correlation


Record = (
    PsrRecord
    | PsrDeletedRecord
    | AgentWorkRecord
    | SfWorkItemRecord
    | AwaWorkItemRecord
    | InteractionRecord
)


def parse(event: Event) -> Record:
    """The event's record, typed; fields read in the order classification needs them, so
    the first bad one is the one named."""
    kind = event.kind
    if kind is EventKind.PSR:
        return PsrRecord(
            id=_required_sf_id(event, "Id"),
            pushed=flag(event, "IsPushed"),
            last_declined_agent_session=optional_str(event, "LastDeclinedAgentSession"),
            serial=number(event, "Serial"),
            transfer=flag(event, "IsTransfer"),
            work_item_id=sf_id(event, "WorkItemId"),
            queue_id=sf_id(event, "QueueId"),
            service_channel_id=sf_id(event, "ServiceChannelId"),
            push_timeout=number(event, "PushTimeout"),
        )
    if kind is EventKind.PSR_DELETED:
        return PsrDeletedRecord(_required_sf_id(event, "Id"))
    if kind is EventKind.AGENT_WORK:
        return AgentWorkRecord(
            id=_required_sf_id(event, "Id"),
            status=status_of(event, "Status", AgentWorkStatus),
            user_id=sf_id(event, "UserId"),
            work_item_id=sf_id(event, "WorkItemId"),
            psr_id=lenient_sf_id(field_value(event.record, "PendingServiceRoutingId")),
        )
    if kind is EventKind.WORK_ITEM:
        record_id = _required_sf_id(event, "Id")
        # A reconciler reports a work item that is gone as deleted (Salesforce's IsDeleted).
        if flag(event, "IsDeleted"):
            return SfWorkItemRecord(record_id, optional_str(event, "Status"), deleted=True)
        return SfWorkItemRecord(record_id, require_str(event, "Status"), deleted=False)
    if kind is EventKind.AWA_WORK_ITEM:
        return AwaWorkItemRecord(
            sys_id=require_str(event, "sys_id"),
            state=status_of(event, "state", WorkItemState),
            active=flag(event, "active"),
            queue=optional_str(event, "queue"),
            document_table=optional_str(event, "document_table"),
            document_id=optional_str(event, "document_id"),
            assigned_to=optional_str(event, "assigned_to"),
            external_segment_id=optional_str(event, "external_segment_id"),
            cancel_reason=field_value(event.record, "cancel_reason"),
            rejected=flag(event, "rejected"),
            timed_out=flag(event, "timed_out"),
        )
    return InteractionRecord(
        sys_id=require_str(event, "sys_id"),
        state=status_of(event, "state", InteractionState),
        correlation_id=lenient_sf_id(field_value(event.record, "correlation_id")),
    )
