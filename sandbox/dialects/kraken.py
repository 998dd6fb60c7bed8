"""Kraken's spot REST dialect (``/0/public/*`` GET, ``/0/private/*`` POST).

Sources: ccxt 4.5.90 ``kraken.py`` (``sign``: the paths, the form body with ``nonce``, the
``API-Key``/``API-Sign`` headers; ``fetch_markets``, ``parse_ticker``, ``parse_order``,
``parse_trade``, ``parse_balance`` for the response fields; ``exceptions`` for the error
strings) and Kraken's REST docs (https://docs.kraken.com/api/docs/rest-api/ ...: AssetPairs,
Assets, Ticker, Depth, OHLC, BalanceEx, AddOrder, QueryOrders, OpenOrders, ClosedOrders,
CancelOrder, TradesHistory; https://docs.kraken.com/api/docs/guides/spot-rest-auth for
signing; https://docs.kraken.com/api/docs/guides/spot-clordid for ``cl_ord_id``).

Every answer is HTTP 200 ``{"error": [...], "result": {...}}``; an error is the error list
(``EAPI:Invalid key``, ``EAPI:Invalid signature``, ``EAPI:Invalid nonce``,
``EOrder:Unknown order``, ``EGeneral:Invalid arguments``...) with no ``result``. The limits
are ``kraken_limits.py``.

Names: Kraken calls BTC ``XBT``; assets have legacy ids (``XXBT``, ``XETH``, ``XXRP``,
``ZUSD``...) and pairs ids such as ``XBTUSDT`` (altname ``XBTUSDT``, wsname ``XBT/USDT``,
base ``XXBT``, quote ``USDT``); ccxt's ``commonCurrencies`` (``XXBT``/``XBT`` -> ``BTC``)
and ``Assets`` (id ``XXBT``, altname ``XBT``) turn them into ``BTC/USDT``.

Signing: ``API-Sign`` = base64(HMAC-SHA512(path + SHA256(nonce + body), b64decode(secret))),
the secret decoded as ccxt's ``base64_to_binary`` does (``base64.standard_b64decode``). A
configured secret that is not base64 (such as the default ``sandbox-secret``) cannot sign
anything: ccxt itself raises ``binascii.Error`` before sending; this dialect then answers
every private call ``EAPI:Invalid key``. Use a base64 ``api_secret`` for a Kraken sandbox.
The nonce must grow per key; ``nonce_window`` (an override, default 0 as on a new Kraken
key) accepts nonces up to that much below the highest seen, once each, as Kraken's per-key
"nonce window" setting does for several processes sharing one key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import re
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.config import SandboxFault
from sandbox.dialects.base import PARAMS, TOTAL, Dialect, json_response
from sandbox.dialects.kraken_limits import ORDER_CALLS, KrakenLimits
from sandbox.errors import ApiError
from sandbox.market import PricePath
from sandbox.matching import Order

if TYPE_CHECKING:
    from sandbox.server import Sandbox

log = logging.getLogger(__name__)

#: Kraken's asset ids (legacy X/Z prefixes) and altnames, by the sandbox's asset.
ASSET_IDS = {"BTC": "XXBT", "ETH": "XETH", "XRP": "XXRP", "USD": "ZUSD", "EUR": "ZEUR"}
ALTNAMES = {"BTC": "XBT"}
#: OHLC intervals in minutes Kraken accepts.
INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
_TXID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TXID_BITS = 80
_TXID_MASK = (1 << _TXID_BITS) - 1
#: An odd multiplier (invertible modulo 2**80): consecutive numbers give unrelated ids.
_TXID_MUL = 0x5DEECE66D1234567ABCD | 1
_TXID_INV = pow(_TXID_MUL, -1, 1 << _TXID_BITS)
_UUID = re.compile(r"^(?:[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}|[0-9a-fA-F]{32})$")
_FREE_TEXT = re.compile(r"^[\x21-\x7e]{1,18}$")
#: The matching engine's (Binance-style) error codes as Kraken's error strings.
_ENGINE_ERRORS = {
    -1013: "EOrder:Order minimum not met",
    -1100: "EGeneral:Invalid arguments",
    -1102: "EGeneral:Invalid arguments",
    -1115: "EGeneral:Invalid arguments:timeinforce",
    -1116: "EGeneral:Invalid arguments:ordertype",
    -1117: "EGeneral:Invalid arguments:type",
    -1121: "EQuery:Unknown asset pair",
    -2011: "EOrder:Unknown order",
    -2013: "EOrder:Unknown order",
}


def asset_id(asset: str) -> str:
    """Return Kraken's id of an asset (``BTC`` -> ``XXBT``)."""
    return ASSET_IDS.get(asset, asset)


