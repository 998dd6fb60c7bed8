"""Build ccxt async exchange instances from the config (spot only, base_url applied)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async

from core.config import ConnectionPoolingConfig, ExchangeConfig
from core.urls import local_port
from exchanges.http import TimedSession, pooled_connector
from exchanges.limited import limited_class
from exchanges.profiles import SUPPORTED, profile
from exchanges.urls import rebase_urls
from ratelimit.manager import ExchangeRateLimitManager


def pooled_class(base: type, pooling: ConnectionPoolingConfig) -> type:
    """Return a subclass whose own aiohttp session follows ``performance.connection_pooling``.

    At most ``max_connections_per_exchange`` connections at once (to every host); each
    request connects within ``connection_timeout`` and reads within ``read_timeout``.
    """

    def open_session(self: Any, lazy: bool = False) -> Any:
        if self.own_session and self.session is None:
            if self.asyncio_loop is None:
                self.asyncio_loop = asyncio.get_running_loop()
                self.throttler.loop = self.asyncio_loop
            context = ssl.create_default_context(cafile=self.cafile) if self.verify else False
            self.tcp_connector = pooled_connector(pooling.max_connections_per_exchange, context)
            session = aiohttp.ClientSession(
                connector=self.tcp_connector, trust_env=self.aiohttp_trust_env
            )
            self.session = TimedSession(session, pooling)
        parent: Any = base
        return parent.open(self, lazy)

    return type(f"Pooled_{base.__name__}", (base,), {"open": open_session})


def make_exchange(
    key: str,
    config: ExchangeConfig,
    *,
    timeout_ms: int = 10_000,
    limiter: ExchangeRateLimitManager | None = None,
    max_wait: float = 30.0,
    base_url: str | None = None,
    pooling: ConnectionPoolingConfig | None = None,
    **extra: Any,
) -> Any:
    """Return a ccxt async exchange for ``exchanges.<key>``, with its URLs at ``base_url``.

    With a ``limiter``, every request waits for the fleet-wide limiter (at most ``max_wait``
    seconds) and its responses feed the limiter back; ccxt's own per-process limiter is off.
    ``base_url`` overrides the configured one (alternative endpoints such as Binance's api1).
    ``pooling`` caps the HTTP connections this instance opens (at once, to every host) and
    sets its connect and read timeouts; ``timeout_ms`` bounds each whole request.
    Warning: the instance holds the API secret; never log it or pass it to a task.
    """
    ccxt_id = config.ccxt_id or key
    options: dict[str, Any] = {
        "enableRateLimit": False,
        "timeout": timeout_ms,
        # the exchange's profile keeps ccxt on the spot REST API we limit and sandbox
        "options": dict(profile(ccxt_id).options) if ccxt_id in SUPPORTED else {},
    }
    url = base_url or config.base_url
    if config.api_key is not None:
        options["apiKey"] = config.api_key.get_secret_value()
    elif config.sandboxed or local_port(url) is not None:
        # a local sandbox: its own paper account, so paper trading needs no real keys
        options["apiKey"] = config.sandbox.api_key
        options["secret"] = config.sandbox.api_secret.get_secret_value()
        options["password"] = config.sandbox.api_password.get_secret_value()
    if config.api_secret is not None:
        options["secret"] = config.api_secret.get_secret_value()
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    options.update(extra)
    cls = getattr(ccxt_async, ccxt_id)
    if limiter is not None:
        cls = limited_class(cls, key, limiter, max_wait, ccxt_id)
    if pooling is not None and pooling.enabled:
        cls = pooled_class(cls, pooling)
    exchange = cls(options)
    if url:
        exchange.urls["api"] = rebase_urls(exchange.urls["api"], url)
    return exchange
