"""The SOQL subset the sandbox org answers: tokenizer, recursive-descent parser, evaluator.

``parse`` turns the query text into a typed ``Query`` checked against a ``SoqlSchema``
(field names resolved case-insensitively to their canonical casing, literals checked
against field types); ``execute`` evaluates it over a ``RecordSource`` and shapes rows the
way the REST API returns them. Anything outside the subset is a ``SoqlError`` with the
error code and message shape Salesforce uses, never another exception type.

Supported: field lists with relationship paths, ``COUNT()`` / ``COUNT(field)``; ``WHERE``
with AND / OR / NOT and parentheses (AND and OR cannot be mixed without parentheses, as
in Salesforce); ``= != <> < <= > >=``, ``IN``, ``NOT IN``, ``LIKE``; string, number,
boolean, null, date, datetime literals and the date literals ``TODAY``, ``YESTERDAY``,
``TOMORROW``, ``LAST_N_DAYS:n``, ``NEXT_N_DAYS:n``; ``ORDER BY`` with ASC/DESC and
NULLS FIRST/LAST; ``LIMIT``; ``OFFSET`` (at most 2000).
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from enum import StrEnum
from typing import Any, Protocol

from bridge_sandbox.salesforce.ids import to18

MAX_OFFSET = 2000
MAX_QUERY_LENGTH = 100_000
MAX_NESTING = 50

# Polls send the same ids again and again; checking an id's case-safe suffix is not free.
_to18 = functools.lru_cache(maxsize=65_536)(to18)


class FieldType(StrEnum):
    """Field types, named as the describe call names them."""

    ID = "id"
    REFERENCE = "reference"
    STRING = "string"
    PICKLIST = "picklist"
    TEXTAREA = "textarea"
    EMAIL = "email"
    PHONE = "phone"
    URL = "url"
    BOOLEAN = "boolean"
    INT = "int"
    DOUBLE = "double"
    CURRENCY = "currency"
    PERCENT = "percent"
    DATETIME = "datetime"
    DATE = "date"


TEXT_TYPES = frozenset(
    {
        FieldType.STRING,
        FieldType.PICKLIST,
        FieldType.TEXTAREA,
        FieldType.EMAIL,
        FieldType.PHONE,
        FieldType.URL,
    }
)
ID_TYPES = frozenset({FieldType.ID, FieldType.REFERENCE})
NUMBER_TYPES = frozenset({FieldType.INT, FieldType.DOUBLE, FieldType.CURRENCY, FieldType.PERCENT})


class SoqlError(Exception):
    """A query the org refuses: ``error_code`` and ``message`` as the REST API reports them."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message


class SoqlSchema(Protocol):
    def field_type(self, sobject: str, field: str) -> tuple[str, FieldType] | None:
        """Canonical field name and type (case-insensitive lookup), None if unknown."""
        ...

    def relationship(self, sobject: str, name: str) -> tuple[str, str, str] | None:
        """Relationship name -> (canonical relationship name, fk field, target sobject)."""
        ...

    def canonical_sobject(self, name: str) -> str | None: ...


class RecordSource(Protocol):
    def records(self, sobject: str, include_deleted: bool) -> Iterable[Mapping[str, Any]]: ...

    def by_id(self, record_id: str) -> tuple[str, Mapping[str, Any]] | None:
        """(sobject, record) of any object, or None."""
        ...


Record = Mapping[str, Any]
Getter = Callable[[Record], Any]
Predicate = Callable[[Record], bool]


# --------------------------------------------------------------------------- query model


@dataclass(frozen=True, slots=True)
class RelativeDate:
    """A date literal relative to the day of the query (``TODAY``, ``LAST_N_DAYS:7`` ...)."""

    name: str
    n: int = 0

    def bounds(self, today: date) -> tuple[date, date]:
        """The half-open range of days [start, end) the literal stands for."""
        if self.name == "TODAY":
            return today, _shift(today, 1)
        if self.name == "YESTERDAY":
            return _shift(today, -1), today
        if self.name == "TOMORROW":
            return _shift(today, 1), _shift(today, 2)
        if self.name == "LAST_N_DAYS":  # today and the n days before it
            return _shift(today, -self.n), _shift(today, 1)
        return _shift(today, 1), _shift(today, self.n + 1)  # NEXT_N_DAYS: from tomorrow on


def _shift(day: date, days: int) -> date:
    """``day`` moved by ``days``, held at the calendar's ends (``LAST_N_DAYS:99999999``)."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


Value = None | bool | int | float | str | date | datetime | RelativeDate


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A field reached from the root sobject through zero or more relationships."""

    hops: tuple[tuple[str, str], ...]  # (canonical relationship name, fk field) per hop
    field: str
    type: FieldType

    @property
    def name(self) -> str:
        return ".".join([*(rel for rel, _ in self.hops), self.field])


