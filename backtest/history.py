"""The candle store that ``crypto-ai history fetch`` fills and ``backtest --store`` reads.

One CSV file per exchange, symbol and timeframe: ``<store>/<exchange>/<SYMBOL>/<timeframe>.csv``
with ``/`` in the symbol written as ``-`` (``BTC/USDT`` -> ``BTC-USDT``), the header
``timestamp,open,high,low,close,volume`` and one row per closed candle (timestamp: the
bar's open time in ms, UTC), in time order. It is the format :mod:`backtest.data` reads, and
a user can open it in a spreadsheet. Appending is idempotent: a row whose timestamp is not
after the last stored one is never written, so a rerun or an overlapping page adds nothing
twice.

Candles earlier than the first stored one (a backfill) are appended to a part file beside
it, ``<timeframe>.csv.part`` in the same format, and put in front of the stored ones by
:func:`merge_part` once the part reaches them: the store file stays one unbroken stretch,
and an interrupted backfill keeps what it had in the part.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from backtest.data import COLUMNS


def store_path(store: Path, exchange: str, symbol: str, timeframe: str) -> Path:
    """Return the CSV file of one exchange, symbol and timeframe in the store."""
    return store / exchange / symbol.replace("/", "-") / f"{timeframe}.csv"


def part_path(path: Path) -> Path:
    """Return the part file beside a store file: a backfill not yet put in front of it."""
    return path.with_name(path.name + ".part")


def _rows(path: Path) -> Iterator[list[str]]:
    """Yield the candle rows of a store file (not its header), as text."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if row and row[0].strip().isdigit():
                yield row


def last_time(path: Path) -> int | None:
    """Return the timestamp of the last candle stored in ``path``, or None if it has none."""
    last: int | None = None
    for row in _rows(path):
        last = int(row[0])
    return last


def first_time(path: Path) -> int | None:
    """Return the timestamp of the first candle stored in ``path``, or None if it has none."""
    return next((int(row[0]) for row in _rows(path)), None)


def count(path: Path) -> int:
    """Return how many candles ``path`` holds."""
    return sum(1 for _ in _rows(path))


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


def merge_part(path: Path) -> int:
    """Put the part file's candles earlier than the first stored one in front of them,
    delete the part, and return how many were put in.

    The store file is rewritten beside itself and renamed over the old one, so a reader
    (or a crash) sees the old file or the new one, never half of it. Idempotent: a part
    whose candles are in the store already adds nothing.
    """
    part = part_path(path)
    if not part.is_file():
        return 0
    first = first_time(path)
    rows = [row for row in _rows(part) if first is None or int(row[0]) < first]
    if rows:
        fresh = path.with_name(path.name + ".tmp")
        with fresh.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            writer.writerows(rows)
            if path.is_file():
                with path.open(newline="") as old:
                    old.readline()  # the header, written above
                    shutil.copyfileobj(old, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(fresh, path)
    part.unlink()
    return len(rows)
