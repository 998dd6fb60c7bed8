"""Fleet-wide rate limiting: pure reference algorithms and an atomic Redis backend.

``from ratelimit import ExchangeRateLimitManager`` is the seed's entry point.
"""

from ratelimit.manager import ExchangeRateLimitManager
from ratelimit.pools import PoolSpec, Priority, RateLimitResult

__all__ = ["ExchangeRateLimitManager", "PoolSpec", "Priority", "RateLimitResult"]
