"""The sandbox org's records: an in-memory, thread-safe store of sObjects.

Every write goes through ``Org.insert`` / ``update`` / ``delete``: field names are made
canonical, values typed, API field rules applied (unless the org itself writes,
``system=True``), registered behaviours (Omni-Channel) get their hooks, indexes and the
change log follow. Deleted records stay (``IsDeleted``) for ``queryAll`` and ``/deleted``
until the retention period of sandbox time has passed.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, Protocol

from bridge_sandbox import seed as seed_data
from bridge_sandbox.salesforce import ids
from bridge_sandbox.salesforce import soql as soql_module
from bridge_sandbox.salesforce.changelog import RETENTION, ChangeLog
from bridge_sandbox.salesforce.schema import (
    SCHEMA,
    Field,
    Schema,
    SObject,
)
from bridge_sandbox.salesforce.soql import FieldType
from bridge_sandbox.serving import Clock

# Fields the bridge and Omni-Channel filter on: looked up by value instead of scanned.
INDEXED_FIELDS = frozenset(
    {
        "QueueId",
        "GroupId",
        "WorkItemId",
        "UserId",
        "Status",
        "PendingServiceRoutingId",
        "IsReadyForRouting",
        "OwnerId",
        "IsCurrentState",
        "UserOrGroupId",
        "Username",
        "DeveloperName",
    }
)


class SalesforceApiError(Exception):
    """An error the org answers with, in the REST API's array shape."""

    def __init__(
        self, status: int, error_code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields or []

    def body(self) -> list[dict[str, object]]:
        return [{"message": self.message, "errorCode": self.error_code, "fields": self.fields}]


def not_found() -> SalesforceApiError:
    """What the org answers for an unknown resource, sObject or record."""
    return SalesforceApiError(404, "NOT_FOUND", "The requested resource does not exist")


class Behaviour(Protocol):
    """Rules the org applies around writes (Omni-Channel); every hook runs under org.lock.

    ``before_*`` hooks may raise ``SalesforceApiError`` to refuse the write, and may change
    ``record`` / ``changes``; ``after_*`` hooks may write further records.
    """

    def before_insert(
        self, org: Org, sobject: str, record: dict[str, Any], system: bool
    ) -> None: ...

    def after_insert(
        self, org: Org, sobject: str, record: dict[str, Any], system: bool
    ) -> None: ...

    def before_update(
        self, org: Org, sobject: str, old: dict[str, Any], changes: dict[str, Any], system: bool
    ) -> None: ...

    def after_update(
        self, org: Org, sobject: str, old: dict[str, Any], new: dict[str, Any], system: bool
    ) -> None: ...

    def before_delete(
        self, org: Org, sobject: str, record: dict[str, Any], system: bool
    ) -> None: ...

    def after_delete(
        self, org: Org, sobject: str, record: dict[str, Any], system: bool
    ) -> None: ...


def _to_ms(moment: datetime) -> datetime:
    """Salesforce keeps datetimes to the millisecond."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _check_call(definition: SObject, verb: str, allowed: bool, system: bool) -> None:
    if not allowed and not system:
        raise SalesforceApiError(
            400,
            "INVALID_TYPE_FOR_OPERATION",
            f"entity type cannot be {verb}: {definition.name}",
        )


def _type_error(sobject: str, f: Field, value: Any) -> SalesforceApiError:
    return SalesforceApiError(
        400,
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        f"{f.name}: value not of required type: {value!r} is not a valid {f.type.value} "
        f"for {sobject}.{f.name}",
        [f.name],
    )


def parse_datetime(text: str) -> datetime:
    """A Salesforce/ISO datetime (``2024-01-31T10:00:00.000+0000``, ``...Z``) as aware UTC."""
    normal = text.strip()
    if normal.endswith("Z"):
        normal = normal[:-1] + "+00:00"
    elif len(normal) > 5 and normal[-5] in "+-" and normal[-4:].isdigit():
        normal = normal[:-2] + ":" + normal[-2:]
    parsed = datetime.fromisoformat(normal)
    if parsed.tzinfo is None:
        raise ValueError("datetime without a time zone")
    return parsed.astimezone(UTC)


class Org:
    """The sandbox org's data: records by id per sObject, indexes, change log, behaviours."""

    def __init__(self, clock: Clock, *, seed: bool = True) -> None:
        self.org_id: str = seed_data.SF_ORG_ID
        self.clock = clock
        self.lock = threading.RLock()
        self.schema: Schema = SCHEMA
        self.changes = ChangeLog(clock)
        self.api_user_id: str = seed_data.SF_INTEGRATION_USER_ID
        self._seeded = seed
        self._behaviours: list[Behaviour] = []
        self._reset_listeners: list[Callable[[], None]] = []
        self._tables: dict[str, dict[str, dict[str, Any]]] = {}
        self._modstamp_order: dict[str, dict[str, None]] = {}
        self._indexes: dict[str, dict[str, dict[Any, dict[str, None]]]] = {}
        self._counters: dict[str, int] = {}
        self._autonumber: dict[str, int] = {}
        self._quiet = False
        self._clear()
        if seed:
            self._load_seed()

    # -- behaviours -------------------------------------------------------------------
    def add_behaviour(self, behaviour: Behaviour) -> None:
        with self.lock:
            self._behaviours.append(behaviour)

    def remove_behaviour(self, behaviour: Behaviour) -> None:
        with self.lock:
            self._behaviours.remove(behaviour)

    def on_reset(self, listener: Callable[[], None]) -> None:
        """Called after ``reset()`` re-seeded the org (behaviours drop their own state)."""
        with self.lock:
            self._reset_listeners.append(listener)

    def now(self) -> datetime:
        """Sandbox time at Salesforce's millisecond resolution."""
        return _to_ms(self.clock.now())

    # -- reads ------------------------------------------------------------------------
    def sobject_of(self, record_id: str) -> str | None:
        """The sObject an id belongs to, by its key prefix (None if malformed/unknown)."""
        if id18(record_id) is None:
            return None
        return self.schema.sobject_for_prefix(record_id[:3])

    def get(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        """A copy of a live record by 15- or 18-character id; None if absent or deleted."""
        record = self._live(self._canonical(sobject), record_id)
        return dict(record) if record is not None else None

    def get_any(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        """(sObject, copy) of a live record of any type."""
        sobject = self.sobject_of(record_id)
        if sobject is None:
            return None
        record = self.get(sobject, record_id)
        return (sobject, record) if record is not None else None

    def get_including_deleted(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        key = id18(record_id)
        with self.lock:
            record = self._tables[self._canonical(sobject)].get(key) if key else None
            return dict(record) if record is not None else None

    def all(self, sobject: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                dict(r)
                for r in self._tables[self._canonical(sobject)].values()
                if not r["IsDeleted"]
            ]

    def where(self, sobject: str, **equals: Any) -> list[dict[str, Any]]:
        """Live records whose fields equal the given values (ids in 15 or 18 characters)."""
        name = self._canonical(sobject)
        definition = self.schema.sobjects[name]
        wanted: dict[str, Any] = {}
        for key, value in equals.items():
            f = definition.field(key)
            if f is None:
                raise SalesforceApiError(
                    400, "INVALID_FIELD", f"No such column '{key}' on entity '{name}'"
                )
            wanted[f.name] = (
                id18(value) or value if f.type in _ID_TYPES and isinstance(value, str) else value
            )
        with self.lock:
            table = self._tables[name]
            indexed = [k for k in wanted if k in self._indexes[name]]
            if indexed:
                candidates = min(
                    (self._indexes[name][k].get(wanted[k], {}) for k in indexed), key=len
                )
                rows: Iterable[dict[str, Any]] = (table[i] for i in candidates)
            else:
                rows = table.values()
            return [
                dict(r)
                for r in rows
                if not r["IsDeleted"] and all(r[k] == v for k, v in wanted.items())
            ]

    def updated_ids(self, sobject: str, start: datetime, end: datetime) -> list[str]:
        """Ids of live records whose SystemModstamp is in [start, end]."""
        name = self._canonical(sobject)
        with self.lock:
            table = self._tables[name]
            out: list[str] = []
            for record_id in reversed(self._modstamp_order[name]):
                record = table[record_id]
                if record["SystemModstamp"] < start:
                    break
                if record["SystemModstamp"] <= end and not record["IsDeleted"]:
                    out.append(record_id)
            out.reverse()
            return out

    def deleted_records(
        self, sobject: str, start: datetime, end: datetime
    ) -> list[tuple[str, datetime]]:
        """(id, deleted date) of records deleted in [start, end]."""
        name = self._canonical(sobject)
        with self.lock:
            table = self._tables[name]
            out: list[tuple[str, datetime]] = []
            for record_id in reversed(self._modstamp_order[name]):
                record = table[record_id]
                if record["SystemModstamp"] < start:
                    break
                if record["IsDeleted"] and record["SystemModstamp"] <= end:
                    out.append((record_id, record["SystemModstamp"]))
            out.reverse()
            return out

    def query(
        self, soql: str, *, include_deleted: bool = False, api_version: str = "62.0"
    ) -> soql_module.QueryResult:
        """Run a SOQL query; SOQL errors become ``SalesforceApiError`` (400)."""

        def url_for(sobject: str, record_id: str) -> str:
            return f"/services/data/v{api_version}/sobjects/{sobject}/{record_id}"

        try:
            parsed = soql_module.parse(soql, self.schema)
            with self.lock:
                narrowed = None if include_deleted else self._narrowed(parsed)
                return soql_module.execute(
                    parsed,
                    _Source(self, include_deleted, parsed.sobject, narrowed),
                    now=self.clock.now(),
                    url_for=url_for,
                    include_deleted=include_deleted,
                )
        except soql_module.SoqlError as exc:
            raise SalesforceApiError(400, exc.error_code, exc.message) from exc

    def _narrowed(self, query: soql_module.Query) -> list[dict[str, Any]] | None:
        """Live root records an indexed ``Field = value`` / ``Field IN (...)`` conjunct of
        the WHERE allows (a superset of the matches: the evaluator still applies the whole
        WHERE); None when no conjunct can use an index, and the evaluator scans."""
        indexes = self._indexes[query.sobject]
        best: dict[str, None] | None = None
        for condition in _conjuncts(query.where):
            bucket = _bucket(indexes, condition)
            if bucket is not None and (best is None or len(bucket) < len(best)):
                best = bucket
        if best is None:
            return None
        table = self._tables[query.sobject]
        return [table[i] for i in best]

    # -- writes -----------------------------------------------------------------------
    def insert(
        self, sobject: str, fields: Mapping[str, Any], *, system: bool = False
    ) -> dict[str, Any]:
        name = self._canonical(sobject)
        definition = self.schema.sobjects[name]
        _check_call(definition, "inserted", definition.createable, system)
        with self.lock, self.changes.transaction(self.api_user_id):
            values = self._typed(definition, fields, system=system, creating=True)
            record = self._new_record(definition, values)
            for behaviour in self._active_behaviours():
                behaviour.before_insert(self, name, record, system)
            self._store(name, record)
            self.changes.append(
                name,
                "CREATE",
                record["Id"],
                [k for k, v in record.items() if v is not None and k not in ("Id", "IsDeleted")],
                {k: v for k, v in record.items() if v is not None},
                record,
            )
            created = dict(record)
            for behaviour in self._active_behaviours():
                behaviour.after_insert(self, name, dict(created), system)
            return dict(self._tables[name][created["Id"]])

    def update(
        self, sobject: str, record_id: str, fields: Mapping[str, Any], *, system: bool = False
    ) -> dict[str, Any]:
        name = self._canonical(sobject)
        definition = self.schema.sobjects[name]
        _check_call(definition, "updated", definition.updateable, system)
        with self.lock, self.changes.transaction(self.api_user_id):
            current = self._require_live(name, record_id)
            changes = self._typed(definition, fields, system=system, creating=False)
            old = dict(current)
            for behaviour in self._active_behaviours():
                behaviour.before_update(self, name, dict(old), changes, system)
            changed = [k for k, v in changes.items() if current[k] != v]
            if not changed:
                return dict(current)
            self._unindex(name, current)
            current.update({k: changes[k] for k in changed})
            self._touch(name, current)
            self._index(name, current)
            self.changes.append(
                name, "UPDATE", current["Id"], changed, {k: current[k] for k in changed}, current
            )
            new = dict(current)
            for behaviour in self._active_behaviours():
                behaviour.after_update(self, name, dict(old), dict(new), system)
            return dict(self._tables[name][new["Id"]])

    def delete(self, sobject: str, record_id: str, *, system: bool = False) -> dict[str, Any]:
        name = self._canonical(sobject)
        definition = self.schema.sobjects[name]
        _check_call(definition, "deleted", definition.deletable, system)
        with self.lock, self.changes.transaction(self.api_user_id):
            current = self._require_live(name, record_id)
            for behaviour in self._active_behaviours():
                behaviour.before_delete(self, name, dict(current), system)
            self._unindex(name, current)
            current["IsDeleted"] = True
            self._touch(name, current)
            self.changes.append(name, "DELETE", current["Id"], [], record=current)
            deleted = dict(current)
            for behaviour in self._active_behaviours():
                behaviour.after_delete(self, name, dict(deleted), system)
            return deleted

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: on an exception, the records, ids and change log are put back.

        Copies the whole store, so it is for the rare all-or-none calls, not every write.
        Its change events become visible to subscribers together, when it commits.
        """
        with self.lock, self.changes.transaction(self.api_user_id):
            saved = (
                {n: {i: dict(r) for i, r in t.items()} for n, t in self._tables.items()},
                {n: dict(o) for n, o in self._modstamp_order.items()},
                dict(self._counters),
                dict(self._autonumber),
                self.changes.latest_replay_id,
            )
            try:
                yield
            except BaseException:
                tables, order, counters, autonumber, replay_id = saved
                self._tables, self._modstamp_order = tables, order
                self._counters, self._autonumber = counters, autonumber
                self._rebuild_indexes()
                self.changes.rollback_to(replay_id)
                raise

    def reset(self) -> None:
        """Back to the seed: records, ids, change log; behaviours stay registered."""
        with self.lock:
            self._clear()
            if self._seeded:
                self._load_seed()
            listeners = list(self._reset_listeners)
        for listener in listeners:
            listener()

    def purge(self) -> None:
        """Forget deleted records and change events older than the retention period."""
        cutoff = self.clock.now() - RETENTION
        with self.lock:
            for name, table in self._tables.items():
                gone = [
                    i for i, r in table.items() if r["IsDeleted"] and r["SystemModstamp"] < cutoff
                ]
                for record_id in gone:
                    del table[record_id]
                    del self._modstamp_order[name][record_id]
        self.changes.prune()

    # -- internals --------------------------------------------------------------------
    def _canonical(self, sobject: str) -> str:
        found = self.schema.get(sobject)
        if found is None:
            raise not_found()
        return found.name

    def _live(self, name: str, record_id: str) -> dict[str, Any] | None:
        key = id18(record_id)
        if key is None:
            return None
        with self.lock:
            record = self._tables[name].get(key)
            return record if record is not None and not record["IsDeleted"] else None

    def _require_live(self, name: str, record_id: str) -> dict[str, Any]:
        key = id18(record_id)
        if key is None:
            raise SalesforceApiError(
                400, "MALFORMED_ID", f"{name} ID: id value of incorrect type: {record_id}", ["Id"]
            )
        record = self._tables[name].get(key)
        if record is None:
            raise not_found()
        if record["IsDeleted"]:
            raise SalesforceApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return record

    def _active_behaviours(self) -> list[Behaviour]:
        return [] if self._quiet else list(self._behaviours)

    def _clear(self) -> None:
        self._tables = {name: {} for name in self.schema.sobjects}
        self._modstamp_order = {name: {} for name in self.schema.sobjects}
        self._rebuild_indexes()
        self._counters = {}
        self._autonumber = {}
        self.changes.clear()

    def _typed(
        self, definition: SObject, fields: Mapping[str, Any], *, system: bool, creating: bool
    ) -> dict[str, Any]:
        """Canonical names and typed values; API rules unless the org itself writes."""
        out: dict[str, Any] = {}
        refused: list[str] = []
        for key, value in fields.items():
            if key == "attributes":
                continue
            f = definition.field(key)
            if f is None:
                raise SalesforceApiError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{key}' on sobject of type {definition.name}",
                    [key],
                )
            allowed = f.createable if creating else f.updateable
            if not system and not allowed:
                refused.append(f.name)
                continue
            if f.name == "Id" and not (system and creating):
                refused.append(f.name)
                continue
            out[f.name] = self._coerce(definition.name, f, value)
        if refused:
            raise SalesforceApiError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(refused)}. Please check the "
                "security settings of this field and verify that it is read/write for your "
                "profile or permission set.",
                refused,
            )
        missing = [
            f.name
            for f in definition.fields.values()
            if f.required
            and (out.get(f.name) is None if creating else (f.name in out and out[f.name] is None))
        ]
        if missing:
            raise SalesforceApiError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        return out

    def _coerce(self, sobject: str, f: Field, value: Any) -> Any:
        if value is None:
            if f.type is FieldType.BOOLEAN:
                raise _type_error(sobject, f, value)
            return None
        if f.type in _ID_TYPES:
            return self._reference(sobject, f, value)
        if f.type is FieldType.BOOLEAN:
            if not isinstance(value, bool):
                raise _type_error(sobject, f, value)
            return value
        if f.type is FieldType.INT:
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                raise _type_error(sobject, f, value)
            return int(value)
        if f.type in (FieldType.DOUBLE, FieldType.PERCENT):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _type_error(sobject, f, value)
            return float(value)
        if f.type is FieldType.DATETIME:
            return _coerce_datetime(sobject, f, value)
        if f.type is FieldType.DATE:
            return _coerce_date(sobject, f, value)
        if not isinstance(value, str):
            raise _type_error(sobject, f, value)
        if f.picklist and value not in f.picklist:
            raise SalesforceApiError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{f.name}: bad value for restricted picklist field: {value}",
                [f.name],
            )
        return value

    def _reference(self, sobject: str, f: Field, value: Any) -> str:
        key = id18(value) if isinstance(value, str) else None
        if key is None:
            raise SalesforceApiError(
                400, "MALFORMED_ID", f"{f.name}: id value of incorrect type: {value}", [f.name]
            )
        if f.type is FieldType.ID or not f.reference_to:
            return key
        target = self.schema.sobject_for_prefix(key[:3])
        if target not in f.reference_to:
            raise SalesforceApiError(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                f"{f.name}: id value of incorrect type: {value} (expected "
                f"{' or '.join(f.reference_to)})",
                [f.name],
            )
        if self._live(target, key) is None:
            raise SalesforceApiError(
                400,
                "INVALID_CROSS_REFERENCE_KEY",
                f"invalid cross reference id: {f.name} {value} on {sobject}",
                [f.name],
            )
        return key

    def _new_record(self, definition: SObject, values: dict[str, Any]) -> dict[str, Any]:
        name = definition.name
        now = self.now()
        record: dict[str, Any] = {f.name: f.default for f in definition.fields.values()}
        record.update(values)
        record_id = values.get("Id") or self._next_id(definition)
        if record_id in self._tables[name]:
            raise SalesforceApiError(
                400, "DUPLICATE_VALUE", f"duplicate value found: Id {record_id}", ["Id"]
            )
        user = self.api_user_id
        record.update(
            Id=record_id,
            IsDeleted=False,
            CreatedDate=now,
            CreatedById=user,
            LastModifiedDate=now,
            LastModifiedById=user,
            SystemModstamp=now,
        )
        for auto in ("Name", "CaseNumber"):
            f = definition.field(auto)
            if f is not None and not f.createable and record.get(auto) is None:
                self._autonumber[name] = self._autonumber.get(name, 0) + 1
                record[auto] = f"{self._autonumber[name]:08d}"
        if name == "User" and "Name" not in values:
            record["Name"] = " ".join(p for p in (record["FirstName"], record["LastName"]) if p)
        if "OwnerId" in record and record["OwnerId"] is None:
            record["OwnerId"] = user
        return record

    def _next_id(self, definition: SObject) -> str:
        number = self._counters.get(definition.name, 1000) + 1
        self._counters[definition.name] = number
        return ids.make_id(definition.key_prefix, number)

    def _touch(self, name: str, record: dict[str, Any]) -> None:
        now = self.now()
        record["LastModifiedDate"] = now
        record["LastModifiedById"] = self.api_user_id
        record["SystemModstamp"] = now
        order = self._modstamp_order[name]
        order.pop(record["Id"], None)
        order[record["Id"]] = None

    def _store(self, name: str, record: dict[str, Any]) -> None:
        self._tables[name][record["Id"]] = record
        self._modstamp_order[name][record["Id"]] = None
        self._index(name, record)

    def _rebuild_indexes(self) -> None:
        self._indexes = {
            name: {f: {} for f in s.fields if f in INDEXED_FIELDS}
            for name, s in self.schema.sobjects.items()
        }
        for name, table in self._tables.items():
            for record in table.values():
                self._index(name, record)

    def _index(self, name: str, record: dict[str, Any]) -> None:
        if record["IsDeleted"]:
            return
        for fname, index in self._indexes[name].items():
            index.setdefault(record[fname], {})[record["Id"]] = None

    def _unindex(self, name: str, record: dict[str, Any]) -> None:
        for fname, index in self._indexes[name].items():
            bucket = index.get(record[fname])
            if bucket is not None:
                bucket.pop(record["Id"], None)
                if not bucket:
                    del index[record[fname]]

    def _load_seed(self) -> None:
        self._quiet = True
        try:
            _load_seed(self)
        finally:
            self._quiet = False
        self.changes.clear()


class _Source:
    """The org as the SOQL evaluator's record source (live records, or all for queryAll);
    ``narrowed`` are the candidates of the root sObject an index lookup found."""

    def __init__(
        self,
        org: Org,
        include_deleted: bool,
        root: str,
        narrowed: list[dict[str, Any]] | None,
    ) -> None:
        self._org = org
        self._include_deleted = include_deleted
        self._root = root
        self._narrowed = narrowed

    def records(self, sobject: str, include_deleted: bool) -> Iterable[Mapping[str, Any]]:
        name = self._org._canonical(sobject)
        if self._narrowed is not None and name == self._root:
            return self._narrowed
        table = self._org._tables[name]
        if include_deleted or self._include_deleted:
            return table.values()
        return (r for r in table.values() if not r["IsDeleted"])

    def by_id(self, record_id: str) -> tuple[str, Mapping[str, Any]] | None:
        sobject = self._org.sobject_of(record_id)
        key = id18(record_id)
        if sobject is None or key is None:
            return None
        record = self._org._tables[sobject].get(key)
        if record is None or (record["IsDeleted"] and not self._include_deleted):
            return None
        return sobject, record


def _conjuncts(condition: soql_module.Condition | None) -> list[soql_module.Condition]:
    """The parts of a WHERE that must all hold (nested ANDs flattened)."""
    if condition is None:
        return []
    if isinstance(condition, soql_module.And):
        return [c for part in condition.parts for c in _conjuncts(part)]
    return [condition]


# Index keys are exact; SOQL compares text case-insensitively, so only ids and booleans
# (exact in both) may be looked up by index.
_EXACT_TYPES = (FieldType.ID, FieldType.REFERENCE, FieldType.BOOLEAN)


def _bucket(
    indexes: dict[str, dict[Any, dict[str, None]]], condition: soql_module.Condition
) -> dict[str, None] | None:
    """Ids of records an ``=`` / ``IN`` condition on an indexed root field can match."""
    values: tuple[soql_module.Value, ...]
    if isinstance(condition, soql_module.Comparison) and condition.op == "=":
        path, values = condition.path, (condition.value,)
    elif isinstance(condition, soql_module.InList) and not condition.negated:
        path, values = condition.path, condition.values
    else:
        return None
    index = indexes.get(path.field)
    if path.hops or index is None or path.type not in _EXACT_TYPES:
        return None
    keys: list[Any] = []
    for value in values:
        key = id18(value) if path.type is not FieldType.BOOLEAN else value
        if path.type is not FieldType.BOOLEAN and value is not None and key is None:
            return None  # not an id: let the evaluator decide what it matches
        keys.append(key)
    bucket: dict[str, None] = {}
    for key in keys:
        bucket.update(index.get(key, {}))
    return bucket


_ID_TYPES = (FieldType.ID, FieldType.REFERENCE)


def id18(value: Any) -> str | None:
    """The 18-character form of an id (15 or 18 characters), None if it is not one."""
    if not isinstance(value, str):
        return None
    return _id18_of(value)


@functools.lru_cache(maxsize=65_536)
def _id18_of(value: str) -> str | None:
    """Computing the case-safe suffix is the costly part of every id lookup: cached."""
    try:
        return ids.to18(value)
    except ValueError:
        return None


def _coerce_datetime(sobject: str, f: Field, value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _type_error(sobject, f, value)
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError as exc:
            raise _type_error(sobject, f, value) from exc
    else:
        raise _type_error(sobject, f, value)
    return _to_ms(parsed.astimezone(UTC))


def _coerce_date(sobject: str, f: Field, value: Any) -> date:
    if isinstance(value, datetime):
        raise _type_error(sobject, f, value)
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise _type_error(sobject, f, value) from exc
    raise _type_error(sobject, f, value)


def _load_seed(org: Org) -> None:
    """Users, queues with routing configs and members, channels, presence (FLOWS.md)."""
    s = seed_data
    org.insert(
        "Organization",
        {
            "Id": org.org_id,
            "Name": "Bridge Sandbox Org",
            "InstanceName": "SANDBOX",
            "IsSandbox": True,
        },
        system=True,
    )
    org.insert(
        "User",
        {
            "Id": s.SF_INTEGRATION_USER_ID,
            "Username": s.SF_INTEGRATION_USERNAME,
            "FirstName": "Bridge",
            "LastName": "Integration",
            "Alias": "bridge",
            "Email": s.SF_INTEGRATION_USERNAME,
        },
        system=True,
    )
    for agent in s.AGENTS:
        first, last = agent.name.split(" ", 1)
        org.insert(
            "User",
            {
                "Id": agent.sf_user_id,
                "Username": agent.sf_username,
                "FirstName": first,
                "LastName": last,
                "Alias": agent.sn_user_name[:8],
                "Email": agent.sf_username,
                # single sign-on with the ServiceNow login, as discovery matches them
                "FederationIdentifier": agent.sn_user_name,
            },
            system=True,
        )
    for channel in s.CHANNELS:
        org.insert(
            "ServiceChannel",
            {
                "Id": channel.sf_service_channel_id,
                "DeveloperName": channel.developer_name,
                "MasterLabel": channel.name,
                "RelatedEntity": channel.sf_related_entity,
                "CapacityModel": "TabBased",
                "CapacityWeight": 1.0,
            },
            system=True,
        )
    for status_id, developer_name, label in (
        (s.SF_PRESENCE_AVAILABLE, "Available_Status", "Available"),
        (s.SF_PRESENCE_BUSY, "Busy_Status", "Busy"),
    ):
        org.insert(
            "ServicePresenceStatus",
            {"Id": status_id, "DeveloperName": developer_name, "MasterLabel": label},
            system=True,
        )
    for number, queue in enumerate(s.QUEUES, start=1):
        external = queue.direction == "sf_to_sn"
        config = org.insert(
            "QueueRoutingConfig",
            {
                "Id": ids.make_id("0K9", number),
                "DeveloperName": f"{queue.sf_developer_name}_Routing",
                "MasterLabel": f"{queue.name} routing",
                "RoutingModel": "ExternalRouting" if external else "MostAvailable",
                "RoutingPriority": 1,
                "PushTimeout": s.DEFAULT_PUSH_TIMEOUT_SECONDS,
                "CapacityWeight": 1.0,
            },
            system=True,
        )
        org.insert(
            "Group",
            {
                "Id": queue.sf_queue_id,
                "Name": queue.name if external else queue.sf_developer_name,
                "DeveloperName": queue.sf_developer_name,
                "Type": "Queue",
                "QueueRoutingConfigId": config["Id"],
            },
            system=True,
        )
        for agent in s.AGENTS:
            org.insert(
                "GroupMember",
                {"GroupId": queue.sf_queue_id, "UserOrGroupId": agent.sf_user_id},
                system=True,
            )
    for agent in s.AGENTS:
        org.insert(
            "UserServicePresence",
            {
                "UserId": agent.sf_user_id,
                "OwnerId": agent.sf_user_id,
                "ServicePresenceStatusId": s.SF_PRESENCE_AVAILABLE,
                "IsCurrentState": True,
                "ConfiguredCapacity": s.DEFAULT_AGENT_CAPACITY,
                "StatusStartDate": org.now(),
            },
            system=True,
        )
