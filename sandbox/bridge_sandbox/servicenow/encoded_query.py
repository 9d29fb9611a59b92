"""ServiceNow encoded queries (``sysparm_query``) for the sandbox instance: parser and evaluator.

Grammar, as the instance reads it:

- terms are separated by ``^`` (AND); ``^OR`` joins a condition to the one before it
  (OR binds tighter than AND); ``^NQ`` starts a new query OR-ed with the ones before;
  ``^EQ`` ends the conditions (only ``ORDERBY`` may follow);
- a condition is ``<field><OPERATOR><value>``; fields are lower-case dictionary names and
  may dot-walk through reference fields (``assigned_to.user_name=bob``); ``IN`` takes a
  comma list, ``BETWEEN`` ``<low>@<high>``, ``ON`` ``<label>@<start>@<end>``, ``SAMEAS``
  another field's name;
- ``ORDERBY<field>`` / ``ORDERBYDESC<field>`` may appear anywhere, first one first;
- ``JOIN<table>.<field>=<other>.<field>!<conditions>`` and
  ``RLQUERY<other>.<field>,<op><count>[,m2m]^<conditions>^ENDRLQUERY`` (both emitted by pysnc);
  a JOIN's conditions run from ``!`` to the next ``^NQ``, ``ORDERBY``, ``JOIN``, ``RLQUERY``
  or ``^EQ``.

Conditions on fields the schema does not know are dropped, as the instance does by default;
``EncodedQuery.invalid_fields`` lists them so a strict instance can answer nothing instead.

Nothing is ever evaluated: the only ``javascript:`` value understood is
``gs.dateGenerate('<yyyy-MM-dd>','<HH:mm:ss>|start|end')`` on date fields, read as a literal.

Values are stored as strings. Numbers and dates compare by value when the schema says the
field is numeric or a date; everything else compares as text, case-sensitively, except the
substring operators (``LIKE``/``CONTAINS``, their negations, ``STARTSWITH``, ``ENDSWITH``),
which ignore case as the instance's database does.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Protocol

MAX_QUERY_LENGTH = 32_768
"""Longer ``sysparm_query`` strings are refused rather than parsed."""

_MAX_NESTING = 8
_FIELD = r"[a-z_][a-z0-9_]*"
_FIELD_PATH = re.compile(rf"{_FIELD}(?:\.{_FIELD})*")
_JOIN = re.compile(rf"JOIN({_FIELD})\.({_FIELD})=({_FIELD})\.({_FIELD})!")
_RLQUERY = re.compile(
    rf"RLQUERY({_FIELD})\.({_FIELD}(?:\.{_FIELD})*),(>=|<=|!=|=|>|<)(\d{{1,9}})(,m2m)?"
)


def _contains(value: str, needle: str) -> bool:
    return needle in value


def _lacks(value: str, needle: str) -> bool:
    return needle not in value


def _is_empty(value: str) -> bool:
    return value == ""


def _is_not_empty(value: str) -> bool:
    return value != ""


def _anything(_value: str) -> bool:
    return True


_SUBSTRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "LIKE": _contains,
    "CONTAINS": _contains,
    "NOT LIKE": _lacks,
    "DOES NOT CONTAIN": _lacks,
    "STARTSWITH": str.startswith,
    "ENDSWITH": str.endswith,
}
_VALUELESS: dict[str, Callable[[str], bool]] = {
    "ISEMPTY": _is_empty,
    "EMPTYSTRING": _is_empty,
    "ISNOTEMPTY": _is_not_empty,
    "ANYTHING": _anything,
}
_FIELD_COMPARISONS = ("SAMEAS", "NSAMEAS")  # the value names another field of the record
# Longest first, so that a prefix never shadows a longer operator.
_OPERATORS = tuple(
    sorted(
        [
            *_SUBSTRING_TESTS,
            *_VALUELESS,
            *_FIELD_COMPARISONS,
            *("=", "!=", "<", ">", "<=", ">=", "IN", "NOT IN", "BETWEEN", "ON", "NOTON"),
        ],
        key=len,
        reverse=True,
    )
)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}
_SCRIPT = "javascript:"
_DATE_GENERATE = re.compile(r"javascript:\s*gs\.dateGenerate\('(\d{4}-\d{2}-\d{2})',\s*'([^']*)'\)")
_DAY_BOUNDS = {"start": "00:00:00", "end": "23:59:59"}
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


class SnFieldType(StrEnum):
    """Dictionary internal types the sandbox distinguishes (``sys_dictionary.internal_type``)."""

    STRING = "string"
    INTEGER = "integer"
    DECIMAL = "decimal"
    BOOLEAN = "boolean"
    GLIDE_DATE = "glide_date"
    GLIDE_DATE_TIME = "glide_date_time"
    REFERENCE = "reference"
    SYS_ID = "GUID"
    CHOICE = "choice"


class SnSchema(Protocol):
    """What the parser needs to know about the instance's tables."""

    def field_type(self, table: str, field: str) -> SnFieldType | None:
        """The field's type, or None when the table has no such field."""
        ...

    def reference_target(self, table: str, field: str) -> str | None:
        """The table a reference field points to, or None for other fields."""
        ...


