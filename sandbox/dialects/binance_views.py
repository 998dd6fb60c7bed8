"""Binance spot REST response shapes, built from the sandbox's market state."""

from __future__ import annotations

import json
from typing import Any

from core.config import SandboxLimits
from sandbox.errors import ApiError
from sandbox.market import PricePath

INTERVALS = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
    "3d": 259200,
    "1w": 604800,
}


def _f(x: float) -> str:
    return f"{x:.8f}"


def symbol_info(name: str, path: PricePath) -> dict[str, Any]:
    """Return one exchangeInfo symbol with Binance's filters."""
    base, quote = path.symbol.split("/")
    return {
        "symbol": name,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": [
            "LIMIT",
            "LIMIT_MAKER",
            "MARKET",
            "STOP_LOSS",
            "STOP_LOSS_LIMIT",
            "TAKE_PROFIT",
            "TAKE_PROFIT_LIMIT",
        ],
        "icebergAllowed": False,
        "ocoAllowed": True,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _f(float(path.tick)),
                "maxPrice": "1000000.00000000",
                "tickSize": _f(float(path.tick)),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _f(float(path.step)),
                "maxQty": "9000.00000000",
                "stepSize": _f(float(path.step)),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "9000.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(
    paths: dict[str, PricePath], limits: SandboxLimits, server_ms: int
) -> dict[str, Any]:
    """Return exchangeInfo with the enforced rateLimits and every symbol."""
    scale = limits.time_scale
    return {
        "timezone": "UTC",
        "serverTime": server_ms,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": limits.request_weight_per_minute,
                "windowSeconds": 60 * scale,
            },
            {
                "rateLimitType": "ORDERS",
                "interval": "SECOND",
                "intervalNum": 10,
                "limit": limits.orders_per_10s,
                "windowSeconds": 10 * scale,
            },
            {
                "rateLimitType": "ORDERS",
                "interval": "DAY",
                "intervalNum": 1,
                "limit": limits.orders_per_day,
                "windowSeconds": 86400 * scale,
            },
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": limits.raw_requests_per_5m,
                "windowSeconds": 300 * scale,
            },
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(name, path) for name, path in paths.items()],
    }


def requested_symbols(params: dict[str, str], paths: dict[str, PricePath]) -> list[str] | None:
    """Return the symbols a ticker request names (``symbol`` or a JSON ``symbols`` list)."""
    if params.get("symbol"):
        names = [params["symbol"]]
    elif params.get("symbols"):
        try:
            names = json.loads(params["symbols"])
        except ValueError:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
    else:
        return None
    for name in names:
        if name not in paths:
            raise ApiError(400, -1121, "Invalid symbol.")
    return list(names)


def ticker_24hr(name: str, path: PricePath, now: float) -> dict[str, Any]:
    """Return the rolling 24-hour statistics of one symbol."""
    candles = path.candles(60.0, now - 86400, now, now)
    last, opened = path.round_price(path.price_at(now)), path.round_price(candles[0].open)
    bids, asks = path.book(now, 1)
    volume = sum(c.volume for c in candles)
    quote_volume = sum(c.volume * c.close for c in candles)
    return {
        "symbol": name,
        "priceChange": _f(last - opened),
        "priceChangePercent": f"{(last / opened - 1) * 100:.3f}",
        "weightedAvgPrice": _f(quote_volume / volume if volume else last),
        "prevClosePrice": _f(opened),
        "lastPrice": _f(last),
        "lastQty": _f(float(path.step)),
        "bidPrice": _f(bids[0][0]),
        "bidQty": _f(bids[0][1]),
        "askPrice": _f(asks[0][0]),
        "askQty": _f(asks[0][1]),
        "openPrice": _f(opened),
        "highPrice": _f(path.round_price(max(c.high for c in candles))),
        "lowPrice": _f(path.round_price(min(c.low for c in candles))),
        "volume": _f(volume),
        "quoteVolume": _f(quote_volume),
        "openTime": int((now - 86400) * 1000),
        "closeTime": int(now * 1000),
        "firstId": 0,
        "lastId": int(now / 0.7),
        "count": int(86400 / 0.7),
    }


def book_ticker(name: str, path: PricePath, now: float) -> dict[str, Any]:
    """Return the best bid and ask of one symbol."""
    bids, asks = path.book(now, 1)
    return {
        "symbol": name,
        "bidPrice": _f(bids[0][0]),
        "bidQty": _f(bids[0][1]),
        "askPrice": _f(asks[0][0]),
        "askQty": _f(asks[0][1]),
    }


def klines(path: PricePath, params: dict[str, str], now: float) -> list[list[Any]]:
    """Return klines as Binance's arrays (open time ms, o, h, l, c, v, close time ms, ...)."""
    interval = INTERVALS.get(params.get("interval", ""))
    if interval is None:
        raise ApiError(400, -1120, "Invalid interval.")
    limit = min(int(params.get("limit", "500")), 1000)
    end = int(params["endTime"]) / 1000 if params.get("endTime") else now
    if params.get("startTime"):
        start = int(params["startTime"]) / 1000
        candles = path.candles(interval, start, min(end, start + interval * (limit - 1)), now)
    else:
        candles = path.candles(interval, end - interval * limit, end, now)[-limit:]
    return [
        [
            int(c.open_time * 1000),
            _f(path.round_price(c.open)),
            _f(path.round_price(c.high)),
            _f(path.round_price(c.low)),
            _f(path.round_price(c.close)),
            _f(c.volume),
            int((c.open_time + interval) * 1000) - 1,
            _f(c.volume * c.close),
            100,
            _f(c.volume / 2),
            _f(c.volume * c.close / 2),
            "0",
        ]
        for c in candles
    ]


def depth(path: PricePath, params: dict[str, str], now: float) -> dict[str, Any]:
    """Return the order book to ``limit`` levels (default 100, at most 5000)."""
    limit = min(int(params.get("limit", "100")), 5000)
    bids, asks = path.book(now, limit)
    return {
        "lastUpdateId": int(now * 1000),
        "bids": [[_f(p), _f(q)] for p, q in bids],
        "asks": [[_f(p), _f(q)] for p, q in asks],
    }


def trades(path: PricePath, params: dict[str, str], now: float) -> list[dict[str, Any]]:
    """Return recent trades (default 500, at most 1000)."""
    limit = min(int(params.get("limit", "500")), 1000)
    return [
        {
            "id": n,
            "price": _f(p),
            "qty": _f(q),
            "quoteQty": _f(p * q),
            "time": int(t * 1000),
            "isBuyerMaker": maker,
            "isBestMatch": True,
        }
        for n, t, p, q, maker in path.trades(now, limit)
    ]


def agg_trades(path: PricePath, params: dict[str, str], now: float) -> list[dict[str, Any]]:
    """Return recent aggregate trades (default 500, at most 1000)."""
    limit = min(int(params.get("limit", "500")), 1000)
    return [
        {"a": n, "p": _f(p), "q": _f(q), "f": n, "l": n, "T": int(t * 1000), "m": maker, "M": True}
        for n, t, p, q, maker in path.trades(now, limit)
    ]
