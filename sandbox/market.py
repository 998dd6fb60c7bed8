"""The sandbox's markets: seeded price paths, and the candles, books and trades they imply.

Each symbol's price is a path of 1-minute candles: a random walk whose drift and volatility
change with regimes (trend up, trend down, range, volatile) every few hours, seeded so the
same seed gives the same market; or a replay of a candle file an operator supplies. Within a
minute the price moves linearly from open to close. Market time runs ``speed`` times faster
than the wall clock from the moment the sandbox starts; before that there are
``history_days`` of candles. Tickers, klines, books and trades are all read off that path.

The trade tape has one trade every ``TRADE_INTERVAL`` seconds at the path's price, and the
last price is the path's price now. :meth:`PricePath.set_price` moves the whole path from a
moment on (the admin API's ``PUT /sandbox/price``): the price jumps there, candles show the
jump, and the walk goes on from the new level.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
import time
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from itertools import pairwise
from pathlib import Path

MINUTE = 60.0
#: Seconds between two trades of the tape (``PricePath.trades``).
TRADE_INTERVAL = 0.7
_EPSILON = 1e-9

#: Start price, tick size and lot step of the symbols the sandbox knows by default.
SYMBOL_META: dict[str, tuple[float, str, str]] = {
    "BTC": (65000.0, "0.01", "0.00001"),
    "ETH": (3200.0, "0.01", "0.0001"),
    "SOL": (150.0, "0.01", "0.001"),
    "BNB": (580.0, "0.01", "0.001"),
    "XRP": (0.6, "0.0001", "0.1"),
}
_REGIMES = (  # (drift per minute, volatility per minute)
    (0.00012, 0.0009),
    (-0.00012, 0.0009),
    (0.0, 0.0005),
    (0.0, 0.0022),
)
_REGIME_MINUTES = 240


@dataclass(frozen=True)
class Candle:
    """One candle: open time in seconds and prices (volume in the base asset)."""

    open_time: float
    open: float
    high: float
    low: float
    close: float
    volume: float


def _unit(*parts: object) -> float:
    """Return a deterministic number in [0, 1) from the parts (a stable hash)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Clock:
    """Market time: ``speed`` times the wall clock, counted from the sandbox's start."""

    def __init__(self, speed: float = 1.0, origin: float | None = None) -> None:
        self.speed = speed
        self.origin = time.time() if origin is None else origin

    def now(self) -> float:
        """Return the market time in seconds since the epoch."""
        return self.origin + (time.time() - self.origin) * self.speed


