"""Bars per second of the rules-only replay against a vectorised pass over the same indicators.

One year of seeded synthetic hourly candles (8,760 bars), in one process:

- ours: ``backtest.replay.replay`` with the live rules (features over the last 100 candles
  at each bar, both analysts, the strategy, ``aim``, the risk guard, fills, exits);
- features only: ``agents.features.compute`` on the same trailing windows, nothing else;
- baseline: the same indicators (trend, RSI, MACD, ATR, Bollinger, volume z) for every bar
  in one numpy pass over the whole series, no agents, no account.

The ratio says how many times more each bar costs in the replay than in a vectorised
indicator pass; the replay's price is the agents being the live ones.

Run: ``python -m bench.backtest [--bars 8760] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from agents.features import compute, ema, wilder
from agents.types import MarketSnapshot
from backtest.data import synthetic
from backtest.replay import LOOKBACK, Settings, replay

Array = np.ndarray


def _rolling(values: Array, window: int) -> Array:
    return np.lib.stride_tricks.sliding_window_view(values, window)


def vectorised(closes: Array, highs: Array, lows: Array, volumes: Array) -> dict[str, Array]:
    """Return every bar's indicators in one pass over the whole series."""
    change = np.diff(closes)
    gains = wilder(np.clip(change, 0, None), 14)
    losses = wilder(np.clip(-change, 0, None), 14)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100 - 100 / (1 + gains / losses)
    line = ema(closes, 12) - ema(closes, 26)
    signal = ema(line, 9)
    true_range = np.maximum.reduce(
        [highs[1:] - lows[1:], np.abs(highs[1:] - closes[:-1]), np.abs(lows[1:] - closes[:-1])]
    )
    atr = wilder(true_range, 14)
    windows = _rolling(closes, 20)
    mean, std = windows.mean(axis=1), windows.std(axis=1)
    x = np.arange(20, dtype=float) - 9.5
    slope = (windows * x).sum(axis=1) / (x**2).sum()
    past = _rolling(volumes[:-1], 20)
    vstd = past.std(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        volume_z = np.where(vstd == 0, 0.0, (volumes[20:] - past.mean(axis=1)) / vstd)
    return {
        "rsi": rsi,
        "macd_hist": line - signal,
        "atr": atr,
        "upper": mean + 2 * std,
        "lower": mean - 2 * std,
        "trend": slope / closes[19:],
        "volume_z": volume_z,
    }


def _best(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    """Measure and print bars per second of ours, features only, and the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=8760)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    candles = synthetic(args.bars, seed=1)
    fields = ("close", "high", "low", "volume")
    arrays = [np.array([getattr(c, f) for c in candles]) for f in fields]
    settings = Settings(symbol="BTC/USDT")

    def features_only() -> None:
        for i in range(len(candles)):
            window = candles[max(0, i + 1 - LOOKBACK) : i + 1]
            c = candles[i]
            snap = MarketSnapshot(
                exchange="x", symbol="BTC/USDT", taken_at=datetime.now(UTC),
                candles={"1h": window}, last=c.close, bid=c.close, ask=c.close,
            )  # fmt: skip
            compute(snap, "1h")

    ours = _best(lambda: replay(candles, settings), args.repeat)
    features = _best(features_only, args.repeat)
    baseline = _best(lambda: vectorised(*arrays), args.repeat)
    rate = {name: args.bars / t for name, t in (("ours", ours), ("features", features),
                                                ("baseline", baseline))}  # fmt: skip
    print(f"{args.bars} hourly bars, best of {args.repeat}")
    print(f"{'run':44} {'seconds':>9} {'bars/s':>10} {'us/bar':>8}")
    for label, name, t in (
        ("ours (replay, rules, live agents)", "ours", ours),
        ("features only (compute, 100-bar windows)", "features", features),
        ("baseline (numpy, one vectorised pass)", "baseline", baseline),
    ):
        print(f"{label:44} {t:9.3f} {rate[name]:10.0f} {t / args.bars * 1e6:8.1f}")
    print(f"ratio ours/baseline cost per bar: {ours / baseline:.0f}x")
    print(f"ratio features-only/baseline cost per bar: {features / baseline:.0f}x")


if __name__ == "__main__":
    main()