class SnRecordSource(Protocol):
    """Where the evaluator reads records; every stored value is a string."""

    def rows(self, table: str) -> Iterable[Mapping[str, str]]:
        """All records of the table, in insertion order."""
        ...

    def get(self, table: str, sys_id: str) -> Mapping[str, str] | None:
        """One record by sys_id, or None."""
        ...


class EncodedQueryError(Exception):
    """A ``sysparm_query`` the instance cannot read; ``message`` says what and where."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Comparable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...
    def __le__(self, other: Any, /) -> bool: ...
    def __gt__(self, other: Any, /) -> bool: ...
    def __ge__(self, other: Any, /) -> bool: ...


_Read = Callable[[str], _Comparable | None]


@dataclass(frozen=True)
class _Codec:
    """How one kind of field compares: ``stored`` reads a row's value, ``literal`` a query's.

    Both give None for an empty or unreadable value.
    """

    noun: str
    stored: _Read
    literal: _Read
    dated: bool = False


def _text(value: str) -> str | None:
    return value or None


def _text_literal(value: str) -> str | None:
    return None if value.lstrip().startswith(_SCRIPT) else _text(value)


def _number(value: str) -> Decimal | None:
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


_BOOLEANS = {"true": "true", "1": "true", "false": "false", "0": "false"}


def _boolean(value: str) -> str | None:
    return _BOOLEANS.get(value)


def _expand_date_generate(value: str) -> str:
    """``javascript:gs.dateGenerate('2024-01-01','10:00:00')`` → ``2024-01-01 10:00:00``."""
    match = _DATE_GENERATE.fullmatch(value)
    if match is None:
        return value
    return f"{match[1]} {_DAY_BOUNDS.get(match[2], match[2])}"


def _real(value: str, parse: Callable[[str], object]) -> str | None:
    """The value, if it names a day (and time) that exists: no 2024-02-30."""
    try:
        parse(value)
    except ValueError:
        return None
    return value


def _stored_date_time(value: str) -> str | None:
    """Canonical ``yyyy-MM-dd HH:mm:ss`` strings sort like the instants they name."""
    return value if _DATE_TIME_RE.fullmatch(value) else None


def _date_time_literal(value: str) -> str | None:
    value = _expand_date_generate(value)
    if _DATE_RE.fullmatch(value):
        value += " 00:00:00"
    return _real(value, datetime.fromisoformat) if _DATE_TIME_RE.fullmatch(value) else None


def _stored_date(value: str) -> str | None:
    return value if _DATE_RE.fullmatch(value) else None


def _date_literal(value: str) -> str | None:
    value = _expand_date_generate(value)
    if _DATE_TIME_RE.fullmatch(value):
        value = value[:10]
    return _real(value, date.fromisoformat) if _DATE_RE.fullmatch(value) else None


_TEXT = _Codec("text", _text, _text_literal)
_NUMBER = _Codec("number", _number, _number)
_CODECS: dict[SnFieldType, _Codec] = {
    SnFieldType.INTEGER: _NUMBER,
    SnFieldType.DECIMAL: _NUMBER,
    SnFieldType.BOOLEAN: _Codec("boolean (true/false)", _boolean, _boolean),
    SnFieldType.GLIDE_DATE_TIME: _Codec(
        "date-time (yyyy-MM-dd HH:mm:ss)", _stored_date_time, _date_time_literal, dated=True
    ),
    SnFieldType.GLIDE_DATE: _Codec("date (yyyy-MM-dd)", _stored_date, _date_literal, dated=True),
}


def _quote(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


def _refuse_script(value: str, where: str) -> None:
    if value.lstrip().startswith(_SCRIPT):
        raise EncodedQueryError(
            f"{where}: unsupported value {_quote(value)}; the only script understood is "
            "javascript:gs.dateGenerate('yyyy-MM-dd','HH:mm:ss') on a date field"
        )


def _literal(codec: _Codec, value: str, where: str) -> _Comparable:
    key = codec.literal(value)
    if key is None:
        _refuse_script(value, where)
        raise EncodedQueryError(f"{where}: {_quote(value)} is not a valid {codec.noun}")
    return key


_Check = Callable[[str], bool]


def _negate(check: _Check) -> _Check:
    return lambda value: not check(value)


def _membership(op: str, raw: str, codec: _Codec, where: str) -> _Check:
    items = raw.split(",") if op in ("IN", "NOT IN") else [raw]
    wanted = {_literal(codec, item, where) for item in items if item}
    with_empty = "" in items
    stored = codec.stored

    def member(value: str) -> bool:
        return (with_empty and value == "") or stored(value) in wanted

    return member if op in ("=", "IN") else _negate(member)


def _range(op: str, raw: str, codec: _Codec, where: str) -> _Check:
    parts = raw.split("@")
    if op == "BETWEEN" and len(parts) != 2:
        raise EncodedQueryError(f"{where}: BETWEEN needs <low>@<high>")
    if op != "BETWEEN":
        if not codec.dated:
            raise EncodedQueryError(f"{where}: {op} applies to date fields only")
        if len(parts) != 3:
            raise EncodedQueryError(f"{where}: {op} needs <label>@<start>@<end>")
    low, high = (_literal(codec, part, where) for part in parts[-2:])
    stored = codec.stored

    def inside(value: str) -> bool:
        key = stored(value)
        return key is not None and low <= key <= high

    return _negate(inside) if op == "NOTON" else inside


def _compile(op: str, raw: str, codec: _Codec, where: str) -> _Check:
    """The test one condition applies to a stored value."""
    if op in _VALUELESS:
        if raw:
            raise EncodedQueryError(f"{where}: {op} takes no value, got {_quote(raw)}")
        return _VALUELESS[op]
    if op in _SUBSTRING_TESTS:
        _refuse_script(raw, where)
        test, needle = _SUBSTRING_TESTS[op], raw.casefold()
        return lambda value: test(value.casefold(), needle)
    if op in ("=", "!=", "IN", "NOT IN"):
        return _membership(op, raw, codec, where)
    if op in _COMPARISONS:
        bound, compare, stored = _literal(codec, raw, where), _COMPARISONS[op], codec.stored

        def in_order(value: str) -> bool:
            key = stored(value)
            return key is not None and compare(key, bound)

        return in_order
    return _range(op, raw, codec, where)


@dataclass(frozen=True)
class _FieldPath:
    """A field of the queried table, possibly dot-walked through reference fields."""

    field: str
    walk: tuple[tuple[str, str], ...]  # (target table, field) for each hop
    type: SnFieldType

    def read(self, row: Mapping[str, str], source: SnRecordSource) -> str:
        value = row.get(self.field, "")
        for table, name in self.walk:
            target = source.get(table, value) if value else None
            if target is None:
                return ""
            value = target.get(name, "")
        return value


def _resolve(schema: SnSchema, table: str, dotted: str) -> _FieldPath | None:
    first, *hops = dotted.split(".")
    field_type = schema.field_type(table, first)
    walk: list[tuple[str, str]] = []
    current_table, current = table, first
    for name in hops:
        target = (
            schema.reference_target(current_table, current)
            if field_type is SnFieldType.REFERENCE
            else None
        )
        if target is None:
            return None
        field_type = schema.field_type(target, name)
        current_table, current = target, name
        walk.append((target, name))
    if field_type is None:
        return None
    return _FieldPath(first, tuple(walk), field_type)


class _Evaluation:
    """One evaluation pass: each JOIN/RLQUERY reads its related table once, not once per row."""

    def __init__(self, source: SnRecordSource) -> None:
        self.source = source
        self._tallies: dict[int, Counter[str]] = {}

    def tally(self, related: _Related) -> Counter[str]:
        """How many matching related records point at each value of the link field."""
        tally = self._tallies.get(id(related))
        if tally is None:
            tally = Counter(
                related.link.read(row, self.source)
                for row in self.source.rows(related.table)
                if related.where.test(row, self)
            )
            self._tallies[id(related)] = tally
        return tally


class _Predicate(Protocol):
    def test(self, row: Mapping[str, str], ctx: _Evaluation) -> bool: ...


@dataclass(frozen=True)
class _Condition:
    path: _FieldPath
    check: _Check
    sys_ids: tuple[str, ...] | None  # set for sys_id= and sys_idIN: fetched, not scanned

    def test(self, row: Mapping[str, str], ctx: _Evaluation) -> bool:
        return self.check(self.path.read(row, ctx.source))


@dataclass(frozen=True)
class _SameAs:
    """``SAMEAS`` / ``NSAMEAS``: two fields of the same record hold the same stored value."""

    path: _FieldPath
    other: _FieldPath
    same: bool

    def test(self, row: Mapping[str, str], ctx: _Evaluation) -> bool:
        return (self.path.read(row, ctx.source) == self.other.read(row, ctx.source)) is self.same


@dataclass(frozen=True, eq=False)
class _Related:
    """JOIN or RLQUERY: counts records of ``table`` whose ``link`` equals this row's ``key``."""

    key: _FieldPath
    table: str
    link: _FieldPath
    where: _Block
    count_matches: Callable[[int], bool]

    def test(self, row: Mapping[str, str], ctx: _Evaluation) -> bool:
        value = self.key.read(row, ctx.source)
        return self.count_matches(ctx.tally(self)[value] if value else 0)


