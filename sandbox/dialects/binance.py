"""Binance's spot REST dialect (``/api/v3``): the default sandbox.

Sources: ccxt's ``binance.py`` (the paths and params it sends, how it parses answers and
maps error codes) and Binance's spot API docs (general info, limits, errors: codes -1003,
-1015, -1021, -1022, -2013, -2014, -2015). Limits per IP (REQUEST_WEIGHT per minute,
RAW_REQUESTS per 5 minutes) and per account (ORDERS per 10 s and per day), answered with
429 plus ``Retry-After`` and 418 bans for clients that keep sending (``binance_limits.py``);
signatures are HMAC-SHA256 over query + body (``binance_auth.py``); the views are
``binance_views.py``. Orders: LIMIT, MARKET, LIMIT_MAKER and the stop kinds STOP_LOSS(_LIMIT)
and TAKE_PROFIT(_LIMIT) (``sandbox/order_kinds.py``); OCO lists on ``POST
/api/v3/orderList/oco`` and the older ``POST /api/v3/order/oco``, read with ``GET
/api/v3/orderList``, ``openOrderList``, ``allOrderList`` and cancelled with ``DELETE
/api/v3/orderList`` (``sandbox/order_lists.py``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.config import SandboxFault
from ratelimit.tables import BINANCE, scope_weights
from sandbox.dialects import binance_views as views
from sandbox.dialects.base import PARAMS, TOTAL, Dialect, json_response
from sandbox.dialects.binance_auth import check_signed
from sandbox.dialects.binance_limits import ORDER_COUNTS, ORDER_LIST_WEIGHTS, LimitEnforcer
from sandbox.errors import ApiError
from sandbox.market import PricePath
from sandbox.order_kinds import STOP_KINDS
from sandbox.order_lists import OrderList, is_executing, legacy_legs_of, legs_of, report
from sandbox.order_lists import find as find_list
from sandbox.order_lists import place as place_list

if TYPE_CHECKING:
    from sandbox.server import Sandbox


class Binance(Dialect):
    """Binance spot: see the module docstring."""

    name = "binance"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        self.limits = LimitEnforcer(sandbox.config.limits)

    def routes(self, router: web.UrlDispatcher) -> None:
        """Add Binance's spot endpoints."""
        for path, handler in {
            "/api/v3/ping": self.ping,
            "/api/v3/time": self.server_time,
            "/api/v3/exchangeInfo": self.exchange_info,
            "/api/v3/ticker/price": self.ticker_price,
            "/api/v3/ticker/24hr": self.ticker_24hr,
            "/api/v3/ticker/bookTicker": self.book_ticker,
            "/api/v3/depth": self.depth,
            "/api/v3/klines": self.klines,
            "/api/v3/trades": self.trades,
            "/api/v3/aggTrades": self.agg_trades,
            "/api/v3/account": self.account,
            "/api/v3/openOrders": self.open_orders,
            "/api/v3/allOrders": self.all_orders,
            "/api/v3/myTrades": self.my_trades,
            "/api/v3/orderList": self.get_order_list,
            "/api/v3/openOrderList": self.open_order_lists,
            "/api/v3/allOrderList": self.all_order_lists,
        }.items():
            router.add_get(path, handler)
        router.add_post("/api/v3/order", self.new_order)
        router.add_get("/api/v3/order", self.get_order)
        router.add_delete("/api/v3/order", self.cancel_order)
        router.add_post("/api/v3/orderList/oco", self.new_oco)
        router.add_post("/api/v3/order/oco", self.new_legacy_oco)
        router.add_delete("/api/v3/orderList", self.cancel_order_list)

    def account_of(self, request: web.Request) -> str | None:
        """Return the ``X-MBX-APIKEY`` header."""
        return request.headers.get("X-MBX-APIKEY")

    def admit(self, request: web.Request, endpoint: str, ip: str) -> dict[str, str]:
        """Charge the request's weight per IP (and the order count per account)."""
        weight = self._weight(endpoint, request[PARAMS])
        orders = ORDER_COUNTS.get(endpoint, 0)
        return self.limits.admit(ip, weight, self.account_of(request), orders > 0, orders)

    def usage_headers(self, ip: str, account: str | None) -> dict[str, str]:
        """Return ``X-MBX-USED-WEIGHT-1M`` and the order counts."""
        return self.limits.headers(ip, account)

    def fault(self, fault: SandboxFault, ip: str) -> ApiError:
        """Return Binance's answer to a server fault."""
        if fault.kind == "http_500":
            return ApiError(500, -1000, "An unknown error occurred while processing the request.")
        if fault.kind == "http_503":
            return ApiError(
                503, -1001, "Internal error; unable to process your request. Please try again."
            )
        if fault.kind == "http_429":
            return self.limits.throttle(ip, fault.seconds)
        return ApiError(
            400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."
        )

    def malformed(self) -> web.Response:
        """Return a truncated ticker body."""
        return web.Response(
            text='{"symbol": "BTCUSDT", "price": "6', content_type="application/json"
        )

    def client_stats(self) -> dict[str, dict[str, Any]]:
        """Return per-IP weight, 429s, 418s and bans."""
        return {
            ip: {
                "requests": s.requests,
                "weight_total": s.weight_total,
                "weight_current_window": self.limits.headers(ip, None)["X-MBX-USED-WEIGHT-1M"],
                "sent_429": s.sent_429,
                "sent_418": s.sent_418,
                "bans": s.bans,
                "requests_inside_retry_after": s.inside_retry_after,
                "max_concurrent_requests": self.sandbox.max_in_flight.get(ip, 0),
                "weight_by_window": {
                    str(int(w * self.limits.weight_window)): used
                    for w, used in sorted(s.weight_history.items())
                },
            }
            for ip, s in self.limits.clients.items()
        }

    def violations(self) -> int:
        """Return the 429s and 418s answered."""
        return sum(s.sent_429 + s.sent_418 for s in self.limits.clients.values())

    def reset_limits(self) -> None:
        """Forget counts, waits and bans."""
        self.limits.reset()

    def _weight(self, endpoint: str, params: dict[str, str]) -> float:
        if endpoint in ORDER_LIST_WEIGHTS:
            return ORDER_LIST_WEIGHTS[endpoint]
        try:
            return scope_weights(BINANCE, endpoint, params)["REQUEST_WEIGHT"]
        except KeyError:
            raise ApiError(404, -1000, f"Unknown endpoint {endpoint}.") from None
        except ValueError:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'limit'.") from None

    def _path(self, params: dict[str, str]) -> PricePath:
        symbol = params.get("symbol")
        if not symbol:
            raise ApiError(
                400,
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        return self.sandbox.exchange.path(symbol)

    def _signed(self, request: web.Request) -> str:
        return check_signed(
            request.headers.get("X-MBX-APIKEY"),
            self.sandbox.secrets,
            request[TOTAL],
            request[PARAMS],
            int(time.time() * 1000),
        )

    # -- public market data ------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        """GET /api/v3/ping."""
        return json_response({})

    async def server_time(self, request: web.Request) -> web.Response:
        """GET /api/v3/time (wall-clock time: signatures are checked against it)."""
        return json_response({"serverTime": int(time.time() * 1000)})

    async def exchange_info(self, request: web.Request) -> web.Response:
        """GET /api/v3/exchangeInfo."""
        return json_response(
            views.exchange_info(
                self.sandbox.paths, self.sandbox.config.limits, int(time.time() * 1000)
            )
        )

    async def ticker_price(self, request: web.Request) -> web.Response:
        """GET /api/v3/ticker/price."""
        now, paths = self.sandbox.clock.now(), self.sandbox.paths
        names = views.requested_symbols(request[PARAMS], paths)
        rows = [
            {"symbol": n, "price": f"{paths[n].round_price(paths[n].price_at(now)):.8f}"}
            for n in names or paths
        ]
        return json_response(rows[0] if request[PARAMS].get("symbol") else rows)

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        """GET /api/v3/ticker/24hr."""
        now = self.sandbox.clock.now()
        names = views.requested_symbols(request[PARAMS], self.sandbox.paths)
        rows = [
            views.ticker_24hr(n, self.sandbox.paths[n], now) for n in names or self.sandbox.paths
        ]
        return json_response(rows[0] if request[PARAMS].get("symbol") else rows)

    async def book_ticker(self, request: web.Request) -> web.Response:
        """GET /api/v3/ticker/bookTicker."""
        now = self.sandbox.clock.now()
        names = views.requested_symbols(request[PARAMS], self.sandbox.paths)
        rows = [
            views.book_ticker(n, self.sandbox.paths[n], now) for n in names or self.sandbox.paths
        ]
        return json_response(rows[0] if request[PARAMS].get("symbol") else rows)

    async def depth(self, request: web.Request) -> web.Response:
        """GET /api/v3/depth."""
        return json_response(
            views.depth(self._path(request[PARAMS]), request[PARAMS], self.sandbox.clock.now())
        )

    async def klines(self, request: web.Request) -> web.Response:
        """GET /api/v3/klines."""
        return json_response(
            views.klines(self._path(request[PARAMS]), request[PARAMS], self.sandbox.clock.now())
        )

    async def trades(self, request: web.Request) -> web.Response:
        """GET /api/v3/trades."""
        return json_response(
            views.trades(self._path(request[PARAMS]), request[PARAMS], self.sandbox.clock.now())
        )

    async def agg_trades(self, request: web.Request) -> web.Response:
        """GET /api/v3/aggTrades."""
        now = self.sandbox.clock.now()
        return json_response(views.agg_trades(self._path(request[PARAMS]), request[PARAMS], now))

    # -- signed: account and orders ------------------------------------------------------------

    async def account(self, request: web.Request) -> web.Response:
        """GET /api/v3/account."""
        key = self._signed(request)
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        balances = [
            {"asset": a, "free": f"{f:.8f}", "locked": f"{lk:.8f}"}
            for a, (f, lk) in self.sandbox.exchange.balances(key).items()
        ]
        fee = self.sandbox.config.fee_rate
        return json_response(
            {
                "makerCommission": int(fee * 10000),
                "takerCommission": int(fee * 10000),
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {
                    "maker": f"{fee:.8f}",
                    "taker": f"{fee:.8f}",
                    "buyer": "0.00000000",
                    "seller": "0.00000000",
                },
                "canTrade": True,
                "canWithdraw": False,
                "canDeposit": False,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": int(time.time() * 1000),
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
                "uid": 1,
            }
        )

    async def new_order(self, request: web.Request) -> web.Response:
        """POST /api/v3/order (FULL response unless newOrderRespType says ACK/RESULT)."""
        key = self._signed(request)
        params = request[PARAMS]
        order = self.sandbox.exchange.place(key, params, self.sandbox.clock.now())
        hidden = ("icebergQty",) if order.type in STOP_KINDS else ("stopPrice", "icebergQty")
        body = {
            k: v
            for k, v in order.report().items()
            if k
            not in (
                *hidden,
                "time",
                "updateTime",
                "isWorking",
                "origQuoteOrderQty",
            )
        }
        body["transactTime"] = order.time_ms
        kind = params.get("newOrderRespType", "FULL")
        if kind == "ACK":
            body = {
                k: body[k]
                for k in ("symbol", "orderId", "orderListId", "clientOrderId", "transactTime")
            }
        elif kind == "FULL":
            body["fills"] = order.fills
        return json_response(body)

    async def get_order(self, request: web.Request) -> web.Response:
        """GET /api/v3/order by orderId or origClientOrderId."""
        key = self._signed(request)
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        return json_response(self.sandbox.exchange.find(key, request[PARAMS]).report())

    async def cancel_order(self, request: web.Request) -> web.Response:
        """DELETE /api/v3/order."""
        key = self._signed(request)
        order = self.sandbox.exchange.cancel(key, request[PARAMS], self.sandbox.clock.now())
        body = order.report()
        body["origClientOrderId"] = order.client_order_id
        body["transactTime"] = order.update_ms
        return json_response(body)

    async def open_orders(self, request: web.Request) -> web.Response:
        """GET /api/v3/openOrders (all symbols without ``symbol``)."""
        key = self._signed(request)
        symbol = request[PARAMS].get("symbol")
        if symbol:
            self.sandbox.exchange.path(symbol)
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        return json_response(
            [
                o.report()
                for o in self.sandbox.exchange.orders.values()
                if o.account == key and o.is_open and (not symbol or o.symbol == symbol)
            ]
        )

    async def all_orders(self, request: web.Request) -> web.Response:
        """GET /api/v3/allOrders for one symbol."""
        key = self._signed(request)
        symbol = self._path(request[PARAMS]) and request[PARAMS]["symbol"]
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        return json_response(
            [
                o.report()
                for o in self.sandbox.exchange.orders.values()
                if o.account == key and o.symbol == symbol
            ]
        )

    async def my_trades(self, request: web.Request) -> web.Response:
        """GET /api/v3/myTrades for one symbol."""
        key = self._signed(request)
        symbol = self._path(request[PARAMS]) and request[PARAMS]["symbol"]
        return json_response(
            [
                {k: v for k, v in t.items() if k != "account"}
                for t in self.sandbox.exchange.trades
                if t["account"] == key and t["symbol"] == symbol
            ]
        )

    # -- signed: order lists (OCO) -------------------------------------------------------------

    async def new_oco(self, request: web.Request) -> web.Response:
        """POST /api/v3/orderList/oco (``aboveType``/``belowType`` legs)."""
        return self._place_list(request, legs_of(request[PARAMS]))

    async def new_legacy_oco(self, request: web.Request) -> web.Response:
        """POST /api/v3/order/oco (``price`` LIMIT_MAKER leg, ``stopPrice`` stop leg)."""
        return self._place_list(request, legacy_legs_of(request[PARAMS]))

    def _place_list(self, request: web.Request, legs: list[dict[str, str]]) -> web.Response:
        key = self._signed(request)
        self._path(request[PARAMS])
        listed = place_list(
            self.sandbox.exchange, key, request[PARAMS], legs, self.sandbox.clock.now()
        )
        return json_response(report(self.sandbox.exchange, listed, with_legs=True))

    async def get_order_list(self, request: web.Request) -> web.Response:
        """GET /api/v3/orderList by orderListId or origClientOrderId (the list's client id)."""
        key = self._signed(request)
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        listed = find_list(self.sandbox.exchange, key, request[PARAMS], "origClientOrderId")
        return json_response(report(self.sandbox.exchange, listed))

    async def open_order_lists(self, request: web.Request) -> web.Response:
        """GET /api/v3/openOrderList: the account's lists that still have an open leg."""
        key = self._signed(request)
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        return json_response(
            [report(self.sandbox.exchange, o) for o in self._lists(key) if self._executing(o)]
        )

    async def all_order_lists(self, request: web.Request) -> web.Response:
        """GET /api/v3/allOrderList: every list of the account."""
        key = self._signed(request)
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        return json_response([report(self.sandbox.exchange, o) for o in self._lists(key)])

    async def cancel_order_list(self, request: web.Request) -> web.Response:
        """DELETE /api/v3/orderList by orderListId or listClientOrderId."""
        key = self._signed(request)
        self._path(request[PARAMS])
        now = self.sandbox.clock.now()
        exchange = self.sandbox.exchange
        exchange.settle(now)
        try:
            listed = find_list(exchange, key, request[PARAMS], "listClientOrderId")
        except ApiError as exc:
            if exc.code == -2013:
                raise ApiError(400, -2011, "Unknown order list sent.") from None
            raise
        if listed.symbol != request[PARAMS]["symbol"] or not self._executing(listed):
            raise ApiError(400, -2011, "Unknown order list sent.")
        exchange.cancel_legs(exchange.orders[listed.order_ids[0]], now)
        exchange.save()
        return json_response(report(exchange, listed, with_legs=True))

    def _lists(self, key: str) -> list[OrderList]:
        return [o for o in self.sandbox.exchange.lists.values() if o.account == key]

    def _executing(self, listed: OrderList) -> bool:
        return is_executing(self.sandbox.exchange, listed)
