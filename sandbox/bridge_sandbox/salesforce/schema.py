"""The sObjects the sandbox org serves: fields, types, create/update rules, relationships.

Field properties follow the Omni-Channel developer guide ("Create", "Update", "Nillable",
"Defaulted on create"); fields the org maintains itself are neither createable nor
updateable through the API, which is what makes the API return
``INVALID_FIELD_FOR_INSERT_UPDATE`` for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge_sandbox.salesforce.ids import KEY_PREFIX
from bridge_sandbox.salesforce.soql import FieldType


@dataclass(frozen=True)
class Field:
    """One field of an sObject."""

    name: str
    type: FieldType
    createable: bool = False
    updateable: bool = False
    nillable: bool = True
    required: bool = False  # required on create through the API
    default: Any = None
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    picklist: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.name,
            "type": self.type.value,
            "createable": self.createable,
            "updateable": self.updateable,
            "nillable": self.nillable,
            "defaultedOnCreate": self.default is not None,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "picklistValues": [
                {"value": v, "label": v, "active": True, "defaultValue": False}
                for v in self.picklist
            ],
            "filterable": True,
            "sortable": self.type is not FieldType.TEXTAREA,
        }


@dataclass
class SObject:
    """One sObject type: its fields by canonical name and by lower-case name."""

    name: str
    key_prefix: str
    fields: dict[str, Field]
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    _lower: dict[str, Field] = field(init=False, repr=False)
    _relationships: dict[str, Field] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._lower = {name.lower(): f for name, f in self.fields.items()}
        self._relationships = {
            f.relationship_name.lower(): f for f in self.fields.values() if f.relationship_name
        }

    def field(self, name: str) -> Field | None:
        return self._lower.get(name.lower())

    def relationship(self, name: str) -> Field | None:
        return self._relationships.get(name.lower())

    def summary(self, url_prefix: str) -> dict[str, Any]:
        """The sObject as the ``sobjects/`` list shows it."""
        base = f"{url_prefix}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.name,
            "keyPrefix": self.key_prefix,
            "createable": self.createable,
            "updateable": self.updateable,
            "deletable": self.deletable,
            "queryable": True,
            "retrieveable": True,
            "replicateable": True,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }

    def describe(self, url_prefix: str) -> dict[str, Any]:
        """The ``describe`` answer: the summary plus every field."""
        return {**self.summary(url_prefix), "fields": [f.describe() for f in self.fields.values()]}


# Shorthands for the tables below: C = createable, U = updateable, R = required on create.
def _f(
    name: str,
    type_: FieldType,
    props: str = "",
    *,
    default: Any = None,
    to: Iterable[str] = (),
    rel: str | None = None,
    values: Iterable[str] = (),
) -> Field:
    return Field(
        name=name,
        type=type_,
        createable="C" in props,
        updateable="U" in props,
        nillable="R" not in props and type_ is not FieldType.BOOLEAN,
        required="R" in props,
        default=default,
        reference_to=tuple(to),
        relationship_name=rel,
        picklist=tuple(values),
    )


def _ref(name: str, props: str, to: Iterable[str], rel: str | None = None) -> Field:
    return _f(name, FieldType.REFERENCE, props, to=to, rel=rel or name.removesuffix("Id"))


def _bool(name: str, props: str = "", default: bool = False) -> Field:
    return _f(name, FieldType.BOOLEAN, props, default=default)


_S, _P = FieldType.STRING, FieldType.PICKLIST
_I, _D, _DT = FieldType.INT, FieldType.DOUBLE, FieldType.DATETIME


def _standard() -> list[Field]:
    """Fields every object has, maintained by the org."""
    return [
        _f("Id", FieldType.ID, default=None),
        _bool("IsDeleted"),
        _f("CreatedDate", _DT),
        _ref("CreatedById", "", ["User"], "CreatedBy"),
        _f("LastModifiedDate", _DT),
        _ref("LastModifiedById", "", ["User"], "LastModifiedBy"),
        _f("SystemModstamp", _DT),
    ]


AGENT_WORK_STATUSES = (
    "Assigned",
    "Opened",
    "Unavailable",
    "Declined",
    "DeclinedOnPushTimeout",
    "Closed",
    "Canceled",
    "Transferred",
)
ROUTING_MODELS = ("MostAvailable", "LeastActive", "ExternalRouting")
ROUTING_TYPES = ("QueueBased", "SkillsBased")
WORK_ITEMS = ("MessagingSession", "Case")
# Key prefixes, with GroupMember which the bridge never creates ids for.
PREFIXES: dict[str, str] = {**KEY_PREFIX, "GroupMember": "011", "PushTopic": "0IF"}
USER_OR_QUEUE = ("User", "Group")
NOTIFY_FOR_FIELDS = ("All", "Referenced", "Select", "Where")


def _objects() -> list[SObject]:
    specs: dict[str, list[Field]] = {
        "Organization": [
            _f("Name", _S),
            _f("InstanceName", _S),
            _f("OrganizationType", _S),
            _bool("IsSandbox"),
        ],
        "User": [
            _f("Username", _S, "CUR"),
            _f("Name", _S),
            _f("FirstName", _S, "CU"),
            _f("LastName", _S, "CUR"),
            _f("Email", _S, "CU"),
            _f("FederationIdentifier", _S, "CU"),  # SAML federation id (single sign-on)
            _f("Alias", _S, "CU"),
            _bool("IsActive", "CU", default=True),
            _f("UserType", _P, default="Standard"),
        ],
        "Group": [
            _f("Name", _S, "CUR"),
            _f("DeveloperName", _S, "CU"),
            _f("Type", _P, "CR", values=("Queue", "Regular")),
            _ref("QueueRoutingConfigId", "CU", ["QueueRoutingConfig"]),
            _ref("OwnerId", "CU", ["User"], "Owner"),
        ],
        "GroupMember": [
            _ref("GroupId", "CR", ["Group"]),
            _ref("UserOrGroupId", "CR", USER_OR_QUEUE, "UserOrGroup"),
        ],
        "ServiceChannel": [
            _f("DeveloperName", _S, "CUR"),
            _f("MasterLabel", _S, "CUR"),
            _f("RelatedEntity", _P, "CR", values=WORK_ITEMS),
            _f("CapacityModel", _P, "CU", values=("TabBased", "StatusBased")),
            _f("CapacityWeight", _D, "C"),
        ],
        "ServicePresenceStatus": [
            _f("DeveloperName", _S, "CUR"),
            _f("MasterLabel", _S, "CUR"),
        ],
        "QueueRoutingConfig": [
            _f("DeveloperName", _S, "CUR"),
            _f("MasterLabel", _S, "CUR"),
            _f("RoutingModel", _P, "CUR", values=ROUTING_MODELS),
            _f("RoutingPriority", _I, "CU", default=1),
            _f("PushTimeout", _I, "CU"),
            _f("CapacityWeight", _D, "CU"),
            _ref("OverflowAssigneeId", "CU", USER_OR_QUEUE, "OverflowAssignee"),
        ],
        "UserServicePresence": [
            _ref("UserId", "", ["User"], "User"),
            _ref("OwnerId", "CU", ["User"], "Owner"),
            _ref("ServicePresenceStatusId", "C", ["ServicePresenceStatus"]),
            _f("Name", _S),
            _bool("IsCurrentState"),
            _bool("IsAway"),
            _f("ConfiguredCapacity", _I),
            _f("StatusStartDate", _DT),
            _f("StatusEndDate", _DT),
            _f("StatusDuration", _I),
            _f("IdleDuration", _I),
            _f("AtCapacityDuration", _I),
        ],
        "MessagingSession": [
            _f("Name", _S),
            _f("Status", _P, "CU", values=("New", "Waiting", "Active", "Inactive", "Ended")),
            _ref("OwnerId", "CU", USER_OR_QUEUE, "Owner"),
            _ref("MessagingChannelId", "C", ["ServiceChannel"]),
            _ref("MessagingEndUserId", "C", []),
            _f("Origin", _P, "C"),
            _f("ConversationIdentifier", _S, "C"),
            _f("StartTime", _DT),
            _f("AcceptTime", _DT),
            _f("EndTime", _DT),
        ],
        "Case": [
            _f("CaseNumber", _S),
            _f("Subject", _S, "CU"),
            _f("Description", FieldType.TEXTAREA, "CU"),
            _f("Status", _P, "CU", default="New", values=("New", "Working", "Escalated", "Closed")),
            _f("Origin", _P, "CU"),
            _f("Priority", _P, "CU"),
            _ref("OwnerId", "CU", USER_OR_QUEUE, "Owner"),
            _bool("IsClosed"),
            _f("ClosedDate", _DT),
        ],
        "PendingServiceRouting": [
            _f("Name", _S),
            _ref("WorkItemId", "CR", WORK_ITEMS, "WorkItem"),
            _ref("ServiceChannelId", "CR", ["ServiceChannel"]),
            _ref("QueueId", "", ["Group"], "Queue"),
            _ref("GroupId", "C", ["Group"], "Group"),
            _ref("OwnerId", "CU", ["User"], "Owner"),
            _ref("PreferredUserId", "CU", ["User"], "PreferredUser"),
            _f("RoutingModel", _P, "CU", values=ROUTING_MODELS),
            _f("RoutingType", _P, "C", default="QueueBased", values=ROUTING_TYPES),
            _f("RoutingPriority", _I, "CU"),
            _f("SecondaryRoutingPriority", _I, "CU"),
            _f("CapacityWeight", _D, "CU"),
            _f("CapacityPercentage", FieldType.PERCENT, "CU"),
            _f("PushTimeout", _I, "CU"),
            _f("CustomRequestedDateTime", _DT, "CU"),
            _bool("IsReadyForRouting", "CU"),
            _bool("IsPushed"),
            _bool("IsPushAttempted"),
            _bool("IsTransfer"),
            _bool("IsPreferredUserRequired", "C"),
            # A chat session id, not a reference: the guide types it as a string.
            _f("LastDeclinedAgentSession", _S),
            _f("Serial", _I, default=0),
        ],
        "AgentWork": [
            _f("Name", _S),
            _ref("UserId", "CR", ["User"], "User"),
            _ref("WorkItemId", "CR", WORK_ITEMS, "WorkItem"),
            _ref("ServiceChannelId", "CR", ["ServiceChannel"]),
            _ref("PendingServiceRoutingId", "C", ["PendingServiceRouting"]),
            _ref("OwnerId", "CU", ["User"], "Owner"),
            _ref("OriginalQueueId", "", ["Group"], "OriginalQueue"),
            _ref("OriginalGroupId", "", ["Group"], "OriginalGroup"),
            _ref("PreferredUserId", "", ["User"], "PreferredUser"),
            _f("Status", _P, values=AGENT_WORK_STATUSES),
            _f("CapacityWeight", _D, "C"),
            _f("CapacityPercentage", FieldType.PERCENT, "C"),
            _bool("ShouldSkipCapacityCheck", "C"),
            _bool("IsPreferredUserRequired"),
            _bool("IsOwnerChangeInitiated"),
            _bool("IsStatusChangeInitiated"),
            _f("RoutingModel", _P, values=ROUTING_MODELS),
            _f("RoutingType", _P, values=ROUTING_TYPES),
            _f("RoutingPriority", _I),
            _f("PushTimeout", _I),
            _f("PushTimeoutDateTime", _DT),
            _f("RequestDateTime", _DT),
            _f("AssignedDateTime", _DT),
            _f("AcceptDateTime", _DT),
            _f("DeclineDateTime", _DT),
            _f("DeclineReason", _S),
            _f("CancelDateTime", _DT),
            _f("CloseDateTime", _DT),
            _f("ActiveTime", _I),
            _f("HandleTime", _I),
            _f("SpeedToAnswer", _I),
        ],
        # Streaming API: the query is checked by the org (bridge_sandbox.salesforce.cometd).
        "PushTopic": [
            _f("Name", _S, "CR"),
            _f("Query", _S, "CUR"),
            _f("ApiVersion", _D, "CUR"),
            _f("Description", _S, "CU"),
            _bool("IsActive", "CU", default=True),
            _f("NotifyForFields", _P, "CU", default="Referenced", values=NOTIFY_FOR_FIELDS),
            _bool("NotifyForOperationCreate", "CU", default=True),
            _bool("NotifyForOperationUpdate", "CU", default=True),
            _bool("NotifyForOperationDelete", "CU", default=True),
            _bool("NotifyForOperationUndelete", "CU", default=True),
        ],
    }
    return [
        SObject(
            name,
            PREFIXES[name],
            {f.name: f for f in [*_standard(), *fields]},
            **_CALLS.get(name, {}),
        )
        for name, fields in specs.items()
    ]


# Objects whose API calls are restricted: the org's own record is read-only, users are
# deactivated rather than deleted, group membership is replaced rather than edited.
_CALLS: dict[str, dict[str, bool]] = {
    "Organization": {"createable": False, "updateable": False, "deletable": False},
    "User": {"deletable": False},
    "GroupMember": {"updateable": False},
}


class Schema:
    """The org's sObjects; implements the SOQL module's ``SoqlSchema`` protocol."""

    def __init__(self, sobjects: Iterable[SObject]) -> None:
        self.sobjects: dict[str, SObject] = {s.name: s for s in sobjects}
        self._lower = {name.lower(): s for name, s in self.sobjects.items()}
        self._by_prefix = {s.key_prefix: s.name for s in self.sobjects.values()}

    def get(self, name: str) -> SObject | None:
        return self._lower.get(name.lower())

    def canonical_sobject(self, name: str) -> str | None:
        sobject = self.get(name)
        return sobject.name if sobject else None

    def sobject_for_prefix(self, prefix: str) -> str | None:
        return self._by_prefix.get(prefix)

    def field_type(self, sobject: str, field: str) -> tuple[str, FieldType] | None:
        found = self.get(sobject)
        f = found.field(field) if found else None
        return (f.name, f.type) if f else None

    def relationship(self, sobject: str, name: str) -> tuple[str, str, str] | None:
        """(relationship name, foreign-key field, target); polymorphic ones name the first
        target, the record's id prefix decides at evaluation time."""
        found = self.get(sobject)
        f = found.relationship(name) if found else None
        if f is None or f.relationship_name is None or not f.reference_to:
            return None
        return (f.relationship_name, f.name, f.reference_to[0])


SCHEMA = Schema(_objects())
