"""Shared test fixtures; each area's fixtures live in ``tests/fixtures/``."""

pytest_plugins = [
    "tests.fixtures.ledger",
    "tests.fixtures.salesforce",
    "tests.fixtures.servicenow",
    "tests.fixtures.bridge",
]
