"""One try of a request at the exchange, under the fleet-wide breaker of its class.

The order of one attempt:

1. **peek** at the breaker: an open breaker refuses at once, before any budget is spent;
2. the ccxt hook waits in the **limiter** within the request's deadline
   (``exchanges/limited.py``);
3. with budget in hand, the breaker **grants** the call (``allow``: here the one half-open
   trial of the fleet is taken, so a trial never waits for budget);
4. the **wire**, cut off at the deadline;
5. the outcome is **recorded**: failures that say the exchange is unwell, and the trial's
   success. An attempt that never reached the wire records nothing. One whose caller gave up
   (cancelled, or the deadline cut it) records nothing either, unless the exchange had held
   the request longer than ``slow_call_seconds``: that is a slow exchange. A cut trial is
   released so the next caller may try at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core.config import AppConfig
from core.errors import RetryableError
from core.keys import KeySpace
from core.tracing import add_event
from exchanges.gateway import CcxtGateway
from exchanges.request import Attempt, Request, attempting
from ratelimit.backends.clients import RedisClients
from resilience.breaker import SharedBreaker


class Breakers:
    """This process's handles on the fleet's breakers, one per exchange and class."""

    def __init__(
        self, config: AppConfig, clients: RedisClients, keys: KeySpace, trial_timeout: float
    ) -> None:
        self.config, self.clients, self.keys = config, clients, keys
        self.trial_timeout = trial_timeout
        self._held: dict[tuple[str, str], SharedBreaker] = {}

    def __call__(self, exchange: str, klass: str) -> SharedBreaker:
        """Return the breaker of an exchange's endpoint class."""
        if (exchange, klass) not in self._held:
            settings = self.config.exchanges[exchange].circuit_breaker
            self._held[(exchange, klass)] = SharedBreaker(
                self.clients,
                exchange,
                klass,
                failure_threshold=settings.failure_threshold,
                recovery_timeout=settings.recovery_timeout,
                keys=self.keys,
                trial_timeout=self.trial_timeout,
            )
        return self._held[(exchange, klass)]


class Sender:
    """Make one attempt of a request (no retry); see the module docstring."""

    def __init__(self, gateway: CcxtGateway, breakers: Breakers) -> None:
        self.gateway, self.breakers = gateway, breakers

    async def __call__(self, request: Request) -> Any:
        breaker = self.breakers(request.exchange, request.endpoint.klass)
        try:
            await breaker.check()
        except Exception as exc:
            add_event("breaker.rejected", breaker=breaker.name, error=str(exc))
            raise

        async def admit() -> bool:
            return (await breaker.allow()).state == "half_open"

        attempt = Attempt(request, admit=admit, trial_seconds=breaker.trial_timeout)
        slow = self.breakers.config.exchanges[request.exchange].circuit_breaker.slow_call_seconds
        try:
            with attempting(attempt):
                data = await self.gateway.call(request)
        except (asyncio.CancelledError, TimeoutError) as error:
            if attempt.sent and attempt.wire >= slow:
                await asyncio.shield(breaker.record(error_for_slow(error), trial=attempt.trial))
            elif attempt.sent:
                await asyncio.shield(breaker.release(trial=attempt.trial))
            raise
        except BaseException as error:
            if attempt.sent:
                await breaker.record(error, trial=attempt.trial)
            raise
        if attempt.trial:  # in closed state a success changes nothing: no Redis call
            await breaker.record(None, trial=True)
        return data


def error_for_slow(error: BaseException) -> BaseException:
    """Return the failure a slow, cut-off call is recorded as."""
    return RetryableError(f"the exchange did not answer before the caller gave up ({error!r})")
