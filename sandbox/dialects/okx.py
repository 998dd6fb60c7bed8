"""OKX's v5 REST dialect (``/api/v5``), spot only.

Sources: ccxt's ``okx.py`` (the paths and params it sends, ``sign()``, how it parses answers
and maps codes in ``exceptions``) and OKX's v5 docs (https://www.okx.com/docs-v5/en/):
"REST Authentication" (``OK-ACCESS-KEY``/``-SIGN``/``-TIMESTAMP``/``-PASSPHRASE``; the sign
is base64 HMAC-SHA256 of timestamp + method + requestPath (with its query) + body; a
timestamp more than 30 s from the server's is expired), "Rate Limits" (per endpoint per
2 s, ``okx_limits.py``) and "Error Codes" (``50011`` 429 rate limit, ``50026`` 500 system
error, ``50001`` 503 unavailable, ``5010x``/``5011x`` 401 authentication, ``51603`` order
does not exist, ``51400`` cancel failed; per-order failures are ``code: "1"`` with the
order's ``sCode``/``sMsg`` in ``data``).

Every answer is ``{"code": "0", "msg": "", "data": [...]}``; errors are
``{"code": "<code>", "msg": ..., "data": []}``. Quantities are in the base currency
(``tgtCcy=base_ccy``) except a market buy sent with ``tgtCcy=quote_ccy``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.config import SandboxFault
from sandbox.dialects import binance_views
from sandbox.dialects.base import TOTAL, Dialect, json_response
from sandbox.dialects.okx_limits import LimitEnforcer
from sandbox.errors import ApiError
from sandbox.market import PricePath
from sandbox.matching import Order

if TYPE_CHECKING:
    from sandbox.server import Sandbox

#: OKX ``bar`` values -> seconds (``utc`` variants open on UTC boundaries, as ours do).
BARS = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1H": 3600,
    "2H": 7200,
    "4H": 14400,
    "6H": 21600,
    "12H": 43200,
    "1D": 86400,
    "1W": 604800,
    "6Hutc": 21600,
    "12Hutc": 43200,
    "1Dutc": 86400,
    "1Wutc": 604800,
}
STATES = {
    "NEW": "live",
    "PARTIALLY_FILLED": "partially_filled",
    "FILLED": "filled",
    "CANCELED": "canceled",
    "EXPIRED": "canceled",
}
#: engine refusal (Binance code or message part) -> OKX's sCode and sMsg
_FAILURES = (
    ("Duplicate", "51016", "Duplicated clOrdId"),
    ("insufficient balance", "51008", "Order failed. Insufficient balance."),
    ("LOT_SIZE", "51121", "Order quantity must be a multiple of the lot size."),
    ("PRICE_FILTER", "51000", "Parameter px error"),
    ("NOTIONAL", "51020", "Your order should meet or exceed the minimum order amount."),
    ("-1121", "51001", "Instrument ID does not exist"),
)
#: How long a signed request's timestamp may be from the server's clock.
TIMESTAMP_TOLERANCE = 30.0


def _ok(data: list[Any]) -> web.Response:
    return json_response({"code": "0", "msg": "", "data": data})


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


def _num(x: float) -> str:
    text = f"{x:.8f}".rstrip("0").rstrip(".")
    return text or "0"


def inst_id(symbol: str) -> str:
    """Return the OKX instId of a sandbox symbol (``BTC/USDT`` -> ``BTC-USDT``)."""
    return symbol.replace("/", "-")


def _cid(order: Order) -> str:
    """Return an order's clOrdId ("" when it was placed without one)."""
    return "" if order.client_order_id.startswith("sandbox-") else order.client_order_id


def _param_error(name: str) -> ApiError:
    return ApiError(200, "51000", f"Parameter {name} error")


def _empty_error(name: str) -> ApiError:
    return ApiError(200, "50014", f"Parameter {name} can not be empty")


