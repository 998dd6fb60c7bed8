"""The request path against a real sandbox and Redis: what counts as the exchange's failure.

A caller giving up (its deadline, a cancellation) while a request waits for budget is not the
exchange failing; neither is a bug in our own result handling. The half-open trial is taken
only once budget is in hand, so one stuck in the limiter never lets a second trial out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import redis

from core.config import AppConfig
from core.errors import CircuitOpenError, CryptoAIError, MalformedResponseError, RetryableError
from core.events import subscribe, unsubscribe
from resilience import FallbackConfig, ResilientAPIClient
from tests.integration.sandbox_fixtures import admin, running_sandbox

SYMBOL = "BTC/USDT"
DEPTH = "GET /api/v3/depth"
TICKER = "GET /api/v3/ticker/24hr"
CLASSES = ("public", "private", "orders")


def config_for(url: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {
        "redis": {"key_prefix": namespace},
        "exchanges": {
            "binance": {
                "base_url": url,
                "rate_limits": [
                    {"type": "fixed_window", "name": "REQUEST_WEIGHT", "limit": 1000, "window": 60}
                ],
            }
        },
        "retry_strategies": {"default": {"max_attempts": 3, "base_delay": 0.05, "jitter": False}},
        "rate_limiting": {"max_wait": 90},
        "performance": {"batch_processing": {"enabled": False}},
        **extra,
    }


def served(url: str, endpoint: str) -> int:
    return int(admin(url, "stats")["requests_by_endpoint"].get(endpoint, 0))


def breaker_fields(client: redis.Redis, namespace: str, klass: str) -> dict[str, str]:
    raw = client.hgetall(f"{namespace}{{cb:binance:{klass}}}")
    return {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]


async def spend_budget(client: ResilientAPIClient, margin: float = 0.0) -> float:
    """Spend what is left of the REQUEST_WEIGHT window; return the seconds until it refills.

    A window on the clock that refills within ``margin`` seconds could refill while the
    test's callers wait: then wait for the next window and spend that one instead.
    """
    refill = await _spend(client)
    if refill < margin:
        await asyncio.sleep(refill + 0.02)
        refill = await _spend(client)
    return refill


async def _spend(client: ResilientAPIClient) -> float:
    limiter = client.limiter
    left = limiter.decide("binance", "public", charge=False).remaining["REQUEST_WEIGHT"]
    if left > 0:  # at high priority: the reserve goes too
        assert limiter.decide("binance", "public", weight=left, priority="high").allowed
    return limiter.decide("binance", "public", charge=False).retry_after


def test_sixty_callers_giving_up_while_waiting_for_budget_leave_every_breaker_closed(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=[SYMBOL]) as sb:
        cfg = AppConfig.model_validate(config_for(sb.url, namespace))
        client = ResilientAPIClient(redis_client, cfg)
        patient = FallbackConfig(level="none", timeout=60, cache_enabled=False)

        async def give_up(i: int) -> BaseException | None:
            call = client.resilient_request(
                "binance", "fetch_order_book", {"symbol": SYMBOL, "limit": 5 + i % 3}, patient
            )
            try:
                await asyncio.wait_for(call, 0.3)  # the caller's own timeout
            except (TimeoutError, CryptoAIError) as error:
                return error
            return None

        async def scenario() -> list[BaseException | None]:
            try:
                await client.resilient_request("binance", "load_markets", {})
                await spend_budget(client, margin=10.0)  # the callers wait 0.3 s at most
                return list(await asyncio.gather(*(give_up(i) for i in range(60))))
            finally:
                await client.close()

        outcomes = asyncio.run(scenario())
        depth_calls = served(sb.url, DEPTH)
    assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
    assert depth_calls == 0  # the exchange received nothing
    for klass in CLASSES:
        fields = breaker_fields(redis_client, namespace, klass)
        assert fields.get("state", "closed") == "closed", (klass, fields)
        assert int(fields.get("failures", 0)) == 0, (klass, fields)


def test_a_half_open_trial_waiting_for_budget_never_lets_a_second_trial_out(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=[SYMBOL]) as sb:
        config = config_for(sb.url, namespace)
        config["exchanges"]["binance"]["rate_limits"] = [
            {"type": "fixed_window", "name": "REQUEST_WEIGHT", "limit": 1000, "window": 3}
        ]
        config["exchanges"]["binance"]["circuit_breaker"] = {
            "failure_threshold": 1,
            "recovery_timeout": 1,
        }
        # one request's time (connect + read) is the trial's time: 0.8 s
        config["performance"]["connection_pooling"] = {
            "connection_timeout": 0.4,
            "read_timeout": 0.4,
        }
        config["retry_strategies"]["default"]["max_attempts"] = 1
        client = ResilientAPIClient(redis_client, AppConfig.model_validate(config))
        patient = FallbackConfig(level="none", timeout=10, cache_enabled=False)
        # the exchange is still failing: the trial fails and the breaker opens again
        admin(sb.url, "faults", "PUT", [{"kind": "http_500", "endpoint": DEPTH}])

        async def ask(i: int) -> Any:
            await asyncio.sleep(0.4 * i)
            # different requests: identical ones would be coalesced behind the first
            book = {"symbol": SYMBOL, "limit": (5, 10, 20, 50, 100, 500)[i]}
            try:
                return await client.resilient_request("binance", "fetch_order_book", book, patient)
            except CryptoAIError as error:
                return error

        async def scenario() -> list[Any]:
            try:
                await client.resilient_request("binance", "load_markets", {})
                await client.breaker("binance", "public").record(RetryableError("down"))
                await asyncio.sleep(1.1)  # the recovery time has passed: a trial is due
                # start right after a window edge: 3 s of waiting ahead
                await spend_budget(client, margin=2.6)
                # callers arrive while the budget is spent, over longer than a trial lasts
                return list(await asyncio.gather(*(ask(i) for i in range(6))))
            finally:
                await client.close()

        outcomes = asyncio.run(scenario())
        trials = served(sb.url, DEPTH)
    assert trials == 1, outcomes  # one trial reached the exchange, the others were refused
    assert sum(isinstance(o, CircuitOpenError) for o in outcomes) == 5, outcomes


@pytest.fixture
def buggy_result_handling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A bug of ours in what handles a ticker's result (not the exchange's answer)."""
    import exchanges.gateway

    real = exchanges.gateway.check_result

    def broken(method: str, result: Any) -> Any:
        if method == "fetch_ticker":
            raise KeyError("lastPrice")  # our code reading a field that is not there
        return real(method, result)

    monkeypatch.setattr(exchanges.gateway, "check_result", broken)
    yield


