"""Shared circuit breakers, retry policies, fallback levels, cache and request coalescing.

``from resilience import ResilientAPIClient, FallbackConfig, FallbackLevel, RetryConfig,
RetryStrategy`` is the seed's entry point.
"""

from resilience.client import ResilientAPIClient
from resilience.fallback import FallbackConfig, FallbackLevel, ResilientResponse
from resilience.retry import RetryConfig, RetryStrategy

__all__ = [
    "FallbackConfig",
    "FallbackLevel",
    "ResilientAPIClient",
    "ResilientResponse",
    "RetryConfig",
    "RetryStrategy",
]
