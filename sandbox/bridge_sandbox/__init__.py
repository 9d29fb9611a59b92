"""Emulated Salesforce org and ServiceNow instance that the real clients believe.

Both serve their real wire protocols over TLS on loopback with a throw-away CA made per
run; see ``serving`` for the shared plumbing (CA, threaded uvicorn, clock, faults,
counters).
"""
