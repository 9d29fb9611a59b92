"""Crosswalk discovery, the pure part: match what both systems hold and propose crosswalk
rows (``bridge mappings discover``).

Users are matched by email, then Salesforce ``FederationIdentifier`` against ServiceNow
``user_name``; queues by the AWA queue's ``external_id`` (the Salesforce queue's Id or
DeveloperName), then by name; service channels by name. A key that points at more than one
record on either side is *ambiguous* and matches nothing: a person decides, the tool never
guesses. Proposed rows merge into an existing crosswalk without touching the rows someone
wrote by hand unless forced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from bridge.domain.sf_ids import is_valid, to18

# --- what the systems hold --------------------------------------------------------------


@dataclass(frozen=True)
class SfUser:
    id: str
    username: str
    name: str = ""
    email: str | None = None
    federation_id: str | None = None


@dataclass(frozen=True)
class SnAgent:
    """An active sys_user holding an AWA agent role."""

    sys_id: str
    user_name: str
    name: str = ""
    email: str | None = None


@dataclass(frozen=True)
class SfQueue:
    """A Group of Type Queue with an Omni-Channel routing configuration."""

    id: str
    name: str
    developer_name: str = ""
    routing_model: str | None = None  # QueueRoutingConfig.RoutingModel

    @property
    def direction(self) -> str:
        # External routing: PSRs go out to AWA; any other model: Omni-Channel routes the
        # work the bridge brings in from AWA.
        return "sf_to_sn" if self.routing_model == "ExternalRouting" else "sn_to_sf"


@dataclass(frozen=True)
class SnQueue:
    sys_id: str
    name: str
    external_id: str | None = None


@dataclass(frozen=True)
class SfChannel:
    id: str
    developer_name: str
    label: str
    related_entity: str


@dataclass(frozen=True)
class SnChannel:
    sys_id: str
    name: str
    work_item_table: str = "interaction"


# --- what discovery proposes ------------------------------------------------------------


class Outcome(StrEnum):
    MATCHED = "matched"
    AMBIGUOUS = "ambiguous"
    UNMATCHED = "unmatched"


@dataclass(frozen=True)
class Proposal:
    """One line of the discovery report; ``row`` is the crosswalk row of a match."""

    section: str  # users | queues | channels
    outcome: Outcome
    salesforce: str | None  # "label (id)" of the Salesforce record, None for SN-only lines
    servicenow: str | None
    by: str | None  # the key that matched (email, federation id, external id, name)
    reason: str
    row: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "outcome": self.outcome.value,
            "salesforce": self.salesforce,
            "servicenow": self.servicenow,
            "by": self.by,
            "reason": self.reason,
            "row": self.row,
        }


L = TypeVar("L")
R = TypeVar("R")
Keys = Callable[[Any], Iterable[str | None]]


@dataclass(frozen=True)
class MatchKey(Generic[L, R]):
    """One way of matching: the key values of a left record and of a right record."""

    name: str
    left: Callable[[L], Iterable[str | None]]
    right: Callable[[R], Iterable[str | None]]


@dataclass
class Matching(Generic[L, R]):
    matched: list[tuple[L, R, str]] = field(default_factory=list)
    ambiguous: list[tuple[L, str, list[R]]] = field(default_factory=list)
    unmatched_left: list[L] = field(default_factory=list)
    unmatched_right: list[tuple[R, str]] = field(default_factory=list)


def _norm(values: Iterable[str | None]) -> set[str]:
    return {v.strip().casefold() for v in values if v and v.strip()}


def match(left: Sequence[L], right: Sequence[R], keys: Sequence[MatchKey[L, R]]) -> Matching[L, R]:
    """Match ``left`` to ``right`` by each key in turn; only a one-to-one pairing counts."""
    out: Matching[L, R] = Matching()
    open_left = list(left)
    open_right = list(right)
    contested: dict[int, str] = {}  # id(right) -> why it is left to a person
    for key in keys:
        by_right: dict[str, list[R]] = defaultdict(list)
        for r in open_right:
            if id(r) not in contested:
                for value in _norm(key.right(r)):
                    by_right[value].append(r)
        left_values = {id(lf): _norm(key.left(lf)) for lf in open_left}
        by_left: dict[str, list[L]] = defaultdict(list)
        for lf in open_left:
            for value in left_values[id(lf)]:
                by_left[value].append(lf)
        still_left: list[L] = []
        taken: set[int] = set()
        for lf in open_left:
            candidates: dict[int, R] = {}
            rivals: dict[int, L] = {}
            for value in left_values[id(lf)]:
                for r in by_right.get(value, []):
                    candidates[id(r)] = r
                for other in by_left[value]:
                    rivals[id(other)] = other
            if not candidates:
                still_left.append(lf)
                continue
            if len(candidates) == 1 and len(rivals) == 1:
                (r,) = candidates.values()
                if id(r) not in taken:
                    out.matched.append((lf, r, key.name))
                    taken.add(id(r))
                    continue
            count = len(candidates)
            if count > 1:
                reason = f"{key.name} matches {count} records"
            else:
                reason = f"{key.name} is shared with {len(rivals) - 1} other record(s)"
            out.ambiguous.append((lf, reason, list(candidates.values())))
            for r in candidates.values():
                contested.setdefault(id(r), f"{key.name} claimed by more than one record")
        open_left = still_left
        open_right = [r for r in open_right if id(r) not in taken]
    out.unmatched_left = open_left
    out.unmatched_right = [(r, contested.get(id(r), "")) for r in open_right]
    return out


# --- the three sections -----------------------------------------------------------------


def _sf_ids(record_id: str) -> tuple[str, ...]:
    if not is_valid(record_id):
        return (record_id,)
    full = to18(record_id)
    return (full, full[:15])


USER_KEYS: tuple[MatchKey[SfUser, SnAgent], ...] = (
    MatchKey("email", lambda u: (u.email,), lambda a: (a.email,)),
    MatchKey("federation id", lambda u: (u.federation_id,), lambda a: (a.user_name,)),
)
QUEUE_KEYS: tuple[MatchKey[SfQueue, SnQueue], ...] = (
    MatchKey(
        "external id", lambda q: (*_sf_ids(q.id), q.developer_name), lambda q: (q.external_id,)
    ),
    MatchKey("name", lambda q: (q.name, q.developer_name), lambda q: (q.name,)),
)
CHANNEL_KEYS: tuple[MatchKey[SfChannel, SnChannel], ...] = (
    MatchKey("name", lambda c: (c.label, c.developer_name), lambda c: (c.name,)),
)


def _label(name: str, record_id: str) -> str:
    return f"{name} ({record_id})" if name else record_id


def discover_users(users: Sequence[SfUser], agents: Sequence[SnAgent]) -> list[Proposal]:
    found = match(users, agents, USER_KEYS)
    out = [
        Proposal(
            "users",
            Outcome.MATCHED,
            _label(u.username, u.id),
            _label(a.user_name, a.sys_id),
            by,
            f"same {by}",
            {"name": a.user_name, "sf_user_id": to18(u.id), "sn_user_sys_id": a.sys_id},
        )
        for u, a, by in found.matched
    ]
    out += [
        Proposal(
            "users",
            Outcome.AMBIGUOUS,
            _label(u.username, u.id),
            ", ".join(_label(a.user_name, a.sys_id) for a in candidates),
            None,
            reason,
        )
        for u, reason, candidates in found.ambiguous
    ]
    for u in found.unmatched_left:
        if not (u.email or u.federation_id):
            reason = "has no email and no FederationIdentifier"
        else:
            reason = f"no ServiceNow agent with email {u.email or '(none)'}" + (
                f" or user_name {u.federation_id}"
                if u.federation_id
                else " (and no FederationIdentifier to try)"
            )
        out.append(
            Proposal("users", Outcome.UNMATCHED, _label(u.username, u.id), None, None, reason)
        )
    for a, why in found.unmatched_right:
        reason = why or (
            f"no Salesforce user with email {a.email or '-'} or FederationIdentifier {a.user_name}"
        )
        out.append(
            Proposal("users", Outcome.UNMATCHED, None, _label(a.user_name, a.sys_id), None, reason)
        )
    return out


def discover_queues(queues: Sequence[SfQueue], awa: Sequence[SnQueue]) -> list[Proposal]:
    found = match(queues, awa, QUEUE_KEYS)
    out: list[Proposal] = []
    for q, s, by in found.matched:
        row: dict[str, Any] = {
            "name": s.name or q.name,
            "direction": q.direction,
            "sf_queue_id": to18(q.id),
            "sn_queue_sys_id": s.sys_id,
        }
        if s.external_id:
            row["sn_external_id"] = s.external_id
        out.append(
            Proposal(
                "queues",
                Outcome.MATCHED,
                _label(q.name, q.id),
                _label(s.name, s.sys_id),
                by,
                f"same {by}; {q.direction} (routing model {q.routing_model or 'none'})",
                row,
            )
        )
    out += [
        Proposal(
            "queues",
            Outcome.AMBIGUOUS,
            _label(q.name, q.id),
            ", ".join(_label(s.name, s.sys_id) for s in candidates),
            None,
            reason,
        )
        for q, reason, candidates in found.ambiguous
    ]
    out += [
        Proposal(
            "queues",
            Outcome.UNMATCHED,
            _label(q.name, q.id),
            None,
            None,
            f"no AWA queue with external_id {q.developer_name or q.id} or name {q.name}",
        )
        for q in found.unmatched_left
    ]
    out += [
        Proposal(
            "queues",
            Outcome.UNMATCHED,
            None,
            _label(s.name, s.sys_id),
            None,
            why
            or f"no Salesforce queue with Id or DeveloperName {s.external_id or '-'} "
            f"or name {s.name}",
        )
        for s, why in found.unmatched_right
    ]
    return out


def discover_channels(channels: Sequence[SfChannel], awa: Sequence[SnChannel]) -> list[Proposal]:
    found = match(channels, awa, CHANNEL_KEYS)
    out = [
        Proposal(
            "channels",
            Outcome.MATCHED,
            _label(c.label, c.id),
            _label(s.name, s.sys_id),
            by,
            f"same {by}",
            {
                "name": s.name or c.label,
                "sf_service_channel_id": to18(c.id),
                "sf_work_item_type": c.related_entity,
                "sn_document_table": s.work_item_table or "interaction",
                "sn_service_channel_sys_id": s.sys_id,
            },
        )
        for c, s, by in found.matched
    ]
    out += [
        Proposal(
            "channels",
            Outcome.AMBIGUOUS,
            _label(c.label, c.id),
            ", ".join(_label(s.name, s.sys_id) for s in candidates),
            None,
            reason,
        )
        for c, reason, candidates in found.ambiguous
    ]
    out += [
        Proposal(
            "channels",
            Outcome.UNMATCHED,
            _label(c.label, c.id),
            None,
            None,
            f"no awa_service_channel named {c.label} or {c.developer_name}",
        )
        for c in found.unmatched_left
    ]
    out += [
        Proposal(
            "channels",
            Outcome.UNMATCHED,
            None,
            _label(s.name, s.sys_id),
            None,
            why or f"no ServiceChannel labelled {s.name}",
        )
        for s, why in found.unmatched_right
    ]
    return out


# --- merging into a crosswalk -----------------------------------------------------------

SECTIONS = ("queues", "users", "channels")
# The columns that say which records a row pairs: a proposal and an existing row that share
# one of them are about the same record.
ID_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "queues": ("sf_queue_id", "sn_queue_sys_id"),
    "users": ("sf_user_id", "sn_user_sys_id"),
    "channels": ("sf_service_channel_id", "sn_service_channel_sys_id"),
}


@dataclass
class Merge:
    crosswalk: dict[str, list[dict[str, Any]]]
    added: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[dict[str, Any]] = field(default_factory=list)
    kept: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (hand, ours)
    replaced: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    placeholders: int = 0  # template rows (``<...>``) dropped


def _id_key(column: str, value: Any) -> str:
    text = str(value or "").strip()
    if column.startswith("sf_") and is_valid(text):
        return to18(text)
    return text.lower()


def _is_placeholder(row: Mapping[str, Any]) -> bool:
    return any(isinstance(v, str) and "<" in v and ">" in v for v in row.values())


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} ({n})", n + 1
    return candidate


def merge(
    existing: Mapping[str, Any] | None, proposals: Iterable[Proposal], *, force: bool = False
) -> Merge:
    """The crosswalk with the matched proposals added.

    A row already there for the same pair stays as written (its extra columns too); a row
    that pairs one of the same records differently is someone's decision and is kept, unless
    ``force``, which gives it the discovered ids and keeps its name and other columns (so
    fallback queues and eligible agents that name it stay valid). Template rows that still
    hold ``<...>`` placeholders are dropped.
    """
    source = existing or {}
    result = Merge({s: [] for s in SECTIONS})
    for section in SECTIONS:
        for row in source.get(section) or []:
            if isinstance(row, Mapping) and _is_placeholder(row):
                result.placeholders += 1
                continue
            result.crosswalk[section].append(dict(row))
    # (section, column, id) -> rows holding it, and the names taken: one lookup per proposal
    index: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    names: dict[str, set[str]] = {s: set() for s in SECTIONS}

    def enter(section: str, row: dict[str, Any]) -> None:
        names[section].add(str(row.get("name")))
        for c in ID_COLUMNS[section]:
            if row.get(c):
                index[(section, c, _id_key(c, row[c]))].append(row)

    for section in SECTIONS:
        for row in result.crosswalk[section]:
            enter(section, row)
    for proposal in proposals:
        if proposal.outcome is not Outcome.MATCHED or proposal.row is None:
            continue
        rows = result.crosswalk[proposal.section]
        columns = ID_COLUMNS[proposal.section]
        ours = proposal.row
        found: dict[int, dict[str, Any]] = {}
        for c in columns:
            if ours.get(c):
                for r in index.get((proposal.section, c, _id_key(c, ours[c])), []):
                    found.setdefault(id(r), r)
        hits = list(found.values())
        if not hits:
            row = dict(ours, name=_unique_name(str(ours["name"]), names[proposal.section]))
            rows.append(row)
            enter(proposal.section, row)
            result.added.append(row)
            continue
        same = [
            r for r in hits if all(_id_key(c, r.get(c)) == _id_key(c, ours.get(c)) for c in columns)
        ]
        if same:
            result.unchanged.append(same[0])
            continue
        if not force:
            result.kept.append((hits[0], ours))
            continue
        first = hits[0]
        updated = {**first, **{k: v for k, v in ours.items() if k != "name"}}
        rows[rows.index(first)] = updated
        for other in hits[1:]:
            rows.remove(other)
        # the index still points at the old rows: rebuild this section's part
        for key in [k for k in index if k[0] == proposal.section]:
            del index[key]
        names[proposal.section] = set()
        for row in rows:
            enter(proposal.section, row)
        result.replaced.append((first, updated))
    return result
