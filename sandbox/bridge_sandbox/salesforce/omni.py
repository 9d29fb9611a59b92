"""Omni-Channel in the sandbox org: AgentWork and PendingServiceRouting rules, the org's own
router for Omni-routed queues, and the transitions agents and customers cause.

Registered on the Org as a Behaviour, so every write (through the REST API, the Interaction
Service API or the control surface) passes the same rules, and every change lands in the
change log with a new SystemModstamp.
"""

from __future__ import annotations

import heapq
import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

from bridge_sandbox import seed
from bridge_sandbox.salesforce.ids import is_valid, to18
from bridge_sandbox.salesforce.store import Org, SalesforceApiError
from bridge_sandbox.serving import Clock

ASSIGNED = "Assigned"
OPENED = "Opened"
# AgentWork that still takes some of the agent's capacity.
OPEN_STATUSES = (ASSIGNED, OPENED)
# The only statuses in which AgentWork may be deleted through the API.
DELETABLE_STATUSES = ("Closed", "Declined", "Unavailable")
# Declining an offer, explicitly or by letting it time out, keeps the router away for good.
REFUSED_STATUSES = ("Declined", "DeclinedOnPushTimeout")
EXTERNAL_ROUTING = "ExternalRouting"
PSR = "PendingServiceRouting"
AGENT_WORK = "AgentWork"
_SESSION_NS = uuid.UUID("2d5c8d4e-7f39-4f5e-9a0c-51f1e8b7a3c2")


class OrgHost(Protocol):
    """What Omni-Channel needs from the sandbox around it."""

    @property
    def org(self) -> Org: ...

    @property
    def clock(self) -> Clock: ...


def invalid(
    message: str, status: int = 400, code: str = "FIELD_INTEGRITY_EXCEPTION"
) -> SalesforceApiError:
    """A refused write or transition, in the org's error shape."""
    return SalesforceApiError(status, code, message)


def agent_session_id(user_id: str) -> str:
    """The agent's Omni-Channel session id (what LastDeclinedAgentSession holds)."""
    return str(uuid.uuid5(_SESSION_NS, user_id[:15]))


