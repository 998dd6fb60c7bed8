"""Pooled HTTP sessions with separate connect and read timeouts (connection_pooling).

``pooled_session`` is the session a worker process uses for one upstream (an exchange under
ccxt, or the news sources): at most ``max_connections_per_exchange`` connections, kept alive
and reused. ``TimedSession`` wraps a session so every request connects within
``connection_timeout`` and waits at most ``read_timeout`` between bytes of the answer; the
caller's total timeout (ccxt's ``timeout``) still bounds the whole request.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from core.config import ConnectionPoolingConfig


def request_timeout(
    pooling: ConnectionPoolingConfig, total: float | None = None
) -> aiohttp.ClientTimeout:
    """Return a request timeout: ``total`` overall, the configured connect and read limits."""
    connect, read = pooling.connection_timeout, pooling.read_timeout
    if total is not None:
        connect, read = min(connect, total), min(read, total)
    return aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)


def pooled_connector(limit: int, ssl_context: ssl.SSLContext | bool | None = None) -> Any:
    """Return a keep-alive connector holding at most ``limit`` connections (to any host)."""
    return aiohttp.TCPConnector(
        ssl=ssl_context if ssl_context is not None else True,
        limit=limit,
        limit_per_host=limit,
        enable_cleanup_closed=True,
    )


def pooled_session(pooling: ConnectionPoolingConfig) -> aiohttp.ClientSession:
    """Return a session for one upstream with the configured pool size and timeouts.

    Warning: call it inside the event loop that will use it; a session belongs to one loop.
    """
    limit = pooling.max_connections_per_exchange if pooling.enabled else 100
    return aiohttp.ClientSession(
        connector=pooled_connector(limit), timeout=request_timeout(pooling)
    )


class TimedSession:
    """An aiohttp session whose requests get the configured connect and read timeouts.

    ccxt passes one number as total, connect and read timeout; this keeps its total and
    applies ``connection_timeout`` and ``read_timeout`` (each capped by the total).
    Everything else (``close``, ``closed``, ...) is the wrapped session's.
    """

    def __init__(self, session: aiohttp.ClientSession, pooling: ConnectionPoolingConfig) -> None:
        self.session, self.pooling = session, pooling

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def _timed(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        given = kwargs.get("timeout")
        total = given.total if isinstance(given, aiohttp.ClientTimeout) else given
        return {**kwargs, "timeout": request_timeout(self.pooling, total)}

    def get(self, url: Any, **kwargs: Any) -> Any:
        """GET with the configured timeouts."""
        return self.session.get(url, **self._timed(kwargs))

    def post(self, url: Any, **kwargs: Any) -> Any:
        """POST with the configured timeouts."""
        return self.session.post(url, **self._timed(kwargs))

    def put(self, url: Any, **kwargs: Any) -> Any:
        """PUT with the configured timeouts."""
        return self.session.put(url, **self._timed(kwargs))

    def delete(self, url: Any, **kwargs: Any) -> Any:
        """DELETE with the configured timeouts."""
        return self.session.delete(url, **self._timed(kwargs))

    def patch(self, url: Any, **kwargs: Any) -> Any:
        """PATCH with the configured timeouts."""
        return self.session.patch(url, **self._timed(kwargs))
