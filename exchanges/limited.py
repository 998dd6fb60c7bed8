"""ccxt instances whose every request is admitted by the fleet-wide limiter.

The hook is ccxt's own request path: ``fetch2`` (which every unified and implicit method
goes through) waits for the shared limiter with the endpoint's weight from our tables, within
the request's deadline (``exchanges/request.py``), lets the breaker grant the attempt once
the budget is in hand, and times the wire alone (limiter waits are not exchange latency).
Its charges in sliding-window pools are held while it is in flight and settled (re-stamped)
when it completes: the exchange counts a request when it arrives, at the latest when its
answer comes back, so the fleet's window is never earlier than the exchange's, however
unevenly the network delays requests. ``on_rest_response`` (which sees every response's
status and headers) feeds the exchange's usage headers and any answer its profile reads as
"over the limit" (``exchanges/profiles``: a 429/418 with ``Retry-After``, a Kraken
``EAPI:Rate limit exceeded`` in a 200) back to the limiter. ccxt's own per-process
throttle is off. Nothing can reach the exchange without passing the limiter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlparse

from core.errors import LimiterUnavailableError
from core.events import emit
from core.tracing import span
from exchanges.profiles import SUPPORTED, ExchangeProfile, ask_published_limits, profile
from exchanges.request import Attempt, current_attempt, current_priority
from ratelimit.manager import ExchangeRateLimitManager
from ratelimit.pools import Priority

log = logging.getLogger(__name__)

#: The responses ccxt saw during one fetch2 (status, headers, body), reported after it.
_answers: ContextVar[list[tuple[int, str, dict[str, str], Any]] | None] = ContextVar(
    "crypto_ai_responses", default=None
)


def _json(body: Any) -> Any:
    if isinstance(body, bytes | str):
        try:
            return json.loads(body)
        except ValueError:
            return None
    return body


def scope_of(  # noqa: PLR0917 - ccxt's request, as fetch2 receives it
    exchange: Any,
    table_scopes: Any,
    path: str,
    api: Any,
    method: str,
    rules: ExchangeProfile | None = None,
) -> str:
    """Return the limiter scope of a ccxt request: ``"GET /api/v3/depth"`` when tabled.

    The path is the wire's (``urls['api'][api]``'s path prefix and ccxt's path template, or
    what the exchange's profile says), so the table is written in the exchange's own paths.
    """
    if rules is not None and rules.request_path is not None:
        wire, signed = rules.request_path(path, api)
    else:
        api_name = api[0] if isinstance(api, list | tuple) else api
        base = exchange.urls.get("api", {}).get(api_name, "")
        prefix = urlparse(base).path if isinstance(base, str) else ""
        names = api if isinstance(api, list | tuple) else [api]  # htx: ['spot', 'private']
        wire, signed = f"{prefix}/{path}", any("private" in str(a).lower() for a in names)
    scope = f"{method.upper()} {wire}"
    if scope in table_scopes:
        return scope
    return "private" if signed else "public"


async def _wait_for_budget(
    limiter: ExchangeRateLimitManager,
    key: str,
    scope: str,
    params: Any,
    *,
    attempt: Attempt | None,
    max_wait: float,
    ticket: str,
    hold: float,
) -> None:
    """Wait in the fleet's limiter; then, budget in hand, let the breaker grant the attempt.

    The request's sliding-window charges are held under ``ticket`` for up to ``hold``
    seconds, until it is settled."""
    priority = attempt.request.priority if attempt is not None else current_priority()
    if priority is None:
        priority = Priority.HIGH if limiter.is_order_scope(key, scope) else Priority.MEDIUM
    wait = max_wait if attempt is None else attempt.max_wait(max_wait)
    with span("limiter.wait", exchange=key, scope=scope, priority=priority.name) as current:
        result = await limiter.acquire_async(
            key, scope, params=params, priority=priority, max_wait=wait, ticket=ticket, hold=hold
        )
        current.set_attribute("waited", result.waited)
        for pool, left in result.remaining.items():
            current.set_attribute(f"remaining.{pool}", left)
    emit("limiter.admitted", exchange=key, scope=scope, waited=result.waited)
    if attempt is not None:
        attempt.waited += result.waited
        await attempt.before_send()


async def _feedback(
    limiter: ExchangeRateLimitManager,
    key: str,
    rules: ExchangeProfile | None,
    response: tuple[int, str, dict[str, str], Any],
    scope: str | None = None,
) -> None:
    """Feed one response back to the fleet: usage headers, "over the limit" answers, and
    the limits the exchange publishes (adopted when lower than the table's).

    An "over the limit" answer to this request (``scope``, which the limiter admitted)
    also cuts the limit of the pool it names, or else of the scope's own pools (OKX's 429
    names none), fleet-wide (``ratelimit.feedback``: AIMD); the limits the fleet learned
    are re-read here at most once a second."""
    code, path, headers, body = response
    try:
        if (
            rules is not None
            and code == 200
            and rules.limits_path
            and path.endswith(rules.limits_path)
        ):
            published = rules.published_limits(path, _json(body))
            if published:
                limiter.adopt_limits(key, published)
        await limiter.areport_headers(key, headers, scope)
        throttle = rules.throttled(code, headers, str(body or "")) if rules is not None else None
        if throttle is not None:
            await limiter.areport_throttle(
                key, throttle.status, throttle.retry_after, pool=throttle.pool
            )
            await limiter.alearn(key, limiter.learnable_pools(key, scope, throttle.pool))
        await limiter.arefresh_learned(key)
    except LimiterUnavailableError as exc:
        log.warning("%s: could not report usage to the limiter: %s", key, exc)


#: Seconds a request may stay in flight past ccxt's ``timeout`` and still be held.
_HOLD_SLACK = 1.0


def _hold(exchange: Any, attempt: Attempt | None) -> float:
    """Return how long the request may be in flight: ccxt's timeout, or the deadline left."""
    timeout = float(getattr(exchange, "timeout", 10_000) or 10_000) / 1000
    if attempt is not None:
        timeout = min(timeout, attempt.request.deadline.left())
    return max(0.0, timeout) + _HOLD_SLACK


