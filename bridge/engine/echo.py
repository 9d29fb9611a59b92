"""Echo keys: how a change the bridge caused is named, so that the event reporting it is
recognised as the bridge's own and not translated again (no ping-pong).

The command builders expect a key (``ConversationData.expect``) when they ask for a
change; ``of_record`` names an event the same way. Nothing else spells these strings.
"""

from __future__ import annotations

from bridge.domain.records import (
    AgentWorkRecord,
    AwaWorkItemRecord,
    InteractionRecord,
    PsrDeletedRecord,
    Record,
)


def agent_work_status(agent_work_id: str, status: str) -> str:
    """An AgentWork the bridge knows by id reaches ``status`` (PATCH /agentWork)."""
    return f"agent_work_id:{agent_work_id}:{status}"


def agent_work_for(work_item_id: str, user_id: str, status: str) -> str:
    """An AgentWork of a work item for a user, before the bridge knows its id (a create)."""
    return f"agent_work:{work_item_id}:{user_id}:{status}"


def awa_work_item_state(sys_id: str, state: str) -> str:
    """An awa_work_item the bridge knows by sys_id reaches ``state`` (a cancel)."""
    return f"awa_work_item_id:{sys_id}:{state}"


def awa_segment_state(external_segment_id: str, state: str) -> str:
    """The awa_work_item of an offer or transfer, named by its segment, reaches ``state``."""
    return f"awa_work_item:{external_segment_id}:{state}"


def interaction_state(sys_id: str, state: str) -> str:
    return f"interaction:{sys_id}:{state}"


def psr_deleted(psr_id: str) -> str:
    return f"psr_deleted:{psr_id}"


def of_agent_work(record: AgentWorkRecord, status: str) -> list[str]:
    """The keys of the AgentWork reaching ``status`` (its own, or one it went through
    before the status a later read shows)."""
    keys = [agent_work_status(record.id, status)]
    if record.work_item_id and record.user_id:
        keys.append(agent_work_for(record.work_item_id, record.user_id, status))
    return keys


def of_record(record: Record) -> list[str]:
    """The keys an event's record would carry in ``expect`` had the bridge caused it."""
    if isinstance(record, AgentWorkRecord):
        return of_agent_work(record, record.status.value)
    if isinstance(record, AwaWorkItemRecord):
        state = record.state.value
        keys = [awa_work_item_state(record.sys_id, state)]
        if record.external_segment_id:
            keys.append(awa_segment_state(record.external_segment_id, state))
        return keys
    if isinstance(record, InteractionRecord):
        return [interaction_state(record.sys_id, record.state.value)]
    if isinstance(record, PsrDeletedRecord):
        return [psr_deleted(record.id)]
    return []
