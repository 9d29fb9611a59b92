"""The emulators' own tests share the sandbox fixtures of the product's tests (one CA and
one server per session, the real clients pointed at them)."""

pytest_plugins = [
    "tests.fixtures.salesforce",
    "tests.fixtures.servicenow",
]
