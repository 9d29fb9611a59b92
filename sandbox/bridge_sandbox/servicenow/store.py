"""The records of the sandbox instance: in memory, thread-safe, indexed, with business rules.

Everything is stored as ServiceNow stores it on the wire: strings (booleans "true"/"false",
date-times "yyyy-MM-dd HH:mm:ss" UTC, references as sys_ids). Behaviours (AWA) hook into
inserts, updates and deletes the way business rules do; they run under ``Instance.lock``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.responses import Response

from bridge_sandbox import seed
from bridge_sandbox.servicenow.schema import Field, Schema, Table
from bridge_sandbox.serving import Clock

SN_DATETIME = "%Y-%m-%d %H:%M:%S"
_SYS_ID = re.compile(r"^[0-9A-Za-z_]{1,32}$")
_READ_ONLY = (
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_updated_by",
    "sys_mod_count",
)


def format_datetime(moment: datetime) -> str:
    """ServiceNow's API date-time: UTC, second resolution."""
    return moment.astimezone(UTC).strftime(SN_DATETIME)


def parse_datetime(text: str) -> datetime:
    """The inverse of ``format_datetime``; raises ValueError on another shape."""
    return datetime.strptime(text, SN_DATETIME).replace(tzinfo=UTC)


def new_sys_id() -> str:
    return uuid.uuid4().hex


class ServiceNowApiError(Exception):
    """An answer ServiceNow gives as an error: status plus its ``error`` body."""

    def __init__(self, status: int, message: str, detail: str | None = "") -> None:
        super().__init__(f"{status} {message}: {detail}" if detail else f"{status} {message}")
        self.status = status
        self.message = message
        self.detail = detail

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "detail": self.detail}, "status": "failure"}

    def response(self, headers: Mapping[str, str] | None = None) -> Response:
        return json_response(self.body(), self.status, headers)


def json_response(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON answer as the instance sends it."""
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type="application/json;charset=UTF-8",
    )


class Behaviour(Protocol):
    """Business rules of the instance; every hook runs under ``Instance.lock``.

    ``before_*`` hooks may change ``row``/``changes`` in place or raise ServiceNowApiError
    to refuse the operation.
    """

    def before_insert(
        self, inst: Instance, table: str, row: dict[str, str], user: str | None
    ) -> None: ...

    def after_insert(
        self, inst: Instance, table: str, row: dict[str, str], user: str | None
    ) -> None: ...

    def before_update(
        self,
        inst: Instance,
        table: str,
        old: dict[str, str],
        changes: dict[str, str],
        user: str | None,
    ) -> None: ...

    def after_update(
        self,
        inst: Instance,
        table: str,
        old: dict[str, str],
        new: dict[str, str],
        user: str | None,
    ) -> None: ...

    def before_delete(
        self, inst: Instance, table: str, row: dict[str, str], user: str | None
    ) -> None: ...


def to_sn_string(value: Any) -> str:
    """A Python or JSON value as ServiceNow stores it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, Mapping) and "value" in value:
        # A field as read with sysparm_display_value=all / a reference link, written back.
        return to_sn_string(value["value"])
    return str(value)


# Called under ``Instance.lock`` right after a record is stored: (table, previous row or
# None for an insert, stored row).
ChangeListener = Callable[[str, Mapping[str, str] | None, Mapping[str, str]], None]


class _TableData:
    """Rows of one table by sys_id, plus equality indexes on the schema's indexed fields."""

    def __init__(self, spec: Table) -> None:
        self.spec = spec
        self.rows: dict[str, dict[str, str]] = {}
        self.indexes: dict[str, dict[str, dict[str, None]]] = {f: {} for f in spec.indexed}
        self.by_updated: dict[str, None] = {}
        self.next_number = 1001
        self.version = 0  # moves on every write: lets readers cache query results

    def index(self, row: Mapping[str, str]) -> None:
        sys_id = row["sys_id"]
        for field, index in self.indexes.items():
            index.setdefault(row.get(field, ""), {})[sys_id] = None

    def unindex(self, row: Mapping[str, str]) -> None:
        sys_id = row["sys_id"]
        for field, index in self.indexes.items():
            bucket = index.get(row.get(field, ""))
            if bucket is not None:
                bucket.pop(sys_id, None)
                if not bucket:
                    del index[row.get(field, "")]

    def touch(self, sys_id: str) -> None:
        """Keep ``by_updated`` in sys_updated_on order (the sandbox clock only moves on)."""
        self.version += 1
        self.by_updated.pop(sys_id, None)
        self.by_updated[sys_id] = None


