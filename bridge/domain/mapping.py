"""The mapping tables (``mappings/*.yaml``): crosswalk, policies and rules.

Loading validates everything at once and reports every problem with file, line and key, so
a broken table is fixed in one pass. The engine reads only the typed ``Tables``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.domain import (
    DIRECTION_STATES,
    NO_CORRELATION,
    QUEUE_TRIGGERS,
    AgentWorkPatchStatus,
    CancelReason,
    CorrelationState,
    Direction,
    InteractionState,
    Operation,
    RouteCancelReason,
    RoutingType,
    SegmentKind,
    SegmentOutcome,
    Trigger,
)
from bridge.domain.sf_ids import is_valid, to18
from bridge.errors import ConfigError

CROSSWALK_FILE = "crosswalk.yaml"
POLICIES_FILE = "policies.yaml"
RULES_FILE = "rules.yaml"

_SYS_ID = re.compile(r"^[0-9a-f]{32}$")
M = TypeVar("M", bound=BaseModel)

# --- problems ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the tables (or with the live systems they name)."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "key": self.key, "message": self.message}


# --- table models -----------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueMap(_Strict):
    """A Salesforce queue (Group id) and its AWA queue (sys_id and/or external_id)."""

    name: str
    direction: Direction
    sf_queue_id: str
    sn_queue_sys_id: str | None = None
    sn_external_id: str | None = None
    eligible_agents: list[str] | None = None  # user names; None = every mapped user
    fallback_queue: str | None = None  # a queue name

    @property
    def sn_queue_ref(self) -> str:
        """How the Offer Work API names this queue: the sys_id, else the external id."""
        return self.sn_queue_sys_id or self.sn_external_id or ""


class UserMap(_Strict):
    name: str
    sf_user_id: str
    sn_user_sys_id: str


class ChannelMap(_Strict):
    name: str
    sf_service_channel_id: str
    sn_document_table: str
    sn_service_channel_sys_id: str
    sf_work_item_type: str  # MessagingSession | Case


class Crosswalk(_Strict):
    queues: list[QueueMap]
    users: list[UserMap]
    channels: list[ChannelMap]


class Policies(_Strict):
    """How offers are made; every value has a default so a short file is enough."""

    offer_timeout_default: int = Field(30, gt=0)
    offer_timeout_from_push_timeout: bool = True
    reoffer_limit: int = Field(3, ge=0)  # offers on one queue before its fallback queue
    fallback_queue: str | None = None  # used when a queue names none
    allowed_to_decline: bool = True
    enable_auto_assign: bool = False
    display_option: Literal["card_only", "card_and_tab"] = "card_and_tab"
    after_timeout_presence: str | None = None  # awa_presence_state sys_id
    transfer_type: Literal["blind"] = "blind"
    # a transfer to another queue: AWA queue transfer, then the bridge's offer on it
    transfer_to_queue: Literal["queue_then_offer"] = "queue_then_offer"
    orphan_psr_deletion: Literal["route_api", "rest"] = "rest"
    capacity_weight: float = Field(1.0, gt=0)


# What each operation accepts under ``with`` in a rule (the engine fills the rest).
OFFER_TARGETS = ("queue_agents", "event_agent")
TRANSFER_TARGETS = ("queue_agents", "event_agent")
CANCEL_WHICH = ("pending", "active", "event")  # event: the work item the event reports
AGENT_WORK_WHICH = ("current", "event")  # event: the AgentWork the event reports
_WITH_CHOICES: dict[Operation, dict[str, tuple[str, ...]]] = {
    Operation.CREATE_AGENT_WORK: {},
    Operation.DELETE_PSR: {},
    Operation.ROUTE: {"routingType": tuple(RoutingType)},
    Operation.CANCEL_ROUTE: {"cancelReason": tuple(RouteCancelReason)},
    Operation.ASSIGN_AGENT_WORK: {},
    Operation.UPDATE_AGENT_WORK: {
        "status": tuple(AgentWorkPatchStatus),
        "agent_work": AGENT_WORK_WHICH,
    },
    Operation.CREATE_INTERACTION: {},
    Operation.OFFER: {"target": OFFER_TARGETS, "enable_auto_assign": ("true", "false")},
    Operation.TRANSFER: {"target": TRANSFER_TARGETS, "enable_auto_assign": ("true", "false")},
    Operation.CANCEL_WORK_ITEM: {
        "which": CANCEL_WHICH,
        "cancel_reason": tuple(r.value for r in CancelReason if r.value),
    },
    Operation.CLOSE_INTERACTION: {
        "state": (InteractionState.CLOSED_COMPLETE, InteractionState.CLOSED_ABANDONED),
    },
}


class Action(_Strict):
    op: Operation
    with_: dict[str, str | bool] = Field(default_factory=dict, alias="with")

    def option(self, key: str, default: str) -> str:
        """A ``with`` value as text (the rule's, else ``default``)."""
        return _text(self.with_.get(key, default))


def _text(value: str | bool) -> str:
    """A ``with`` value as text; YAML booleans read as ``true``/``false``."""
    return str(value).lower() if isinstance(value, bool) else value


class Rule(_Strict):
    """(direction, trigger, correlation states) → segment changes, commands, next state."""

    id: str
    direction: Direction
    triggers: list[Trigger] = Field(min_length=1)
    states: list[str] = Field(min_length=1)
    close_segment: SegmentOutcome | None = None  # outcome given to the open segment
    open_segment: SegmentKind | None = None
    actions: list[Action] = Field(default_factory=list)  # empty = nothing to do
    next_state: CorrelationState | None = None  # None = unchanged
    result: Literal["processed", "skipped", "echo"] = "processed"
    note: str = ""

    @field_validator("states")
    @classmethod
    def _known_states(cls, states: list[str]) -> list[str]:
        known = {NO_CORRELATION, *(s.value for s in CorrelationState)}
        bad = [s for s in states if s not in known]
        if bad:
            raise ValueError(f"unknown state(s) {bad}; known: {', '.join(sorted(known))}")
        return states


class RuleFile(_Strict):
    rules: list[Rule]


# --- the typed tables -------------------------------------------------------------------


class Tables:
    """The loaded tables with the indexes the engine looks things up by."""

    def __init__(
        self,
        crosswalk: Crosswalk,
        policies: Policies,
        rules: Sequence[Rule],
        crosswalk_lines: Mapping[tuple[str | int, ...], int] | None = None,
    ) -> None:
        self.crosswalk = crosswalk
        self.crosswalk_lines = dict(crosswalk_lines or {})
        self.policies = policies
        self.rules = tuple(rules)
        self._queue_sf = {_sf_key(q.sf_queue_id): q for q in crosswalk.queues}
        self._queue_sn: dict[str, QueueMap] = {}
        for q in crosswalk.queues:
            for ref in (q.sn_queue_sys_id, q.sn_external_id):
                if ref:
                    self._queue_sn[ref] = q
        self._queue_name = {q.name: q for q in crosswalk.queues}
        self._user_sf = {_sf_key(u.sf_user_id): u for u in crosswalk.users}
        self._user_sn = {u.sn_user_sys_id: u for u in crosswalk.users}
        self._user_name = {u.name: u for u in crosswalk.users}
        self._channel_sf = {_sf_key(c.sf_service_channel_id): c for c in crosswalk.channels}
        self._rules: dict[tuple[Direction, Trigger, str], Rule] = {}
        for rule in self.rules:
            for trigger in rule.triggers:
                for state in rule.states:
                    self._rules.setdefault((rule.direction, trigger, state), rule)

    def queue_by_sf(self, sf_queue_id: str | None) -> QueueMap | None:
        return self._queue_sf.get(_sf_key(sf_queue_id)) if sf_queue_id else None

    def queue_by_sn(self, ref: str | None) -> QueueMap | None:
        return self._queue_sn.get(ref) if ref else None

    def user_by_sf(self, sf_user_id: str | None) -> UserMap | None:
        return self._user_sf.get(_sf_key(sf_user_id)) if sf_user_id else None

    def user_by_sn(self, sys_id: str | None) -> UserMap | None:
        return self._user_sn.get(sys_id) if sys_id else None

    def channel_by_sf(self, sf_channel_id: str | None) -> ChannelMap | None:
        return self._channel_sf.get(_sf_key(sf_channel_id)) if sf_channel_id else None

    def rule_for(self, direction: Direction, trigger: Trigger, state: str) -> Rule | None:
        return self._rules.get((direction, trigger, state))

    def queue_agents(self, queue: QueueMap) -> list[UserMap]:
        """The users eligible on a queue, in table order."""
        if queue.eligible_agents is None:
            return list(self.crosswalk.users)
        return [self._user_name[n] for n in queue.eligible_agents if n in self._user_name]

    def fallback_for(self, queue: QueueMap) -> QueueMap | None:
        name = queue.fallback_queue or self.policies.fallback_queue
        fallback = self._queue_name.get(name) if name else None
        return fallback if fallback is not None and fallback.name != queue.name else None


@functools.lru_cache(maxsize=1 << 16)
def _sf_key(record_id: str | None) -> str:
    """Salesforce ids compare in their 18-character form (15 and 18 name the same record)."""
    if not record_id:
        return ""
    try:
        return to18(record_id)
    except ValueError:
        return record_id


# --- YAML with line numbers -------------------------------------------------------------

Path_ = tuple[str | int, ...]


def _line_index(
    node: yaml.Node, path: Path_ = (), out: dict[Path_, int] | None = None
) -> dict[Path_, int]:
    """Every key path of a YAML document → the 1-based line it starts on."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _line_index(item, (*path, i), out)
    return out


def _duplicate_keys(node: yaml.Node, path: Path_ = ()) -> Iterable[tuple[Path_, int, int]]:
    """(key path, line, line of the first occurrence) of every repeated mapping key."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                yield (*path, key_node.value), line, seen[key_node.value]
            seen.setdefault(key_node.value, line)
            yield from _duplicate_keys(value_node, (*path, key_node.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, i))


# The C loader when PyYAML was built with libyaml: the tables load in milliseconds.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Doc:
    """One YAML file: its data, and the line of every key path."""

    def __init__(self, directory: Path, name: str, problems: list[Problem]) -> None:
        self.name = name
        self.data: Any = None
        self.lines: dict[Path_, int] = {}
        self._problems = problems
        self.readable = False
        path = directory / name
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(Problem(name, None, "", f"cannot read {path}: {exc.strerror}"))
            return
        self.readable = True
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            self.data = loader.construct_document(node) if node is not None else None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problems.append(Problem(name, line, "", f"not valid YAML: {exc}"))
            self.readable = False
            return
        finally:
            loader.dispose()
        if node is not None:
            self.lines = _line_index(node)
            for key, line, first in _duplicate_keys(node):
                where = ".".join(str(p) for p in key)
                problems.append(
                    Problem(name, line, where, f"duplicate key (first at line {first})")
                )

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that the file has."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def problem(self, path: Path_, message: str) -> None:
        key = ".".join(str(p) for p in path)
        self._problems.append(Problem(self.name, self.line(path), key, message))

    def validate(self, model: type[M]) -> M | None:
        if self.data is None:
            if self.lines or self.readable:
                self.problem((), "the file is empty")
            return None
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            for err in exc.errors():
                self.problem(tuple(err["loc"]), err["msg"])
            return None


# --- cross-checks -----------------------------------------------------------------------

_SF_PREFIX = {"User": "005", "Group": "00G", "ServiceChannel": "0N9"}


def _check_sf_id(doc: _Doc, path: Path_, value: str, sobject: str) -> None:
    if not is_valid(value):
        doc.problem(path, f"{value!r} is not a valid 15/18-character Salesforce id")
    elif not value.startswith(_SF_PREFIX[sobject]):
        doc.problem(path, f"{value!r} is not a {sobject} id (prefix {_SF_PREFIX[sobject]})")


def _check_sys_id(doc: _Doc, path: Path_, value: str | None) -> None:
    if value is not None and not _SYS_ID.match(value):
        doc.problem(path, f"{value!r} is not a ServiceNow sys_id (32 lower-case hex)")


def _unique(doc: _Doc, section: str, rows: Sequence[Any], attr: str, what: str) -> None:
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        value = getattr(row, attr)
        if value is None:
            continue
        key = _sf_key(value) if attr.startswith("sf_") else value
        if key in seen:
            doc.problem(
                (section, i, attr), f"{what} {value!r} mapped twice (also {section}[{seen[key]}])"
            )
        else:
            seen[key] = i


def _check_crosswalk(doc: _Doc, cw: Crosswalk) -> None:
    names = {q.name for q in cw.queues}
    users = {u.name for u in cw.users}
    for i, q in enumerate(cw.queues):
        _check_sf_id(doc, ("queues", i, "sf_queue_id"), q.sf_queue_id, "Group")
        _check_sys_id(doc, ("queues", i, "sn_queue_sys_id"), q.sn_queue_sys_id)
        if not (q.sn_queue_sys_id or q.sn_external_id):
            doc.problem(("queues", i), "needs sn_queue_sys_id or sn_external_id")
        if q.fallback_queue is not None and q.fallback_queue not in names:
            doc.problem(("queues", i, "fallback_queue"), f"unknown queue {q.fallback_queue!r}")
        for j, agent in enumerate(q.eligible_agents or []):
            if agent not in users:
                doc.problem(("queues", i, "eligible_agents", j), f"unknown user {agent!r}")
    for i, u in enumerate(cw.users):
        _check_sf_id(doc, ("users", i, "sf_user_id"), u.sf_user_id, "User")
        _check_sys_id(doc, ("users", i, "sn_user_sys_id"), u.sn_user_sys_id)
    for i, c in enumerate(cw.channels):
        _check_sf_id(
            doc, ("channels", i, "sf_service_channel_id"), c.sf_service_channel_id, "ServiceChannel"
        )
        _check_sys_id(
            doc, ("channels", i, "sn_service_channel_sys_id"), c.sn_service_channel_sys_id
        )
    for section, rows, attrs in (
        ("queues", cw.queues, ("name", "sf_queue_id", "sn_queue_sys_id", "sn_external_id")),
        ("users", cw.users, ("name", "sf_user_id", "sn_user_sys_id")),
        ("channels", cw.channels, ("name", "sf_service_channel_id")),
    ):
        for attr in attrs:
            _unique(doc, section, rows, attr, attr.replace("_", " "))


def _check_policies(doc: _Doc, policies: Policies, cw: Crosswalk | None) -> None:
    _check_sys_id(doc, ("after_timeout_presence",), policies.after_timeout_presence)
    names = {q.name for q in cw.queues} if cw else set()
    if cw is not None and policies.fallback_queue and policies.fallback_queue not in names:
        doc.problem(("fallback_queue",), f"unknown queue {policies.fallback_queue!r}")


def _check_rules(doc: _Doc, rules: Sequence[Rule]) -> None:
    ids: dict[str, int] = {}
    keys: dict[tuple[str, str, str], str] = {}
    for i, rule in enumerate(rules):
        if rule.id in ids:
            doc.problem(("rules", i, "id"), f"duplicate rule id {rule.id!r}")
        ids.setdefault(rule.id, i)
        for trigger in rule.triggers:
            for state in rule.states:
                key = (rule.direction.value, trigger.value, state)
                if key in keys:
                    doc.problem(
                        ("rules", i, "states"),
                        f"duplicate rule: {' '.join(key)} is already handled by {keys[key]!r}",
                    )
                keys.setdefault(key, rule.id)
        for j, action in enumerate(rule.actions):
            allowed = _WITH_CHOICES[action.op]
            for name, value in action.with_.items():
                where = ("rules", i, "actions", j, "with", name)
                if name not in allowed:
                    doc.problem(
                        where,
                        f"{action.op} takes no parameter {name!r}"
                        f" (takes: {', '.join(allowed) or 'none'})",
                    )
                elif _text(value) not in allowed[name]:
                    doc.problem(where, f"{value!r} is not one of {', '.join(allowed[name])}")
        allowed_states = {NO_CORRELATION, *DIRECTION_STATES[rule.direction]}
        for state in rule.states:
            if state not in allowed_states:
                doc.problem(("rules", i, "states"), f"{rule.direction} never is {state!r}")
        _check_agent_needed(doc, i, rule)
    for direction in Direction:
        for trigger in Trigger:
            states = [s.value for s in DIRECTION_STATES[direction]]
            if trigger in QUEUE_TRIGGERS:
                states.append(NO_CORRELATION)
            missing = [s for s in states if (direction, trigger, s) not in keys]
            if missing:
                doc.problem(
                    ("rules",),
                    f"no rule for {direction} {trigger} in state(s) {', '.join(missing)}",
                )


def _check_agent_needed(doc: _Doc, index: int, rule: Rule) -> None:
    """What names "the event's agent" (or its AgentWork) needs every trigger to be an
    AgentWork event; "the event's work item" needs awa_work_item triggers."""
    if not all(t.value.startswith("work_item.") for t in rule.triggers):
        for j, action in enumerate(rule.actions):
            if action.op is Operation.CANCEL_WORK_ITEM and action.option("which", "") == "event":
                doc.problem(
                    ("rules", index, "actions", j, "with", "which"),
                    "which: event needs work_item triggers (only they name an AWA work item)",
                )
    if all(t.value.startswith("agent_work.") for t in rule.triggers):
        return
    if rule.open_segment is SegmentKind.ROUTE:
        doc.problem(("rules", index, "open_segment"), "a route segment needs agent_work triggers")
    for j, action in enumerate(rule.actions):
        if action.option("target", "") == "event_agent":
            doc.problem(
                ("rules", index, "actions", j, "with", "target"),
                "event_agent needs agent_work triggers (only they name an agent)",
            )
        if action.option("agent_work", "") == "event":
            doc.problem(
                ("rules", index, "actions", j, "with", "agent_work"),
                "agent_work: event needs agent_work triggers (only they name an AgentWork)",
            )


# --- loading ----------------------------------------------------------------------------


# The variable of the ``mappings_dir`` setting: a caller that names no directory gets the
# tables this environment configures, the same ones ``bridge run`` would load.
MAPPINGS_DIR_VARIABLE = "BRIDGE_MAPPINGS_DIR"


def default_directory() -> Path:
    """``$BRIDGE_MAPPINGS_DIR`` when set, else the packaged tables: ``bridge/_mappings`` in a
    wheel, ``mappings/`` in a checkout (whose crosswalk is an example to fill in)."""
    configured = os.environ.get(MAPPINGS_DIR_VARIABLE)
    if configured:
        return Path(configured)
    package = Path(__file__).resolve().parent.parent
    packaged = package / "_mappings"
    return packaged if packaged.is_dir() else package.parent / "mappings"


def check_tables(directory: Path | None = None) -> tuple[Tables | None, list[Problem]]:
    """Load and validate the three files; every problem found, and the tables if none."""
    directory = directory or default_directory()
    problems: list[Problem] = []
    cw_doc = _Doc(directory, CROSSWALK_FILE, problems)
    crosswalk = cw_doc.validate(Crosswalk)
    if crosswalk is not None:
        _check_crosswalk(cw_doc, crosswalk)
    pol_doc = _Doc(directory, POLICIES_FILE, problems)
    policies = pol_doc.validate(Policies)
    if policies is not None:
        _check_policies(pol_doc, policies, crosswalk)
    rules_doc = _Doc(directory, RULES_FILE, problems)
    rule_file = rules_doc.validate(RuleFile)
    if rule_file is not None:
        _check_rules(rules_doc, rule_file.rules)
    if problems or crosswalk is None or policies is None or rule_file is None:
        return None, problems
    return Tables(crosswalk, policies, rule_file.rules, cw_doc.lines), []


def load_tables(directory: Path | None = None) -> Tables:
    """The validated tables; ConfigError listing every problem, one per line."""
    tables, problems = check_tables(directory)
    if tables is None:
        lines = "\n".join(str(p) for p in problems)
        raise ConfigError(f"{len(problems)} problem(s) in the mapping tables:\n{lines}")
    return tables


# --- live check -------------------------------------------------------------------------

AWA_AGENT_ROLES = ("awa_agent", "awa_external_user")


class LiveDirectory(Protocol):
    """What the two live systems hold, for ``bridge mappings check --live``."""

    def sf_queue_ids(self) -> set[str]:
        """Ids of every Salesforce queue (Group of type Queue), 18-character form."""

    def sf_user_ids(self) -> set[str]:
        """Ids of every active Salesforce user, 18-character form."""

    def sf_service_channel_ids(self) -> set[str]:
        """Ids of every ServiceChannel, 18-character form."""

    def sn_queues(self) -> Mapping[str, str | None]:
        """Every awa_queue: sys_id → external_id (None when it has none)."""

    def sn_user_roles(self) -> Mapping[str, set[str]]:
        """Every active sys_user that holds an AWA role: sys_id → role names."""


def check_live(tables: Tables, directory: LiveDirectory) -> list[Problem]:
    """Every mapped queue, user and channel exists; agents hold the AWA agent roles."""
    problems: list[Problem] = []

    def problem(section: str, index: int, message: str) -> None:
        line = tables.crosswalk_lines.get((section, index))
        problems.append(Problem(CROSSWALK_FILE, line, f"{section}.{index}", message))

    sf_queues = {_sf_key(i) for i in directory.sf_queue_ids()}
    sf_users = {_sf_key(i) for i in directory.sf_user_ids()}
    sf_channels = {_sf_key(i) for i in directory.sf_service_channel_ids()}
    sn_queues = directory.sn_queues()
    sn_external = {ext for ext in sn_queues.values() if ext}
    roles = directory.sn_user_roles()
    for i, q in enumerate(tables.crosswalk.queues):
        if _sf_key(q.sf_queue_id) not in sf_queues:
            problem("queues", i, f"Salesforce queue {q.sf_queue_id} not found")
        if q.sn_queue_sys_id and q.sn_queue_sys_id not in sn_queues:
            problem("queues", i, f"awa_queue {q.sn_queue_sys_id} not found")
        if q.sn_external_id and q.sn_external_id not in sn_external:
            problem("queues", i, f"no awa_queue with external_id {q.sn_external_id!r}")
    for i, u in enumerate(tables.crosswalk.users):
        if _sf_key(u.sf_user_id) not in sf_users:
            problem("users", i, f"Salesforce user {u.sf_user_id} not found")
        if u.sn_user_sys_id not in roles:
            problem("users", i, f"sys_user {u.sn_user_sys_id} not found")
            continue
        missing = [r for r in AWA_AGENT_ROLES if r not in roles[u.sn_user_sys_id]]
        if missing:
            problem("users", i, f"sys_user {u.sn_user_sys_id} lacks role(s) {missing}")
    for i, c in enumerate(tables.crosswalk.channels):
        if _sf_key(c.sf_service_channel_id) not in sf_channels:
            problem("channels", i, f"ServiceChannel {c.sf_service_channel_id} not found")
    return problems
