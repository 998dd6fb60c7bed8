"""Walk-forward windows and seeds: consecutive windows over the span, buy-and-hold per
window from its own candles, no decision reading past its window, and the seeds' spread."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from backtest.cli import app
from backtest.data import synthetic, write_csv
from backtest.metrics import summary
from backtest.replay import Settings, replay, walk_forward, windows

HOUR = 3_600_000
SETTINGS = Settings(symbol="BTC/USDT")
CANDLES = synthetic(600, seed=5)


def test_windows_are_consecutive_and_cover_the_span() -> None:
    spans = windows(CANDLES, SETTINGS, 4)
    assert len(spans) == 4
    assert spans[0][0] == CANDLES[0].time
    assert spans[-1][1] == CANDLES[-1].time + HOUR
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    results = walk_forward(CANDLES, SETTINGS, 4)
    bars = [c.time for r in results for c in r.bars]
    assert bars == [c.time for c in CANDLES]  # every bar once, in order


def test_windows_cover_a_start_end_span_only() -> None:
    settings = Settings(symbol="BTC/USDT", start_ms=CANDLES[100].time, end_ms=CANDLES[400].time)
    spans = windows(CANDLES, settings, 3)
    assert spans[0][0] == CANDLES[100].time and spans[-1][1] == CANDLES[400].time


def test_each_windows_buy_and_hold_is_its_own_candles() -> None:
    for result, (start, end) in zip(
        walk_forward(CANDLES, SETTINGS, 3), windows(CANDLES, SETTINGS, 3), strict=True
    ):
        inside = [c for c in CANDLES if c.time >= start and c.time + HOUR <= end]
        figures = summary(result, [])
        assert figures["buy_and_hold_return"] == inside[-1].close / inside[0].close - 1.0
        assert result.marks[0].equity == SETTINGS.cash  # each window starts flat


def test_a_windows_decisions_do_not_depend_on_candles_after_its_end() -> None:
    full = walk_forward(CANDLES, SETTINGS, 3)
    end = windows(CANDLES, SETTINGS, 3)[0][1]
    # the same first window, with every candle after it replaced by a crash
    crashed = [
        c if c.time + HOUR <= end else c.model_copy(update={"open": 1.0, "high": 1.0,
                                                            "low": 0.5, "close": 0.5})
        for c in CANDLES
    ]  # fmt: skip
    other = walk_forward(crashed, SETTINGS, 3)
    assert other[0].decisions == full[0].decisions
    assert other[0].fills == full[0].fills
    assert other[1].decisions != full[1].decisions  # the crash itself is seen where it is


def test_the_warm_up_comes_from_before_the_window() -> None:
    _, second = walk_forward(CANDLES, SETTINGS, 2)
    alone = replay(CANDLES[300:], SETTINGS)  # the same bars, no history before them
    assert [d.time for d in second.decisions] == [d.time for d in alone.decisions]
    assert second.decisions != alone.decisions  # indicators there saw the earlier bars


def test_too_many_windows_is_refused() -> None:
    with pytest.raises(ValueError, match="windows"):
        windows(CANDLES[:5], SETTINGS, 3)


def run(source: list[str], out: Path, *more: str) -> dict[str, Any]:
    done = CliRunner().invoke(app, [*source, "--symbol", "BTC/USDT", "--out", str(out), *more])
    assert done.exit_code == 0, done.output
    figures: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return figures


def test_the_summary_reports_each_window_and_their_spread(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    write_csv(CANDLES, data)
    figures = run(["--data", str(data)], tmp_path / "o", "--walk-forward", "3")
    parts = figures["windows"]
    assert isinstance(parts, list) and len(parts) == 3
    assert [p["start"] for p in parts[1:]] != [p["start"] for p in parts[:-1]]
    spread = figures["windows_spread"]
    assert isinstance(spread, dict)
    returns = [p["total_return"] for p in parts]
    assert spread["total_return"]["min"] == min(returns)
    assert spread["total_return"]["max"] == max(returns)


def test_seeds_on_a_file_report_no_spread_and_say_why(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    write_csv(CANDLES, data)
    figures = run(["--data", str(data)], tmp_path / "o", "--seeds", "2")
    seeds = figures["seeds"]
    assert isinstance(seeds, dict)
    assert "deterministic" in seeds["random"]
    assert all(v["min"] == v["max"] for v in seeds["spread"].values())


def test_seeds_on_synthetic_data_spread_every_figure(tmp_path: Path) -> None:
    figures = run(["--synthetic", "300"], tmp_path / "o", "--seeds", "3")
    seeds = figures["seeds"]
    assert isinstance(seeds, dict)
    assert [r["seed"] for r in seeds["runs"]] == [0, 1, 2]
    hold = seeds["spread"]["buy_and_hold_return"]
    assert hold["min"] < hold["max"]
    assert figures["total_return"] == seeds["runs"][0]["total_return"]
