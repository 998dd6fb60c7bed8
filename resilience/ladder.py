"""The fallback ladder: what a read that failed answers with, as far as its level allows.

In order: each alternative endpoint (a base URL such as Binance's api1), then at PARTIAL
the last good answer from the cache (marked stale, with its age), then at FULL the
request's ``fallback_function`` (or None). At NONE, or when nothing is left, the error
reaches the caller. Writes never come here: an order that failed failed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.errors import CryptoAIError
from exchanges.request import Request
from resilience.cache import ResponseCache
from resilience.fallback import FallbackConfig, FallbackLevel, ResilientResponse

log = logging.getLogger(__name__)


class Ladder:
    """Degrade one failed read (see the module docstring)."""

    def __init__(self, read: Callable[[Request], Awaitable[Any]], cache: ResponseCache) -> None:
        self.read, self.cache = read, cache

    async def degrade(
        self, request: Request, fc: FallbackConfig, error: BaseException
    ) -> ResilientResponse:
        """Return the best answer ``fc`` allows after ``error``; raise ``error`` if none."""
        for url in fc.alternative_endpoints:
            try:
                data = await self.read(request.via(url))
                return ResilientResponse(data, FallbackLevel.NONE, f"alternative:{url}")
            except (CryptoAIError, TimeoutError) as alt_error:
                log.warning(
                    "%s %s: alternative %s failed too: %s",
                    request.exchange,
                    request.name,
                    url,
                    alt_error,
                )
        level = FallbackLevel.parse(fc.level)
        reason = f"{type(error).__name__}: {error}"
        if level >= FallbackLevel.PARTIAL and fc.cache_enabled:
            cached = await self.cache.get(request.digest)
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
                    error, exchange=request.exchange, endpoint=request.name, params=request.params
                )
                return ResilientResponse(
                    data, FallbackLevel.FULL, "fallback_function", error=reason
                )
            return ResilientResponse(None, FallbackLevel.FULL, "default", error=reason)
        raise error
