"""Resilient exchange access on real Redis, the sandbox over HTTP, and several processes."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from core.config import AppConfig
from core.errors import (
    CircuitOpenError,
    InsufficientFundsError,
    InvalidRequestError,
    RetryableError,
)
from core.keys import KeySpace
from exchanges.gateway import CcxtGateway
from ratelimit.manager import ExchangeRateLimitManager
from resilience import FallbackConfig, FallbackLevel, ResilientAPIClient
from resilience.breaker import SharedBreaker
from tests.integration.resilience_load import fresh_after, poll
from tests.integration.sandbox_fixtures import admin, running_sandbox

pytestmark = pytest.mark.integration
SPAWN = multiprocessing.get_context("spawn")
TICKERS_24HR = "GET /api/v3/ticker/24hr"


def fleet_config(
    url: str, namespace: str, *, batching: bool = True, **breaker: Any
) -> dict[str, Any]:
    return {
        "performance": {"batch_processing": {"enabled": batching}},
        "redis": {"key_prefix": namespace},
        "exchanges": {
            "binance": {
                "base_url": url,
                "api_key": "sandbox-key",
                "api_secret": "c2FuZGJveC1zZWNyZXRz",
                "circuit_breaker": {"failure_threshold": 5, "recovery_timeout": 3, **breaker},
            }
        },
        "retry_strategies": {"default": {"max_attempts": 2, "base_delay": 0.05, "jitter": False}},
    }


def spawn(target: Any, args: tuple[Any, ...], tmp: Path, count: int) -> list[Any]:
    """Start ``count`` processes running ``target(*args, out_file)``; return the handle."""
    outs = [tmp / f"{target.__name__}-{time.time_ns()}-{i}.json" for i in range(count)]
    procs = [SPAWN.Process(target=target, args=(*args, str(o))) for o in outs]
    for p in procs:
        p.start()
    return [procs, outs]


def run_pollers(
    redis_url: str,
    config: dict[str, Any],
    tmp: Path,
    count: int,
    seconds: float,
    start_at: float = 0.0,
) -> list[Any]:
    return spawn(poll, (redis_url, config, seconds, start_at), tmp, count)


def collect(handle: list[Any]) -> list[Any]:
    """Wait for every process of a handle; each must exit 0; return their JSON outputs."""
    procs, outs = handle
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    return [json.loads(o.read_text()) for o in outs]


def endpoint_calls(url: str, endpoint: str = "GET /api/v3/ticker/24hr") -> int:
    return int(admin(url, "stats")["requests_by_endpoint"].get(endpoint, 0))


def test_half_failing_exchange_trips_the_fleet_once_and_recovers_with_one_trial(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox() as sb:
        # one call per poll: batching would merge the pollers' calls into too few to trip
        config = fleet_config(sb.url, namespace, batching=False)
        warm = ResilientAPIClient(redis_client, AppConfig.model_validate(config))
        first = asyncio.run(_one_ticker(warm))  # fills the cache for PARTIAL answers
        assert first.level is FallbackLevel.NONE

        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": "http_500", "rate": 0.5, "endpoint": "GET /api/v3/ticker/24hr"}],
        )
        # shorter than the recovery time: the fleet trips once and stays open
        answers = collect(run_pollers(redis_url, config, tmp_path, 3, 2.5, time.time() + 2))
        breaker = SharedBreaker(
            redis_client,
            "binance",
            "public",
            keys=warm.keys,
            failure_threshold=5,
            recovery_timeout=3,
        )
        snapshot = breaker.snapshot()
        assert snapshot["trips"] == 1, "the fleet must trip together, once"
        for per_process in answers:
            levels = {a.get("level") for a in per_process}
            assert "PARTIAL" in levels, per_process[-3:]
            assert all("error" not in a for a in per_process)
        calls_while_open = endpoint_calls(sb.url)
        time.sleep(0.5)
        assert endpoint_calls(sb.url) == calls_while_open

        # recovery: the exchange is healthy but slow to answer the first call (the trial)
        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": "hang", "seconds": 1.5, "count": 1, "endpoint": "GET /api/v3/ticker/24hr"}],
        )
        reopen_at = time.time() + 3.2
        before = endpoint_calls(sb.url)
        handle = run_pollers(redis_url, config, tmp_path, 3, 4.0, start_at=reopen_at)
        seen = []
        while time.time() < reopen_at + 3.0:
            seen.append((time.time(), endpoint_calls(sb.url) - before))
            time.sleep(0.05)
        collect(handle)
        first_call = next(t for t, n in seen if n >= 1)
        during_trial = [n for t, n in seen if first_call <= t < first_call + 1.3]
        assert set(during_trial) == {1}, "exactly one trial call while half-open"
        assert seen[-1][1] > 3, "after the trial succeeded the breaker closed and calls flowed"
        assert breaker.state() == "closed"
        assert breaker.snapshot()["trips"] == 1


async def _one_ticker(client: ResilientAPIClient) -> Any:
    try:
        return await client.resilient_request(
            "binance", "fetch_ticker", {"symbol": "BTC/USDT"}, FallbackConfig(level="partial")
        )
    finally:
        await client.close()


def test_a_429_stops_every_process_for_its_retry_after(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox() as sb:
        config = fleet_config(sb.url, namespace)
        handle = run_pollers(redis_url, config, tmp_path, 4, 5.0, start_at=time.time() + 1.5)
        time.sleep(3.0)
        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": "http_429", "seconds": 2, "count": 1, "endpoint": "GET /api/v3/ticker/24hr"}],
        )
        throttled_at = time.time()
        answers = collect(handle)
        client = admin(sb.url, "stats")["clients"]["127.0.0.1"]
    assert client["sent_418"] == 0
    # only requests already in flight when the 429 was sent may arrive inside Retry-After
    assert client["requests_inside_retry_after"] <= 3
    resumed = fresh_after(answers, throttled_at + 2.0)
    assert resumed, "polling resumed after the cooldown"


def test_a_lost_order_response_leaves_exactly_one_order_and_the_caller_gets_it(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox() as sb:
        settings = fleet_config(sb.url, namespace)
        settings["trading"] = {"risk": {"max_position_per_symbol": 1e6}}  # holds 2 ETH
        cfg = AppConfig.model_validate(settings)
        limiter = ExchangeRateLimitManager(redis_client, cfg)
        client = ResilientAPIClient(
            redis_client, cfg, limiter=limiter, gateway=CcxtGateway(cfg, limiter, timeout_ms=1000)
        )
        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": "response_lost", "seconds": 3, "count": 1, "endpoint": "POST /api/v3/order"}],
        )

        async def place() -> Any:
            try:
                ticker = await client.resilient_request(
                    "binance", "fetch_ticker", {"symbol": "ETH/USDT"}
                )
                # a resting buy 1% under the market: within the risk guard's price deviation
                return await client.resilient_request(
                    "binance",
                    "create_order",
                    {
                        "symbol": "ETH/USDT",
                        "type": "limit",
                        "side": "buy",
                        "amount": 0.01,
                        "price": round(ticker.data["last"] * 0.99, 2),
                        "params": {"clientOrderId": "plan-7f3a"},
                    },
                )
            finally:
                await client.close()

        answer = asyncio.run(place())
        stats = admin(sb.url, "stats")
    assert answer.source == "reconciled"
    assert answer.data["clientOrderId"] == "plan-7f3a" and answer.data["status"] == "open"
    assert stats["orders"] == {"sandbox-key": 1}
    assert stats["requests_by_endpoint"]["POST /api/v3/order"] == 1


@pytest.mark.parametrize(
    ("endpoint", "params", "error"),
    [
        ("/api/v3/ticker/price", {"symbol": "DOGEUSDT"}, InvalidRequestError),
        (
            "create_order",
            {"symbol": "BTC/USDT", "type": "market", "side": "buy", "amount": 5},
            InsufficientFundsError,
        ),
    ],
)
def test_business_errors_are_not_retried_and_do_not_trip_the_breaker(
    redis_url: str,
    namespace: str,
    redis_client: redis.Redis,
    endpoint: str,
    params: dict[str, Any],
    error: type,
) -> None:
    with running_sandbox() as sb:
        settings = fleet_config(sb.url, namespace, failure_threshold=1)
        # limits the order passes, so that the exchange itself answers it
        settings["trading"] = {
            "risk": {"max_notional_per_order": 1e9, "max_position_per_symbol": 1e9}
        }
        cfg = AppConfig.model_validate(settings)
        client = ResilientAPIClient(redis_client, cfg)

        async def call() -> None:
            try:
                await client.resilient_request(
                    "binance", endpoint, params, FallbackConfig(level="full")
                )
            finally:
                await client.close()

        with pytest.raises(error):
            asyncio.run(call())
        calls = admin(sb.url, "stats")["requests_by_endpoint"]
    # the order gate's reads for the risk guard go first; the failing call is made once
    gate_reads = {"GET /api/v3/exchangeInfo", "GET /api/v3/account", "GET /api/v3/openOrders"}
    if endpoint == "create_order":
        gate_reads.add("GET /api/v3/ticker/24hr")
    sent = {k: v for k, v in calls.items() if k not in gate_reads}
    assert list(sent.values()) == [1], sent
    if endpoint == "create_order":  # the order gate recorded the exchange's refusal
        from core.keys import KeySpace

        (_, entry), *_ = redis_client.xrevrange(KeySpace(namespace).order_audit(), count=1)
        assert entry[b"outcome"] == b"failed"
        assert entry[b"reasons"].startswith(b"InsufficientFundsError")
    for klass in ("public", "orders"):
        assert client.breaker("binance", klass).state() == "closed"


def test_exactly_one_of_many_processes_gets_the_half_open_trial(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from core.keys import KeySpace

    breaker = SharedBreaker(
        redis_client,
        "x",
        "public",
        failure_threshold=1,
        recovery_timeout=1,
        keys=KeySpace(namespace),
    )
    asyncio.run(breaker.record(RetryableError("boom")))
    assert breaker.state() == "open"
    start_at = time.time() + 2.0
    granted = sum(collect(spawn(_race_for_trial, (redis_url, namespace, start_at), tmp_path, 6)))
    assert granted == 1


def _race_for_trial(redis_url: str, namespace: str, start_at: float, out: str) -> None:
    from core.errors import CircuitOpenError
    from core.keys import KeySpace

    breaker = SharedBreaker(
        redis.Redis.from_url(redis_url),
        "x",
        "public",
        failure_threshold=1,
        recovery_timeout=1,
        keys=KeySpace(namespace),
    )
    while time.time() < start_at:
        time.sleep(0.001)

    async def race() -> int:
        granted = 0
        for _ in range(50):
            try:
                await breaker.allow()
                granted += 1
            except CircuitOpenError:
                pass
        return granted

    Path(out).write_text(json.dumps(asyncio.run(race())))


def _ask_candles(redis_url: str, config: dict[str, Any], start_at: float, out: str) -> None:
    cfg = AppConfig.model_validate(config)

    async def run() -> str:
        client = ResilientAPIClient(redis.Redis.from_url(redis_url), cfg)
        try:
            while time.time() < start_at:
                await asyncio.sleep(0.002)
            answer = await client.resilient_request(
                "binance", "fetch_ohlcv", {"symbol": "BTC/USDT", "timeframe": "1h", "limit": 50}
            )
            return f"{answer.source}:{answer.data[-1][4]}"
        finally:
            await client.close()

    Path(out).write_text(json.dumps(asyncio.run(run())))


def test_identical_requests_from_eight_processes_make_one_upstream_call(
    redis_url: str, namespace: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_sandbox() as sb:
        config = fleet_config(sb.url, namespace)
        # the upstream call takes 0.8 s, so every process asks while it is in flight
        admin(
            sb.url,
            "faults",
            "PUT",
            [{"kind": "hang", "seconds": 0.8, "count": 1, "endpoint": "GET /api/v3/klines"}],
        )
        start_at = time.time() + 2.5
        answers = collect(spawn(_ask_candles, (redis_url, config, start_at), tmp_path, 8))
        calls = endpoint_calls(sb.url, "GET /api/v3/klines")
    assert calls == 1
    assert sorted(a.split(":")[0] for a in answers) == ["coalesced"] * 7 + ["exchange"]
    assert len({a.split(":")[1] for a in answers}) == 1, "everyone got the same candles"


def test_alternative_endpoints_are_tried_before_degrading(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox() as primary, running_sandbox() as alternative:
        cfg = AppConfig.model_validate(fleet_config(primary.url, namespace))
        client = ResilientAPIClient(redis_client, cfg)
        admin(primary.url, "faults", "PUT", [{"kind": "http_503"}])

        async def ask() -> Any:
            try:
                return await client.resilient_request(
                    "binance",
                    "fetch_ticker",
                    {"symbol": "BTC/USDT"},
                    FallbackConfig(level="partial", alternative_endpoints=[alternative.url]),
                )
            finally:
                await client.close()

        answer = asyncio.run(ask())
    assert answer.level is FallbackLevel.NONE
    assert answer.source == f"alternative:{alternative.url}"
    assert answer.data["last"] > 0


def test_full_level_uses_the_fallback_function_and_emergency_refuses_new_orders(
    redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    from core.errors import StopError

    with running_sandbox() as sb:
        cfg = AppConfig.model_validate(fleet_config(sb.url, namespace))
        client = ResilientAPIClient(redis_client, cfg)
        admin(sb.url, "faults", "PUT", [{"kind": "http_503"}])

        def default_ticker(error: Exception, **context: Any) -> dict[str, Any]:
            return {"symbol": context["params"]["symbol"], "last": None, "reason": str(error)}

        async def scenario() -> Any:
            try:
                answer = await client.resilient_request(
                    "binance",
                    "fetch_ticker",
                    {"symbol": "SOL/USDT"},
                    FallbackConfig(
                        level=FallbackLevel.FULL,
                        cache_enabled=False,
                        fallback_function=default_ticker,
                    ),
                )
                with pytest.raises(StopError, match="EMERGENCY"):
                    await client.resilient_request(
                        "binance",
                        "create_order",
                        {"symbol": "ETH/USDT", "type": "market", "side": "buy", "amount": 0.01},
                        FallbackConfig(level="emergency"),
                    )
                return answer
            finally:
                await client.close()

        answer = asyncio.run(scenario())
        posted = admin(sb.url, "stats")["requests_by_endpoint"].get("POST /api/v3/order", 0)
    assert answer.level is FallbackLevel.FULL and answer.source == "fallback_function"
    assert answer.data["symbol"] == "SOL/USDT" and "OperationFailed" in answer.data["reason"]
    assert posted == 0


def test_the_cache_keeps_its_size_bound(redis_client: redis.Redis, namespace: str) -> None:
    from core.keys import KeySpace
    from ratelimit.backends.clients import RedisClients
    from resilience.cache import ResponseCache

    cache = ResponseCache(RedisClients(redis_client), KeySpace(namespace), max_entries=5)

    async def scenario() -> tuple[int, Any, Any]:
        evicted = sum([await cache.put(f"d{i}", {"i": i}, ttl=60) for i in range(12)])
        return evicted, await cache.get("d0"), await cache.get("d11")

    evicted, first, last = asyncio.run(scenario())
    assert evicted == 7
    assert redis_client.zcard(KeySpace(namespace).cache_index()) == 5
    assert first is None and last is not None
    assert last.value == {"i": 11}


def test_a_breaker_check_never_takes_the_half_open_trial(redis_client: redis.Redis) -> None:
    keys = KeySpace(f"test:{time.time_ns()}:")
    breaker = SharedBreaker(
        redis_client, "binance", "public", keys=keys, failure_threshold=1, recovery_timeout=0.3
    )

    async def scenario() -> None:
        await breaker.record(RetryableError("500"))
        with pytest.raises(CircuitOpenError):
            await breaker.check()  # open, recovery not due
        await asyncio.sleep(0.35)
        await breaker.check()  # recovery due: a call would be let through ...
        await breaker.check()
        assert breaker.state() == "open"  # ... but checking took no trial
        assert (await breaker.allow()).state == "half_open"  # the caller that calls takes it
        with pytest.raises(CircuitOpenError):
            await breaker.check()  # the trial is out: others would be refused

    asyncio.run(scenario())
    redis_client.delete(keys.breaker("binance", "public"))


@pytest.mark.parametrize("enabled", [True, False])
def test_the_caching_section_sets_what_is_kept_and_for_how_long(
    namespace: str, redis_client: redis.Redis, enabled: bool
) -> None:
    with running_sandbox() as sb:
        config = fleet_config(sb.url, namespace)
        config["performance"]["caching"] = {"enabled": enabled, "default_ttl": 42}
        client = ResilientAPIClient(redis_client, AppConfig.model_validate(config))
        partial = FallbackConfig(level="partial")
        ticker = {"symbol": "BTC/USDT"}

        async def scenario() -> Any:
            try:
                await client.resilient_request("binance", "fetch_ticker", ticker, partial)
                admin(sb.url, "faults", "PUT", [{"kind": "http_500", "endpoint": TICKERS_24HR}])
                return await client.resilient_request("binance", "fetch_ticker", ticker, partial)
            except RetryableError as error:
                return error
            finally:
                await client.close()

        after_failure = asyncio.run(scenario())
        entries = list(redis_client.scan_iter(match=f"{namespace}{{cache}}:entry:*"))
    if enabled:
        assert after_failure.level is FallbackLevel.PARTIAL  # the kept answer served
        assert len(entries) == 1
        assert 40_000 < redis_client.pttl(entries[0]) <= 42_000  # caching.default_ttl
    else:
        assert isinstance(after_failure, RetryableError)  # nothing kept to fall back on
        assert entries == []