@dataclass(frozen=True)
class _Block:
    """``^NQ`` branches (OR) of ``^`` groups (AND) of ``^OR`` alternatives."""

    branches: tuple[tuple[tuple[_Predicate, ...], ...], ...]

    def test(self, row: Mapping[str, str], ctx: _Evaluation) -> bool:
        # Plain loops: this runs once per row and generator expressions cost twice as much.
        for branch in self.branches:
            for group in branch:
                for predicate in group:
                    if predicate.test(row, ctx):
                        break
                else:
                    break  # no alternative of this group holds: the branch fails
            else:
                return True
        return False

    def sys_ids(self) -> tuple[str, ...] | None:
        """The sys_ids that bound every branch, when each has a ``sys_id=``/``sys_idIN`` term."""
        found: list[str] = []
        for branch in self.branches:
            ids = next(
                (
                    group[0].sys_ids
                    for group in branch
                    if len(group) == 1 and isinstance(group[0], _Condition) and group[0].sys_ids
                ),
                None,
            )
            if ids is None:
                return None
            found.extend(ids)
        return tuple(dict.fromkeys(found))


def _tokenize(query: str) -> list[str]:
    """Split on ``^``; a JOIN term's first sub-condition (after ``!``) becomes its own term."""
    terms: list[str] = []
    for term in query.split("^") if query else []:
        is_join = term.startswith(("JOIN", "ORJOIN", "NQJOIN"))
        head, bang, rest = term.partition("!") if is_join else (term, "", "")
        terms.append(head + bang)
        if rest:
            terms.append(rest)
    return terms


