"""The batch planner, ticker weights by symbol count, and batch outcomes through JSON."""

from __future__ import annotations

import pytest

from core.errors import (
    BackOffError,
    CircuitOpenError,
    InvalidRequestError,
    MalformedResponseError,
    RateLimitedError,
    RetryableError,
)
from exchanges.batching import BatchRule, plan, plan_weight, rule_for
from ratelimit.tables import BINANCE, scope_weights, symbols_count
from resilience.batching import decode_outcome, encode_outcome

TICKER = rule_for("binance", "fetch_ticker")


@pytest.mark.parametrize(
    ("params", "weight"),
    [
        ({"symbol": "BTCUSDT"}, 2),
        ({"symbols": '["A","B"]'}, 2),
        ({"symbols": ["X"] * 20}, 2),
        ({"symbols": ["X"] * 21}, 40),
        ({"symbols": ["X"] * 100}, 40),
        ({"symbols": ["X"] * 101}, 80),
        ({}, 80),
    ],
)
def test_binance_24hr_weight_follows_the_symbol_count(
    params: dict[str, object], weight: int
) -> None:
    assert scope_weights(BINANCE, "GET /api/v3/ticker/24hr", params)["REQUEST_WEIGHT"] == weight


def test_price_ticker_lists_weigh_four_whatever_their_length() -> None:
    for count in (2, 50, 500):
        params = {"symbols": ["X"] * count}
        assert scope_weights(BINANCE, "GET /api/v3/ticker/price", params)["REQUEST_WEIGHT"] == 4


def test_symbols_count_reads_lists_and_json() -> None:
    assert symbols_count('["A","B","C"]') == 3
    assert symbols_count(["A"]) == 1
    assert symbols_count("") == 0


@pytest.mark.parametrize(
    ("count", "sizes", "weight"),
    [
        (1, [1], 2),
        (2, [2], 2),
        (20, [20], 2),
        (21, [20, 1], 4),
        (50, [20, 20, 10], 6),
        (100, [20] * 5, 10),
    ],
)
def test_binance_plan_spends_the_least_weight(count: int, sizes: list[int], weight: int) -> None:
    assert TICKER is not None
    assert plan(count, BINANCE, TICKER) == sizes
    assert plan_weight(sizes, BINANCE, TICKER) == weight
    assert plan_weight(sizes, BINANCE, TICKER) <= 2 * count  # never dearer than singles


def test_request_counted_exchanges_batch_everything_in_one_call_up_to_their_cap() -> None:
    okx, kraken = rule_for("okx", "fetch_ticker"), rule_for("kraken", "fetch_ticker")
    assert okx is not None
    assert kraken is not None
    assert plan(50, None, okx) == [50]
    assert plan(120, None, kraken) == [50, 50, 20]


def test_where_a_list_costs_more_than_singles_the_plan_sends_singles() -> None:
    # ticker/price: 2 per single symbol, 4 for any list: a list of 2 is a tie (fewer calls
    # wins), a lone symbol always goes out as the single call
    price = BatchRule("fetch_ticker", "fetch_tickers", "GET /api/v3/ticker/price", 100)
    assert plan(1, BINANCE, price) == [1]
    assert plan(2, BINANCE, price) == [2]
    assert plan(30, BINANCE, price) == [30]
    assert plan(0, BINANCE, price) == []


def test_coinbase_and_unknown_endpoints_have_no_rule() -> None:
    assert rule_for("coinbase", "fetch_ticker") is None
    assert rule_for("binance", "fetch_order_book") is None


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequestError("binance has no market 'NOPE/USDT'"),
        MalformedResponseError("fetch_ticker: a ticker without a last price"),
        RateLimitedError("slow down", 12.5),
        CircuitOpenError("open", 3.0),
        TimeoutError("took too long"),
    ],
)
def test_errors_cross_the_fleet_as_the_same_class(error: BaseException) -> None:
    back = decode_outcome(encode_outcome(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    if isinstance(error, BackOffError | CircuitOpenError):
        assert back.retry_after == error.retry_after


def test_a_foreign_error_becomes_retryable_and_data_round_trips() -> None:
    back = decode_outcome(encode_outcome(KeyError("x")))
    assert isinstance(back, RetryableError)
    assert "KeyError" in str(back)
    assert decode_outcome(encode_outcome({"symbol": "BTC/USDT", "last": 1.5})) == {
        "symbol": "BTC/USDT",
        "last": 1.5,
    }


def test_a_flushed_batch_is_counted_in_the_metrics() -> None:
    from monitoring import metrics

    def value(name: str) -> float:
        sample = metrics.BATCHED if name == "items" else metrics.BATCHES
        return float(sample.labels("binance", "fetch_ticker")._value.get())

    batches, items = value("batches"), value("items")
    metrics.on_event(
        "batch.flushed", {"exchange": "binance", "endpoint": "fetch_ticker", "items": 7}
    )
    assert value("batches") == batches + 1
    assert value("items") == items + 7