def test_a_bug_in_result_handling_is_not_retried_and_not_held_against_the_exchange(
    namespace: str, redis_client: redis.Redis, buggy_result_handling: None
) -> None:
    with running_sandbox(symbols=[SYMBOL]) as sb:
        config = config_for(sb.url, namespace)
        del config["exchanges"]["binance"]["rate_limits"]
        client = ResilientAPIClient(redis_client, AppConfig.model_validate(config))
        plain = FallbackConfig(level="partial", timeout=10, cache_enabled=False)

        async def scenario() -> list[BaseException]:
            errors: list[BaseException] = []
            try:
                for _ in range(6):  # more than the breaker's failure threshold (5)
                    try:
                        await client.resilient_request(
                            "binance", "fetch_ticker", {"symbol": SYMBOL}, plain
                        )
                    except Exception as error:
                        errors.append(error)
            finally:
                await client.close()
            return errors

        errors = asyncio.run(scenario())
        tickers = served(sb.url, TICKER)
    assert len(errors) == 6
    assert all(type(e) is KeyError for e in errors), errors  # the bug, as it is
    assert not any(isinstance(e, MalformedResponseError) for e in errors)
    assert tickers == 6  # one call each: a bug is not retried
    fields = breaker_fields(redis_client, namespace, "public")
    assert fields.get("state", "closed") == "closed" and int(fields.get("failures", 0)) == 0


def test_time_waiting_for_budget_is_not_reported_as_exchange_latency(
    namespace: str, redis_client: redis.Redis
) -> None:
    with running_sandbox(symbols=[SYMBOL]) as sb:
        config = config_for(sb.url, namespace)
        config["exchanges"]["binance"]["rate_limits"] = [
            {"type": "fixed_window", "name": "REQUEST_WEIGHT", "limit": 1000, "window": 2}
        ]
        client = ResilientAPIClient(redis_client, AppConfig.model_validate(config))
        seen: list[tuple[float, float]] = []

        def listener(event: str, fields: Mapping[str, Any]) -> None:
            if event == "exchange.request" and fields["endpoint"] == "fetch_order_book":
                seen.append((float(fields["seconds"]), time.monotonic()))

        async def scenario() -> float:
            try:
                await client.resilient_request("binance", "load_markets", {})
                await spend_budget(client, margin=1.0)
                started = time.monotonic()
                await client.resilient_request(
                    "binance", "fetch_order_book", {"symbol": SYMBOL}, FallbackConfig(timeout=10)
                )
                return time.monotonic() - started
            finally:
                await client.close()

        subscribe(listener)
        try:
            took = asyncio.run(scenario())
        finally:
            unsubscribe(listener)
    assert took >= 0.9  # it waited for the window to refill
    assert len(seen) == 1
    assert seen[0][0] < 0.5, (seen, took)  # the latency reported is the wire's alone
