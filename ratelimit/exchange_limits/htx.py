"""htx's published limits for a default (non-VIP) account, as the fleet's limit table.

Sources (read 2026-12):

- HTX spot API docs, "Access and rate limits" (https://www.htx.com/en-us/opend/newApiPages/,
  https://huobiapi.github.io/docs/spot/v1/en/): market data is limited per IP (800 requests
  per second across the market endpoints); private endpoints per UID and per endpoint, in
  fixed intervals, reported by ``X-HB-RateLimit-Requests-Remain`` and
  ``X-HB-RateLimit-Requests-Expire`` on the answers.
- HTX notice "HTX is going to change rate limit policy for part of REST API endpoints"
  (https://www.huobi.com/support/en-us/detail/900001168066/, effective 2020-06-04): "the
  overall access rate, from all API keys under same UID, to single endpoint" per fixed
  interval: ``/v1/account/accounts`` and ``.../{account-id}/balance`` 100 per 2 s,
  ``/v1/order/orders/place`` 100 per 2 s, ``.../{order-id}/submitcancel`` and
  ``submitCancelClientOrder`` 100 per 2 s, ``/v1/order/openOrders`` 50 per 2 s. The order
  and match-result queries were not in the rows we could read: 50 per 2 s is assumed.

The scopes are ccxt's request paths as the fleet's limiter sees them (``scope_of``: the
method and ccxt's path template, e.g. ``GET /v1/order/orders/{order-id}``): ccxt's htx API
name for spot is ``spot`` whether public or private, so an untabled private path would be
scoped ``public``; every path ccxt calls for the fleet's operations is listed here.
"""

from __future__ import annotations

from ratelimit.table_model import ExchangeTable, fixed

_PUBLIC = "PUBLIC"
_PLACE, _CANCEL = "PLACE", "CANCEL"
_ACCOUNTS, _BALANCE = "ACCOUNTS", "BALANCE"
_OPEN, _QUERY, _MATCHES = "OPEN_ORDERS", "ORDER_QUERY", "MATCHRESULTS"

_MARKET = {_PUBLIC: 1}

HTX = ExchangeTable(
    pools=(
        fixed(_PUBLIC, 800, 1),
        fixed(_PLACE, 100, 2),
        fixed(_CANCEL, 100, 2),
        fixed(_ACCOUNTS, 100, 2),
        fixed(_BALANCE, 100, 2),
        fixed(_OPEN, 50, 2),
        fixed(_QUERY, 50, 2),
        fixed(_MATCHES, 50, 2),
    ),
    scopes={
        "public": _MARKET,
        "private": {_QUERY: 1},
        "order": {_PLACE: 1},
        "cancel": {_CANCEL: 1},
        "GET /v1/common/symbols": _MARKET,
        "GET /v1/common/timestamp": _MARKET,
        "GET /v2/reference/currencies": _MARKET,
        "GET /market/detail/merged": _MARKET,
        "GET /market/tickers": _MARKET,
        "GET /market/depth": _MARKET,
        "GET /market/history/kline": _MARKET,
        "GET /market/history/candles": _MARKET,
        "GET /market/history/trade": _MARKET,
        "GET /v1/account/accounts": {_ACCOUNTS: 1},
        "GET /v1/account/accounts/{account-id}/balance": {_BALANCE: 1},
        "POST /v1/order/orders/place": {_PLACE: 1},
        "POST /v1/order/orders/{order-id}/submitcancel": {_CANCEL: 1},
        "POST /v1/order/orders/submitCancelClientOrder": {_CANCEL: 1},
        "GET /v1/order/openOrders": {_OPEN: 1},
        "GET /v1/order/orders/{order-id}": {_QUERY: 1},
        "GET /v1/order/orders/getClientOrder": {_QUERY: 1},
        "GET /v1/order/matchresults": {_MATCHES: 1},
        "GET /v1/order/orders/{order-id}/matchresults": {_MATCHES: 1},
    },
    order_scopes=frozenset(
        {
            "order",
            "cancel",
            "POST /v1/order/orders/place",
            "POST /v1/order/orders/{order-id}/submitcancel",
            "POST /v1/order/orders/submitCancelClientOrder",
        }
    ),
    # HTX reports "requests left" and "interval ends at", not a used count: the profile's
    # ``throttled`` reads them (a cooldown until the interval ends when none are left)
    usage_headers={},
)

TABLE = HTX
