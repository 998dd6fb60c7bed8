"""The seed's limiter API over the fleet-wide backend: check, acquire, and exchange feedback.

manager = ExchangeRateLimitManager(redis_client)          # the fleet's config and tables
result = await manager.check_request("binance", "public")  # decide and charge, no wait
result = manager.acquire("binance", "GET /api/v3/depth", params={"limit": 500},
                         priority="low", max_wait=10)      # wait for budget, or raise
manager.report_headers("binance", response.headers)       # the exchange's own count
manager.report_throttle("binance", 429, retry_after=12)   # fleet-wide cooldown
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from core.config import SUPPORTED_EXCHANGES, AppConfig, ExchangeConfig
from core.errors import LimiterUnavailableError, RateLimitedError
from core.events import emit
from core.keys import KeySpace
from ratelimit.backend import Charge, LimiterBackend
from ratelimit.backends.memory import MemoryBackend
from ratelimit.limits import build_limits, share
from ratelimit.pools import Priority, RateLimitResult
from ratelimit.tables import ExchangeTable, llm_table, requests_table, scope_weights

if TYPE_CHECKING:
    import redis
    import redis.asyncio

log = logging.getLogger(__name__)

#: Cooldown when a 429/418 carries no Retry-After (Binance always sends one).
DEFAULT_COOLDOWN = 60.0


def _default_config() -> AppConfig:
    return AppConfig(exchanges={name: ExchangeConfig() for name in SUPPORTED_EXCHANGES})


class ExchangeRateLimitManager:
    """Admit requests against each exchange's pools, shared by every process of the fleet.

    ``redis_client`` is a ``redis.Redis`` or a ``redis.asyncio.Redis``. Without ``config``,
    a manager on a Redis client uses the fleet's (``$CRYPTO_AI_CONFIG``, else
    ``./config.yaml``): its exchanges, limits and key prefix, so it charges the pools the
    running fleet charges; one on an explicit ``backend`` gets the five default tables.

    Warning: when Redis is unreachable, order scopes fail closed (LimiterUnavailableError);
    market-data scopes fall back to a per-process limiter with a ``1/fleet_processes`` share
    if ``rate_limiting.on_redis_unavailable`` is ``local_share`` (the default).
    """

    def __init__(
        self,
        redis_client: redis.Redis | redis.asyncio.Redis | None = None,
        config: AppConfig | None = None,
        *,
        backend: LimiterBackend | None = None,
        keys: KeySpace | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if config is None and backend is None and redis_client is not None:
            from core.config_loader import load_config

            config = load_config()
        self.config = config or _default_config()
        self.settings = self.config.rate_limiting
        self.tables = build_limits(self.config)
        if self.config.llm.configured:
            self.tables["llm"] = llm_table(self.config.llm)
        for api in self.config.news.apis:
            self.tables[f"news:{api.name}"] = requests_table(api.requests_per_minute)
        if backend is None:
            if redis_client is None:
                raise ValueError("pass a redis client (fleet-wide) or a backend")
            from ratelimit.backends.redis import RedisBackend, sync_client

            backend = RedisBackend(
                sync_client(redis_client), keys or KeySpace(self.config.redis.key_prefix)
            )
        self.backend = backend
        self._local: MemoryBackend | None = None
        self._local_tables = share(self.tables, self.settings.fleet_processes)
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def table(self, exchange: str) -> ExchangeTable:
        """Return the effective limits of a configured exchange."""
        try:
            return self.tables[exchange]
        except KeyError:
            known = ", ".join(sorted(self.tables)) or "none"
            raise ValueError(f"unknown exchange {exchange!r}; configured: {known}") from None

    def charges(
        self,
        exchange: str,
        scope: str,
        params: Mapping[str, object] | None = None,
        weight: float | None = None,
        tables: Mapping[str, ExchangeTable] | None = None,
    ) -> list[Charge]:
        """Return what one request spends in each pool (``weight`` overrides the main one)."""
        table = (tables or self.tables).get(exchange) or self.table(exchange)
        try:
            weights = scope_weights(table, scope, params)
        except KeyError as exc:
            raise ValueError(f"{exchange}: {exc.args[0]}") from None
        if weight is not None:
            weights[next(iter(weights))] = weight
        return [Charge(table.pool(name), w) for name, w in weights.items()]

    def is_order_scope(self, exchange: str, scope: str) -> bool:
        """Return True for scopes that move money (they fail closed)."""
        return scope in self.table(exchange).order_scopes

    def decide(
        self,
        exchange: str,
        scope: str = "public",
        *,
        params: Mapping[str, object] | None = None,
        weight: float | None = None,
        priority: Priority | str = Priority.MEDIUM,
        charge: bool = True,
    ) -> RateLimitResult:
        """Decide now (and charge if allowed) without waiting."""
        prio = Priority.parse(priority)
        charges = self.charges(exchange, scope, params, weight)
        try:
            return self.backend.decide(exchange, charges, prio, charge=charge)
        except LimiterUnavailableError:
            if self.is_order_scope(exchange, scope) or self.settings.on_redis_unavailable == "fail":
                raise
            return self._decide_locally(
                exchange=exchange,
                scope=scope,
                params=params,
                weight=weight,
                priority=prio,
                charge=charge,
            )

    def _decide_locally(
        self,
        *,
        exchange: str,
        scope: str,
        params: Mapping[str, object] | None,
        weight: float | None,
        priority: Priority,
        charge: bool,
    ) -> RateLimitResult:
        if self._local is None:
            log.warning(
                "rate limiter Redis unreachable: market data on %s now uses a local limiter "
                "with a 1/%d share of the budget; orders are refused until Redis returns",
                exchange,
                self.settings.fleet_processes,
            )
            self._local = MemoryBackend()
        charges = self.charges(exchange, scope, params, weight, self._local_tables)
        return self._local.decide(exchange, charges, priority, charge=charge)

    async def check_request(
        self,
        exchange: str,
        scope: str = "public",
        *,
        params: Mapping[str, object] | None = None,
        weight: float | None = None,
        priority: Priority | str = Priority.MEDIUM,
    ) -> RateLimitResult:
        """Decide and charge one request now; ``allowed`` False comes with ``retry_after``."""
        return await asyncio.to_thread(
            self.decide, exchange, scope, params=params, weight=weight, priority=priority
        )

    def _next_wait(
        self, exchange: str, result: RateLimitResult, waited: float, max_wait: float
    ) -> float:
        if result.never or waited + result.retry_after > max_wait:
            emit("limiter.denied", exchange=exchange, pool=result.denied_by)
        if result.never:
            raise RateLimitedError(
                f"request weight exceeds pool {result.denied_by}: it can never be admitted",
                retry_after=math.inf,
            )
        if waited + result.retry_after > max_wait:
            raise RateLimitedError(
                f"no budget within {max_wait:g}s (pool {result.denied_by or 'cooldown'}, "
                f"next in {result.retry_after:.3f}s)",
                retry_after=result.retry_after,
            )
        # a little jitter so processes released by the same refill do not collide
        return result.retry_after * (1.0 + 0.05 * self._rng.random()) + 0.001

    def acquire(
        self,
        exchange: str,
        scope: str = "public",
        *,
        params: Mapping[str, object] | None = None,
        weight: float | None = None,
        priority: Priority | str = Priority.MEDIUM,
        max_wait: float | None = None,
    ) -> RateLimitResult:
        """Block until the request is admitted and charged; raise RateLimitedError past max_wait."""
        limit = self.settings.max_wait if max_wait is None else max_wait
        start = self._clock()
        while True:
            result = self.decide(exchange, scope, params=params, weight=weight, priority=priority)
            waited = self._clock() - start
            if result.allowed:
                return dataclasses.replace(result, waited=waited)
            self._sleep(self._next_wait(exchange, result, waited, limit))

    async def acquire_async(
        self,
        exchange: str,
        scope: str = "public",
        *,
        params: Mapping[str, object] | None = None,
        weight: float | None = None,
        priority: Priority | str = Priority.MEDIUM,
        max_wait: float | None = None,
    ) -> RateLimitResult:
        """Await until the request is admitted and charged; raise RateLimitedError past max_wait."""
        limit = self.settings.max_wait if max_wait is None else max_wait
        start = self._clock()
        while True:
            result = await self.check_request(
                exchange, scope, params=params, weight=weight, priority=priority
            )
            waited = self._clock() - start
            if result.allowed:
                return dataclasses.replace(result, waited=waited)
            await asyncio.sleep(self._next_wait(exchange, result, waited, limit))

    def report_headers(self, exchange: str, headers: Mapping[str, str]) -> dict[str, float]:
        """Adopt the exchange's own usage counts from response headers; return what was read.

        Binance sends ``X-MBX-USED-WEIGHT-1M`` and ``X-MBX-ORDER-COUNT-10S``/``-1D``. A count
        above ours raises the shared count; a lower one changes nothing.
        """
        table = self.table(exchange)
        lowered = {k.lower(): v for k, v in headers.items()}
        usage: dict[str, float] = {}
        for header, pool in table.usage_headers.items():
            raw = lowered.get(header)
            if raw is None:
                continue
            try:
                usage[pool] = float(raw)
            except ValueError:
                log.warning("%s: ignoring malformed %s header %r", exchange, header, raw)
        if usage:
            self.backend.observe(exchange, [(table.pool(p), used) for p, used in usage.items()])
        return usage

    def report_throttle(
        self,
        exchange: str,
        status: int,
        retry_after: float | None = None,
        pool: str | None = None,
    ) -> float:
        """Start a fleet-wide cooldown after a 429/418; return its length in seconds.

        ``pool`` limits the cooldown to one pool (e.g. Binance's ORDERS_10S after -1015);
        None stops every request to the exchange, which is what an IP-wide 429/418 needs.
        """
        seconds = retry_after if retry_after and retry_after > 0 else DEFAULT_COOLDOWN
        if pool is not None:
            self.table(exchange).pool(pool)
        left = self.backend.cooldown(exchange, seconds, pool, f"http {status}")
        emit("exchange.throttled", exchange=exchange, status=status, seconds=left)
        log.warning(
            "%s answered %s: no process of the fleet calls %s for %.1fs",
            exchange,
            status,
            pool or "it",
            left,
        )
        return left
