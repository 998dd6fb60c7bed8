"""OKX's v5 REST request limits: per endpoint, per 2 seconds, by IP or by user ID.

Source: https://www.okx.com/docs-v5/en/#overview-rate-limits and each endpoint's "Rate
Limit" / "Rate limit rule" lines. Public endpoints count per client IP, private ones per
user (the API key's account); place, cancel and order-details count per user and
instrument. Each endpoint has its own budget; windows here are sliding (any 2 s span), the
strict reading of "20 requests per 2 seconds". Over a budget OKX answers HTTP 429 with
``{"code": "50011", "msg": "Too Many Requests", "data": []}`` and no ``Retry-After``.

A client that keeps sending over a budget (``lockout_after`` refusals inside one window,
default ``SandboxLimits.ban_after``) is locked out of that endpoint for
``lockout_seconds`` (default 10 s): every request to it is refused with the same 50011
answer until the lockout ends. Windows and lockouts are multiplied by ``time_scale``.

Besides, every new order of an account (all instruments, ``trade/order`` and
``trade/batch-orders``) spends the sub-account budget, 1000 per 2 s by default, as
``GET /api/v5/trade/account-rate-limit`` reports it; over it the order fails with
``sCode`` ``50061``.

Knobs (``SandboxLimits.overrides``): ``<budget>_per_2s`` for each budget in
:data:`BUDGETS` (e.g. ``market_ticker_per_2s``) and ``account_orders_per_2s``,
``lockout_after``, ``lockout_seconds``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import SandboxLimits
from sandbox.errors import ApiError

WINDOW = 2.0


@dataclass(frozen=True)
class Budget:
    """One endpoint's published limit: ``limit`` requests per 2 s, counted ``by``."""

    name: str
    limit: int
    #: "ip", "uid" or "uid+inst" (user ID and instrument ID)
    by: str


#: endpoint ("METHOD /path") -> its budget, as published for a default account.
BUDGETS: dict[str, Budget] = {
    "GET /api/v5/public/time": Budget("public_time", 10, "ip"),
    "GET /api/v5/public/instruments": Budget("public_instruments", 20, "ip"),
    "GET /api/v5/market/ticker": Budget("market_ticker", 20, "ip"),
    "GET /api/v5/market/tickers": Budget("market_tickers", 20, "ip"),
    "GET /api/v5/market/books": Budget("market_books", 40, "ip"),
    "GET /api/v5/market/books-full": Budget("market_books_full", 10, "ip"),
    "GET /api/v5/market/candles": Budget("market_candles", 40, "ip"),
    "GET /api/v5/market/history-candles": Budget("market_history_candles", 20, "ip"),
    "GET /api/v5/market/trades": Budget("market_trades", 100, "ip"),
    "GET /api/v5/account/balance": Budget("account_balance", 10, "uid"),
    "POST /api/v5/trade/order": Budget("trade_order", 60, "uid+inst"),
    "POST /api/v5/trade/cancel-order": Budget("cancel_order", 60, "uid+inst"),
    "GET /api/v5/trade/order": Budget("order_details", 60, "uid+inst"),
    "GET /api/v5/trade/orders-pending": Budget("orders_pending", 60, "uid"),
    "GET /api/v5/trade/fills": Budget("trade_fills", 60, "uid"),
    "GET /api/v5/trade/fills-history": Budget("trade_fills_history", 10, "uid"),
    "GET /api/v5/trade/account-rate-limit": Budget("account_rate_limit", 2, "uid"),
}

TOO_MANY = ("50011", "Too Many Requests")
#: Every new order of one account (sub-account), all instruments and endpoints together.
ACCOUNT_ORDERS = Budget("account_orders", 1000, "uid")
ACCOUNT_TOO_MANY = ("50061", "Sub-account rate limit exceeded")


@dataclass
class ClientStats:
    """What one client (IP) did and was told."""

    requests: int = 0
    sent_429: int = 0
    lockouts: int = 0
    #: requests that arrived less than one window after a 429 to this client
    inside_window_after_429: int = 0
    last_429: float = float("-inf")
    by_endpoint: dict[str, int] = field(default_factory=dict)


