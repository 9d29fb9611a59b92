"""ServiceNow side: pysnc over an authenticated session, the AWA Offer Work API, and intake
of awa_work_item and interaction changes."""
