"""Drift: the ledger against both systems. Open correlations whose objects are gone (the
PSR a conversation waits on, the interaction it is mirrored in) and the reverse (active
interactions the bridge made or routes that no correlation knows; PSRs of mapped queues
that none knows are ``unseen_psr``'s). Reported, not repaired: each needs a person."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from bridge.adapters.salesforce.client import parse_sf_datetime
from bridge.adapters.servicenow.polling import parse_sn_datetime
from bridge.domain import CorrelationState
from bridge.reconcile.base import Context, PlannedFinding, RepairWriter, grace_note
from bridge.reconcile.reads import (
    OPEN_STATES,
    correlation_rows,
    known_values,
    psr_owners,
    queue_ids,
    scan_psrs,
    scan_sn,
    sf18,
    sn_queue_refs,
)

KIND = "drift"
# While a conversation is in one of these states its PSR exists in Salesforce.
WAITING_ON_PSR = frozenset(
    s.value
    for s in (
        CorrelationState.OFFERED,
        CorrelationState.ASSIGNING,
        CorrelationState.ROUTING,
        CorrelationState.ASSIGNED,
    )
)


@dataclass(frozen=True, slots=True)
class _Open:
    COLUMNS: ClassVar[tuple[str, ...]] = ("id", "state", "sf_psr_id", "sn_document_sys_id")

    id: str
    state: str
    psr: str | None
    document: str | None


class Drift(RepairWriter):
    name = KIND
    description = "Ledger vs both systems: open correlations whose objects are gone, and back"
    # It only reports: a one-off --apply runs it after the others' repairs are carried out.
    after_repairs = True

    def plan(self, ctx: Context, since: datetime | None) -> Iterator[PlannedFinding]:
        settled = ctx.now - ctx.options.unseen_grace  # younger things may be in flight
        opened = [
            _Open(*row)
            for page in correlation_rows(
                ctx, _Open.COLUMNS, states=OPEN_STATES, updated_before=settled, since=since
            )
            for row in page
        ]
        tally: Counter[str] = Counter()
        # Presence is checked against full scans (``since`` picks what is reported); the
        # two systems are scanned at the same time.
        with ThreadPoolExecutor(1, thread_name_prefix="drift-psrs") as pool:
            scanning = pool.submit(self._psrs, ctx, settled)
            interactions, reportable, young = self._interactions(ctx, since, settled)
            psrs, untracked_psrs, young_psrs = scanning.result()
        tally["psr_without_correlation"] = untracked_psrs
        for corr in opened:
            if corr.state in WAITING_ON_PSR and corr.psr and corr.psr not in psrs:
                tally["correlation_without_psr"] += 1
                yield self._finding(
                    "correlation_without_psr",
                    corr.id,
                    f"correlation is {corr.state} but PSR {corr.psr} is gone",
                    corr.id,
                )
            if corr.document and corr.document not in interactions:
                tally["correlation_without_interaction"] += 1
                yield self._finding(
                    "correlation_without_interaction",
                    corr.id,
                    f"correlation is {corr.state} but interaction {corr.document} is gone or "
                    "no longer active",
                    corr.id,
                )
        known = known_values(ctx, "sn_document_sys_id", reportable | young)
        note = grace_note(
            self.name,
            {
                "PSR(s) no correlation knows": young_psrs,
                "active interaction(s) no correlation knows": len(young - known),
            },
            ctx.options.unseen_grace,
        )
        if note is not None:
            yield note
        for sys_id in reportable:
            if sys_id not in known:
                tally["interaction_without_correlation"] += 1
                yield self._finding(
                    "interaction_without_correlation",
                    sys_id,
                    f"active interaction {sys_id} is mapped or made by the bridge but no "
                    "correlation knows it",
                    None,
                )
        drifted = {k: n for k, n in tally.items() if n}
        if drifted:
            yield PlannedFinding(
                kind="drift_summary",
                subject="ledger",
                reason=", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(drifted.items())),
                detail={"open_correlations": len(opened), **drifted},
            )

    @staticmethod
    def _finding(kind: str, subject: str, reason: str, corr_id: str | None) -> PlannedFinding:
        return PlannedFinding(kind=kind, subject=subject, reason=reason, correlation_id=corr_id)

    @staticmethod
    def _psrs(ctx: Context, settled: datetime) -> tuple[set[str], int, int]:
        """Ids of every PSR of the mapped queues, and how many no correlation knows:
        created before ``settled``, and since (not judged yet)."""
        present: set[str] = set()
        untracked = young = 0
        for page in scan_psrs(ctx, queue_ids(ctx.tables), None, KIND):
            ids = [i for i in (sf18(p["Id"]) for p in page) if i]
            present.update(ids)
            owners = set(psr_owners(ctx, ids))
            old = {
                i
                for p in page
                if (i := sf18(p["Id"])) and parse_sf_datetime(p["CreatedDate"]) < settled
            }
            untracked += len(old - owners)
            young += len(set(ids) - old - owners)
        return present, untracked, young

    @staticmethod
    def _interactions(
        ctx: Context, since: datetime | None, settled: datetime
    ) -> tuple[set[str], set[str], set[str]]:
        """sys_ids of the active interactions of mapped queues or made by the bridge
        (``correlation_id`` set): all of them, those to report (last changed since
        ``since`` and before ``settled``) and those changed after ``settled`` (not judged
        yet)."""
        queues = sn_queue_refs(ctx.tables)
        condition = "active=true^correlation_idISNOTEMPTY"
        if queues:
            condition += f"^ORqueueIN{','.join(queues)}"
        found: set[str] = set()
        old: set[str] = set()
        young: set[str] = set()
        fields = ("sys_updated_on",)
        for rows in scan_sn(ctx, "interaction", fields, condition, since=None, task=KIND):
            found.update(r["sys_id"] for r in rows)
            old.update(r["sys_id"] for r in rows if _between(r, since, settled))
            young.update(
                r["sys_id"] for r in rows if parse_sn_datetime(r["sys_updated_on"]) >= settled
            )
        return found, old, young


def _between(row: dict[str, str], since: datetime | None, until: datetime) -> bool:
    changed = parse_sn_datetime(row["sys_updated_on"])
    return changed < until and (since is None or changed >= since)
