"""Candles on a timeframe the exchange does not serve, built from one it does."""

from __future__ import annotations

import pytest

from exchanges import candles

COINBASE = {"1m": 0, "5m": 0, "15m": 0, "30m": 0, "1h": 0, "2h": 0, "6h": 0, "1d": 0}
H = 3_600_000


def test_the_longest_served_divisor_is_fetched() -> None:
    assert candles.plan(COINBASE, "4h") == ("2h", 2)
    assert candles.plan(COINBASE, "1h") == ("1h", 1)
    assert candles.plan({"1m": 0, "1h": 0, "4h": 0}, "12h") == ("4h", 3)
    with pytest.raises(ValueError, match="no timeframe the exchange serves divides 7m"):
        candles.plan({"5m": 0}, "7m")


def test_two_hour_candles_merge_into_four_hour_ones_on_epoch_boundaries() -> None:
    # 2h candles from 02:00: the 00:00-04:00 candle has only its second half -> dropped
    rows = [[(2 + 2 * i) * H, 10 + i, 20 + i, 5 + i, 11 + i, 1.0] for i in range(5)]
    merged = candles.resample(rows, "4h", 2)
    assert merged == [
        [4 * H, 11, 22, 6, 13, 2.0],  # 04:00 = 04:00 + 06:00
        [8 * H, 13, 24, 8, 15, 2.0],  # 08:00 = 08:00 + 10:00
    ]


def test_the_forming_last_candle_is_kept() -> None:
    rows = [[4 * H, 1, 2, 0.5, 1.5, 3.0], [6 * H, 1.5, 3, 1, 2.5, 4.0], [8 * H, 2.5, 4, 2, 3, 1.0]]
    assert candles.resample(rows, "4h", 2)[-1] == [8 * H, 2.5, 4, 2, 3, 1.0]