class Instance:
    """One sandbox ServiceNow instance's data and business rules."""

    def __init__(self, clock: Clock, *, seed: bool = True) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.schema = Schema()
        self._seed = seed
        self._behaviours: list[Behaviour] = []
        self._tables: dict[str, _TableData] = {}
        self._passwords: dict[str, str] = {}
        self._request_hooks: list[Callable[[], None]] = []
        self._change_listeners: list[ChangeListener] = []
        self._generation = 0
        self.live = LiveView(self)
        self.reset()

    # -- configuration -------------------------------------------------------------------

    def add_behaviour(self, behaviour: Behaviour) -> None:
        with self.lock:
            self._behaviours.append(behaviour)

    def add_request_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at the start of every API request (e.g. to apply time-outs that
        fell due on the sandbox clock)."""
        with self.lock:
            self._request_hooks.append(hook)

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(table, previous, row)`` after every insert (previous None) and
        update, with the stored rows (read-only), before the business rules' after hooks:
        so listeners see each record's changes in sys_mod_count order, causes first."""
        with self.lock:
            self._change_listeners.append(listener)

    def on_request(self) -> None:
        for hook in list(self._request_hooks):
            hook()

    def reset(self) -> None:
        """Back to the seed (or empty); behaviours stay registered."""
        with self.lock:
            self._generation += 1
            self._tables = {name: _TableData(spec) for name, spec in self.schema.tables.items()}
            self._passwords = {}
            if self._seed:
                _load_seed(self)

    def set_password(self, user_sys_id: str, password: str) -> None:
        with self.lock:
            self._passwords[user_sys_id] = password

    def check_password(self, user_name: str, password: str) -> str | None:
        """The sys_id of the active user with this user_name and password, else None."""
        with self.lock:
            for user in self._find("sys_user", {"user_name": user_name}):
                stored = self._passwords.get(user["sys_id"])
                if (
                    stored is not None
                    and secrets.compare_digest(stored.encode(), password.encode())
                    and user["active"] == "true"
                ):
                    return user["sys_id"]
        return None

    # -- reads ---------------------------------------------------------------------------

    def table(self, table: str) -> Table:
        """The table's schema; ServiceNowApiError 400 ``Invalid table`` if unknown."""
        return self._data(table).spec

    def get(self, table: str, sys_id: str) -> dict[str, str] | None:
        with self.lock:
            row = self._data(table).rows.get(sys_id)
            return None if row is None else dict(row)

    def rows(self, table: str) -> list[dict[str, str]]:
        """Copies of every row, in insertion order."""
        with self.lock:
            return [dict(row) for row in self._data(table).rows.values()]

    def rows_by_updated(self, table: str) -> list[dict[str, str]]:
        """Copies of every row, least recently updated first."""
        with self.lock:
            data = self._data(table)
            return [dict(data.rows[sys_id]) for sys_id in data.by_updated]

    def where(self, table: str, **equals: str) -> list[dict[str, str]]:
        """Copies of the rows whose fields equal the given values (indexes used if any)."""
        with self.lock:
            return [dict(row) for row in self._find(table, equals)]

    def version(self, table: str) -> tuple[int, int]:
        """Changes whenever the table's rows change (stored rows are replaced, never
        changed in place, so a cached list of them stays valid until then)."""
        with self.lock:
            return self._generation, self._data(table).version

    def user_roles(self, user_sys_id: str) -> set[str]:
        """Names of the roles granted to the user (``admin`` is not expanded)."""
        with self.lock:
            roles = self._data("sys_user_role").rows
            names = set()
            for grant in self._find("sys_user_has_role", {"user": user_sys_id}):
                role = roles.get(grant["role"])
                if role is not None:
                    names.add(role["name"])
            return names

    def user_by_name(self, user_name: str) -> dict[str, str] | None:
        found = self.where("sys_user", user_name=user_name)
        return found[0] if found else None

    def display_value(self, table: str, field: str, value: str) -> str:
        """What ServiceNow shows for a stored value: the referenced record's display
        field, the choice label; other values as stored."""
        spec = self.schema.field(table, field)
        return value if spec is None else self.display_of(spec, value)

    def display_of(self, field: Field, value: str) -> str:
        if value == "":
            return value
        if field.reference is not None:
            with self.lock:
                target = self._data(field.reference)
                row = target.rows.get(value)
                return "" if row is None else row.get(target.spec.display_field, "")
        if field.choices:
            label = field.choice_label(value)
            return value if label is None else label
        return value

    # -- writes --------------------------------------------------------------------------

    def insert(
        self, table: str, values: Mapping[str, Any], *, user: str | None = None
    ) -> dict[str, str]:
        """Create a record; unknown fields are ignored, a given sys_id is honoured."""
        with self.lock:
            data = self._data(table)
            self._check_access(data.spec, user, write=True)
            row = {name: f.default for name, f in data.spec.fields.items()}
            row.update(self._known(data.spec, values))
            sys_id = to_sn_string(values.get("sys_id")) or new_sys_id()
            if not _SYS_ID.match(sys_id):
                raise ServiceNowApiError(400, "Invalid sys_id", f"'{sys_id}' is not a valid sys_id")
            if sys_id in data.rows:
                raise ServiceNowApiError(
                    403, "Operation Failed", f"Error during insert of {table} ({sys_id})"
                )
            now = format_datetime(self.clock.now())
            who = self._user_name(user)
            row.update(
                sys_id=sys_id,
                sys_created_on=now,
                sys_updated_on=now,
                sys_created_by=who,
                sys_updated_by=who,
                sys_mod_count="0",
            )
            if data.spec.number_prefix and not row.get("number"):
                row["number"] = f"{data.spec.number_prefix}{data.next_number:07d}"
                data.next_number += 1
            for behaviour in list(self._behaviours):
                behaviour.before_insert(self, table, row, user)
            data.rows[sys_id] = row
            data.index(row)
            data.touch(sys_id)
            for listener in self._change_listeners:
                listener(table, None, row)
            for behaviour in list(self._behaviours):
                behaviour.after_insert(self, table, dict(row), user)
            return dict(data.rows[sys_id])

    def update(
        self, table: str, sys_id: str, values: Mapping[str, Any], *, user: str | None = None
    ) -> dict[str, str]:
        """Change fields of a record (404 ``No Record found`` if there is none)."""
        with self.lock:
            data = self._data(table)
            self._check_access(data.spec, user, write=True)
            old = self._existing(data, sys_id)
            changes = self._known(data.spec, values)
            changes.pop("sys_id", None)
            for behaviour in list(self._behaviours):
                behaviour.before_update(self, table, dict(old), changes, user)
            current = data.rows.get(sys_id)
            if current is None:  # a business rule deleted it
                raise no_record()
            new = dict(current)
            new.update(changes)
            new.update(
                sys_updated_on=format_datetime(self.clock.now()),
                sys_updated_by=self._user_name(user),
                sys_mod_count=str(int(current.get("sys_mod_count") or "0") + 1),
            )
            data.unindex(current)
            data.rows[sys_id] = new
            data.index(new)
            data.touch(sys_id)
            for listener in self._change_listeners:
                listener(table, current, new)
            for behaviour in list(self._behaviours):
                behaviour.after_update(self, table, dict(old), dict(new), user)
            return dict(data.rows.get(sys_id, new))

    def delete(self, table: str, sys_id: str, *, user: str | None = None) -> None:
        with self.lock:
            data = self._data(table)
            self._check_access(data.spec, user, write=True)
            row = self._existing(data, sys_id)
            for behaviour in list(self._behaviours):
                behaviour.before_delete(self, table, dict(row), user)
            removed = data.rows.pop(sys_id, None)
            if removed is not None:
                data.unindex(removed)
                data.by_updated.pop(sys_id, None)
                data.version += 1

    def check_read(self, table: str, user: str | None) -> Table:
        """The table's schema if the user may read it (403 otherwise)."""
        spec = self.table(table)
        self._check_access(spec, user, write=False)
        return spec

    # -- internals -----------------------------------------------------------------------

    def _data(self, table: str) -> _TableData:
        data = self._tables.get(table)
        if data is None:
            raise ServiceNowApiError(400, f"Invalid table {table}", None)
        return data

    def _existing(self, data: _TableData, sys_id: str) -> dict[str, str]:
        row = data.rows.get(sys_id)
        if row is None:
            raise no_record()
        return row

    def _find(self, table: str, equals: Mapping[str, str]) -> list[dict[str, str]]:
        data = self._data(table)
        indexed = [f for f in equals if f in data.indexes]
        if indexed:
            candidates = min((data.indexes[f].get(equals[f], {}) for f in indexed), key=len)
            rows: Iterable[dict[str, str]] = [data.rows[s] for s in candidates]
        else:
            rows = data.rows.values()
        return [r for r in rows if all(r.get(f) == v for f, v in equals.items())]

    @staticmethod
    def _known(spec: Table, values: Mapping[str, Any]) -> dict[str, str]:
        """Values of fields the table has (others are ignored, as ServiceNow does);
        system fields other than sys_id are not writable."""
        return {
            name: to_sn_string(value)
            for name, value in values.items()
            if name in spec.fields and name not in _READ_ONLY
        }

    def _check_access(self, spec: Table, user: str | None, *, write: bool) -> None:
        if user is None:
            return
        roles = self.user_roles(user)
        allowed = spec.write_roles if write else spec.read_roles | spec.write_roles
        if not roles & allowed:
            raise ServiceNowApiError(
                403,
                "Operation Failed" if write else "User Not Authorized",
                f"ACL restricts the record {'write' if write else 'read'} on {spec.name}",
            )

    def _user_name(self, user: str | None) -> str:
        if user is None:
            return "system"
        row = self._data("sys_user").rows.get(user)
        return user if row is None else row["user_name"]


