"""Limiter backends: ``redis`` (fleet-wide, atomic) and ``memory`` (one process)."""
