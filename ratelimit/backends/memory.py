"""A limiter backend in one process's memory, on the pure reference algorithms.

Used by unit tests (with an injected clock) and as the market-data fallback when the shared
Redis is unreachable. Warning: it limits only this process; a fleet of N processes using it
gets N times the budget unless each is given a 1/N share (see ExchangeRateLimitManager).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ratelimit import algorithms
from ratelimit.backend import Charge
from ratelimit.pools import PoolSpec, Priority, RateLimitResult


class MemoryBackend:
    """Keep pool states in a dict guarded by a lock; time from ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], algorithms.State] = {}
        self._cooldowns: dict[tuple[str, str | None], float] = {}
        self._lock = threading.Lock()

    def _cooldown_left(self, exchange: str, charges: Sequence[Charge], now: float) -> float:
        keys = [(exchange, None), *((exchange, c.pool.name) for c in charges)]
        return max((self._cooldowns.get(k, now) - now for k in keys), default=0.0)

    def decide(
        self,
        exchange: str,
        charges: Sequence[Charge],
        priority: Priority,
        *,
        charge: bool = True,
        now: float | None = None,
    ) -> RateLimitResult:
        """Admit (and charge) only if every pool allows it and no cooldown runs."""
        with self._lock:
            now = self._clock() if now is None else now
            cooldown = self._cooldown_left(exchange, charges, now)
            if cooldown > 0:
                return RateLimitResult(False, cooldown, {}, None, cooldown=True, at=now)
            retry_after, denied, remaining = 0.0, None, {}
            for c in charges:
                state = self._states.get((exchange, c.pool.name), {})
                reserve = c.pool.reserved_units(priority)
                check = algorithms.check(c.pool, state, now, c.weight, reserve)
                remaining[c.pool.name] = check.remaining
                if not check.allowed and (denied is None or check.retry_after > retry_after):
                    retry_after, denied = max(retry_after, check.retry_after), c.pool.name
            if denied is None and charge:
                for c in charges:
                    key = (exchange, c.pool.name)
                    self._states[key] = algorithms.charge(
                        c.pool, self._states.get(key, {}), now, c.weight
                    )
            return RateLimitResult(denied is None, retry_after, remaining, denied, at=now)

    def observe(
        self, exchange: str, usage: Sequence[tuple[PoolSpec, float]], *, now: float | None = None
    ) -> None:
        """Raise each pool's count to the usage the exchange reported."""
        with self._lock:
            now = self._clock() if now is None else now
            for pool, used in usage:
                key = (exchange, pool.name)
                self._states[key] = algorithms.observe(pool, self._states.get(key, {}), now, used)

    def cooldown(self, exchange: str, seconds: float, pool: str | None, reason: str) -> float:
        """Refuse the pool (or the whole exchange) for ``seconds``; never shorten a cooldown."""
        with self._lock:
            until = self._clock() + seconds
            key = (exchange, pool)
            self._cooldowns[key] = max(self._cooldowns.get(key, 0.0), until)
            return self._cooldowns[key] - self._clock()
