"""One read through the path: a fresh cached answer, else shared or alone, else the ladder.

1. **Cache**: an answer younger than the request's ``fresh_ttl`` is served as it is.
2. **Sharing**: a ``fetch_ticker`` (or the balance) joins the fleet's batch of its kind
   (``resilience/batched.py``); another public read is coalesced with identical requests
   anywhere in the fleet (``resilience/cache.py``); account reads go alone, never shared.
3. **Attempts** under the retry policy (``resilience/retry.py``), each one through the
   breaker and the limiter (``resilience/attempt.py``), all within the request's deadline.
4. A good answer is cached for the PARTIAL level; a failure goes down the **ladder**
   (``resilience/ladder.py``). A business error (GiveUpError) reaches the caller as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from core.config import AppConfig
from core.errors import CryptoAIError, GiveUpError
from exchanges.request import Request
from resilience.batched import Batches
from resilience.cache import Coalescer, ResponseCache
from resilience.fallback import FallbackConfig, FallbackLevel, ResilientResponse
from resilience.ladder import Ladder


class Reads:
    """Serve reads; see the module docstring."""

    def __init__(
        self,
        config: AppConfig,
        *,
        attempts: Callable[[Request], Awaitable[Any]],
        cache: ResponseCache,
        coalescer: Coalescer | None,
        batches: Batches,
        ladder: Ladder,
    ) -> None:
        self.config, self.attempts, self.cache = config, attempts, cache
        self.coalescer, self.batches, self.ladder = coalescer, batches, ladder

    def ttl(self, fc: FallbackConfig) -> float:
        """Return how long a good answer is kept (the request's, else the config's default)."""
        default = self.config.performance.caching.default_ttl
        return default if fc.cache_ttl is None else fc.cache_ttl

    async def fresh(self, request: Request, fc: FallbackConfig) -> ResilientResponse | None:
        """Return the cached answer if it may be served as fresh."""
        if not (fc.cache_enabled and fc.fresh_ttl > 0):
            return None
        cached = await self.cache.get(request.digest)
        if cached is None or cached.age() > fc.fresh_ttl:
            return None
        return ResilientResponse(cached.value, FallbackLevel.NONE, "cache", age=cached.age())

    async def read(self, request: Request, fc: FallbackConfig) -> ResilientResponse:
        """Serve one read (see the module docstring)."""
        cached = await self.fresh(request, fc)
        if cached is not None:
            return cached
        batched = self.batches.batchable(request)
        try:
            async with asyncio.timeout(request.deadline.left()):
                data, shared = await self._shared(request, batched)
        except GiveUpError:
            raise
        except (CryptoAIError, TimeoutError) as error:
            return await self.ladder.degrade(request, fc, error)
        if fc.cache_enabled:
            await self.cache.put(request.digest, data, self.ttl(fc))
        source = ("batched" if batched else "coalesced") if shared else "exchange"
        return ResilientResponse(data, FallbackLevel.NONE, source)

    async def _shared(self, request: Request, batched: bool) -> tuple[Any, bool]:
        if batched:
            return await self.batches.join(request)
        # account state (balances, open orders) must be read fresh, never shared
        if self.coalescer is not None and request.endpoint.klass == "public":
            return await self.coalescer.run(request.digest, lambda: self.attempts(request))
        return await self.attempts(request), False

    async def settle(
        self, request: Request, outcome: Any, fc: FallbackConfig, *, remember: bool = True
    ) -> ResilientResponse:
        """Turn one symbol's batch outcome into its answer, as a single read's would be."""
        if isinstance(outcome, GiveUpError):
            raise outcome
        if isinstance(outcome, CryptoAIError | TimeoutError):
            return await self.ladder.degrade(request, fc, outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        if remember and fc.cache_enabled:
            await self.cache.put(request.digest, outcome, self.ttl(fc))
        return ResilientResponse(outcome, FallbackLevel.NONE, "batched")