def _ends_join(term: str) -> bool:
    return term in ("EQ", "ENDRLQUERY") or term.startswith(("NQ", "ORDERBY", "JOIN", "RLQUERY"))


def _ends_related_list(term: str) -> bool:
    return term == "ENDRLQUERY"


class _Parser:
    def __init__(self, query: str, table: str, schema: SnSchema) -> None:
        self.terms = _tokenize(query)
        self.pos = 0
        self.table = table
        self.schema = schema
        self.invalid_fields: list[str] = []
        self.order: list[tuple[str, _FieldPath, bool]] = []

    def query(self) -> EncodedQuery:
        where = self.block(self.table, 0, lambda term: term == "EQ")
        if self.pos < len(self.terms):  # past ^EQ
            self.pos += 1
            for term in self.terms[self.pos :]:
                if not term.startswith("ORDERBY"):
                    raise EncodedQueryError(f"{_quote(term)}: only ORDERBY may follow ^EQ")
                self.order_term(term)
        return EncodedQuery(self.table, where, self.order, self.invalid_fields)

    def block(self, table: str, depth: int, stop: Callable[[str], bool]) -> _Block:
        if depth > _MAX_NESTING:
            raise EncodedQueryError(f"JOIN/RLQUERY nested more than {_MAX_NESTING} deep")
        branches: list[list[list[_Predicate | None]]] = []
        groups: list[list[_Predicate | None]] = []
        while self.pos < len(self.terms) and not stop(self.terms[self.pos]):
            term = self.terms[self.pos]
            self.pos += 1
            if term.startswith("ORDERBY"):
                if depth:
                    raise EncodedQueryError(f"{_quote(term)}: ORDERBY inside RLQUERY")
                self.order_term(term)
            elif term.startswith("NQ"):
                if not groups:
                    raise EncodedQueryError(f"{_quote(term)}: ^NQ must follow a condition")
                branches.append(groups)
                groups = [[self.predicate(term[2:], table, depth)]]
            elif term.startswith("OR"):
                if not groups:
                    raise EncodedQueryError(f"{_quote(term)}: ^OR must follow a condition")
                groups[-1].append(self.predicate(term[2:], table, depth))
            else:
                groups.append([self.predicate(term, table, depth)])
        branches.append(groups)
        return _Block(tuple(_compact(branch) for branch in branches))

    def predicate(self, term: str, table: str, depth: int) -> _Predicate | None:
        """One term; None when it names an unknown field (ServiceNow drops such conditions)."""
        if not term:
            raise EncodedQueryError("empty condition: '^' at the start or end, or '^^'")
        if term.startswith("RLQUERY"):
            return self.related_list(term, table, depth)
        if term.startswith("JOIN"):
            return self.join(term, table, depth)
        if term in ("EQ", "ENDRLQUERY"):
            raise EncodedQueryError(f"unexpected ^{term}")
        return self.condition(term, table)

    def condition(self, term: str, table: str) -> _Predicate | None:
        where = f"condition {_quote(term)}"
        match = _FIELD_PATH.match(term)
        if match is None:
            raise EncodedQueryError(f"{where}: expected <field><operator><value>")
        name, rest = match[0], term[match.end() :]
        op = next((op for op in _OPERATORS if rest.startswith(op)), None)
        if op is None:
            raise EncodedQueryError(
                f"{where}: unknown operator after {name!r}; supported: {', '.join(_OPERATORS)}"
            )
        path, raw = self.field(table, name), rest[len(op) :]
        if op in _FIELD_COMPARISONS:
            return self.same_as(op, path, raw, table, where)
        if path is None:
            return None
        check = _compile(op, raw, _CODECS.get(path.type, _TEXT), where)
        sys_ids: tuple[str, ...] | None = None
        if name == "sys_id" and raw and op in ("=", "IN"):
            sys_ids = tuple(dict.fromkeys(raw.split(","))) if op == "IN" else (raw,)
        return _Condition(path, check, sys_ids)

    def same_as(
        self, op: str, path: _FieldPath | None, other: str, table: str, where: str
    ) -> _Predicate | None:
        if _FIELD_PATH.fullmatch(other) is None:
            raise EncodedQueryError(f"{where}: {op} needs a field name, got {_quote(other)}")
        other_path = self.field(table, other)
        if path is None or other_path is None:
            return None
        return _SameAs(path, other_path, op == "SAMEAS")

    def field(self, table: str, name: str) -> _FieldPath | None:
        path = _resolve(self.schema, table, name)
        qualified = name if table == self.table else f"{table}.{name}"
        if path is None and qualified not in self.invalid_fields:
            self.invalid_fields.append(qualified)
        return path

    def order_term(self, term: str) -> None:
        descending = term.startswith("ORDERBYDESC")
        name = term.removeprefix("ORDERBYDESC" if descending else "ORDERBY")
        if _FIELD_PATH.fullmatch(name) is None:
            raise EncodedQueryError(f"{_quote(term)}: ORDERBY needs a field name")
        path = _resolve(self.schema, self.table, name)
        if path is not None:  # an unknown sort field is ignored, as ServiceNow does
            self.order.append((name, path, descending))

    def join(self, term: str, table: str, depth: int) -> _Predicate | None:
        match = _JOIN.fullmatch(term)
        if match is None:
            raise EncodedQueryError(
                f"{_quote(term)}: expected JOIN<table>.<field>=<table>.<field>!<conditions>"
            )
        own_table, primary, other, secondary = match.groups()
        if own_table != table:
            raise EncodedQueryError(f"{_quote(term)}: JOIN must start from table {table!r}")
        where = self.block(other, depth + 1, _ends_join)
        key, link = self.field(table, primary), self.field(other, secondary)
        if key is None or link is None:
            return None
        return _Related(key, other, link, where, lambda count: count > 0)

    def related_list(self, term: str, table: str, depth: int) -> _Predicate | None:
        match = _RLQUERY.fullmatch(term)
        if match is None:
            raise EncodedQueryError(
                f"{_quote(term)}: expected RLQUERY<table>.<field>,<operator><count>[,m2m]"
            )
        other, reference, op, count = match[1], match[2], match[3], int(match[4])
        where = self.block(other, depth + 1, _ends_related_list)
        if self.pos >= len(self.terms):
            raise EncodedQueryError(f"{_quote(term)}: RLQUERY without ^ENDRLQUERY")
        self.pos += 1
        key, link = self.field(table, "sys_id"), self.field(other, reference)
        if key is None or link is None:
            return None
        compare = _COMPARISONS[op]
        return _Related(key, other, link, where, lambda found: compare(found, count))


