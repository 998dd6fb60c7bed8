"""The replay: no look-ahead (and a check that catches a strategy peeking ahead), figures
that match the candles, visible costs, determinism, the stop-first rule and data files."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from agents.types import Candle, TradePlan
from backtest.data import DataError, load, synthetic, write_csv
from backtest.replay import Decision, Moment, Settings, Strategy, replay, rules
from backtest.report import write

HOUR = 3_600_000
SETTINGS = Settings(symbol="BTC/USDT")


def decisions_until(candles: Sequence[Candle], strategy: Strategy, until: int) -> list[Decision]:
    """Return the replay's decisions made at or before ``until`` (ms)."""
    return [d for d in replay(candles, SETTINGS, strategy=strategy).decisions if d.time <= until]


def leaks(
    candles: Sequence[Candle],
    make: Callable[[Sequence[Candle]], Strategy],
    cuts: Sequence[int],
) -> list[int]:
    """Return the cuts where a file ending there decides otherwise than the whole file.

    ``make`` builds the strategy from the data the replay is given, as a strategy that
    could read the file would be: a clean one ignores it.
    """
    full = replay(candles, SETTINGS, strategy=make(candles)).decisions
    found = []
    for cut in cuts:
        part = candles[:cut]
        until = part[-1].time + HOUR
        if decisions_until(part, make(part), until) != [d for d in full if d.time <= until]:
            found.append(cut)
    return found


def peeking(candles: Sequence[Candle]) -> Strategy:
    """Return a strategy that buys when the next bar (read from the data) closes higher."""
    by_open = {c.time: c for c in candles}

    def strategy(moment: Moment) -> TradePlan:
        now = int(moment.snapshot.taken_at.timestamp() * 1000)
        close = moment.features.close
        following = by_open.get(now)
        if following is None or following.close <= close:
            return TradePlan(action="hold", symbol=moment.symbol)
        return TradePlan(
            action="buy", symbol=moment.symbol, size=0.5, entry=close,
            stop_loss=close * 0.98, take_profit=close * 1.03,
        )  # fmt: skip

    return strategy


def test_the_agents_decide_the_same_whether_the_file_ends_at_t_or_goes_on() -> None:
    candles = synthetic(500, seed=7)
    run = replay(candles, SETTINGS)
    assert any(d.action == "buy" for d in run.decisions)  # the check compares real trades
    assert leaks(candles, lambda _: rules, cuts=[180, 333, 451]) == []


def test_a_strategy_that_peeks_one_bar_ahead_is_caught_by_the_same_check() -> None:
    candles = synthetic(300, seed=7)
    assert leaks(candles, peeking, cuts=[120, 150, 181, 222, 260]) != []


def test_buy_and_hold_is_what_the_candles_give_over_the_reported_span(tmp_path: Path) -> None:
    candles = synthetic(400, seed=3)
    start, end = candles[50].time, candles[350].time
    settings = Settings(symbol="BTC/USDT", start_ms=start, end_ms=end)
    figures = write(replay(candles, settings), tmp_path)
    span = [c for c in candles if c.time >= start and c.time + HOUR <= end]
    assert figures["buy_and_hold_return"] == span[-1].close / span[0].close - 1
    assert figures["bars"] == len(span)
    assert figures["start"].startswith("2024-01-03T03:00")  # the first bar's close
    rows = (tmp_path / "equity.csv").read_text().splitlines()
    assert float(rows[-1].split(",")[5]) == pytest.approx(10_000 * span[-1].close / span[0].close)


def test_fees_and_slippage_show_in_every_trade(tmp_path: Path) -> None:
    settings = Settings(symbol="BTC/USDT", fee_rate=0.002, slippage_bps=10)
    write(replay(synthetic(500, seed=7), settings), tmp_path)
    header, *rows = [r.split(",") for r in (tmp_path / "trades.csv").read_text().splitlines()]
    trades = [dict(zip(header, r, strict=True)) for r in rows]
    opens = [t for t in trades if t["kind"] == "open"]
    assert opens
    for t in trades:
        amount, price = float(t["amount"]), float(t["price"])
        assert float(t["fee"]) == pytest.approx(amount * price * 0.002)
    for t in opens:
        assert float(t["price"]) == pytest.approx(float(t["reference_price"]) * 1.001)
        assert float(t["slippage_cost"]) > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fees"] == pytest.approx(sum(float(t["fee"]) for t in trades))


