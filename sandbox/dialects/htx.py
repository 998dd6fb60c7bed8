"""HTX's (Huobi's) spot REST dialect: ``api.huobi.pro`` as unmodified ccxt ``htx`` uses it.

Sources: ccxt's ``htx.py`` (4.5.x: the spot paths and params of ``fetch_markets``,
``fetch_ticker(s)``, ``fetch_order_book``, ``fetch_ohlcv``, ``fetch_balance``,
``create_order``, ``fetch_order``, ``cancel_order``, ``fetch_open_orders``,
``fetch_my_trades``; ``sign()``; ``handle_errors`` and its ``exceptions`` table) and HTX's
spot API docs (https://huobiapi.github.io/docs/spot/v1/en/,
https://www.htx.com/en-us/opend/newApiPages/): v1 answers ``{"status": "ok", "data": ...}``,
errors ``{"status": "error", "err-code": ..., "err-msg": ..., "data": null}`` (HTTP 200 for
business errors), v2 answers ``{"code": 200, "data": ...}``.

Signing (signature version 2): the query carries ``AccessKeyId``, ``SignatureMethod=HmacSHA256``,
``SignatureVersion=2``, ``Timestamp`` (UTC ``YYYY-MM-DDThh:mm:ss``, within 5 minutes) and
``Signature``, the base64 HMAC-SHA256 of ``METHOD\\nhost\\npath\\nsorted-encoded-query``. HTX
checks it with the host the client addressed, which for a real client is ``api.huobi.pro``.
ccxt signs with ``urls['hostnames']['spot']`` (``api.huobi.pro``) even when its URLs point at
this sandbox, so the sandbox accepts a signature over either ``api.huobi.pro`` (what ccxt
signs) or the ``Host`` header the request arrived with (a client signing the host it calls);
a wrong secret fails both. POST bodies are JSON and are not signed (as on HTX).

Limits: ``htx_limits.py``. Order and trade state comes from the shared matching engine,
translated to HTX's fields (``buy-limit``, ``submitted``, ``field-amount``, ...).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import zlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from aiohttp import web

from core.config import SandboxFault
from sandbox.dialects.base import PARAMS, TOTAL, Dialect, json_response
from sandbox.dialects.htx_limits import HtxLimits
from sandbox.errors import ApiError
from sandbox.market import PricePath
from sandbox.matching import Order

if TYPE_CHECKING:
    from sandbox.server import Sandbox

#: The host HTX verifies signatures with (``urls['hostnames']['spot']`` in ccxt).
SIGNED_HOST = "api.huobi.pro"
TIMESTAMP_WINDOW = 300.0

#: Route (aiohttp canonical path) -> the limit group it counts in (``htx_limits.KNOBS``).
GROUPS = {
    "/v1/account/accounts": "accounts",
    "/v1/account/accounts/{account_id}/balance": "balance",
    "/v1/order/orders/place": "place",
    "/v1/order/orders/{order_id}/submitcancel": "cancel",
    "/v1/order/orders/submitCancelClientOrder": "cancel",
    "/v1/order/openOrders": "open_orders",
    "/v1/order/orders/getClientOrder": "order_query",
    "/v1/order/orders/{order_id}": "order_query",
    "/v1/order/matchresults": "matchresults",
    "/v1/order/orders/{order_id}/matchresults": "matchresults",
}

PERIODS = {
    "1min": 60,
    "5min": 300,
    "15min": 900,
    "30min": 1800,
    "60min": 3600,
    "4hour": 14400,
    "1day": 86400,
    "1week": 604800,
    "1mon": 2592000,
}

_STATES = {"NEW": "submitted", "PARTIALLY_FILLED": "partial-filled", "FILLED": "filled"}


def ok(data: Any, **extra: Any) -> web.Response:
    """Return a v1 success answer (market answers carry ``tick`` instead of ``data``)."""
    body = {"status": "ok", **extra}
    if data is not None or not extra:
        body["data"] = data
    return json_response(body)


def _num(x: float) -> str:
    return f"{x:.8f}".rstrip("0").rstrip(".") if x else "0"


def _digits(step: Any) -> int:
    exponent = step.normalize().as_tuple().exponent
    return max(0, -int(exponent))


#: (engine code or None, text in its message or "") -> HTX's err-code and err-msg
_ENGINE_ERRORS: tuple[tuple[int | None, str, str, str], ...] = (
    (-1121, "", "invalid-parameter", "invalid symbol"),
    (
        -2010,
        "insufficient",
        "account-frozen-balance-insufficient-error",
        "trade account balance is not enough, left: `0`",
    ),
    (-2010, "", "order-clientorderid-duplicated", "client order id is duplicated"),
    (-2013, "", "base-record-invalid", "record invalid"),
    (-2011, "", "order-orderstate-error", "the order state is error, order id: {order}"),
    (None, "NOTIONAL", "order-value-min-error", "Order total cannot be lower than: `5`"),
    (None, "PRICE_FILTER", "order-orderprice-precision-error", "order price precision error"),
    (None, "LOT_SIZE", "invalid-amount", "Paramemter `amount` is invalid."),
    (None, "quantity", "invalid-amount", "Paramemter `amount` is invalid."),
)


def _translate(exc: ApiError, order: str = "") -> ApiError:
    """Turn the matching engine's (Binance-coded) error into HTX's err-code and message."""
    for code, text, err_code, err_msg in _ENGINE_ERRORS:
        if (code is None or exc.code == code) and text in exc.msg:
            return ApiError(200, err_code, err_msg.format(order=order))
    return ApiError(200, "invalid-parameter", exc.msg)


class Htx(Dialect):
    """HTX spot: see the module docstring."""

    name = "htx"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        self.limits = HtxLimits(sandbox.config.limits)
        #: the quote amount of each market buy (HTX reports it as the order's ``amount``)
        self.quote_amounts: dict[int, str] = {}
        self._ticks: dict[tuple[str, int], dict[str, Any]] = {}

    # -- the dialect contract ------------------------------------------------------------------

    def routes(self, router: web.UrlDispatcher) -> None:
        """Add HTX's spot endpoints (fixed paths before the ``{order_id}`` ones)."""
        for path, handler in {
            "/v1/common/symbols": self.symbols,
            "/v1/common/timestamp": self.timestamp,
            "/v2/reference/currencies": self.currencies,
            "/market/detail/merged": self.merged,
            "/market/tickers": self.tickers,
            "/market/depth": self.depth,
            "/market/history/kline": self.klines,
            "/market/history/candles": self.klines,
            "/market/history/trade": self.history_trades,
            "/v1/account/accounts": self.accounts,
            "/v1/account/accounts/{account_id}/balance": self.balance,
            "/v1/order/openOrders": self.open_orders,
            "/v1/order/matchresults": self.match_results,
            "/v1/order/orders/getClientOrder": self.get_client_order,
            "/v1/order/orders/{order_id}": self.get_order,
            "/v1/order/orders/{order_id}/matchresults": self.order_match_results,
        }.items():
            router.add_get(path, handler)
        router.add_post("/v1/order/orders/place", self.place)
        router.add_post("/v1/order/orders/submitCancelClientOrder", self.cancel_by_client_id)
        router.add_post("/v1/order/orders/{order_id}/submitcancel", self.cancel)

    def account_of(self, request: web.Request) -> str | None:
        """Return the ``AccessKeyId`` of the query."""
        return request.query.get("AccessKeyId")

    def _group(self, request: web.Request) -> str:
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else ""
        return GROUPS.get(canonical, "public")

    def admit(self, request: web.Request, endpoint: str, ip: str) -> dict[str, str]:
        """Count the request per IP (market data) or per UID and endpoint (private)."""
        return self.limits.admit(ip, self.account_of(request), self._group(request))

    def error(self, exc: ApiError) -> web.Response:
        """Render ``{"status": "error", "err-code", "err-msg", "data": null}``."""
        body = {"status": "error", "err-code": exc.code, "err-msg": exc.msg, "data": None}
        if exc.status == 429 or exc.code == "invalid-parameter":
            body["ts"] = int(time.time() * 1000)
        return json_response(body, exc.status)

    def fault(self, fault: SandboxFault, ip: str) -> ApiError:
        """Return HTX's answer to a server fault."""
        if fault.kind == "http_500":
            return ApiError(500, "gateway-internal-error", "Failed to load data. Try again later.")
        if fault.kind == "http_503":
            return ApiError(503, "system-maintenance", "System is in maintenance!")
        if fault.kind == "http_429":
            return self.limits.throttle(ip, fault.seconds)
        return ApiError(
            200,
            "api-signature-not-valid",
            "Signature not valid: Timestamp is out of the valid range [时间戳错误]",
        )

    def malformed(self) -> web.Response:
        """Return a truncated ticker body."""
        return web.Response(
            text='{"status": "ok", "ch": "market.btcusdt.detail.merged", "tick": {"close": 6',
            content_type="application/json",
        )

    def client_stats(self) -> dict[str, dict[str, Any]]:
        """Return per-client requests, limit answers, lockouts and per-interval usage."""
        return {
            who: {
                "requests": s.requests,
                "limited": s.limited,
                "locked_out": s.locked_out,
                "lockouts": s.lockouts,
                "requests_inside_wait": s.inside_wait,
                "max_concurrent_requests": self.sandbox.max_in_flight.get(who, 0),
                "used_by_window": dict(s.used_by_window),
                "limited_at": s.limited_at,
            }
            for who, s in self.limits.clients.items()
        }

    def violations(self) -> int:
        """Return the limit answers given."""
        return self.limits.violations()

    def reset_limits(self) -> None:
        """Forget counts, waits and lockouts."""
        self.limits.reset()

    # -- helpers -------------------------------------------------------------------------------

    def _signed(self, request: web.Request) -> str:
        query = request.query
        key = query.get("AccessKeyId")
        secret = self.sandbox.secrets.get(key or "")
        if not key or secret is None:
            raise ApiError(
                200,
                "api-signature-not-valid",
                "Signature not valid: Incorrect Access key [Access key错误]",
            )
        if query.get("SignatureMethod") != "HmacSHA256" or query.get("SignatureVersion") != "2":
            raise ApiError(
                200,
                "api-signature-not-valid",
                "Signature not valid: Verification failure [验签失败]",
            )
        try:
            sent = datetime.strptime(query.get("Timestamp", ""), "%Y-%m-%dT%H:%M:%S")
            sent_at = sent.replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise ApiError(
                200, "api-signature-not-valid", "Signature not valid: Invalid Timestamp"
            ) from None
        if abs(time.time() - sent_at) > TIMESTAMP_WINDOW:
            raise ApiError(
                200,
                "api-signature-not-valid",
                "Signature not valid: Timestamp is out of the valid range [时间戳错误]",
            )
        pairs = parse_qsl(request.query_string, keep_blank_values=True)
        signature = next((v for k, v in pairs if k == "Signature"), "")
        rest = sorted((k, v) for k, v in pairs if k != "Signature")
        # RFC 3986 encoding; ccxt's urlencode leaves "/" as is, so that form is accepted too
        queries = {
            "&".join(f"{quote(k, safe=safe)}={quote(v, safe=safe)}" for k, v in rest)
            for safe in ("", "/")
        }
        for host in {SIGNED_HOST, request.host.lower()}:
            for canonical in queries:
                payload = "\n".join((request.method, host, request.path, canonical))
                digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
                if hmac.compare_digest(base64.b64encode(digest).decode(), signature):
                    return key
        raise ApiError(
            200, "api-signature-not-valid", "Signature not valid: Verification failure [验签失败]"
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        text = request[TOTAL][len(request.query_string) :]
        if not text:
            return {}
        try:
            body = json.loads(text)
        except ValueError:
            raise ApiError(200, "invalid-parameter", "invalid json body") from None
        if not isinstance(body, dict):
            raise ApiError(200, "invalid-parameter", "invalid json body")
        return {k: v for k, v in body.items() if v is not None}

    @staticmethod
    def account_id(key: str) -> int:
        """Return the spot account id of an API key (stable, like HTX's numeric ids)."""
        return 10_000_000 + zlib.crc32(key.encode()) % 9_000_000

    def _path(self, symbol: str | None) -> tuple[str, PricePath]:
        if not symbol:
            raise ApiError(200, "invalid-parameter", "invalid symbol")
        name = symbol.upper()
        path = self.sandbox.paths.get(name)
        if path is None:
            raise ApiError(200, "invalid-parameter", "invalid symbol")
        return name, path

    def _assets(self, name: str) -> tuple[str, str]:
        base, quote_asset = self.sandbox.paths[name].symbol.split("/")
        return base.lower(), quote_asset.lower()

    def _order_type(self, order: Order) -> str:
        side = order.side.lower()
        if order.type == "MARKET":
            return f"{side}-market"
        return {"IOC": f"{side}-ioc", "FOK": f"{side}-limit-fok"}.get(
            order.time_in_force, f"{side}-limit"
        )

    def _state(self, order: Order) -> str:
        if order.status in _STATES:
            return _STATES[order.status]
        return "partial-canceled" if order.executed_qty > 0 else "canceled"

    def _report(self, order: Order, open_list: bool = False) -> dict[str, Any]:
        fees = sum(float(f["commission"]) for f in order.fills)
        amount = self.quote_amounts.get(order.order_id, _num(order.orig_qty))
        finished = 0 if order.is_open else order.update_ms
        prefix = "filled" if open_list else "field"
        report: dict[str, Any] = {
            "id": order.order_id,
            "symbol": order.symbol.lower(),
            "account-id": self.account_id(order.account),
            "client-order-id": order.client_order_id,
            "amount": amount,
            "price": _num(order.price),
            "created-at": order.time_ms,
            "type": self._order_type(order),
            f"{prefix}-amount": _num(order.executed_qty),
            f"{prefix}-cash-amount": _num(order.quote_qty),
            f"{prefix}-fees": _num(fees),
            "source": "spot-api",
            "state": self._state(order),
        }
        if not open_list:
            report["finished-at"] = finished
            report["canceled-at"] = order.update_ms if order.status == "CANCELED" else 0
        return report

    def _trade(self, trade: dict[str, Any]) -> dict[str, Any]:
        order = self.sandbox.exchange.orders[trade["orderId"]]
        return {
            "symbol": trade["symbol"].lower(),
            "fee-currency": trade["commissionAsset"].lower(),
            "source": "spot-api",
            "price": trade["price"],
            "created-at": trade["time"],
            "role": "maker" if trade["isMaker"] else "taker",
            "order-id": trade["orderId"],
            "match-id": trade["id"],
            "trade-id": trade["id"],
            "filled-amount": trade["qty"],
            "filled-fees": trade["commission"],
            "fee-deduct-state": "done",
            "id": trade["id"],
            "type": self._order_type(order),
        }

    def _own_order(self, key: str, order_id: str) -> Order:
        try:
            order = self.sandbox.exchange.orders.get(int(order_id))
        except ValueError:
            raise ApiError(200, "validation-format-error", "Format Error: order-id.") from None
        if order is None or order.account != key:
            raise ApiError(200, "base-record-invalid", "record invalid")
        return order

    def _by_client_id(self, key: str, cid: str | None) -> Order:
        if not cid:
            raise ApiError(
                200, "validation-constraints-required", "Field is missing: client-order-id."
            )
        matches = [
            o
            for o in self.sandbox.exchange.orders.values()
            if o.account == key and o.client_order_id == cid
        ]
        if not matches:
            raise ApiError(200, "base-record-invalid", "record invalid")
        return max(matches, key=lambda o: o.order_id)  # the latest order with this id

    # -- public market data --------------------------------------------------------------------

    async def timestamp(self, request: web.Request) -> web.Response:
        """GET /v1/common/timestamp."""
        return ok(int(time.time() * 1000))

    async def symbols(self, request: web.Request) -> web.Response:
        """GET /v1/common/symbols."""
        rows = []
        for name, path in self.sandbox.paths.items():
            base, quote_asset = self._assets(name)
            rows.append(
                {
                    "base-currency": base,
                    "quote-currency": quote_asset,
                    "price-precision": _digits(path.tick),
                    "amount-precision": _digits(path.step),
                    "symbol-partition": "main",
                    "symbol": name.lower(),
                    "state": "online",
                    "value-precision": 8,
                    "min-order-amt": float(path.step),
                    "max-order-amt": 9000,
                    "min-order-value": 5,
                    "limit-order-min-order-amt": float(path.step),
                    "limit-order-max-order-amt": 9000,
                    "sell-market-min-order-amt": float(path.step),
                    "sell-market-max-order-amt": 9000,
                    "buy-market-max-order-value": 1000000,
                    "api-trading": "enabled",
                }
            )
        return ok(rows)

    async def currencies(self, request: web.Request) -> web.Response:
        """GET /v2/reference/currencies (ccxt's load_markets reads it)."""
        assets = sorted({a for name in self.sandbox.paths for a in self._assets(name)})
        rows = [
            {
                "currency": a,
                "assetType": 1,
                "chains": [],
                "instStatus": "normal",
            }
            for a in assets
        ]
        return json_response({"code": 200, "data": rows})

    def _tick(self, name: str, path: PricePath, now: float) -> dict[str, Any]:
        """Return the 24-hour ticker of a symbol (HTX refreshes it about once a second)."""
        key = (name, int(now))
        if key not in self._ticks:
            if len(self._ticks) > 1000:
                self._ticks.clear()
            self._ticks[key] = self._compute_tick(path, now)
        return dict(self._ticks[key])

    def _compute_tick(self, path: PricePath, now: float) -> dict[str, Any]:
        candles = path.candles(60.0, now - 86400, now, now)
        bids, asks = path.book(now, 1)
        return {
            "id": int(now),
            "version": int(now * 1000),
            "open": path.round_price(candles[0].open),
            "close": path.round_price(path.price_at(now)),
            "high": path.round_price(max(c.high for c in candles)),
            "low": path.round_price(min(c.low for c in candles)),
            "amount": round(sum(c.volume for c in candles), 8),
            "vol": round(sum(c.volume * c.close for c in candles), 8),
            "count": len(candles) * 85,
            "bid": [bids[0][0], bids[0][1]],
            "ask": [asks[0][0], asks[0][1]],
        }

    async def merged(self, request: web.Request) -> web.Response:
        """GET /market/detail/merged?symbol=btcusdt."""
        name, path = self._path(request.query.get("symbol"))
        now = self.sandbox.clock.now()
        return ok(
            None,
            ch=f"market.{name.lower()}.detail.merged",
            ts=int(time.time() * 1000),
            tick=self._tick(name, path, now),
        )

    async def tickers(self, request: web.Request) -> web.Response:
        """GET /market/tickers (every symbol)."""
        now = self.sandbox.clock.now()
        rows = []
        for name, path in self.sandbox.paths.items():
            tick = self._tick(name, path, now)
            rows.append(
                {
                    "symbol": name.lower(),
                    **{k: tick[k] for k in ("open", "high", "low", "close", "amount", "vol")},
                    "count": tick["count"],
                    "bid": tick["bid"][0],
                    "bidSize": tick["bid"][1],
                    "ask": tick["ask"][0],
                    "askSize": tick["ask"][1],
                }
            )
        return json_response({"status": "ok", "ts": int(time.time() * 1000), "data": rows})

    async def depth(self, request: web.Request) -> web.Response:
        """GET /market/depth?symbol=&type=step0[&depth=5|10|20]."""
        params = request[PARAMS]
        name, path = self._path(params.get("symbol"))
        kind = params.get("type", "")
        if not kind.startswith("step"):
            raise ApiError(200, "invalid-parameter", "invalid type")
        depth = int(params.get("depth", "150")) if params.get("depth", "150").isdigit() else 0
        if depth not in (5, 10, 20, 150):
            raise ApiError(200, "invalid-parameter", "invalid depth")
        now = self.sandbox.clock.now()
        bids, asks = path.book(now, depth)
        ms = int(time.time() * 1000)
        return ok(
            None,
            ch=f"market.{name.lower()}.depth.{kind}",
            ts=ms,
            tick={
                "ts": ms,
                "version": int(now * 1000),
                "bids": [[p, q] for p, q in bids],
                "asks": [[p, q] for p, q in asks],
            },
        )

    async def klines(self, request: web.Request) -> web.Response:
        """GET /market/history/kline and /market/history/candles (newest first)."""
        params = request[PARAMS]
        name, path = self._path(params.get("symbol"))
        interval = PERIODS.get(params.get("period", ""))
        if interval is None:
            raise ApiError(200, "invalid-parameter", "invalid period")
        try:
            size = min(max(int(params.get("size", "150")), 1), 2000)
        except ValueError:
            raise ApiError(200, "invalid-parameter", "invalid size") from None
        now = self.sandbox.clock.now()
        end = float(params["to"]) if params.get("to") else now
        start = float(params["from"]) if params.get("from") else end - interval * size
        candles = path.candles(float(interval), max(start, end - interval * size), end, now)
        rows = [
            {
                "id": int(c.open_time),
                "open": path.round_price(c.open),
                "close": path.round_price(c.close),
                "low": path.round_price(c.low),
                "high": path.round_price(c.high),
                "amount": round(c.volume, 8),
                "vol": round(c.volume * c.close, 8),
                "count": 60,
            }
            for c in reversed(candles[-size:])
        ]
        return ok(rows, ch=f"market.{name.lower()}.kline.{params['period']}", ts=int(now * 1000))

    async def history_trades(self, request: web.Request) -> web.Response:
        """GET /market/history/trade."""
        params = request[PARAMS]
        name, path = self._path(params.get("symbol"))
        size = min(int(params.get("size", "1")) if params.get("size", "1").isdigit() else 1, 2000)
        now = self.sandbox.clock.now()
        rows = [
            {
                "id": n,
                "ts": int(t * 1000),
                "data": [
                    {
                        "id": n,
                        "trade-id": n,
                        "ts": int(t * 1000),
                        "price": p,
                        "amount": q,
                        "direction": "sell" if maker else "buy",
                    }
                ],
            }
            for n, t, p, q, maker in reversed(path.trades(now, size))
        ]
        return ok(rows, ch=f"market.{name.lower()}.trade.detail", ts=int(now * 1000))

    # -- signed: account -----------------------------------------------------------------------

    async def accounts(self, request: web.Request) -> web.Response:
        """GET /v1/account/accounts: one spot account."""
        key = self._signed(request)
        return ok([{"id": self.account_id(key), "type": "spot", "subtype": "", "state": "working"}])

    async def balance(self, request: web.Request) -> web.Response:
        """GET /v1/account/accounts/{account-id}/balance."""
        key = self._signed(request)
        account = request.match_info["account_id"]
        if account != str(self.account_id(key)):
            raise ApiError(
                200, "account-get-balance-account-inexistent-error", "invalid account_id"
            )
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        rows = []
        for asset, (free, locked) in self.sandbox.exchange.balances(key).items():
            for kind, amount in (("trade", free), ("frozen", locked)):
                rows.append(
                    {
                        "currency": asset.lower(),
                        "type": kind,
                        "balance": f"{amount:.8f}",
                        "seq-num": "0",
                    }
                )
        return ok({"id": int(account), "type": "spot", "state": "working", "list": rows})

    # -- signed: orders ------------------------------------------------------------------------

    async def place(self, request: web.Request) -> web.Response:
        """POST /v1/order/orders/place (JSON body): answers the new order id."""
        key = self._signed(request)
        body = await self._body(request)
        if str(body.get("account-id", "")) != str(self.account_id(key)):
            raise ApiError(200, "account-frozen-account-inexistent-error", "account invalid")
        name, _ = self._path(body.get("symbol"))
        kind = str(body.get("type", ""))
        side, _, rest = kind.partition("-")
        engine = {"MARKET": "MARKET", "LIMIT": "LIMIT", "IOC": "LIMIT", "LIMIT-FOK": "LIMIT"}
        if side not in ("buy", "sell") or rest.upper() not in engine:
            raise ApiError(200, "invalid-parameter", f"invalid order type: {kind}")
        cid = str(body.get("client-order-id") or "")
        if len(cid) > 64:
            raise ApiError(200, "invalid-parameter", "client-order-id is too long")
        params = {
            "symbol": name,
            "side": side.upper(),
            "type": engine[rest.upper()],
            "newClientOrderId": cid,
        }
        amount = str(body.get("amount", ""))
        if rest == "market" and side == "buy":
            params["quoteOrderQty"] = amount
        else:
            params["quantity"] = amount
        if params["type"] == "LIMIT":
            params["price"] = str(body.get("price", ""))
            params["timeInForce"] = {"ioc": "IOC", "limit-fok": "FOK"}.get(rest, "GTC")
        try:
            order = self.sandbox.exchange.place(key, params, self.sandbox.clock.now())
        except ApiError as exc:
            raise _translate(exc) from None
        if rest == "market" and side == "buy":
            self.quote_amounts[order.order_id] = amount
        return ok(str(order.order_id))

    async def get_order(self, request: web.Request) -> web.Response:
        """GET /v1/order/orders/{order-id}."""
        key = self._signed(request)
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        return ok(self._report(self._own_order(key, request.match_info["order_id"])))

    async def get_client_order(self, request: web.Request) -> web.Response:
        """GET /v1/order/orders/getClientOrder?clientOrderId=."""
        key = self._signed(request)
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        return ok(self._report(self._by_client_id(key, request.query.get("clientOrderId"))))

    def _cancel(self, key: str, order: Order) -> web.Response:
        params = {"symbol": order.symbol, "orderId": str(order.order_id)}
        try:
            self.sandbox.exchange.cancel(key, params, self.sandbox.clock.now())
        except ApiError as exc:
            raise _translate(exc, str(order.order_id)) from None
        return ok(str(order.order_id))

    async def cancel(self, request: web.Request) -> web.Response:
        """POST /v1/order/orders/{order-id}/submitcancel."""
        key = self._signed(request)
        await self._body(request)
        return self._cancel(key, self._own_order(key, request.match_info["order_id"]))

    async def cancel_by_client_id(self, request: web.Request) -> web.Response:
        """POST /v1/order/orders/submitCancelClientOrder (JSON ``client-order-id``)."""
        key = self._signed(request)
        body = await self._body(request)
        order = self._by_client_id(key, str(body.get("client-order-id") or ""))
        response = self._cancel(key, order)
        return ok(0) if response.status == 200 else response

    async def open_orders(self, request: web.Request) -> web.Response:
        """GET /v1/order/openOrders?account-id=[&symbol=][&size=] (newest first)."""
        key = self._signed(request)
        params = request[PARAMS]
        if params.get("account-id") and params["account-id"] != str(self.account_id(key)):
            raise ApiError(200, "account-frozen-account-inexistent-error", "account invalid")
        symbol = self._path(params["symbol"])[0] if params.get("symbol") else None
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        rows = [
            self._report(o, open_list=True)
            for o in sorted(
                self.sandbox.exchange.orders.values(), key=lambda o: o.order_id, reverse=True
            )
            if o.account == key and o.is_open and (symbol is None or o.symbol == symbol)
        ]
        size = int(params["size"]) if params.get("size", "").isdigit() else 100
        return ok(rows[:size])

    async def match_results(self, request: web.Request) -> web.Response:
        """GET /v1/order/matchresults[?symbol=][&size=] (newest first)."""
        key = self._signed(request)
        params = request[PARAMS]
        symbol = self._path(params["symbol"])[0] if params.get("symbol") else None
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        start = int(params["start-time"]) if params.get("start-time", "").isdigit() else 0
        rows = [
            self._trade(t)
            for t in reversed(self.sandbox.exchange.trades)
            if t["account"] == key
            and (symbol is None or t["symbol"] == symbol)
            and t["time"] >= start
        ]
        size = int(params["size"]) if params.get("size", "").isdigit() else 100
        return ok(rows[: min(size, 500)])

    async def order_match_results(self, request: web.Request) -> web.Response:
        """GET /v1/order/orders/{order-id}/matchresults."""
        key = self._signed(request)
        order = self._own_order(key, request.match_info["order_id"])
        return ok(
            [
                self._trade(t)
                for t in self.sandbox.exchange.trades
                if t["account"] == key and t["orderId"] == order.order_id
            ]
        )
