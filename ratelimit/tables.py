"""Default rate-limit tables: each exchange's pools and what each kind of request costs.

Limits are data, not code at call sites (after hummingbot's ``*_constants.py``). Figures are
the exchanges' published limits for a default (non-VIP) account; the manager applies
``rate_limiting.safety_margin`` on top. Exchanges change these; an operator overrides a pool
by naming it under ``exchanges.<id>.rate_limits`` in the config.

Sources (read 2026-11):

- Binance spot: https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits
  and the endpoint pages (weights), and ``GET /api/v3/exchangeInfo`` ``rateLimits``:
  REQUEST_WEIGHT 6000 per minute per IP, ORDERS 100 per 10 s and 200,000 per day per account,
  RAW_REQUESTS 61,000 per 5 minutes. Tickers: ``ticker/24hr`` weighs 2 for one ``symbol``,
  2 for a ``symbols`` list of 1-20, 40 for 21-100, 80 for more or for none; ``ticker/price``
  and ``ticker/bookTicker`` 2 for one symbol, 4 for a list or none.
  Windows are counted on calendar boundaries ("a 1 MINUTE interval starts every
  minute"), so they are fixed windows here.
- OKX v5: https://www.okx.com/docs-v5/en/#overview-rate-limits and each endpoint's
  "Rate Limit" line: market tickers 20 req/2 s, books and candles 40 req/2 s per IP;
  place/cancel order 60 req/2 s per user; balance 10 req/2 s.
- Kraken: https://docs.kraken.com/api/docs/guides/spot-rest-ratelimits : private calls
  add 1 to a counter (ledger/trade-history queries 2) that decays at 0.33/s with a maximum
  of 15 (Starter tier); public endpoints about 1 req/s per IP.
- Coinbase Advanced Trade: https://docs.cdp.coinbase.com/advanced-trade/docs/rest-api-rate-limits
  public 10 req/s per IP, private 30 req/s per user.
- HTX (Huobi): https://www.htx.com/en-us/opend/newApiPages/ (API access rate limits):
  public market data 100 req per 10 s per IP per endpoint group (conservative reading of
  "800 per second" aggregate), private 100 req per 10 s per UID, orders 50 per 2 s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.config import LLMConfig
from ratelimit.pools import PoolSpec


@dataclass(frozen=True)
class ExchangeTable:
    """One exchange's pools, named request scopes, and per-endpoint weights.

    ``scopes`` maps a scope (``public``, ``private``, ``order``, ``cancel``, or an endpoint
    such as ``GET /api/v3/depth``) to the weight it spends in each pool.
    ``order_pools`` are the pools whose exhaustion must fail closed (orders).
    ``symbols_weights`` prices a request naming several symbols (``symbols=[...]``) by how
    many it names: ``((20, 2), (100, 40), (inf, 80))`` is 2 for up to 20 symbols, and so on.
    """

    pools: tuple[PoolSpec, ...]
    scopes: Mapping[str, Mapping[str, float]]
    order_scopes: frozenset[str] = frozenset({"order", "cancel"})
    param_weights: Mapping[str, tuple[str, tuple[tuple[float, float], ...]]] = field(
        default_factory=dict
    )
    no_symbol_weights: Mapping[str, float] = field(default_factory=dict)
    symbols_weights: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    usage_headers: Mapping[str, str] = field(default_factory=dict)
    mirrors: tuple[str, ...] = ()

    def pool(self, name: str) -> PoolSpec:
        """Return the pool called ``name``."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


def _fixed(name: str, limit: float, window: float) -> PoolSpec:
    return PoolSpec(name, "fixed_window", limit, window=window)


def _sliding(name: str, limit: float, window: float) -> PoolSpec:
    return PoolSpec(name, "sliding_window", limit, window=window)


def _bucket(name: str, capacity: float, rate: float) -> PoolSpec:
    return PoolSpec(name, "token_bucket", capacity, rate=rate)


_W, _RAW, _O10, _O1D = "REQUEST_WEIGHT", "RAW_REQUESTS", "ORDERS_10S", "ORDERS_1D"


def _binance_read(weight: float) -> dict[str, float]:
    return {_W: weight, _RAW: 1}


