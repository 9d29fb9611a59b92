"""What each ledger row means, in the systems' own words: ``AWA work item AWI0001009
accepted by bob.brown``, ``AgentWork 0Bz… Opened for alice.ahmed``, ``PSR … deleted``,
``offer #2 to carol.chen timed out``. Pure functions of a row and the crosswalk's names;
the timeline (``audit.timeline``) and the console show them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.domain.events import field_value
from bridge.domain.sf_ids import to18
from bridge.errors import BridgeError

if TYPE_CHECKING:
    from bridge.domain.mapping import Tables
    from bridge.ledger.rows import InboxEvent, OutboxCommand, Segment


def _key(record_id: str) -> str:
    """Salesforce ids compare in their 18-character form; anything else as it is."""
    if len(record_id) == 15:
        try:
            return to18(record_id)
        except ValueError:
            return record_id
    return record_id


@dataclass(frozen=True)
class Names:
    """The crosswalk's names of users, queues and channels, by any id either system gives
    them (Salesforce 15 or 18 characters, sys_id, AWA queue external id)."""

    by_id: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_tables(cls, tables: Tables) -> Names:
        cw = tables.crosswalk
        by_id: dict[str, str] = {}
        pairs: Iterable[tuple[str | None, str]] = [
            *((u.sf_user_id, u.name) for u in cw.users),
            *((u.sn_user_sys_id, u.name) for u in cw.users),
            *((q.sf_queue_id, q.name) for q in cw.queues),
            *((q.sn_queue_sys_id, q.name) for q in cw.queues),
            *((q.sn_external_id, q.name) for q in cw.queues),
            *((c.sf_service_channel_id, c.name) for c in cw.channels),
            *((c.sn_service_channel_sys_id, c.name) for c in cw.channels),
        ]
        for record_id, name in pairs:
            if record_id:
                by_id[_key(record_id)] = name
        return cls(by_id)

    def name(self, record_id: object) -> str | None:
        if not isinstance(record_id, str) or not record_id:
            return None
        return self.by_id.get(_key(record_id))

    def label(self, record_id: object) -> str:
        """The name when the crosswalk knows the id, else the id itself."""
        if not isinstance(record_id, str) or not record_id:
            return ""
        return self.name(record_id) or record_id

    def ids_of(self, name: str) -> tuple[str, ...]:
        """Every id the crosswalk gives this name (a user's on both sides, say)."""
        return tuple(sorted(k for k, v in self.by_id.items() if v == name))

    @property
    def all_names(self) -> list[str]:
        return sorted(set(self.by_id.values()))

    def of(self, values: Mapping[str, Any]) -> dict[str, str]:
        """The names of the id-valued entries of ``values`` that the crosswalk knows."""
        out: dict[str, str] = {}
        for key, value in values.items():
            known = self.name(value)
            if known is not None:
                out[key] = known
        return out


NO_NAMES = Names()

SALESFORCE, SERVICENOW, BRIDGE = "salesforce", "servicenow", "bridge"

_SF_KINDS = frozenset({"psr", "psr_deleted", "agent_work", "work_item"})
_WORK_ITEM_TYPES = {"0Mw": "MessagingSession", "500": "Case"}
_INTERACTION_STATES = {
    "new": "New",
    "on_hold": "On Hold",
    "work_in_progress": "Work in Progress",
    "wrap_up": "Wrap Up",
    "closed_complete": "Closed Complete",
    "closed_abandoned": "Closed Abandoned",
}
# What an AgentWork status means for the segment it belongs to (the outcome's word).
_AGENT_WORK_VERBS = {
    "Opened": "accepted",
    "Declined": "declined",
    "DeclinedOnPushTimeout": "timed_out",
    "Unavailable": "declined",
    "Transferred": "transferred",
    "Canceled": "cancelled",
    "Closed": "closed",
}
OUTCOME_WORDS = {
    "accepted": "accepted",
    "declined": "declined",
    "timed_out": "timed out",
    "transferred": "transferred",
    "cancelled": "cancelled",
    "abandoned": "abandoned",
    "closed": "closed",
}


def reason(error: str | None) -> str | None:
    """The reason of a recorded error: the message of a JSON error record, else the text."""
    if not error:
        return None
    try:
        data = json.loads(error)
    except ValueError:
        return error
    if isinstance(data, dict):
        for key in ("message", "reason", "detail"):
            if data.get(key):
                return str(data[key])
    return error


def event_system(ev: InboxEvent) -> str:
    """Which system the event's record belongs to (a reconciler's read too)."""
    if ev.source in (SALESFORCE, SERVICENOW):
        return ev.source
    return SALESFORCE if ev.kind in _SF_KINDS else SERVICENOW


@dataclass(frozen=True)
class Said:
    """One line's words, who did it, and what it means for a segment."""

    text: str
    actor: str | None = None
    verb: str | None = None  # a segment outcome this event reports, if any
    marks: tuple[str, ...] = ()


def _get(payload: Mapping[str, Any], name: str) -> str | None:
    value = field_value(payload, name)
    if value is None or value == "":
        return None
    return str(value)


def _flag(payload: Mapping[str, Any], name: str) -> bool:
    return field_value(payload, name) in (True, "true", "1")


def _serial(payload: Mapping[str, Any]) -> int:
    try:
        return int(field_value(payload, "Serial") or 0)
    except (TypeError, ValueError):
        return 0


def _psr(p: Mapping[str, Any], names: Names) -> Said:
    psr = _get(p, "Id") or "?"
    queue = names.label(_get(p, "QueueId"))
    on = f" on {queue}" if queue else ""
    if _flag(p, "IsPushed"):
        return Said(f"PSR {psr} pushed to an agent")
    if _get(p, "LastDeclinedAgentSession") or _serial(p) > 0:
        return Said(f"PSR {psr} back in queue{on} (Serial {_serial(p)})")
    if _flag(p, "IsTransfer"):
        return Said(f"transfer PSR {psr} created{on}")
    return Said(f"PSR {psr} created{on}")


def _agent_work(p: Mapping[str, Any], names: Names) -> Said:
    status = _get(p, "Status") or "?"
    user = names.label(_get(p, "UserId"))
    text = f"AgentWork {_get(p, 'Id') or '?'} {status}"
    if user:
        text += f" for {user}"
    return Said(text, actor=user or None, verb=_AGENT_WORK_VERBS.get(status))


def _sf_work_item(p: Mapping[str, Any]) -> Said:
    record_id = _get(p, "Id") or "?"
    what = _WORK_ITEM_TYPES.get(record_id[:3], "work item")
    if _flag(p, "IsDeleted"):
        return Said(f"{what} {record_id} deleted", verb="abandoned")
    return Said(f"{what} {record_id} {_get(p, 'Status') or '?'}")


def _awa_work_item(p: Mapping[str, Any], names: Names) -> Said:
    item = f"AWA work item {_get(p, 'number') or _get(p, 'sys_id') or '?'}"
    agent = names.label(_get(p, "assigned_to")) or None
    queue = names.label(_get(p, "queue"))
    state = _get(p, "state")
    if state == "canceled":
        why = _get(p, "cancel_reason")
        if why == "transfer_rejected":
            return Said(f"{item}: transfer rejected", actor=agent, verb="declined")
        return Said(f"{item} canceled" + (f" ({why})" if why else ""), verb="cancelled")
    if not _flag(p, "active"):
        return Said(f"{item} closed", actor=agent, verb="transferred")
    if state == "queued":
        if _flag(p, "rejected"):
            why = _get(p, "reject_reason")
            if why and len(why) == 32 and why.isalnum():
                why = None  # a reference to awa_reject_reason: its sys_id says nothing
            by = f" by {agent}" if agent else ""
            return Said(
                f"{item} rejected{by}" + (f" ({why})" if why else ""), actor=agent, verb="declined"
            )
        if _flag(p, "timed_out"):
            to = f" to {agent}" if agent else ""
            return Said(f"offer of {item}{to} timed out", actor=agent, verb="timed_out")
        return Said(f"{item} queued" + (f" on {queue}" if queue else ""))
    if state == "pending_accept":
        return Said(f"{item} offered" + (f" to {agent}" if agent else ""), actor=agent)
    if state == "accepted":
        return Said(
            f"{item} accepted" + (f" by {agent}" if agent else ""), actor=agent, verb="accepted"
        )
    return Said(f"{item} {state or '?'}", actor=agent)


def _interaction(p: Mapping[str, Any], names: Names) -> Said:
    state = _get(p, "state") or "?"
    agent = names.label(_get(p, "assigned_to")) or None
    text = f"interaction {_get(p, 'sys_id') or '?'} {_INTERACTION_STATES.get(state, state)}"
    if agent:
        text += f" ({agent})"
    verb = {"closed_complete": "closed", "closed_abandoned": "abandoned"}.get(state)
    return Said(text, actor=agent, verb=verb)


def event_words(ev: InboxEvent, names: Names = NO_NAMES) -> Said:
    """What the event says happened, then what the bridge made of it when it was not
    an ordinary change (an echo of its own, skipped or refused input)."""
    p: Mapping[str, Any] = ev.payload or {}
    if ev.kind == "psr":
        said = _psr(p, names)
    elif ev.kind == "psr_deleted":
        said = Said(f"PSR {_get(p, 'Id') or '?'} deleted")
    elif ev.kind == "agent_work":
        said = _agent_work(p, names)
    elif ev.kind == "work_item":
        said = _sf_work_item(p)
    elif ev.kind == "awa_work_item":
        said = _awa_work_item(p, names)
    elif ev.kind == "interaction":
        said = _interaction(p, names)
    else:
        said = Said(f"{ev.kind} {ev.source_event_id}")
    text, marks = said.text, list(said.marks)
    if ev.source == "reconciler":
        text = f"reconciler read: {text}"
    if ev.status == "echo":
        text += " (echo of the bridge's own change)"
        marks.append("echo")
    elif ev.status in ("skipped", "error"):
        word = "skipped" if ev.status == "skipped" else "refused"
        text += f"; {word}: {reason(ev.error) or 'no reason recorded'}"
        marks.append(word)
    elif ev.status == "pending":
        text += " (not processed yet)"
    return Said(text, said.actor, said.verb, tuple(marks))


def _first(values: object) -> str | None:
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    return None


def command_words(cmd: OutboxCommand, names: Names = NO_NAMES) -> Said:
    """What the bridge asks of the system, in that system's API terms."""
    p: Mapping[str, Any] = cmd.payload or {}
    op = cmd.operation
    marks: tuple[str, ...] = ()
    if op == "create_interaction":
        record = p.get("record") or {}
        text = f"create interaction {record.get('sys_id', '')}".rstrip()
    elif op in ("offer", "transfer"):
        target = p.get("target_id") or _first(p.get("candidates"))
        who = names.label(target) if target else names.label(p.get("queue_id"))
        more = len(p.get("candidates") or []) - 1
        text = f"{op} to {who}" + (f" (or {more} more)" if more > 0 else "")
        queue = names.label(p.get("queue_id") or p.get("source_queue_id"))
        if queue and queue != who:
            text += f" on {queue}"
    elif op == "cancel_work_item":
        why = p.get("cancel_reason")
        text = f"cancel AWA work item {p.get('sys_id', '?')}" + (f" ({why})" if why else "")
    elif op == "close_interaction":
        state = str(p.get("state", ""))
        text = (
            f"close interaction {p.get('sys_id', '?')} as {_INTERACTION_STATES.get(state, state)}"
        )
    elif op == "create_agent_work":
        text = f"create AgentWork for {names.label(p.get('UserId')) or '?'}"
    elif op == "delete_psr":
        text = f"delete PSR {p.get('id', '?')}"
    elif op == "route":
        target = (p.get("routingInfo") or {}).get("queueId")
        text = f"POST /route {p.get('routingType', '')} to {names.label(target) or '?'}"
    elif op == "cancel_route":
        text = f"DELETE /route ({p.get('cancelReason', '?')})"
    elif op == "assign_agent_work":
        text = f"POST /agentWork for {names.label(p.get('userId')) or '?'}"
    elif op == "update_agent_work":
        status = p.get("status", "?")
        text = f"PATCH /agentWork {p.get('workId', '?')} {status}"
        if status == "Cancel":
            # cancel before re-assign: never two agents on one conversation
            text = f"two-agent guard: {text}"
            marks = ("guard",)
    else:
        text = op
    return Said(text, actor="bridge", marks=marks)


def answer_words(cmd: OutboxCommand) -> str:
    """What the system answered, briefly: the id it gave."""
    answer = cmd.response or {}
    for key in ("id", "number", "sys_id", "workId"):
        if answer.get(key):
            return f" → {key} {answer[key]}"
    return ""


def segment_target(seg: Segment, names: Names = NO_NAMES) -> str:
    who = seg.sn_user_sys_id or seg.sf_user_id
    if who:
        return names.label(who)
    queue = seg.sn_queue_sys_id or seg.sf_queue_id
    return f"queue {names.label(queue)}" if queue else ""


def segment_system(seg: Segment) -> str:
    """Where the leg runs: a route in Omni-Channel, an offer or transfer in AWA (or an
    agent-to-agent transfer in Salesforce)."""
    if seg.kind == "route":
        return SALESFORCE
    if seg.sn_work_item_sys_id or seg.sn_user_sys_id or seg.sn_queue_sys_id:
        return SERVICENOW
    return SALESFORCE


def segment_words(seg: Segment, names: Names = NO_NAMES, outcome: str | None = None) -> str:
    target = segment_target(seg, names)
    text = f"{seg.kind} #{seg.seq}" + (f" to {target}" if target else "")
    if outcome is None:
        return f"{text} opened"
    return f"{text} {OUTCOME_WORDS.get(outcome, outcome)}"


def crosswalk_names(directory: Path | None = None) -> Names:
    """The names of the crosswalk in ``directory`` (the configured tables by default); no
    names when the tables do not load: an audit query never fails for want of them."""
    from bridge.domain.mapping import check_tables  # noqa: PLC0415 - only when names are shown

    try:
        tables, _ = check_tables(directory)
    except (OSError, ValueError, BridgeError):
        return NO_NAMES
    return NO_NAMES if tables is None else Names.from_tables(tables)