class PricePath:
    """The 1-minute candles of one symbol, generated on demand and kept."""

    def __init__(
        self,
        symbol: str,
        seed: int,
        origin: float,
        history_minutes: int,
        replay: list[tuple[float, float, float, float, float]] | None = None,
    ) -> None:
        self.symbol = symbol
        base = symbol.split("/", maxsplit=1)[0]
        self.start_price, tick, step = SYMBOL_META.get(base, (100.0, "0.01", "0.001"))
        self.tick, self.step = Decimal(tick), Decimal(step)
        self.first_minute = int(origin // MINUTE) - history_minutes
        self._rng = random.Random(f"{seed}:{symbol}")  # noqa: S311 - a seeded simulation
        self._replay = replay
        self._candles: list[Candle] = []
        self._shift_times: list[float] = []
        self._shift_factors: list[float] = []

    def _extend_to(self, minute: int) -> None:
        while self.first_minute + len(self._candles) <= minute:
            index = len(self._candles)
            opened = self._candles[-1].close if self._candles else self.start_price
            self._candles.append(self._next_candle(index, opened))

    def _next_candle(self, index: int, opened: float) -> Candle:
        open_time = (self.first_minute + index) * MINUTE
        if self._replay:
            o, h, low, c, v = self._replay[index % len(self._replay)]
            return Candle(open_time, o, h, low, c, v)
        drift, vol = _REGIMES[
            int(_unit(self.symbol, "regime", index // _REGIME_MINUTES) * len(_REGIMES))
        ]
        close = opened * math.exp(self._rng.gauss(drift, vol))
        wick_up, wick_down = abs(self._rng.gauss(0, vol / 3)), abs(self._rng.gauss(0, vol / 3))
        volume = self._rng.lognormvariate(0, 0.5) * 200_000 / opened
        return Candle(
            open_time,
            opened,
            max(opened, close) * (1 + wick_up),
            min(opened, close) * (1 - wick_down),
            close,
            volume,
        )

    def _raw_candle(self, minute: int) -> Candle:
        if minute < self.first_minute:
            raise ValueError(f"{self.symbol}: no candles before {self.first_minute * MINUTE:.0f}")
        self._extend_to(minute)
        return self._candles[minute - self.first_minute]

    def _raw_price(self, t: float) -> float:
        candle = self._raw_candle(int(t // MINUTE))
        frac = (t - candle.open_time) / MINUTE
        return candle.open + (candle.close - candle.open) * frac

    def _factor(self, t: float) -> float:
        index = bisect_right(self._shift_times, t)
        return self._shift_factors[index - 1] if index else 1.0

    def _shifts_inside(self, start: float, end: float) -> list[float]:
        """Return the times of price moves strictly after ``start`` and before ``end``."""
        first = bisect_right(self._shift_times, start)
        last = bisect_right(self._shift_times, end - 1e-9)
        return self._shift_times[first:last]

    def set_price(self, t: float, price: float) -> None:
        """Move the price to ``price`` from market time ``t`` on; the walk goes on from there.

        Warning: a move cannot go back in time: ``t`` earlier than the last move counts as it.
        """
        if price <= 0:
            raise ValueError(f"{self.symbol}: a price must be positive, got {price}")
        t = max(t, self._shift_times[-1]) if self._shift_times else t
        factor = price / self._raw_price(t)
        if self._shift_times and self._shift_times[-1] == t:
            self._shift_factors[-1] = factor
        else:
            self._shift_times.append(t)
            self._shift_factors.append(factor)

    def _pieces(self, start: float, end: float) -> list[tuple[float, float]]:
        """Return the prices at the ends of each straight piece of the path in [start, end]."""
        cuts = [start, *self._shifts_inside(start, end), end]
        ends = []
        for a, b in pairwise(cuts):
            factor = self._factor(a)
            ends.append((self._raw_price(a) * factor, self._raw_price(b) * factor))
        return ends

    def minute_candle(self, minute: int) -> Candle:
        """Return the finished (or, for the current minute, complete-to-be) candle."""
        raw = self._raw_candle(minute)
        start, end = raw.open_time, raw.open_time + MINUTE
        factor = self._factor(start)
        if not self._shifts_inside(start, end):
            return Candle(
                start,
                raw.open * factor,
                raw.high * factor,
                raw.low * factor,
                raw.close * factor,
                raw.volume,
            )
        return self._jump_candle(raw, end)

    def _jump_candle(self, raw: Candle, until: float) -> Candle:
        """Return the candle of a minute in which the price was moved, as seen at ``until``."""
        start = raw.open_time
        frac = (until - start) / MINUTE
        pieces = self._pieces(start, until)
        factors = [
            self._factor(start),
            *(self._factor(t) for t in self._shifts_inside(start, until)),
        ]
        wick_up = (raw.high - max(raw.open, raw.close)) * max(factors) * frac
        wick_down = (min(raw.open, raw.close) - raw.low) * min(factors) * frac
        prices = [p for piece in pieces for p in piece]
        return Candle(
            start,
            pieces[0][0],
            max(prices) + wick_up,
            min(prices) - wick_down,
            pieces[-1][1],
            raw.volume * frac,
        )

    def price_at(self, t: float) -> float:
        """Return the price at market time ``t``."""
        return self._raw_price(t) * self._factor(t)

    def price_range(self, start: float, end: float) -> tuple[float, float]:
        """Return the lowest and highest price the path takes in [start, end] (no wicks)."""
        prices = [p for piece in self._pieces(start, end) for p in piece]
        return min(prices), max(prices)

    def tape(self, start: float, end: float) -> Iterator[tuple[float, float]]:
        """Yield (time, price) of each trade in (start, end], then ``end`` (the last price)."""
        n = math.floor(start / TRADE_INTERVAL)
        last = start
        while (n + 1) * TRADE_INTERVAL <= end:
            n += 1
            last = n * TRADE_INTERVAL
            if last > start:
                yield last, self.price_at(last)
        if end > last:
            yield end, self.price_at(end)

    def first_beyond(
        self, start: float, end: float, below: float | None, above: float | None
    ) -> tuple[float, float] | None:
        """Return the first tape point in (start, end] at or below ``below`` or at or above
        ``above`` (either may be None), as (time, price); None if the tape never gets there.
        """

        def reached(low: float, high: float) -> bool:
            return (below is not None and low <= below * (1 + _EPSILON)) or (
                above is not None and high >= above * (1 - _EPSILON)
            )

        t0 = start
        while t0 < end:
            t1 = min(end, (math.floor(t0 / MINUTE) + 1) * MINUTE)
            if reached(*self.price_range(t0, t1)):
                for t, price in self.tape(t0, t1):
                    is_trade = abs(t / TRADE_INTERVAL - round(t / TRADE_INTERVAL)) < 1e-6
                    if (t1 < end and not is_trade) or not reached(price, price):
                        continue
                    return t, price
            t0 = t1
        return None

    def partial(self, candle: Candle, now: float) -> Candle:
        """Return ``candle`` as seen at ``now`` (the current minute is still forming)."""
        if candle.open_time + MINUTE <= now:
            return candle
        if self._shifts_inside(candle.open_time, now + 1e-9):
            return self._jump_candle(self._raw_candle(int(candle.open_time // MINUTE)), now)
        frac = max(0.0, (now - candle.open_time) / MINUTE)
        price = candle.open + (candle.close - candle.open) * frac
        high = max(candle.open, price) + (candle.high - max(candle.open, candle.close)) * frac
        low = min(candle.open, price) - (min(candle.open, candle.close) - candle.low) * frac
        return Candle(candle.open_time, candle.open, high, low, price, candle.volume * frac)

    def candles(self, interval: float, start: float, end: float, now: float) -> list[Candle]:
        """Return candles of ``interval`` seconds opening in [start, end], none in the future."""
        first = max(math.ceil(start / interval) * interval, self.first_minute * MINUTE)
        first = math.ceil(first / interval) * interval
        out = []
        t = first
        while t <= min(end, now):
            minutes = [
                self.partial(self.minute_candle(int(m)), now)
                for m in range(int(t // MINUTE), int((t + interval) // MINUTE))
                if m * MINUTE <= now
            ]
            out.append(
                Candle(
                    t,
                    minutes[0].open,
                    max(c.high for c in minutes),
                    min(c.low for c in minutes),
                    minutes[-1].close,
                    sum(c.volume for c in minutes),
                )
            )
            t += interval
        return out

    def round_price(self, price: float) -> float:
        """Return ``price`` rounded down to the symbol's tick size."""
        return float(Decimal(str(price)).quantize(self.tick, rounding=ROUND_DOWN))

    def book(
        self, now: float, depth: int
    ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Return (bids, asks) around the current price, best first, as (price, quantity)."""
        mid = self.price_at(now)
        spacing = max(float(self.tick), mid * 0.00005)
        second = int(now)
        bids, asks = [], []
        for level in range(depth):
            size = (2_000 + 38_000 * _unit(self.symbol, "bid", level, second)) / mid
            bids.append((self.round_price(mid - spacing * (level + 0.5)), self.round_qty(size)))
            size = (2_000 + 38_000 * _unit(self.symbol, "ask", level, second)) / mid
            ask = self.round_price(mid + spacing * (level + 0.5)) + float(self.tick)
            asks.append((round(ask, 10), self.round_qty(size)))
        return bids, asks

    def round_qty(self, qty: float) -> float:
        """Return ``qty`` rounded down to the lot step (at least one step)."""
        rounded = Decimal(str(qty)).quantize(self.step, rounding=ROUND_DOWN)
        return float(max(rounded, self.step))

    def trades(self, now: float, count: int) -> list[tuple[int, float, float, float, bool]]:
        """Return the last ``count`` trades, oldest first: (id, time, price, qty, buyer_maker)."""
        latest = int(now / 0.7)
        out = []
        for n in range(latest - count + 1, latest + 1):
            t = n * 0.7
            qty = self.round_qty((50 + 5_000 * _unit(self.symbol, "trade", n)) / self.price_at(t))
            out.append(
                (n, t, self.round_price(self.price_at(t)), qty, _unit(self.symbol, "side", n) < 0.5)
            )
        return out


def load_replay(path: Path) -> list[tuple[float, float, float, float, float]]:
    """Read a candle file (CSV: time, open, high, low, close, volume) for replay."""
    rows = []
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not row[0].strip() or row[0].strip().lower() in ("time", "timestamp"):
                continue
            try:
                o, h, low, c, v = (float(x) for x in row[1:6])
            except (ValueError, IndexError):
                raise ValueError(
                    f"{path}:{number}: expected time,open,high,low,close,volume; got {row!r}"
                ) from None
            if not (low <= min(o, c) and max(o, c) <= h and low > 0):
                raise ValueError(
                    f"{path}:{number}: prices are not a candle (low<=open,close<=high)"
                )
            rows.append((o, h, low, c, v))
    if not rows:
        raise ValueError(f"{path}: no candles")
    return rows
