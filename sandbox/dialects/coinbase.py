"""Coinbase Advanced Trade's REST dialect (``/api/v3/brokerage``, and the v2 lists ccxt loads).

Sources: ccxt's ``coinbase.py`` (4.5.x: the paths and params it sends, its HMAC signing with a
legacy key, how it parses answers and maps errors) and Coinbase's Advanced Trade API reference
(https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/): List Public
Products, Get Public Product Book, Get Public Product Candles, Get Public Market Trades, Get
Best Bid/Ask, List Accounts, Get Transaction Summary, Create Order, Get Order (with its
deprecated ``client_order_id`` query parameter), List Orders, List Fills, Cancel Orders;
the Coinbase App v2 Currencies and Exchange Rates (ccxt's ``load_markets`` always reads them).

Product ids are ``BASE-QUOTE`` (``BTC-USDT`` for the sandbox's ``BTC/USDT``); order ids are
UUIDs. Signed requests carry ``CB-ACCESS-KEY``, ``CB-ACCESS-TIMESTAMP`` (seconds, within 30 s)
and ``CB-ACCESS-SIGN``, the hex HMAC-SHA256 of ``timestamp + method + path + body``; a bad one
is answered ``401 Unauthorized`` in plain text, as Coinbase does. API errors are
``{"error", "error_details", "message"}``; a refused order is HTTP 200 ``success: false`` with
an ``error_response``. A ``client_order_id`` already used by the account returns that order
instead of placing another (Create Order's documented idempotency). Limits:
``coinbase_limits.py``. Fees are reported in the quote currency; the paper balances follow the
shared matching engine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.config import SandboxFault
from sandbox.dialects.base import Dialect, json_response
from sandbox.dialects.coinbase_limits import PRIVATE, PUBLIC, V2, LimitEnforcer
from sandbox.errors import ApiError
from sandbox.market import PricePath
from sandbox.matching import BOOK_DEPTH, MIN_NOTIONAL, Order

if TYPE_CHECKING:
    from sandbox.server import Sandbox

V3 = "/api/v3/brokerage"
GRANULARITY = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}
FIAT = {"USD": "US Dollar", "EUR": "Euro", "GBP": "British Pound"}
NAMES = {
    "BTC": "Bitcoin",
    "ETH": "Ethereum",
    "SOL": "Solana",
    "BNB": "BNB",
    "XRP": "XRP",
    "USDT": "Tether",
    "USDC": "USDC",
}
STATUS = {
    "NEW": "OPEN",
    "PARTIALLY_FILLED": "OPEN",
    "FILLED": "FILLED",
    "CANCELED": "CANCELLED",
    "EXPIRED": "EXPIRED",
}
TIME_IN_FORCE = {
    "GTC": "GOOD_UNTIL_CANCELLED",
    "IOC": "IMMEDIATE_OR_CANCEL",
    "FOK": "FILL_OR_KILL",
    "": "IMMEDIATE_OR_CANCEL",
}
_UUID_SPACE = uuid.UUID("6ba7b812-9dad-11d1-80b4-00c04fd430c8")


def iso(t: float) -> str:
    """Return RFC 3339 UTC time as Coinbase writes it."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def num(x: float, places: int = 8) -> str:
    """Return a decimal string without trailing zeros."""
    text = f"{x:.{places}f}".rstrip("0").rstrip(".")
    return text or "0"


def order_uuid(order_id: int) -> str:
    """Return the UUID Coinbase-style order id of the matching engine's order number."""
    return f"{order_id:08x}-0000-4000-8000-{order_id:012x}"


def order_number(text: str) -> int | None:
    """Return the engine's order number of an order UUID, or None."""
    parts = text.split("-")
    if len(parts) != 5 or parts[1:4] != ["0000", "4000", "8000"]:
        return None
    try:
        return int(parts[4], 16)
    except ValueError:
        return None


def bad_argument(message: str) -> ApiError:
    """Return Coinbase's 400 INVALID_ARGUMENT."""
    return ApiError(400, "INVALID_ARGUMENT", message)


class OrderRefused(Exception):
    """A Create Order failure: answered HTTP 200 with ``success: false``."""

    def __init__(self, error: str, message: str, preview: str = "") -> None:
        super().__init__(message)
        self.error, self.message, self.preview = error, message, preview