def altname(asset: str) -> str:
    """Return Kraken's altname of an asset (``BTC`` -> ``XBT``)."""
    return ALTNAMES.get(asset, asset)


def txid(prefix: str, number: int) -> str:
    """Return a Kraken-looking id (``OXXXXX-XXXXX-XXXXXX``) for an order or trade number."""
    value = (number * _TXID_MUL) & _TXID_MASK
    chars = "".join(_TXID_ALPHABET[(value >> (5 * i)) & 31] for i in range(16))
    text = prefix + chars
    return f"{text[:6]}-{text[6:11]}-{text[11:]}"


def txid_number(text: str, prefix: str) -> int | None:
    """Return the number of an id made by :func:`txid`, or None."""
    raw = text.replace("-", "")
    if len(raw) != 17 or not raw.startswith(prefix):
        return None
    value = 0
    for i, char in enumerate(raw[1:]):
        digit = _TXID_ALPHABET.find(char)
        if digit < 0:
            return None
        value |= digit << (5 * i)
    return (value * _TXID_INV) & _TXID_MASK


def _decimals(step: Any) -> int:
    return max(0, -math.floor(math.log10(float(step)) + 1e-9))


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "").lower() in ("true", "1")


class Kraken(Dialect):
    """Kraken spot: see the module docstring."""

    name = "kraken"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        self.limits = KrakenLimits(sandbox.config.limits)
        self.secrets: dict[str, bytes | None] = {}
        for key, secret in sandbox.secrets.items():
            try:
                self.secrets[key] = base64.standard_b64decode(secret)
            except (binascii.Error, ValueError):
                log.warning(
                    "kraken sandbox: the api_secret of %s is not base64; Kraken secrets are, "
                    "and ccxt cannot sign with it: every private call will be refused",
                    key,
                )
                self.secrets[key] = None
        self.nonces: dict[str, tuple[int, set[int]]] = {}
        #: userref per order number (Kraken's int32 tag; cl_ord_id lives on the order).
        self.userrefs: dict[int, int] = {}
        self.pairs: dict[str, str] = {}
        for key, path in sandbox.paths.items():
            base, quote = path.symbol.split("/")
            pair = self.pair_id(path)
            for name in (pair, altname(base) + altname(quote), f"{altname(base)}/{quote}"):
                self.pairs[name] = key
            self.pairs[f"{altname(base)}/{altname(quote)}"] = key

    # -- names -----------------------------------------------------------------------------

    @staticmethod
    def pair_id(path: PricePath) -> str:
        """Return Kraken's pair id: ``XXBTZUSD`` for legacy pairs, else the altname."""
        base, quote = path.symbol.split("/")
        if asset_id(base) != base and asset_id(quote) != quote:
            return asset_id(base) + asset_id(quote)
        return altname(base) + altname(quote)

    def _key_of(self, pair: str | None) -> str:
        if not pair or pair not in self.pairs:
            raise ApiError(200, "EQuery:Unknown asset pair", "unknown pair")
        return self.pairs[pair]

    def _pairs(self, params: dict[str, str]) -> list[str]:
        raw = params.get("pair")
        if not raw:
            return list(self.sandbox.paths)
        return [self._key_of(p.strip()) for p in raw.split(",") if p.strip()]

    # -- the Dialect contract --------------------------------------------------------------

    def routes(self, router: web.UrlDispatcher) -> None:
        """Add Kraken's spot endpoints."""
        for name, handler in {
            "Time": self.server_time,
            "SystemStatus": self.system_status,
            "Assets": self.assets,
            "AssetPairs": self.asset_pairs,
            "Ticker": self.ticker,
            "Depth": self.depth,
            "OHLC": self.ohlc,
            "Trades": self.public_trades,
        }.items():
            router.add_get(f"/0/public/{name}", handler)
        for name, handler in {
            "Balance": self.balance,
            "BalanceEx": self.balance_ex,
            "AddOrder": self.add_order,
            "CancelOrder": self.cancel_order,
            "QueryOrders": self.query_orders,
            "OpenOrders": self.open_orders,
            "ClosedOrders": self.closed_orders,
            "TradesHistory": self.trades_history,
        }.items():
            router.add_post(f"/0/private/{name}", handler)

    def account_of(self, request: web.Request) -> str | None:
        """Return the ``API-Key`` header."""
        return request.headers.get("API-Key")

    def admit(self, request: web.Request, endpoint: str, ip: str) -> dict[str, str]:
        """Charge a public call to the IP, a private one to its key's counters."""
        path = request.path
        self._last_key = None
        if path.startswith("/0/public/"):
            self.limits.admit_public(ip)
            return {}
        if not path.startswith("/0/private/"):
            raise ApiError(200, "EGeneral:Unknown method", "unknown method")
        call = path.removeprefix("/0/private/")
        key = self._signed(request)
        self.limits.admit_private(key, call)
        if call in ORDER_CALLS:
            self._admit_order(key, call, request[PARAMS])
        return {}

    def error(self, exc: ApiError) -> web.Response:
        """Render Kraken's ``{"error": [...]}`` (HTTP 200 unless a gateway fault)."""
        code = str(exc.code)
        if isinstance(exc.code, int):  # the matching engine's (Binance-style) codes
            code = _ENGINE_ERRORS.get(exc.code, "EGeneral:Internal error")
            if exc.code == -2010:
                code = (
                    "EOrder:Insufficient funds"
                    if "insufficient" in exc.msg.lower()
                    else "EOrder:Duplicate order"
                )
            elif exc.code == -1013 and "LOT_SIZE" in exc.msg:
                code = "EGeneral:Invalid arguments:volume"
            elif exc.code == -1013 and "PRICE_FILTER" in exc.msg:
                code = "EGeneral:Invalid arguments:price"
        status = exc.status if exc.status >= 500 else 200
        return json_response({"error": [code]}, status)

    def fault(self, fault: SandboxFault, ip: str) -> ApiError:
        """Return Kraken's answer to a server fault."""
        if fault.kind == "http_500":
            return ApiError(500, "EGeneral:Internal error", "internal error")
        if fault.kind == "http_503":
            return ApiError(503, "EService:Unavailable", "unavailable")
        if fault.kind == "http_429":
            return self.limits.throttle(self._last_key, ip)
        return ApiError(200, "EAPI:Invalid nonce", "clock skew")

    def malformed(self) -> web.Response:
        """Return a truncated ticker body."""
        return web.Response(
            text='{"error":[],"result":{"XBTUSDT":{"a":["6', content_type="application/json"
        )

    def client_stats(self) -> dict[str, dict[str, Any]]:
        """Return per-key counters (call counter, limit answers) and per-IP public counts."""
        out: dict[str, dict[str, Any]] = {}
        for key, s in self.limits.keys.items():
            out[f"key:{key}"] = {
                "requests": s.requests,
                "counter_total": s.counter_total,
                "counter_now": round(self.limits.counter_now(key), 3),
                "rate_limit_exceeded": s.sent_rate_limit,
                "order_rate_limit_exceeded": s.sent_order_rate_limit,
                "temporary_lockout": s.sent_lockout,
                "lockouts": s.lockouts,
                "violations": s.violations,
            }
        for ip, s in self.limits.ips.items():
            out[ip] = {
                "requests": s.requests,
                "too_many_requests": s.sent_too_many,
                "violations": s.violations,
                "max_concurrent_requests": self.sandbox.max_in_flight.get(ip, 0),
            }
        return out

    def violations(self) -> int:
        """Return every ``Rate limit exceeded``, lockout and ``Too many requests`` answered."""
        return self.limits.violations()

    def reset_limits(self) -> None:
        """Forget counters and lockouts."""
        self.limits.reset()

    # -- signing ---------------------------------------------------------------------------

    _last_key: str | None = None

    def _signed(self, request: web.Request) -> str:
        """Return the key of a correctly signed private call; raise Kraken's error."""
        key = request.headers.get("API-Key")
        if not key or key not in self.secrets:
            raise ApiError(200, "EAPI:Invalid key", "invalid key")
        secret = self.secrets[key]
        if secret is None:
            raise ApiError(200, "EAPI:Invalid key", "the sandbox's secret is not base64")
        params = request[PARAMS]
        body = request[TOTAL][len(request.query_string) :]
        nonce_text = params.get("nonce", "")
        try:
            nonce = int(nonce_text)
        except ValueError:
            raise ApiError(200, "EAPI:Invalid nonce", "invalid nonce") from None
        digest = hashlib.sha256((nonce_text + body).encode()).digest()
        expected = hmac.new(secret, request.path.encode() + digest, hashlib.sha512).digest()
        try:
            sent = base64.b64decode(request.headers.get("API-Sign", ""), validate=True)
        except (binascii.Error, ValueError):
            sent = b""
        if not hmac.compare_digest(expected, sent):
            raise ApiError(200, "EAPI:Invalid signature", "invalid signature")
        self._check_nonce(key, nonce)
        self._last_key = key
        return key

    def _check_nonce(self, key: str, nonce: int) -> None:
        window = int(self.limits.knobs["nonce_window"])
        highest, recent = self.nonces.get(key, (0, set()))
        if nonce > highest:
            recent = {n for n in recent if n > nonce - window} | {nonce}
            self.nonces[key] = (nonce, recent)
            return
        if window > 0 and nonce > highest - window and nonce not in recent:
            recent.add(nonce)
            return
        raise ApiError(200, "EAPI:Invalid nonce", "invalid nonce")

    # -- order-rate ------------------------------------------------------------------------

    def _admit_order(self, key: str, call: str, params: dict[str, str]) -> None:
        if call == "AddOrder":
            pair = params.get("pair")
            if pair in self.pairs:
                self.limits.admit_order(key, self.pairs[pair], 1.0)
            return
        order = self._find_open(key, params, raise_missing=False)
        if order is not None:
            # wall seconds, as Kraken's own thresholds would see them at this time_scale
            config = self.sandbox.config
            age = (self.sandbox.clock.now() - order.time_ms / 1000) / config.speed
            penalty = self.limits.cancel_penalty(age / config.limits.time_scale)
            self.limits.admit_order(key, order.symbol, penalty)

    # -- public market data ----------------------------------------------------------------

    async def server_time(self, request: web.Request) -> web.Response:
        """GET /0/public/Time."""
        now = time.time()
        return self._ok({"unixtime": int(now), "rfc1123": formatdate(now, usegmt=True)})

    async def system_status(self, request: web.Request) -> web.Response:
        """GET /0/public/SystemStatus."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return self._ok({"status": "online", "timestamp": stamp})

    async def assets(self, request: web.Request) -> web.Response:
        """GET /0/public/Assets (optionally ``asset``: a comma-separated list)."""
        names: dict[str, None] = {}
        for path in self.sandbox.paths.values():
            for asset in path.symbol.split("/"):
                names[asset] = None
        for asset in self.sandbox.exchange.starting_balances:
            names[asset] = None
        result = {
            asset_id(a): {
                "aclass": "currency",
                "altname": altname(a),
                "decimals": 10 if a not in ("USDT", "USDC", "USD", "EUR") else 8,
                "display_decimals": 5,
                "collateral_value": 1.0,
                "status": "enabled",
            }
            for a in names
        }
        wanted = request[PARAMS].get("asset")
        if wanted:
            asked = {w.strip() for w in wanted.split(",")}
            result = {k: v for k, v in result.items() if k in asked or v["altname"] in asked}
            if not result:
                raise ApiError(200, "EQuery:Unknown asset", "unknown asset")
        return self._ok(result)

    async def asset_pairs(self, request: web.Request) -> web.Response:
        """GET /0/public/AssetPairs (optionally ``pair``)."""
        fee = self.sandbox.config.fee_rate * 100
        result = {}
        for key in self._pairs(request[PARAMS]):
            path = self.sandbox.paths[key]
            base, quote = path.symbol.split("/")
            price = path.price_at(self.sandbox.clock.now())
            result[self.pair_id(path)] = {
                "altname": altname(base) + altname(quote),
                "wsname": f"{altname(base)}/{altname(quote)}",
                "aclass_base": "currency",
                "base": asset_id(base),
                "aclass_quote": "currency",
                "quote": asset_id(quote),
                "lot": "unit",
                "cost_decimals": 5,
                "pair_decimals": _decimals(path.tick),
                "lot_decimals": _decimals(path.step),
                "lot_multiplier": 1,
                "leverage_buy": [],
                "leverage_sell": [],
                "fees": [[0, round(fee, 4)]],
                "fees_maker": [[0, round(fee, 4)]],
                "fee_volume_currency": "ZUSD",
                "margin_call": 80,
                "margin_stop": 40,
                "ordermin": format(max(float(path.step), 5.0 / price), ".8f"),
                "costmin": "5",
                "tick_size": format(float(path.tick), "f"),
                "status": "online",
            }
        return self._ok(result)

    async def ticker(self, request: web.Request) -> web.Response:
        """GET /0/public/Ticker (``pair``: a comma-separated list; all without it)."""
        now = self.sandbox.clock.now()
        result = {}
        for key in self._pairs(request[PARAMS]):
            path = self.sandbox.paths[key]
            day = path.candles(60.0, now - 86400, now, now)
            today = [c for c in day if c.open_time >= now - now % 86400]
            bids, asks = path.book(now, 1)
            last = path.round_price(path.price_at(now))

            def stats(candles: list[Any], last: float = last) -> tuple[float, float, float]:
                volume = sum(c.volume for c in candles)
                vwap = sum(c.volume * c.close for c in candles) / volume if volume else last
                return volume, vwap, float(len(candles))

            v_today, p_today, _ = stats(today)
            v_day, p_day, _ = stats(day)
            dp = _decimals(path.tick)
            result[self.pair_id(path)] = {
                "a": [f"{asks[0][0]:.{dp}f}", "1", f"{asks[0][1]:.8f}"],
                "b": [f"{bids[0][0]:.{dp}f}", "1", f"{bids[0][1]:.8f}"],
                "c": [f"{last:.{dp}f}", f"{float(path.step):.8f}"],
                "v": [f"{v_today:.8f}", f"{v_day:.8f}"],
                "p": [f"{p_today:.{dp}f}", f"{p_day:.{dp}f}"],
                "t": [len(today) * 85, len(day) * 85],
                "l": [
                    f"{min((c.low for c in today), default=last):.{dp}f}",
                    f"{path.round_price(min(c.low for c in day)):.{dp}f}",
                ],
                "h": [
                    f"{max((c.high for c in today), default=last):.{dp}f}",
                    f"{path.round_price(max(c.high for c in day)):.{dp}f}",
                ],
                "o": f"{path.round_price(today[0].open if today else day[0].open):.{dp}f}",
            }
        return self._ok(result)

    async def depth(self, request: web.Request) -> web.Response:
        """GET /0/public/Depth (``pair``, ``count`` 1..500, default 100)."""
        params = request[PARAMS]
        key = self._key_of(params.get("pair"))
        count = self._int(params, "count", 100)
        if not 1 <= count <= 500:
            raise ApiError(200, "EGeneral:Invalid arguments", "count")
        path, now = self.sandbox.paths[key], self.sandbox.clock.now()
        bids, asks = path.book(now, count)
        dp, stamp = _decimals(path.tick), int(time.time())
        return self._ok(
            {
                self.pair_id(path): {
                    "asks": [[f"{p:.{dp}f}", f"{q:.8f}", stamp] for p, q in asks],
                    "bids": [[f"{p:.{dp}f}", f"{q:.8f}", stamp] for p, q in bids],
                }
            }
        )

    async def ohlc(self, request: web.Request) -> web.Response:
        """GET /0/public/OHLC (``pair``, ``interval`` minutes, ``since`` s; 720 at most)."""
        params = request[PARAMS]
        key = self._key_of(params.get("pair"))
        interval = self._int(params, "interval", 1)
        if interval not in INTERVALS:
            raise ApiError(200, "EGeneral:Invalid arguments", "interval")
        path, now = self.sandbox.paths[key], self.sandbox.clock.now()
        seconds = interval * 60.0
        since = float(params["since"]) if params.get("since") else now - 720 * seconds
        candles = path.candles(seconds, max(since, now - 720 * seconds), now, now)[-720:]
        dp = _decimals(path.tick)
        rows = [
            [
                int(c.open_time),
                f"{path.round_price(c.open):.{dp}f}",
                f"{path.round_price(c.high):.{dp}f}",
                f"{path.round_price(c.low):.{dp}f}",
                f"{path.round_price(c.close):.{dp}f}",
                f"{path.round_price((c.open + c.close) / 2):.{dp}f}",
                f"{c.volume:.8f}",
                max(1, int(c.volume * 10)),
            ]
            for c in candles
        ]
        last = int(candles[-1].open_time) if candles else int(now)
        return self._ok({self.pair_id(path): rows, "last": last})

    async def public_trades(self, request: web.Request) -> web.Response:
        """GET /0/public/Trades (``pair``, ``count`` up to 1000)."""
        params = request[PARAMS]
        key = self._key_of(params.get("pair"))
        count = min(max(self._int(params, "count", 1000), 1), 1000)
        path, now = self.sandbox.paths[key], self.sandbox.clock.now()
        rows = [
            [f"{p:.8f}", f"{q:.8f}", t, "s" if maker else "b", "m", "", n]
            for n, t, p, q, maker in path.trades(now, count)
        ]
        return self._ok({self.pair_id(path): rows, "last": str(int(now * 1e9))})

    # -- private: account ------------------------------------------------------------------

    def _balances(self, key: str) -> dict[str, list[float]]:
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        return self.sandbox.exchange.balances(key)

    async def balance(self, request: web.Request) -> web.Response:
        """POST /0/private/Balance: the total of each asset."""
        key = self._signed_key(request)
        return self._ok(
            {asset_id(a): f"{f + lk:.10f}" for a, (f, lk) in self._balances(key).items()}
        )

    async def balance_ex(self, request: web.Request) -> web.Response:
        """POST /0/private/BalanceEx: total and held for open orders, per asset."""
        key = self._signed_key(request)
        return self._ok(
            {
                asset_id(a): {
                    "balance": f"{f + lk:.10f}",
                    "hold_trade": f"{lk:.10f}",
                    "credit": "0.0000",
                    "credit_used": "0.0000",
                }
                for a, (f, lk) in self._balances(key).items()
            }
        )

    # -- private: orders -------------------------------------------------------------------

    async def add_order(self, request: web.Request) -> web.Response:
        """POST /0/private/AddOrder (market/limit; ``cl_ord_id`` or ``userref``; ``viqc``)."""
        key = self._signed_key(request)
        params = request[PARAMS]
        neutral = self._neutral(params)
        ref = self._userref(params.get("userref"))
        if _flag(params, "validate"):
            return self._ok({"descr": {"order": self._sentence(neutral, params)}})
        order = self.sandbox.exchange.place(key, neutral, self.sandbox.clock.now())
        if ref is not None:
            self.userrefs[order.order_id] = ref
        result: dict[str, Any] = {
            "descr": {"order": self._describe(order)},
            "txid": [txid("O", order.order_id)],
        }
        if "newClientOrderId" in neutral:
            result["cl_ord_id"] = neutral["newClientOrderId"]
        return self._ok(result)

    def _neutral(self, params: dict[str, str]) -> dict[str, str]:
        """Return AddOrder's params as the matching engine's; raise Kraken's errors."""
        symbol = self._key_of(params.get("pair"))
        side, kind = params.get("type", ""), params.get("ordertype", "")
        if side not in ("buy", "sell"):
            raise ApiError(200, "EGeneral:Invalid arguments:type", "type")
        if kind not in ("market", "limit"):
            raise ApiError(200, "EGeneral:Invalid arguments:ordertype", "ordertype")
        cid = params.get("cl_ord_id")
        if cid is not None and (
            "userref" in params or not (_UUID.match(cid) or _FREE_TEXT.match(cid))
        ):
            raise ApiError(200, "EGeneral:Invalid arguments:cl_ord_id", "cl_ord_id")
        flags = {f for f in params.get("oflags", "").split(",") if f}
        tif = params.get("timeinforce", "GTC").upper()
        if tif not in ("GTC", "IOC"):
            raise ApiError(200, "EGeneral:Invalid arguments:timeinforce", "timeinforce")
        neutral = {
            "symbol": symbol,
            "side": side.upper(),
            "type": kind.upper(),
            "quantity": params.get("volume", ""),
        }
        if kind == "limit":
            neutral["price"] = params.get("price", "")
            neutral["timeInForce"] = tif
        elif "viqc" in flags:
            if side != "buy":
                raise ApiError(200, "EGeneral:Invalid arguments:viqc", "viqc")
            neutral["quoteOrderQty"], neutral["quantity"] = params.get("volume", ""), ""
        if cid is not None:
            neutral["newClientOrderId"] = cid
        return neutral

    async def cancel_order(self, request: web.Request) -> web.Response:
        """POST /0/private/CancelOrder by ``txid`` (or userref) or ``cl_ord_id``."""
        key = self._signed_key(request)
        params = request[PARAMS]
        if "txid" in params:
            ref = self._userref(params["txid"]) if params["txid"].lstrip("-").isdigit() else None
            if ref is not None:
                orders = [
                    o
                    for o in self._orders(key)
                    if o.is_open and self.userrefs.get(o.order_id) == ref
                ]
                for o in orders:
                    self._cancel(key, o)
                return self._ok({"count": len(orders)})
        order = self._find_open(key, params, raise_missing=True)
        assert order is not None
        self._cancel(key, order)
        return self._ok({"count": 1})

    def _cancel(self, key: str, order: Order) -> None:
        self.sandbox.exchange.cancel(
            key,
            {"symbol": order.symbol, "orderId": str(order.order_id)},
            self.sandbox.clock.now(),
        )

    async def query_orders(self, request: web.Request) -> web.Response:
        """POST /0/private/QueryOrders: ``txid`` (comma-separated, 50 at most) required."""
        key = self._signed_key(request)
        params = request[PARAMS]
        raw = params.get("txid", "")
        ids = [t.strip() for t in raw.split(",") if t.strip()]
        if not ids or len(ids) > 50:
            raise ApiError(200, "EGeneral:Invalid arguments", "txid")
        ref = self._userref(params.get("userref"))
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        trades = _flag(params, "trades")
        result = {}
        for text in ids:
            number = txid_number(text, "O")
            order = self.sandbox.exchange.orders.get(number) if number is not None else None
            if order is None or order.account != key:
                raise ApiError(200, "EOrder:Invalid order", "unknown txid")
            if ref is not None and self.userrefs.get(order.order_id) != ref:
                continue
            result[text] = self._info(order, trades)
        return self._ok(result)

    async def open_orders(self, request: web.Request) -> web.Response:
        """POST /0/private/OpenOrders (filters ``userref``, ``cl_ord_id``)."""
        key = self._signed_key(request)
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        orders = self._filtered(key, request[PARAMS], is_open=True)
        return self._ok({"open": {txid("O", o.order_id): self._info(o, False) for o in orders}})

    async def closed_orders(self, request: web.Request) -> web.Response:
        """POST /0/private/ClosedOrders (filters ``userref``, ``cl_ord_id``, ``start``)."""
        key = self._signed_key(request)
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        orders = self._filtered(key, request[PARAMS], is_open=False)
        orders.sort(key=lambda o: -o.order_id)
        closed = {txid("O", o.order_id): self._info(o, False) for o in orders[:50]}
        return self._ok({"closed": closed, "count": len(orders)})

    async def trades_history(self, request: web.Request) -> web.Response:
        """POST /0/private/TradesHistory (``start``/``end`` in seconds; newest first, 50)."""
        key = self._signed_key(request)
        params = request[PARAMS]
        self.sandbox.exchange.settle(self.sandbox.clock.now())
        start = float(params["start"]) if params.get("start") else -math.inf
        end = float(params["end"]) if params.get("end") else math.inf
        orders = self.sandbox.exchange.orders
        rows = [
            t
            for t in self.sandbox.exchange.trades
            if t["account"] == key and start < t["time"] / 1000 <= end
        ]
        rows.sort(key=lambda t: -int(t["id"]))
        trades = {}
        for t in rows[:50]:
            order = orders[t["orderId"]]
            path = self.sandbox.paths[t["symbol"]]
            cost = float(t["quoteQty"])
            trades[txid("T", int(t["id"]))] = {
                "ordertxid": txid("O", order.order_id),
                "postxid": txid("P", int(t["id"])),
                "pair": self.pair_id(path),
                "time": t["time"] / 1000,
                "type": "buy" if t["isBuyer"] else "sell",
                "ordertype": order.type.lower(),
                "price": t["price"],
                "cost": f"{cost:.8f}",
                "fee": f"{cost * self.sandbox.exchange.fee_rate:.8f}",
                "vol": t["qty"],
                "margin": "0.00000",
                "leverage": "0",
                "misc": "",
                "trade_id": int(t["id"]),
                "maker": bool(t["isMaker"]),
            }
        return self._ok({"trades": trades, "count": len(rows)})

    # -- helpers ---------------------------------------------------------------------------

    def _signed_key(self, request: web.Request) -> str:
        key = self.account_of(request)
        assert key is not None  # admit() verified the signature before any handler
        return key

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return json_response({"error": [], "result": result})

    @staticmethod
    def _int(params: dict[str, str], name: str, default: int) -> int:
        raw = params.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ApiError(200, "EGeneral:Invalid arguments", name) from None

    @staticmethod
    def _userref(raw: str | None) -> int | None:
        if raw is None or raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(200, "EGeneral:Invalid arguments:userref", "userref") from None
        if not -(2**31) <= value < 2**31:
            raise ApiError(200, "EGeneral:Invalid arguments:userref", "userref")
        return value

    def _orders(self, key: str) -> list[Order]:
        return [o for o in self.sandbox.exchange.orders.values() if o.account == key]

    def _filtered(self, key: str, params: dict[str, str], *, is_open: bool) -> list[Order]:
        ref = self._userref(params.get("userref"))
        cid = params.get("cl_ord_id")
        start = float(params["start"]) if params.get("start") else -math.inf
        return [
            o
            for o in self._orders(key)
            if o.is_open == is_open
            and (ref is None or self.userrefs.get(o.order_id) == ref)
            and (cid is None or o.client_order_id == cid)
            and o.time_ms / 1000 > start
        ]

    def _find_open(self, key: str, params: dict[str, str], *, raise_missing: bool) -> Order | None:
        if params.get("cl_ord_id"):
            found = [
                o
                for o in self._orders(key)
                if o.is_open and o.client_order_id == params["cl_ord_id"]
            ]
            order = found[0] if found else None
        else:
            number = txid_number(params.get("txid", ""), "O")
            order = self.sandbox.exchange.orders.get(number) if number is not None else None
            if order is not None and order.account != key:
                order = None
            if order is None and raise_missing and not params.get("txid"):
                raise ApiError(200, "EGeneral:Invalid arguments", "txid")
        if order is not None and not order.is_open:
            order = None
        if order is None and raise_missing:
            raise ApiError(200, "EOrder:Unknown order", "unknown order")
        return order

    def _describe(self, order: Order) -> str:
        path = self.sandbox.paths[order.symbol]
        altname_ = self._altname(path)
        head = f"{order.side.lower()} {order.orig_qty:.8f} {altname_} @ "
        if order.type == "LIMIT":
            return head + f"limit {order.price:.{_decimals(path.tick)}f}"
        return head + "market"

    def _sentence(self, neutral: dict[str, str], params: dict[str, str]) -> str:
        path = self.sandbox.paths[neutral["symbol"]]
        head = f"{params['type']} {float(params.get('volume') or 0):.8f} {self._altname(path)} @ "
        if params["ordertype"] == "limit":
            return head + f"limit {params.get('price', '0')}"
        return head + "market"

    @staticmethod
    def _altname(path: PricePath) -> str:
        base, quote = path.symbol.split("/")
        return altname(base) + altname(quote)

    def _info(self, order: Order, with_trades: bool) -> dict[str, Any]:
        path = self.sandbox.paths[order.symbol]
        dp = _decimals(path.tick)
        status = {
            "NEW": "open",
            "PARTIALLY_FILLED": "open",
            "FILLED": "closed",
            "CANCELED": "canceled",
            "EXPIRED": "expired",
        }[order.status]
        if order.status == "EXPIRED" and order.executed_qty > 0:
            status = "closed"
        average = order.quote_qty / order.executed_qty if order.executed_qty else 0.0
        cid = order.client_order_id
        info: dict[str, Any] = {
            "refid": None,
            "userref": self.userrefs.get(order.order_id, 0),
            "status": status,
            "reason": None,
            "opentm": order.time_ms / 1000,
            "starttm": 0,
            "expiretm": 0,
            "descr": {
                "pair": self._altname(path),
                "type": order.side.lower(),
                "ordertype": order.type.lower(),
                "price": f"{order.price:.{dp}f}" if order.type == "LIMIT" else "0",
                "price2": "0",
                "leverage": "none",
                "order": self._describe(order),
                "close": "",
            },
            "vol": f"{order.orig_qty:.8f}",
            "vol_exec": f"{order.executed_qty:.8f}",
            "cost": f"{order.quote_qty:.8f}",
            "fee": f"{order.quote_qty * self.sandbox.exchange.fee_rate:.8f}",
            "price": f"{average:.{dp}f}",
            "stopprice": "0.00000",
            "limitprice": "0.00000",
            "misc": "",
            "oflags": "fciq",
        }
        if not cid.startswith("sandbox-"):
            info["cl_ord_id"] = cid
        if not order.is_open:
            info["closetm"] = order.update_ms / 1000
        if order.status == "CANCELED":
            info["reason"] = "User requested"
        if with_trades:
            info["trades"] = [
                txid("T", int(t["id"]))
                for t in self.sandbox.exchange.trades
                if t["orderId"] == order.order_id
            ]
        return info
