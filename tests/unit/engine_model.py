"""A small pure model of both systems for the stateful property test of engine + processor
(``test_engine_state_machine``) and the table cases it found (``test_engine_sequences``).

What each system holds is plain state: Salesforce's PendingServiceRouting, AgentWork and
work items (MessagingSession), ServiceNow's awa_work_item and interaction rows. Each
change is kept, per record, as intake would read it (the record and its
``source_event_id`` in the pollers' formats), so a test can deliver a record's changes one
by one, fold several into its latest snapshot (a catch-up read that skips states), or
deliver one again. The executors here apply the bridge's commands to the model the way the
two systems do (the transitions of ``bridge_sandbox.salesforce.omni`` /
``interaction_api`` and ``bridge_sandbox.servicenow.awa``, which follow the documented
behaviour in ``/work/shared/reference/``) and answer like the adapters' executors.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bridge.domain import ClaimedCommand, EventKind, Operation
from bridge.domain.sf_ids import to18
from bridge.engine import derived_id, interaction_sys_id
from bridge.errors import Permanent, Retriable, Skippable
from bridge.ledger.ports import NewEvent
from bridge_sandbox import seed
from bridge_sandbox.salesforce.ids import make_id
from tests.unit.engine_builders import AT, MESSAGING, OVERFLOW

AGENTS = seed.AGENTS
SN_OF_SF = {to18(a.sf_user_id): a.sn_user_sys_id for a in AGENTS}
PERSON_OF = {to18(a.sf_user_id): a.name for a in AGENTS} | {
    a.sn_user_sys_id: a.name for a in AGENTS
}

LIVE_AGENT_WORK = ("Assigned", "Opened")
LIVE_WORK_ITEM = ("pending_accept", "accepted")
ENDED_WORK_ITEM = ("Ended",)
CLOSED_INTERACTION = ("closed_complete", "closed_abandoned")

FOLD = "fold"  # deliver only the newest change: a catch-up read that skips states
NEXT = "next"  # the oldest change not read yet
AGAIN = "again"  # the last change read, once more (a poll's overlap window: same id)
AGAIN_OTHER_ID = "again_other_id"  # the same change through another stream (another id)
MODES = (NEXT, FOLD, AGAIN, AGAIN_OTHER_ID)


@dataclass(frozen=True)
class Change:
    """One change of one record, as intake reads it."""

    source: str
    kind: EventKind
    source_event_id: str
    occurred_at: datetime
    record: Mapping[str, Any]

    def as_new_event(self, source_event_id: str | None = None) -> NewEvent:
        return NewEvent(
            self.source,
            source_event_id or self.source_event_id,
            self.kind.value,
            self.occurred_at,
            dict(self.record),
        )


@dataclass
class Feed:
    """One record's changes, oldest first; ``read`` of them are delivered or folded over."""

    changes: list[Change] = field(default_factory=list)
    read: int = 0
    last: Change | None = None
    repeats: int = 0

    @property
    def unread(self) -> bool:
        return self.read < len(self.changes)

    def take(self, mode: str) -> Change | None:
        """The change a delivery in ``mode`` reads, or None when there is none."""
        if mode in (NEXT, FOLD):
            if not self.unread:
                return None
            self.read = self.read + 1 if mode == NEXT else len(self.changes)
            self.last = self.changes[self.read - 1]
            return self.last
        return self.last

    def skipped(self, mode: str) -> list[Change]:
        """The changes a FOLD would step over (not read)."""
        return self.changes[self.read : -1] if mode == FOLD else []


@dataclass
class Conversation:
    """What the model knows of one conversation (the ids both systems use)."""

    direction: str  # sf_to_sn | sn_to_sf
    sf_work_item: str | None
    psr: str | None
    document: str  # the interaction's sys_id