def _compact(
    groups: list[list[_Predicate | None]],
) -> tuple[tuple[_Predicate, ...], ...]:
    """Drop conditions on unknown fields, and the groups left empty by that."""
    kept = (tuple(p for p in group if p is not None) for group in groups)
    return tuple(group for group in kept if group)


class EncodedQuery:
    """A parsed ``sysparm_query`` for one table."""

    def __init__(
        self,
        table: str,
        where: _Block,
        order: Sequence[tuple[str, _FieldPath, bool]],
        invalid_fields: list[str],
    ) -> None:
        self.table = table
        self.order_by: list[tuple[str, bool]] = [(name, desc) for name, _, desc in order]
        self.invalid_fields = invalid_fields
        self._where = where
        self._order = tuple(order)

    def matches(self, row: Mapping[str, str], source: SnRecordSource) -> bool:
        """Whether the row passes the conditions (conditions on unknown fields ignored)."""
        return self._where.test(row, _Evaluation(source))

    def _select(self, source: SnRecordSource) -> list[Mapping[str, str]]:
        ctx = _Evaluation(source)
        sys_ids = self._where.sys_ids()
        candidates: Iterable[Mapping[str, str] | None] = (
            source.rows(self.table)
            if sys_ids is None
            else (source.get(self.table, sys_id) for sys_id in sys_ids)
        )
        rows = [row for row in candidates if row is not None and self._where.test(row, ctx)]
        for _, path, descending in reversed(self._order):
            rows.sort(key=_sort_key(path, source), reverse=descending)
        return rows


