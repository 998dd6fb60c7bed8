"""Default rate-limit tables: each exchange's pools and what each kind of request costs.

Limits are data, not code at call sites (after hummingbot's ``*_constants.py``): one module
per exchange under ``ratelimit/exchange_limits/`` with its published figures and sources.
The manager applies ``rate_limiting.safety_margin`` on top; an operator overrides a pool by
naming it under ``exchanges.<id>.rate_limits`` in the config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from core.config import LLMConfig
from ratelimit.exchange_limits.binance import BINANCE
from ratelimit.exchange_limits.coinbase import COINBASE
from ratelimit.exchange_limits.htx import HTX
from ratelimit.exchange_limits.kraken import KRAKEN
from ratelimit.exchange_limits.okx import OKX
from ratelimit.table_model import ExchangeTable, sliding

__all__ = ["BINANCE", "COINBASE", "DEFAULT_TABLES", "HTX", "KRAKEN", "OKX", "ExchangeTable"]

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
            sliding("TOKENS", config.tokens_per_minute, 60),
            sliding("REQUESTS", config.requests_per_minute, 60),
        ),
        scopes={"chat": {"TOKENS": 1000, "REQUESTS": 1}},
        order_scopes=frozenset(),
    )


def requests_table(per_minute: int) -> ExchangeTable:
    """Return a plain requests-per-minute table (a news API): scope ``get`` costs 1."""
    return ExchangeTable(
        pools=(sliding("REQUESTS", per_minute, 60),),
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


def min_weight(table: ExchangeTable, pool: str) -> float:
    """Return the smallest weight a request spends in ``pool`` (0 if none spends any)."""
    lightest = float("inf")
    for scope in table.scopes:
        weight = scope_weights(table, scope, {"symbol": "X"}).get(pool, 0.0)
        if weight > 0:
            lightest = min(lightest, weight)
    return 0.0 if lightest == float("inf") else lightest


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