BINANCE = ExchangeTable(
    pools=(
        _fixed(_W, 6000, 60),
        _fixed(_RAW, 61000, 300),
        _fixed(_O10, 100, 10),
        _fixed(_O1D, 200000, 86400),
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
    },
    order_scopes=frozenset({"order", "cancel", "POST /api/v3/order", "DELETE /api/v3/order"}),
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

OKX = ExchangeTable(
    pools=(
        _sliding("PUBLIC_TICKERS", 20, 2),
        _sliding("PUBLIC_MARKET", 40, 2),
        _sliding("PRIVATE_ACCOUNT", 10, 2),
        _sliding("TRADE_ORDERS", 60, 2),
    ),
    scopes={
        "public": {"PUBLIC_MARKET": 1},
        "tickers": {"PUBLIC_TICKERS": 1},
        "private": {"PRIVATE_ACCOUNT": 1},
        "order": {"TRADE_ORDERS": 1},
        "cancel": {"TRADE_ORDERS": 1},
    },
)

KRAKEN = ExchangeTable(
    pools=(
        _bucket("PUBLIC", 1, 1),
        PoolSpec("PRIVATE_COUNTER", "leaky_bucket", 15, rate=0.33),
    ),
    scopes={
        "public": {"PUBLIC": 1},
        "private": {"PRIVATE_COUNTER": 1},
        "history": {"PRIVATE_COUNTER": 2},
        "order": {"PRIVATE_COUNTER": 1},
        "cancel": {"PRIVATE_COUNTER": 1},
    },
)

COINBASE = ExchangeTable(
    pools=(_bucket("PUBLIC", 10, 10), _bucket("PRIVATE", 30, 30)),
    scopes={
        "public": {"PUBLIC": 1},
        "private": {"PRIVATE": 1},
        "order": {"PRIVATE": 1},
        "cancel": {"PRIVATE": 1},
    },
)

HTX = ExchangeTable(
    pools=(
        _sliding("PUBLIC", 100, 10),
        _sliding("PRIVATE", 100, 10),
        _sliding("ORDERS", 50, 2),
    ),
    scopes={
        "public": {"PUBLIC": 1},
        "private": {"PRIVATE": 1},
        "order": {"PRIVATE": 1, "ORDERS": 1},
        "cancel": {"PRIVATE": 1, "ORDERS": 1},
    },
)

DEFAULT_TABLES: Mapping[str, ExchangeTable] = {
    "binance": BINANCE,
    "okx": OKX,
    "kraken": KRAKEN,
    "coinbase": COINBASE,
    "htx": HTX,
}


def llm_table(config: LLMConfig) -> ExchangeTable:
    """Return the LLM provider's pools: tokens and requests per minute (sliding windows).

    A call's weight is its estimated tokens in TOKENS and 1 in REQUESTS.
    """
    return ExchangeTable(
        pools=(
            _sliding("TOKENS", config.tokens_per_minute, 60),
            _sliding("REQUESTS", config.requests_per_minute, 60),
        ),
        scopes={"chat": {"TOKENS": 1000, "REQUESTS": 1}},
        order_scopes=frozenset(),
    )


def requests_table(per_minute: int) -> ExchangeTable:
    """Return a plain requests-per-minute table (a news API): scope ``get`` costs 1."""
    return ExchangeTable(
        pools=(_sliding("REQUESTS", per_minute, 60),),
        scopes={"get": {"REQUESTS": 1}},
        order_scopes=frozenset(),
    )


def scope_weights(
    table: ExchangeTable, scope: str, params: Mapping[str, object] | None = None
) -> dict[str, float]:
    """Return the weight per pool of one request, applying parameter-dependent weights.

    ``GET /api/v3/depth`` with ``limit=500`` weighs 25 on Binance; ticker endpoints without a
    ``symbol`` weigh more. Pools in ``mirrors`` (extra pools from the config) spend the main
    weight. An unknown scope is an error, not a free request.
    """
    if scope not in table.scopes:
        raise KeyError(f"unknown scope {scope!r}; known: {', '.join(sorted(table.scopes))}")
    weights = dict(table.scopes[scope])
    params = params or {}
    primary = next(iter(weights))
    if scope in table.param_weights:
        name, steps = table.param_weights[scope]
        value = float(str(params.get(name, steps[0][0])))
        weights[primary] = next((w for upto, w in steps if value <= upto), steps[-1][1])
    if scope in table.no_symbol_weights and not params.get("symbol") and not params.get("symbols"):
        weights[primary] = table.no_symbol_weights[scope]
    if scope in table.symbols_weights and params.get("symbols") and not params.get("symbol"):
        count = symbols_count(params["symbols"])
        weights[primary] = next(w for upto, w in table.symbols_weights[scope] if count <= upto)
    for pool in table.mirrors:
        weights[pool] = weights[primary]
    return weights


def symbols_count(value: object) -> int:
    """Return how many symbols a ``symbols`` parameter names (a list or its JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return 1 if value else 0
    return len(value) if isinstance(value, list | tuple) else 1


def max_weight(table: ExchangeTable, pool: str) -> float:
    """Return the largest weight any known request spends in ``pool``."""
    heaviest = 0.0
    for scope in table.scopes:
        variants: list[dict[str, object]] = [{}, {"symbol": "X"}]
        if scope in table.param_weights:
            name, steps = table.param_weights[scope]
            variants += [{name: upto, "symbol": "X"} for upto, _ in steps]
        if scope in table.symbols_weights:
            variants += [{"symbols": ["X"] * 1000}]
        for params in variants:
            heaviest = max(heaviest, scope_weights(table, scope, params).get(pool, 0.0))
    return heaviest
