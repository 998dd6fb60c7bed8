"""The port every limiter backend implements: decide-and-charge, observe, cool down.

Implementations live in ``ratelimit/backends/``: ``redis.py`` (atomic Lua on the Redis
clock, shared by the fleet) and ``memory.py`` (one process, the pure reference algorithms;
the unit-test double and the fallback when Redis is unreachable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ratelimit.pools import PoolSpec, Priority, RateLimitResult


@dataclass(frozen=True)
class Charge:
    """The weight one request spends in one pool."""

    pool: PoolSpec
    weight: float


class LimiterBackend(Protocol):
    """Where pool state lives and how a decision over several pools is made atomically."""

    def decide(
        self,
        exchange: str,
        charges: Sequence[Charge],
        priority: Priority,
        *,
        charge: bool = True,
        now: float | None = None,
    ) -> RateLimitResult:
        """Admit (and charge) the request only if every pool allows it and no cooldown runs.

        ``now`` overrides the clock and exists only for the contract tests.
        """
        ...

    def observe(
        self, exchange: str, usage: Sequence[tuple[PoolSpec, float]], *, now: float | None = None
    ) -> None:
        """Raise each pool's count to the usage the exchange reported."""
        ...

    def cooldown(self, exchange: str, seconds: float, pool: str | None, reason: str) -> float:
        """Refuse the pool (or, with None, the whole exchange) for ``seconds``; never shorten."""
        ...
