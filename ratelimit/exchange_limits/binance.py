"""binance's published limits for a default (non-VIP) account, as the fleet's limit table.

Sources (read 2026-11):

Binance spot: https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits
and the endpoint pages (weights), and ``GET /api/v3/exchangeInfo`` ``rateLimits``:
REQUEST_WEIGHT 6000 per minute per IP, ORDERS 100 per 10 s and 200,000 per day per account,
RAW_REQUESTS 61,000 per 5 minutes. Tickers: ``ticker/24hr`` weighs 2 for one ``symbol``,
2 for a ``symbols`` list of 1-20, 40 for 21-100, 80 for more or for none; ``ticker/price``
and ``ticker/bookTicker`` 2 for one symbol, 4 for a list or none.
Windows are counted on calendar boundaries ("a 1 MINUTE interval starts every
minute"), so they are fixed windows here.
"""

from __future__ import annotations

from ratelimit.table_model import ExchangeTable, fixed

_W, _RAW, _O10, _O1D = "REQUEST_WEIGHT", "RAW_REQUESTS", "ORDERS_10S", "ORDERS_1D"


def _binance_read(weight: float) -> dict[str, float]:
    return {_W: weight, _RAW: 1}


BINANCE = ExchangeTable(
    pools=(
        fixed(_W, 6000, 60),
        fixed(_RAW, 61000, 300),
        fixed(_O10, 100, 10),
        fixed(_O1D, 200000, 86400),
    ),
    scopes={
        "public": _binance_read(1),
        "private": _binance_read(20),
        "order": {_W: 1, _RAW: 1, _O10: 1, _O1D: 1},
        "cancel": _binance_read(1),
        "GET /api/v3/ping": _binance_read(1),
        "GET /api/v3/time": _binance_read(1),
        "GET /api/v3/exchangeInfo": _binance_read(20),
        "GET /api/v3/depth": _binance_read(5),
        "GET /api/v3/trades": _binance_read(25),
        "GET /api/v3/aggTrades": _binance_read(4),
        "GET /api/v3/klines": _binance_read(2),
        "GET /api/v3/ticker/24hr": _binance_read(2),
        "GET /api/v3/ticker/price": _binance_read(2),
        "GET /api/v3/ticker/bookTicker": _binance_read(2),
        "GET /api/v3/account": _binance_read(20),
        "POST /api/v3/order": {_W: 1, _RAW: 1, _O10: 1, _O1D: 1},
        "GET /api/v3/order": _binance_read(4),
        "DELETE /api/v3/order": _binance_read(1),
        "GET /api/v3/openOrders": _binance_read(6),
        "GET /api/v3/allOrders": _binance_read(20),
        "GET /api/v3/myTrades": _binance_read(20),
        # order lists (OCO): one request, two orders against the order counts; "New Order
        # list - OCO (TRADE)" weight 1, "Query Order list" 4, "Query Open Order lists" 6,
        # "Query all Order lists" 20, "Cancel Order list" 1 (Binance spot REST docs)
        "POST /api/v3/orderList/oco": {_W: 1, _RAW: 1, _O10: 2, _O1D: 2},
        "POST /api/v3/order/oco": {_W: 1, _RAW: 1, _O10: 2, _O1D: 2},
        "GET /api/v3/orderList": _binance_read(4),
        "GET /api/v3/openOrderList": _binance_read(6),
        "GET /api/v3/allOrderList": _binance_read(20),
        "DELETE /api/v3/orderList": _binance_read(1),
    },
    order_scopes=frozenset(
        {
            "order",
            "cancel",
            "POST /api/v3/order",
            "DELETE /api/v3/order",
            "POST /api/v3/orderList/oco",
            "POST /api/v3/order/oco",
            "DELETE /api/v3/orderList",
        }
    ),
    param_weights={
        "GET /api/v3/depth": ("limit", ((100, 5), (500, 25), (1000, 50), (5000, 250))),
    },
    # a ``symbols=[...]`` list is priced by its length (the endpoint pages' weight tables)
    symbols_weights={
        "GET /api/v3/ticker/24hr": ((20, 2), (100, 40), (float("inf"), 80)),
        "GET /api/v3/ticker/price": ((float("inf"), 4),),
        "GET /api/v3/ticker/bookTicker": ((float("inf"), 4),),
    },
    no_symbol_weights={
        "GET /api/v3/ticker/24hr": 80,
        "GET /api/v3/ticker/price": 4,
        "GET /api/v3/ticker/bookTicker": 4,
        "GET /api/v3/openOrders": 80,
    },
    usage_headers={
        "x-mbx-used-weight-1m": _W,
        "x-mbx-order-count-10s": _O10,
        "x-mbx-order-count-1d": _O1D,
    },
)

TABLE = BINANCE