class Systems:
    """Both systems' records, their changes per record, and the executors' effects."""

    def __init__(self) -> None:
        self.now = AT
        self.feeds: dict[str, Feed] = {}
        self.psrs: dict[str, dict[str, Any]] = {}
        self.agent_work: dict[str, dict[str, Any]] = {}
        self.work_items: dict[str, dict[str, Any]] = {}  # Salesforce MessagingSession
        self.items: dict[str, dict[str, Any]] = {}  # awa_work_item
        self.interactions: dict[str, dict[str, Any]] = {}
        self.conversations: list[Conversation] = []
        self.sn_available = {a.sn_user_sys_id for a in AGENTS}
        self._n = 0

    # -- recording changes ---------------------------------------------------------------

    def _tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def _next(self) -> int:
        self._n += 1
        return self._n

    def _feed(self, key: str) -> Feed:
        return self.feeds.setdefault(key, Feed())

    def _sf_changed(self, kind: EventKind, record: dict[str, Any]) -> None:
        at = self._tick()
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        record["SystemModstamp"] = stamp
        change = Change(
            "salesforce", kind, f"{kind.value}:{record['Id']}:{stamp}", at, copy.deepcopy(record)
        )
        self._feed(f"{kind.value}:{record['Id']}").changes.append(change)

    def _sn_changed(self, kind: EventKind, row: dict[str, Any]) -> None:
        at = self._tick()
        row["sys_mod_count"] = str(int(row.get("sys_mod_count", "-1")) + 1)
        row["sys_updated_on"] = at.strftime("%Y-%m-%d %H:%M:%S")
        change = Change(
            "servicenow",
            kind,
            f"{kind.value}:{row['sys_id']}:{row['sys_mod_count']}",
            at,
            copy.deepcopy(row),
        )
        self._feed(f"{kind.value}:{row['sys_id']}").changes.append(change)

    # -- Salesforce -----------------------------------------------------------------------

    def _update_psr(self, psr_id: str, **changes: Any) -> None:
        psr = self.psrs.get(psr_id)
        if psr is None:
            return
        if any(psr.get(k) != v for k, v in changes.items()):
            psr.update(changes, Serial=psr["Serial"] + 1)  # the org counts system updates
            self._sf_changed(EventKind.PSR, psr)

    def _delete_psr(self, psr_id: str) -> None:
        if self.psrs.pop(psr_id, None) is None:
            return
        at = self._tick()
        record = {"Id": psr_id, "deletedDate": at.isoformat()}
        change = Change("salesforce", EventKind.PSR_DELETED, f"psr_deleted:{psr_id}", at, record)
        self._feed(f"psr_deleted:{psr_id}").changes.append(change)

    def _new_psr(self, work_item: str, queue: str, *, transfer: bool = False) -> str:
        psr_id = str(make_id("0JR", self._next()))
        psr = {
            "Id": psr_id,
            "WorkItemId": work_item,
            "QueueId": queue,
            "ServiceChannelId": MESSAGING.sf_service_channel_id,
            "IsPushed": False,
            "IsReadyForRouting": True,
            "IsTransfer": transfer,
            "Serial": 0,
            "LastDeclinedAgentSession": None,
            "PushTimeout": 30,
            "RoutingModel": "ExternalRouting",
            "RoutingType": "QueueBased",
        }
        self.psrs[psr_id] = psr
        self._sf_changed(EventKind.PSR, psr)
        return psr_id

    def _set_agent_work(self, aw_id: str, status: str, **fields: Any) -> None:
        work = self.agent_work[aw_id]
        work.update(Status=status, **fields)
        self._sf_changed(EventKind.AGENT_WORK, work)

    def _end_work_item(self, work_item: str) -> None:
        record = self.work_items[work_item]
        if record["Status"] in ENDED_WORK_ITEM:
            return
        record["Status"] = "Ended"
        # intake reads work items only once they have ended; the read carries the owner
        # (the queue until an agent accepts, then that agent: the org and the sandbox)
        self._sf_changed(
            EventKind.WORK_ITEM,
            {"Id": work_item, "Status": "Ended", "OwnerId": record["OwnerId"]},
        )

    def start_sf(self, queue: str) -> Conversation:
        """A customer starts a messaging session on an external-routing queue: a PSR."""
        work_item = make_id("0Mw", self._next())
        self.work_items[work_item] = {"Id": work_item, "Status": "Waiting", "OwnerId": queue}
        psr = self._new_psr(work_item, queue)
        conv = Conversation(
            "sf_to_sn", work_item, psr, interaction_sys_id(derived_id("sf", "psr", psr))
        )
        self.conversations.append(conv)
        return conv

    def open_agent_work(self, conv: Conversation) -> list[dict[str, Any]]:
        return [
            w
            for w in self.agent_work.values()
            if w["WorkItemId"] == conv.sf_work_item and w["Status"] in LIVE_AGENT_WORK
        ]

    def sf_accept(self, aw_id: str) -> None:
        work = self.agent_work[aw_id]
        assert work["Status"] == "Assigned"
        self._set_agent_work(aw_id, "Opened", AcceptDateTime=self._tick().isoformat())
        if work["PendingServiceRoutingId"]:
            self._delete_psr(work["PendingServiceRoutingId"])
        # the org makes the accepting agent the owner of the work item
        self.work_items[work["WorkItemId"]].update(Status="Active", OwnerId=work["UserId"])

    def sf_decline(self, aw_id: str, *, push_timeout: bool) -> None:
        work = self.agent_work[aw_id]
        assert work["Status"] == "Assigned"
        status = "DeclinedOnPushTimeout" if push_timeout else "Declined"
        self._set_agent_work(aw_id, status)
        self._unpush(work, declined=True)

    def _unpush(self, work: Mapping[str, Any], *, declined: bool) -> None:
        psr = work["PendingServiceRoutingId"]
        changes: dict[str, Any] = {"IsPushed": False}
        if declined:
            changes["LastDeclinedAgentSession"] = f"session-{work['UserId']}"
        if psr:
            self._update_psr(psr, **changes)

    def sf_close(self, aw_id: str) -> None:
        """The agent closes the work: Closed, other Assigned work canceled, the item ends."""
        work = self.agent_work[aw_id]
        assert work["Status"] == "Opened"
        self._set_agent_work(aw_id, "Closed", CloseDateTime=self._tick().isoformat())
        for other in list(self.agent_work.values()):
            if other["WorkItemId"] != work["WorkItemId"] or other["Id"] == aw_id:
                continue
            if other["Status"] == "Opened":
                self._set_agent_work(other["Id"], "Closed", CloseDateTime=self.now.isoformat())
            elif other["Status"] == "Assigned":
                self._set_agent_work(other["Id"], "Canceled")
        self._end_work_item(work["WorkItemId"])

    def customer_leaves(self, work_item: str) -> None:
        """The customer ends the session: Assigned offers canceled, the item ends, the
        PSR stays (the org leaves it behind)."""
        for work in list(self.agent_work.values()):
            if work["WorkItemId"] == work_item and work["Status"] == "Assigned":
                self._set_agent_work(work["Id"], "Canceled")
        self._end_work_item(work_item)

    def omni_assign(self, conv: Conversation, user: str) -> bool:
        """Omni-Channel pushes an Omni-routed PSR to an online user (sn_to_sf)."""
        psr = self.psrs.get(conv.psr or "")
        if psr is None or psr["IsPushed"] or conv.sf_work_item is None:
            return False
        if self.work_items[conv.sf_work_item]["Status"] in ENDED_WORK_ITEM:
            return False
        declined = {
            w["UserId"]
            for w in self.agent_work.values()
            if w["WorkItemId"] == conv.sf_work_item and w["Status"] != "Assigned"
        }
        if user in declined or any(w["UserId"] == user for w in self.open_agent_work(conv)):
            return False
        self._create_agent_work(user, conv.sf_work_item, psr["Id"])
        return True

    def _create_agent_work(self, user: str, work_item: str, psr: str | None) -> str:
        aw_id = str(make_id("0Bz", self._next()))
        self.agent_work[aw_id] = {
            "Id": aw_id,
            "UserId": to18(user),
            "WorkItemId": work_item,
            "PendingServiceRoutingId": psr,
            "ServiceChannelId": MESSAGING.sf_service_channel_id,
            "AcceptDateTime": None,
            "CloseDateTime": None,
        }
        self._set_agent_work(aw_id, "Assigned")
        if psr:
            self._update_psr(psr, IsPushed=True)
        return aw_id

    # -- ServiceNow -----------------------------------------------------------------------

    def _set_item(self, sys_id: str, **changes: Any) -> None:
        item = self.items[sys_id]
        old_state = item["state"]
        item.update(changes)
        if item["state"] == "canceled":
            item["active"] = "false"
            item["cancel_reason"] = item.get("cancel_reason") or "manually_assigned"
        self._sn_changed(EventKind.AWA_WORK_ITEM, item)
        if item["state"] == "accepted" and old_state != "accepted":
            interaction = self.interactions.get(item["document_id"])
            if interaction is not None and interaction["active"] == "true":
                self._set_interaction(
                    item["document_id"], state="work_in_progress", assigned_to=item["assigned_to"]
                )

    def _set_interaction(self, sys_id: str, **changes: Any) -> None:
        interaction = self.interactions[sys_id]
        interaction.update(changes)
        closing = interaction["state"] in CLOSED_INTERACTION and interaction["active"] == "true"
        if closing:
            interaction["active"] = "false"
        self._sn_changed(EventKind.INTERACTION, interaction)
        if closing:
            for item in list(self.items.values()):
                if item["document_id"] == sys_id and item["active"] == "true":
                    self._set_item(item["sys_id"], state="canceled", cancel_reason="disqualified")

    def _new_item(self, document: str, queue: str, **extra: str) -> str:
        sys_id = str(seed.sys_id(f"awa_work_item:model:{self._next()}"))
        self.items[sys_id] = {
            "sys_id": sys_id,
            "state": "queued",
            "active": "true",
            "queue": queue,
            "document_table": "interaction",
            "document_id": document,
            "assigned_to": "",
            "external_segment_id": "",
            "cancel_reason": "",
            "rejected": "false",
            "timed_out": "false",
            "previous_work_item": "",
            **extra,
        }
        self._sn_changed(EventKind.AWA_WORK_ITEM, self.items[sys_id])
        return sys_id

    def active_item(self, document: str) -> dict[str, Any] | None:
        for item in self.items.values():
            live = item["active"] == "true" and item["state"] != "canceled"
            if live and item["document_id"] == document:
                return item
        return None

    def start_sn(self) -> Conversation:
        """A customer contacts ServiceNow: an interaction queued on the AWA queue mapped to
        Salesforce (its work item is routed into Omni-Channel)."""
        document = seed.sys_id(f"interaction:model:{self._next()}")
        self.interactions[document] = {
            "sys_id": document,
            "state": "new",
            "active": "true",
            "correlation_id": "",
            "assigned_to": "",
        }
        self._sn_changed(EventKind.INTERACTION, self.interactions[document])
        self._new_item(document, OVERFLOW.sn_queue_sys_id)
        conv = Conversation("sn_to_sf", None, None, document)
        self.conversations.append(conv)
        return conv

    def sn_accept(self, sys_id: str) -> None:
        assert self.items[sys_id]["state"] == "pending_accept"
        self._set_item(sys_id, state="accepted")

    def sn_reject(self, sys_id: str) -> None:
        item = self.items[sys_id]
        assert item["state"] == "pending_accept"
        changes: dict[str, Any] = {"rejected": "true", "assigned_to": ""}
        if item["previous_work_item"]:
            changes.update(state="canceled", cancel_reason="transfer_rejected")
        else:
            changes["state"] = "queued"
        self._set_item(sys_id, **changes)

    def sn_time_out(self, sys_id: str) -> None:
        assert self.items[sys_id]["state"] == "pending_accept"
        self._set_item(sys_id, state="queued", timed_out="true", assigned_to="")

    def sn_close(self, document: str, state: str = "closed_complete") -> None:
        self._set_interaction(document, state=state)

    # -- the executors --------------------------------------------------------------------

    def execute(self, command: ClaimedCommand) -> Mapping[str, Any]:
        """A command applied as the system does it; answers like the adapters' executors,
        raises the bridge's errors as their error table would."""
        params = command.params
        op = command.operation
        if op is Operation.CREATE_INTERACTION:
            record = dict(params["record"])
            found = self.interactions.get(record["sys_id"])
            if found is not None:
                if command.look_first:
                    return {**found, "looked_up": True}
                raise Permanent("Operation Failed: duplicate sys_id", status=403)
            row = {**record, "active": "true", "assigned_to": ""}
            self.interactions[record["sys_id"]] = row
            self._sn_changed(EventKind.INTERACTION, row)
            return dict(row)
        if op in (Operation.OFFER, Operation.TRANSFER):
            return self._offer(op, params)
        if op is Operation.CANCEL_WORK_ITEM:
            sys_id = str(params["sys_id"])
            if sys_id not in self.items:
                raise Permanent(f"No Record found: awa_work_item {sys_id}", status=404)
            if self.items[sys_id]["state"] != "canceled":
                self._set_item(sys_id, state="canceled", cancel_reason=params.get("cancel_reason"))
            return dict(self.items[sys_id])
        if op is Operation.CLOSE_INTERACTION:
            sys_id = str(params["sys_id"])
            if sys_id not in self.interactions:
                raise Permanent(f"No Record found: interaction {sys_id}", status=404)
            if self.interactions[sys_id]["state"] != params["state"]:
                self._set_interaction(sys_id, state=str(params["state"]))
            return dict(self.interactions[sys_id])
        return self._salesforce(command)

    def _offer(self, op: Operation, params: Mapping[str, Any]) -> Mapping[str, Any]:
        document = str(params["document_id"])
        interaction = self.interactions.get(document)
        if interaction is None:
            raise Permanent(f"Document interaction:{document} not found", status=404)
        if interaction["active"] != "true":
            raise Permanent("Document is not active", status=409)
        excluded = set(params.get("excluded") or [])
        target = params.get("target_id")
        candidates = (
            [target] if target else [c for c in params.get("candidates") or [] if c not in excluded]
        )
        agent = next((c for c in candidates if c in self.sn_available), None)
        previous = self.active_item(document)
        if op is Operation.OFFER:
            if previous is not None and previous["state"] in LIVE_WORK_ITEM:
                raise Permanent(f"Work Item is already {previous['state']}", status=409)
            if agent is None:
                raise Retriable("no candidate agent is available in AWA", retry_after=30)
            sys_id = (
                previous["sys_id"]
                if previous
                else self._new_item(document, str(params["queue_id"]))
            )
            queue = str(params["queue_id"])
        else:
            if agent is None:
                raise Permanent("Transfer failed - couldn't blind transfer to agent", status=409)
            if previous is None:
                previous = self.items[self._new_item(document, str(params["source_queue_id"]))]
            previous["active"] = "false"
            self._sn_changed(EventKind.AWA_WORK_ITEM, previous)
            queue = previous["queue"]  # target_type agent: the work stays on its queue
            sys_id = self._new_item(
                document,
                queue,
                previous_work_item=previous["sys_id"],
                external_segment_id=str(params["external_segment_id"]),
            )
        auto = bool(params.get("enable_auto_assign"))
        self._set_item(
            sys_id,
            state="accepted" if auto else "pending_accept",
            assigned_to=agent,
            queue=queue,
            external_segment_id=str(params["external_segment_id"]),
            rejected="false",
            timed_out="false",
        )
        item = self.items[sys_id]
        return {
            "sys_id": sys_id,
            "document_id": document,
            "document_table": "interaction",
            "queue": item["queue"],
            "assigned_to": agent,
        }

    def _salesforce(self, command: ClaimedCommand) -> Mapping[str, Any]:
        params = command.params
        op = command.operation
        if op is Operation.CREATE_AGENT_WORK:
            user, psr_id = to18(str(params["UserId"])), str(params["PendingServiceRoutingId"])
            work_item = str(params["WorkItemId"])
            if command.look_first:
                for work in self.agent_work.values():
                    if work["PendingServiceRoutingId"] == psr_id and work["UserId"] == user:
                        return {"id": work["Id"], "looked_up": True}
            if self.work_items[work_item]["Status"] in ENDED_WORK_ITEM:
                raise Permanent(f"MessagingSession {work_item} has ended and can't be assigned")
            psr = self.psrs.get(psr_id)
            if psr is None:
                raise Permanent(f"PendingServiceRouting {psr_id} does not route work item")
            if psr["IsPushed"]:
                raise Permanent(f"PendingServiceRouting {psr_id} is already pushed to an agent")
            if any(
                w["UserId"] == user
                for w in self.agent_work.values()
                if w["WorkItemId"] == work_item and w["Status"] in LIVE_AGENT_WORK
            ):
                raise Permanent(f"User {user} already has open AgentWork for {work_item}")
            return {"id": self._create_agent_work(user, work_item, psr_id)}
        if op is Operation.DELETE_PSR:
            psr_id = str(params["id"])
            if psr_id not in self.psrs:
                raise Skippable(f"PendingServiceRouting {psr_id} is already deleted")
            self._delete_psr(psr_id)
            return {"deleted": psr_id}
        if op is Operation.UPDATE_AGENT_WORK:
            return self._patch_agent_work(params)
        if op is Operation.ROUTE:
            return self._route(params)
        if op is Operation.CANCEL_ROUTE:
            conv = self._by_conversation(str(params["conversationIdentifier"]))
            if conv is None or conv.sf_work_item is None:
                raise Permanent("unknown conversation", status=404)
            open_psrs = [p for p in self.psrs.values() if p["WorkItemId"] == conv.sf_work_item]
            for psr in open_psrs:
                self._delete_psr(psr["Id"])
            return {"success": bool(open_psrs)}
        raise Permanent(f"the model does not run {op}")

    def _patch_agent_work(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        aw_id = to18(str(params["workId"]))
        work = self.agent_work.get(aw_id)
        if work is None:
            raise Permanent(f"Invalid workId: no AgentWork {aw_id!r}", status=400)
        status = params["status"]
        if status == "Cancel":
            if work["Status"] != "Assigned":
                raise Permanent(
                    f"Invalid status: AgentWork {aw_id} has Status {work['Status']}", status=409
                )
            self._set_agent_work(aw_id, "Canceled")
            self._unpush(work, declined=False)
        elif status == "Close":
            if work["Status"] != "Opened":
                raise Permanent(
                    f"Invalid status: AgentWork {aw_id} has Status {work['Status']}", status=409
                )
            self.sf_close(aw_id)
        else:
            raise Permanent(f"the model does not PATCH {status}")
        return {"success": True}

    def _by_conversation(self, identifier: str) -> Conversation | None:
        return next((c for c in self.conversations if c.document == identifier), None)

    def _route(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        conv = self._by_conversation(str(params["conversationIdentifier"]))
        if conv is None:
            raise Permanent("unknown conversation", status=400)
        if conv.sf_work_item is None:
            conv.sf_work_item = make_id("0Mw", self._next())
            self.work_items[conv.sf_work_item] = {
                "Id": conv.sf_work_item,
                "Status": "Waiting",
                "OwnerId": str(params["routingInfo"]["queueId"]),
            }
        elif any(p["WorkItemId"] == conv.sf_work_item for p in self.psrs.values()):
            raise Permanent("Conversation precondition failed: an open PSR", status=409)
        psr = self._new_psr(conv.sf_work_item, str(params["routingInfo"]["queueId"]))
        self.psrs[psr]["RoutingModel"] = "MostAvailable"
        conv.psr = psr
        return {
            "success": True,
            "psrId": psr,
            "workItemId": conv.sf_work_item,
            "routingCorrelationId": derived_id("routing", psr),
        }

    # -- what both systems show -----------------------------------------------------------

    def sf_outcome(self, conv: Conversation) -> str | None:
        """closed / abandoned once Salesforce has ended the conversation, else None:
        closed when an agent had accepted it (AcceptDateTime), abandoned when not."""
        if conv.sf_work_item is None:
            return None
        if self.work_items[conv.sf_work_item]["Status"] not in ENDED_WORK_ITEM:
            return None
        works = [w for w in self.agent_work.values() if w["WorkItemId"] == conv.sf_work_item]
        return "closed" if any(w["AcceptDateTime"] for w in works) else "abandoned"

    def sn_outcome(self, conv: Conversation) -> str | None:
        interaction = self.interactions.get(conv.document)
        if interaction is None or interaction["state"] not in CLOSED_INTERACTION:
            return None
        return "closed" if interaction["state"] == "closed_complete" else "abandoned"

    def live_agents(self, conv: Conversation) -> tuple[set[str], set[str]]:
        """The people who hold the conversation live: in Salesforce (AgentWork Assigned or
        Opened) and in AWA (active work item pending accept or accepted)."""
        sf = {PERSON_OF.get(w["UserId"], w["UserId"]) for w in self.open_agent_work(conv)}
        sn = {
            PERSON_OF.get(i["assigned_to"], i["assigned_to"])
            for i in self.items.values()
            if i["document_id"] == conv.document
            and i["active"] == "true"
            and i["state"] in LIVE_WORK_ITEM
        }
        return sf, sn

    def pending_items(self, conv: Conversation) -> list[str]:
        return [
            i["sys_id"]
            for i in self.items.values()
            if i["document_id"] == conv.document
            and i["active"] == "true"
            and i["state"] == "pending_accept"
        ]
