"""Ids the engine derives (uuid5) from what events name: the same input always gives the
same correlation, segment and interaction ids, and so the same idempotency keys."""

from __future__ import annotations

import uuid

_NS = uuid.UUID("2f6d7c1e-8a4b-5e3f-9c0d-4b1a2e3f5d60")


def derived_id(*parts: str) -> str:
    """A deterministic 32-hex id from its parts (correlations, segments, interactions)."""
    return uuid.uuid5(_NS, ":".join(parts)).hex


def interaction_sys_id(correlation_id: str) -> str:
    """The sys_id of the interaction the bridge creates for a correlation."""
    return derived_id("interaction", correlation_id)
