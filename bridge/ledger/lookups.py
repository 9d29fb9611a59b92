"""Batched reads for the reconcilers: which correlations hold these ids, which offers are
open, which commands are stuck. Plain rows, ``IN`` batches and keyset pages: a full scan
of a large ledger stays small in memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import exists, or_, select, text
from sqlalchemy.orm import Session, aliased
from sqlmodel import col

from bridge.ledger import rows as r

T = TypeVar("T")

# Ledger lookups: ids per IN (well below SQLite's and PostgreSQL's parameter limits).
BATCH = 500


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


# Where an id the user or an event gives may live, most likely first.
_FIND_ORDER: tuple[tuple[str, str], ...] = (
    ("correlation", "id"),
    ("correlation", "sf_psr_id"),
    ("correlation", "sf_work_item_id"),
    ("correlation", "sf_agent_work_id"),
    ("correlation", "sf_conversation_id"),
    ("correlation", "sn_document_sys_id"),
    ("correlation", "sn_work_item_sys_id"),
    ("segment", "external_segment_id"),
    ("segment", "id"),
    ("segment", "sf_agent_work_id"),
    ("segment", "sn_work_item_sys_id"),
    ("segment", "sf_psr_id"),
)
# Plain SQL from the constant names above (no user text): compiling the equivalent
# 12-way UNION through the expression language costs more than running it.
_FIND_SQL = text(
    " UNION ALL ".join(
        f"SELECT {'id' if t == 'correlation' else 'correlation_id'} AS correlation_id "
        f"FROM {t} WHERE {column} = :any_id"
        for t, column in _FIND_ORDER
    )
    + " LIMIT 1"
)


def find_correlation_id(session: Session, any_id: str) -> str | None:
    """The correlation an id belongs to: its own id, any Salesforce / ServiceNow id it
    carries, or any id of one of its segments. One round trip; every branch is an
    indexed lookup."""
    found = session.execute(_FIND_SQL, {"any_id": any_id}).scalar()
    return None if found is None else str(found)


@dataclass(frozen=True, slots=True)
class CorrelationSummary:
    """What the reconcilers need of a correlation (read without its JSON data: cheap)."""

    id: str
    direction: str
    state: str
    sf_psr_id: str | None = None
    sf_work_item_id: str | None = None
    sf_conversation_id: str | None = None
    sf_service_channel_id: str | None = None
    sf_user_id: str | None = None
    sn_document_sys_id: str | None = None


SUMMARY_COLUMNS = tuple(f.name for f in fields(CorrelationSummary))


@dataclass(frozen=True, slots=True)
class OpenOffer:
    """The newest segment of an ``offered`` correlation: an offer still out."""

    segment_id: str
    correlation_id: str
    external_segment_id: str
    sn_work_item_sys_id: str
    opened_at: datetime


def _summaries(*conditions: Any) -> Any:
    return select(*(col(getattr(r.Correlation, c)) for c in SUMMARY_COLUMNS)).where(*conditions)


class Lookups:
    def __init__(self, session: Session) -> None:
        self._session = session

    def correlations_by(self, column: str, ids: Iterable[str]) -> dict[str, CorrelationSummary]:
        """Correlations whose ``column`` is one of ``ids``, keyed by that column's value."""
        attr = col(getattr(r.Correlation, column))
        found: dict[str, CorrelationSummary] = {}
        for batch in chunks(dict.fromkeys(i for i in ids if i), BATCH):
            for row in self._session.execute(_summaries(attr.in_(batch))):
                summary = CorrelationSummary(*row)
                found[getattr(summary, column)] = summary
        return found

    def known_values(self, column: str, ids: Iterable[str], *, segments: bool = False) -> set[str]:
        """Which of ``ids`` some correlation (or, with ``segments``, some segment too) holds
        in ``column`` (the values only: cheap)."""
        models: list[Any] = [r.Correlation, r.Segment] if segments else [r.Correlation]
        wanted = list(dict.fromkeys(i for i in ids if i))
        found: set[str] = set()
        for model in models:
            attr = col(getattr(model, column))
            for batch in chunks(wanted, BATCH):
                found.update(
                    v for v in self._session.scalars(select(attr).where(attr.in_(batch))) if v
                )
        return found

    def psr_owners(self, psr_ids: Iterable[str]) -> dict[str, CorrelationSummary]:
        """The correlation each PSR belongs to: as its current PSR or an earlier segment's."""
        wanted = list(dict.fromkeys(psr_ids))
        found = self.correlations_by("sf_psr_id", wanted)
        rest = [p for p in wanted if p not in found]
        for batch in chunks(rest, BATCH):
            stmt = _summaries(col(r.Segment.sf_psr_id).in_(batch)).join(
                r.Segment, col(r.Correlation.id) == col(r.Segment.correlation_id)
            )
            for row in self._session.execute(stmt.add_columns(col(r.Segment.sf_psr_id))):
                found[row[-1]] = CorrelationSummary(*row[:-1])
        return found

    def correlation_page(
        self,
        columns: Sequence[str],
        *,
        after: str,
        limit: int,
        states: Sequence[str] = (),
        updated_before: datetime | None = None,
        since: datetime | None = None,
    ) -> list[Any]:
        """``columns`` (and ``id``) of the correlations in ``states``, last updated in
        [since, updated_before), with ids after ``after``: one keyset page."""
        attrs = [col(getattr(r.Correlation, c)) for c in dict.fromkeys(["id", *columns])]
        stmt = select(*attrs).where(col(r.Correlation.id) > after)
        if states:
            stmt = stmt.where(col(r.Correlation.state).in_(list(states)))
        if updated_before is not None:
            stmt = stmt.where(col(r.Correlation.updated_at) < updated_before)
        if since is not None:
            stmt = stmt.where(col(r.Correlation.updated_at) >= since)
        return list(self._session.execute(stmt.order_by(col(r.Correlation.id)).limit(limit)))

    def open_offers(
        self, state: str, *, after: str, limit: int, since: datetime | None = None
    ) -> list[OpenOffer]:
        """The newest segment of each correlation in ``state``, when it is an open offer or
        transfer with a work item; keyset pages by correlation id."""
        later = aliased(r.Segment)
        s = r.Segment
        stmt = (
            select(
                col(s.id),
                col(s.correlation_id),
                col(s.external_segment_id),
                col(s.sn_work_item_sys_id),
                col(s.opened_at),
            )
            .join(r.Correlation, col(r.Correlation.id) == col(s.correlation_id))
            .where(
                col(r.Correlation.state) == state,
                col(s.outcome).is_(None),
                col(s.sn_work_item_sys_id).is_not(None),
                col(s.kind).in_(("offer", "transfer")),
                col(s.correlation_id) > after,
                ~exists().where(
                    col(later.correlation_id) == col(s.correlation_id),
                    col(later.seq) > col(s.seq),
                ),
            )
        )
        if since is not None:
            stmt = stmt.where(col(r.Correlation.updated_at) >= since)
        page = self._session.execute(stmt.order_by(col(s.correlation_id)).limit(limit))
        return [OpenOffer(*row) for row in page]  # type: ignore[arg-type]  # not null by the WHERE

    def command_payloads(
        self, segment_ids: Sequence[str], operations: Sequence[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        """(segment id, payload) of the commands of these operations for these segments."""
        stmt = select(col(r.OutboxCommand.segment_id), col(r.OutboxCommand.payload)).where(
            col(r.OutboxCommand.segment_id).in_(list(segment_ids)),
            col(r.OutboxCommand.operation).in_(list(operations)),
        )
        return [(str(sid), dict(p or {})) for sid, p in self._session.execute(stmt) if sid]

    def inbox_has(self, source_event_id: str) -> bool:
        """Has the inbox recorded an event with this source id (from any source)?"""
        stmt = select(col(r.InboxEvent.id)).where(
            col(r.InboxEvent.source_event_id) == source_event_id
        )
        return self._session.execute(stmt.limit(1)).first() is not None

    def inbox_seen(self, source: str, source_event_ids: Sequence[str]) -> set[str]:
        """Which of these source event ids the inbox already holds for ``source``."""
        stmt = select(col(r.InboxEvent.source_event_id)).where(
            col(r.InboxEvent.source) == source,
            col(r.InboxEvent.source_event_id).in_(list(source_event_ids)),
        )
        return set(self._session.scalars(stmt))

    def latest_payloads(self, source: str, kind: str, record_ids: Sequence[str]) -> dict[str, Any]:
        """The newest payload the inbox holds per record id for events of ``kind`` (their
        source id is ``kind:record id:...``): what a change event carrying only the
        changed fields is merged onto."""
        found: dict[str, Any] = {}
        for batch in chunks(dict.fromkeys(record_ids), BATCH):
            like = [col(r.InboxEvent.source_event_id).like(f"{kind}:{rid}:%") for rid in batch]
            stmt = (
                select(col(r.InboxEvent.source_event_id), col(r.InboxEvent.payload))
                .where(col(r.InboxEvent.source) == source, col(r.InboxEvent.kind) == kind)
                .where(or_(*like))
                .order_by(col(r.InboxEvent.id).desc())
            )
            for source_event_id, payload in self._session.execute(stmt):
                rid = str(source_event_id).split(":", 2)[1]
                if rid not in found:
                    found[rid] = dict(payload or {})
        return found

    def stuck_commands(
        self, statuses: Sequence[str], untouched_since: datetime, *, after: str, limit: int
    ) -> list[r.OutboxCommand]:
        """Commands in ``statuses`` not updated since ``untouched_since``; keyset by id."""
        stmt = (
            select(r.OutboxCommand)
            .where(
                col(r.OutboxCommand.status).in_(list(statuses)),
                col(r.OutboxCommand.updated_at) < untouched_since,
                col(r.OutboxCommand.id) > after,
            )
            .order_by(col(r.OutboxCommand.id))
            .limit(limit)
        )
        return list(self._session.scalars(stmt))