class Coinbase(Dialect):
    """Coinbase Advanced Trade: see the module docstring."""

    name = "coinbase"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        self.limits = LimitEnforcer(sandbox.config.limits)
        self._day_stats: dict[tuple[str, int], tuple[float, float]] = {}
        #: market buys placed by quote size (the engine keeps the base quantity it bought)
        self._quote_sizes: dict[int, str] = {}

    def routes(self, router: web.UrlDispatcher) -> None:
        """Add Advanced Trade's spot endpoints and the v2 lists."""
        gets = {
            f"{V3}/time": self.server_time,
            f"{V3}/market/products": self.products,
            f"{V3}/market/products/{{product_id}}": self.product,
            f"{V3}/market/products/{{product_id}}/ticker": self.market_trades,
            f"{V3}/market/products/{{product_id}}/candles": self.candles,
            f"{V3}/market/product_book": self.product_book,
            f"{V3}/best_bid_ask": self.best_bid_ask,
            f"{V3}/accounts": self.accounts,
            f"{V3}/transaction_summary": self.transaction_summary,
            # the static paths before the {order_id} one
            f"{V3}/orders/historical/batch": self.list_orders,
            f"{V3}/orders/historical/fills": self.list_fills,
            f"{V3}/orders/historical/{{order_id}}": self.get_order,
            "/v2/currencies": self.currencies,
            "/v2/currencies/crypto": self.crypto_currencies,
            "/v2/exchange-rates": self.exchange_rates,
            "/v2/time": self.v2_time,
        }
        for path, handler in gets.items():
            router.add_get(path, handler)
        router.add_post(f"{V3}/orders", self.create_order)
        router.add_post(f"{V3}/orders/batch_cancel", self.batch_cancel)

    # -- the gateway's hooks -------------------------------------------------------------------

    def account_of(self, request: web.Request) -> str | None:
        """Return the ``CB-ACCESS-KEY`` header."""
        return request.headers.get("CB-ACCESS-KEY")

    @staticmethod
    def pool_of(path: str) -> str:
        """Return which limit a path spends: public (per IP), private (per key) or v2."""
        if path.startswith("/v2/"):
            return V2
        if path.startswith(f"{V3}/market/") or path == f"{V3}/time":
            return PUBLIC
        if path.startswith(f"{V3}/"):
            return PRIVATE
        return PUBLIC

    def _client(self, request: web.Request, pool: str, ip: str) -> str:
        key = self.account_of(request)
        return f"key:{key}" if pool == PRIVATE and key else ip

    def admit(self, request: web.Request, endpoint: str, ip: str) -> dict[str, str]:
        """Charge the request to its IP (public, v2) or API key (private)."""
        pool = self.pool_of(request.path)
        self.limits.admit(pool, self._client(request, pool, ip))
        return {}

    def error(self, exc: ApiError) -> web.Response:
        """Render an error the way Coinbase's gateway does."""
        if exc.status == 401:
            return web.Response(text="Unauthorized\n", status=401, content_type="text/plain")
        if exc.status == 503:
            return web.Response(
                text="upstream connect error or disconnect/reset before headers",
                status=503,
                content_type="text/plain",
            )
        if exc.code == "rate_limit_exceeded":
            return json_response({"errors": [{"id": exc.code, "message": exc.msg}]}, 429)
        if exc.status == 429:
            return json_response({"message": exc.msg}, 429)
        body = {"error": exc.code, "error_details": exc.msg, "message": exc.msg}
        return json_response(body, exc.status)

    def fault(self, fault: SandboxFault, ip: str) -> ApiError:
        """Return Coinbase's answer to a server fault."""
        if fault.kind == "http_500":
            return ApiError(500, "INTERNAL", "Internal server error")
        if fault.kind == "http_503":
            return ApiError(503, "UNAVAILABLE", "Service unavailable")
        if fault.kind == "http_429":
            # the IP is over the limit for ``seconds``, and so is every key (the fault does
            # not say which limit); the 429 is counted once, for the client it answers
            for client in list(self.limits.clients):
                if client.startswith("key:"):
                    self.limits.throttle(client, PRIVATE, fault.seconds, answered=False)
            return self.limits.throttle(ip, PUBLIC, fault.seconds)
        # clock skew: the signature's timestamp is outside the window; Coinbase says 401
        return ApiError(401, "UNAUTHENTICATED", "Unauthorized")

    def malformed(self) -> web.Response:
        """Return a truncated market trades body."""
        return web.Response(
            text='{"trades": [{"trade_id": "1", "product_id": "BTC-USDT", "price": "6',
            content_type="application/json",
        )

    def client_stats(self) -> dict[str, dict[str, Any]]:
        """Return per-client (IP or ``key:<api key>``) requests, 429s and lockouts."""
        return {
            name: {
                "requests": s.requests,
                "requests_by_pool": dict(s.by_pool),
                "sent_429": s.sent_429,
                "throttled_by_fault": s.throttled_by_fault,
                "lockouts": s.lockouts,
                "requests_inside_lockout": s.requests_inside_lockout,
                # concurrency is counted per connection's IP, not per key
                "max_concurrent_requests": (
                    None if name.startswith("key:") else self.sandbox.max_in_flight.get(name, 0)
                ),
            }
            for name, s in self.limits.clients.items()
        }

    def violations(self) -> int:
        """Return the 429s answered."""
        return sum(s.sent_429 for s in self.limits.clients.values())

    def reset_limits(self) -> None:
        """Forget counts and lockouts."""
        self.limits.reset()

    # -- helpers -------------------------------------------------------------------------------

    def _signed(self, request: web.Request, body: str) -> str:
        """Return the API key of a validly signed request; raise the 401 otherwise."""
        key = request.headers.get("CB-ACCESS-KEY")
        sign = request.headers.get("CB-ACCESS-SIGN", "")
        stamp = request.headers.get("CB-ACCESS-TIMESTAMP", "")
        secret = self.sandbox.secrets.get(key or "")
        unauthorized = ApiError(401, "UNAUTHENTICATED", "Unauthorized")
        if key is None or secret is None:
            raise unauthorized
        try:
            skew = abs(time.time() - int(stamp))
        except ValueError:
            raise unauthorized from None
        if skew > 30:
            raise unauthorized
        accepted = (request.path, request.path_qs)  # ccxt signs v3 GETs without the query
        for path in accepted:
            payload = f"{stamp}{request.method}{path}{body}"
            expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, sign.lower()):
                return key
        raise unauthorized

    def _path(self, product_id: str) -> tuple[str, PricePath]:
        name = product_id.replace("-", "")
        path = self.sandbox.paths.get(name)
        if path is None or product_id.count("-") != 1:
            raise ApiError(404, "NOT_FOUND", "ProductID is invalid")
        return name, path

    def _product_id(self, name: str) -> str:
        return self.sandbox.paths[name].symbol.replace("/", "-")

    def _now(self) -> float:
        return self.sandbox.clock.now()

    def _day(self, name: str, path: PricePath, now: float) -> tuple[float, float]:
        """Return (price 24 h ago, base volume over 24 h), computed once a minute."""
        key = (name, int(now // 60))
        if key not in self._day_stats:
            candles = path.candles(3600.0, now - 86400, now, now)
            volume = sum(c.volume for c in candles)
            opened = candles[0].open if candles else path.price_at(now)
            self._day_stats = {k: v for k, v in self._day_stats.items() if k[1] == key[1]}
            self._day_stats[key] = (opened, volume)
        return self._day_stats[key]

    def _product(self, name: str, now: float) -> dict[str, Any]:
        path = self.sandbox.paths[name]
        base, quote = path.symbol.split("/")
        price = path.round_price(path.price_at(now))
        opened, volume = self._day(name, path, now)
        bids, asks = path.book(now, 1)
        return {
            "product_id": f"{base}-{quote}",
            "price": num(price),
            "price_percentage_change_24h": num((price / opened - 1) * 100, 6),
            "volume_24h": num(volume),
            "volume_percentage_change_24h": "0",
            "base_increment": str(path.step),
            "quote_increment": str(path.tick),
            "quote_min_size": num(MIN_NOTIONAL),
            "quote_max_size": "10000000",
            "base_min_size": str(path.step),
            "base_max_size": "9000",
            "base_name": NAMES.get(base, base),
            "quote_name": NAMES.get(quote, FIAT.get(quote, quote)),
            "watched": False,
            "is_disabled": False,
            "new": False,
            "status": "online",
            "cancel_only": False,
            "limit_only": False,
            "post_only": False,
            "trading_disabled": False,
            "auction_mode": False,
            "product_type": "SPOT",
            "quote_currency_id": quote,
            "base_currency_id": base,
            "fcm_trading_session_details": None,
            "mid_market_price": num((bids[0][0] + asks[0][0]) / 2),
            "alias": "",
            "alias_to": [],
            "base_display_symbol": base,
            "quote_display_symbol": quote,
            "view_only": False,
            "price_increment": str(path.tick),
            "display_name": f"{base}-{quote}",
            "product_venue": "CBE",
            "approximate_quote_24h_volume": num(volume * price, 2),
        }

    @staticmethod
    def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise bad_argument(f"invalid value for {name}: {raw!r}") from None

    # -- public market data --------------------------------------------------------------------

    async def server_time(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/time."""
        now = time.time()
        return json_response(
            {"iso": iso(now), "epochSeconds": str(int(now)), "epochMillis": str(int(now * 1000))}
        )

    async def products(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/market/products (``product_type``, ``product_ids``)."""
        now = self._now()
        kind = request.query.get("product_type", "")
        if kind not in ("", "SPOT", "FUTURE", "UNKNOWN_PRODUCT_TYPE"):
            raise bad_argument(f"invalid value for enum type ProductType: {kind!r}")
        wanted = request.query.getall("product_ids", [])
        rows = []
        if kind != "FUTURE":  # the sandbox lists spot products only
            for name, path in self.sandbox.paths.items():
                if wanted and path.symbol.replace("/", "-") not in wanted:
                    continue
                rows.append(self._product(name, now))
        limit = self._int(request, "limit")
        if limit:
            rows = rows[:limit]
        return json_response({"products": rows, "num_products": len(rows)})

    async def product(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/market/products/{product_id}."""
        name, _ = self._path(request.match_info["product_id"])
        return json_response(self._product(name, self._now()))

    async def market_trades(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/market/products/{product_id}/ticker (``limit`` required)."""
        name, path = self._path(request.match_info["product_id"])
        limit = self._int(request, "limit")
        if limit is None or limit < 1:
            raise bad_argument("limit is required and must be a positive integer")
        now = self._now()
        product_id = self._product_id(name)
        trades = [
            {
                "trade_id": str(n),
                "product_id": product_id,
                "price": num(price),
                "size": num(qty),
                "time": iso(t),
                "side": "SELL" if buyer_maker else "BUY",
                "bid": "",
                "ask": "",
                "exchange": "",
            }
            for n, t, price, qty, buyer_maker in reversed(path.trades(now, min(limit, 1000)))
        ]
        bids, asks = path.book(now, 1)
        return json_response(
            {"trades": trades, "best_bid": num(bids[0][0]), "best_ask": num(asks[0][0])}
        )

    async def candles(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/market/products/{product_id}/candles."""
        _, path = self._path(request.match_info["product_id"])
        granularity = request.query.get("granularity", "")
        if granularity not in GRANULARITY:
            raise bad_argument(f"invalid value for enum type Granularity: {granularity!r}")
        start, end = self._int(request, "start"), self._int(request, "end")
        if start is None or end is None or end < start:
            raise bad_argument("start and end argument is invalid")
        seconds = GRANULARITY[granularity]
        limit = self._int(request, "limit", 350) or 350
        if (end - start) / seconds > 350 or limit > 350:
            raise bad_argument(
                "start and end argument is invalid - number of candles requested should be "
                "less than 350"
            )
        now = self._now()
        rows = path.candles(float(seconds), float(start), float(end), now)[-limit:]
        return json_response(
            {
                "candles": [
                    {
                        "start": str(int(c.open_time)),
                        "low": num(c.low),
                        "high": num(c.high),
                        "open": num(c.open),
                        "close": num(c.close),
                        "volume": num(c.volume),
                    }
                    for c in reversed(rows)
                ]
            }
        )

    def _book(self, name: str, path: PricePath, limit: int | None, now: float) -> dict[str, Any]:
        depth = min(limit or BOOK_DEPTH, BOOK_DEPTH)
        bids, asks = path.book(now, depth)
        return {
            "product_id": self._product_id(name),
            "bids": [{"price": num(p), "size": num(q)} for p, q in bids],
            "asks": [{"price": num(p), "size": num(q)} for p, q in asks],
            "time": iso(now),
        }

    async def product_book(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/market/product_book."""
        name, path = self._path(request.query.get("product_id", ""))
        now = self._now()
        book = self._book(name, path, self._int(request, "limit"), now)
        best_bid, best_ask = float(book["bids"][0]["price"]), float(book["asks"][0]["price"])
        mid = (best_bid + best_ask) / 2
        return json_response(
            {
                "pricebook": book,
                "last": num(path.round_price(path.price_at(now))),
                "mid_market": num(mid),
                "spread_bps": num((best_ask - best_bid) / mid * 10000, 4),
                "spread_absolute": num(best_ask - best_bid),
            }
        )

    async def best_bid_ask(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/best_bid_ask (private: signed)."""
        self._signed(request, "")
        wanted = request.query.getall("product_ids", [])
        now = self._now()
        books = []
        for name, path in self.sandbox.paths.items():
            if wanted and self._product_id(name) not in wanted:
                continue
            books.append(self._book(name, path, 1, now))
        return json_response({"pricebooks": books})

    # -- v2 lists (ccxt's load_markets reads them) ---------------------------------------------

    def _assets(self) -> list[str]:
        seen: list[str] = []
        for path in self.sandbox.paths.values():
            for asset in path.symbol.split("/"):
                if asset not in seen:
                    seen.append(asset)
        return seen

    async def currencies(self, request: web.Request) -> web.Response:
        """GET /v2/currencies (fiat)."""
        rows = [{"id": c, "name": n, "min_size": "0.01"} for c, n in FIAT.items()]
        return json_response({"data": rows})

    async def crypto_currencies(self, request: web.Request) -> web.Response:
        """GET /v2/currencies/crypto."""
        rows = [
            {
                "asset_id": str(uuid.uuid5(_UUID_SPACE, asset)),
                "code": asset,
                "name": NAMES.get(asset, asset),
                "color": "#0052FF",
                "sort_index": index,
                "exponent": 8,
                "type": "crypto",
                "address_regex": "^.+$",
            }
            for index, asset in enumerate(a for a in self._assets() if a not in FIAT)
        ]
        return json_response({"data": rows})

    async def exchange_rates(self, request: web.Request) -> web.Response:
        """GET /v2/exchange-rates (per USD; the sandbox's USDT and USDC count as dollars)."""
        currency = request.query.get("currency", "USD")
        now = self._now()
        usd = {"USD": 1.0, "USDT": 1.0, "USDC": 1.0}
        for path in self.sandbox.paths.values():
            base, quote = path.symbol.split("/")
            if quote in usd and base not in usd:
                usd[base] = path.price_at(now)
        if currency not in usd:
            raise ApiError(400, "invalid_request", "Invalid currency")
        rates = {c: num(usd[currency] / v, 10) for c, v in usd.items()}
        return json_response({"data": {"currency": currency, "rates": rates}})

    async def v2_time(self, request: web.Request) -> web.Response:
        """GET /v2/time."""
        now = time.time()
        return json_response({"data": {"iso": iso(now)[:19] + "Z", "epoch": int(now)}})

    # -- signed: accounts --------------------------------------------------------------------

    async def transaction_summary(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/transaction_summary (ccxt reads the fee tier)."""
        key = self._signed(request, "")
        fee = num(self.sandbox.config.fee_rate, 6)
        volume = sum(
            float(t["quoteQty"]) for t in self.sandbox.exchange.trades if t["account"] == key
        )
        return json_response(
            {
                "total_volume": volume,
                "total_fees": volume * self.sandbox.config.fee_rate,
                "fee_tier": {
                    "pricing_tier": "Advanced 1",
                    "usd_from": "0",
                    "usd_to": "1000",
                    "taker_fee_rate": fee,
                    "maker_fee_rate": fee,
                    "aop_from": "",
                    "aop_to": "",
                },
                "margin_rate": None,
                "goods_and_services_tax": None,
                "advanced_trade_only_volume": volume,
                "advanced_trade_only_fees": volume * self.sandbox.config.fee_rate,
                "coinbase_pro_volume": 0,
                "coinbase_pro_fees": 0,
                "total_balance": "",
                "has_promo_fee": False,
            }
        )

    async def accounts(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/accounts (one account per currency; ``limit`` up to 250)."""
        key = self._signed(request, "")
        limit = self._int(request, "limit", 49) or 49
        if limit > 250:
            raise bad_argument("limit must be at most 250")
        self.sandbox.exchange.settle(self._now())
        created = iso(self.sandbox.clock.origin)
        rows = [
            {
                "uuid": str(uuid.uuid5(_UUID_SPACE, f"{key}:{asset}")),
                "name": f"{asset} Wallet",
                "currency": asset,
                "available_balance": {"value": num(free), "currency": asset},
                "default": False,
                "active": True,
                "created_at": created,
                "updated_at": iso(time.time()),
                "deleted_at": None,
                "type": "ACCOUNT_TYPE_FIAT" if asset in FIAT else "ACCOUNT_TYPE_CRYPTO",
                "ready": True,
                "hold": {"value": num(locked), "currency": asset},
                "retail_portfolio_id": str(uuid.uuid5(_UUID_SPACE, key)),
                "platform": "ACCOUNT_PLATFORM_CONSUMER",
            }
            for asset, (free, locked) in self.sandbox.exchange.balances(key).items()
        ][:limit]
        return json_response({"accounts": rows, "has_next": False, "cursor": "", "size": len(rows)})

    # -- signed: orders ------------------------------------------------------------------------

    def _configuration(self, order: Order) -> dict[str, Any]:
        path = self.sandbox.paths[order.symbol]
        if order.type == "MARKET":
            quote_size = self._quote_sizes.get(order.order_id)
            if quote_size is not None:
                return {"market_market_ioc": {"quote_size": quote_size}}
            return {"market_market_ioc": {"base_size": num(order.orig_qty)}}
        size, price = num(order.orig_qty), num(path.round_price(order.price))
        if order.time_in_force == "IOC":
            return {"sor_limit_ioc": {"base_size": size, "limit_price": price}}
        if order.time_in_force == "FOK":
            return {"limit_limit_fok": {"base_size": size, "limit_price": price}}
        return {"limit_limit_gtc": {"base_size": size, "limit_price": price, "post_only": False}}

    def _fee_in_quote(self, fill: dict[str, Any], quote: str) -> float:
        fee = float(fill["commission"])
        return fee if fill["commissionAsset"] == quote else fee * float(fill["price"])

    def _report(self, order: Order) -> dict[str, Any]:
        """Return the order as Get Order / List Orders show it."""
        quote = self.sandbox.paths[order.symbol].symbol.split("/")[1]
        fees = sum(self._fee_in_quote(f, quote) for f in order.fills)
        status = STATUS.get(order.status, order.status)
        if status == "EXPIRED" and order.executed_qty > 0:
            status = "CANCELLED"
        average = order.quote_qty / order.executed_qty if order.executed_qty else 0.0
        last_fill = order.update_ms / 1000 if order.fills else None
        hold = order.locked if order.is_open else 0.0
        return {
            "order_id": order_uuid(order.order_id),
            "product_id": self._product_id(order.symbol),
            "user_id": str(uuid.uuid5(_UUID_SPACE, order.account)),
            "order_configuration": self._configuration(order),
            "side": order.side,
            "client_order_id": order.client_order_id,
            "status": status,
            "time_in_force": TIME_IN_FORCE.get(order.time_in_force, "GOOD_UNTIL_CANCELLED"),
            "created_time": iso(order.time_ms / 1000),
            "completion_percentage": num(
                100 * order.executed_qty / order.orig_qty if order.orig_qty else 0, 2
            ),
            "filled_size": num(order.executed_qty),
            "average_filled_price": num(average),
            "fee": "",
            "number_of_fills": str(len(order.fills)),
            "filled_value": num(order.quote_qty),
            "pending_cancel": False,
            "size_in_quote": False,
            "total_fees": num(fees),
            "size_inclusive_of_fees": False,
            "total_value_after_fees": num(
                order.quote_qty + fees if order.side == "BUY" else order.quote_qty - fees
            ),
            "trigger_status": "INVALID_ORDER_TYPE",
            "order_type": order.type,
            "reject_reason": "REJECT_REASON_UNSPECIFIED",
            "settled": not order.is_open,
            "product_type": "SPOT",
            "reject_message": "",
            "cancel_message": "User requested cancel" if order.status == "CANCELED" else "",
            "order_placement_source": "RETAIL_ADVANCED",
            "outstanding_hold_amount": num(hold),
            "is_liquidation": False,
            "last_fill_time": iso(last_fill) if last_fill else None,
            "edit_history": [],
            "leverage": "",
            "margin_type": "UNKNOWN_MARGIN_TYPE",
            "retail_portfolio_id": str(uuid.uuid5(_UUID_SPACE, order.account)),
            "originating_order_id": "",
            "attached_order_id": "",
        }

    def _engine_params(self, body: dict[str, Any]) -> tuple[dict[str, str], str | None]:
        """Translate a Create Order body to the engine's params (and a market buy's quote)."""
        product_id = str(body.get("product_id") or "")
        if product_id.replace("-", "") not in self.sandbox.paths or product_id.count("-") != 1:
            raise OrderRefused("INVALID_PRODUCT_ID", "Invalid product_id", "")
        side = body.get("side")
        if side not in ("BUY", "SELL"):
            raise OrderRefused("INVALID_SIDE", "Invalid side", "")
        config = body.get("order_configuration")
        if not isinstance(config, dict) or len(config) != 1:
            raise OrderRefused("UNSUPPORTED_ORDER_CONFIGURATION", "Unsupported order config", "")
        ((kind, spec),) = config.items()
        if not isinstance(spec, dict):
            raise OrderRefused("UNSUPPORTED_ORDER_CONFIGURATION", "Unsupported order config", "")
        params = {"symbol": product_id.replace("-", ""), "side": str(side)}
        if kind == "market_market_ioc":
            params["type"] = "MARKET"
            if spec.get("quote_size") is not None:
                if side != "BUY":
                    raise OrderRefused(
                        "UNSUPPORTED_ORDER_CONFIGURATION", "quote_size is for buys", ""
                    )
                params["quoteOrderQty"] = str(spec["quote_size"])
                return params, str(spec["quote_size"])
            params["quantity"] = str(spec.get("base_size") or "")
            return params, None
        tif = {"limit_limit_gtc": "GTC", "sor_limit_ioc": "IOC", "limit_limit_fok": "FOK"}
        if kind not in tif:
            raise OrderRefused(
                "UNSUPPORTED_ORDER_CONFIGURATION",
                f"{kind} is not supported by the sandbox",
                "",
            )
        params.update(
            type="LIMIT",
            timeInForce=tif[kind],
            quantity=str(spec.get("base_size") or ""),
            price=str(spec.get("limit_price") or ""),
        )
        if spec.get("post_only") and kind == "limit_limit_gtc":
            self._check_post_only(params)
        return params, None

    def _check_post_only(self, params: dict[str, str]) -> None:
        bids, asks = self.sandbox.paths[params["symbol"]].book(self._now(), 1)
        try:
            price = float(params["price"])
        except ValueError:
            return  # the engine refuses the price itself
        buy = params["side"] == "BUY"
        if (buy and price >= asks[0][0]) or (not buy and price <= bids[0][0]):
            raise OrderRefused(
                "INVALID_LIMIT_PRICE_POST_ONLY",
                "Limit price would take liquidity (post only)",
                "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY",
            )

    @staticmethod
    def _refusal(exc: ApiError) -> OrderRefused:
        """Translate the engine's (Binance-worded) refusal to Coinbase's failure reasons."""
        text = exc.msg
        if "insufficient balance" in text:
            return OrderRefused(
                "INSUFFICIENT_FUND",
                "Insufficient balance in source account",
                "PREVIEW_INSUFFICIENT_FUND",
            )
        if "LOT_SIZE" in text:
            return OrderRefused(
                "INVALID_SIZE_PRECISION",
                "Invalid size precision or size out of bounds",
                "PREVIEW_INVALID_SIZE_PRECISION",
            )
        if "PRICE_FILTER" in text:
            return OrderRefused(
                "INVALID_PRICE_PRECISION",
                "Invalid price precision",
                "PREVIEW_INVALID_PRICE_PRECISION",
            )
        if "NOTIONAL" in text:
            return OrderRefused(
                "INVALID_SIZE",
                "Order size is below the minimum",
                "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL",
            )
        if "Mandatory parameter" in text or "Illegal characters" in text or "Invalid" in text:
            return OrderRefused("INVALID_ARGUMENT", text, "")
        return OrderRefused("UNKNOWN_FAILURE_REASON", text, "")

    async def create_order(self, request: web.Request) -> web.Response:
        """POST /api/v3/brokerage/orders."""
        text = await request.text()
        key = self._signed(request, text)
        try:
            body = json.loads(text or "{}")
        except ValueError:
            raise bad_argument("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise bad_argument("request body must be an object")
        client_id = body.get("client_order_id")
        if not isinstance(client_id, str) or not client_id:
            raise bad_argument("client_order_id is required")
        configuration = body.get("order_configuration")
        existing = [
            o
            for o in self.sandbox.exchange.orders.values()
            if o.account == key and o.client_order_id == client_id
        ]
        if existing:  # a reused client_order_id returns the order it made, not a new one
            order = max(existing, key=lambda o: o.order_id)
            return json_response(self._success(order, configuration))
        try:
            params, quote_size = self._engine_params(body)
            params["newClientOrderId"] = client_id
            try:
                order = self.sandbox.exchange.place(key, params, self._now())
            except ApiError as exc:
                raise self._refusal(exc) from None
        except OrderRefused as refused:
            return json_response(
                {
                    "success": False,
                    "failure_reason": "UNKNOWN_FAILURE_REASON",
                    "order_id": "",
                    "error_response": {
                        "error": refused.error,
                        "message": refused.message,
                        "error_details": refused.message,
                        "preview_failure_reason": refused.preview
                        or "UNKNOWN_PREVIEW_FAILURE_REASON",
                        "new_order_failure_reason": refused.error,
                    },
                    "order_configuration": configuration,
                }
            )
        if quote_size is not None:
            self._quote_sizes[order.order_id] = quote_size
        return json_response(self._success(order, configuration))

    def _success(self, order: Order, configuration: Any) -> dict[str, Any]:
        order_id = order_uuid(order.order_id)
        return {
            "success": True,
            "failure_reason": "UNKNOWN_FAILURE_REASON",
            "order_id": order_id,
            "success_response": {
                "order_id": order_id,
                "product_id": self._product_id(order.symbol),
                "side": order.side,
                "client_order_id": order.client_order_id,
            },
            "order_configuration": configuration,
        }

    def _own(self, key: str, order_id: str) -> Order | None:
        number = order_number(order_id)
        order = self.sandbox.exchange.orders.get(number) if number is not None else None
        return order if order is not None and order.account == key else None

    async def get_order(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/orders/historical/{order_id} (or ``?client_order_id=``)."""
        key = self._signed(request, "")
        self.sandbox.exchange.settle(self._now())
        client_id = request.query.get("client_order_id")
        order: Order | None
        if client_id:
            matches = [
                o
                for o in self.sandbox.exchange.orders.values()
                if o.account == key and o.client_order_id == client_id
            ]
            order = max(matches, key=lambda o: o.order_id) if matches else None
        else:
            order = self._own(key, request.match_info["order_id"])
        if order is None:
            message = "order with this orderID was not found"
            raise ApiError(404, "unknown", message)
        return json_response({"order": self._report(order)})

    async def list_orders(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/orders/historical/batch (filters as documented)."""
        key = self._signed(request, "")
        self.sandbox.exchange.settle(self._now())
        statuses = set(request.query.getall("order_status", []))
        if "OPEN" in statuses and len(statuses) > 1:
            raise bad_argument("OPEN is not allowed with other order statuses")
        products = set(request.query.getall("product_ids", []))
        products.update(request.query.getall("product_id", []))
        ids = set(request.query.getall("order_ids", []))
        limit = self._int(request, "limit", 1000) or 1000
        start = request.query.get("start_date")
        rows = []
        for order in sorted(
            self.sandbox.exchange.orders.values(), key=lambda o: o.order_id, reverse=True
        ):
            if order.account != key:
                continue
            report = self._report(order)
            if statuses and report["status"] not in statuses:
                continue
            if products and report["product_id"] not in products:
                continue
            if ids and report["order_id"] not in ids:
                continue
            if start and report["created_time"] < start:
                continue
            rows.append(report)
        return json_response(
            {"orders": rows[:limit], "sequence": "0", "has_next": len(rows) > limit, "cursor": ""}
        )

    async def list_fills(self, request: web.Request) -> web.Response:
        """GET /api/v3/brokerage/orders/historical/fills."""
        key = self._signed(request, "")
        self.sandbox.exchange.settle(self._now())
        products = set(request.query.getall("product_ids", []))
        products.update(request.query.getall("product_id", []))
        ids = set(request.query.getall("order_ids", []))
        ids.update(request.query.getall("order_id", []))
        limit = self._int(request, "limit", 100) or 100
        start = request.query.get("start_sequence_timestamp")
        rows = []
        for trade in reversed(self.sandbox.exchange.trades):
            if trade["account"] != key:
                continue
            product_id = self._product_id(trade["symbol"])
            order_id = order_uuid(int(trade["orderId"]))
            when = iso(trade["time"] / 1000)
            if products and product_id not in products:
                continue
            if ids and order_id not in ids:
                continue
            if start and when < start:
                continue
            quote = product_id.split("-")[1]
            fee = self._fee_in_quote(
                {
                    "commission": trade["commission"],
                    "commissionAsset": trade["commissionAsset"],
                    "price": trade["price"],
                },
                quote,
            )
            rows.append(
                {
                    "entry_id": hashlib.sha256(f"{key}:{trade['id']}".encode()).hexdigest(),
                    "trade_id": str(uuid.uuid5(_UUID_SPACE, f"trade:{trade['id']}")),
                    "order_id": order_id,
                    "trade_time": when,
                    "trade_type": "FILL",
                    "price": num(float(trade["price"])),
                    "size": num(float(trade["qty"])),
                    "commission": num(fee),
                    "product_id": product_id,
                    "sequence_timestamp": when,
                    "liquidity_indicator": "MAKER" if trade["isMaker"] else "TAKER",
                    "size_in_quote": False,
                    "user_id": str(uuid.uuid5(_UUID_SPACE, key)),
                    "side": "BUY" if trade["isBuyer"] else "SELL",
                    "retail_portfolio_id": str(uuid.uuid5(_UUID_SPACE, key)),
                }
            )
        return json_response({"fills": rows[:limit], "cursor": ""})

    async def batch_cancel(self, request: web.Request) -> web.Response:
        """POST /api/v3/brokerage/orders/batch_cancel (``order_ids``, at most 100)."""
        text = await request.text()
        key = self._signed(request, text)
        try:
            body = json.loads(text or "{}")
        except ValueError:
            raise bad_argument("request body is not valid JSON") from None
        ids = body.get("order_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or len(ids) > 100:
            raise bad_argument("order_ids must list 1 to 100 order ids")
        results = []
        now = self._now()
        self.sandbox.exchange.settle(now)
        for order_id in ids:
            order = self._own(key, str(order_id))
            if order is None:
                results.append(
                    {
                        "success": False,
                        "failure_reason": "UNKNOWN_CANCEL_ORDER",
                        "order_id": order_id,
                    }
                )
                continue
            if not order.is_open:
                results.append(
                    {
                        "success": False,
                        "failure_reason": "INVALID_CANCEL_REQUEST",
                        "order_id": order_id,
                    }
                )
                continue
            self.sandbox.exchange.cancel(
                key, {"symbol": order.symbol, "orderId": str(order.order_id)}, now
            )
            results.append(
                {
                    "success": True,
                    "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON",
                    "order_id": order_id,
                }
            )
        return json_response({"results": results})
