"""Every reconciler, in the order a run goes through them: the ledger's own house-keeping
first, then the repairs, the drift summary last (it sees what the others left)."""

from __future__ import annotations

from bridge.reconcile.assigned_elsewhere import AssignedElsewhere
from bridge.reconcile.base import Reconciler
from bridge.reconcile.drift import Drift
from bridge.reconcile.mapping_check import MappingCheck
from bridge.reconcile.offer_timeout import OfferTimeout
from bridge.reconcile.orphaned_psr import OrphanedPsr
from bridge.reconcile.pending_awa import PendingAwa
from bridge.reconcile.stale_cursor import StaleCursor
from bridge.reconcile.stuck_outbox import StuckOutbox
from bridge.reconcile.unseen_psr import UnseenPsr

RECONCILERS: tuple[Reconciler, ...] = (
    MappingCheck(),
    StaleCursor(),
    StuckOutbox(),
    OrphanedPsr(),
    UnseenPsr(),
    PendingAwa(),
    AssignedElsewhere(),
    OfferTimeout(),
    Drift(),
)