def test_the_same_run_twice_gives_the_same_decisions_and_summary(tmp_path: Path) -> None:
    candles = synthetic(400, seed=11)
    for name in ("a", "b"):
        write(replay(candles, SETTINGS), tmp_path / name)
    for file in ("summary.json", "decisions.csv", "trades.csv", "equity.csv"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def flat(bars: int, price: float = 100.0) -> list[Candle]:
    """Return quiet candles around ``price`` (enough for every feature)."""
    return [
        Candle(time=i * HOUR, open=price, high=price + 0.1, low=price - 0.1, close=price, volume=1)
        for i in range(bars)
    ]


def buy_once(at: int) -> Strategy:
    """Return a strategy that buys at the close of bar ``at`` with a stop 1 below, a target 1 above."""

    def strategy(moment: Moment) -> TradePlan:
        if int(moment.snapshot.taken_at.timestamp() * 1000) != (at + 1) * HOUR:
            return TradePlan(action="hold", symbol=moment.symbol)
        close = moment.features.close
        return TradePlan(
            action="buy", symbol=moment.symbol, size=0.5, entry=close,
            stop_loss=close - 1, take_profit=close + 1,
        )  # fmt: skip

    return strategy


def test_a_bar_that_touches_both_stop_and_take_profit_records_the_stop() -> None:
    candles = flat(60)
    # bar 41 fills the order at its open, then swings through both exits
    candles[41] = Candle(time=41 * HOUR, open=100, high=102, low=98, close=100, volume=1)
    fills = replay(candles, SETTINGS, strategy=buy_once(40)).fills
    assert [(f.kind, f.time) for f in fills] == [("open", 41 * HOUR), ("stop", 41 * HOUR)]
    assert fills[1].reference == 99
    assert fills[1].price == pytest.approx(99 * (1 - 5 / 10_000))


def test_a_bar_that_opens_through_the_stop_fills_at_its_open() -> None:
    candles = flat(60)
    candles[43] = Candle(time=43 * HOUR, open=97, high=97.5, low=96, close=97, volume=1)
    fills = replay(candles, SETTINGS, strategy=buy_once(40)).fills
    assert [(f.kind, f.reference) for f in fills] == [("open", 100), ("stop", 97)]


def test_a_take_profit_alone_fills_at_its_price() -> None:
    candles = flat(60)
    candles[42] = Candle(time=42 * HOUR, open=100, high=101.5, low=99.5, close=101, volume=1)
    fills = replay(candles, SETTINGS, strategy=buy_once(40)).fills
    assert [(f.kind, f.price) for f in fills] == [
        ("open", pytest.approx(100.05)),
        ("take_profit", 101),
    ]


def test_the_horizon_closes_at_the_first_open_after_it() -> None:
    fills = replay(flat(60), SETTINGS, strategy=buy_once(40)).fills
    # opened at bar 41's open; the 4h horizon passes at bar 45's open
    assert [(f.kind, f.time // HOUR) for f in fills] == [("open", 41), ("horizon", 45)]


def test_a_csv_and_a_ccxt_json_file_give_the_same_candles(tmp_path: Path) -> None:
    candles = synthetic(50, seed=1)
    write_csv(candles, tmp_path / "c.csv")
    rows = [[c.time, c.open, c.high, c.low, c.close, c.volume] for c in candles]
    (tmp_path / "c.json").write_text(json.dumps(rows))
    assert load(tmp_path / "c.csv") == load(tmp_path / "c.json") == candles


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "timestamp,open,high,low,close,volume\n0,1,2,1,1,1\n3600000,1,2,oops,1,1\n",
            "row 3, column low",
        ),
        ("time,open,high,low,close,volume\n0,1,2,1,1,1\n", "row 1: header"),
        (
            "timestamp,open,high,low,close,volume\n0,1,2,1,1,1\n0,1,2,1,1,1\n",
            "row 3, column timestamp",
        ),
        ("timestamp,open,high,low,close,volume\n0,1,2,1\n", "row 2: expected 6 values"),
    ],
)
def test_a_bad_file_names_its_row_and_column(tmp_path: Path, text: str, where: str) -> None:
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=where):
        load(tmp_path / "bad.csv")