class OmniChannel:
    """The org's Omni-Channel. Construct with the sandbox, register with
    ``org.add_behaviour``; advancing the sandbox clock applies push time-outs."""

    def __init__(self, host: OrgHost) -> None:
        self._host = host
        # (push time-out timestamp, AgentWork id): the next time-outs due, soonest first.
        self._deadlines: list[tuple[float, str]] = []
        # Omni-routed PSRs ready for routing and not pushed: what the router looks at.
        self._waiting: dict[str, None] = {}
        # ConversationIdentifier -> MessagingSession id (the store does not index it).
        self._conversations: dict[str, str] = {}
        host.org.on_reset(self._forget)
        host.clock.on_advance(self.apply_due)

    @property
    def org(self) -> Org:
        return self._host.org

    # -- Behaviour hooks ----------------------------------------------------------------
    def before_insert(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        if sobject == PSR:
            self._psr_defaults(org, record)
        elif sobject == AGENT_WORK:
            self._assign(org, record, system)

    def after_insert(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        if sobject == PSR:
            self._route_new(org, record)
        elif sobject == "MessagingSession" and record["ConversationIdentifier"]:
            self._conversations[record["ConversationIdentifier"]] = record["Id"]
        elif sobject == AGENT_WORK and record["Status"] == ASSIGNED:
            psr_id = record["PendingServiceRoutingId"]
            if psr_id and org.get(PSR, psr_id) is not None:
                org.update(PSR, psr_id, {"IsPushed": True, "IsPushAttempted": True}, system=True)
            deadline: datetime | None = record["PushTimeoutDateTime"]
            if deadline is not None:
                heapq.heappush(self._deadlines, (deadline.timestamp(), record["Id"]))

    def before_update(
        self, org: Org, sobject: str, old: dict[str, Any], changes: dict[str, Any], system: bool
    ) -> None:
        if sobject == AGENT_WORK and not system:
            raise SalesforceApiError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(changes)}. AgentWork fields "
                "can't be updated through the API.",
                list(changes),
            )
        if sobject != PSR:
            return
        if system:
            if any(old[k] != v for k, v in changes.items()):
                changes.setdefault("Serial", old["Serial"] + 1)
        elif old["IsReadyForRouting"]:
            raise SalesforceApiError(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                f"PendingServiceRouting {old['Id']} is ready for routing "
                "(IsReadyForRouting = true) and can't be edited; delete it instead.",
                list(changes),
            )

    def after_update(
        self, org: Org, sobject: str, old: dict[str, Any], new: dict[str, Any], system: bool
    ) -> None:
        if sobject != PSR:
            return
        if new["IsReadyForRouting"] and not old["IsReadyForRouting"]:
            self._route_new(org, new)
        else:
            self._track(new)

    def before_delete(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        if sobject == AGENT_WORK and not system and record["Status"] not in DELETABLE_STATUSES:
            raise SalesforceApiError(
                400,
                "DELETE_FAILED",
                f"AgentWork {record['Id']} has Status {record['Status']}; only Closed, "
                "Declined or Unavailable AgentWork can be deleted.",
            )

    def after_delete(self, org: Org, sobject: str, record: dict[str, Any], system: bool) -> None:
        if sobject == PSR:
            self._waiting.pop(record["Id"], None)

    # -- lookups --------------------------------------------------------------------------
    def queue(self, ref: str) -> dict[str, Any]:
        """A queue (Group of Type Queue) by id, DeveloperName or Name."""
        org = self.org
        found = org.get("Group", ref) if org.sobject_of(ref) == "Group" else None
        if found is None:
            by_name = org.where("Group", DeveloperName=ref) or [
                g for g in org.where("Group", Type="Queue") if g["Name"] == ref
            ]
            found = by_name[0] if by_name else None
        if found is None or found["Type"] != "Queue":
            raise invalid(f"No queue with id, DeveloperName or Name {ref!r}", 404, "NOT_FOUND")
        return found

    def channel(self, ref: str) -> dict[str, Any]:
        """A ServiceChannel by id, DeveloperName or label (``Messaging``, ``Case``)."""
        org = self.org
        if org.sobject_of(ref) == "ServiceChannel":
            found = org.get("ServiceChannel", ref)
            if found is not None:
                return found
        for candidate in org.all("ServiceChannel"):
            if ref in (candidate["DeveloperName"], candidate["MasterLabel"]):
                return candidate
        raise invalid(f"No service channel {ref!r}", 404, "NOT_FOUND")

    def agent_work(self, agent_work_id: str) -> dict[str, Any]:
        found = self.org.get(AGENT_WORK, agent_work_id) if is_valid(agent_work_id) else None
        if found is None:
            raise invalid(f"No AgentWork {agent_work_id!r}", 404, "NOT_FOUND")
        return found

    def open_psr(self, work_item_id: str) -> dict[str, Any] | None:
        """The live PendingServiceRouting of a work item (at most one exists)."""
        found = self.org.where(PSR, WorkItemId=work_item_id)
        return found[0] if found else None

    def conversation(self, conversation_identifier: str) -> dict[str, Any] | None:
        """The MessagingSession of a conversation identifier, if there is one."""
        session_id = self._conversations.get(conversation_identifier)
        return self.org.get("MessagingSession", session_id) if session_id else None

    def current_presence(self, user_id: str) -> dict[str, Any] | None:
        found = self.org.where("UserServicePresence", UserId=user_id, IsCurrentState=True)
        return found[0] if found else None

    # -- what customers do ----------------------------------------------------------------
    def start(
        self,
        queue: str,
        channel: str = "Messaging",
        *,
        subject: str | None = None,
        conversation_identifier: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A customer starts a conversation: a work item and its PSR on ``queue``."""
        org = self.org
        with org.lock:
            group = self.queue(queue)
            service_channel = self.channel(channel)
            entity = service_channel["RelatedEntity"]
            fields: dict[str, Any] = {"OwnerId": group["Id"]}
            if entity == "MessagingSession":
                fields |= {
                    "Status": "Waiting",
                    "StartTime": org.now(),
                    "Origin": "Partner",
                    "ConversationIdentifier": conversation_identifier or str(uuid.uuid4()),
                }
            else:
                fields |= {"Subject": subject or "Customer request", "Origin": "Web"}
            work_item = org.insert(entity, fields, system=True)
            psr = self.route_work_item(work_item["Id"], group["Id"], service_channel["Id"])
            return org.get(entity, work_item["Id"]) or work_item, psr

    def route_work_item(
        self, work_item_id: str, queue_id: str, channel_id: str, *, transfer: bool = False
    ) -> dict[str, Any]:
        """A new PSR for the work item on the queue (routed per the queue's model)."""
        org = self.org
        with org.lock:
            psr = org.insert(
                PSR,
                {
                    "WorkItemId": work_item_id,
                    "ServiceChannelId": channel_id,
                    "GroupId": queue_id,
                    "RoutingType": "QueueBased",
                    "IsReadyForRouting": True,
                    "IsTransfer": transfer,
                },
                system=True,
            )
            return org.get_including_deleted(PSR, psr["Id"]) or psr

    def abandon(self, work_item_id: str) -> dict[str, Any]:
        """The customer leaves: the work item ends, offers are canceled, the PSR stays."""
        org = self.org
        with org.lock:
            entity, item = self._work_item(work_item_id)
            if _ended(entity, item):
                raise invalid(f"{entity} {work_item_id} has already ended", 409, "INVALID_STATUS")
            for work in org.where(AGENT_WORK, WorkItemId=item["Id"], Status=ASSIGNED):
                self._set_status(work, "Canceled", CancelDateTime=org.now())
            self._end_work_item(entity, item)
            return org.get(entity, item["Id"]) or item

    # -- what agents do -------------------------------------------------------------------
    def accept(self, agent_work_id: str) -> dict[str, Any]:
        """The agent accepts: Opened, the PSR is deleted, the work item becomes theirs."""
        org = self.org
        with org.lock:
            work = self._in_status(agent_work_id, ASSIGNED, "accepted")
            now = org.now()
            requested: datetime = work["RequestDateTime"] or work["AssignedDateTime"] or now
            work = self._set_status(
                work,
                OPENED,
                AcceptDateTime=now,
                SpeedToAnswer=int((now - requested).total_seconds()),
            )
            psr_id = work["PendingServiceRoutingId"]
            if psr_id and org.get(PSR, psr_id) is not None:
                org.delete(PSR, psr_id, system=True)
            entity, item = self._work_item(work["WorkItemId"])
            changes: dict[str, Any] = {"OwnerId": work["UserId"]}
            if entity == "MessagingSession":
                changes |= {"Status": "Active", "AcceptTime": item["AcceptTime"] or now}
            org.update(entity, item["Id"], changes, system=True)
            return work

    def decline(self, agent_work_id: str, reason: str | None = None) -> dict[str, Any]:
        """The agent declines: Declined, and the PSR is handed back for routing."""
        with self.org.lock:
            work = self._in_status(agent_work_id, ASSIGNED, "declined")
            return self._release(
                work, "Declined", DeclineDateTime=self.org.now(), DeclineReason=reason
            )

    def push_timeout(self, agent_work_id: str) -> dict[str, Any]:
        """The agent let the push time out (also applied by the clock)."""
        with self.org.lock:
            work = self._in_status(agent_work_id, ASSIGNED, "timed out")
            now = self.org.now()
            deadline: datetime | None = work["PushTimeoutDateTime"]
            return self._release(
                work,
                "DeclinedOnPushTimeout",
                DeclineDateTime=now,
                PushTimeoutDateTime=deadline if deadline and deadline <= now else now,
            )

    def cancel(self, agent_work_id: str) -> dict[str, Any]:
        """The routing partner withdraws assigned, not yet accepted or declined, work."""
        org = self.org
        with org.lock:
            work = self.agent_work(agent_work_id)
            if work["Status"] != ASSIGNED:
                raise invalid(
                    f"AgentWork {work['Id']} isn't in a state that can be canceled "
                    f"(Status {work['Status']}; only Assigned work can be canceled)",
                    409,
                    "INVALID_STATUS",
                )
            work = self._set_status(work, "Canceled", CancelDateTime=org.now())
            self._unpush(work, declined=False)
            self._route_waiting(org)
            return work

    def close(self, agent_work_id: str) -> dict[str, Any]:
        """The agent closes the work: Closed, and the conversation ends."""
        org = self.org
        with org.lock:
            work = self._in_status(agent_work_id, OPENED, "closed")
            now = org.now()
            work = self._close_one(work, now)
            for other in org.where(AGENT_WORK, WorkItemId=work["WorkItemId"]):
                if other["Status"] == OPENED:
                    self._close_one(other, now)
                elif other["Status"] == ASSIGNED:
                    self._set_status(other, "Canceled", CancelDateTime=now)
            entity, item = self._work_item(work["WorkItemId"])
            if not _ended(entity, item):
                self._end_work_item(entity, item)
            self._route_waiting(org)
            return work

    def transfer_to_queue(self, agent_work_id: str, queue: str) -> dict[str, Any]:
        """The agent transfers to a queue: Transferred, and a new PSR with IsTransfer."""
        org = self.org
        with org.lock:
            work = self._in_status(agent_work_id, OPENED, "transferred")
            return self.transfer(work["WorkItemId"], self.queue(queue)["Id"])

    def transfer(self, work_item_id: str, queue_id: str) -> dict[str, Any]:
        """The work item moves to a queue: its Opened AgentWork becomes Transferred, and a
        new PSR with IsTransfer = true routes it there."""
        org = self.org
        with org.lock:
            work = self._open_work_of_item(work_item_id)
            for opened in work:
                if opened["Status"] == OPENED:
                    self._set_status(opened, "Transferred")
            channel_id = work[0]["ServiceChannelId"] if work else self._channel_of(work_item_id)
            psr = self.route_work_item(work_item_id, queue_id, channel_id, transfer=True)
            self._route_waiting(org)
            return psr

    def _channel_of(self, work_item_id: str) -> str:
        entity, _ = self._work_item(work_item_id)
        for candidate in self.org.all("ServiceChannel"):
            if candidate["RelatedEntity"] == entity:
                return str(candidate["Id"])
        raise invalid(f"No service channel routes {entity} work items", 404, "NOT_FOUND")

    def transfer_to_agent(self, agent_work_id: str, user_id: str) -> dict[str, Any]:
        """The agent transfers to another agent: a second AgentWork Assigned, no new PSR."""
        org = self.org
        with org.lock:
            work = self._in_status(agent_work_id, OPENED, "transferred")
            if org.sobject_of(user_id) != "User" or org.get("User", user_id) is None:
                raise invalid(f"No user {user_id!r}", 404, "NOT_FOUND")
            if to18(user_id) == work["UserId"]:
                raise invalid(f"AgentWork {work['Id']} already belongs to {user_id}")
            return org.insert(
                AGENT_WORK,
                {
                    "UserId": user_id,
                    "WorkItemId": work["WorkItemId"],
                    "ServiceChannelId": work["ServiceChannelId"],
                    "CapacityWeight": work["CapacityWeight"],
                    "PushTimeout": work["PushTimeout"],
                },
                system=True,
            )

    def set_presence(
        self, user_id: str, online: bool, *, capacity: int | None = None
    ) -> dict[str, Any] | None:
        """The agent goes online (Available) or offline; offline makes Assigned work
        Unavailable. Returns the current UserServicePresence (None when offline)."""
        org = self.org
        with org.lock:
            if org.sobject_of(user_id) != "User" or org.get("User", user_id) is None:
                raise invalid(f"No user {user_id!r}", 404, "NOT_FOUND")
            current = self.current_presence(user_id)
            now = org.now()
            if online:
                if current is None:
                    current = org.insert(
                        "UserServicePresence",
                        {
                            "UserId": user_id,
                            "OwnerId": user_id,
                            "ServicePresenceStatusId": seed.SF_PRESENCE_AVAILABLE,
                            "IsCurrentState": True,
                            "ConfiguredCapacity": capacity or self._last_capacity(user_id),
                            "StatusStartDate": now,
                        },
                        system=True,
                    )
                elif capacity is not None:
                    current = org.update(
                        "UserServicePresence",
                        current["Id"],
                        {"ConfiguredCapacity": capacity},
                        system=True,
                    )
            elif current is not None:
                org.update(
                    "UserServicePresence",
                    current["Id"],
                    {"IsCurrentState": False, "StatusEndDate": now},
                    system=True,
                )
                current = None
                for work in org.where(AGENT_WORK, UserId=user_id, Status=ASSIGNED):
                    self._release(work, "Unavailable")
            self._route_waiting(org)
            return current

    # -- the clock ------------------------------------------------------------------------
    def apply_due(self) -> None:
        """Apply push time-outs whose time has come (cheap when none is due)."""
        now = self._host.clock.timestamp()
        soonest = self._deadlines[:1]  # a copy: other threads may pop meanwhile
        if not soonest or soonest[0][0] > now:
            return
        org = self.org
        with org.lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                due, work_id = heapq.heappop(self._deadlines)
                work = org.get(AGENT_WORK, work_id)
                deadline: datetime | None = work["PushTimeoutDateTime"] if work else None
                if work and work["Status"] == ASSIGNED and deadline and deadline.timestamp() == due:
                    self.push_timeout(work_id)

    # -- internals ------------------------------------------------------------------------
    def _psr_defaults(self, org: Org, record: dict[str, Any]) -> None:
        """Fill a new PSR from its queue's routing configuration; one PSR per work item."""
        queue_id = record["QueueId"] or record["GroupId"]
        if queue_id is None and record["RoutingType"] == "QueueBased":
            raise SalesforceApiError(
                400,
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [GroupId] (queue-based routing needs a queue)",
                ["GroupId"],
            )
        existing = self.open_psr(record["WorkItemId"])
        if existing is not None:
            raise SalesforceApiError(
                400,
                "DUPLICATE_VALUE",
                f"duplicate value found: WorkItemId duplicates value on record with id: "
                f"{existing['Id']}",
                ["WorkItemId"],
            )
        self._check_channel(org, record["WorkItemId"], record["ServiceChannelId"])
        config: dict[str, Any] = {}
        if queue_id is not None:
            group = org.get("Group", queue_id)
            if group is None or group["Type"] != "Queue":
                raise invalid(f"GroupId {queue_id} is not a queue")
            config_id = group["QueueRoutingConfigId"]
            config = (org.get("QueueRoutingConfig", config_id) if config_id else None) or {}
        record["QueueId"] = record["GroupId"] = queue_id
        for name in ("RoutingModel", "PushTimeout", "RoutingPriority", "CapacityWeight"):
            if record[name] is None:
                record[name] = config.get(name)
        if record["CapacityWeight"] is None and record["CapacityPercentage"] is None:
            record["CapacityWeight"] = 1.0
        record.update(Serial=0, IsPushed=False, IsPushAttempted=False)
        record["OwnerId"] = record["OwnerId"] or seed.SF_INTEGRATION_USER_ID

    def _check_channel(self, org: Org, work_item_id: str, channel_id: str) -> None:
        channel = org.get("ServiceChannel", channel_id)
        entity = org.sobject_of(work_item_id)
        if channel is None or channel["RelatedEntity"] != entity:
            raise invalid(
                f"ServiceChannelId {channel_id} does not route {entity} work items",
            )

    def _assign(self, org: Org, work: dict[str, Any], system: bool) -> None:
        """Checks and org-set fields of new AgentWork (it is always created Assigned)."""
        user_id: str = work["UserId"]
        entity, item = self._work_item(work["WorkItemId"])
        if _ended(entity, item):
            raise invalid(f"{entity} {item['Id']} has ended and can't be assigned")
        self._check_channel(org, item["Id"], work["ServiceChannelId"])
        psr: dict[str, Any] = {}
        if work["PendingServiceRoutingId"]:
            psr = org.get(PSR, work["PendingServiceRoutingId"]) or {}
            if psr.get("WorkItemId") != item["Id"]:
                raise invalid(
                    f"PendingServiceRouting {work['PendingServiceRoutingId']} does not route "
                    f"work item {item['Id']}"
                )
            if psr["IsPushed"] and not system:
                raise invalid(
                    f"PendingServiceRouting {psr['Id']} is already pushed to an agent",
                )
        if any(w["UserId"] == user_id for w in self._open_work_of_item(item["Id"])):
            raise invalid(f"User {user_id} already has open AgentWork for {item['Id']}")
        presence = self.current_presence(user_id)
        if presence is None:
            raise invalid(f"User {user_id} is not online in Omni-Channel and can't receive work")
        weight = self._weight(work, psr, presence)
        if not work["ShouldSkipCapacityCheck"]:
            free = self._free_capacity(user_id, presence)
            if weight > free:
                raise invalid(
                    f"User {user_id} doesn't have enough capacity for this work "
                    f"(needs {weight:g}, {free:g} free)"
                )
        now = org.now()
        push_timeout = work["PushTimeout"] or psr.get("PushTimeout")
        work.update(
            Status=ASSIGNED,
            OwnerId=user_id,
            AssignedDateTime=now,
            RequestDateTime=psr.get("CreatedDate") or now,
            PushTimeout=push_timeout,
            PushTimeoutDateTime=now + timedelta(seconds=push_timeout) if push_timeout else None,
            RoutingModel=psr.get("RoutingModel"),
            RoutingType=psr.get("RoutingType"),
            RoutingPriority=psr.get("RoutingPriority"),
            OriginalQueueId=psr.get("QueueId"),
            OriginalGroupId=psr.get("QueueId"),
        )
        if work["CapacityWeight"] is None and work["CapacityPercentage"] is None:
            work["CapacityWeight"] = weight

    def _weight(self, work: dict[str, Any], psr: dict[str, Any], presence: dict[str, Any]) -> float:
        """The capacity the work takes, in units of the agent's ConfiguredCapacity."""
        percentage = work["CapacityPercentage"]
        if percentage is not None:
            return float(percentage) * (presence["ConfiguredCapacity"] or 0) / 100.0
        weight = work["CapacityWeight"]
        if weight is None:
            weight = psr.get("CapacityWeight")
        return float(weight if weight is not None else 1.0)

    def _free_capacity(self, user_id: str, presence: dict[str, Any]) -> float:
        used = 0.0
        for status in OPEN_STATUSES:
            for work in self.org.where(AGENT_WORK, UserId=user_id, Status=status):
                used += self._weight(work, {}, presence)
        return float(presence["ConfiguredCapacity"] or 0) - used

    def _last_capacity(self, user_id: str) -> int:
        earlier = self.org.where("UserServicePresence", UserId=user_id)
        capacities = [p["ConfiguredCapacity"] for p in earlier if p["ConfiguredCapacity"]]
        return capacities[-1] if capacities else seed.DEFAULT_AGENT_CAPACITY

    def _open_work_of_item(self, work_item_id: str) -> list[dict[str, Any]]:
        return [
            w
            for w in self.org.where(AGENT_WORK, WorkItemId=work_item_id)
            if w["Status"] in OPEN_STATUSES
        ]

    def _work_item(self, work_item_id: str) -> tuple[str, dict[str, Any]]:
        found = self.org.get_any(work_item_id) if is_valid(work_item_id) else None
        if found is None or found[0] not in ("MessagingSession", "Case"):
            raise invalid(
                f"No work item (MessagingSession or Case) {work_item_id!r}", 404, "NOT_FOUND"
            )
        return found

    def _end_work_item(self, entity: str, item: dict[str, Any]) -> None:
        now = self.org.now()
        if entity == "MessagingSession":
            changes: dict[str, Any] = {"Status": "Ended", "EndTime": now}
        else:
            changes = {"Status": "Closed", "IsClosed": True, "ClosedDate": now}
        self.org.update(entity, item["Id"], changes, system=True)

    def _in_status(self, agent_work_id: str, status: str, action: str) -> dict[str, Any]:
        work = self.agent_work(agent_work_id)
        if work["Status"] != status:
            raise invalid(
                f"AgentWork {work['Id']} has Status {work['Status']}; only {status} work can "
                f"be {action}",
                409,
                "INVALID_STATUS",
            )
        return work

    def _set_status(self, work: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
        return self.org.update(AGENT_WORK, work["Id"], {"Status": status, **fields}, system=True)

    def _close_one(self, work: dict[str, Any], now: datetime) -> dict[str, Any]:
        accepted: datetime = work["AcceptDateTime"] or now
        return self._set_status(
            work, "Closed", CloseDateTime=now, HandleTime=int((now - accepted).total_seconds())
        )

    def _release(self, work: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
        """Assigned work that the agent did not take: hand the PSR back for routing."""
        work = self._set_status(work, status, **fields)
        self._unpush(work, declined=True)
        self._route_waiting(self.org)
        return work

    def _unpush(self, work: dict[str, Any], *, declined: bool) -> None:
        psr_id = work["PendingServiceRoutingId"]
        if not psr_id or self.org.get(PSR, psr_id) is None:
            return
        changes: dict[str, Any] = {"IsPushed": False}
        if declined:
            changes["LastDeclinedAgentSession"] = agent_session_id(work["UserId"])
        self.org.update(PSR, psr_id, changes, system=True)

    def _track(self, psr: dict[str, Any]) -> None:
        routed_here = psr["RoutingModel"] not in (None, EXTERNAL_ROUTING) and psr["QueueId"]
        if routed_here and psr["IsReadyForRouting"] and not psr["IsPushed"]:
            self._waiting[psr["Id"]] = None
        else:
            self._waiting.pop(psr["Id"], None)

    def _forget(self) -> None:
        self._waiting.clear()
        self._conversations.clear()
        self._deadlines.clear()

    def _route_new(self, org: Org, psr: dict[str, Any]) -> None:
        """A PSR that just became ready: only it can have changed, so only it is routed."""
        self._track(psr)
        if psr["Id"] in self._waiting:
            self._route(org, psr)

    def _route_waiting(self, org: Org) -> None:
        """Omni-routed PSRs that wait for an agent get one if anybody can take them
        (after presence or capacity changed), in routing order."""
        waiting = [psr for psr_id in list(self._waiting) if (psr := org.get(PSR, psr_id))]
        waiting.sort(key=lambda p: (p["RoutingPriority"] or 0, p["CreatedDate"], p["Id"]))
        # Per queue, the smallest weight nobody could take: heavier work need not be tried.
        full: dict[str, float] = {}
        for psr in waiting:
            weight = float(psr["CapacityWeight"] or 1.0)
            untried = weight < full.get(psr["QueueId"], float("inf"))
            if psr["Id"] in self._waiting and untried and not self._route(org, psr):
                full[psr["QueueId"]] = weight

    def _route(self, org: Org, psr: dict[str, Any]) -> bool:
        """Assign the PSR to the best eligible member of its queue. False when no online
        member has the capacity for it (whoever declined it or not)."""
        entity, item = self._work_item(psr["WorkItemId"])
        if _ended(entity, item):
            self._waiting.pop(psr["Id"], None)
            return True
        weight = float(psr["CapacityWeight"] or 1.0)
        refused = {
            w["UserId"]
            for w in org.where(AGENT_WORK, PendingServiceRoutingId=psr["Id"])
            if w["Status"] in REFUSED_STATUSES
        }
        busy = {w["UserId"] for w in self._open_work_of_item(item["Id"])}
        best: tuple[float, str] | None = None
        anybody = False
        for member in org.where("GroupMember", GroupId=psr["QueueId"]):
            user_id: str = member["UserOrGroupId"]
            presence = self.current_presence(user_id)
            if presence is None or self._free_capacity(user_id, presence) < weight:
                continue
            anybody = True
            if user_id in refused | busy:
                continue
            free = self._free_capacity(user_id, presence)
            score = free if psr["RoutingModel"] == "MostAvailable" else -self._active(user_id)
            if best is None or score > best[0]:
                best = (score, user_id)
        if best is not None:
            org.insert(
                AGENT_WORK,
                {
                    "UserId": best[1],
                    "WorkItemId": item["Id"],
                    "ServiceChannelId": psr["ServiceChannelId"],
                    "PendingServiceRoutingId": psr["Id"],
                },
                system=True,
            )
        return anybody

    def _active(self, user_id: str) -> int:
        return sum(len(self.org.where(AGENT_WORK, UserId=user_id, Status=s)) for s in OPEN_STATUSES)


def _ended(entity: str, item: dict[str, Any]) -> bool:
    return bool(item["Status"] == ("Ended" if entity == "MessagingSession" else "Closed"))