class LiveView:
    """The stored rows themselves (no copies), as the encoded-query evaluator reads them.

    Read-only, and only while holding ``Instance.lock``.
    """

    def __init__(self, instance: Instance) -> None:
        self._instance = instance

    def rows(self, table: str) -> Iterable[Mapping[str, str]]:
        return self._instance._data(table).rows.values()

    def get(self, table: str, sys_id: str) -> Mapping[str, str] | None:
        return self._instance._data(table).rows.get(sys_id)


def no_record() -> ServiceNowApiError:
    """The Table API's answer for a sys_id that is not there."""
    return ServiceNowApiError(
        404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
    )


# -- seed --------------------------------------------------------------------------------

ROLES = (
    "admin",
    "awa_agent",
    "awa_external_user",
    "awa_integration_user",
    "awa_manager",
    "rest_api_explorer",
    "itil",
)
REJECT_REASONS = ("Busy", "Not qualified", "Other")
ADMIN_USER = "admin"
ADMIN_USER_SYS_ID = seed.sys_id("sys_user:admin")
OAUTH_CLIENT_ID = seed.sys_id("oauth_entity:bridge")
OAUTH_CLIENT_SECRET = "sandbox-oauth-secret"  # noqa: S105 - the sandbox's published secret
INTEGRATION_PASSWORD = "sandbox-integration-password"  # noqa: S105 - sandbox credential
ADMIN_PASSWORD = "sandbox-admin-password"  # noqa: S105 - sandbox credential
AGENT_PASSWORD = "sandbox-agent-password"  # noqa: S105 - sandbox credential


