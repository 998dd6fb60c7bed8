"""The resilient client: every exchange call through limiter, breaker, retry, cache, fallback.

client = ResilientAPIClient(redis_client)
answer = await client.resilient_request(
    exchange="binance", endpoint="fetch_ticker", params={"symbol": "BTC/USDT"},
    fallback_config=FallbackConfig(level=FallbackLevel.PARTIAL))
answer.data, answer.level, answer.source
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from core.config import SUPPORTED_EXCHANGES, AppConfig, ExchangeConfig
from core.errors import (
    CircuitOpenError,
    CryptoAIError,
    GiveUpError,
    InvalidRequestError,
    OutcomeUnknownError,
    StopError,
)
from core.events import emit
from core.keys import KeySpace
from core.tracing import add_event, set_attributes, span
from exchanges.gateway import CcxtGateway, endpoint_class, is_cancel, is_write
from ratelimit.manager import ExchangeRateLimitManager
from resilience.breaker import SharedBreaker
from resilience.cache import Coalescer, ResponseCache, request_digest
from resilience.fallback import FallbackConfig, FallbackLevel, ResilientResponse
from resilience.retry import RetryConfig, retry_async

log = logging.getLogger(__name__)


class ResilientAPIClient:
    """Make exchange calls that survive faults without turning them into bans or duplicates."""

    def __init__(
        self,
        redis_client: redis.Redis,
        config: AppConfig | None = None,
        *,
        limiter: ExchangeRateLimitManager | None = None,
        gateway: CcxtGateway | None = None,
        retry: RetryConfig | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        coalesce: bool = True,
    ) -> None:
        self.config = config or AppConfig(
            exchanges={name: ExchangeConfig() for name in SUPPORTED_EXCHANGES}
        )
        self.redis = redis_client
        self.keys = KeySpace(self.config.redis.key_prefix)
        self.limiter = limiter or ExchangeRateLimitManager(redis_client, self.config)
        self.gateway = gateway or CcxtGateway(self.config, self.limiter)
        caching = self.config.performance.caching
        self.cache = ResponseCache(redis_client, self.keys, caching.max_cache_size)
        self.coalescer = Coalescer(redis_client, self.keys)
        default = self.config.retry_strategies.get("default")
        self.retry = retry or (RetryConfig.from_settings(default) if default else RetryConfig())
        self._sleep = sleep
        self.coalesce = coalesce
        self._breakers: dict[tuple[str, str], SharedBreaker] = {}

    def breaker(self, exchange: str, klass: str) -> SharedBreaker:
        """Return the fleet-wide breaker of an exchange's endpoint class."""
        if (exchange, klass) not in self._breakers:
            settings = self.config.exchanges[exchange].circuit_breaker
            self._breakers[(exchange, klass)] = SharedBreaker(
                self.redis,
                exchange,
                klass,
                failure_threshold=settings.failure_threshold,
                recovery_timeout=settings.recovery_timeout,
                keys=self.keys,
                trial_timeout=self.gateway.timeout_ms / 1000,
            )
        return self._breakers[(exchange, klass)]

    async def resilient_request(
        self,
        exchange: str,
        endpoint: str,
        params: dict[str, Any] | None = None,
        fallback_config: FallbackConfig | None = None,
    ) -> ResilientResponse:
        """Make one logical call; the answer says which fallback level served it."""
        with span("exchange.request", exchange=exchange, endpoint=endpoint):
            answer = await self._request(exchange, endpoint, params, fallback_config)
            set_attributes(
                fallback_level=answer.level.name,
                source=answer.source,
                stale=answer.stale,
                age=answer.age,
            )
        emit(
            "fallback.answer",
            exchange=exchange,
            level=answer.level.name,
            source=answer.source.split(":")[0],
        )
        return answer

    async def _request(
        self,
        exchange: str,
        endpoint: str,
        params: dict[str, Any] | None,
        fallback_config: FallbackConfig | None,
    ) -> ResilientResponse:
        fc = fallback_config or FallbackConfig()
        params = dict(params or {})
        if exchange not in self.config.exchanges:
            raise InvalidRequestError(
                f"unknown exchange {exchange!r}; configured: {', '.join(self.config.exchanges)}"
            )
        if is_write(endpoint):
            if fc.level == FallbackLevel.EMERGENCY and not is_cancel(endpoint):
                raise StopError(f"{exchange}: EMERGENCY level: only reads and cancels are sent")
            return await asyncio.wait_for(self._write(exchange, endpoint, params), fc.timeout)
        return await self._read_request(exchange, endpoint, params, fc)

    async def _read_request(
        self, exchange: str, endpoint: str, params: dict[str, Any], fc: FallbackConfig
    ) -> ResilientResponse:
        digest = request_digest(exchange, endpoint, params)
        if fc.cache_enabled and fc.fresh_ttl > 0:
            cached = self.cache.get(digest)
            if cached is not None and cached.age() <= fc.fresh_ttl:
                return ResilientResponse(
                    cached.value, FallbackLevel.NONE, "cache", age=cached.age()
                )

        async def read() -> Any:
            return await self._read(exchange, endpoint, params)

        try:
            # account state (balances, open orders) must be read fresh, never shared
            if self.coalesce and endpoint_class(endpoint) == "public":
                data, shared = await asyncio.wait_for(self.coalescer.run(digest, read), fc.timeout)
            else:
                data, shared = await asyncio.wait_for(read(), fc.timeout), False
        except GiveUpError:
            raise
        except (CryptoAIError, TimeoutError) as error:
            return await self._degrade(
                exchange, endpoint, params, fc=fc, digest=digest, error=error
            )
        if fc.cache_enabled:
            self.cache.put(digest, data, fc.cache_ttl)
        return ResilientResponse(data, FallbackLevel.NONE, "coalesced" if shared else "exchange")

    async def _guarded(
        self, exchange: str, endpoint: str, params: dict[str, Any], base_url: str | None = None
    ) -> Any:
        breaker = self.breaker(exchange, endpoint_class(endpoint))
        try:
            answer = breaker.allow()
        except CircuitOpenError as exc:
            add_event("breaker.rejected", breaker=breaker.name, retry_after=exc.retry_after)
            raise
        trial = answer.state == "half_open"
        try:
            data = await self.gateway.call(exchange, endpoint, params, base_url)
        except BaseException as error:
            breaker.record(error, trial=trial)
            raise
        breaker.record(None, trial=trial)
        return data

    async def _read(
        self, exchange: str, endpoint: str, params: dict[str, Any], base_url: str | None = None
    ) -> Any:
        def on_retry(attempt: int, error: BaseException, wait: float) -> None:
            emit("exchange.retry", exchange=exchange, endpoint=endpoint)
            add_event("retry", attempt=attempt, error=type(error).__name__, wait=wait)
            log.info(
                "%s %s: attempt %d failed (%s); retrying in %.2fs",
                exchange,
                endpoint,
                attempt,
                error,
                wait,
            )

        return await retry_async(
            lambda: self._guarded(exchange, endpoint, params, base_url),
            self.retry,
            sleep=self._sleep,
            on_retry=on_retry,
        )

    async def _degrade(
        self,
        exchange: str,
        endpoint: str,
        params: dict[str, Any],
        *,
        fc: FallbackConfig,
        digest: str,
        error: BaseException,
    ) -> ResilientResponse:
        for url in fc.alternative_endpoints:
            try:
                data = await asyncio.wait_for(
                    self._read(exchange, endpoint, params, url), fc.timeout
                )
                return ResilientResponse(data, FallbackLevel.NONE, f"alternative:{url}")
            except (CryptoAIError, TimeoutError) as alt_error:
                log.warning(
                    "%s %s: alternative %s failed too: %s", exchange, endpoint, url, alt_error
                )
        level = FallbackLevel.parse(fc.level)
        reason = f"{type(error).__name__}: {error}"
        if level >= FallbackLevel.PARTIAL and fc.cache_enabled:
            cached = self.cache.get(digest)
            if cached is not None:
                return ResilientResponse(
                    cached.value,
                    FallbackLevel.PARTIAL,
                    "cache",
                    stale=True,
                    age=cached.age(),
                    error=reason,
                )
        if level >= FallbackLevel.FULL:
            if fc.fallback_function is not None:
                data = fc.fallback_function(
                    error, exchange=exchange, endpoint=endpoint, params=params
                )
                return ResilientResponse(
                    data, FallbackLevel.FULL, "fallback_function", error=reason
                )
            return ResilientResponse(None, FallbackLevel.FULL, "default", error=reason)
        raise error

    async def _write(
        self, exchange: str, endpoint: str, params: dict[str, Any]
    ) -> ResilientResponse:
        """Send an order or cancel; an unknown outcome is looked up before anything is resent."""
        if endpoint == "create_order":
            order_params = dict(params.get("params") or {})
            order_params.setdefault("clientOrderId", f"cai-{uuid.uuid4().hex[:24]}")
            params = {**params, "params": order_params}
        attempts = self.retry.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                data = await self._guarded(exchange, endpoint, params)
                return ResilientResponse(data, FallbackLevel.NONE, "exchange")
            except OutcomeUnknownError as error:
                log.warning(
                    "%s %s: outcome unknown (%s); looking the order up", exchange, endpoint, error
                )
                found = await self._reconcile(exchange, endpoint, params)
                if found is not None:
                    return ResilientResponse(found, FallbackLevel.NONE, "reconciled")
                if attempt == attempts:
                    raise
                await self._sleep(self.retry.backoff(attempt - 1))
        raise AssertionError("unreachable")

    async def _reconcile(self, exchange: str, endpoint: str, params: dict[str, Any]) -> Any:
        symbol = params.get("symbol", "")
        if endpoint == "create_order":
            client_id = params["params"]["clientOrderId"]
            return await retry_async(
                lambda: self.gateway.find_order(exchange, symbol, client_id),
                self.retry,
                sleep=self._sleep,
            )
        if endpoint == "cancel_order":
            order = await retry_async(
                lambda: self.gateway.call(
                    exchange, "fetch_order", {"id": params.get("id"), "symbol": symbol}
                ),
                self.retry,
                sleep=self._sleep,
            )
            return order if order.get("status") == "canceled" else None
        return None

    async def close(self) -> None:
        """Close the HTTP sessions of the running event loop."""
        await self.gateway.close()
