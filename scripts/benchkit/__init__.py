"""`scripts/bench`'s parts: databases, data, servers, load generator, figures.

Run through `scripts/bench` (see `benchkit.main`); nothing here is imported by the
service or its tests, except the smoke test that runs the command.
"""
