"""The sandbox HTTP server (aiohttp): one exchange's dialect over shared markets and accounts.

Unmodified ccxt talks to it when the exchange's URLs point here. The dialect (by ccxt id,
``sandbox/dialects/``) gives the exchange's routes, wire format, signing and limit model;
shared here: the price paths, the paper accounts and matching engine, fault injection,
request counting and the admin endpoints under ``/sandbox/`` (they spend no limit):
``GET /sandbox/stats``, ``PUT``/``DELETE /sandbox/faults``, ``POST /sandbox/reset-limits``,
``GET /sandbox/news.rss``, and ``PUT /sandbox/price`` (move a symbol's price now, which fires
the stop orders it crosses, so tests can cross a stop deterministically).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from core.config import SandboxConfig, SandboxFault
from sandbox.dialects import dialect_for
from sandbox.dialects.base import PARAMS, TOTAL
from sandbox.errors import ApiError
from sandbox.faults import FaultInjector
from sandbox.market import Clock, PricePath, load_replay
from sandbox.matching import PaperExchange
from sandbox.news import rss

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_FAULTS = TypeAdapter(list[SandboxFault])
__all__ = ["PARAMS", "TOTAL", "Sandbox"]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class Sandbox:
    """One sandbox exchange: its markets, accounts, dialect, limits and faults.

    ``name`` is the exchange's key in the config; ``dialect`` its ccxt id (default: name).
    """

    def __init__(
        self, config: SandboxConfig, name: str = "binance", dialect: str | None = None
    ) -> None:
        self.config = config
        self.name = name
        self.clock = Clock(config.speed)
        replay = load_replay(config.candles_file) if config.candles_file else None
        history = int(config.history_days * 1440)
        self.paths: dict[str, PricePath] = {
            s.replace("/", ""): PricePath(s, config.seed, self.clock.origin, history, replay)
            for s in config.symbols
        }
        self.exchange = PaperExchange(
            self.paths, config.fee_rate, dict(config.starting_balances), config.state_file
        )
        self.faults = FaultInjector(config.faults, config.seed)
        self.secrets = {config.api_key: config.api_secret.get_secret_value()}
        self.calls: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.dialect = dialect_for(dialect or name)(self)
        self.app = web.Application(middlewares=[self._middleware])
        self.dialect.routes(self.app.router)
        r = self.app.router
        r.add_get("/sandbox/stats", self.stats)
        r.add_put("/sandbox/faults", self.set_faults)
        r.add_delete("/sandbox/faults", self.clear_faults)
        r.add_post("/sandbox/reset-limits", self.reset_limits)
        r.add_get("/sandbox/news.rss", self.news)
        r.add_put("/sandbox/price", self.set_price)

    # -- the gateway: params, limits, faults, errors -------------------------------------------

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
            return await self._gateway(request, handler, endpoint, ip)
        finally:
            self.in_flight[ip] -= 1

    async def _gateway(
        self, request: web.Request, handler: Handler, endpoint: str, ip: str
    ) -> web.StreamResponse:
        account = self.dialect.account_of(request)
        try:
            self.calls[endpoint] += 1
            headers = self.dialect.admit(request, endpoint, ip)
            fault = self.faults.pick(endpoint)
            early = await self._fault_before(fault, request, ip)
            response = early or await handler(request)
            if fault is not None and fault.kind == "response_lost":
                await asyncio.sleep(fault.seconds)
                if request.transport is not None:
                    request.transport.close()
        except ApiError as exc:
            response = self.dialect.error(exc)
            response.headers.update(exc.headers)
            headers = self.dialect.usage_headers(ip, account)
        response.headers.update(headers)
        return response

    async def _fault_before(
        self, fault: SandboxFault | None, request: web.Request, ip: str
    ) -> web.StreamResponse | None:
        if fault is None or fault.kind == "response_lost":
            return None
        if fault.kind in ("http_500", "http_503", "http_429", "clock_skew"):
            raise self.dialect.fault(fault, ip)
        if fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()  # RST, no response: the client sees a reset
            raise ConnectionResetError("sandbox fault: connection reset")
        return self.dialect.malformed()

    # -- admin ---------------------------------------------------------------------------------

    async def stats(self, request: web.Request) -> web.Response:
        """GET /sandbox/stats: per-client counters, orders, faults injected, violations."""
        orders: dict[str, int] = {}
        for order in self.exchange.orders.values():
            orders[order.account] = orders.get(order.account, 0) + 1
        return _json(
            {
                "name": self.name,
                "dialect": self.dialect.name,
                "clients": self.dialect.client_stats(),
                "orders": orders,
                "faults_injected": dict(self.faults.injected),
                "requests_by_endpoint": dict(self.calls),
                "violations": self.dialect.violations(),
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
        self.dialect.reset_limits()
        return _json({"reset": True})

    async def news(self, request: web.Request) -> web.Response:
        """GET /sandbox/news.rss: headlines tied to the price path."""
        text = rss(list(self.paths.values()), self.clock.now())
        return web.Response(text=text, content_type="application/rss+xml")

    async def set_price(self, request: web.Request) -> web.Response:
        """PUT /sandbox/price {symbol, price}: move the last trade price there now.

        The path jumps to ``price`` and walks on from it; stops it crosses fire and resting
        orders it reaches fill, on this call. ``symbol`` is ``BTC/USDT`` or ``BTCUSDT``.
        """
        try:
            body = await request.json()
            name, price = str(body["symbol"]).replace("/", ""), float(body["price"])
        except (ValueError, KeyError, TypeError) as exc:
            return _json({"error": f"expected {{symbol, price}}: {exc}"}, 400)
        path = self.paths.get(name)
        if path is None or not price > 0:
            return _json({"error": f"unknown symbol {body['symbol']!r} or price <= 0"}, 400)
        now = self.clock.now()
        self.exchange.settle(now)
        before = {o.order_id: o.status for o in self.exchange.orders.values() if o.is_open}
        path.set_price(now, price)
        self.exchange.settle(now + 1e-6)
        moved = [
            {"orderId": o.order_id, "clientOrderId": o.client_order_id, "status": o.status}
            for o in self.exchange.orders.values()
            if o.order_id in before
            and (o.status != before[o.order_id] or o.update_ms >= int(now * 1000))
        ]
        return _json({"symbol": name, "price": path.price_at(now), "orders": moved})
