"""What a dispatched command's answer teaches: the ids it created, who got an offer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from bridge.domain import (
    AgentWorkStatus,
    Command,
    Correlation,
    Decision,
    EventOutcome,
    Operation,
    WorkItemState,
    field_value,
)
from bridge.domain.conversation import AgentWorkSeen, AwaWorkItemSeen
from bridge.domain.records import to18
from bridge.engine.working import Draft

Learn = Callable[[Draft, Command, Mapping[str, Any]], None]


def _answer_field(result: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = field_value(result, name)
        if isinstance(value, str) and value:
            return value
    return None


def apply_result(correlation: Correlation, command: Command, result: Mapping[str, Any]) -> Decision:
    """What a dispatched command's answer teaches; ``result`` is the answer's record."""
    work = Draft(correlation)
    try:
        _LEARN.get(command.operation, _learn_nothing)(work, command, result)
    except ValueError as exc:
        return Decision(
            EventOutcome.ERROR, reason=f"{command.operation} answer not understood: {exc}"
        )
    return work.decision(EventOutcome.PROCESSED)


def _learn_nothing(work: Draft, command: Command, body: Mapping[str, Any]) -> None:
    del work, command, body


def _learn_offer(work: Draft, command: Command, item: Mapping[str, Any]) -> None:
    """The AWA work item the offer or transfer made, and the agent it went to."""
    sys_id = _answer_field(item, "sys_id")
    agent = _answer_field(item, "assigned_to")
    if sys_id is None:
        raise ValueError("no work_item.sys_id")
    state = WorkItemState(_answer_field(item, "state") or WorkItemState.PENDING_ACCEPT.value)
    work.see_work_item(sys_id, AwaWorkItemSeen(user=agent, state=state, active=True))
    work.set(sn_work_item_sys_id=sys_id)
    if agent:
        work.set(sn_user_sys_id=agent)
    if command.segment_seq is not None:
        changes: dict[str, Any] = {"sn_work_item_sys_id": sys_id}
        if agent:
            changes["sn_user_sys_id"] = agent
        work.update_segment(command.segment_seq, **changes)


def _learn_agent_work(work: Draft, command: Command, body: Mapping[str, Any]) -> None:
    # POST /agentWork answers agentWorkId (its "id" is the response's own UUID); the REST
    # create answers id.
    raw = _answer_field(body, "agentWorkId", "workId", "id")
    if raw is None:
        raise ValueError("no AgentWork id")
    agent_work_id = to18(raw)
    user = command.params.get("UserId") or command.params.get("userId")
    user = to18(user) if isinstance(user, str) else None
    known = work.data.agent_work.get(agent_work_id)
    if known is None:
        known = AgentWorkSeen(user=user, status=AgentWorkStatus.ASSIGNED)
    work.see_agent_work(agent_work_id, replace(known, own=True))
    work.set(sf_agent_work_id=agent_work_id)
    if command.segment_seq is not None:
        work.update_segment(command.segment_seq, sf_agent_work_id=agent_work_id)


def _learn_route(work: Draft, command: Command, body: Mapping[str, Any]) -> None:
    del command
    psr = _answer_field(body, "psrId")
    work_item = _answer_field(body, "workItemId")
    routing_correlation = _answer_field(body, "routingCorrelationId")
    if routing_correlation:
        work.change_data(routing_correlation_id=routing_correlation)
    if psr:
        work.set(sf_psr_id=to18(psr))
    if work_item:
        work.set(sf_work_item_id=to18(work_item))


_LEARN: dict[Operation, Learn] = {
    Operation.OFFER: _learn_offer,
    Operation.TRANSFER: _learn_offer,
    Operation.CREATE_AGENT_WORK: _learn_agent_work,
    Operation.ASSIGN_AGENT_WORK: _learn_agent_work,
    Operation.ROUTE: _learn_route,
}
