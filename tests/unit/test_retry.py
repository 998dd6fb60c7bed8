"""Retry policies: shapes, bounds, jitter, Retry-After first, what is never retried."""

from __future__ import annotations

import asyncio
import random

import pytest

from core.config import RetryStrategyConfig
from core.errors import (
    ExchangeThrottledError,
    InsufficientFundsError,
    OutcomeUnknownError,
    RetryableError,
)
from resilience.retry import RetryConfig, RetryStrategy, retry_async


def waits(config: RetryConfig, n: int = 5) -> list[float]:
    return [config.backoff(i) for i in range(n)]


def test_strategy_shapes_without_jitter() -> None:
    base = {"base_delay": 1.0, "jitter": False, "max_delay": 100.0}
    assert waits(RetryConfig(strategy=RetryStrategy.EXPONENTIAL_BACKOFF, multiplier=2, **base)) == [
        1,
        2,
        4,
        8,
        16,
    ]
    assert waits(RetryConfig(strategy=RetryStrategy.LINEAR_BACKOFF, **base)) == [1, 2, 3, 4, 5]
    assert waits(RetryConfig(strategy=RetryStrategy.FIBONACCI_BACKOFF, **base)) == [1, 1, 2, 3, 5]
    assert waits(RetryConfig(strategy=RetryStrategy.FIXED, **base)) == [1, 1, 1, 1, 1]


def test_max_delay_caps_and_jitter_stays_within_half() -> None:
    config = RetryConfig(base_delay=10, multiplier=10, max_delay=30, jitter=True)
    rng = random.Random(7)
    for i in range(20):
        assert 15 <= config.backoff(3, rng) <= 30, i


def test_from_seed_settings() -> None:
    config = RetryConfig.from_settings(
        RetryStrategyConfig(strategy="fibonacci_backoff", max_attempts=5)
    )
    assert config.strategy is RetryStrategy.FIBONACCI_BACKOFF and config.max_attempts == 5


class Flaky:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors, self.calls = errors, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def run(call: Flaky, config: RetryConfig) -> tuple[object, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def main() -> object:
        return await retry_async(call, config, sleep=sleep)

    return asyncio.run(main()), slept


def test_reads_retry_in_place_until_success() -> None:
    call = Flaky([RetryableError("503"), RetryableError("timeout")])
    result, slept = run(call, RetryConfig(max_attempts=3, jitter=False))
    assert result == "ok" and call.calls == 3 and slept == [1.0, 2.0]


def test_retry_after_wins_over_the_backoff() -> None:
    call = Flaky([ExchangeThrottledError("429", retry_after=12.5)])
    _, slept = run(call, RetryConfig(max_attempts=2, jitter=False))
    assert slept == [12.5]


def test_business_errors_and_unknown_outcomes_are_never_retried() -> None:
    for error in (InsufficientFundsError("no money"), OutcomeUnknownError("lost")):
        call = Flaky([error])
        with pytest.raises(type(error)):
            run(call, RetryConfig(max_attempts=5))
        assert call.calls == 1


def test_attempts_run_out_and_the_last_error_is_raised() -> None:
    call = Flaky([RetryableError(str(i)) for i in range(5)])
    with pytest.raises(RetryableError, match="2"):
        run(call, RetryConfig(max_attempts=3, jitter=False))
    assert call.calls == 3
