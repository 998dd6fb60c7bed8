"""The seed's ``advanced_rate_limiting`` module: the fleet-wide limiter of ``ratelimit``.

``from advanced_rate_limiting import ExchangeRateLimitManager`` as in the seed's README; the
code lives in ``ratelimit/`` (docs/RATE_LIMITING.md).
"""

from ratelimit import ExchangeRateLimitManager, Priority, RateLimitResult

__all__ = ["ExchangeRateLimitManager", "Priority", "RateLimitResult"]
