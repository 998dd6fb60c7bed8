"""Fallback levels: how far an answer may degrade when the exchange cannot give a fresh one.

- NONE: no degradation; the error reaches the caller.
- PARTIAL: the last good answer from the cache, marked stale with its age.
- FULL: PARTIAL if there is one, else ``fallback_function(error, exchange, endpoint, params)``
  or None (the default).
- EMERGENCY: as FULL for reads; new orders are refused, reads and cancels go on.

Alternative endpoints (e.g. Binance's api1-api4 hosts) are tried before any degradation.
Writes never degrade: an order that failed failed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class FallbackLevel(enum.IntEnum):
    """How far an answer may degrade (higher allows more)."""

    NONE = 0
    PARTIAL = 1
    FULL = 2
    EMERGENCY = 3

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, value: FallbackLevel | str) -> FallbackLevel:
        """Return the level for ``"partial"`` or ``FallbackLevel.PARTIAL``."""
        if isinstance(value, FallbackLevel):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            raise ValueError(
                f"unknown fallback level {value!r}; expected none, partial, full or emergency"
            ) from None


@dataclass
class FallbackConfig:
    """The seed's fallback settings for one request (``fresh_ttl`` is ours: see below).

    ``cache_ttl`` is how long a good answer is kept for PARTIAL fallback (None: the
    config's ``performance.caching.default_ttl``); ``fresh_ttl`` (0 by default) is how long
    it may be served as fresh without asking the exchange. ``performance.caching.enabled:
    false`` turns the cache off whatever ``cache_enabled`` says.
    """

    level: FallbackLevel | str = FallbackLevel.NONE
    timeout: float = 10.0
    cache_enabled: bool = True
    cache_ttl: float | None = None
    alternative_endpoints: list[str] = field(default_factory=list)
    fallback_function: Callable[..., Any] | None = None
    fresh_ttl: float = 0.0

    def __post_init__(self) -> None:
        self.level = FallbackLevel.parse(self.level)
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")


@dataclass(frozen=True)
class ResilientResponse:
    """An answer and how it was obtained.

    ``level`` is the fallback level that served it (NONE for a fresh exchange answer);
    ``source`` says from where (``exchange``, ``coalesced``, ``reconciled``,
    ``alternative:<url>``, ``cache``, ``fallback_function``, ``default``); ``age`` is the
    seconds since a cached answer was fetched.
    """

    data: Any
    level: FallbackLevel
    source: str
    stale: bool = False
    age: float | None = None
    error: str | None = None
