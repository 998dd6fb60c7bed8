"""The seed's ``fallback_retry_system`` module: breakers, retries and fallback of ``resilience``.

``from fallback_retry_system import FallbackConfig, ResilientAPIClient`` (and ``RetryConfig``,
``RetryStrategy``, ``FallbackLevel``) as in the seed's README; the code lives in
``resilience/`` (docs/RESILIENCE.md).
"""

from resilience import (
    FallbackConfig,
    FallbackLevel,
    ResilientAPIClient,
    ResilientResponse,
    RetryConfig,
    RetryStrategy,
)

__all__ = [
    "FallbackConfig",
    "FallbackLevel",
    "ResilientAPIClient",
    "ResilientResponse",
    "RetryConfig",
    "RetryStrategy",
]
