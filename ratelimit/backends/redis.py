"""The fleet-wide limiter backend: one atomic Lua call per decision, on the Redis clock.

Scripts are package files loaded with ``register_script`` (EVALSHA, falling back to EVAL
after a SCRIPT FLUSH or a failover). Every key one call touches shares the exchange's hash
tag (see ``core.keys``), so this works on Redis Cluster.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any, TypeVar

import redis
import redis.asyncio

from core.errors import LimiterUnavailableError
from core.keys import KeySpace
from ratelimit.backend import Charge, Decision, Op, Settlement, Shortcuts
from ratelimit.backends.clients import RedisClients, sync_client
from ratelimit.pools import PoolSpec, Priority, RateLimitResult

__all__ = ["RedisBackend", "sync_client"]

T = TypeVar("T")


def _script_text(name: str) -> str:
    return resources.files("ratelimit").joinpath("lua", name).read_text(encoding="utf-8")


def _number(raw: bytes | str) -> float:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return math.inf if text == "inf" else float(text)


def _fmt(value: float) -> str:
    return repr(float(value))


class RedisBackend(Shortcuts):
    """Keep pool state in Redis and decide with one script call per request.

    An operation runs blocking (:meth:`run`) or awaited (:meth:`arun`, for async code, which
    never blocks its event loop); both send the same script and arguments.
    """

    def __init__(
        self, client: redis.Redis | redis.asyncio.Redis | RedisClients, keys: KeySpace | None = None
    ) -> None:
        self.clients = client if isinstance(client, RedisClients) else RedisClients(client)
        self.client = self.clients.sync
        self.keys = keys or KeySpace()
        self._acquire = self.clients.script(_script_text("acquire.lua"))
        self._settle = self.clients.script(_script_text("settle.lua"))
        self._observe = self.clients.script(_script_text("observe.lua"))
        self._cooldown = self.clients.script(_script_text("cooldown.lua"))

    def run(self, op: Op[T]) -> T:
        """Run ``op``, blocking."""
        if op.local is not None:
            return op.parse(op.local())
        try:
            reply = op.script(op.keys, op.args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            return op.failed(_unreachable(exc))
        return op.parse(reply)

    async def arun(self, op: Op[T]) -> T:
        """Run ``op`` on the running loop's asyncio client."""
        if op.local is not None:
            return op.parse(op.local())
        try:
            reply = await op.script.run(op.keys, op.args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            return op.failed(_unreachable(exc))
        return op.parse(reply)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - bounded; backends live as long as the process
    def _layout(
        self, exchange: str, charges: tuple[Charge, ...], priority: Priority
    ) -> tuple[list[str], list[str]]:
        """Return the script's keys and per-pool arguments (cached: the hot path repeats)."""
        keys = [self.keys.exchange_cooldown(exchange)]
        args: list[str] = []
        for c in charges:
            p = c.pool
            keys += [
                self.keys.pool_state(exchange, p.name),
                self.keys.pool_aux(exchange, p.name),
                self.keys.pool_cooldown(exchange, p.name),
            ]
            args += [
                p.algorithm,
                _fmt(p.limit),
                _fmt(p.window),
                _fmt(p.rate),
                _fmt(c.weight),
                _fmt(p.reserved_units(priority)),
            ]
        return keys, args

    def decision(self, decision: Decision) -> Op[RateLimitResult]:
        """Admit (and charge) only if every pool allows it and no cooldown runs."""
        d = decision
        keys, pool_args = self._layout(d.exchange, d.charges, d.priority)
        args = [
            "" if d.now is None else _fmt(d.now),
            str(len(d.charges)),
            "1" if d.charge else "0",
            d.ticket or "",
            _fmt(d.hold),
        ]
        return Op(lambda reply: _result(d.charges, reply), self._acquire, keys, args + pool_args)

    def settlement(self, settlement: Settlement) -> Op[None]:
        """Re-stamp the request's held sliding-window charges at the completion time."""
        s, keys = settlement, []
        if not s.sliding:
            return Op(lambda reply: None, local=lambda: None)
        args = ["" if s.now is None else _fmt(s.now), str(len(s.sliding)), s.ticket]
        for c in s.sliding:
            keys += [
                self.keys.pool_state(s.exchange, c.pool.name),
                self.keys.pool_aux(s.exchange, c.pool.name),
            ]
            args += [_fmt(c.pool.window), _fmt(c.weight)]
        return Op(lambda reply: None, self._settle, keys, args)

    def observation(
        self, exchange: str, usage: Sequence[tuple[PoolSpec, float]], *, now: float | None = None
    ) -> Op[None]:
        """Raise each pool's count to the usage the exchange reported."""
        keys: list[str] = []
        args = ["" if now is None else _fmt(now), str(len(usage))]
        for pool, used in usage:
            keys += [
                self.keys.pool_state(exchange, pool.name),
                self.keys.pool_aux(exchange, pool.name),
            ]
            args += [pool.algorithm, _fmt(pool.limit), _fmt(pool.window), _fmt(pool.rate)]
            args.append(_fmt(used))
        return Op(lambda reply: None, self._observe, keys, args)

    def cooling(self, exchange: str, seconds: float, pool: str | None, reason: str) -> Op[float]:
        """Refuse the pool (or the whole exchange) for ``seconds``; never shorten a cooldown."""
        key = (
            self.keys.exchange_cooldown(exchange)
            if pool is None
            else self.keys.pool_cooldown(exchange, pool)
        )
        args = [str(math.ceil(seconds * 1000)), reason]
        return Op(lambda left_ms: float(left_ms) / 1000.0, self._cooldown, [key], args)


def _unreachable(exc: Exception) -> LimiterUnavailableError:
    error = LimiterUnavailableError(f"rate limiter Redis unreachable: {exc}")
    error.__cause__ = exc
    return error


def _result(charges: Sequence[Charge], reply: Any) -> RateLimitResult:
    allowed, retry_after, at, denied, cooldown = reply[:5]
    remaining = {
        c.pool.name: _number(raw) for c, raw in zip(charges, reply[5:], strict=True) if raw
    }
    return RateLimitResult(
        allowed=bool(allowed),
        retry_after=_number(retry_after),
        remaining=remaining,
        denied_by=charges[int(denied) - 1].pool.name if int(denied) else None,
        cooldown=bool(cooldown),
        at=_number(at),
    )