class Okx(Dialect):
    """OKX spot: see the module docstring."""

    name = "okx"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        self.limits = LimitEnforcer(sandbox.config.limits)
        self.passphrase = sandbox.config.api_password.get_secret_value()
        #: sandbox path key (``BTCUSDT``) <-> instId (``BTC-USDT``)
        self.inst = {key: inst_id(p.symbol) for key, p in sandbox.paths.items()}
        self.keys = {v: k for k, v in self.inst.items()}

    def routes(self, router: web.UrlDispatcher) -> None:
        """Add OKX's spot endpoints."""
        for path, handler in {
            "/api/v5/public/time": self.server_time,
            "/api/v5/public/instruments": self.instruments,
            "/api/v5/market/ticker": self.ticker,
            "/api/v5/market/tickers": self.tickers,
            "/api/v5/market/books": self.books,
            "/api/v5/market/books-full": self.books,
            "/api/v5/market/candles": self.candles,
            "/api/v5/market/history-candles": self.candles,
            "/api/v5/market/trades": self.trades,
            "/api/v5/account/balance": self.balance,
            "/api/v5/trade/order": self.get_order,
            "/api/v5/trade/orders-pending": self.orders_pending,
            "/api/v5/trade/fills": self.fills,
            "/api/v5/trade/fills-history": self.fills,
            "/api/v5/trade/account-rate-limit": self.account_rate_limit,
        }.items():
            router.add_get(path, handler)
        router.add_post("/api/v5/trade/order", self.place_order)
        router.add_post("/api/v5/trade/batch-orders", self.place_order)
        router.add_post("/api/v5/trade/cancel-order", self.cancel_order)

    # -- the gateway's hooks ------------------------------------------------------------------

    def account_of(self, request: web.Request) -> str | None:
        """Return the ``OK-ACCESS-KEY`` header."""
        return request.headers.get("OK-ACCESS-KEY")

    def admit(self, request: web.Request, endpoint: str, ip: str) -> dict[str, str]:
        """Charge the request to its endpoint's budget (per IP, user, or user + instrument)."""
        inst = request.query.get("instId")
        if inst is None and request.method == "POST":
            body = self._json(request, strict=False)
            first = body[0] if isinstance(body, list) and body else body
            if isinstance(first, dict):
                inst = str(first.get("instId", ""))
        self.limits.admit(endpoint, ip, self.account_of(request), inst)
        return {}

    def error(self, exc: ApiError) -> web.Response:
        """Render ``{"code": "<code>", "msg": ..., "data": []}``."""
        return json_response({"code": str(exc.code), "msg": exc.msg, "data": []}, exc.status)

    def fault(self, fault: SandboxFault, ip: str) -> ApiError:
        """Return OKX's answer to a server fault."""
        if fault.kind == "http_500":
            return ApiError(500, "50026", "System error. Try again later")
        if fault.kind == "http_503":
            return ApiError(503, "50001", "Service temporarily unavailable. Try again later")
        if fault.kind == "http_429":
            return self.limits.throttle(ip)
        return ApiError(401, "50102", "Timestamp request expired")

    def malformed(self) -> web.Response:
        """Return a truncated ticker body."""
        return web.Response(
            text='{"code":"0","msg":"","data":[{"instType":"SPOT","instId":"BTC-USDT","last":"6',
            content_type="application/json",
        )

    def client_stats(self) -> dict[str, dict[str, Any]]:
        """Return per-IP requests, 429s and lockouts."""
        return {
            ip: {
                "requests": s.requests,
                "sent_429": s.sent_429,
                "lockouts": s.lockouts,
                "requests_inside_window_after_429": s.inside_window_after_429,
                "requests_by_endpoint": dict(s.by_endpoint),
                "max_concurrent_requests": self.sandbox.max_in_flight.get(ip, 0),
            }
            for ip, s in self.limits.clients.items()
        }

    def violations(self) -> int:
        """Return the 429s answered."""
        return self.limits.violations()

    def reset_limits(self) -> None:
        """Forget counts and lockouts."""
        self.limits.reset()

    # -- helpers ------------------------------------------------------------------------------

    def _json(self, request: web.Request, *, strict: bool = True) -> Any:
        body = request[TOTAL][len(request.query_string) :]
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError:
            if strict:
                raise ApiError(400, "50002", "JSON syntax error") from None
            return {}

    def _signed(self, request: web.Request) -> str:
        """Return the account of a validly signed request; raise OKX's 401 otherwise."""
        headers = request.headers
        key = headers.get("OK-ACCESS-KEY")
        if not key:
            raise ApiError(401, "50103", 'Request header "OK-ACCESS-KEY" can not be empty.')
        passphrase = headers.get("OK-ACCESS-PASSPHRASE")
        if not passphrase:
            raise ApiError(401, "50104", 'Request header "OK-ACCESS-PASSPHRASE" can not be empty.')
        sign = headers.get("OK-ACCESS-SIGN")
        if not sign:
            raise ApiError(401, "50106", 'Request header "OK-ACCESS-SIGN" can not be empty.')
        stamp = headers.get("OK-ACCESS-TIMESTAMP")
        if not stamp:
            raise ApiError(401, "50107", 'Request header "OK-ACCESS-TIMESTAMP" can not be empty.')
        secret = self.sandbox.secrets.get(key)
        if secret is None:
            raise ApiError(401, "50111", "Invalid OK-ACCESS-KEY.")
        try:
            sent = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            raise ApiError(401, "50112", "Invalid OK-ACCESS-TIMESTAMP.") from None
        if abs(sent.timestamp() - time.time()) > TIMESTAMP_TOLERANCE:
            raise ApiError(401, "50102", "Timestamp request expired")
        if not hmac.compare_digest(passphrase, self.passphrase):
            raise ApiError(401, "50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect.')
        body = request[TOTAL][len(request.query_string) :]
        payload = stamp + request.method + request.raw_path + body
        digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), sign):
            raise ApiError(401, "50113", "Invalid Sign")
        return key

    def _path(self, inst: str | None) -> tuple[str, PricePath]:
        if not inst:
            raise _empty_error("instId")
        key = self.keys.get(inst)
        if key is None:
            raise ApiError(200, "51001", "Instrument ID does not exist")
        return key, self.sandbox.paths[key]

    def _spot(self, params: dict[str, Any]) -> None:
        kind = params.get("instType")
        if not kind:
            raise _empty_error("instType")
        if kind != "SPOT":
            raise _param_error("instType")

    # -- public ---------------------------------------------------------------------------------

    async def server_time(self, request: web.Request) -> web.Response:
        """GET /api/v5/public/time (wall-clock time: signatures are checked against it)."""
        return _ok([{"ts": _ms(time.time())}])

    async def instruments(self, request: web.Request) -> web.Response:
        """GET /api/v5/public/instruments?instType=SPOT."""
        self._spot(dict(request.query))
        wanted = request.query.get("instId")
        rows = []
        for key, path in self.sandbox.paths.items():
            if wanted and self.inst[key] != wanted:
                continue
            base, quote = path.symbol.split("/")
            rows.append(
                {
                    "alias": "",
                    "auctionEndTime": "",
                    "baseCcy": base,
                    "category": "1",
                    "ctMult": "",
                    "ctType": "",
                    "ctVal": "",
                    "ctValCcy": "",
                    "expTime": "",
                    "instFamily": "",
                    "instId": self.inst[key],
                    "instType": "SPOT",
                    "lever": "",
                    "listTime": _ms(path.first_minute * 60),
                    "lotSz": str(path.step),
                    "maxIcebergSz": "9000",
                    "maxLmtAmt": "20000000",
                    "maxLmtSz": "9000",
                    "maxMktAmt": "1000000",
                    "maxMktSz": "1000000",
                    "maxStopSz": "9000",
                    "maxTriggerSz": "9000",
                    "maxTwapSz": "9000",
                    "minSz": str(path.step),
                    "optType": "",
                    "quoteCcy": quote,
                    "ruleType": "normal",
                    "settleCcy": "",
                    "state": "live",
                    "stk": "",
                    "tickSz": str(path.tick),
                    "uly": "",
                }
            )
        return _ok(rows)

    def _ticker(self, key: str, path: PricePath, now: float) -> dict[str, Any]:
        day = binance_views.ticker_24hr(key, path, now)
        start = path.candles(86400.0, now - 86400, now, now)
        sod = path.round_price(start[-1].open) if start else float(day["openPrice"])
        return {
            "instType": "SPOT",
            "instId": self.inst[key],
            "last": _num(float(day["lastPrice"])),
            "lastSz": _num(float(day["lastQty"])),
            "askPx": _num(float(day["askPrice"])),
            "askSz": _num(float(day["askQty"])),
            "bidPx": _num(float(day["bidPrice"])),
            "bidSz": _num(float(day["bidQty"])),
            "open24h": _num(float(day["openPrice"])),
            "high24h": _num(float(day["highPrice"])),
            "low24h": _num(float(day["lowPrice"])),
            "volCcy24h": _num(float(day["quoteVolume"])),
            "vol24h": _num(float(day["volume"])),
            "ts": _ms(now),
            "sodUtc0": _num(sod),
            "sodUtc8": _num(sod),
        }

    async def ticker(self, request: web.Request) -> web.Response:
        """GET /api/v5/market/ticker?instId=."""
        key, path = self._path(request.query.get("instId"))
        return _ok([self._ticker(key, path, self.sandbox.clock.now())])

    async def tickers(self, request: web.Request) -> web.Response:
        """GET /api/v5/market/tickers?instType=SPOT (every spot instrument)."""
        self._spot(dict(request.query))
        now = self.sandbox.clock.now()
        return _ok([self._ticker(k, p, now) for k, p in self.sandbox.paths.items()])

    async def books(self, request: web.Request) -> web.Response:
        """GET /api/v5/market/books (sz 1-400, default 1) and books-full (up to 5000)."""
        _, path = self._path(request.query.get("instId"))
        full = request.path.endswith("books-full")
        try:
            size = int(request.query.get("sz", "1"))
        except ValueError:
            raise _param_error("sz") from None
        if size < 1:
            raise _param_error("sz")
        size = min(size, 5000 if full else 400)
        now = self.sandbox.clock.now()
        bids, asks = path.book(now, size)
        return _ok(
            [
                {
                    "asks": [[_num(p), _num(q), "0", "1"] for p, q in asks],
                    "bids": [[_num(p), _num(q), "0", "1"] for p, q in bids],
                    "ts": _ms(now),
                }
            ]
        )

    async def candles(self, request: web.Request) -> web.Response:
        """GET /api/v5/market/candles and history-candles: newest first, ``after``/``before``."""
        _, path = self._path(request.query.get("instId"))
        query = request.query
        interval = BARS.get(query.get("bar", "1m"))
        if interval is None:
            raise _param_error("bar")
        try:
            limit = min(int(query.get("limit", "100")), 300)
            after = int(query["after"]) / 1000 if query.get("after") else None
            before = int(query["before"]) / 1000 if query.get("before") else None
        except ValueError:
            raise _param_error("limit") from None
        now = self.sandbox.clock.now()
        end = min(after - 1e-3, now) if after is not None else now
        start = before + 1e-3 if before is not None else end - interval * (limit + 1)
        found = [c for c in path.candles(interval, start, end, now) if c.open_time <= end]
        # only ``before``: the ``limit`` candles just newer than it; else the newest ones
        found = found[:limit] if before is not None and after is None else found[-limit:]
        rows = [
            [
                _ms(c.open_time),
                _num(path.round_price(c.open)),
                _num(path.round_price(c.high)),
                _num(path.round_price(c.low)),
                _num(path.round_price(c.close)),
                _num(c.volume),
                _num(c.volume * c.close),
                _num(c.volume * c.close),
                "1" if c.open_time + interval <= now else "0",
            ]
            for c in reversed(found)
        ]
        return _ok(rows)

    async def trades(self, request: web.Request) -> web.Response:
        """GET /api/v5/market/trades (limit default 100, at most 500)."""
        key, path = self._path(request.query.get("instId"))
        try:
            limit = min(int(request.query.get("limit", "100")), 500)
        except ValueError:
            raise _param_error("limit") from None
        rows = [
            {
                "instId": self.inst[key],
                "side": "sell" if maker else "buy",
                "sz": _num(q),
                "px": _num(p),
                "source": "0",
                "tradeId": str(n),
                "ts": _ms(t),
            }
            for n, t, p, q, maker in reversed(path.trades(self.sandbox.clock.now(), limit))
        ]
        return _ok(rows)

    # -- private: account ---------------------------------------------------------------------

    async def balance(self, request: web.Request) -> web.Response:
        """GET /api/v5/account/balance (the trading account; ``ccy`` filters)."""
        key = self._signed(request)
        now = self.sandbox.clock.now()
        self.sandbox.exchange.settle(now)
        wanted = {c for c in request.query.get("ccy", "").split(",") if c}
        details = []
        total_usd = 0.0
        for asset, (free, locked) in self.sandbox.exchange.balances(key).items():
            if wanted and asset not in wanted:
                continue
            eq = free + locked
            usd = eq if asset in ("USDT", "USDC") else eq * self._usd(asset, now)
            total_usd += usd
            details.append(
                {
                    "availBal": _num(free),
                    "availEq": _num(free),
                    "cashBal": _num(eq),
                    "ccy": asset,
                    "disEq": _num(usd),
                    "eq": _num(eq),
                    "eqUsd": _num(usd),
                    "frozenBal": _num(locked),
                    "ordFrozen": _num(locked),
                    "uTime": _ms(time.time()),
                }
            )
        return _ok(
            [
                {
                    "adjEq": "",
                    "details": details,
                    "imr": "",
                    "isoEq": "0",
                    "mgnRatio": "",
                    "mmr": "",
                    "notionalUsd": "",
                    "ordFroz": "",
                    "totalEq": _num(total_usd),
                    "uTime": _ms(time.time()),
                }
            ]
        )

    def _usd(self, asset: str, now: float) -> float:
        path = self.sandbox.paths.get(f"{asset}USDT")
        return path.price_at(now) if path is not None else 0.0

    async def account_rate_limit(self, request: web.Request) -> web.Response:
        """GET /api/v5/trade/account-rate-limit: the account's new-order budget per 2 s.

        As OKX answers an account below VIP 5 ("Get account rate limit"): ``accRateLimit``
        the enforced budget (``account_orders_per_2s``), the fill ratios and the next
        period's limit ``""``, ``ts`` the current time."""
        self._signed(request)
        limit = self.limits.limit_of_orders()
        return _ok(
            [
                {
                    "accRateLimit": str(limit),
                    "fillRatio": "",
                    "mainFillRatio": "",
                    "nextAccRateLimit": "",
                    "ts": _ms(time.time()),
                }
            ]
        )

    # -- private: orders -----------------------------------------------------------------------

    def _order_view(self, order: Order) -> dict[str, Any]:
        last = order.fills[-1] if order.fills else None
        fee = sum(float(f["commission"]) for f in order.fills)
        base, quote = self.sandbox.exchange._assets(order.symbol)
        return {
            "accFillSz": _num(order.executed_qty),
            "algoClOrdId": "",
            "algoId": "",
            "attachAlgoClOrdId": "",
            "attachAlgoOrds": [],
            "avgPx": _num(order.quote_qty / order.executed_qty) if order.executed_qty else "",
            "cTime": str(order.time_ms),
            "cancelSource": "",
            "cancelSourceReason": "",
            "category": "normal",
            "ccy": "",
            "clOrdId": _cid(order),
            "fee": _num(-fee) if fee else "0",
            "feeCcy": base if order.side == "BUY" else quote,
            "fillPx": last["price"].rstrip("0").rstrip(".") if last else "",
            "fillSz": last["qty"].rstrip("0").rstrip(".") if last else "",
            "fillTime": str(order.update_ms) if last else "",
            "instId": self.inst[order.symbol],
            "instType": "SPOT",
            "isTpLimit": "false",
            "lever": "",
            "linkedAlgoOrd": {"algoId": ""},
            "ordId": str(order.order_id),
            "ordType": self._ord_type(order),
            "pnl": "0",
            "posSide": "",
            "px": _num(order.price) if order.type == "LIMIT" else "",
            "pxType": "",
            "pxUsd": "",
            "pxVol": "",
            "quickMgnType": "",
            "rebate": "0",
            "rebateCcy": quote if order.side == "BUY" else base,
            "reduceOnly": "false",
            "side": order.side.lower(),
            "slOrdPx": "",
            "slTriggerPx": "",
            "slTriggerPxType": "",
            "source": "",
            "state": STATES[order.status],
            "stpId": "",
            "stpMode": "cancel_maker",
            "sz": _num(order.orig_qty),
            "tag": "",
            "tdMode": "cash",
            "tgtCcy": "base_ccy",
            "tpOrdPx": "",
            "tpTriggerPx": "",
            "tpTriggerPxType": "",
            "tradeId": str(last["tradeId"]) if last else "",
            "uTime": str(order.update_ms),
        }

    @staticmethod
    def _ord_type(order: Order) -> str:
        if order.type == "MARKET":
            return "market"
        return {"IOC": "ioc", "FOK": "fok"}.get(order.time_in_force, "limit")

    def _neutral(self, entry: dict[str, Any]) -> dict[str, str]:
        """Translate one OKX order request into the matching engine's params."""
        key, _ = self._path(str(entry.get("instId") or ""))
        td_mode = entry.get("tdMode")
        if not td_mode:
            raise _empty_error("tdMode")
        if td_mode != "cash":
            raise ApiError(
                200, "51010", "You can't complete this request under your current account mode."
            )
        side = str(entry.get("side") or "")
        if side not in ("buy", "sell"):
            raise _param_error("side")
        size = str(entry.get("sz") or "")
        if not size:
            raise _empty_error("sz")
        params = {"symbol": key, "side": side.upper(), **self._kind(entry, side, size)}
        cid = str(entry.get("clOrdId") or "")
        if cid and not (cid.isascii() and cid.isalnum() and len(cid) <= 32):
            raise _param_error("clOrdId")
        if cid:
            params["newClientOrderId"] = cid
        return params

    @staticmethod
    def _kind(entry: dict[str, Any], side: str, size: str) -> dict[str, str]:
        kind = str(entry.get("ordType") or "")
        tif = {"limit": "GTC", "post_only": "GTC", "ioc": "IOC", "fok": "FOK"}.get(kind)
        if kind == "market":
            if side == "buy" and entry.get("tgtCcy") == "quote_ccy":
                return {"type": "MARKET", "quoteOrderQty": size}
            return {"type": "MARKET", "quantity": size}
        if tif is None:
            raise _param_error("ordType")
        price = str(entry.get("px") or "")
        if not price:
            raise _empty_error("px")
        return {"type": "LIMIT", "price": price, "quantity": size, "timeInForce": tif}

    @staticmethod
    def _order_failure(exc: ApiError) -> tuple[str, str]:
        """Return OKX's sCode/sMsg for an engine (Binance-coded) refusal."""
        if exc.status == 429:
            return str(exc.code), exc.msg
        for marker, code, msg in _FAILURES:
            if marker in f"{exc.code} {exc.msg}":
                return code, msg
        return "51000", f"Parameter error: {exc.msg}"

    async def place_order(self, request: web.Request) -> web.Response:
        """POST /api/v5/trade/order (one object) and batch-orders (a list of up to 20)."""
        key = self._signed(request)
        body = self._json(request)
        batch = request.path.endswith("batch-orders")
        entries = body if isinstance(body, list) else [body]
        if not entries or (batch and len(entries) > 20) or (not batch and isinstance(body, list)):
            raise ApiError(400, "50002", "JSON syntax error")
        results = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise ApiError(400, "50002", "JSON syntax error")
            params = self._neutral(entry)
            cid = params.get("newClientOrderId", "")
            now = self.sandbox.clock.now()
            try:
                self.limits.admit_order(key, request.remote or "unknown")
                order = self.sandbox.exchange.place(key, params, now)
            except ApiError as exc:
                code, msg = self._order_failure(exc)
                results.append(
                    {
                        "clOrdId": cid,
                        "ordId": "",
                        "sCode": code,
                        "sMsg": msg,
                        "tag": "",
                        "ts": _ms(now),
                    }
                )
                continue
            results.append(
                {
                    "clOrdId": order.client_order_id if cid else "",
                    "ordId": str(order.order_id),
                    "sCode": "0",
                    "sMsg": "Order placed",
                    "tag": str(entry.get("tag") or ""),
                    "ts": _ms(now),
                }
            )
        failed = sum(1 for r in results if r["sCode"] != "0")
        code, msg = "0", ""
        if failed == len(results):
            code, msg = "1", "All operations failed"
        elif failed:
            code, msg = "2", "Bulk operation partially succeeded"
        now_ms = _ms(time.time())
        return json_response(
            {"code": code, "msg": msg, "data": results, "inTime": now_ms, "outTime": now_ms}
        )

    def _find_params(self, params: dict[str, Any]) -> dict[str, str]:
        key, _ = self._path(str(params.get("instId") or ""))
        found = {"symbol": key}
        ord_id, cid = str(params.get("ordId") or ""), str(params.get("clOrdId") or "")
        if ord_id:
            if not ord_id.isdigit():
                raise ApiError(200, "51603", "Order does not exist")
            found["orderId"] = ord_id
        elif cid:
            found["origClientOrderId"] = cid
        else:
            raise ApiError(200, "51000", "Parameter ordId or clOrdId error")
        return found

    async def get_order(self, request: web.Request) -> web.Response:
        """GET /api/v5/trade/order by ordId or clOrdId (the newest with that clOrdId)."""
        key = self._signed(request)
        query = self._find_params(dict(request.query))
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        try:
            order = self.sandbox.exchange.find(key, query)
        except ApiError:
            raise ApiError(200, "51603", "Order does not exist") from None
        return _ok([self._order_view(order)])

    async def cancel_order(self, request: web.Request) -> web.Response:
        """POST /api/v5/trade/cancel-order by ordId or clOrdId."""
        key = self._signed(request)
        body = self._json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "50002", "JSON syntax error")
        query = self._find_params(body)
        now = self.sandbox.clock.now()
        cid, ord_id = str(body.get("clOrdId") or ""), str(body.get("ordId") or "")
        try:
            order = self.sandbox.exchange.cancel(key, query, now)
        except ApiError:
            row = {
                "clOrdId": cid,
                "ordId": ord_id,
                "sCode": "51400",
                "sMsg": "Order cancellation failed as the order has been filled, canceled "
                "or does not exist.",
                "ts": _ms(now),
            }
            return json_response({"code": "1", "msg": "All operations failed", "data": [row]})
        row = {
            "clOrdId": order.client_order_id,
            "ordId": str(order.order_id),
            "sCode": "0",
            "sMsg": "",
            "ts": _ms(now),
        }
        return _ok([row])

    async def orders_pending(self, request: web.Request) -> web.Response:
        """GET /api/v5/trade/orders-pending (newest first, limit at most 100)."""
        key = self._signed(request)
        query = request.query
        kind = query.get("instType")
        if kind and kind != "SPOT":
            return _ok([])
        symbol = self._path(query["instId"])[0] if query.get("instId") else None
        try:
            limit = min(int(query.get("limit", "100")), 100)
        except ValueError:
            raise _param_error("limit") from None
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        rows = [
            self._order_view(o)
            for o in sorted(
                self.sandbox.exchange.orders.values(), key=lambda o: o.order_id, reverse=True
            )
            if o.account == key
            and o.is_open
            and (symbol is None or o.symbol == symbol)
            and (not query.get("ordType") or self._ord_type(o) == query["ordType"])
        ]
        return _ok(rows[:limit])

    async def fills(self, request: web.Request) -> web.Response:
        """GET /api/v5/trade/fills and fills-history (instType required for history)."""
        key = self._signed(request)
        query = request.query
        if request.path.endswith("history"):
            self._spot(dict(query))
        elif query.get("instType") and query["instType"] != "SPOT":
            return _ok([])
        symbol = self._path(query["instId"])[0] if query.get("instId") else None
        try:
            limit = min(int(query.get("limit", "100")), 100)
            begin = int(query.get("begin", "0"))
            end = int(query["end"]) if query.get("end") else None
        except ValueError:
            raise _param_error("limit") from None
        orders = self.sandbox.exchange.orders
        rows = []
        for t in reversed(self.sandbox.exchange.trades):
            if t["account"] != key or (symbol is not None and t["symbol"] != symbol):
                continue
            if t["time"] < begin or (end is not None and t["time"] > end):
                continue
            order = orders.get(t["orderId"])
            fee = -float(t["commission"])
            rows.append(
                {
                    "instType": "SPOT",
                    "instId": self.inst[t["symbol"]],
                    "tradeId": str(t["id"]),
                    "ordId": str(t["orderId"]),
                    "clOrdId": order.client_order_id if order else "",
                    "billId": str(t["id"]),
                    "subType": "1" if t["isBuyer"] else "2",
                    "tag": "",
                    "fillPx": _num(float(t["price"])),
                    "fillSz": _num(float(t["qty"])),
                    "fillIdxPx": "",
                    "fillPnl": "0",
                    "fillPxVol": "",
                    "fillPxUsd": "",
                    "fillMarkVol": "",
                    "fillFwdPx": "",
                    "fillMarkPx": "",
                    "side": "buy" if t["isBuyer"] else "sell",
                    "posSide": "net",
                    "execType": "M" if t["isMaker"] else "T",
                    "feeCcy": t["commissionAsset"],
                    "fee": _num(fee) if fee else "0",
                    "ts": str(t["time"]),
                    "fillTime": str(t["time"]),
                }
            )
            if len(rows) >= limit:
                break
        return _ok(rows)
