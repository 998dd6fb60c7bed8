"""Fleet-wide rate limiting: pure reference algorithms and an atomic Redis backend.

``from ratelimit import ExchangeRateLimitManager`` is the seed's entry point.
"""

from ratelimit.pools import PoolSpec, Priority, RateLimitResult

__all__ = ["PoolSpec", "Priority", "RateLimitResult"]
