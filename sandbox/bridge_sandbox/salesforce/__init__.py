"""The emulated Salesforce org: REST API, SOQL, Omni-Channel and the Interaction Service API."""