def limited_class(
    base: type,
    key: str,
    limiter: ExchangeRateLimitManager,
    max_wait: float,
    ccxt_id: str | None = None,
) -> type:
    """Return a subclass of a ccxt exchange class whose requests pass the shared limiter."""
    table = limiter.table(key)
    ccxt_id = ccxt_id or key
    rules = profile(ccxt_id) if ccxt_id in SUPPORTED else None

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
        if (
            rules is not None
            and rules.limits_method
            and self.apiKey  # the question is private: without a key there is none to ask
            and not getattr(self, "_crypto_ai_asked", False)
        ):
            self._crypto_ai_asked = True  # set first: the question is a fetch2 too
            await ask_published_limits(self, limiter, key, rules)
        scope = scope_of(self, table.scopes, path, api, method, rules)
        attempt = current_attempt()
        ticket, hold = uuid.uuid4().hex, _hold(self, attempt)
        await _wait_for_budget(
            limiter,
            key,
            scope,
            params,
            attempt=attempt,
            max_wait=max_wait,
            ticket=ticket,
            hold=hold,
        )
        parent: Any = base
        started, answers = time.monotonic(), _answers.set([])
        try:
            if attempt is None:
                return await parent.fetch2(self, path, api, method, params, config or {})
            async with asyncio.timeout(attempt.request.deadline.left()):  # the caller's deadline
                return await parent.fetch2(self, path, api, method, params, config or {})
        finally:
            if attempt is not None:
                attempt.wire += time.monotonic() - started
            # answered, failed or cut off: the exchange has counted it by now, if ever
            await limiter.asettle(key, scope, ticket, params)
            seen = _answers.get() or []
            _answers.reset(answers)
            for code, path_seen, headers, body in seen:
                await _feedback(limiter, key, rules, (code, path_seen, headers, body), scope)

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
        # ccxt calls this synchronously; fetch2 reports it (async) once the call returns
        seen = _answers.get()
        if seen is not None:
            seen.append((code, urlparse(url).path, dict(headers or {}), body))
        parent: Any = base
        return parent.on_rest_response(
            self, code, reason, url, method, headers, body, request_headers, request_body
        )

    return type(
        f"Limited_{base.__name__}",
        (base,),
        {"fetch2": fetch2, "on_rest_response": on_rest_response},
    )
