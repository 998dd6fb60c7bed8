"""okx's published limits for a default (non-VIP) account, as the fleet's limit table.

Sources (read 2026-11):

OKX v5: https://www.okx.com/docs-v5/en/#overview-rate-limits and each endpoint's "Rate
Limit" / "Rate limit rule" lines. Every endpoint has its own budget per 2 seconds; public
ones count per IP, private ones per user ID (place, cancel and order details per user ID
and instrument: the fleet counts them per user, which is stricter):
``public/time`` 10, ``public/instruments`` 20, ``market/ticker`` 20, ``market/tickers`` 20,
``market/books`` 40, ``market/books-full`` 10, ``market/candles`` 40,
``market/history-candles`` 20, ``market/trades`` 100, ``account/balance`` 10,
``trade/order`` (place) 60, ``trade/cancel-order`` 60, ``trade/order`` (details) 60,
``trade/orders-pending`` 60, ``trade/fills`` 60, ``trade/fills-history`` 10,
``trade/account-rate-limit`` 1 per second. A sub-account may place 1000 new orders per
2 s across all instruments ("Sub-account rate limit"; ``trade/account-rate-limit``
reports it). ``trade/batch-orders`` counts each order: 300 orders per 2 s.
OKX sends no usage headers.

Scopes: each endpoint is listed by the full path the exchange sees (``GET
/api/v5/market/ticker``, what ccxt ``okx.sign()`` sends and the sandbox counts) and by the
path ``exchanges/limited.py`` ``scope_of`` derives today (``GET /market/ticker``: okx's
``urls['api']`` has only ``rest``, without the ``/api/v5`` prefix that ``sign()`` adds),
both priced the same, so the fleet finds the endpoint's pool either way.
"""

from __future__ import annotations

from ratelimit.table_model import ExchangeTable, sliding

_V5 = "/api/v5/"

#: pool name -> (requests per 2 s, "METHOD path" under /api/v5/)
_ENDPOINTS: dict[str, tuple[int, str]] = {
    "PUBLIC_TIME": (10, "GET public/time"),
    "PUBLIC_INSTRUMENTS": (20, "GET public/instruments"),
    "MARKET_TICKER": (20, "GET market/ticker"),
    "MARKET_TICKERS": (20, "GET market/tickers"),
    "MARKET_BOOKS": (40, "GET market/books"),
    "MARKET_BOOKS_FULL": (10, "GET market/books-full"),
    "MARKET_CANDLES": (40, "GET market/candles"),
    "MARKET_HISTORY_CANDLES": (20, "GET market/history-candles"),
    "MARKET_TRADES": (100, "GET market/trades"),
    "ACCOUNT_BALANCE": (10, "GET account/balance"),
    "TRADE_ORDER": (60, "POST trade/order"),
    "CANCEL_ORDER": (60, "POST trade/cancel-order"),
    "ORDER_DETAILS": (60, "GET trade/order"),
    "ORDERS_PENDING": (60, "GET trade/orders-pending"),
    "TRADE_FILLS": (60, "GET trade/fills"),
    "TRADE_FILLS_HISTORY": (10, "GET trade/fills-history"),
    "ACCOUNT_RATE_LIMIT": (2, "GET trade/account-rate-limit"),
}


def _scopes(entry: str, weights: dict[str, float]) -> dict[str, dict[str, float]]:
    """Return ``entry``'s weights under its full path and under ``scope_of``'s short one."""
    method, path = entry.split(" ", 1)
    return {f"{method} {_V5}{path}": weights, f"{method} /{path}": weights}


_ORDERS = "ACCOUNT_ORDERS"
_BATCH = "BATCH_ORDERS"
#: endpoints OKX does not list here spend a conservative shared budget
_PUBLIC, _PRIVATE = "PUBLIC_OTHER", "PRIVATE_OTHER"

OKX = ExchangeTable(
    pools=(
        *(sliding(name, limit, 2) for name, (limit, _) in _ENDPOINTS.items()),
        sliding(_ORDERS, 1000, 2),
        sliding(_BATCH, 300, 2),
        sliding(_PUBLIC, 10, 2),
        sliding(_PRIVATE, 5, 2),
    ),
    scopes={
        "public": {_PUBLIC: 1},
        "private": {_PRIVATE: 1},
        "order": {"TRADE_ORDER": 1, _ORDERS: 1},
        "cancel": {"CANCEL_ORDER": 1},
        **{
            scope: weights
            for name, (_, entry) in _ENDPOINTS.items()
            for scope, weights in _scopes(entry, {name: 1}).items()
        },
        **_scopes("POST trade/order", {"TRADE_ORDER": 1, _ORDERS: 1}),
        **_scopes("POST trade/batch-orders", {_BATCH: 1, _ORDERS: 1}),
    },
    order_scopes=frozenset(
        {"order", "cancel"}
        | {
            scope
            for entry in ("POST trade/order", "POST trade/batch-orders", "POST trade/cancel-order")
            for scope in _scopes(entry, {})
        }
    ),
)

TABLE = OKX
