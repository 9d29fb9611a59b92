"""Salesforce side: OAuth, the REST API through simple-salesforce, the Interaction Service
API, and intake of PendingServiceRouting and AgentWork changes."""
