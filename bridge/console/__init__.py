"""The read-only web console over the audit ledger (``/console/``)."""

from bridge.console.app import console_app, standalone_app
from bridge.console.auth import Credentials

__all__ = ["Credentials", "console_app", "standalone_app"]
