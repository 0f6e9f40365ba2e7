"""The task model: aggregates, events, status rules and the application service.

Nothing in here knows about HTTP or SQL.
"""
