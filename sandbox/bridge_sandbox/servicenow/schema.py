"""The tables of the sandbox instance: field names and types as ServiceNow names them,
choice lists (value and label), reference targets and the number prefix of each table."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge_sandbox.servicenow.encoded_query import SnFieldType

# The instance's field types are the encoded-query evaluator's (one vocabulary).
FieldType = SnFieldType


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType = FieldType.STRING
    reference: str | None = None
    choices: tuple[tuple[str, str], ...] = ()
    default: str = ""
    indexed: bool = False

    def choice_label(self, value: str) -> str | None:
        for choice_value, label in self.choices:
            if choice_value == value:
                return label
        return None


@dataclass(frozen=True)
class Table:
    name: str
    fields: dict[str, Field]
    display_field: str = "sys_id"
    number_prefix: str | None = None
    read_roles: frozenset[str] = frozenset()
    write_roles: frozenset[str] = frozenset()
    indexed: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "indexed", tuple(f.name for f in self.fields.values() if f.indexed)
        )


def _sys_fields() -> list[Field]:
    return [
        Field("sys_id", FieldType.SYS_ID),
        Field("sys_created_on", FieldType.GLIDE_DATE_TIME),
        Field("sys_created_by"),
        Field("sys_updated_on", FieldType.GLIDE_DATE_TIME),
        Field("sys_updated_by"),
        Field("sys_mod_count", FieldType.INTEGER, default="0"),
    ]


def _table(
    name: str,
    fields: list[Field],
    *,
    display_field: str = "sys_id",
    number_prefix: str | None = None,
    read_roles: tuple[str, ...] = (),
    write_roles: tuple[str, ...] = (),
) -> Table:
    all_fields = _sys_fields() + fields
    if number_prefix:
        all_fields.append(Field("number"))
    return Table(
        name,
        {f.name: f for f in all_fields},
        display_field=display_field,
        number_prefix=number_prefix,
        read_roles=frozenset(("admin", *read_roles)),
        write_roles=frozenset(("admin", *write_roles)),
    )


def _bool(name: str, default: str = "false") -> Field:
    return Field(name, FieldType.BOOLEAN, default=default)


def _ref(name: str, target: str, *, indexed: bool = False) -> Field:
    return Field(name, FieldType.REFERENCE, reference=target, indexed=indexed)


def _when(name: str) -> Field:
    return Field(name, FieldType.GLIDE_DATE_TIME)


INTERACTION_STATES: tuple[tuple[str, str], ...] = (
    ("new", "New"),
    ("on_hold", "On Hold"),
    ("work_in_progress", "Work in Progress"),
    ("wrap_up", "Wrap Up"),
    ("closed_complete", "Closed Complete"),
    ("closed_abandoned", "Closed Abandoned"),
)
WORK_ITEM_STATES: tuple[tuple[str, str], ...] = (
    ("queued", "Queued"),
    ("pending_accept", "Pending Accept"),
    ("accepted", "Accepted"),
    ("canceled", "Canceled"),
)
CANCEL_REASONS: tuple[tuple[str, str], ...] = (
    ("disqualified", "Disqualified from service channel"),
    ("manually_assigned", "Manually assigned"),
    ("timeout", "Time out"),
    ("transfer_rejected", "Transfer was canceled or rejected"),
)

# Roles that may use the Table API on the AWA/interaction tables (besides admin).
_AWA_READ = ("awa_integration_user", "awa_manager", "awa_agent", "itil")
_AWA_WRITE = ("awa_integration_user", "awa_manager")

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        _table(
            "sys_user",
            [
                Field("user_name", indexed=True),
                Field("name"),
                Field("first_name"),
                Field("last_name"),
                Field("email"),
                _bool("active", "true"),
            ],
            display_field="name",
            read_roles=_AWA_READ,
        ),
        _table(
            "sys_user_role",
            [Field("name", indexed=True), Field("description")],
            display_field="name",
            read_roles=_AWA_READ,
        ),
        _table(
            "sys_user_has_role",
            [_ref("user", "sys_user", indexed=True), _ref("role", "sys_user_role")],
            read_roles=_AWA_READ,
        ),
        _table(
            "interaction",
            [
                Field("state", FieldType.CHOICE, choices=INTERACTION_STATES, default="new"),
                _bool("active", "true"),
                Field("type", FieldType.CHOICE, choices=(("chat", "Chat"),), default="chat"),
                Field("channel", FieldType.CHOICE, choices=(("chat", "Chat"),)),
                Field("short_description"),
                _ref("opened_for", "sys_user"),
                _ref("assigned_to", "sys_user", indexed=True),
                _ref("queue", "awa_queue", indexed=True),
                Field("correlation_id", indexed=True),
                Field("correlation_display"),
                _when("opened_at"),
                _when("closed_at"),
            ],
            display_field="number",
            number_prefix="IMS",
            read_roles=_AWA_READ,
            write_roles=_AWA_WRITE,
        ),
        _table(
            "awa_work_item",
            [
                Field("document_table", FieldType.STRING),
                Field("document_id", FieldType.STRING, indexed=True),
                _ref("queue", "awa_queue", indexed=True),
                _ref("service_channel", "awa_service_channel"),
                _ref("assigned_to", "sys_user", indexed=True),
                Field(
                    "state",
                    FieldType.CHOICE,
                    choices=WORK_ITEM_STATES,
                    default="queued",
                    indexed=True,
                ),
                _bool("active", "true"),
                Field("cancel_reason", FieldType.CHOICE, choices=CANCEL_REASONS),
                _bool("rejected"),
                _bool("timed_out"),
                _ref("reject_reason", "awa_reject_reason"),
                _when("offered_on"),
                Field("offer_count", FieldType.INTEGER, default="0"),
                Field("external_segment_id", indexed=True),
                _ref("previous_work_item", "awa_work_item"),
                _when("state_changed_on"),
                Field("allocated_by"),
                Field("display_name"),
                Field("size", FieldType.INTEGER, default="1"),
                _bool("allowed_to_decline", "true"),
            ],
            display_field="number",
            number_prefix="AWI",
            read_roles=_AWA_READ,
            write_roles=_AWA_WRITE,
        ),
        _table(
            "awa_queue",
            [
                Field("name"),
                Field("external_id", indexed=True),
                # External Routing Support: work of an External queue waits for a CCaaS
                # router; the sandbox routes no queue itself, so every queue is External
                _bool("external", "true"),
                _bool("active", "true"),
                Field("max_wait_time", FieldType.INTEGER, default="0"),
                _ref("service_channel", "awa_service_channel"),
                Field("order", FieldType.INTEGER, default="100"),
            ],
            display_field="name",
            read_roles=_AWA_READ,
            write_roles=_AWA_WRITE,
        ),
        _table(
            "awa_service_channel",
            [
                Field("name"),
                _bool("active", "true"),
                Field("work_item_table", FieldType.STRING, default="interaction"),
            ],
            display_field="name",
            read_roles=_AWA_READ,
        ),
        _table(
            "awa_presence_state",
            [Field("name", indexed=True), _bool("available"), _bool("active", "true")],
            display_field="name",
            read_roles=_AWA_READ,
        ),
        _table(
            "awa_agent_presence",
            [
                _ref("agent", "sys_user", indexed=True),
                _ref("current_presence_state", "awa_presence_state"),
                _when("state_changed_on"),
            ],
            display_field="agent",
            read_roles=_AWA_READ,
            write_roles=("awa_manager",),
        ),
        _table(
            "awa_reject_reason",
            [Field("name"), _bool("active", "true")],
            display_field="name",
            read_roles=_AWA_READ,
        ),
    )
}


class Schema:
    """The instance dictionary; answers the questions the encoded-query evaluator asks."""

    def __init__(self, tables: dict[str, Table] | None = None) -> None:
        self.tables = dict(TABLES if tables is None else tables)

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def field(self, table: str, name: str) -> Field | None:
        spec = self.tables.get(table)
        return None if spec is None else spec.fields.get(name)

    def field_type(self, table: str, field: str) -> FieldType | None:
        spec = self.field(table, field)
        return None if spec is None else spec.type

    def reference_target(self, table: str, field: str) -> str | None:
        spec = self.field(table, field)
        return None if spec is None else spec.reference
