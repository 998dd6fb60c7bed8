"""The seed's limiter API over the fleet-wide backend: check, acquire, and exchange feedback.

manager = ExchangeRateLimitManager(redis_client)          # the fleet's config and tables
result = await manager.check_request("binance", "public")  # decide and charge, no wait
result = manager.acquire("binance", "GET /api/v3/depth", params={"limit": 500},
                         priority="low", max_wait=10)      # wait for budget, or raise
result = await manager.acquire_async("okx", "GET /api/v5/market/ticker",
                                     ticket=ticket, hold=10)  # held while in flight
await manager.asettle("okx", "GET /api/v5/market/ticker", ticket)  # it completed
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
from typing import TYPE_CHECKING, TypedDict, Unpack

from core.config import SUPPORTED_EXCHANGES, AppConfig, ExchangeConfig
from core.errors import LimiterUnavailableError, RateLimitedError
from core.events import emit
from core.keys import KeySpace
from ratelimit.backend import Charge, Decision, LimiterBackend, Op, Settlement
from ratelimit.backends.memory import MemoryBackend
from ratelimit.feedback import UsageFeedback
from ratelimit.limits import build_limits, share
from ratelimit.pools import Priority, RateLimitResult
from ratelimit.tables import ExchangeTable, llm_table, requests_table, scope_weights

if TYPE_CHECKING:
    import redis
    import redis.asyncio

log = logging.getLogger(__name__)


class Ask(TypedDict, total=False):
    """What one limiter decision may say besides the exchange and scope."""

    params: Mapping[str, object] | None
    weight: float | None
    priority: Priority | str
    charge: bool
    ticket: str | None
    hold: float


class Wait(TypedDict, total=False):
    """What a waiting admission may say besides the exchange and scope.

    ``ticket`` (unique per request) and ``hold`` (seconds, at least the request's time in
    flight) hold its sliding-window charges until :meth:`ExchangeRateLimitManager.asettle`.
    """

    params: Mapping[str, object] | None
    weight: float | None
    priority: Priority | str
    max_wait: float | None
    ticket: str | None
    hold: float


def _default_config() -> AppConfig:
    return AppConfig(exchanges={name: ExchangeConfig() for name in SUPPORTED_EXCHANGES})


class ExchangeRateLimitManager(UsageFeedback):
    """Admit requests against each exchange's pools, shared by every process of the fleet.

    The exchange's own usage counts and 429/418 answers come back through
    :class:`~ratelimit.feedback.UsageFeedback` (``report_headers``, ``report_throttle``).

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
            from ratelimit.backends.redis import RedisBackend

            backend = RedisBackend(redis_client, keys or KeySpace(self.config.redis.key_prefix))
        self.backend = backend
        self._reported = {}
        self._local: MemoryBackend | None = None
        self._local_tables = share(self.tables, self.settings.fleet_processes)
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    #: The tables before learned limits (configured, less what the exchange published) and
    #: the learned limits this process prices with; set on first use.
    _untaught: dict[str, ExchangeTable] | None = None
    _taught: dict[str, dict[str, float]] | None = None

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

    def decision(self, exchange: str, scope: str, ask: Ask) -> Op[RateLimitResult]:
        """Return the decision as a backend operation; with Redis away, market data is
        decided on this process's share and orders fail closed."""
        priority = Priority.parse(ask.get("priority", Priority.MEDIUM))
        charge = ask.get("charge", True)
        params, weight = ask.get("params"), ask.get("weight")
        charges = tuple(self.charges(exchange, scope, params, weight))
        ticket, hold = ask.get("ticket"), ask.get("hold", 0.0)
        decision = Decision(exchange, charges, priority, charge, ticket=ticket, hold=hold)
        op = self.backend.decision(decision)

        def locally(error: LimiterUnavailableError) -> RateLimitResult:
            if self.is_order_scope(exchange, scope):
                raise error
            if self.settings.on_redis_unavailable == "fail":
                raise error
            if self._local is None:
                log.warning(
                    "rate limiter Redis unreachable: market data on %s now uses a local "
                    "limiter with a 1/%d share of the budget; orders are refused until Redis "
                    "returns",
                    exchange,
                    self.settings.fleet_processes,
                )
                self._local = MemoryBackend()
            charges = self.charges(exchange, scope, params, weight, self._local_tables)
            return self._local.decide(
                exchange, charges, priority, charge=charge, ticket=ticket, hold=hold
            )

        return op.on_failure(locally)

    def settlement(
        self,
        exchange: str,
        scope: str,
        ticket: str,
        params: Mapping[str, object] | None = None,
        weight: float | None = None,
    ) -> Op[None]:
        """Return the settlement of a request admitted under ``ticket`` as a backend operation.

        Its sliding-window charges count from now for one window (``ratelimit.algorithms``).
        Warning: with Redis away the charges stay held until their hold runs out (the fleet
        then counts them longer, never shorter); the local fallback's are settled locally.
        """
        charges = tuple(self.charges(exchange, scope, params, weight))
        op = self.backend.settlement(Settlement(exchange, charges, ticket))

        def locally(error: LimiterUnavailableError) -> None:
            if self._local is not None:
                shared = self.charges(exchange, scope, params, weight, self._local_tables)
                self._local.settle(exchange, shared, ticket)
            else:
                log.warning("%s: could not settle a request with the limiter: %s", exchange, error)

        return op.on_failure(locally)

    def settle(
        self,
        exchange: str,
        scope: str,
        ticket: str,
        params: Mapping[str, object] | None = None,
        weight: float | None = None,
    ) -> None:
        """Settle a request admitted under ``ticket``: it has completed (blocking)."""
        self.backend.run(self.settlement(exchange, scope, ticket, params, weight))

    async def asettle(
        self,
        exchange: str,
        scope: str,
        ticket: str,
        params: Mapping[str, object] | None = None,
        weight: float | None = None,
    ) -> None:
        """Settle a request admitted under ``ticket``: it has completed."""
        await self.backend.arun(self.settlement(exchange, scope, ticket, params, weight))

    def decide(self, exchange: str, scope: str = "public", **ask: Unpack[Ask]) -> RateLimitResult:
        """Decide now (and charge if allowed) without waiting."""
        return self.backend.run(self.decision(exchange, scope, ask))

    async def check_request(
        self, exchange: str, scope: str = "public", **ask: Unpack[Ask]
    ) -> RateLimitResult:
        """Decide and charge one request now; ``allowed`` False comes with ``retry_after``."""
        return await self.backend.arun(self.decision(exchange, scope, ask))

    def _admitted(
        self, exchange: str, result: RateLimitResult, start: float, max_wait: float | None
    ) -> RateLimitResult | float:
        """Return the admitted result, or how long to sleep before asking again.

        Raises RateLimitedError when the request can never be admitted or not within
        ``max_wait`` (the settings' ``max_wait`` when None).
        """
        waited = self._clock() - start
        if result.allowed:
            return dataclasses.replace(result, waited=waited)
        limit = self.settings.max_wait if max_wait is None else max_wait
        if result.never or waited + result.retry_after > limit:
            emit("limiter.denied", exchange=exchange, pool=result.denied_by)
        if result.never:
            raise RateLimitedError(
                f"request weight exceeds pool {result.denied_by}: it can never be admitted",
                retry_after=math.inf,
            )
        if waited + result.retry_after > limit:
            raise RateLimitedError(
                f"no budget within {limit:g}s (pool {result.denied_by or 'cooldown'}, "
                f"next in {result.retry_after:.3f}s)",
                retry_after=result.retry_after,
            )
        # a little jitter so processes released by the same refill do not collide
        return result.retry_after * (1.0 + 0.05 * self._rng.random()) + 0.001

    def acquire(
        self, exchange: str, scope: str = "public", **wait: Unpack[Wait]
    ) -> RateLimitResult:
        """Block until the request is admitted and charged; raise RateLimitedError past max_wait."""
        op, admitted = self._waiting(exchange, scope, wait)
        while isinstance(step := admitted(self.backend.run(op)), float):
            self._sleep(step)
        return step

    async def acquire_async(
        self, exchange: str, scope: str = "public", **wait: Unpack[Wait]
    ) -> RateLimitResult:
        """Await until the request is admitted and charged; raise RateLimitedError past max_wait."""
        op, admitted = self._waiting(exchange, scope, wait)
        while isinstance(step := admitted(await self.backend.arun(op)), float):
            await asyncio.sleep(step)
        return step

    def _waiting(
        self, exchange: str, scope: str, wait: Wait
    ) -> tuple[Op[RateLimitResult], Callable[[RateLimitResult], RateLimitResult | float]]:
        """Return the decision to repeat and what reads each answer (admitted, or a sleep)."""
        ask = Ask(
            params=wait.get("params"),
            weight=wait.get("weight"),
            priority=wait.get("priority", Priority.MEDIUM),
            ticket=wait.get("ticket"),
            hold=wait.get("hold", 0.0),
        )
        start, max_wait = self._clock(), wait.get("max_wait")
        op = self.decision(exchange, scope, ask)
        return op, lambda result: self._admitted(exchange, result, start, max_wait)
