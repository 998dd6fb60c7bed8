"""Coinbase Advanced Trade's request limits, enforced per client IP and per API key.

Coinbase publishes (https://docs.cdp.coinbase.com/advanced-trade/docs/rest-api-rate-limits):
public endpoints 10 requests per second per IP, private endpoints 30 requests per second per
user (API key); the Coinbase App (v2) API 10,000 requests per hour
(https://docs.cdp.coinbase.com/coinbase-app/api-architecture/rate-limiting). Each per-second
limit is a token bucket here (capacity = one second's requests, refilled continuously); the
v2 one a sliding hour. Over a limit: HTTP 429, ``{"message": "Rate limit exceeded"}`` (v3),
``{"errors": [{"id": "rate_limit_exceeded", ...}]}`` (v2), no ``Retry-After``.

Coinbase documents no ban, but a client that keeps sending while refused is locked out in
the sandbox (``lockout_after`` refused requests in a row, each inside a second of the last
refusal) for ``lockout_seconds`` (times ``time_scale``): every request then gets the same 429,
so a fleet that ignores 429s is visible in the stats.

Knobs (``SandboxLimits.overrides``): ``public_per_second`` (10), ``private_per_second`` (30),
``v2_per_hour`` (10000), ``lockout_after`` (20), ``lockout_seconds`` (60).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import SandboxLimits
from sandbox.errors import ApiError

DEFAULTS = {
    "public_per_second": 10.0,
    "private_per_second": 30.0,
    "v2_per_hour": 10000.0,
    "lockout_after": 20.0,
    "lockout_seconds": 60.0,
}

#: The pools a request can spend, by what it is.
PUBLIC, PRIVATE, V2 = "public", "private", "v2"


@dataclass
class Bucket:
    """A continuously refilled token bucket."""

    capacity: float
    rate: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        if self.tokens < 0:
            self.tokens, self.at = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class ClientStats:
    """What one client (an IP for public calls, an API key for private ones) did and was told."""

    requests: int = 0
    sent_429: int = 0
    throttled_by_fault: int = 0
    lockouts: int = 0
    refused_in_a_row: int = 0
    last_refused: float = 0.0
    locked_until: float = 0.0
    throttled_until: float = 0.0
    requests_inside_lockout: int = 0
    by_pool: dict[str, int] = field(default_factory=dict)


class LimitEnforcer:
    """Admit or refuse each request the way Coinbase's gateway does (see the module doc)."""

    def __init__(self, limits: SandboxLimits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.clock = clock
        self.knobs = {**DEFAULTS, **{k: v for k, v in limits.overrides.items() if k in DEFAULTS}}
        self.clients: dict[str, ClientStats] = {}
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.v2_calls: dict[str, deque[float]] = {}

    def client(self, name: str) -> ClientStats:
        """Return the counters of one client."""
        return self.clients.setdefault(name, ClientStats())

    def admit(self, pool: str, client: str) -> None:
        """Charge one request of ``client`` to ``pool`` or raise the 429."""
        now = self.clock()
        stats = self.client(client)
        stats.requests += 1
        stats.by_pool[pool] = stats.by_pool.get(pool, 0) + 1
        if stats.locked_until > now or stats.throttled_until > now:
            stats.requests_inside_lockout += 1
            self._refuse(stats, pool, now)
        if pool == V2:
            calls = self.v2_calls.setdefault(client, deque())
            while calls and calls[0] <= now - 3600:
                calls.popleft()
            if len(calls) + 1 > self.knobs["v2_per_hour"]:
                self._refuse(stats, pool, now)
            calls.append(now)
        else:
            per_second = self.knobs[f"{pool}_per_second"]
            bucket = self.buckets.setdefault((pool, client), Bucket(per_second, per_second))
            if not bucket.take(now):
                self._refuse(stats, pool, now)
        stats.refused_in_a_row = 0

    def _refuse(self, stats: ClientStats, pool: str, now: float) -> None:
        stats.sent_429 += 1
        if now - stats.last_refused <= 1.0:
            stats.refused_in_a_row += 1
        else:
            stats.refused_in_a_row = 1
        stats.last_refused = now
        if stats.refused_in_a_row >= self.knobs["lockout_after"] and stats.locked_until <= now:
            stats.lockouts += 1
            stats.locked_until = now + self.knobs["lockout_seconds"] * self.limits.time_scale
        raise rate_limited(pool)

    def throttle(self, client: str, pool: str, seconds: float, answered: bool = True) -> ApiError:
        """Tell a client it is over the limit for ``seconds`` (the http_429 fault).

        ``answered`` False throttles a client this response does not go to (no 429 counted).
        """
        stats = self.client(client)
        if answered:
            stats.sent_429 += 1
            stats.throttled_by_fault += 1
        stats.throttled_until = max(stats.throttled_until, self.clock() + seconds)
        return rate_limited(pool)

    def reset(self) -> None:
        """Forget every count and lockout (the admin endpoint's reset)."""
        self.clients.clear()
        self.buckets.clear()
        self.v2_calls.clear()


def rate_limited(pool: str) -> ApiError:
    """Return Coinbase's 429 (the v2 API words it its own way)."""
    if pool == V2:
        return ApiError(429, "rate_limit_exceeded", "Too many requests")
    return ApiError(429, "RATE_LIMIT", "Rate limit exceeded")
