"""The seed's retry policies, built on tenacity, with the exchange's Retry-After first.

``RetryConfig(max_attempts, strategy, base_delay, multiplier, max_delay, jitter)`` with
``RetryStrategy`` EXPONENTIAL_BACKOFF (base * multiplier**n), LINEAR_BACKOFF (base * (n+1)),
FIBONACCI_BACKOFF (base * fib(n+1)) and FIXED (base). Jitter spreads each wait over
[wait/2, wait]. An error carrying ``retry_after`` (a 429/418, an open breaker) waits at least
that long, whatever the backoff says. Only retryable errors are retried; business errors
never are, and a write whose outcome is unknown is never retried here (the client looks the
order up first). With a ``deadline`` no wait is started that would end after it: the
last error is raised instead, while the caller can still use it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from core.config import RetryStrategyConfig
from core.errors import (
    BackOffError,
    CircuitOpenError,
    OutcomeUnknownError,
    RateLimitedError,
    RetryableError,
)
from core.events import emit
from core.tracing import add_event
from exchanges.request import Deadline, Request

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryStrategy(enum.Enum):
    """How the wait grows between attempts."""

    EXPONENTIAL_BACKOFF = "exponential_backoff"
    LINEAR_BACKOFF = "linear_backoff"
    FIBONACCI_BACKOFF = "fibonacci_backoff"
    FIXED = "fixed"
    FIXED_DELAY = "fixed"  # the seed's fallback_retry_system name for FIXED (an alias)


def _fibonacci(n: int) -> int:
    a, b = 1, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@dataclass(frozen=True)
class RetryConfig:
    """The seed's retry settings."""

    max_attempts: int = 3
    strategy: RetryStrategy = RetryStrategy.EXPONENTIAL_BACKOFF
    base_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True

    @classmethod
    def from_settings(cls, settings: RetryStrategyConfig) -> RetryConfig:
        """Build from a validated ``retry_strategies.<name>`` config entry."""
        return cls(
            settings.max_attempts,
            RetryStrategy(settings.strategy),
            settings.base_delay,
            settings.multiplier,
            settings.max_delay,
            settings.jitter,
        )

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Return the wait before retry ``retry_number`` (0 for the first retry)."""
        n = retry_number
        raw = {
            RetryStrategy.EXPONENTIAL_BACKOFF: self.base_delay * self.multiplier**n,
            RetryStrategy.LINEAR_BACKOFF: self.base_delay * (n + 1),
            RetryStrategy.FIBONACCI_BACKOFF: self.base_delay * _fibonacci(n),
            RetryStrategy.FIXED: self.base_delay,
        }[self.strategy]
        wait = min(raw, self.max_delay)
        if self.jitter:
            wait *= 0.5 + 0.5 * (rng or random).random()
        return wait


class _Wait(tenacity.wait.wait_base):
    """Backoff from the config, but never shorter than an error's ``retry_after``."""

    def __init__(self, config: RetryConfig, rng: random.Random | None) -> None:
        self.config, self.rng = config, rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.config.backoff(retry_state.attempt_number - 1, self.rng)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return max(wait, retry_after) if retry_after is not None else wait


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop when the next wait would end after the request's deadline.

    tenacity decides the wait before it asks ``stop``, so the wait is ``upcoming_sleep``.
    """

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return retry_state.upcoming_sleep >= self.deadline.left()


def is_retryable(error: BaseException) -> bool:
    """Return True for errors worth another attempt of a read."""
    if isinstance(error, OutcomeUnknownError | RateLimitedError | CircuitOpenError):
        return False  # reconcile first / the limiter already waited / go to the fallback
    return isinstance(error, RetryableError | BackOffError)


async def retry_async(
    call: Callable[[], Awaitable[T]],
    config: RetryConfig,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    deadline: Deadline | None = None,
) -> T:
    """Run ``call`` with the policy; re-raise the last error when attempts or time run out."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            on_retry(state.attempt_number, state.outcome.exception(), state.next_action.sleep)  # type: ignore[arg-type]

    wait = _Wait(config, rng)
    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(config.max_attempts)
    if deadline is not None:
        stop = stop | _StopAtDeadline(deadline)
    retrying = tenacity.AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception(is_retryable),
        sleep=sleep,
        reraise=True,
        before_sleep=before_sleep,
    )

    async def attempt() -> T:  # a coroutine function, so tenacity awaits it
        return await call()

    result: T = await retrying(attempt)
    return result


class Retried:
    """A request's attempts under the retry policy, within the request's deadline."""

    def __init__(
        self,
        send: Callable[[Request], Awaitable[Any]],
        config: RetryConfig,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.send, self.config, self.sleep = send, config, sleep

    async def __call__(self, request: Request) -> Any:
        """Return the request's data; raise the last error when attempts or time run out."""
        try:  # the first attempt without the policy's machinery: most calls succeed
            return await self.send(request)
        except Exception as error:
            if self.config.max_attempts <= 1 or not is_retryable(error):
                raise
            first = error
        return await self._again(request, first)

    async def _again(self, request: Request, first: BaseException) -> Any:
        """Retry after a first attempt failed with ``first`` (attempt 2 onwards)."""

        def on_retry(attempt: int, error: BaseException, wait: float) -> None:
            emit("exchange.retry", exchange=request.exchange, endpoint=request.name)
            add_event("retry", attempt=attempt, error=type(error).__name__, wait=wait)
            log.info(
                "%s %s: attempt %d failed (%s); retrying in %.2fs",
                request.exchange,
                request.name,
                attempt,
                error,
                wait,
            )

        replay = [first]

        async def call() -> Any:  # attempt 1 is the one already made: the policy counts it
            if replay:
                raise replay.pop()
            return await self.send(request)

        return await retry_async(
            call, self.config, sleep=self.sleep, on_retry=on_retry, deadline=request.deadline
        )
