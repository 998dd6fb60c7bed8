"""Prometheus metrics, alerts, system status and the Redis log sink.

Not built yet: see the project's open issues.
"""
