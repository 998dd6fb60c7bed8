"""Candles on timeframes an exchange does not serve, built from one it does.

Coinbase serves 1m, 5m, 15m, 30m, 1h, 2h, 6h and 1d (ccxt's ``timeframes``), not 4h; Kraken
serves 4h but not 2h. :func:`plan` picks the longest served timeframe that divides the wanted
one, and :func:`resample` merges its candles into the wanted ones, aligned to the wanted
timeframe's boundaries (UTC epoch multiples, as exchanges align them). A wanted candle that
is not complete in the data (its first or last part missing) is dropped, except the last
one, which is the current, forming candle, as the exchange would serve it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(timeframe: str) -> int:
    """Return a timeframe's length in seconds (``"4h"`` -> 14400)."""
    try:
        return int(timeframe[:-1]) * _UNITS[timeframe[-1]]
    except (KeyError, ValueError):
        raise ValueError(f"not a timeframe: {timeframe!r} (e.g. 15m, 1h, 4h, 1d)") from None


def plan(served: Mapping[str, Any] | None, wanted: str) -> tuple[str, int]:
    """Return (the timeframe to fetch, how many of its candles make one wanted candle)."""
    if not served or wanted in served:
        return wanted, 1
    length = seconds(wanted)
    divisors = [
        (seconds(tf), tf)
        for tf in served
        if tf[-1] in _UNITS and tf[:-1].isdigit() and length % seconds(tf) == 0
    ]
    if not divisors:
        raise ValueError(f"no timeframe the exchange serves divides {wanted}: {', '.join(served)}")
    base_length, base = max(divisors)
    return base, length // base_length


def resample(rows: Sequence[Sequence[Any]], wanted: str, factor: int) -> list[list[Any]]:
    """Merge ``factor`` consecutive ccxt OHLCV rows into one candle of ``wanted``."""
    if factor == 1:
        return [list(r) for r in rows]
    step = seconds(wanted) * 1000
    groups: dict[int, list[Sequence[Any]]] = {}
    for row in rows:
        groups.setdefault(int(row[0]) // step * step, []).append(row)
    starts = sorted(groups)
    merged = []
    for start in starts:
        parts = sorted(groups[start], key=lambda r: r[0])
        if len(parts) < factor and start != starts[-1]:
            continue  # incomplete in the data (the window's first candle falls here)
        merged.append(
            [
                start,
                parts[0][1],
                max(r[2] for r in parts),
                min(r[3] for r in parts),
                parts[-1][4],
                sum(r[5] or 0 for r in parts),
            ]
        )
    return merged