def _sort_key(
    path: _FieldPath, source: SnRecordSource
) -> Callable[[Mapping[str, str]], tuple[bool, _Comparable]]:
    """Empty values sort first, as the instance's database does with NULL."""
    stored = _CODECS.get(path.type, _TEXT).stored

    def key(row: Mapping[str, str]) -> tuple[bool, _Comparable]:
        value = stored(path.read(row, source))
        return (False, "") if value is None else (True, value)

    return key


def parse(query: str, table: str, schema: SnSchema) -> EncodedQuery:
    """Parse a ``sysparm_query`` for ``table``; raises EncodedQueryError on malformed input."""
    if len(query) > MAX_QUERY_LENGTH:
        raise EncodedQueryError(f"query longer than {MAX_QUERY_LENGTH} characters")
    return _Parser(query, table, schema).query()


def run(
    query: EncodedQuery | None, table: str, source: SnRecordSource, *, strict: bool
) -> list[Mapping[str, str]]:
    """The table's records that match, in the query's order (else insertion order).

    ``strict`` is the instance property ``glide.invalid_query.returns_no_rows``: a query
    naming an unknown field returns nothing instead of ignoring that condition. Records
    fetched by ``sys_id=``/``sys_idIN`` come in the order the query lists them.
    """
    if query is None:
        return list(source.rows(table))
    if query.table != table:
        raise EncodedQueryError(f"query parsed for table {query.table!r}, run on {table!r}")
    if strict and query.invalid_fields:
        return []
    return query._select(source)
