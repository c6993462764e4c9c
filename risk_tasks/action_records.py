"""Journal writers for action records (liquidations, alerts, dead letters, unwinds).

Imported by the drainer (``risk_tasks.journal.HANDLER_MODULES``) so that every record
kind has its writer registered before a batch is written.
"""
