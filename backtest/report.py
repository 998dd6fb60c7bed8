"""The output files of a replay: summary.json, decisions.csv, trades.csv, equity.csv and
report.html (the equity and drawdown against buy-and-hold, inline SVG, no network)."""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backtest.account import iso
from backtest.metrics import drawdowns, summary
from backtest.replay import LOOKBACK, Result

FILES = ("summary.json", "decisions.csv", "trades.csv", "equity.csv", "report.html")


def assumptions(result: Result, *, news: int) -> list[str]:
    """Return every assumption the run rests on, in words (docs/BACKTEST.md)."""
    s = result.settings
    return [
        f"decisions at each {s.timeframe} close; the agents see the last {LOOKBACK} "
        f"{s.timeframe} candles closed at or before the decision time (longer timeframes "
        "resampled from closed base candles only)",
        "the rules rung of the live ladder decides (analysts.analyse, strategy.decide, "
        "strategy.aim, risk.check); the LLM rung is not replayed in this version",
        (
            f"{news} news items, each seen only by decisions after it was published"
            if news
            else "no news file: the agents saw no news (news sentiment 0)"
        ),
        "no order book in the data: spread 0 and book imbalance 0; bid = ask = the close",
        f"orders fill in full at the next bar's open moved {s.slippage_bps:g} bps against "
        f"the order, paying a {s.fee_rate:g} fee rate on the notional, in the quote currency",
        "buys are cut to the cash available; spot only, no shorting, no leverage",
        "stops and take-profits trigger on the bar's low and high; when both are touched in "
        "one bar the stop fills first; a stop fills at its price (the open if the bar opened "
        "through it) less the slippage; a take-profit fills at its price, no slippage",
        "an expired horizon closes the position at the first bar open at or after expiry; "
        "the strategy sees the symbol flat from the expiry on",
        f"the live risk guard's limits: notional {s.limits.max_notional_per_order:g} per "
        f"order, {s.limits.max_position_per_symbol:g} per symbol, daily loss "
        f"{s.limits.max_daily_loss:g} (UTC days), no open orders besides the one pending",
        "an order decided at the last close has no bar to fill on and is dropped",
        "returns per bar; sharpe and sortino annualised by sqrt(bars in 365 days), "
        "risk-free rate 0",
        "buy_and_hold_return: last close / first close - 1 of the replayed bars; equity "
        "is marked at each bar close from the first close on",
    ]


def write(result: Result, out: Path, *, news: int = 0) -> dict[str, Any]:
    """Write every output file into ``out`` and return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    figures = summary(result, assumptions(result, news=news))
    (out / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    _csv(
        out / "decisions.csv",
        ("timestamp", "symbol", "action", "size", "price", "rung", "reason"),
        [
            (iso(d.time), d.symbol, d.action, f"{d.size:.10g}", f"{d.price:.10g}", d.rung, d.reason)
            for d in result.decisions
        ],
    )
    _csv(
        out / "trades.csv",
        (
            "timestamp", "symbol", "side", "kind", "amount", "reference_price", "price",
            "slippage_cost", "fee", "realized_pnl", "cash_after", "position_after",
        ),
        [
            (
                iso(f.time), f.symbol, f.side, f.kind, f"{f.amount:.10g}",
                f"{f.reference:.10g}", f"{f.price:.10g}", f"{f.slippage_cost:.10g}",
                f"{f.fee:.10g}", f"{f.realized:.10g}", f"{f.cash_after:.10g}",
                f"{f.position_after:.10g}",
            )
            for f in result.fills
        ],
    )  # fmt: skip
    first = result.marks[0].close
    equity = np.array([m.equity for m in result.marks], dtype=float)
    falls = drawdowns(equity)
    _csv(
        out / "equity.csv",
        ("timestamp", "close", "cash", "position", "equity", "buy_and_hold", "drawdown"),
        [
            (
                iso(m.time), f"{m.close:.10g}", f"{m.cash:.10g}", f"{m.position:.10g}",
                f"{m.equity:.10g}", f"{result.settings.cash * m.close / first:.10g}",
                f"{dd:.10g}",
            )
            for m, dd in zip(result.marks, falls, strict=True)
        ],
    )  # fmt: skip
    (out / "report.html").write_text(page(result, figures))
    return figures


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _path(values: Sequence[float], low: float, high: float, width: int, height: int) -> str:
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{'M' if i == 0 else 'L'}{i * step:.1f},{height - (v - low) / span * height:.1f}"
        for i, v in enumerate(values)
    )


def _thin(values: Sequence[float], most: int = 1200) -> list[float]:
    stride = max(1, len(values) // most)
    kept = list(values[::stride])
    if kept[-1] != values[-1]:
        kept.append(values[-1])
    return kept


def chart(result: Result, width: int = 900) -> str:
    """Return an SVG of the equity against buy-and-hold, and the drawdown below it."""
    cash, first = result.settings.cash, result.marks[0].close
    equity = [m.equity for m in result.marks]
    hold = [cash * m.close / first for m in result.marks]
    falls = list(drawdowns(np.array(equity, dtype=float)))
    e, h, d = _thin(equity), _thin(hold), _thin(falls)
    low, high = min(*e, *h), max(*e, *h)
    deepest = min(*d, -1e-9)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="420" '
        f'viewBox="0 0 {width} 420" font-family="sans-serif" font-size="12">'
        f'<rect width="{width}" height="420" fill="#fff"/>'
        f'<g transform="translate(0,20)"><path d="{_path(h, low, high, width, 260)}" '
        'fill="none" stroke="#999" stroke-width="1"/>'
        f'<path d="{_path(e, low, high, width, 260)}" fill="none" stroke="#1f5fbf" '
        'stroke-width="1.5"/></g>'
        f'<text x="4" y="14">equity (blue) {e[-1]:,.0f} vs buy-and-hold (grey) {h[-1]:,.0f}; '
        f"range {low:,.0f} to {high:,.0f}</text>"
        f'<g transform="translate(0,310)"><path d="{_path(d, deepest, 0.0, width, 100)} '
        f'L{width},0 L0,0 Z" fill="#d66" fill-opacity="0.5" stroke="#b33"/></g>'
        f'<text x="4" y="304">drawdown (max {deepest:.1%})</text></svg>'
    )


def page(result: Result, figures: dict[str, Any]) -> str:
    """Return the self-contained HTML report: the chart, the figures and the assumptions."""
    shown = {k: v for k, v in figures.items() if k != "assumptions"}
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in shown.items()
    )
    notes = "".join(f"<li>{html.escape(a)}</li>" for a in figures["assumptions"])
    title = html.escape(f"backtest {figures['symbol']} {figures['start']} to {figures['end']}")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body><h1>{title}</h1>{chart(result)}<table>{rows}</table>"
        f"<h2>Assumptions</h2><ul>{notes}</ul></body></html>\n"
    )


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
