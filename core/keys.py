"""Every Redis key the fleet writes, built in one place.

Layout (``<p>`` is ``redis.key_prefix``, empty by default; Celery's own queue and result
keys get the same prefix through kombu's ``global_keyprefix``):

    <p>logs:system                         capped list of recent log records (the seed's name)
    <p>fleet:health:<queue>                last health round trip per queue (hash)

Keys that one Lua script touches together share a ``{hash tag}`` so they live in one
Redis Cluster slot; later sections of this table document them as they are added.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeySpace:
    """Build the fleet's Redis keys under one optional prefix."""

    prefix: str = ""

    def logs_system(self) -> str:
        """Return the capped list that mirrors recent log records."""
        return f"{self.prefix}logs:system"

    def health(self, queue: str) -> str:
        """Return the hash that records the last health round trip through ``queue``."""
        return f"{self.prefix}fleet:health:{queue}"