def role_sys_id(name: str) -> str:
    return seed.sys_id(f"sys_user_role:{name}")


def _add_user(
    inst: Instance, sys_id: str, user_name: str, *, name: str, roles: Iterable[str], password: str
) -> None:
    first, _, last = name.partition(" ")
    inst.insert(
        "sys_user",
        {
            "sys_id": sys_id,
            "user_name": user_name,
            "name": name,
            "first_name": first,
            "last_name": last,
            "email": f"{user_name}@example.com",
        },
    )
    for role in roles:
        inst.insert(
            "sys_user_has_role",
            {
                "sys_id": seed.sys_id(f"sys_user_has_role:{user_name}:{role}"),
                "user": sys_id,
                "role": role_sys_id(role),
            },
        )
    inst.set_password(sys_id, password)


def _load_seed(inst: Instance) -> None:
    for role in ROLES:
        inst.insert("sys_user_role", {"sys_id": role_sys_id(role), "name": role})
    for state_sys_id, name, available in (
        (seed.SN_PRESENCE_AVAILABLE, "Available", True),
        (seed.SN_PRESENCE_AWAY, "Away", False),
        (seed.SN_PRESENCE_OFFLINE, "Offline", False),
    ):
        inst.insert(
            "awa_presence_state", {"sys_id": state_sys_id, "name": name, "available": available}
        )
    for reason in REJECT_REASONS:
        inst.insert(
            "awa_reject_reason",
            {"sys_id": seed.sys_id(f"awa_reject_reason:{reason}"), "name": reason},
        )
    for channel in seed.CHANNELS:
        inst.insert(
            "awa_service_channel",
            {
                "sys_id": channel.sn_service_channel_sys_id,
                "name": channel.name,
                "work_item_table": channel.sn_document_table,
            },
        )
    for queue in seed.QUEUES:
        inst.insert(
            "awa_queue",
            {
                "sys_id": queue.sn_queue_sys_id,
                "name": queue.name,
                "external_id": queue.sn_external_id,
                "service_channel": seed.CHANNELS[0].sn_service_channel_sys_id,
            },
        )
    _add_user(
        inst,
        seed.SN_INTEGRATION_USER_SYS_ID,
        seed.SN_INTEGRATION_USER,
        name="Bridge Integration",
        roles=("awa_integration_user", "rest_api_explorer"),
        password=INTEGRATION_PASSWORD,
    )
    _add_user(
        inst,
        ADMIN_USER_SYS_ID,
        ADMIN_USER,
        name="System Administrator",
        roles=("admin",),
        password=ADMIN_PASSWORD,
    )
    for agent in seed.AGENTS:
        _add_user(
            inst,
            agent.sn_user_sys_id,
            agent.sn_user_name,
            name=agent.name,
            roles=("awa_agent", "awa_external_user"),
            password=AGENT_PASSWORD,
        )
        inst.insert(
            "awa_agent_presence",
            {
                "sys_id": seed.sys_id(f"awa_agent_presence:{agent.sn_user_name}"),
                "agent": agent.sn_user_sys_id,
                "current_presence_state": seed.SN_PRESENCE_AVAILABLE,
                "state_changed_on": inst.clock.now(),
            },
        )
