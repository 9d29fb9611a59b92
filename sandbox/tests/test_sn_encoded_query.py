"""Encoded queries of the sandbox ServiceNow instance: results, ordering and refusals."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
from pysnc import ServiceNowClient

from bridge_sandbox.servicenow.encoded_query import (
    MAX_QUERY_LENGTH,
    EncodedQueryError,
    SnFieldType,
    parse,
    run,
)

T = SnFieldType
FIELDS: dict[str, dict[str, tuple[SnFieldType, str | None]]] = {
    "task": {
        "sys_id": (T.SYS_ID, None),
        "number": (T.STRING, None),
        "short_description": (T.STRING, None),
        "priority": (T.INTEGER, None),
        "score": (T.DECIMAL, None),
        "active": (T.BOOLEAN, None),
        "state": (T.CHOICE, None),
        "assigned_to": (T.REFERENCE, "sys_user"),
        "opened_at": (T.GLIDE_DATE_TIME, None),
        "due": (T.GLIDE_DATE, None),
    },
    "sys_user": {
        "sys_id": (T.SYS_ID, None),
        "user_name": (T.STRING, None),
        "name": (T.STRING, None),
        "active": (T.BOOLEAN, None),
    },
    "task_note": {
        "sys_id": (T.SYS_ID, None),
        "task": (T.REFERENCE, "task"),
        "kind": (T.STRING, None),
    },
}

TASK_COLUMNS = [
    "sys_id", "number", "short_description", "priority", "score",
    "active", "state", "assigned_to", "opened_at", "due",
]  # fmt: skip
TASKS = """
t1|INC001|Printer on fire|1|2.5|true|1|u1|2024-01-01 09:00:00|2024-01-05
t2|INC002|Email down|2|10|true|2|u2|2024-01-15 12:30:00|2024-01-20
t3|INC003|printer jam|3||false|7||2024-01-31 23:59:59|
t4|INC004|VPN slow|2|-1|true|1|u1|2024-02-01 00:00:00|2024-02-10
t5|INC005|||0.5|false||u3||
t6|INC010|Email, phone|10|3|true|2|u2|2023-12-31 23:00:00|2024-01-01
"""
USERS = [
    {"sys_id": "u1", "user_name": "bob", "name": "Bob Jones", "active": "true"},
    {"sys_id": "u2", "user_name": "alice", "name": "Alice Smith", "active": "true"},
    {"sys_id": "u3", "user_name": "carol", "name": "Carol White", "active": "false"},
]
NOTES = [
    {"sys_id": "n1", "task": "t1", "kind": "call"},
    {"sys_id": "n2", "task": "t1", "kind": "email"},
    {"sys_id": "n3", "task": "t2", "kind": "call"},
    {"sys_id": "n4", "task": "t4", "kind": "email"},
]


class Schema:
    def field_type(self, table: str, field: str) -> SnFieldType | None:
        entry = FIELDS.get(table, {}).get(field)
        return entry[0] if entry else None

    def reference_target(self, table: str, field: str) -> str | None:
        entry = FIELDS.get(table, {}).get(field)
        return entry[1] if entry else None


class Source:
    """Records by table, counting full scans so tests can see when an index was used."""

    def __init__(self, tables: dict[str, list[dict[str, str]]]) -> None:
        self.tables = tables
        self.by_id = {t: {row["sys_id"]: row for row in rows} for t, rows in tables.items()}
        self.scans: Counter[str] = Counter()

    def rows(self, table: str) -> Iterable[Mapping[str, str]]:
        self.scans[table] += 1
        return self.tables.get(table, [])

    def get(self, table: str, sys_id: str) -> Mapping[str, str] | None:
        return self.by_id.get(table, {}).get(sys_id)


SCHEMA = Schema()


def make_source() -> Source:
    lines = TASKS.strip().splitlines()
    tasks = [dict(zip(TASK_COLUMNS, line.split("|"), strict=True)) for line in lines]
    return Source({"task": tasks, "sys_user": list(USERS), "task_note": list(NOTES)})


def ids(query: str, *, strict: bool = False, source: Source | None = None) -> list[str]:
    rows = run(parse(query, "task", SCHEMA), "task", source or make_source(), strict=strict)
    return [row["sys_id"] for row in rows]


ALL = ["t1", "t2", "t3", "t4", "t5", "t6"]
JANUARY = (
    "January 2024@javascript:gs.dateGenerate('2024-01-01','start')"
    "@javascript:gs.dateGenerate('2024-01-31','end')"
)


SELECTIONS: list[tuple[str, list[str]]] = [
    ("", ALL),
    # booleans
    ("active=true", ["t1", "t2", "t4", "t6"]),
    ("active=1", ["t1", "t2", "t4", "t6"]),
    ("active!=true", ["t3", "t5"]),
    # numbers compare by value, not as text
    ("priority=2", ["t2", "t4"]),
    ("priority=2.0", ["t2", "t4"]),
    ("priority!=2", ["t1", "t3", "t5", "t6"]),
    ("priority>2", ["t3", "t6"]),
    ("priority>=2", ["t2", "t3", "t4", "t6"]),
    ("priority<2", ["t1"]),
    ("priority<=2", ["t1", "t2", "t4"]),
    ("score<1", ["t4", "t5"]),
    ("scoreBETWEEN0@3", ["t1", "t5", "t6"]),
    ("priorityIN1,10", ["t1", "t6"]),
    ("priorityNOT IN1,2", ["t3", "t5", "t6"]),
    # text and choices compare as text
    ("number>INC003", ["t4", "t5", "t6"]),
    ("stateIN1,7", ["t1", "t3", "t4"]),
    ("stateIN,7", ["t3", "t5"]),
    ("stateNOT IN1,2", ["t3", "t5"]),
    ("short_description=Email down", ["t2"]),
    ("short_description=email down", []),
    ("short_descriptionLIKEprinter", ["t1", "t3"]),
    ("short_descriptionNOT LIKEprinter", ["t2", "t4", "t5", "t6"]),
    ("short_descriptionSTARTSWITHemail", ["t2", "t6"]),
    ("short_descriptionENDSWITHSLOW", ["t4"]),
    ("short_descriptionLIKE, ph", ["t6"]),
    ("short_descriptionCONTAINSprinter", ["t1", "t3"]),
    ("short_descriptionDOES NOT CONTAINprinter", ["t2", "t4", "t5", "t6"]),
    ("prioritySAMEASstate", ["t1", "t2", "t5"]),
    ("priorityNSAMEASstate", ["t3", "t4", "t6"]),
    ("prioritySAMEASbogus", ALL),
    ("priorityANYTHING", ALL),
    ("short_description=x'; DROP TABLE task;--", []),
    # empty values
    ("short_descriptionISEMPTY", ["t5"]),
    ("short_description=", ["t5"]),
    ("short_descriptionEMPTYSTRING", ["t5"]),
    ("short_description!=", ["t1", "t2", "t3", "t4", "t6"]),
    ("assigned_toISNOTEMPTY", ["t1", "t2", "t4", "t5", "t6"]),
    # date-times
    ("opened_at>2024-01-15 12:30:00", ["t3", "t4"]),
    ("opened_at>=2024-01-15 12:30:00", ["t2", "t3", "t4"]),
    ("opened_at<2024-01-01", ["t6"]),
    ("opened_at=2024-02-01 00:00:00", ["t4"]),
    ("opened_at>=javascript:gs.dateGenerate('2024-01-31','end')", ["t3", "t4"]),
    (
        "opened_atBETWEENjavascript:gs.dateGenerate('2024-01-01','00:00:00')"
        "@javascript:gs.dateGenerate('2024-01-31','23:59:59')",
        ["t1", "t2", "t3"],
    ),
    (f"opened_atON{JANUARY}", ["t1", "t2", "t3"]),
    (f"opened_atNOTON{JANUARY}", ["t4", "t5", "t6"]),
    # dates
    ("due<2024-01-06", ["t1", "t6"]),
    ("due=2024-01-20", ["t2"]),
    ("due>javascript:gs.dateGenerate('2024-01-20','10:00:00')", ["t4"]),
    # ^OR binds tighter than ^
    ("active=false^ORpriority=1^state=1", ["t1"]),
    ("state=7^ORstate=2^active=true", ["t2", "t6"]),
    # ^NQ: a new query OR-ed with the previous ones; a record comes once
    ("priority=1^NQstate=7^ORstate=2^active=true", ["t1", "t2", "t6"]),
    ("active=true^NQpriority=2", ["t1", "t2", "t4", "t6"]),
    # ordering
    ("active=true^ORDERBYDESCpriority", ["t6", "t2", "t4", "t1"]),
    ("ORDERBYpriority^ORDERBYDESCnumber", ["t5", "t1", "t4", "t2", "t3", "t6"]),
    ("ORDERBYDESCsys_id", ["t6", "t5", "t4", "t3", "t2", "t1"]),
    ("opened_atISNOTEMPTY^ORDERBYopened_at", ["t6", "t1", "t2", "t3", "t4"]),
    ("ORDERBYDESCscore^scoreISNOTEMPTY", ["t2", "t6", "t1", "t5", "t4"]),
    ("priority=2^EQ^ORDERBYDESCnumber", ["t4", "t2"]),
    # sys_id keyset paging
    ("sys_id>t3^ORDERBYsys_id", ["t4", "t5", "t6"]),
    ("sys_id>=t5", ["t5", "t6"]),
    # sys_id lookups (the query's order)
    ("sys_id=t4", ["t4"]),
    ("sys_id=t9", []),
    ("sys_idINt5,t2,t9,t5", ["t5", "t2"]),
    ("sys_idINt2,t5^active=true", ["t2"]),
    ("sys_id=t2^NQsys_id=t1", ["t2", "t1"]),
    ("sys_idNOT INt1,t2,t3", ["t4", "t5", "t6"]),
    # dot-walking through reference fields
    ("assigned_to.user_name=bob", ["t1", "t4"]),
    ("assigned_to.active=false", ["t5"]),
    ("assigned_to.nameLIKEsmith", ["t2", "t6"]),
    (
        "assigned_toISNOTEMPTY^ORDERBYassigned_to.user_name^ORDERBYnumber",
        ["t2", "t6", "t1", "t4", "t5"],
    ),
    # JOIN and RLQUERY
    ("JOINtask.sys_id=task_note.task!kind=call", ["t1", "t2"]),
    ("JOINtask.sys_id=task_note.task!", ["t1", "t2", "t4"]),
    ("active=true^JOINtask.sys_id=task_note.task!kind=email^ORDERBYDESCnumber", ["t4", "t1"]),
    ("JOINtask.sys_id=task_note.task!kind=call^NQpriority=10", ["t1", "t2", "t6"]),
    ("priority=10^ORJOINtask.sys_id=task_note.task!kind=email", ["t1", "t4", "t6"]),
    ("RLQUERYtask_note.task,>=1^ENDRLQUERY", ["t1", "t2", "t4"]),
    ("RLQUERYtask_note.task,=0^ENDRLQUERY", ["t3", "t5", "t6"]),
    ("RLQUERYtask_note.task,>1^ENDRLQUERY", ["t1"]),
    ("RLQUERYtask_note.task,>=1,m2m^kind=email^ENDRLQUERY^priority=2", ["t4"]),
    # conditions on unknown fields are ignored (lenient instance)
    ("bogus=1", ALL),
    ("active=true^bogus=1", ["t1", "t2", "t4", "t6"]),
    ("bogus=1^ORpriority=1", ["t1"]),
    ("assigned_to.nope=x^priority=2", ["t2", "t4"]),
    ("ORDERBYbogus^priority=2", ["t2", "t4"]),
]


@pytest.mark.parametrize(("query", "expected"), SELECTIONS)
def test_query_selects_and_orders(query: str, expected: list[str]) -> None:
    assert ids(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("bogus=1", []),
        ("active=true^ORbogus=1", []),
        ("number.x=1", []),
        ("prioritySAMEASbogus", []),
        ("JOINtask.sys_id=task_note.nope!", []),
        ("active=true^ORDERBYbogus", ["t1", "t2", "t4", "t6"]),  # sort fields are not conditions
        ("active=true", ["t1", "t2", "t4", "t6"]),
    ],
)
def test_strict_instance_returns_no_rows_for_unknown_fields(
    query: str, expected: list[str]
) -> None:
    assert ids(query, strict=True) == expected


def test_parse_reports_unknown_fields_and_order() -> None:
    query = parse(
        "bogus=1^assigned_to.nope=2^ORbogus=3^priority.x=1^JOINtask.sys_id=task_note.nope!"
        "^ORDERBYDESCpriority^ORDERBYmissing^ORDERBYnumber",
        "task",
        SCHEMA,
    )
    assert query.invalid_fields == ["bogus", "assigned_to.nope", "priority.x", "task_note.nope"]
    assert query.order_by == [("priority", True), ("number", False)]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("active=true^ORDERBYsys_id;DROP", "ORDERBY needs a field name"),
        ("active=true;DROP TABLE task", "is not a valid boolean"),
        ("priority=1^", "empty condition"),
        ("^priority=1", "empty condition"),
        ("priority=1^^state=1", "empty condition"),
        ("priority=1^NQ", "empty condition"),
        ("ORpriority=1", "^OR must follow a condition"),
        ("NQpriority=1", "^NQ must follow a condition"),
        ("ORDERBYnumber^NQpriority=1", "^NQ must follow a condition"),
        ("prioritySIMILAR1", "unknown operator after 'priority'"),
        ("priority", "unknown operator"),
        ("Priority=1", "expected <field><operator><value>"),
        ("=1", "expected <field><operator><value>"),
        ("GROUPBYstate", "expected <field><operator><value>"),
        ("priority=1^\x00", "expected <field><operator><value>"),
        ("priority=abc", "'abc' is not a valid number"),
        ("priorityIN1,two", "'two' is not a valid number"),
        ("score>NaN", "is not a valid number"),
        ("opened_at>yesterday", "is not a valid date-time"),
        ("opened_at>2024-02-30 00:00:00", "is not a valid date-time"),
        ("due<2024-13-01", "is not a valid date"),
        ("opened_at>javascript:gs.beginningOfToday()", "unsupported value"),
        ("short_description=javascript:gs.getUserID()", "unsupported value"),
        ("short_descriptionLIKEjavascript:alert(1)", "unsupported value"),
        ("priorityBETWEEN1", "BETWEEN needs <low>@<high>"),
        ("priorityBETWEEN1@2@3", "BETWEEN needs <low>@<high>"),
        ("priorityON1@2@3", "applies to date fields only"),
        ("opened_atON2024-01-01", "needs <label>@<start>@<end>"),
        ("dueISEMPTYx", "takes no value"),
        ("dueANYTHINGx", "takes no value"),
        ("prioritySAMEAS", "SAMEAS needs a field name"),
        ("priorityNSAMEASstate;x", "NSAMEAS needs a field name"),
        ("RLQUERYtask_note.task,>=1^kind=call", "RLQUERY without ^ENDRLQUERY"),
        ("priority=1^ENDRLQUERY", "unexpected ^ENDRLQUERY"),
        ("RLQUERYtask_note.task>=1^ENDRLQUERY", "expected RLQUERY<table>.<field>"),
        ("RLQUERYtask_note.task,>=1^ORDERBYkind^ENDRLQUERY", "ORDERBY inside RLQUERY"),
        ("RLQUERYtask_note.task,>=1^EQ^ENDRLQUERY", "unexpected ^EQ"),
        ("JOINtask.sys_id=task_note.task", "expected JOIN<table>.<field>=<table>.<field>!"),
        ("JOINsys_user.sys_id=task_note.task!", "JOIN must start from table 'task'"),
        ("priority=1^EQ^state=1", "only ORDERBY may follow ^EQ"),
        ("ORDERBY", "ORDERBY needs a field name"),
        ("ORDERBYDESC", "ORDERBY needs a field name"),
        ("RLQUERYtask_note.task,>=1^" * 10 + "ENDRLQUERY^" * 10, "nested more than"),
        ("a" * (MAX_QUERY_LENGTH + 1), "longer than"),
    ],
)
def test_malformed_query_is_refused(query: str, fragment: str) -> None:
    with pytest.raises(EncodedQueryError) as caught:
        parse(query, "task", SCHEMA)
    assert fragment in caught.value.message


def test_error_message_quotes_a_bounded_excerpt() -> None:
    with pytest.raises(EncodedQueryError) as caught:
        parse("priority=" + "9" * 5_000 + "x", "task", SCHEMA)
    assert len(caught.value.message) < 300


def test_run_refuses_a_query_parsed_for_another_table() -> None:
    with pytest.raises(EncodedQueryError, match="parsed for table 'task'"):
        run(parse("active=true", "task", SCHEMA), "sys_user", make_source(), strict=False)


def test_no_query_returns_every_row_in_insertion_order() -> None:
    assert [r["sys_id"] for r in run(None, "task", make_source(), strict=True)] == ALL


def test_matches_tests_one_row() -> None:
    source = make_source()
    query = parse("assigned_to.user_name=alice^priority>2", "task", SCHEMA)
    assert [row["sys_id"] for row in source.tables["task"] if query.matches(row, source)] == ["t6"]


def test_sys_id_lookups_do_not_scan_the_table() -> None:
    source = make_source()
    assert ids("sys_idINt2,t5^active=true^ORDERBYnumber", source=source) == ["t2"]
    assert ids("sys_id=t1^NQsys_id=t3", source=source) == ["t1", "t3"]
    assert source.scans["task"] == 0
    assert ids("sys_id=t1^NQactive=false", source=source) == ["t1", "t3", "t5"]
    assert source.scans["task"] == 1


def test_related_table_is_read_once_per_run() -> None:
    source = make_source()
    assert ids("RLQUERYtask_note.task,>=1^ENDRLQUERY^ORJOINtask.sys_id=task_note.task!",
               source=source) == ["t1", "t2", "t4"]  # fmt: skip
    assert source.scans == Counter({"task": 1, "task_note": 2})


def _pysnc_record() -> Any:
    client = ServiceNowClient("https://sandbox.invalid", ("user", "password"))
    return client.GlideRecord("task")


def _active_high_or_open(gr: Any) -> None:
    gr.add_active_query()
    condition = gr.add_query("priority", ">", "1")
    condition.add_or_condition("state", "1")
    gr.add_not_null_query("due")
    gr.order_by_desc("number")


def _empty_due_printers(gr: Any) -> None:
    gr.add_null_query("due")
    gr.add_query("short_description", "LIKE", "printer")


def _numbers_and_encoded(gr: Any) -> None:
    gr.add_query("number", "IN", "INC002,INC010")
    gr.add_encoded_query("priority>=2")


def _by_sys_id(gr: Any) -> None:
    gr.add_query("sys_id", "t4")


def _ordered_by_score(gr: Any) -> None:
    gr.add_query("score", "!=", "10")
    gr.order_by("score")


def _joined_calls(gr: Any) -> None:
    gr.add_join_query("task_note", join_table_field="task").add_query("kind", "call")


def _active_with_notes(gr: Any) -> None:
    gr.add_active_query()
    gr.add_rl_query("task_note", "task", ">=1", True)


def _with_email_notes(gr: Any) -> None:
    gr.add_rl_query("task_note", "task", ">0").add_query("kind", "email")


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (_active_high_or_open, ["t6", "t4", "t2", "t1"]),
        (_empty_due_printers, ["t3"]),
        (_numbers_and_encoded, ["t2", "t6"]),
        (_by_sys_id, ["t4"]),
        (_ordered_by_score, ["t3", "t4", "t5", "t1", "t6"]),
        (_joined_calls, ["t1", "t2"]),
        (_active_with_notes, ["t1", "t2", "t4"]),
        (_with_email_notes, ["t1", "t4"]),
    ],
)
def test_queries_built_by_pysnc(build: Callable[[Any], None], expected: list[str]) -> None:
    gr = _pysnc_record()
    build(gr)
    encoded = gr.get_encoded_query()
    assert ids(encoded) == expected, encoded


def test_filter_time_for_10000_rows() -> None:
    tasks = [
        {
            "sys_id": f"{n:032x}",
            "number": f"INC{n:07d}",
            "short_description": "printer" if n % 7 == 0 else "email",
            "priority": str(n % 5),
            "score": "",
            "active": "true" if n % 2 else "false",
            "state": str(n % 8),
            "assigned_to": "u1",
            "opened_at": f"2024-01-{n % 28 + 1:02d} 10:00:00",
            "due": "",
        }
        for n in range(10_000)
    ]
    source = Source({"task": tasks, "sys_user": list(USERS), "task_note": []})
    query = parse(
        "active=true^priority>=2^ORstate=7^short_descriptionLIKEprinter"
        "^opened_at>=javascript:gs.dateGenerate('2024-01-05','00:00:00')^ORDERBYDESCopened_at",
        "task",
        SCHEMA,
    )
    started = time.perf_counter()
    rows = run(query, "task", source, strict=False)
    elapsed = time.perf_counter() - started
    print(f"\nencoded query over 10,000 rows: {elapsed * 1000:.1f} ms, {len(rows)} matched")


def test_mutated_queries_parse_or_fail_cleanly() -> None:
    """Splicing fragments into valid queries yields results or EncodedQueryError, nothing else."""
    fragments = ["^", "^OR", "^NQ", "^EQ", "ORDERBY", "JOIN", "RLQUERY", "^ENDRLQUERY", "!", ",",
                 "@", ".", "=", "<", "IN", "NOT IN", "ISEMPTY", "BETWEEN", "ON", "javascript:",
                 "'", ";", "\x00", "1e999999", "NaN"]  # fmt: skip
    rng, source, outcomes = random.Random(7), make_source(), Counter[str]()
    for _ in range(3_000):
        query = rng.choice(SELECTIONS)[0]
        for _ in range(rng.randint(1, 3)):
            pos = rng.randint(0, len(query))
            spliced = rng.choice([*fragments, rng.choice(SELECTIONS)[0]])
            query = query[:pos] + spliced + query[pos + rng.randint(0, 4) :]
        try:
            rows = run(parse(query, "task", SCHEMA), "task", source, strict=False)
        except EncodedQueryError:
            outcomes["refused"] += 1
        else:
            outcomes["answered"] += 1
            assert all(row in source.tables["task"] for row in rows), query
    assert outcomes["refused"] > 0
    assert outcomes["answered"] > 0
