"""The resilient client: every exchange call through cache, breaker, limiter, retry, fallback.

client = ResilientAPIClient(redis_client)
answer = await client.resilient_request(
    exchange="binance", endpoint="fetch_ticker", params={"symbol": "BTC/USDT"},
    fallback_config=FallbackConfig(level=FallbackLevel.PARTIAL))
answer.data, answer.level, answer.source

Each entry point builds one :class:`~exchanges.request.Request` (the endpoint parsed once,
the priority, the deadline from ``fallback_config.timeout``) and hands it to the steps, one
file each (docs/ARCHITECTURE.md draws the path):

- reads: ``resilience/reads.py`` (cache, batch or coalesce, ladder) over
  ``resilience/retry.py`` (attempts within the deadline) over ``resilience/attempt.py``
  (breaker and limiter around one ccxt call, ``exchanges/gateway.py``);
- many symbols: ``resilience/batched.py``;
- writes: the order gate ``resilience/orders.py``, which sends with
  ``resilience/writes.py`` (no blind retry; reconciled by client order id).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from core.config import AppConfig
from core.errors import InvalidRequestError, OrderRefusedError, StopError
from core.events import emit
from core.keys import KeySpace
from core.tracing import set_attributes, span
from exchanges.gateway import CcxtGateway
from exchanges.profiles import ExchangeProfile
from exchanges.request import Request
from ratelimit.backends.clients import RedisClients
from ratelimit.backends.redis import RedisBackend
from ratelimit.manager import ExchangeRateLimitManager
from resilience.attempt import Breakers, Sender
from resilience.batched import Batches
from resilience.batching import FleetBatcher, decode_outcome, encode_outcome
from resilience.breaker import SharedBreaker
from resilience.cache import Coalescer, ResponseCache
from resilience.fallback import FallbackConfig, FallbackLevel, ResilientResponse
from resilience.ladder import Ladder
from resilience.orders import OrderGate, OrderRequest
from resilience.reads import Reads
from resilience.retry import Retried, RetryConfig
from resilience.writes import Writes


class ResilientAPIClient:
    """Make exchange calls that survive faults without turning them into bans or duplicates."""

    def __init__(
        self,
        redis_client: redis.Redis | redis.asyncio.Redis,
        config: AppConfig | None = None,
        *,
        limiter: ExchangeRateLimitManager | None = None,
        gateway: CcxtGateway | None = None,
        retry: RetryConfig | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        coalesce: bool = True,
    ) -> None:
        from core.config_loader import load_config

        # No config (the seed's call): the fleet's file, so the exchanges, breakers and key
        # prefix are the running fleet's, never an unconfigured real exchange.
        self.config = config = config or load_config()
        self.clients = clients = RedisClients(redis_client)
        self.redis = clients.sync  # for sync callers; the path itself uses clients.aio()
        self.keys = keys = KeySpace(config.redis.key_prefix)
        # one set of Redis connections per event loop for the client and its limiter
        self.limiter = limiter or ExchangeRateLimitManager(
            config=config, backend=RedisBackend(clients, keys)
        )
        self.gateway = gateway or CcxtGateway(config, self.limiter)
        default = config.retry_strategies.get("default")
        self.retry = retry or (RetryConfig.from_settings(default) if default else RetryConfig())
        self._sleep = sleep
        self.cache = ResponseCache(clients, keys, config.performance.caching.max_cache_size)
        self.coalescer = Coalescer(clients, keys)
        batching = config.performance.batch_processing
        self.batcher = FleetBatcher(
            clients,
            keys,
            window=batching.batch_timeout,
            max_size=batching.batch_size,
            idle=batching.idle_timeout,
        )
        self.breakers = Breakers(config, clients, keys, self.gateway.timeout_ms / 1000)
        self.send = Sender(self.gateway, self.breakers)
        self.attempts = Retried(self.send, self.retry, sleep)
        self.batches = Batches(config, self.attempts, self.batcher, self.limiter, self.breakers)
        self.reads = Reads(
            config,
            attempts=self.attempts,
            cache=self.cache,
            coalescer=self.coalescer if coalesce else None,
            batches=self.batches,
            ladder=Ladder(self.attempts, self.cache),
        )
        self.writes = Writes(
            send=self.send,
            read=self.attempts,
            gateway=self.gateway,
            retry=self.retry,
            sleep=sleep,
            lookup_seconds=config.request_seconds() * self.retry.max_attempts,
        )
        #: The order gate every write of this client passes (resilience/orders.py).
        self.orders = OrderGate(self)

    def profile(self, exchange: str) -> ExchangeProfile:
        """Return what the fleet knows of a configured exchange (ccxt options, order ids)."""
        return self.gateway.profile(exchange)

    def timeframes(self, exchange: str) -> dict[str, Any]:
        """Return the candle timeframes the exchange serves (ccxt's ``timeframes``)."""
        return dict(self.gateway.timeframes(exchange))

    def breaker(self, exchange: str, klass: str) -> SharedBreaker:
        """Return the fleet-wide breaker of an exchange's endpoint class."""
        return self.breakers(exchange, klass)

    def request(
        self, exchange: str, endpoint: str, params: dict[str, Any] | None, timeout: float
    ) -> Request:
        """Return the request value for a call (the one place an endpoint is parsed)."""
        if exchange not in self.config.exchanges:
            raise InvalidRequestError(
                f"unknown exchange {exchange!r}; configured: {', '.join(self.config.exchanges)}"
            )
        return Request.build(exchange, endpoint, params, timeout=timeout)

    def _settings(self, fallback_config: FallbackConfig | None) -> FallbackConfig:
        """Return the request's fallback settings with the config's caching applied."""
        fc = fallback_config or FallbackConfig()
        caching = self.config.performance.caching
        return dataclasses.replace(fc, cache_enabled=fc.cache_enabled and caching.enabled)

    async def resilient_request(
        self,
        exchange: str,
        endpoint: str,
        params: dict[str, Any] | None = None,
        fallback_config: FallbackConfig | None = None,
    ) -> ResilientResponse:
        """Make one logical call; the answer says which fallback level served it."""
        fc = self._settings(fallback_config)
        request = self.request(exchange, endpoint, params, fc.timeout)
        with span("exchange.request", exchange=exchange, endpoint=endpoint):
            try:
                async with asyncio.timeout(fc.timeout):
                    if request.endpoint.write:
                        answer = await self._write(request, fc)
                    else:
                        answer = await self.reads.read(request, fc)
            except Exception as error:  # no answer at any level: the span says why
                set_attributes(error=type(error).__name__)
                raise
            set_attributes(
                fallback_level=answer.level.name,
                source=answer.source,
                stale=answer.stale,
                age=answer.age,
            )
        _report(exchange, answer)
        return answer

    async def _write(self, request: Request, fc: FallbackConfig) -> ResilientResponse:
        """Pass an order, amendment or cancel through the order gate; raise if it refuses.

        A write cut off by the caller's timeout keeps its claim until the claim lapses, so
        the next attempt waits and looks the order up before sending anything.
        """
        if fc.level == FallbackLevel.EMERGENCY and not request.endpoint.cancel:
            raise StopError(f"{request.exchange}: EMERGENCY level: only reads and cancels are sent")
        order = OrderRequest.parse(request.exchange, request.name, dict(request.params))
        answer = await self.orders.submit(order)
        if not answer.approved:
            raise OrderRefusedError(
                f"{request.exchange} {request.name} refused: {'; '.join(answer.reasons)}",
                answer.reasons,
            )
        return ResilientResponse(answer.order, FallbackLevel.NONE, answer.source)

    async def resilient_within(
        self,
        exchange: str,
        endpoint: str,
        symbol: str,
        universe: list[str],
        fallback_config: FallbackConfig | None = None,
    ) -> ResilientResponse:
        """Return one symbol's answer, read together with every symbol of ``universe``.

        For tasks that each need one symbol of a watchlist (market snapshots): the first
        task reads the whole watchlist in the fewest-weight batched calls (coalesced
        across the fleet) and caches each symbol; the others take their symbol from the
        cache while it is younger than ``fallback_config.fresh_ttl``. Failures are handled
        per symbol as a single request's would be.
        """
        fc = self._settings(fallback_config)
        request = self.request(exchange, endpoint, {"symbol": symbol}, fc.timeout)
        names = sorted(set(universe))
        if not (self.batches.enabled and self.batches.rule(request)) or symbol not in names:
            return await self.resilient_request(exchange, endpoint, {"symbol": symbol}, fc)
        cached = await self.reads.fresh(request, fc)
        if cached is not None:
            return cached

        async def read_all() -> dict[str, str]:
            outcomes = await self.batches.run(request, names)
            for name, outcome in outcomes.items():
                if fc.cache_enabled and not isinstance(outcome, BaseException):
                    one = request.to(endpoint, {"symbol": name})
                    await self.cache.put(one.digest, outcome, self.reads.ttl(fc))
            return {name: encode_outcome(outcome) for name, outcome in outcomes.items()}

        together = request.to(f"{endpoint}:within", {"symbols": names}).digest
        with span("exchange.request", exchange=exchange, endpoint=endpoint, symbols=len(names)):
            try:
                encoded, _ = await asyncio.wait_for(
                    self.coalescer.run(together, read_all), fc.timeout
                )
                outcome = decode_outcome(encoded[symbol])
            except TimeoutError as error:
                outcome = error
            # the read cached every symbol already
            answer = await self.reads.settle(request, outcome, fc, remember=False)
            set_attributes(fallback_level=answer.level.name, source=answer.source)
        _report(exchange, answer)
        return answer

    async def resilient_many(
        self,
        exchange: str,
        endpoint: str,
        symbols: list[str],
        fallback_config: FallbackConfig | None = None,
    ) -> dict[str, ResilientResponse]:
        """Fetch one kind of data for many symbols now, in the fewest-weight batched calls.

        Each symbol's answer is handled as a single request's would be: a failed call
        falls back per symbol (its cached value at PARTIAL, the fallback function at FULL)
        or raises; an unknown symbol raises InvalidRequestError.
        """
        fc = self._settings(fallback_config)
        names = list(dict.fromkeys(symbols))
        first = self.request(exchange, endpoint, {"symbol": names[0] if names else ""}, fc.timeout)
        if not (self.batches.enabled and self.batches.rule(first) and len(names) > 1):
            singles = [
                await self.resilient_request(exchange, endpoint, {"symbol": s}, fc) for s in names
            ]
            return dict(zip(names, singles, strict=True))
        with span("exchange.request", exchange=exchange, endpoint=endpoint, symbols=len(names)):
            try:
                outcomes = await asyncio.wait_for(self.batches.run(first, names), fc.timeout)
            except TimeoutError as error:
                outcomes = dict.fromkeys(names, error)
            answers = {}
            for symbol in names:
                one = first.to(endpoint, {"symbol": symbol})
                answers[symbol] = await self.reads.settle(one, outcomes[symbol], fc)
                _report(exchange, answers[symbol])
            return answers

    async def find_order(
        self, exchange: str, symbol: str, client_order_id: str, timeout: float = 30.0
    ) -> Any | None:
        """Return the order with this client order id, or None if the exchange has none."""
        request = self.request(exchange, "fetch_order", {"symbol": symbol}, timeout)
        return await self.writes.find_order(request, symbol, client_order_id)

    async def markets(self, exchange: str, timeout: float = 30.0) -> dict[str, Any]:
        """Return the exchange's markets by unified symbol (loaded once per instance)."""
        return dict(await self.attempts(self.request(exchange, "load_markets", {}, timeout)))

    async def close(self) -> None:
        """Close the HTTP sessions and the Redis connections of the running event loop."""
        await self.gateway.close()
        await self.clients.aclose()


def _report(exchange: str, answer: ResilientResponse) -> None:
    emit(
        "fallback.answer",
        exchange=exchange,
        level=answer.level.name,
        source=answer.source.split(":")[0],
    )
