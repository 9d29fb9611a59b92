"""Omni-Channel ↔ AWA bridge: the external router between Salesforce Omni-Channel and
ServiceNow Advanced Work Assignment."""

__version__ = "0.1.0"
