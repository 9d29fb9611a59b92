"""Shared test fixtures; each area's fixtures live in ``tests/fixtures/``."""

import os

from bridge.domain.mapping import MAPPINGS_DIR_VARIABLE
from bridge_sandbox import tables

# The tests play the sandbox's seed, so tables loaded without a directory are the sandbox's
# (the product's default crosswalk is an example to fill in); a test's own setting wins.
os.environ.setdefault(MAPPINGS_DIR_VARIABLE, str(tables.DIRECTORY))

pytest_plugins = [
    "tests.fixtures.ledger",
    "tests.fixtures.salesforce",
    "tests.fixtures.servicenow",
    "tests.fixtures.bridge",
    "tests.fixtures.adapters",
    "tests.fixtures.push",
    "tests.fixtures.streams",
]
