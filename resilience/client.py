"""The resilient client: every exchange call through limiter, breaker, retry, cache, fallback.

client = ResilientAPIClient(redis_client)
answer = await client.resilient_request(
    exchange="binance", endpoint="fetch_ticker", params={"symbol": "BTC/USDT"},
    fallback_config=FallbackConfig(level=FallbackLevel.PARTIAL))
answer.data, answer.level, answer.source

A ``fetch_ticker`` for one symbol joins the fleet's open batch of ticker requests (see
``resilience/batching.py``) when ``performance.batch_processing`` is enabled and the
exchange has a batched form; ``resilient_many`` fetches many symbols at once, split into the
calls that spend the least weight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from core.config import AppConfig
from core.errors import (
    CircuitOpenError,
    CryptoAIError,
    GiveUpError,
    InvalidRequestError,
    OrderRefusedError,
    OutcomeUnknownError,
    StopError,
)
from core.events import emit
from core.keys import KeySpace
from core.tracing import add_event, set_attributes, span
from exchanges.batching import SHARED_READS, BatchRule, plan, rule_for
from exchanges.gateway import CcxtGateway, check_result, endpoint_class, is_cancel, is_write
from exchanges.limited import current_priority
from ratelimit.manager import ExchangeRateLimitManager
from resilience.batching import FleetBatcher, Outcomes, decode_outcome, encode_outcome
from resilience.breaker import SharedBreaker
from resilience.cache import Coalescer, ResponseCache, request_digest
from resilience.fallback import FallbackConfig, FallbackLevel, ResilientResponse
from resilience.orders import OrderGate, OrderRequest
from resilience.retry import RetryConfig, retry_async

log = logging.getLogger(__name__)


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
        from ratelimit.backends.redis import sync_client

        # No config (the seed's call): the fleet's file, so the exchanges, breakers and key
        # prefix are the running fleet's, never an unconfigured real exchange.
        self.config = config or load_config()
        # Breakers, cache and batcher run blocking Redis calls: an asyncio client is rebuilt.
        redis_client = sync_client(redis_client)
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
        batching = self.config.performance.batch_processing
        self.batching = batching.enabled
        self.batcher = FleetBatcher(
            redis_client,
            self.keys,
            window=batching.batch_timeout,
            max_size=batching.batch_size,
            idle=batching.idle_timeout,
        )
        self._breakers: dict[tuple[str, str], SharedBreaker] = {}
        #: The order gate every write of this client passes (resilience/orders.py).
        self.orders = OrderGate(self)

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
        _report(exchange, answer)
        return answer

    async def _request(
        self,
        exchange: str,
        endpoint: str,
        params: dict[str, Any] | None,
        fallback_config: FallbackConfig | None,
    ) -> ResilientResponse:
        fc = self._settings(fallback_config)
        params = dict(params or {})
        if exchange not in self.config.exchanges:
            raise InvalidRequestError(
                f"unknown exchange {exchange!r}; configured: {', '.join(self.config.exchanges)}"
            )
        if is_write(endpoint):
            if fc.level == FallbackLevel.EMERGENCY and not is_cancel(endpoint):
                raise StopError(f"{exchange}: EMERGENCY level: only reads and cancels are sent")
            # a write cut off by the caller's timeout keeps its claim until the claim lapses,
            # so the next attempt waits and looks the order up before sending anything
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

        batched = self._batchable(exchange, endpoint, params)
        try:
            if batched:
                data, shared = await asyncio.wait_for(
                    self._batched(exchange, endpoint, params), fc.timeout
                )
            # account state (balances, open orders) must be read fresh, never shared
            elif self.coalesce and endpoint_class(endpoint) == "public":
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
            self.cache.put(digest, data, self._ttl(fc))
        source = ("batched" if batched else "coalesced") if shared else "exchange"
        return ResilientResponse(data, FallbackLevel.NONE, source)

    def _settings(self, fallback_config: FallbackConfig | None) -> FallbackConfig:
        """Return the request's fallback settings with the config's caching applied."""
        fc = fallback_config or FallbackConfig()
        caching = self.config.performance.caching
        return dataclasses.replace(fc, cache_enabled=fc.cache_enabled and caching.enabled)

    def _ttl(self, fc: FallbackConfig) -> float:
        """Return how long a good answer is kept (the request's, else the config's default)."""
        default = self.config.performance.caching.default_ttl
        return default if fc.cache_ttl is None else fc.cache_ttl

    # -- batching ---------------------------------------------------------------------------

    def _rule(self, exchange: str, endpoint: str) -> BatchRule | None:
        settings = self.config.exchanges.get(exchange)
        if settings is None:
            return None
        return rule_for(settings.ccxt_id or exchange, endpoint)

    def _batchable(self, exchange: str, endpoint: str, params: dict[str, Any]) -> bool:
        if not self.batching or exchange not in self.config.exchanges:
            return False
        if endpoint in SHARED_READS:
            return not params
        return set(params) == {"symbol"} and self._rule(exchange, endpoint) is not None

    async def _batched(
        self, exchange: str, endpoint: str, params: dict[str, Any]
    ) -> tuple[Any, bool]:
        """Join the fleet's open batch for this kind of request; return (data, batched)."""
        self.breaker(exchange, endpoint_class(endpoint)).check()  # open: no batch to wait for
        # requests of one priority share a batch: the leader's call spends that priority
        priority = current_priority()
        kind = f"{exchange}:{endpoint}" + (
            f":{priority.name.lower()}" if priority is not None else ""
        )
        outcome = await self.batcher.submit(
            kind,
            str(params.get("symbol", "*")),
            lambda items: self._run_batch(exchange, endpoint, items),
        )
        if outcome is None:  # the batch's leader vanished: ask alone
            return await self._read(exchange, endpoint, params), False
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome, True

    async def _run_batch(self, exchange: str, endpoint: str, symbols: list[str]) -> Outcomes:
        """Fetch ``symbols`` in the cheapest calls; return each symbol's data or error.

        Unknown symbols are answered with InvalidRequestError without reaching the exchange,
        so one bad symbol cannot fail the others' batched call.
        """
        if endpoint in SHARED_READS:  # one call answers every (identical) request
            try:
                data: Any = await self._read(exchange, endpoint, {})
            except (CryptoAIError, TimeoutError) as error:
                data = error
            emit("batch.flushed", exchange=exchange, endpoint=endpoint, items=len(symbols))
            return dict.fromkeys(symbols, data)
        rule = self._rule(exchange, endpoint)
        if rule is None:
            raise InvalidRequestError(f"{exchange}: {endpoint} has no batched form")
        try:
            markets = await retry_async(
                lambda: self.gateway.markets(exchange), self.retry, sleep=self._sleep
            )
        except (CryptoAIError, TimeoutError) as error:
            return dict.fromkeys(symbols, error)
        outcomes: Outcomes = {}
        known = []
        for symbol in symbols:
            if symbol in markets:
                known.append(symbol)
            else:
                outcomes[symbol] = InvalidRequestError(f"{exchange} has no market {symbol!r}")
        chunks, start = [], 0
        for size in plan(len(known), self.limiter.table(exchange), rule):
            chunks.append(known[start : start + size])
            start += size
        results = await asyncio.gather(
            *(self._fetch_chunk(exchange, rule, chunk) for chunk in chunks),
            return_exceptions=True,
        )
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, BaseException):
                outcomes.update(dict.fromkeys(chunk, result))
            else:
                outcomes.update(result)
        emit("batch.flushed", exchange=exchange, endpoint=endpoint, items=len(symbols))
        add_event("batch", endpoint=endpoint, items=len(symbols), calls=len(chunks))
        return outcomes

    async def _fetch_chunk(self, exchange: str, rule: BatchRule, chunk: list[str]) -> Outcomes:
        if len(chunk) == 1:  # alone, the single call is never dearer than a batch of one
            return {chunk[0]: await self._read(exchange, rule.single, {"symbol": chunk[0]})}
        data = await self._read(exchange, rule.batched, {"symbols": chunk})
        outcomes: Outcomes = {}
        for symbol in chunk:
            try:
                outcomes[symbol] = check_result(rule.single, (data or {}).get(symbol))
            except CryptoAIError as error:
                outcomes[symbol] = error
        return outcomes

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
        params = {"symbol": symbol}
        digest = request_digest(exchange, endpoint, params)
        names = sorted(set(universe))
        if not (self.batching and self._rule(exchange, endpoint)) or symbol not in names:
            return await self.resilient_request(exchange, endpoint, params, fc)
        cached = self.cache.get(digest) if fc.cache_enabled else None
        if cached is not None and cached.age() <= fc.fresh_ttl:
            return ResilientResponse(cached.value, FallbackLevel.NONE, "cache", age=cached.age())

        async def read_all() -> dict[str, str]:
            outcomes = await self._run_batch(exchange, endpoint, names)
            for name, outcome in outcomes.items():
                if fc.cache_enabled and not isinstance(outcome, BaseException):
                    self.cache.put(
                        request_digest(exchange, endpoint, {"symbol": name}), outcome, self._ttl(fc)
                    )
            return {name: encode_outcome(outcome) for name, outcome in outcomes.items()}

        together = request_digest(exchange, f"{endpoint}:within", {"symbols": names})
        with span("exchange.request", exchange=exchange, endpoint=endpoint, symbols=len(names)):
            try:
                encoded, _ = await asyncio.wait_for(
                    self.coalescer.run(together, read_all), fc.timeout
                )
                outcome = decode_outcome(encoded[symbol])
            except TimeoutError as error:
                outcome = error
            # the read cached every symbol already
            answer = await self._settle(exchange, endpoint, symbol, outcome, fc, remember=False)
            set_attributes(fallback_level=answer.level.name, source=answer.source)
        return answer

    async def _settle(
        self,
        exchange: str,
        endpoint: str,
        symbol: str,
        outcome: Any,
        fc: FallbackConfig,
        *,
        remember: bool = True,
    ) -> ResilientResponse:
        """Turn one symbol's batch outcome into its answer, as a single request's would be."""
        params = {"symbol": symbol}
        digest = request_digest(exchange, endpoint, params)
        if isinstance(outcome, GiveUpError):
            raise outcome
        if isinstance(outcome, CryptoAIError | TimeoutError):
            answer = await self._degrade(
                exchange, endpoint, params, fc=fc, digest=digest, error=outcome
            )
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            if remember and fc.cache_enabled:
                self.cache.put(digest, outcome, self._ttl(fc))
            answer = ResilientResponse(outcome, FallbackLevel.NONE, "batched")
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
        if not (self.batching and self._rule(exchange, endpoint) and len(names) > 1):
            singles = [
                await self.resilient_request(exchange, endpoint, {"symbol": s}, fc) for s in names
            ]
            return dict(zip(names, singles, strict=True))
        with span("exchange.request", exchange=exchange, endpoint=endpoint, symbols=len(names)):
            try:
                outcomes = await asyncio.wait_for(
                    self._run_batch(exchange, endpoint, names), fc.timeout
                )
            except TimeoutError as error:
                outcomes = dict.fromkeys(names, error)
            return {
                symbol: await self._settle(exchange, endpoint, symbol, outcomes[symbol], fc)
                for symbol in names
            }

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
        """Pass an order, amendment or cancel through the order gate; raise if it refuses."""
        answer = await self.orders.submit(OrderRequest.parse(exchange, endpoint, params))
        if not answer.approved:
            raise OrderRefusedError(
                f"{exchange} {endpoint} refused: {'; '.join(answer.reasons)}", answer.reasons
            )
        return ResilientResponse(answer.order, FallbackLevel.NONE, answer.source)

    async def _send_write(
        self,
        exchange: str,
        endpoint: str,
        params: dict[str, Any],
        on_attempt: Callable[[], Any] | None = None,
    ) -> tuple[Any, str]:
        """Send a write the gate approved; an unknown outcome is looked up before any resend.

        Warning: only the order gate calls this; anything else would bypass paper mode,
        the risk guard and the client order id claim.
        """
        attempts = self.retry.max_attempts
        for attempt in range(1, attempts + 1):
            if on_attempt is not None:
                on_attempt()
            try:
                return await self._guarded(exchange, endpoint, params), "exchange"
            except OutcomeUnknownError as error:
                log.warning(
                    "%s %s: outcome unknown (%s); looking the order up", exchange, endpoint, error
                )
                if on_attempt is not None:
                    on_attempt()
                found = await self._reconcile(exchange, endpoint, params)
                if found is not None:
                    return found, "reconciled"
                if attempt == attempts:
                    raise
                await self._sleep(self.retry.backoff(attempt - 1))
        raise AssertionError("unreachable")

    async def _find_order(self, exchange: str, symbol: str, client_order_id: str) -> Any:
        """Return the order with this client order id (reads retried), or None."""
        return await retry_async(
            lambda: self.gateway.find_order(exchange, symbol, client_order_id),
            self.retry,
            sleep=self._sleep,
        )

    async def _to_precision(self, exchange: str, symbol: str, amount: float, mode: str) -> float:
        """Return ``amount`` in the market's amount precision (as is when markets are unread)."""
        try:
            await retry_async(lambda: self.gateway.markets(exchange), self.retry, sleep=self._sleep)
        except CryptoAIError:
            if mode != "paper":
                raise
            return amount
        # the risk guard's ticker read has refused an unknown symbol already
        return float(self.gateway.instance(exchange).amount_to_precision(symbol, amount))

    async def _reconcile(self, exchange: str, endpoint: str, params: dict[str, Any]) -> Any:
        symbol = params.get("symbol", "")
        if endpoint in ("create_order", "edit_order"):
            return await self._find_order(exchange, symbol, params["params"]["clientOrderId"])
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


def _report(exchange: str, answer: ResilientResponse) -> None:
    emit(
        "fallback.answer",
        exchange=exchange,
        level=answer.level.name,
        source=answer.source.split(":")[0],
    )
