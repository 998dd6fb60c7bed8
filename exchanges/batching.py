"""Which requests can be merged into one batched exchange call, and how to split a batch.

A rule says that many ``fetch_ticker(symbol)`` requests can be answered by
``fetch_tickers(symbols)`` and what that costs. Where the exchange prices a request by weight
(Binance), the cost comes from the limiter's own table, so the planner and the limiter agree
on what a call spends; elsewhere the limit counts requests, and one batched call costs one.

``plan`` splits N symbols into the calls that spend the least weight (then the fewest calls):
on Binance a ``ticker/24hr`` list of up to 20 symbols weighs 2 but 21-100 weigh 40, so 50
symbols go out as 20 + 20 + 10 (weight 6) rather than one call of 50 (weight 40) or fifty
single calls (weight 100). A chunk of one symbol is sent as the single call, so batching is
never used where it would cost more than single calls.

Account-wide reads (``SHARED_READS``: the balance) are batched on every exchange: the
requests in a batch are identical and one call answers them all.

Exchanges without a rule are never batched. Coinbase has none on purpose: ccxt's
``fetch_tickers`` there reads account endpoints or exchange rates without a book.
"""

from __future__ import annotations

from dataclasses import dataclass

from ratelimit.tables import ExchangeTable, scope_weights


@dataclass(frozen=True)
class BatchRule:
    """How one kind of single-symbol request is batched on one exchange.

    ``scope`` is the limiter scope that prices both forms (weight by symbol count);
    None means every call costs one request whatever it carries.
    """

    single: str
    batched: str
    scope: str | None
    max_per_call: int


RULES: dict[str, dict[str, BatchRule]] = {
    # GET /api/v3/ticker/24hr?symbols=[...]
    "binance": {
        "fetch_ticker": BatchRule("fetch_ticker", "fetch_tickers", "GET /api/v3/ticker/24hr", 100)
    },
    # GET /api/v5/market/tickers?instType=SPOT: one request answers every spot symbol
    "okx": {"fetch_ticker": BatchRule("fetch_ticker", "fetch_tickers", None, 1000)},
    # GET /0/public/Ticker?pair=A,B,...: one request; lists kept short for the URL
    "kraken": {"fetch_ticker": BatchRule("fetch_ticker", "fetch_tickers", None, 50)},
    # GET /market/tickers: one request answers every symbol
    "htx": {"fetch_ticker": BatchRule("fetch_ticker", "fetch_tickers", None, 1000)},
}


#: Exchanges deliberately without a batching rule, and why (the recipe test reads this).
NOT_BATCHED: dict[str, str] = {
    "coinbase": "ccxt's fetch_tickers reads account endpoints or exchange rates, not the book",
}

#: Account-wide reads without parameters: every request in a batch is the same request, so
#: one call answers them all. Safe for account state because the call is made after the
#: batch closes, i.e. after every caller asked (never an answer older than the request).
SHARED_READS = frozenset({"fetch_balance"})


def rule_for(exchange_id: str, endpoint: str) -> BatchRule | None:
    """Return the batching rule of an endpoint on an exchange (by ccxt id), or None."""
    return RULES.get(exchange_id, {}).get(endpoint)


def call_weight(table: ExchangeTable | None, rule: BatchRule, count: int) -> float:
    """Return what one call carrying ``count`` symbols spends in the table's main pool."""
    if rule.scope is None or table is None or rule.scope not in table.scopes:
        return 1.0
    params: dict[str, object] = {"symbol": "X"} if count == 1 else {"symbols": ["X"] * count}
    weights = scope_weights(table, rule.scope, params)
    return next(iter(weights.values()))


def plan(count: int, table: ExchangeTable | None, rule: BatchRule) -> list[int]:
    """Return the sizes of the calls that fetch ``count`` symbols for the least weight.

    Ties go to fewer calls. Sizes sum to ``count``; a size of 1 means the single call.
    """
    if count <= 0:
        return []
    limit = max(1, rule.max_per_call)
    weight = {k: call_weight(table, rule, k) for k in range(1, min(count, limit) + 1)}
    # best[i] = (weight, calls, size of the last call) for the first i symbols
    best: list[tuple[float, int, int]] = [(0.0, 0, 0)]
    for i in range(1, count + 1):
        best.append(
            min(
                (best[i - k][0] + weight[k], best[i - k][1] + 1, k)
                for k in range(1, min(i, limit) + 1)
            )
        )
    sizes: list[int] = []
    i = count
    while i > 0:
        sizes.append(best[i][2])
        i -= best[i][2]
    return sorted(sizes, reverse=True)


def plan_weight(sizes: list[int], table: ExchangeTable | None, rule: BatchRule) -> float:
    """Return the total weight of a plan."""
    return sum(call_weight(table, rule, k) for k in sizes)
