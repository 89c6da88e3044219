"""Fixtures of the router tests; the harness itself is in router_harness.py."""

from router_harness import backends, router_factory  # noqa: F401  (pytest fixtures)
