"""The candle store that ``crypto-ai history fetch`` fills and ``backtest --store`` reads.

One CSV file per exchange, symbol and timeframe: ``<store>/<exchange>/<SYMBOL>/<timeframe>.csv``
with ``/`` in the symbol written as ``-`` (``BTC/USDT`` -> ``BTC-USDT``), the header
``timestamp,open,high,low,close,volume`` and one row per closed candle (timestamp: the
bar's open time in ms, UTC), in time order. It is the format :mod:`backtest.data` reads, and
a user can open it in a spreadsheet. Appending is idempotent: a row whose timestamp is not
after the last stored one is never written, so a rerun or an overlapping page adds nothing
twice.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from backtest.data import COLUMNS


def store_path(store: Path, exchange: str, symbol: str, timeframe: str) -> Path:
    """Return the CSV file of one exchange, symbol and timeframe in the store."""
    return store / exchange / symbol.replace("/", "-") / f"{timeframe}.csv"


def last_time(path: Path) -> int | None:
    """Return the timestamp of the last candle stored in ``path``, or None if it has none."""
    if not path.is_file():
        return None
    last: int | None = None
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if row and row[0].strip().isdigit():
                last = int(row[0])
    return last


def append(path: Path, rows: Iterable[Sequence[float]]) -> int:
    """Append the OHLCV rows later than the last stored candle; return how many were written.

    Rows are ``[ms, open, high, low, close, volume]`` (what ccxt's ``fetch_ohlcv`` returns);
    they are sorted and a timestamp is written once, whatever the rows repeat.
    """
    after = last_time(path)
    fresh: dict[int, Sequence[float]] = {}
    for row in rows:
        ms = int(row[0])
        if after is None or ms > after:
            fresh.setdefault(ms, row)
    if not fresh:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(COLUMNS)
        for ms in sorted(fresh):
            writer.writerow([ms, *(float(v) for v in fresh[ms][1:6])])
    return len(fresh)
