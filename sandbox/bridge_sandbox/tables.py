"""The sandbox's mapping tables: its own crosswalk (the seed's queues, users and channels)
beside the product's rules and policies.

The loader reads one directory, so ``mappings/`` here holds the crosswalk and symbolic links
to the product's ``rules.yaml`` and ``policies.yaml``: the sandbox rehearses exactly the rules
a deployment runs, and they exist once.
"""

from __future__ import annotations

from pathlib import Path

from bridge.domain import mapping

DIRECTORY = Path(__file__).resolve().parent / "mappings"


def load_tables() -> mapping.Tables:
    """The validated sandbox tables (what ``bridge sandbox`` and ``sandbox_settings`` use)."""
    return mapping.load_tables(DIRECTORY)
