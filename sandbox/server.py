"""The sandbox HTTP server (aiohttp): Binance's spot REST dialect, limits, faults, paper fills.

Unmodified ccxt talks to it when the exchange's URLs point here. Admin endpoints under
``/sandbox/`` spend no weight: ``GET /sandbox/stats``, ``PUT``/``DELETE /sandbox/faults``,
``POST /sandbox/reset-limits``, ``GET /sandbox/news.rss``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from core.config import SandboxConfig, SandboxFault
from ratelimit.tables import BINANCE, scope_weights
from sandbox import views
from sandbox.auth import check_signed
from sandbox.errors import ApiError
from sandbox.faults import FaultInjector
from sandbox.limits import LimitEnforcer
from sandbox.market import Clock, PricePath, load_replay
from sandbox.matching import PaperExchange
from sandbox.news import rss

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SIGNED = {
    "/api/v3/account",
    "/api/v3/order",
    "/api/v3/openOrders",
    "/api/v3/allOrders",
    "/api/v3/myTrades",
}
_FAULTS = TypeAdapter(list[SandboxFault])
PARAMS = web.RequestKey("params", dict[str, str])
TOTAL = web.RequestKey("total_params", str)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class Sandbox:
    """One sandbox exchange: its markets, accounts, limits and faults."""

    def __init__(self, config: SandboxConfig, name: str = "binance") -> None:
        self.config = config
        self.name = name
        self.clock = Clock(config.speed)
        replay = load_replay(config.candles_file) if config.candles_file else None
        history = int(config.history_days * 1440)
        self.paths = {
            s.replace("/", ""): PricePath(s, config.seed, self.clock.origin, history, replay)
            for s in config.symbols
        }
        self.exchange = PaperExchange(
            self.paths, config.fee_rate, dict(config.starting_balances), config.state_file
        )
        self.limits = LimitEnforcer(config.limits)
        self.faults = FaultInjector(config.faults, config.seed)
        self.secrets = {config.api_key: config.api_secret.get_secret_value()}
        self.calls: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.app = web.Application(middlewares=[self._middleware])
        self._routes()

    def _routes(self) -> None:
        r = self.app.router
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
        }.items():
            r.add_get(path, handler)
        r.add_post("/api/v3/order", self.new_order)
        r.add_get("/api/v3/order", self.get_order)
        r.add_delete("/api/v3/order", self.cancel_order)
        r.add_get("/sandbox/stats", self.stats)
        r.add_put("/sandbox/faults", self.set_faults)
        r.add_delete("/sandbox/faults", self.clear_faults)
        r.add_post("/sandbox/reset-limits", self.reset_limits)
        r.add_get("/sandbox/news.rss", self.news)

    # -- the gateway: params, weight, limits, faults, errors ------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/sandbox/"):
            return await handler(request)
        body = await request.text() if request.can_read_body else ""
        request[TOTAL] = request.query_string + body
        params = dict(request.query)
        params.update(parse_qsl(body, keep_blank_values=True))
        request[PARAMS] = params
        endpoint = f"{request.method} {request.path}"
        ip = request.remote or "unknown"
        self.in_flight[ip] += 1
        self.max_in_flight[ip] = max(self.max_in_flight[ip], self.in_flight[ip])
        try:
            return await self._gateway(request, handler, params, endpoint, ip)
        finally:
            self.in_flight[ip] -= 1

    async def _gateway(
        self, request: web.Request, handler: Handler, params: dict[str, str], endpoint: str, ip: str
    ) -> web.StreamResponse:
        account = request.headers.get("X-MBX-APIKEY")
        try:
            self.calls[endpoint] += 1
            weight = self._weight(endpoint, params)
            headers = self.limits.admit(ip, weight, account, endpoint == "POST /api/v3/order")
            fault = self.faults.pick(endpoint)
            early = await self._fault_before(fault, request)
            response = early or await handler(request)
            if fault is not None and fault.kind == "response_lost":
                await asyncio.sleep(fault.seconds)
                if request.transport is not None:
                    request.transport.close()
        except ApiError as exc:
            response = _json({"code": exc.code, "msg": exc.msg}, exc.status)
            response.headers.update(exc.headers)
            headers = self.limits.headers(ip, account)
        response.headers.update(headers)
        return response

    def _weight(self, endpoint: str, params: dict[str, str]) -> float:
        try:
            return scope_weights(BINANCE, endpoint, params)["REQUEST_WEIGHT"]
        except KeyError:
            raise ApiError(404, -1000, f"Unknown endpoint {endpoint}.") from None
        except ValueError:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'limit'.") from None

    async def _fault_before(
        self, fault: SandboxFault | None, request: web.Request
    ) -> web.Response | None:
        if fault is None or fault.kind == "response_lost":
            return None
        if fault.kind == "http_500":
            raise ApiError(500, -1000, "An unknown error occurred while processing the request.")
        if fault.kind == "http_503":
            raise ApiError(
                503, -1001, "Internal error; unable to process your request. Please try again."
            )
        if fault.kind == "http_429":
            raise self.limits.throttle(request.remote or "unknown", fault.seconds)
        if fault.kind == "clock_skew":
            raise ApiError(
                400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()  # RST, no response: the client sees a reset
            raise ConnectionResetError("sandbox fault: connection reset")
        return web.Response(
            text='{"symbol": "BTCUSDT", "price": "6', content_type="application/json"
        )

    def _path(self, params: dict[str, str]) -> PricePath:
        symbol = params.get("symbol")
        if not symbol:
            raise ApiError(
                400,
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        return self.exchange.path(symbol)

    def _signed(self, request: web.Request) -> str:
        return check_signed(
            request.headers.get("X-MBX-APIKEY"),
            self.secrets,
            request[TOTAL],
            request[PARAMS],
            int(time.time() * 1000),
        )

    # -- public market data ------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        """GET /api/v3/ping."""
        return _json({})

    async def server_time(self, request: web.Request) -> web.Response:
        """GET /api/v3/time (wall-clock time: signatures are checked against it)."""
        return _json({"serverTime": int(time.time() * 1000)})

    async def exchange_info(self, request: web.Request) -> web.Response:
        """GET /api/v3/exchangeInfo."""
        return _json(views.exchange_info(self.paths, self.config.limits, int(time.time() * 1000)))

    async def ticker_price(self, request: web.Request) -> web.Response:
        """GET /api/v3/ticker/price."""
        now = self.clock.now()
        names = views.requested_symbols(request[PARAMS], self.paths)
        rows = [
            {"symbol": n, "price": f"{self.paths[n].round_price(self.paths[n].price_at(now)):.8f}"}
            for n in names or self.paths
        ]
        return _json(rows[0] if request[PARAMS].get("symbol") else rows)

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        """GET /api/v3/ticker/24hr."""
        now = self.clock.now()
        names = views.requested_symbols(request[PARAMS], self.paths)
        rows = [views.ticker_24hr(n, self.paths[n], now) for n in names or self.paths]
        return _json(rows[0] if request[PARAMS].get("symbol") else rows)

    async def book_ticker(self, request: web.Request) -> web.Response:
        """GET /api/v3/ticker/bookTicker."""
        now = self.clock.now()
        names = views.requested_symbols(request[PARAMS], self.paths)
        rows = [views.book_ticker(n, self.paths[n], now) for n in names or self.paths]
        return _json(rows[0] if request[PARAMS].get("symbol") else rows)

    async def depth(self, request: web.Request) -> web.Response:
        """GET /api/v3/depth."""
        return _json(views.depth(self._path(request[PARAMS]), request[PARAMS], self.clock.now()))

    async def klines(self, request: web.Request) -> web.Response:
        """GET /api/v3/klines."""
        return _json(views.klines(self._path(request[PARAMS]), request[PARAMS], self.clock.now()))

    async def trades(self, request: web.Request) -> web.Response:
        """GET /api/v3/trades."""
        return _json(views.trades(self._path(request[PARAMS]), request[PARAMS], self.clock.now()))

    async def agg_trades(self, request: web.Request) -> web.Response:
        """GET /api/v3/aggTrades."""
        now = self.clock.now()
        return _json(views.agg_trades(self._path(request[PARAMS]), request[PARAMS], now))

    # -- signed: account and orders ------------------------------------------------------------

    async def account(self, request: web.Request) -> web.Response:
        """GET /api/v3/account."""
        key = self._signed(request)
        self.exchange.settle(self.clock.now())
        balances = [
            {"asset": a, "free": f"{f:.8f}", "locked": f"{lk:.8f}"}
            for a, (f, lk) in self.exchange.balances(key).items()
        ]
        fee = self.config.fee_rate
        return _json(
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
        order = self.exchange.place(key, params, self.clock.now())
        body = {
            k: v
            for k, v in order.report().items()
            if k
            not in (
                "stopPrice",
                "icebergQty",
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
        return _json(body)

    async def get_order(self, request: web.Request) -> web.Response:
        """GET /api/v3/order by orderId or origClientOrderId."""
        key = self._signed(request)
        self.exchange.settle(self.clock.now())
        return _json(self.exchange.find(key, request[PARAMS]).report())

    async def cancel_order(self, request: web.Request) -> web.Response:
        """DELETE /api/v3/order."""
        key = self._signed(request)
        order = self.exchange.cancel(key, request[PARAMS], self.clock.now())
        body = order.report()
        body["origClientOrderId"] = order.client_order_id
        body["transactTime"] = order.update_ms
        return _json(body)

    async def open_orders(self, request: web.Request) -> web.Response:
        """GET /api/v3/openOrders (all symbols without ``symbol``)."""
        key = self._signed(request)
        symbol = request[PARAMS].get("symbol")
        if symbol:
            self.exchange.path(symbol)
        self.exchange.settle(self.clock.now())
        return _json(
            [
                o.report()
                for o in self.exchange.orders.values()
                if o.account == key and o.is_open and (not symbol or o.symbol == symbol)
            ]
        )

    async def all_orders(self, request: web.Request) -> web.Response:
        """GET /api/v3/allOrders for one symbol."""
        key = self._signed(request)
        symbol = self._path(request[PARAMS]) and request[PARAMS]["symbol"]
        return _json(
            [
                o.report()
                for o in self.exchange.orders.values()
                if o.account == key and o.symbol == symbol
            ]
        )

    async def my_trades(self, request: web.Request) -> web.Response:
        """GET /api/v3/myTrades for one symbol."""
        key = self._signed(request)
        symbol = self._path(request[PARAMS]) and request[PARAMS]["symbol"]
        return _json(
            [
                {k: v for k, v in t.items() if k != "account"}
                for t in self.exchange.trades
                if t["account"] == key and t["symbol"] == symbol
            ]
        )

    # -- admin ---------------------------------------------------------------------------------

    async def stats(self, request: web.Request) -> web.Response:
        """GET /sandbox/stats: per-client weight, 429s and 418s, orders, faults injected."""
        clients = {
            ip: {
                "requests": s.requests,
                "weight_total": s.weight_total,
                "weight_current_window": self.limits.headers(ip, None)["X-MBX-USED-WEIGHT-1M"],
                "sent_429": s.sent_429,
                "sent_418": s.sent_418,
                "bans": s.bans,
                "requests_inside_retry_after": s.inside_retry_after,
                "max_concurrent_requests": self.max_in_flight.get(ip, 0),
                "weight_by_window": {
                    str(int(w * self.limits.weight_window)): used
                    for w, used in sorted(s.weight_history.items())
                },
            }
            for ip, s in self.limits.clients.items()
        }
        orders: dict[str, int] = {}
        for order in self.exchange.orders.values():
            orders[order.account] = orders.get(order.account, 0) + 1
        return _json(
            {
                "name": self.name,
                "clients": clients,
                "orders": orders,
                "faults_injected": dict(self.faults.injected),
                "requests_by_endpoint": dict(self.calls),
                "violations": sum(s.sent_429 + s.sent_418 for s in self.limits.clients.values()),
            }
        )

    async def set_faults(self, request: web.Request) -> web.Response:
        """PUT /sandbox/faults: replace the fault rules with the JSON list given."""
        try:
            rules = _FAULTS.validate_python(await request.json())
        except (ValueError, ValidationError) as exc:
            return _json({"error": f"expected a list of faults: {exc}"}, 400)
        self.faults.set(rules)
        return _json({"faults": len(rules)})

    async def clear_faults(self, request: web.Request) -> web.Response:
        """DELETE /sandbox/faults."""
        self.faults.set([])
        return _json({"faults": 0})

    async def reset_limits(self, request: web.Request) -> web.Response:
        """POST /sandbox/reset-limits: forget counts, waits and bans."""
        self.limits.reset()
        return _json({"reset": True})

    async def news(self, request: web.Request) -> web.Response:
        """GET /sandbox/news.rss: headlines tied to the price path."""
        text = rss(list(self.paths.values()), self.clock.now())
        return web.Response(text=text, content_type="application/rss+xml")