@dataclass(frozen=True, slots=True)
class Comparison:
    path: FieldPath
    op: str  # one of = != < <= > >=
    value: Value


@dataclass(frozen=True, slots=True)
class InList:
    path: FieldPath
    values: tuple[Value, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class Like:
    path: FieldPath
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Condition


Condition = Comparison | InList | Like | And | Or | Not


@dataclass(frozen=True, slots=True)
class OrderKey:
    path: FieldPath
    descending: bool
    nulls_first: bool


@dataclass(frozen=True, slots=True)
class CountItem:
    """``COUNT(field)`` in an aggregate query; ``alias`` is ``exprN`` unless given."""

    path: FieldPath
    alias: str


@dataclass(frozen=True, slots=True)
class Query:
    sobject: str
    fields: tuple[FieldPath, ...] = ()
    counts: tuple[CountItem, ...] = ()  # COUNT(field) items: an aggregate query
    count_only: bool = False  # SELECT COUNT(): totalSize only
    where: Condition | None = None
    order_by: tuple[OrderKey, ...] = ()
    limit: int | None = None
    offset: int | None = None


@dataclass(slots=True)
class QueryResult:
    total_size: int
    records: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # IDENT STRING NUMBER DATE DATETIME OP PUNCT EOF (+ BOOL NULL DATEFN literals)
    text: str
    pos: int
    value: Any = None
    like: str = ""  # for STRING: the LIKE pattern as a regular expression


_IDENT_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789_")
_DIGITS = frozenset("0123456789")
_PUNCT = frozenset("(),.:")
_ESCAPES = {
    "n": "\n",
    "N": "\n",
    "r": "\r",
    "R": "\r",
    "t": "\t",
    "T": "\t",
    "b": "\b",
    "B": "\b",
    "f": "\f",
    "F": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
}
_QUOTE_OR_ESCAPE = re.compile(r"['\\]")
_TEMPORAL = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?)?"
)


def _located(text: str, pos: int, detail: str) -> str:
    """Salesforce's error shape: the offending line, a caret, Row/Column, the detail."""
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    if line_end < 0:
        line_end = len(text)
    row = text.count("\n", 0, pos) + 1
    col = pos - line_start + 1
    caret = " " * (col - 1) + "^"
    return f"\n{text[line_start:line_end]}\n{caret}\nERROR at Row:{row}:Column:{col}\n{detail}"


