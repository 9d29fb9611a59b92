"""The emulated ServiceNow instance: Table API, Batch API, AWA Offer Work and Inbox Actions."""
