"""A limiter backend in one process's memory, on the pure reference algorithms.

Used by unit tests (with an injected clock) and as the market-data fallback when the shared
Redis is unreachable. Warning: it limits only this process; a fleet of N processes using it
gets N times the budget unless each is given a 1/N share (see ExchangeRateLimitManager).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ratelimit import algorithms
from ratelimit.backend import Charge, Decision, Op, Settlement, Shortcuts
from ratelimit.pools import PoolSpec, RateLimitResult

T = TypeVar("T")


def _same(value: Any) -> Any:
    return value


class MemoryBackend(Shortcuts):
    """Keep pool states in a dict guarded by a lock; time from ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], algorithms.State] = {}
        self._cooldowns: dict[tuple[str, str | None], float] = {}
        self._lock = threading.Lock()

    def _cooldown_left(self, exchange: str, charges: Sequence[Charge], now: float) -> float:
        keys = [(exchange, None), *((exchange, c.pool.name) for c in charges)]
        return max((self._cooldowns.get(k, now) - now for k in keys), default=0.0)

    def decision(self, decision: Decision) -> Op[RateLimitResult]:
        """Admit (and charge) only if every pool allows it and no cooldown runs."""
        return Op(_same, local=lambda: self._decide(decision))

    def settlement(self, settlement: Settlement) -> Op[None]:
        """Re-stamp the request's held sliding-window charges at the completion time."""
        return Op(_same, local=lambda: self._settle(settlement))

    def observation(
        self, exchange: str, usage: Sequence[tuple[PoolSpec, float]], *, now: float | None = None
    ) -> Op[None]:
        """Raise each pool's count to the usage the exchange reported."""
        return Op(_same, local=lambda: self._observe(exchange, usage, now))

    def cooling(self, exchange: str, seconds: float, pool: str | None, reason: str) -> Op[float]:
        """Refuse the pool (or the whole exchange) for ``seconds``; never shorten a cooldown."""
        return Op(_same, local=lambda: self._cooldown(exchange, seconds, pool))

    def run(self, op: Op[T]) -> T:
        """Run ``op`` (in memory: nothing to wait for)."""
        if op.local is None:
            raise TypeError("a memory backend runs only in-process operations")
        return op.parse(op.local())

    async def arun(self, op: Op[T]) -> T:
        """Run ``op``; in memory the async form is the sync one."""
        return self.run(op)

    def _decide(self, decision: Decision) -> RateLimitResult:
        exchange, charges, priority = decision.exchange, decision.charges, decision.priority
        charge, now = decision.charge, decision.now
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
                ticket, hold = decision.ticket or "", decision.hold if decision.ticket else 0.0
                for c in charges:
                    key = (exchange, c.pool.name)
                    state = self._states.get(key, {})
                    self._states[key] = algorithms.charge(
                        c.pool, state, now, c.weight, ticket=ticket, hold=hold
                    )
            return RateLimitResult(denied is None, retry_after, remaining, denied, at=now)

    def _settle(self, settlement: Settlement) -> None:
        with self._lock:
            now = self._clock() if settlement.now is None else settlement.now
            for c in settlement.sliding:
                key = (settlement.exchange, c.pool.name)
                state = self._states.get(key, {})
                self._states[key] = algorithms.settle(
                    c.pool, state, now, c.weight, settlement.ticket
                )

    def _observe(
        self, exchange: str, usage: Sequence[tuple[PoolSpec, float]], now: float | None
    ) -> None:
        with self._lock:
            now = self._clock() if now is None else now
            for pool, used in usage:
                key = (exchange, pool.name)
                self._states[key] = algorithms.observe(pool, self._states.get(key, {}), now, used)

    def _cooldown(self, exchange: str, seconds: float, pool: str | None) -> float:
        with self._lock:
            until = self._clock() + seconds
            key = (exchange, pool)
            self._cooldowns[key] = max(self._cooldowns.get(key, 0.0), until)
            return self._cooldowns[key] - self._clock()