def _lex_error(text: str, pos: int, detail: str) -> SoqlError:
    row = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1)
    return SoqlError("MALFORMED_QUERY", f"line {row}:{col} {detail}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in " \t\r\n":
            i += 1
        elif char in _IDENT_START:
            start = i
            while i < n and text[i] in _IDENT_CHARS:
                i += 1
            tokens.append(_Token("IDENT", text[start:i], start))
        elif char == "'":
            token, i = _scan_string(text, i)
            tokens.append(token)
        elif char in _DIGITS or (char in "+-" and i + 1 < n and text[i + 1] in _DIGITS):
            token, i = _scan_number_or_temporal(text, i)
            tokens.append(token)
        elif char in "=<>!":
            two = text[i : i + 2]
            if two in ("!=", "<>", "<=", ">="):
                tokens.append(_Token("OP", "!=" if two == "<>" else two, i))
                i += 2
            elif char == "!":
                raise _lex_error(text, i, "no viable alternative at character '!'")
            else:
                tokens.append(_Token("OP", char, i))
                i += 1
        elif char in _PUNCT:
            tokens.append(_Token("PUNCT", char, i))
            i += 1
        else:
            raise _lex_error(text, i, f"no viable alternative at character '{char}'")
    tokens.append(_Token("EOF", "<EOF>", n))
    return tokens


def _scan_string(text: str, start: int) -> tuple[_Token, int]:
    """A quoted literal: its decoded value and, for LIKE, a regex where only unescaped
    ``%`` and ``_`` are wildcards. Runs between escapes are taken as whole slices."""
    chars: list[str] = []
    pattern: list[str] = []
    i = start + 1
    while True:
        stop = _QUOTE_OR_ESCAPE.search(text, i)
        if stop is None or (stop.end() == len(text) and stop.group() == "\\"):
            raise _lex_error(text, len(text), "mismatched character '<EOF>' expecting '''")
        run = text[i : stop.start()]
        chars.append(run)
        pattern.append(re.escape(run).replace("%", ".*").replace("_", "."))
        i = stop.start()
        if stop.group() == "'":
            token = _Token("STRING", text[start : i + 1], start, "".join(chars), "".join(pattern))
            return token, i + 1
        code = text[i + 1]
        decoded = code if code in "%_" else _ESCAPES.get(code)
        if decoded is None:
            raise SoqlError(
                "MALFORMED_QUERY",
                _located(
                    text,
                    i,
                    f"Invalid string literal '{text[start + 1 : i + 2]}'. "
                    f"Illegal character sequence '\\{code}' in string literal.",
                ),
            )
        chars.append(decoded)
        pattern.append(re.escape(decoded))
        i += 2


def _scan_number_or_temporal(text: str, start: int) -> tuple[_Token, int]:
    match = _TEMPORAL.match(text, start)
    if match:
        return _temporal_token(text, start, match), match.end()
    i = start + 1
    n = len(text)
    while i < n and text[i] in _DIGITS:
        i += 1
    is_float = i + 1 < n and text[i] == "." and text[i + 1] in _DIGITS
    if is_float:
        i += 1
        while i < n and text[i] in _DIGITS:
            i += 1
    literal = text[start:i]
    value: int | float = float(literal) if is_float else int(literal)
    return _Token("NUMBER", literal, start, value), i


def _temporal_token(text: str, start: int, match: re.Match[str]) -> _Token:
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    literal = match.group(0)
    try:
        day_value = date(int(year), int(month), int(day))
        if hour is None:
            return _Token("DATE", literal, start, day_value)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        clock = time(int(hour), int(minute), int(second), micro)
        value = datetime.combine(day_value, clock, tzinfo=_zone(zone)).astimezone(UTC)
    except (ValueError, TypeError):  # out-of-range parts, or a datetime without a zone
        raise SoqlError(
            "MALFORMED_QUERY", _located(text, start, f"invalid date/time literal: {literal}")
        ) from None
    return _Token("DATETIME", literal, start, value)


def _zone(zone: str | None) -> timezone:
    if zone is None:
        raise TypeError("a datetime literal needs Z or an offset")
    if zone == "Z":
        return UTC
    digits = zone[1:].replace(":", "")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return timezone(-offset if zone[0] == "-" else offset)


# --------------------------------------------------------------------------- parser

_DATE_FUNCTIONS = frozenset({"TODAY", "YESTERDAY", "TOMORROW"})
_DATE_N_FUNCTIONS = frozenset({"LAST_N_DAYS", "NEXT_N_DAYS"})

# Raw (syntax-only) tree: paths and literals are still tokens; resolved against the schema
# once the whole statement has parsed, so a syntax error anywhere wins over a bad name.
_Path = tuple[_Token, ...]


@dataclass(frozen=True, slots=True)
class _RawCount:
    token: _Token
    path: _Path | None
    alias: _Token | None


@dataclass(frozen=True, slots=True)
class _RawPredicate:
    path: _Path
    op: _Token  # OP token, or the IN / LIKE keyword
    values: tuple[_Token, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class _RawJunction:
    word: str  # AND / OR / NOT
    parts: tuple[_RawCondition, ...]


_RawCondition = _RawPredicate | _RawJunction


@dataclass(frozen=True, slots=True)
class _RawOrder:
    path: _Path
    descending: bool
    nulls_first: bool


class _Parser:
    def __init__(self, text: str, schema: SoqlSchema) -> None:
        self.text = text
        self.schema = schema
        self.tokens = _tokenize(text)
        self.i = 0

    # -- token helpers

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.i += 1
        return token

    def at(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "IDENT" and token.text.upper() in words

    def at_punct(self, char: str) -> bool:
        token = self.peek()
        return token.kind == "PUNCT" and token.text == char

    def unexpected(self, token: _Token | None = None) -> SoqlError:
        token = token or self.peek()
        return self.error("MALFORMED_QUERY", token, f"unexpected token: '{token.text}'")

    def error(self, code: str, token: _Token, detail: str) -> SoqlError:
        return SoqlError(code, _located(self.text, token.pos, detail))

    def keyword(self, word: str) -> _Token:
        if not self.at(word):
            raise self.unexpected()
        return self.take()

    def punct(self, char: str) -> _Token:
        if not self.at_punct(char):
            raise self.unexpected()
        return self.take()

    def ident(self) -> _Token:
        if self.peek().kind != "IDENT":
            raise self.unexpected()
        return self.take()

    def integer(self) -> int:
        token = self.peek()
        if token.kind != "NUMBER" or not isinstance(token.value, int) or token.value < 0:
            raise self.unexpected()
        self.take()
        return token.value

    # -- grammar

    def query(self) -> Query:
        self.keyword("SELECT")
        items = self.select_list()
        self.keyword("FROM")
        sobject_token = self.ident()
        where = None
        if self.at("WHERE"):
            self.take()
            where = self.condition(0)
        order: list[_RawOrder] = []
        if self.at("ORDER"):
            self.take()
            self.keyword("BY")
            order.append(self.order_item())
            while self.at_punct(","):
                self.take()
                order.append(self.order_item())
        limit = offset = None
        if self.at("LIMIT"):
            self.take()
            limit = self.integer()
        if self.at("OFFSET"):
            offset_token = self.take()
            offset = self.integer()
            if offset > MAX_OFFSET:
                raise self.error(
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    offset_token,
                    f"Maximum SOQL offset allowed is {MAX_OFFSET}",
                )
        if self.peek().kind != "EOF":
            raise self.unexpected()
        return _Resolver(self, sobject_token).query(items, where, order, limit, offset)

    def select_list(self) -> list[_Path | _RawCount]:
        items = [self.select_item()]
        while self.at_punct(","):
            self.take()
            items.append(self.select_item())
        return items

    def select_item(self) -> _Path | _RawCount:
        token = self.peek()
        if token.kind == "IDENT" and self.peek(1).kind == "PUNCT" and self.peek(1).text == "(":
            if token.text.upper() != "COUNT":
                raise self.unexpected(self.peek(1))
            self.take()
            self.take()
            path = None if self.at_punct(")") else self.path()
            self.punct(")")
            alias = None
            if self.peek().kind == "IDENT" and not self.at("FROM"):
                alias = self.take()
            return _RawCount(token, path, alias)
        return self.path()

    def path(self) -> _Path:
        parts = [self.ident()]
        while self.at_punct("."):
            self.take()
            parts.append(self.ident())
        return tuple(parts)

    def order_item(self) -> _RawOrder:
        path = self.path()
        descending = False
        if self.at("ASC", "DESC"):
            descending = self.take().text.upper() == "DESC"
        nulls_first = True  # Salesforce sorts nulls first unless told otherwise
        if self.at("NULLS"):
            self.take()
            if not self.at("FIRST", "LAST"):
                raise self.unexpected()
            nulls_first = self.take().text.upper() == "FIRST"
        return _RawOrder(path, descending, nulls_first)

    def condition(self, depth: int) -> _RawCondition:
        parts = [self.term(depth)]
        joiner = None
        while self.at("AND", "OR"):
            token = self.peek()
            word = token.text.upper()
            if joiner not in (None, word):  # SOQL has no precedence between AND and OR
                raise self.unexpected(token)
            joiner = word
            self.take()
            parts.append(self.term(depth))
        if joiner is None:
            return parts[0]
        return _RawJunction(joiner, tuple(parts))

    def term(self, depth: int) -> _RawCondition:
        if self.at("NOT"):
            self.take()
            return _RawJunction("NOT", (self.term(self.deeper(depth)),))
        if self.at_punct("("):
            self.take()
            inner = self.condition(self.deeper(depth))
            self.punct(")")
            return inner
        return self.predicate()

    def deeper(self, depth: int) -> int:
        """One more level of NOT / parentheses, up to a bound that keeps the stack safe."""
        if depth >= MAX_NESTING:
            raise self.error("MALFORMED_QUERY", self.peek(), "Query is too complicated")
        return depth + 1

    def predicate(self) -> _RawPredicate:
        path = self.path()
        token = self.peek()
        if token.kind == "OP":
            self.take()
            return _RawPredicate(path, token, (self.literal(),))
        if self.at("LIKE"):
            self.take()
            return _RawPredicate(path, token, (self.literal(),))
        negated = self.at("NOT")
        if negated:
            self.take()
        op = self.keyword("IN")
        self.punct("(")
        values = [self.literal()]
        while self.at_punct(","):
            self.take()
            values.append(self.literal())
        self.punct(")")
        return _RawPredicate(path, op, tuple(values), negated)

    def literal(self) -> _Token:
        token = self.peek()
        if token.kind in ("STRING", "NUMBER", "DATE", "DATETIME"):
            return self.take()
        if token.kind != "IDENT":
            raise self.unexpected()
        word = token.text.upper()
        if word in ("TRUE", "FALSE"):
            self.take()
            return _Token("BOOL", token.text, token.pos, word == "TRUE")
        if word == "NULL":
            self.take()
            return _Token("NULL", token.text, token.pos)
        if word in _DATE_FUNCTIONS:
            self.take()
            return _Token("DATEFN", token.text, token.pos, RelativeDate(word))
        if word in _DATE_N_FUNCTIONS:
            self.take()
            self.punct(":")
            n = self.integer()
            return _Token("DATEFN", f"{token.text}:{n}", token.pos, RelativeDate(word, n))
        raise self.unexpected()


# --------------------------------------------------------------------------- resolution

# Value token kinds each field type accepts in a comparison (null is always accepted).
_ACCEPTS: dict[FieldType, frozenset[str]] = {
    **{t: frozenset({"STRING"}) for t in TEXT_TYPES | ID_TYPES},
    FieldType.BOOLEAN: frozenset({"BOOL"}),
    **{t: frozenset({"NUMBER"}) for t in NUMBER_TYPES},
    FieldType.DATETIME: frozenset({"DATETIME", "DATEFN"}),
    FieldType.DATE: frozenset({"DATE", "DATEFN"}),
}
# How Salesforce names the expected type in a filter type mismatch.
_TYPE_WORD: dict[FieldType, str] = {
    FieldType.ID: "id",
    FieldType.REFERENCE: "id",
    FieldType.BOOLEAN: "boolean",
    FieldType.INT: "integer",
    FieldType.DATETIME: "dateTime",
    FieldType.DATE: "date",
}
_ORDERING_OPS = frozenset({"<", "<=", ">", ">="})


class _Resolver:
    """Checks the raw tree against the schema and builds the typed ``Query``."""

    def __init__(self, parser: _Parser, sobject_token: _Token) -> None:
        self.parser = parser
        self.schema = parser.schema
        sobject = self.schema.canonical_sobject(sobject_token.text)
        if sobject is None:
            raise parser.error(
                "INVALID_TYPE",
                sobject_token,
                f"sObject type '{sobject_token.text}' is not supported. If you are attempting "
                "to use a custom object, be sure to append the '__c' after the entity name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
            )
        self.sobject = sobject

    def query(
        self,
        items: list[_Path | _RawCount],
        where: _RawCondition | None,
        order: list[_RawOrder],
        limit: int | None,
        offset: int | None,
    ) -> Query:
        fields, counts, count_only = self.select(items)
        return Query(
            sobject=self.sobject,
            fields=fields,
            counts=counts,
            count_only=count_only,
            where=None if where is None else self.condition(where),
            order_by=tuple(
                OrderKey(self.usable_path(o.path, "sorted"), o.descending, o.nulls_first)
                for o in order
            ),
            limit=limit,
            offset=offset,
        )

    def select(
        self, items: list[_Path | _RawCount]
    ) -> tuple[tuple[FieldPath, ...], tuple[CountItem, ...], bool]:
        counts = [item for item in items if isinstance(item, _RawCount)]
        if not counts:
            return self.plain_fields([item for item in items if not isinstance(item, _RawCount)])
        if any(count.path is None for count in counts):
            if len(items) > 1:
                raise self.parser.error(
                    "MALFORMED_QUERY",
                    counts[0].token,
                    "COUNT() must be the only element in the SELECT list",
                )
            return (), (), True
        for item in items:
            if not isinstance(item, _RawCount):
                name = ".".join(token.text for token in item)
                raise self.parser.error(
                    "MALFORMED_QUERY", item[0], f"Field must be grouped or aggregated: {name}"
                )
        resolved: list[CountItem] = []
        for index, count in enumerate(counts):
            assert count.path is not None  # COUNT() was handled above
            alias = count.alias.text if count.alias else f"expr{index}"
            resolved.append(CountItem(self.path(count.path), alias))
        return (), tuple(resolved), False

    def plain_fields(self, paths: list[_Path]) -> tuple[tuple[FieldPath, ...], tuple[()], bool]:
        seen: set[str] = set()
        fields: list[FieldPath] = []
        for raw in paths:
            path = self.path(raw)
            if path.name.lower() in seen:
                raise self.parser.error(
                    "MALFORMED_QUERY", raw[0], f"duplicate field selected: {path.name}"
                )
            seen.add(path.name.lower())
            fields.append(path)
        return tuple(fields), (), False

    def path(self, raw: _Path) -> FieldPath:
        parts = list(raw)
        current = self.sobject
        if (
            len(parts) > 1
            and parts[0].text.lower() == current.lower()
            and self.schema.relationship(current, parts[0].text) is None
        ):
            parts = parts[1:]  # "Case.Subject" FROM Case names the root object itself
        hops: list[tuple[str, str]] = []
        for token in parts[:-1]:
            relationship = self.schema.relationship(current, token.text)
            if relationship is None:
                raise self.parser.error(
                    "INVALID_FIELD",
                    raw[0],
                    f"Didn't understand relationship '{token.text}' in field path. If you are "
                    "attempting to use a custom relationship, be sure to append the '__r' after "
                    "the custom relationship name. Please reference your WSDL or the describe "
                    "call for the appropriate names.",
                )
            name, fk_field, current = relationship
            hops.append((name, fk_field))
        last = parts[-1]
        found = self.schema.field_type(current, last.text)
        if found is None:
            raise self.parser.error(
                "INVALID_FIELD",
                raw[0],
                f"No such column '{last.text}' on entity '{current}'. If you are attempting to "
                "use a custom field, be sure to append the '__c' after the custom field name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
            )
        return FieldPath(tuple(hops), found[0], found[1])

    def usable_path(self, raw: _Path, use: str) -> FieldPath:
        """A path in WHERE or ORDER BY: long text areas can be neither filtered nor sorted."""
        path = self.path(raw)
        if path.type is FieldType.TEXTAREA:
            raise self.parser.error(
                "INVALID_FIELD", raw[0], f"field '{path.field}' can not be {use} in a query call"
            )
        return path

    def condition(self, raw: _RawCondition) -> Condition:
        if isinstance(raw, _RawJunction):
            parts = tuple(self.condition(part) for part in raw.parts)
            if raw.word == "NOT":
                return Not(parts[0])
            return And(parts) if raw.word == "AND" else Or(parts)
        path = self.usable_path(raw.path, "filtered")
        word = raw.op.text.upper()
        if word == "LIKE":
            return self.like(path, raw)
        values = tuple(self.literal(path, raw.op, token) for token in raw.values)
        if word == "IN":
            return InList(path, values, raw.negated)
        return Comparison(path, raw.op.text, values[0])

    def like(self, path: FieldPath, raw: _RawPredicate) -> Like:
        if path.type not in TEXT_TYPES:
            raise self.operator_error(raw.op, path)
        token = raw.values[0]
        if token.kind != "STRING":
            raise self.mismatch(path, token)
        return Like(path, re.compile(token.like, re.IGNORECASE | re.DOTALL))

    def literal(self, path: FieldPath, op: _Token, token: _Token) -> Value:
        if token.kind == "NULL":
            if op.text in _ORDERING_OPS:
                raise self.operator_error(op, path)
            return None
        if token.kind not in _ACCEPTS[path.type]:
            raise self.mismatch(path, token)
        if op.text in _ORDERING_OPS and path.type is FieldType.BOOLEAN:
            raise self.operator_error(op, path)
        if path.type in ID_TYPES:
            try:
                return _to18(token.value)
            except ValueError:
                raise self.parser.error(
                    "INVALID_QUERY_FILTER_OPERATOR", token, f"invalid ID field: {token.value}"
                ) from None
        value: Value = token.value
        return value

    def mismatch(self, path: FieldPath, token: _Token) -> SoqlError:
        quoted = "STRING" in _ACCEPTS[path.type]
        word = _TYPE_WORD.get(path.type, "string" if quoted else path.type.value)
        return self.parser.error(
            "INVALID_FIELD",
            token,
            f"value of filter criterion for field '{path.name}' must be of type {word} and "
            f"should {'' if quoted else 'not '}be enclosed in quotes",
        )

    def operator_error(self, op: _Token, path: FieldPath) -> SoqlError:
        word = _TYPE_WORD.get(path.type, path.type.value)
        return self.parser.error(
            "INVALID_QUERY_FILTER_OPERATOR", op, f"invalid operator on {word} field"
        )


def parse(soql: str, schema: SoqlSchema) -> Query:
    """Parse and check one SOQL statement; raises ``SoqlError`` and nothing else.

    An integration polls with the same statements over and over, so parsed queries are
    kept (they are immutable) per statement and schema object; a schema is expected not
    to change once queries run against it.
    """
    if len(soql) > MAX_QUERY_LENGTH:
        raise SoqlError(
            "MALFORMED_QUERY",
            f"SOQL statements cannot be longer than {MAX_QUERY_LENGTH} characters.",
        )
    return _parse_cached(soql, _SchemaKey(schema))


@dataclass(frozen=True, eq=False, slots=True)
class _SchemaKey:
    """A schema as a cache key by identity (the cache holds it, so its id stays unique)."""

    schema: SoqlSchema

    def __hash__(self) -> int:
        return id(self.schema)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SchemaKey) and other.schema is self.schema


@functools.lru_cache(maxsize=1024)
def _parse_cached(soql: str, key: _SchemaKey) -> Query:
    return _Parser(soql, key.schema).query()


# --------------------------------------------------------------------------- evaluation


def json_value(value: Any) -> Any:
    """A stored value as the REST API renders it (datetimes ``2024-01-31T10:00:00.000+0000``)."""
    if isinstance(value, datetime):
        moment = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}+0000"
    if isinstance(value, date):
        return value.isoformat()
    return value


def _normalizer(field_type: FieldType) -> Callable[[Any], Any] | None:
    """What a stored value is compared and sorted by: text ignores case, ids are 18-char."""
    if field_type in TEXT_TYPES:
        return _fold
    if field_type in ID_TYPES:
        return _id18
    return None


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _id18(value: Any) -> Any:
    if isinstance(value, str) and len(value) == 15:
        try:
            return _to18(value)
        except ValueError:
            return value
    return value


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class _Compiler:
    """Turns conditions and paths into closures over records (no per-row interpretation)."""

    def __init__(self, source: RecordSource, today: date) -> None:
        self.source = source
        self.today = today

    def getter(self, path: FieldPath) -> Getter:
        name = path.field
        if not path.hops:
            return lambda record: record.get(name)
        fk_fields = [fk for _, fk in path.hops]
        by_id = self.source.by_id

        def get(record: Record) -> Any:
            current = record
            for fk in fk_fields:
                reference = current.get(fk)
                found = by_id(reference) if reference else None
                if found is None:
                    return None
                current = found[1]
            return current.get(name)

        return get

    def predicate(self, condition: Condition) -> Predicate:
        if isinstance(condition, And):
            return _all_of([self.predicate(part) for part in condition.parts])
        if isinstance(condition, Or):
            return _any_of([self.predicate(part) for part in condition.parts])
        if isinstance(condition, Not):
            inner = self.predicate(condition.part)
            return lambda record: not inner(record)
        if isinstance(condition, Comparison) and not condition.path.hops and condition.op == "=":
            fast = _equals(condition.path, condition.value)
            if fast is not None:
                return fast
        get = self.getter(condition.path)
        if isinstance(condition, Like):
            match = condition.pattern.fullmatch
            return lambda record: isinstance(v := get(record), str) and match(v) is not None
        if isinstance(condition, InList):
            return self.in_list(get, condition)
        return self.compare(get, condition.path.type, condition.op, condition.value)

    def compare(self, get: Getter, field_type: FieldType, op: str, value: Value) -> Predicate:
        if value is None:
            if op == "=":
                return lambda record: get(record) is None
            return lambda record: get(record) is not None
        if isinstance(value, RelativeDate):
            return self.relative(get, field_type, op, value)
        norm = _normalizer(field_type) or _identity
        literal = norm(value)
        test = _OPS[op]
        if op == "!=":  # in SOQL, null differs from every value
            return lambda record: (v := get(record)) is None or test(norm(v), literal)
        return lambda record: (v := get(record)) is not None and test(norm(v), literal)

    def relative(
        self, get: Getter, field_type: FieldType, op: str, value: RelativeDate
    ) -> Predicate:
        first, end = value.bounds(self.today)
        low: date = first
        high: date = end
        if field_type is FieldType.DATETIME:
            low = datetime.combine(first, time(), tzinfo=UTC)
            high = datetime.combine(end, time(), tzinfo=UTC)
        inside: Callable[[Any], bool] = {
            "=": lambda v: low <= v < high,
            "!=": lambda v: not low <= v < high,
            "<": lambda v: v < low,
            "<=": lambda v: v < high,
            ">": lambda v: v >= high,
            ">=": lambda v: v >= low,
        }[op]
        if op == "!=":
            return lambda record: (v := get(record)) is None or inside(v)
        return lambda record: (v := get(record)) is not None and inside(v)

    def in_list(self, get: Getter, condition: InList) -> Predicate:
        member = self.member(get, condition.path.type, condition.values)
        if condition.negated:
            return lambda record: not member(record)
        return member

    def member(self, get: Getter, field_type: FieldType, values: tuple[Value, ...]) -> Predicate:
        if any(isinstance(v, RelativeDate) for v in values):
            tests = [self.compare(get, field_type, "=", v) for v in values]
            return lambda record: any(test(record) for test in tests)
        norm = _normalizer(field_type) or _identity
        wanted = {norm(v) for v in values if v is not None}
        with_null = None in values

        def member(record: Record) -> bool:
            v = get(record)
            return with_null if v is None else norm(v) in wanted

        return member

    def sort(self, rows: list[Record], keys: Sequence[OrderKey]) -> None:
        """Stable sorts, least significant key first. That key also breaks its ties by Id
        (in its own direction), so the same query pages the same way every time."""
        for position, key in enumerate(reversed(keys)):
            get = self.getter(key.path)
            norm = _normalizer(key.path.type) or _identity
            null_rank = 0 if key.nulls_first != key.descending else 2
            if position == 0:

                def sort_key(
                    record: Record,
                    get: Getter = get,
                    norm: Callable[[Any], Any] = norm,
                    null_rank: int = null_rank,
                ) -> tuple[Any, ...]:
                    v = get(record)
                    tie = record.get("Id") or ""
                    return (null_rank, 0, tie) if v is None else (1, norm(v), tie)

            else:

                def sort_key(
                    record: Record,
                    get: Getter = get,
                    norm: Callable[[Any], Any] = norm,
                    null_rank: int = null_rank,
                ) -> tuple[Any, ...]:
                    v = get(record)
                    return (null_rank,) if v is None else (1, norm(v))

            rows.sort(key=sort_key, reverse=key.descending)


def _identity(value: Any) -> Any:
    return value


def _all_of(parts: Sequence[Predicate]) -> Predicate:
    """Nested closures rather than ``all(genexpr)`` (the hot path of every scan), split in
    halves so that a long AND list stays shallow."""
    if len(parts) == 1:
        return parts[0]
    left, right = _all_of(parts[: len(parts) // 2]), _all_of(parts[len(parts) // 2 :])
    return lambda record: left(record) and right(record)


def _any_of(parts: Sequence[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    left, right = _any_of(parts[: len(parts) // 2]), _any_of(parts[len(parts) // 2 :])
    return lambda record: left(record) or right(record)


def _equals(path: FieldPath, value: Value) -> Predicate | None:
    """A direct ``field = value`` test on the root record where no normalising is needed
    (ids are stored in their 18-character form; a 15-character one is still matched)."""
    name = path.field
    if value is None or isinstance(value, RelativeDate) or path.type in TEXT_TYPES:
        return None
    if path.type in ID_TYPES:
        return lambda record: (
            (v := record.get(name)) == value
            or (isinstance(v, str) and len(v) == 15 and _id18(v) == value)
        )
    return lambda record: record.get(name) == value


def _selected_ids(condition: Condition | None) -> list[str] | None:
    """The ids a root ``Id = ...`` / ``Id IN (...)`` (alone or ANDed) restricts to."""
    if isinstance(condition, And):
        for part in condition.parts:
            ids = _selected_ids(part)
            if ids is not None:
                return ids
        return None
    if isinstance(condition, Comparison | InList) and (
        not condition.path.hops and condition.path.field == "Id"
    ):
        if isinstance(condition, Comparison) and condition.op == "=":
            return [] if condition.value is None else [str(condition.value)]
        if isinstance(condition, InList) and not condition.negated:
            return list(dict.fromkeys(str(v) for v in condition.values if v is not None))
    return None


def _candidates(query: Query, source: RecordSource, include_deleted: bool) -> Iterable[Record]:
    ids = _selected_ids(query.where)
    if ids is None:
        return source.records(query.sobject, include_deleted)
    out: list[Record] = []
    for record_id in ids:
        found = source.by_id(record_id)
        if found is None or found[0] != query.sobject:
            continue
        if include_deleted or not found[1].get("IsDeleted"):
            out.append(found[1])
    return out


@dataclass(slots=True)
class _Shape:
    """The JSON layout of one object level: plain fields and nested relationships, in the
    order the SELECT list first names them."""

    entries: dict[str, str | _Shape] = field(default_factory=dict)  # key -> field | sub-shape
    fk_fields: dict[str, str] = field(default_factory=dict)  # relationship -> fk field

    def add(self, path: FieldPath) -> None:
        level = self
        for relationship, fk_field in path.hops:
            child = level.entries.get(relationship)
            if not isinstance(child, _Shape):
                child = _Shape()
                level.entries[relationship] = child
                level.fk_fields[relationship] = fk_field
            level = child
        level.entries.setdefault(path.field, path.field)


class _Projector:
    def __init__(
        self, shape: _Shape, source: RecordSource, url_for: Callable[[str, str], str]
    ) -> None:
        self.shape = shape
        self.source = source
        self.url_for = url_for

    def row(self, sobject: str, record: Record, shape: _Shape | None = None) -> dict[str, Any]:
        level = self.shape if shape is None else shape
        out: dict[str, Any] = {
            "attributes": {"type": sobject, "url": self.url_for(sobject, str(record.get("Id")))}
        }
        for key, entry in level.entries.items():
            if isinstance(entry, str):
                out[key] = json_value(record.get(entry))
                continue
            reference = record.get(level.fk_fields[key])
            found = self.source.by_id(reference) if reference else None
            out[key] = None if found is None else self.row(found[0], found[1], entry)
        return out


def execute(
    query: Query,
    source: RecordSource,
    *,
    now: datetime,
    url_for: Callable[[str, str], str],
    include_deleted: bool = False,
) -> QueryResult:
    """Evaluate a parsed query; ``now`` fixes TODAY and the other relative date literals."""
    moment = now if now.tzinfo else now.replace(tzinfo=UTC)
    compiler = _Compiler(source, moment.astimezone(UTC).date())
    rows = _candidates(query, source, include_deleted)
    if query.where is not None:
        keep = compiler.predicate(query.where)
        matched = [record for record in rows if keep(record)]
    else:
        matched = list(rows)
    if query.counts:
        return QueryResult(1, [_aggregate(query.counts, matched, compiler)])
    if query.order_by and not query.count_only:
        compiler.sort(matched, query.order_by)
    start = query.offset or 0
    stop = None if query.limit is None else start + query.limit
    window = matched[start:stop]
    if query.count_only:
        return QueryResult(len(window))
    shape = _Shape()
    for path in query.fields:
        shape.add(path)
    projector = _Projector(shape, source, url_for)
    return QueryResult(len(window), [projector.row(query.sobject, r) for r in window])


def _aggregate(
    counts: Sequence[CountItem], rows: Sequence[Record], compiler: _Compiler
) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": {"type": "AggregateResult"}}
    for item in counts:
        get = compiler.getter(item.path)
        out[item.alias] = sum(1 for record in rows if get(record) is not None)
    return out
