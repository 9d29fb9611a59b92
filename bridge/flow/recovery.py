"""Data-centre recovery (the Omni-Channel guide's Troubleshooting: after an org instance
switch every state the adaptor keeps is void, and it re-initialises as on its first
subscription; replay ids may not survive an org migration).

``reinitialize`` drops every Salesforce stream position (change streams and the polls'
watermarks) and files a finding per stream, in one transaction; then it reads what is
live now, as on a first start (the polls' first-start queries), into the inbox. The
engine continues open conversations from what that read shows (right from any snapshot);
the change stream, finding no position, subscribes from the newest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bridge.flow.intake import PollResult
from bridge.ledger import rows
from bridge.ledger.ports import Ledger

log = logging.getLogger(__name__)

SALESFORCE_STREAMS = "salesforce:"
# The finding's kind, and the reconciler name stream findings are filed under.
RECOVERY = "data_centre_recovery"
STREAM_FINDINGS = "stream"


class LiveReader(Protocol):
    """The Salesforce polls: their first-start reads are what is live now."""

    def streams(self) -> tuple[str, ...]: ...

    def poll(self, now: datetime) -> list[PollResult]: ...


@dataclass(frozen=True)
class Recovery:
    """What a re-initialisation did."""

    reason: str
    dropped: Mapping[str, str]  # stream → the position given up
    run_id: str | None  # the run its findings are filed under (None: memory ledger)
    reread: Sequence[PollResult] = field(default_factory=tuple)

    @property
    def recorded(self) -> int:
        return sum(r.recorded for r in self.reread)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "dropped": dict(self.dropped),
            "run_id": self.run_id,
            "reread": {r.stream: r.recorded for r in self.reread},
            "recorded": self.recorded,
        }


class _Runs(Protocol):
    def start(self, reconcilers: Sequence[str], mode: str) -> Any: ...

    def add(self, *findings: Any) -> None: ...

    def finish(self, run_id: str, status: str, summary: Mapping[str, Any]) -> Any: ...


def _stored_streams(tx: Any, known: Iterable[str]) -> list[str]:
    """Every Salesforce stream with a stored position: the ledger's cursors (when it can
    list them) and the streams the caller knows."""
    names = set(known)
    audit = getattr(tx, "audit", None)
    if audit is not None:
        names |= set(audit.stats()["cursors"])
    return sorted(n for n in names if n.startswith(SALESFORCE_STREAMS))


def _subjects(dropped: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The findings' subjects: each dropped stream, or the Salesforce streams as a whole
    when none had a position."""
    found: list[tuple[str, str | None]] = sorted(dropped.items())
    return found or [(SALESFORCE_STREAMS, None)]


def drop_positions(ledger: Ledger, reason: str, known: Iterable[str] = ()) -> Recovery:
    """Forget every Salesforce stream position and file a finding for each, in one
    transaction (a recovery with nothing stored still files one finding, naming none)."""
    dropped: dict[str, str] = {}
    with ledger.transaction() as tx:
        for stream in _stored_streams(tx, known):
            position = tx.cursors.get(stream)
            if position is None:
                continue
            dropped[stream] = position
            tx.cursors.delete(stream)
        runs: _Runs | None = getattr(tx, "runs", None)
        if runs is None:  # the memory ledger keeps no findings
            log.warning("Salesforce streams re-initialised (%s): %s", reason, sorted(dropped))
            return Recovery(reason, dropped, None)
        run = runs.start([STREAM_FINDINGS], "apply")
        runs.add(
            *(
                rows.Finding(
                    run_id=run.id,
                    reconciler=STREAM_FINDINGS,
                    kind=RECOVERY,
                    subject=subject,
                    action="reinitialize",
                    status="applied",
                    reason=reason,
                    detail={"position": position},
                )
                for subject, position in _subjects(dropped)
            )
        )
        runs.finish(run.id, "succeeded", {"counts": {RECOVERY: max(1, len(dropped))}})
        return Recovery(reason, dropped, run.id)


def reinitialize(
    ledger: Ledger, reader: LiveReader, *, reason: str, now: datetime, known: Iterable[str] = ()
) -> Recovery:
    """Drop the positions (``drop_positions``), then read what is live now into the
    inbox, as on a first start."""
    dropped = drop_positions(ledger, reason, (*known, *reader.streams()))
    reread = reader.poll(now)
    log.info(
        "Salesforce streams re-initialised (%s): %d position(s) dropped, %d event(s) re-read",
        reason,
        len(dropped.dropped),
        sum(r.recorded for r in reread),
    )
    return Recovery(dropped.reason, dropped.dropped, dropped.run_id, tuple(reread))
