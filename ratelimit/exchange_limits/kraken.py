"""kraken's published limits for a default (Starter tier) account, as the fleet's limit table.

Sources (read 2026-11):

- https://docs.kraken.com/api/docs/guides/spot-rest-ratelimits : every API key has a call
  counter; private calls add 1, ledger/trade-history calls (``Ledgers``, ``QueryLedgers``,
  ``TradesHistory``, ``QueryTrades``) add 2, ``AddOrder``/``CancelOrder`` add nothing (they
  use the trading engine's limiter). Starter: maximum 15, decay 0.33/s (Intermediate 20 and
  0.5/s, Pro 20 and 1/s: override ``PRIVATE_COUNTER`` in ``exchanges.kraken.rate_limits``).
  Over it: ``EAPI:Rate limit exceeded``; continuing while limited: a temporary lockout.
- https://docs.kraken.com/api/docs/guides/spot-ratelimits : the order-rate counter per pair
  (Starter threshold 60, decay 1/s): ``AddOrder`` +1, ``CancelOrder`` +8 for an order under
  5 s old down to 0 after 300 s. The fleet cannot know an order's age when it cancels, so a
  cancel is charged the worst case (8), and one pool covers every pair (conservative).
- Public endpoints: about 1 request per second per IP (ccxt ``kraken.py``: ``rateLimit``
  1000 ms, and Kraken's support article "What are the API rate limits?").

ccxt calls ``fetch2("Ticker", ["public"])`` with ``urls['api']['public']`` =
``https://api.kraken.com`` (no path), so the fleet's scope (``exchanges/limited.py``
``scope_of``) of a Kraken call is ``"GET /Ticker"`` / ``"POST /AddOrder"``; the scopes are
also listed by the full path the exchange sees (``"POST /0/private/AddOrder"``) so that they
hold if ``scope_of`` ever adds ccxt's version/api prefix.
"""

from __future__ import annotations

from ratelimit.pools import PoolSpec
from ratelimit.table_model import ExchangeTable, bucket

_PUB, _CTR, _ORD = "PUBLIC", "PRIVATE_COUNTER", "ORDER_RATE"

_PUBLIC_CALLS: tuple[str, ...] = (
    "Time",
    "SystemStatus",
    "Assets",
    "AssetPairs",
    "Ticker",
    "Depth",
    "OHLC",
    "Trades",
    "Spread",
)
_PRIVATE_CALLS: tuple[str, ...] = (
    "Balance",
    "BalanceEx",
    "TradeBalance",
    "OpenOrders",
    "ClosedOrders",
    "QueryOrders",
    "CancelAll",
    "GetWebSocketsToken",
)
_HISTORY_CALLS: tuple[str, ...] = ("TradesHistory", "QueryTrades", "Ledgers", "QueryLedgers")
#: AddOrder: 1 in the order-rate counter; CancelOrder: its worst-case penalty.
_ORDER_CALLS = {"AddOrder": 1.0, "CancelOrder": 8.0}


def _scopes() -> dict[str, dict[str, float]]:
    scopes: dict[str, dict[str, float]] = {
        "public": {_PUB: 1},
        "private": {_CTR: 1},
        "order": {_ORD: 1},
        "cancel": {_ORD: 8},
    }
    for name in _PUBLIC_CALLS:
        for path in (f"GET /{name}", f"GET /0/public/{name}"):
            scopes[path] = {_PUB: 1}
    for name in _PRIVATE_CALLS + _HISTORY_CALLS:
        weight = 2.0 if name in _HISTORY_CALLS else 1.0
        for path in (f"POST /{name}", f"POST /0/private/{name}"):
            scopes[path] = {_CTR: weight}
    for name, weight in _ORDER_CALLS.items():
        for path in (f"POST /{name}", f"POST /0/private/{name}"):
            scopes[path] = {_ORD: weight}
    return scopes


KRAKEN = ExchangeTable(
    pools=(
        # about 1/s per IP; a burst of 2 so that ``load_markets`` (Assets + AssetPairs) does
        # not wait a second between its two calls
        bucket(_PUB, 2, 1),
        PoolSpec(_CTR, "leaky_bucket", 15, rate=0.33),
        PoolSpec(_ORD, "leaky_bucket", 60, rate=1.0),
    ),
    scopes=_scopes(),
    order_scopes=frozenset(
        {"order", "cancel"}
        | {f"POST /{n}" for n in _ORDER_CALLS}
        | {f"POST /0/private/{n}" for n in _ORDER_CALLS}
    ),
)

TABLE = KRAKEN
