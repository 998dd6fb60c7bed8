"""Shared circuit breakers, retry policies, fallback levels, cache and request coalescing.

Not built yet: see the project's open issues.
"""
