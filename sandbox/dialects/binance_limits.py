"""Binance's request limits, enforced per client IP and per account, from one config.

REQUEST_WEIGHT per minute and RAW_REQUESTS per 5 minutes per IP; ORDERS per 10 s and per day
per account (API key); windows aligned to the clock and multiplied by ``time_scale`` for fast
tests; an OCO counts two orders. Over a limit: 429 with ``Retry-After`` and code -1003 (-1015
for orders). A client that keeps sending while told to wait (``ban_after`` requests inside
``Retry-After``, so that a few requests already in flight are not punished) gets 418 and a
ban that doubles each time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import SandboxLimits
from sandbox.errors import ApiError

#: Weights (REQUEST_WEIGHT) of the order list endpoints, from their Binance spot API doc pages,
#: for endpoints the fleet's limit table (``ratelimit/exchange_limits/binance.py``) lacks.
ORDER_LIST_WEIGHTS = {
    "POST /api/v3/orderList/oco": 1.0,
    "POST /api/v3/order/oco": 1.0,
    "GET /api/v3/orderList": 4.0,
    "GET /api/v3/openOrderList": 6.0,
    "GET /api/v3/allOrderList": 20.0,
    "DELETE /api/v3/orderList": 1.0,
}
#: How many orders each order-placing endpoint adds to the ORDERS counts.
ORDER_COUNTS = {
    "POST /api/v3/order": 1,
    "POST /api/v3/orderList/oco": 2,
    "POST /api/v3/order/oco": 2,
}


@dataclass
class ClientStats:
    """What one client IP did and was told."""

    requests: int = 0
    weight_total: float = 0.0
    weight_history: dict[int, float] = field(default_factory=dict)
    raw_by_window: dict[int, int] = field(default_factory=dict)
    sent_429: int = 0
    sent_418: int = 0
    retry_until: float = 0.0
    ignored_429: int = 0
    inside_retry_after: int = 0
    ban_until: float = 0.0
    bans: int = 0


class LimitEnforcer:
    """Admit or refuse each request the way Binance's gateway does."""

    def __init__(self, limits: SandboxLimits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.clock = clock
        scale = limits.time_scale
        self.weight_window, self.raw_window = 60 * scale, 300 * scale
        self.order_windows = (10 * scale, 86400 * scale)
        self.clients: dict[str, ClientStats] = {}
        self.orders: dict[str, dict[tuple[int, int], int]] = {}

    def client(self, ip: str) -> ClientStats:
        """Return the counters of one client IP."""
        return self.clients.setdefault(ip, ClientStats())

    def admit(
        self, ip: str, weight: float, account: str | None, is_order: bool, orders: int = 1
    ) -> dict[str, str]:
        """Charge the request (``orders`` new orders if ``is_order``) or raise ApiError (429/418);
        return the usage headers.
        """
        now = self.clock()
        stats = self.client(ip)
        stats.requests += 1
        self._refuse_banned(stats, now)
        window = int(now // self.weight_window)
        used = stats.weight_history.get(window, 0.0)
        if used + weight > self.limits.request_weight_per_minute:
            message = (
                "Too much request weight used; current limit is "
                f"{self.limits.request_weight_per_minute} request weight per 1 MINUTE. "
                "Please use WebSocket Streams for live updates to avoid polling the API."
            )
            self._too_many(stats, (window + 1) * self.weight_window - now, message)
        raw_window = int(now // self.raw_window)
        if stats.raw_by_window.get(raw_window, 0) + 1 > self.limits.raw_requests_per_5m:
            message = "Too many requests; current limit of raw requests is exceeded."
            self._too_many(stats, (raw_window + 1) * self.raw_window - now, message)
        if is_order and account:
            self._check_orders(account, now, orders)
        stats.weight_history[window] = used + weight
        if len(stats.weight_history) > 1000:
            del stats.weight_history[min(stats.weight_history)]
        stats.raw_by_window = {raw_window: stats.raw_by_window.get(raw_window, 0) + 1}
        stats.weight_total += weight
        return self.headers(ip, account)

    def _refuse_banned(self, stats: ClientStats, now: float) -> None:
        if stats.ban_until <= now and stats.retry_until > now:
            stats.ignored_429 += 1
            stats.inside_retry_after += 1
            if stats.ignored_429 < self.limits.ban_after:
                # requests already in flight when the 429 left get another 429, not a ban
                stats.sent_429 += 1
                message = "Too many requests; wait for Retry-After."
                raise self._error(429, stats.retry_until - now, -1003, message)
            # still sending while told to wait: ban, twice as long as the last time
            stats.ignored_429 = 0
            stats.bans += 1
            length = self.limits.ban_seconds * 2 ** (stats.bans - 1)
            stats.ban_until = (
                now + min(length, self.limits.max_ban_seconds) * self.limits.time_scale
            )
        if stats.ban_until > now:
            stats.sent_418 += 1
            message = (
                f"Way too many requests; IP banned until {int(stats.ban_until * 1000)}. "
                "Please use the websocket for live updates to avoid bans."
            )
            raise self._error(418, stats.ban_until - now, -1003, message)

    def _too_many(self, stats: ClientStats, wait: float, msg: str) -> None:
        stats.sent_429 += 1
        stats.ignored_429 = 0
        stats.retry_until = max(stats.retry_until, self.clock() + wait)
        raise self._error(429, wait, -1003, msg)

    def _check_orders(self, account: str, now: float, orders: int) -> None:
        counts = self.orders.setdefault(account, {})
        limits = (self.limits.orders_per_10s, self.limits.orders_per_day)
        names = ("TEN_SECONDS", "DAY")
        keys = [(i, int(now // w)) for i, w in enumerate(self.order_windows)]
        for (i, window), limit, name in zip(keys, limits, names, strict=True):
            if counts.get((i, window), 0) + orders > limit:
                wait = (window + 1) * self.order_windows[i] - now
                message = f"Too many new orders; current limit is {limit} orders per {name}."
                raise self._error(429, wait, -1015, message)
        for key in keys:
            counts[key] = counts.get(key, 0) + orders
        for key in [k for k in counts if k not in keys]:
            del counts[key]

    def _error(self, status: int, wait: float, code: int, msg: str) -> ApiError:
        return ApiError(status, code, msg, headers={"Retry-After": str(max(1, math.ceil(wait)))})

    def headers(self, ip: str, account: str | None) -> dict[str, str]:
        """Return the usage headers Binance puts on every response."""
        now = self.clock()
        stats = self.client(ip)
        used = stats.weight_history.get(int(now // self.weight_window), 0.0)
        headers = {"X-MBX-USED-WEIGHT-1M": str(int(used))}
        if account:
            counts = self.orders.get(account, {})
            for i, suffix in enumerate(("10S", "1D")):
                n = counts.get((i, int(now // self.order_windows[i])), 0)
                headers[f"X-MBX-ORDER-COUNT-{suffix}"] = str(n)
        return headers

    def throttle(self, ip: str, seconds: float) -> ApiError:
        """Tell a client to wait ``seconds`` (a 429) as if it had run out of weight."""
        stats = self.client(ip)
        stats.sent_429 += 1
        stats.ignored_429 = 0
        stats.retry_until = max(stats.retry_until, self.clock() + seconds)
        return self._error(429, seconds, -1003, "Too many requests; please slow down.")

    def reset(self) -> None:
        """Forget every count, wait and ban (the admin endpoint's reset)."""
        self.clients.clear()
        self.orders.clear()
