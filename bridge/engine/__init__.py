"""The pure translation: (event, correlation, tables) → decision.

No I/O and no clock: time comes with the event, ids are derived (uuid5) from what the
event names, so the same input always gives the same decision and the same idempotency
keys. What to do for each (direction, trigger, state) is data (``mappings/rules.yaml``).

- ``classify``: what an event means (its trigger) and which ids name its conversation;
- ``working``: the working copy of a conversation (``Draft``) that becomes a Decision;
- ``rules``: ``translate``, finding and applying the rule;
- ``builders``: the command each operation of a rule emits;
- ``answers``: what a dispatched command's answer teaches;
- ``echo``: the keys by which the bridge recognises the changes it caused.
"""

from bridge.engine.answers import apply_result
from bridge.engine.builders import deletes_psr_by_route
from bridge.engine.classify import (
    SF_WORK_ITEM_ENDED,
    agent_work_stale,
    classify,
    correlation_keys,
    psr_orphaned,
    work_item_left_pending,
)
from bridge.engine.ids import derived_id, interaction_sys_id
from bridge.engine.rules import translate

__all__ = [
    "SF_WORK_ITEM_ENDED",
    "agent_work_stale",
    "apply_result",
    "classify",
    "correlation_keys",
    "deletes_psr_by_route",
    "derived_id",
    "interaction_sys_id",
    "psr_orphaned",
    "translate",
    "work_item_left_pending",
]