@dataclass
class _Counter:
    times: deque[float] = field(default_factory=deque)
    refused: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LimitEnforcer:
    """Admit or refuse each request the way OKX's gateway does (see the module docstring)."""

    def __init__(self, limits: SandboxLimits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.clock = clock
        self.window = WINDOW * limits.time_scale
        knobs = limits.overrides
        self.lockout_after = int(knobs.get("lockout_after", limits.ban_after))
        self.lockout_seconds = knobs.get("lockout_seconds", 10.0) * limits.time_scale
        self.clients: dict[str, ClientStats] = {}
        self.counters: dict[tuple[str, str], _Counter] = {}

    def limit(self, budget: Budget) -> int:
        """Return a budget's limit per window (the override when one is set)."""
        return int(self.limits.overrides.get(f"{budget.name}_per_2s", budget.limit))

    def client(self, ip: str) -> ClientStats:
        """Return the counters of one client IP."""
        return self.clients.setdefault(ip, ClientStats())

    def admit(self, endpoint: str, ip: str, uid: str | None, inst: str | None) -> None:
        """Charge one request to its endpoint's budget or raise OKX's 429 (code 50011)."""
        now = self.clock()
        stats = self.client(ip)
        stats.requests += 1
        stats.by_endpoint[endpoint] = stats.by_endpoint.get(endpoint, 0) + 1
        if now - stats.last_429 < self.window:
            stats.inside_window_after_429 += 1
        budget = BUDGETS.get(endpoint)
        if budget is None:
            return
        if budget.by == "ip" or not uid:
            who = f"ip:{ip}"
        elif budget.by == "uid+inst":
            who = f"uid:{uid}:{inst or ''}"
        else:
            who = f"uid:{uid}"
        counter = self.counters.setdefault((endpoint, who), _Counter())
        while counter.times and counter.times[0] <= now - self.window:
            counter.times.popleft()
        while counter.refused and counter.refused[0] <= now - self.window:
            counter.refused.popleft()
        if counter.locked_until > now or len(counter.times) >= self.limit(budget):
            stats.sent_429 += 1
            stats.last_429 = now
            if counter.locked_until <= now:
                counter.refused.append(now)
                if len(counter.refused) >= self.lockout_after:
                    # still sending while refused: locked out of this endpoint for a while
                    counter.refused.clear()
                    counter.locked_until = now + self.lockout_seconds
                    stats.lockouts += 1
            raise ApiError(429, *TOO_MANY)
        counter.times.append(now)

    def limit_of_orders(self) -> int:
        """Return the account's new-order budget per 2 s (``account-rate-limit``)."""
        return self.limit(ACCOUNT_ORDERS)

    def admit_order(self, uid: str, ip: str) -> None:
        """Charge one new order to the account's budget or raise 50061 (a 429)."""
        now = self.clock()
        counter = self.counters.setdefault(("orders", f"uid:{uid}"), _Counter())
        while counter.times and counter.times[0] <= now - self.window:
            counter.times.popleft()
        if len(counter.times) >= self.limit(ACCOUNT_ORDERS):
            self.client(ip).sent_429 += 1
            self.client(ip).last_429 = now
            raise ApiError(429, *ACCOUNT_TOO_MANY)
        counter.times.append(now)

    def used(self, endpoint: str, who: str) -> int:
        """Return how many requests ``who`` spent on ``endpoint`` in the current window."""
        counter = self.counters.get((endpoint, who))
        if counter is None:
            return 0
        now = self.clock()
        return sum(1 for t in counter.times if t > now - self.window)

    def throttle(self, ip: str) -> ApiError:
        """Return the 429 a fault injects, counted like a real one."""
        self.client(ip).sent_429 += 1
        self.client(ip).last_429 = self.clock()
        return ApiError(429, *TOO_MANY)

    def violations(self) -> int:
        """Return every 429 answered."""
        return sum(s.sent_429 for s in self.clients.values())

    def reset(self) -> None:
        """Forget every count and lockout."""
        self.clients.clear()
        self.counters.clear()
