"""Candles for a replay: a CSV or ccxt JSON file as it is, or a seeded synthetic walk.

CSV: a header row ``timestamp,open,high,low,close,volume`` (timestamp: open time in ms,
UTC). JSON: what ccxt's ``fetch_ohlcv`` returns, a list of ``[ms, open, high, low, close,
volume]``. Rows are sorted by time; a duplicated timestamp, a missing or non-numeric value
or a high below the low is refused with the row and the column it is in (:class:`DataError`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.types import Candle

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


class DataError(ValueError):
    """A candle file that cannot be replayed; the message names the file, row and column."""


def load(path: Path) -> list[Candle]:
    """Return the candles of a ``.csv`` or ``.json`` file, in time order."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        return load_json(path)
    return load_csv(path)


def load_csv(path: Path) -> list[Candle]:
    """Return the candles of a CSV file with the header ``timestamp,open,high,low,close,volume``."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise DataError(f"{path}: empty file (expected the header {','.join(COLUMNS)})")
    header = tuple(c.strip().lower() for c in rows[0])
    if header != COLUMNS:
        raise DataError(f"{path}: row 1: header {','.join(header)!r}, expected {','.join(COLUMNS)}")
    # row numbers as an editor shows them: the header is row 1
    return _candles(path, [(n, row) for n, row in enumerate(rows[1:], start=2) if row])


def load_json(path: Path) -> list[Candle]:
    """Return the candles of a ccxt ``fetch_ohlcv`` answer saved as JSON."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of [ms, open, high, low, close, volume]")
    # JSON rows are counted from 0, as in the list ccxt returned
    return _candles(path, list(enumerate(data)))


def _candles(path: Path, rows: Sequence[tuple[int, Any]]) -> list[Candle]:
    if not rows:
        raise DataError(f"{path}: no candles")
    seen: dict[int, int] = {}
    out = []
    for n, row in rows:
        candle = _candle(path, n, row)
        if candle.time in seen:
            raise DataError(
                f"{path}: row {n}, column timestamp: {candle.time} repeats row {seen[candle.time]}"
            )
        seen[candle.time] = n
        out.append(candle)
    out.sort(key=lambda c: c.time)
    return out


def _candle(path: Path, n: int, row: Any) -> Candle:
    if not isinstance(row, list | tuple) or len(row) < len(COLUMNS):
        raise DataError(f"{path}: row {n}: expected 6 values ({','.join(COLUMNS)}), got {row!r}")
    values: list[float] = []
    for column, raw in zip(COLUMNS, row, strict=False):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise DataError(f"{path}: row {n}, column {column}: {raw!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise DataError(f"{path}: row {n}, column {column}: {raw!r} is not a finite price")
        values.append(value)
    ms, open_, high, low, close, volume = values
    if high < max(open_, close, low) or low > min(open_, close):
        raise DataError(f"{path}: row {n}, column high/low: high {high:g} low {low:g} do not hold")
    return Candle(time=int(ms), open=open_, high=high, low=low, close=close, volume=volume)


def synthetic(
    bars: int,
    *,
    seed: int = 0,
    start_ms: int = 1_704_067_200_000,
    step_ms: int = 3_600_000,
    price: float = 100.0,
) -> list[Candle]:
    """Return ``bars`` seeded candles: a geometric random walk whose drift and volatility
    switch between calm-up, calm-down and wild regimes every few days."""
    rng = np.random.default_rng(seed)
    regimes = [(0.00015, 0.006), (-0.00015, 0.006), (0.0, 0.015)]  # (drift, sigma) per bar
    out: list[Candle] = []
    regime = regimes[0]
    for i in range(bars):
        if i % 72 == 0:
            regime = regimes[int(rng.integers(len(regimes)))]
        drift, sigma = regime
        ret = drift + sigma * float(rng.standard_normal())
        open_ = price
        close = price * math.exp(ret)
        wick = abs(float(rng.standard_normal())) * sigma * price / 2
        high = max(open_, close) + wick
        low = max(min(open_, close) - abs(float(rng.standard_normal())) * sigma * price / 2, 1e-9)
        volume = float(rng.lognormal(3.0, 0.5))
        out.append(
            Candle(
                time=start_ms + i * step_ms,
                open=round(open_, 6),
                high=round(high, 6),
                low=round(low, 6),
                close=round(close, 6),
                volume=round(volume, 6),
            )
        )
        price = round(close, 6)
    return out


def write_csv(candles: Sequence[Candle], path: Path) -> None:
    """Write candles as the CSV :func:`load_csv` reads."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for c in candles:
            writer.writerow([c.time, c.open, c.high, c.low, c.close, c.volume])
