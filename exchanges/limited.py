"""ccxt instances whose every request is admitted by the fleet-wide limiter.

The hook is ccxt's own request path: ``fetch2`` (which every unified and implicit method
goes through) waits for the shared limiter with the endpoint's weight from our tables, and
``on_rest_response`` (which sees every response's status and headers) feeds the exchange's
usage headers and any 429/418 ``Retry-After`` back to the limiter. ccxt's own per-process
throttle is off. Nothing can reach the exchange without passing the limiter.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlparse

from core.errors import LimiterUnavailableError
from core.events import emit
from core.tracing import span
from ratelimit.manager import ExchangeRateLimitManager
from ratelimit.pools import Priority

log = logging.getLogger(__name__)

_priority: ContextVar[Priority | None] = ContextVar("crypto_ai_request_priority", default=None)


@contextlib.contextmanager
def request_priority(priority: Priority) -> Iterator[None]:
    """Make the requests sent inside the block use ``priority`` at the limiter."""
    token = _priority.set(priority)
    try:
        yield
    finally:
        _priority.reset(token)


def current_priority() -> Priority | None:
    """Return the priority set by an enclosing :func:`request_priority`, if any."""
    return _priority.get()


def scope_of(exchange: Any, table_scopes: Any, path: str, api: Any, method: str) -> str:
    """Return the limiter scope of a ccxt request: ``"GET /api/v3/depth"`` when tabled."""
    api_name = api[0] if isinstance(api, list | tuple) else api
    base = exchange.urls.get("api", {}).get(api_name, "")
    prefix = urlparse(base).path if isinstance(base, str) else ""
    scope = f"{method.upper()} {prefix}/{path}"
    if scope in table_scopes:
        return scope
    return "private" if "private" in str(api_name).lower() else "public"


def limited_class(base: type, key: str, limiter: ExchangeRateLimitManager, max_wait: float) -> type:
    """Return a subclass of a ccxt exchange class whose requests pass the shared limiter."""
    table = limiter.table(key)
    order_pool = next((p.name for p in table.pools if "ORDER" in p.name), None)

    # ccxt's own signatures, positional arguments and all
    async def fetch2(  # noqa: PLR0917
        self: Any,
        path: str,
        api: Any = "public",
        method: str = "GET",
        params: Any = None,
        config: Any = None,
    ) -> Any:
        params = {} if params is None else params
        scope = scope_of(self, table.scopes, path, api, method)
        priority = _priority.get()
        if priority is None:
            priority = Priority.HIGH if limiter.is_order_scope(key, scope) else Priority.MEDIUM
        with span("limiter.wait", exchange=key, scope=scope, priority=priority.name) as current:
            result = await limiter.acquire_async(
                key, scope, params=params, priority=priority, max_wait=max_wait
            )
            current.set_attribute("waited", result.waited)
            for pool, left in result.remaining.items():
                current.set_attribute(f"remaining.{pool}", left)
        emit("limiter.admitted", exchange=key, scope=scope, waited=result.waited)
        parent: Any = base
        return await parent.fetch2(self, path, api, method, params, config or {})

    def on_rest_response(  # noqa: PLR0917
        self: Any,
        code: int,
        reason: str,
        url: str,
        method: str,
        headers: Any,
        body: Any,
        request_headers: Any,
        request_body: Any,
    ) -> Any:
        try:
            limiter.report_headers(key, dict(headers or {}))
            if code in (418, 429):
                retry_after = float((headers or {}).get("Retry-After") or 0) or None
                pool = order_pool if body and "-1015" in str(body) else None
                limiter.report_throttle(key, code, retry_after, pool=pool)
        except LimiterUnavailableError as exc:
            log.warning("%s: could not report usage to the limiter: %s", key, exc)
        parent: Any = base
        return parent.on_rest_response(
            self, code, reason, url, method, headers, body, request_headers, request_body
        )

    return type(
        f"Limited_{base.__name__}",
        (base,),
        {"fetch2": fetch2, "on_rest_response": on_rest_response},
    )
