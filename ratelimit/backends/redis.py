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
from typing import Any

import redis
import redis.asyncio

from core.errors import LimiterUnavailableError
from core.keys import KeySpace
from ratelimit.backend import Charge
from ratelimit.pools import PoolSpec, Priority, RateLimitResult

#: The sync connection class for each asyncio one (same arguments, blocking sockets).
_SYNC_CONNECTIONS: dict[type[redis.asyncio.connection.AbstractConnection], type[Any]] = {
    redis.asyncio.Connection: redis.Connection,
    redis.asyncio.SSLConnection: redis.SSLConnection,
    redis.asyncio.UnixDomainSocketConnection: redis.UnixDomainSocketConnection,
}
# Their Retry and connect callback are coroutines: the sync client uses its own defaults.
_ASYNC_ONLY_KWARGS = ("retry", "redis_connect_func")


def sync_client(client: redis.Redis | redis.asyncio.Redis) -> redis.Redis:
    """Return ``client``, or for an asyncio client a sync one on the same server and settings.

    The limiter, breakers and cache run blocking Lua calls (from worker threads in the async
    API), so an asyncio client is rebuilt from its pool's connection arguments. Replies are
    bytes, as the fleet's own clients return them, whatever ``decode_responses`` says.
    """
    if isinstance(client, redis.Redis):
        return client
    if not isinstance(client, redis.asyncio.Redis):
        raise TypeError(
            f"expected a redis.Redis or redis.asyncio.Redis client, got {type(client).__name__}"
        )
    pool = client.connection_pool
    connection = _SYNC_CONNECTIONS.get(pool.connection_class)
    if connection is None:
        raise TypeError(
            f"cannot derive a sync client from {pool.connection_class.__name__} connections; "
            "pass a redis.Redis"
        )
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in _ASYNC_ONLY_KWARGS}
    kwargs["decode_responses"] = False
    sync_pool = redis.ConnectionPool(
        connection_class=connection, max_connections=pool.max_connections, **kwargs
    )
    return redis.Redis(connection_pool=sync_pool)


def _script_text(name: str) -> str:
    return resources.files("ratelimit").joinpath("lua", name).read_text(encoding="utf-8")


def _number(raw: bytes | str) -> float:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return math.inf if text == "inf" else float(text)


def _fmt(value: float) -> str:
    return repr(float(value))


class RedisBackend:
    """Keep pool state in Redis and decide with one script call per request."""

    def __init__(self, client: redis.Redis, keys: KeySpace | None = None) -> None:
        self.client = client
        self.keys = keys or KeySpace()
        self._acquire = client.register_script(_script_text("acquire.lua"))
        self._observe = client.register_script(_script_text("observe.lua"))
        self._cooldown = client.register_script(_script_text("cooldown.lua"))

    def _run(self, script: Any, keys: list[str], args: list[str]) -> Any:
        try:
            return script(keys=keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise LimiterUnavailableError(f"rate limiter Redis unreachable: {exc}") from exc

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
        keys, pool_args = self._layout(exchange, tuple(charges), priority)
        args = ["" if now is None else _fmt(now), str(len(charges)), "1" if charge else "0"]
        args += pool_args
        reply = self._run(self._acquire, keys, args)
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

    def observe(
        self, exchange: str, usage: Sequence[tuple[PoolSpec, float]], *, now: float | None = None
    ) -> None:
        """Raise each pool's count to the usage the exchange reported."""
        if not usage:
            return
        keys: list[str] = []
        args = ["" if now is None else _fmt(now), str(len(usage))]
        for pool, used in usage:
            keys += [
                self.keys.pool_state(exchange, pool.name),
                self.keys.pool_aux(exchange, pool.name),
            ]
            args += [
                pool.algorithm,
                _fmt(pool.limit),
                _fmt(pool.window),
                _fmt(pool.rate),
                _fmt(used),
            ]
        self._run(self._observe, keys, args)

    def cooldown(self, exchange: str, seconds: float, pool: str | None, reason: str) -> float:
        """Refuse the pool (or the whole exchange) for ``seconds``; never shorten a cooldown."""
        key = (
            self.keys.exchange_cooldown(exchange)
            if pool is None
            else self.keys.pool_cooldown(exchange, pool)
        )
        left_ms = self._run(self._cooldown, [key], [str(math.ceil(seconds * 1000)), reason])
        return float(left_ms) / 1000.0
