"""Market features from candles and the book: tested numpy, no hidden state.

trend: slope of a least-squares line through the last ``trend_window`` closes, as a
fraction of the last close per candle. RSI: Wilder's (14). MACD: EMA12 - EMA26, signal
EMA9. ATR: Wilder's average true range (14). Bollinger: SMA20 +/- 2 standard deviations.
volume_z: the last volume's z-score over the previous 20. spread: (ask - bid) / mid.
book_imbalance: (bid depth - ask depth) / (bid depth + ask depth) over the levels given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from agents.types import Candle, Features, MarketSnapshot

FloatArray = NDArray[np.float64]


def ema(values: FloatArray, period: int) -> FloatArray:
    """Return the exponential moving average (alpha 2/(period+1), seeded with the first value)."""
    alpha = 2.0 / (period + 1)
    out = np.empty_like(values)
    out[0] = values[0]
    for i in range(1, len(values)):
        out[i] = alpha * values[i] + (1 - alpha) * out[i - 1]
    return out


def wilder(values: FloatArray, period: int) -> FloatArray:
    """Return Wilder's smoothing (seeded with the mean of the first ``period`` values)."""
    out = np.full_like(values, np.nan)
    out[period - 1] = values[:period].mean()
    for i in range(period, len(values)):
        out[i] = (out[i - 1] * (period - 1) + values[i]) / period
    return out


def rsi(closes: FloatArray, period: int = 14) -> float | None:
    """Return Wilder's RSI of the last close (None with fewer than period+1 closes)."""
    if len(closes) <= period:
        return None
    change = np.diff(closes)
    gains = wilder(np.clip(change, 0, None), period)[-1]
    losses = wilder(np.clip(-change, 0, None), period)[-1]
    if losses == 0:
        return 100.0 if gains > 0 else 50.0
    return float(100 - 100 / (1 + gains / losses))


def macd(closes: FloatArray) -> tuple[float, float, float] | None:
    """Return (macd, signal, histogram) of the last close (None with fewer than 35 closes)."""
    if len(closes) < 35:
        return None
    line = ema(closes, 12) - ema(closes, 26)
    signal = ema(line, 9)
    return float(line[-1]), float(signal[-1]), float(line[-1] - signal[-1])


def atr(highs: FloatArray, lows: FloatArray, closes: FloatArray, period: int = 14) -> float | None:
    """Return Wilder's average true range of the last candle."""
    if len(closes) <= period:
        return None
    previous = closes[:-1]
    true_range = np.maximum.reduce(
        [highs[1:] - lows[1:], np.abs(highs[1:] - previous), np.abs(lows[1:] - previous)]
    )
    return float(wilder(true_range, period)[-1])


def bollinger(
    closes: FloatArray, period: int = 20, width: float = 2.0
) -> tuple[float, float] | None:
    """Return the (upper, lower) band of the last close."""
    if len(closes) < period:
        return None
    window = closes[-period:]
    mean, std = window.mean(), window.std()
    return float(mean + width * std), float(mean - width * std)


def trend(closes: FloatArray, window: int = 20) -> float | None:
    """Return the least-squares slope of the last ``window`` closes per candle, over the close."""
    if len(closes) < window:
        return None
    y = closes[-window:]
    slope = np.polyfit(np.arange(window, dtype=float), y, 1)[0]
    return float(slope / y[-1])


def volume_z(volumes: FloatArray, window: int = 20) -> float | None:
    """Return the last volume's z-score against the previous ``window`` volumes."""
    if len(volumes) <= window:
        return None
    past = volumes[-window - 1 : -1]
    std = past.std()
    return 0.0 if std == 0 else float((volumes[-1] - past.mean()) / std)


def book_imbalance(
    bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]]
) -> float:
    """Return (bid depth - ask depth) / total depth, in [-1, 1]; 0 for an empty book."""
    bid_depth = sum(q for _, q in bids)
    ask_depth = sum(q for _, q in asks)
    total = bid_depth + ask_depth
    return 0.0 if total == 0 else (bid_depth - ask_depth) / total


def compute(snapshot: MarketSnapshot, timeframe: str) -> Features:
    """Return the features of one timeframe of a snapshot."""
    candles: list[Candle] = snapshot.candles.get(timeframe, [])
    closes = np.array([c.close for c in candles], dtype=float)
    highs = np.array([c.high for c in candles], dtype=float)
    lows = np.array([c.low for c in candles], dtype=float)
    volumes = np.array([c.volume for c in candles], dtype=float)
    m = macd(closes) if len(closes) else None
    bands = bollinger(closes) if len(closes) else None
    mid = (snapshot.bid + snapshot.ask) / 2
    return Features(
        timeframe=timeframe,
        close=float(closes[-1]) if len(closes) else snapshot.last,
        trend=trend(closes) if len(closes) else None,
        rsi=rsi(closes) if len(closes) else None,
        macd=m[0] if m else None,
        macd_signal=m[1] if m else None,
        macd_hist=m[2] if m else None,
        atr=atr(highs, lows, closes) if len(closes) else None,
        bollinger_upper=bands[0] if bands else None,
        bollinger_lower=bands[1] if bands else None,
        volume_z=volume_z(volumes) if len(volumes) else None,
        spread=(snapshot.ask - snapshot.bid) / mid if mid > 0 else 0.0,
        book_imbalance=book_imbalance(snapshot.bids, snapshot.asks),
    )
